//! The rows a write's plan staged and nothing in its transaction reads back (messages and
//! threads, `Tx::stage_message` / `Tx::stage_thread`), and how they are written: each
//! table's rows as one statement however many there are (`Tx::take_writes`), so a batch's
//! wave of N inbound messages is two statements, not 2N.
//!
//! Each statement takes its rows as arrays, a column each (`Columns`), and `unnest`s them,
//! in staging order. A thread staged twice is one row, in its last state (one `ON CONFLICT
//! DO UPDATE` statement may not touch a row twice, and the later state supersedes the
//! earlier anyway).

use tokio_postgres::types::ToSql;

use crate::domain::{
    TenantId,
    model::{Message, Thread},
};

use super::reads;

/// New messages, one statement for all of them.
pub(super) const INSERT_MESSAGES: &str = "
    INSERT INTO messages (tenant, id, thread_id, direction, body, attachments, created_at, author_id, external_id)
    SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[])";

/// New or moved threads, one statement for all of them.
pub(super) const SAVE_THREADS: &str = "
    INSERT INTO threads (tenant, id, location_id, customer_number, folder_id, unread_count, last_message_id, last_message_at)
    SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::bigint[])
    ON CONFLICT (tenant, id) DO UPDATE SET folder_id = excluded.folder_id, unread_count = excluded.unread_count,
      last_message_id = excluded.last_message_id, last_message_at = excluded.last_message_at";

/// What a write staged so far, in staging order.
#[derive(Default)]
pub(super) struct Staged {
    messages: Vec<Message>,
    threads: Vec<Thread>,
}

/// How much was staged at one moment (`Staged::mark`), to go back to (`Staged::truncate`).
#[derive(Clone, Copy)]
pub(super) struct Mark {
    messages: usize,
    threads: usize,
}

impl Staged {
    pub(super) fn message(&mut self, m: &Message) {
        self.messages.push(m.clone());
    }

    pub(super) fn thread(&mut self, t: &Thread) {
        match self.threads.iter_mut().find(|staged| staged.id == t.id) {
            Some(staged) => *staged = t.clone(),
            None => self.threads.push(t.clone()),
        }
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            messages: self.messages.len(),
            threads: self.threads.len(),
        }
    }

    /// Unstages what was staged after `mark` (a message its plan refused). A thread staged
    /// before `mark` and again after it keeps its later state; no caller does that (a plan
    /// that refuses stages nothing).
    pub(super) fn truncate(&mut self, mark: Mark) {
        self.messages.truncate(mark.messages);
        self.threads.truncate(mark.threads);
    }

    /// The staged rows of `tenant`'s write as the statements' columns.
    pub(super) fn columns(self, tenant: &TenantId) -> Columns {
        let (ms, ts) = (self.messages, self.threads);
        Columns {
            tenant: tenant.as_str().to_owned(),
            messages: MessageColumns {
                thread_id: ms.iter().map(|m| m.thread_id.as_str().to_owned()).collect(),
                direction: ms.iter().map(|m| m.direction.as_str()).collect(),
                attachments: ms.iter().map(|m| reads::attachments_json(&m.attachments)).collect(),
                created_at: ms.iter().map(|m| m.created_at.micros()).collect(),
                author_id: ms
                    .iter()
                    .map(|m| m.author_id.as_ref().map(|u| u.as_str().to_owned()))
                    .collect(),
                id: ms.iter().map(|m| m.id.as_str().to_owned()).collect(),
                // Moved, not copied: the bodies are the bulk of the rows.
                external_id: ms.iter().map(|m| m.external_id.clone()).collect(),
                body: ms.into_iter().map(|m| m.body).collect(),
            },
            threads: ThreadColumns {
                id: ts.iter().map(|t| t.id.as_str().to_owned()).collect(),
                location_id: ts.iter().map(|t| t.location_id.as_str().to_owned()).collect(),
                customer_number: ts.iter().map(|t| t.customer_number.as_str().to_owned()).collect(),
                folder_id: ts
                    .iter()
                    .map(|t| t.folder_id.as_ref().map(|f| f.as_str().to_owned()))
                    .collect(),
                unread_count: ts.iter().map(|t| t.unread_count.min(i32::MAX as u32) as i32).collect(),
                last_message_id: ts.iter().map(|t| t.last_message.id.as_str().to_owned()).collect(),
                last_message_at: ts.iter().map(|t| t.last_message_at.micros()).collect(),
            },
        }
    }
}

/// Staged rows, a column each: the statements' parameters (`Columns::statements`).
pub(super) struct Columns {
    tenant: String,
    messages: MessageColumns,
    threads: ThreadColumns,
}

struct MessageColumns {
    id: Vec<String>,
    thread_id: Vec<String>,
    direction: Vec<&'static str>,
    body: Vec<String>,
    attachments: Vec<String>,
    created_at: Vec<i64>,
    author_id: Vec<Option<String>>,
    external_id: Vec<Option<String>>,
}

struct ThreadColumns {
    id: Vec<String>,
    location_id: Vec<String>,
    customer_number: Vec<String>,
    folder_id: Vec<Option<String>>,
    unread_count: Vec<i32>,
    last_message_id: Vec<String>,
    last_message_at: Vec<i64>,
}

impl Columns {
    /// The statements to send, in order (messages, then threads), each with its parameters;
    /// a table with nothing staged has none.
    pub(super) fn statements(&self) -> Vec<(&'static str, Vec<&(dyn ToSql + Sync)>)> {
        let (tenant, m, t) = (&self.tenant as &(dyn ToSql + Sync), &self.messages, &self.threads);
        let messages = vec![
            tenant,
            &m.id,
            &m.thread_id,
            &m.direction,
            &m.body,
            &m.attachments,
            &m.created_at,
            &m.author_id,
            &m.external_id,
        ];
        let threads = vec![
            tenant,
            &t.id,
            &t.location_id,
            &t.customer_number,
            &t.folder_id,
            &t.unread_count,
            &t.last_message_id,
            &t.last_message_at,
        ];
        [
            (m.id.len(), INSERT_MESSAGES, messages),
            (t.id.len(), SAVE_THREADS, threads),
        ]
        .into_iter()
        .filter(|(rows, _, _)| *rows > 0)
        .map(|(_, sql, params)| (sql, params))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        FolderId, LocationId, MessageId, PhoneNumber, ThreadId,
        model::{Direction, Timestamp},
    };

    fn message(id: &str, thread: &str) -> Message {
        Message {
            id: MessageId::trusted(id),
            thread_id: ThreadId::trusted(thread),
            direction: Direction::Inbound,
            body: "hi".into(),
            attachments: Vec::new(),
            created_at: Timestamp::from_micros(100),
            author_id: None,
            external_id: Some(format!("x-{id}")),
        }
    }

    fn thread(id: &str, folder: Option<&str>, unread: u32) -> Thread {
        Thread {
            id: ThreadId::trusted(id),
            location_id: LocationId::trusted("L1"),
            customer_number: PhoneNumber::trusted("+15551234567"),
            folder_id: folder.map(FolderId::trusted),
            unread: unread > 0,
            unread_count: unread,
            last_message: message("m0", id),
            last_message_at: Timestamp::from_micros(100),
        }
    }

    #[test]
    fn a_thread_staged_twice_is_one_row_with_its_last_state() {
        let tenant = TenantId::trusted("acme");
        let mut staged = Staged::default();
        staged.thread(&thread("t1", None, 1));
        staged.thread(&thread("t2", None, 1));
        staged.thread(&thread("t1", Some("F1"), 2));
        let columns = staged.columns(&tenant);
        assert_eq!(columns.threads.id, ["t1", "t2"]);
        assert_eq!(columns.threads.folder_id, [Some("F1".to_owned()), None]);
        assert_eq!(columns.threads.unread_count, [2, 1]);
        let statements = columns.statements();
        assert_eq!(statements.len(), 1, "threads only");
        assert_eq!(statements[0].0, SAVE_THREADS);
        assert_eq!(statements[0].1.len(), 8, "tenant and seven columns");
    }

    #[test]
    fn back_to_a_mark_unstages_what_came_after_it() {
        let tenant = TenantId::trusted("acme");
        let mut staged = Staged::default();
        assert!(Staged::default().columns(&tenant).statements().is_empty());
        staged.message(&message("m1", "t1"));
        staged.thread(&thread("t1", None, 1));
        let mark = staged.mark();
        staged.message(&message("m2", "t2"));
        staged.thread(&thread("t2", None, 1));
        staged.truncate(mark);
        let columns = staged.columns(&tenant);
        assert_eq!(columns.messages.id, ["m1"]);
        assert_eq!(columns.messages.external_id, [Some("x-m1".to_owned())]);
        assert_eq!(columns.threads.id, ["t1"]);
        let statements = columns.statements();
        let sql: Vec<&str> = statements.iter().map(|(sql, _)| *sql).collect();
        assert_eq!(sql, [INSERT_MESSAGES, SAVE_THREADS], "messages, then threads");
        assert_eq!(statements[0].1.len(), 9, "tenant and eight columns");
    }
}
