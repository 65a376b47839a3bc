//! The rows a write's plan staged and nothing in its transaction reads back (messages and
//! threads, `Tx::stage_message` / `Tx::stage_thread`), held column by column so that each
//! table's rows go out as one statement however many there are (`Tx::take_writes`): a
//! batch's wave of N inbound messages is two statements, not 2N.
//!
//! Each statement takes its rows as arrays and `unnest`s them, in staging order. A thread
//! staged twice keeps its last state (one `ON CONFLICT DO UPDATE` statement may not touch a
//! row twice, and the later state supersedes the earlier anyway).

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

/// Staged messages, a column each.
#[derive(Default)]
pub(super) struct Messages {
    id: Vec<String>,
    thread_id: Vec<String>,
    direction: Vec<&'static str>,
    body: Vec<String>,
    attachments: Vec<String>,
    created_at: Vec<i64>,
    author_id: Vec<Option<String>>,
    external_id: Vec<Option<String>>,
}

/// Staged threads, a column each.
#[derive(Default)]
pub(super) struct Threads {
    id: Vec<String>,
    location_id: Vec<String>,
    customer_number: Vec<String>,
    folder_id: Vec<Option<String>>,
    unread_count: Vec<i32>,
    last_message_id: Vec<String>,
    last_message_at: Vec<i64>,
}

/// What a write staged so far, for its tenant.
#[derive(Default)]
pub(super) struct Staged {
    tenant: String,
    messages: Messages,
    threads: Threads,
}

/// How much was staged at one moment (`Staged::mark`), to go back to (`Staged::truncate`).
#[derive(Clone, Copy)]
pub(super) struct Mark {
    messages: usize,
    threads: usize,
}

impl Staged {
    pub(super) fn message(&mut self, tenant: &TenantId, m: &Message) {
        self.tenant_is(tenant);
        let rows = &mut self.messages;
        rows.id.push(m.id.as_str().to_owned());
        rows.thread_id.push(m.thread_id.as_str().to_owned());
        rows.direction.push(m.direction.as_str());
        rows.body.push(m.body.clone());
        rows.attachments.push(reads::attachments_json(&m.attachments));
        rows.created_at.push(m.created_at.micros());
        rows.author_id.push(m.author_id.as_ref().map(|u| u.as_str().to_owned()));
        rows.external_id.push(m.external_id.clone());
    }

    pub(super) fn thread(&mut self, tenant: &TenantId, t: &Thread) {
        self.tenant_is(tenant);
        let rows = &mut self.threads;
        let at = match rows.id.iter().position(|id| id == t.id.as_str()) {
            Some(at) => at,
            None => {
                rows.id.push(t.id.as_str().to_owned());
                rows.location_id.push(String::new());
                rows.customer_number.push(String::new());
                rows.folder_id.push(None);
                rows.unread_count.push(0);
                rows.last_message_id.push(String::new());
                rows.last_message_at.push(0);
                rows.id.len() - 1
            }
        };
        rows.location_id[at] = t.location_id.as_str().to_owned();
        rows.customer_number[at] = t.customer_number.as_str().to_owned();
        rows.folder_id[at] = t.folder_id.as_ref().map(|f| f.as_str().to_owned());
        rows.unread_count[at] = t.unread_count.min(i32::MAX as u32) as i32;
        rows.last_message_id[at] = t.last_message.id.as_str().to_owned();
        rows.last_message_at[at] = t.last_message_at.micros();
    }

    fn tenant_is(&mut self, tenant: &TenantId) {
        if self.tenant != tenant.as_str() {
            self.tenant = tenant.as_str().to_owned();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.messages.id.is_empty() && self.threads.id.is_empty()
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            messages: self.messages.id.len(),
            threads: self.threads.id.len(),
        }
    }

    /// Unstages what was staged after `mark` (a message its plan refused). A thread that
    /// was staged before `mark` and again after keeps its later state: only a refused
    /// message's own plan could have staged it, and a refused plan stages nothing.
    pub(super) fn truncate(&mut self, mark: Mark) {
        let m = &mut self.messages;
        m.id.truncate(mark.messages);
        m.thread_id.truncate(mark.messages);
        m.direction.truncate(mark.messages);
        m.body.truncate(mark.messages);
        m.attachments.truncate(mark.messages);
        m.created_at.truncate(mark.messages);
        m.author_id.truncate(mark.messages);
        m.external_id.truncate(mark.messages);
        let t = &mut self.threads;
        t.id.truncate(mark.threads);
        t.location_id.truncate(mark.threads);
        t.customer_number.truncate(mark.threads);
        t.folder_id.truncate(mark.threads);
        t.unread_count.truncate(mark.threads);
        t.last_message_id.truncate(mark.threads);
        t.last_message_at.truncate(mark.threads);
    }

    /// The statements to send, in order (messages, then threads), each with its parameters;
    /// a table with nothing staged has none.
    pub(super) fn statements(&self) -> Vec<(&'static str, Vec<&(dyn ToSql + Sync)>)> {
        let mut out = Vec::with_capacity(2);
        let (tenant, m, t) = (&self.tenant, &self.messages, &self.threads);
        if !m.id.is_empty() {
            out.push((
                INSERT_MESSAGES,
                vec![
                    tenant as &(dyn ToSql + Sync),
                    &m.id,
                    &m.thread_id,
                    &m.direction,
                    &m.body,
                    &m.attachments,
                    &m.created_at,
                    &m.author_id,
                    &m.external_id,
                ],
            ));
        }
        if !t.id.is_empty() {
            out.push((
                SAVE_THREADS,
                vec![
                    tenant as &(dyn ToSql + Sync),
                    &t.id,
                    &t.location_id,
                    &t.customer_number,
                    &t.folder_id,
                    &t.unread_count,
                    &t.last_message_id,
                    &t.last_message_at,
                ],
            ));
        }
        out
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
        staged.thread(&tenant, &thread("t1", None, 1));
        staged.thread(&tenant, &thread("t2", None, 1));
        staged.thread(&tenant, &thread("t1", Some("F1"), 2));
        assert_eq!(staged.threads.id, ["t1", "t2"]);
        assert_eq!(staged.threads.folder_id, [Some("F1".to_owned()), None]);
        assert_eq!(staged.threads.unread_count, [2, 1]);
        let statements = staged.statements();
        assert_eq!(statements.len(), 1, "threads only");
        assert_eq!(statements[0].0, SAVE_THREADS);
    }

    #[test]
    fn back_to_a_mark_unstages_what_came_after_it_in_every_column() {
        let tenant = TenantId::trusted("acme");
        let mut staged = Staged::default();
        assert!(staged.is_empty() && staged.statements().is_empty());
        staged.message(&tenant, &message("m1", "t1"));
        staged.thread(&tenant, &thread("t1", None, 1));
        let mark = staged.mark();
        staged.message(&tenant, &message("m2", "t2"));
        staged.thread(&tenant, &thread("t2", None, 1));
        staged.truncate(mark);
        let (m, t) = (&staged.messages, &staged.threads);
        assert_eq!(m.id, ["m1"]);
        assert_eq!(
            [m.thread_id.len(), m.direction.len(), m.body.len(), m.attachments.len()],
            [1; 4]
        );
        assert_eq!([m.created_at.len(), m.author_id.len(), m.external_id.len()], [1; 3]);
        assert_eq!(t.id, ["t1"]);
        assert_eq!(
            [
                t.location_id.len(),
                t.customer_number.len(),
                t.folder_id.len(),
                t.last_message_id.len()
            ],
            [1; 4]
        );
        assert_eq!([t.unread_count.len(), t.last_message_at.len()], [1; 2]);
        let sql: Vec<&str> = staged.statements().iter().map(|(sql, _)| *sql).collect();
        assert_eq!(sql, [INSERT_MESSAGES, SAVE_THREADS], "messages, then threads");
        assert_eq!(staged.statements()[0].1.len(), 9, "tenant and eight columns");
    }
}
