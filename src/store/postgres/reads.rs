//! Reads: records by id, the thread lists and unread counts, message pages, the folder
//! search and the session snapshot, plus the row mappings the writes share.
//!
//! # Lists and counts in SQL
//! The embedded store walks a location's threads and asks `rules::listed` of each; on a tenant
//! with 100k threads that is too much to walk. Here the rule becomes the query's conditions:
//! `rules::audience_filter` turns the viewer, the view and the preferences into an
//! `AudienceFilter` (which locations; every thread there, or only those on folders where one
//! user is in a resource column that counts), and `Audience` writes it as SQL — the rule is
//! `rules.rs`'s, this module only spells it. Two shapes, each on its own index:
//! - *every thread at the locations* (a subscribe-all viewer's "mine"): per location, the
//!   newest threads from `threads_by_location` (or `threads_unread_by_location`), merged.
//! - *threads on the user's folders*: the folders where the user is a counted resource
//!   (`folders_by_sales`, `folders_by_service`), then their threads (`threads_by_folder`).
//!
//! The unread count is the same filter summed over unread threads. `docs/benchmarks/
//! postgres-1m.md` has the plans on a tenant of 1M messages.

use serde::Deserialize;
use tokio_postgres::{Row, types::ToSql};

use super::{Conn, Result};
use crate::{
    domain::{
        AttachmentId, FolderId, LocationId, MessageId, PhoneNumber, TenantId, ThreadId, UserId,
        model::{
            Attachment, Direction, Folder, Me, Message, MessagePage, MessagePosition, Photo, Preferences, Resource,
            Thread, ThreadPage, ThreadPosition, Timestamp,
        },
    },
    rules::{self, AudienceFilter, Resources, Viewer},
    store::*,
};

// ---------------------------------------------------------------------------------------
// Rows

/// `Preferences` from two boolean columns starting at `at`.
pub(super) fn preferences_at(r: &Row, at: usize) -> Preferences {
    Preferences {
        notify_sales_resource: r.get(at),
        notify_service_resource: r.get(at + 1),
    }
}

/// `Resources` from two nullable id columns starting at `at`.
pub(super) fn resources_at(r: &Row, at: usize) -> Resources {
    Resources {
        sales: r.get::<_, Option<String>>(at).map(UserId::trusted),
        service: r.get::<_, Option<String>>(at + 1).map(UserId::trusted),
    }
}

/// A thread row without its last message: `id, location_id, customer_number, folder_id,
/// unread_count, last_message_id, last_message_at`.
pub(super) struct ThreadRow {
    id: ThreadId,
    location_id: LocationId,
    customer_number: PhoneNumber,
    folder_id: Option<FolderId>,
    unread_count: u32,
    pub(super) last_message_id: MessageId,
    last_message_at: i64,
}

impl ThreadRow {
    pub(super) fn from_row(r: &Row) -> ThreadRow {
        ThreadRow {
            id: ThreadId::trusted(r.get::<_, String>(0)),
            location_id: LocationId::trusted(r.get::<_, String>(1)),
            customer_number: PhoneNumber::trusted(r.get::<_, String>(2)),
            folder_id: r.get::<_, Option<String>>(3).map(FolderId::trusted),
            unread_count: r.get::<_, i32>(4).max(0) as u32,
            last_message_id: MessageId::trusted(r.get::<_, String>(5)),
            last_message_at: r.get(6),
        }
    }

    pub(super) fn into_thread(self, last_message: Message) -> Thread {
        Thread {
            id: self.id,
            location_id: self.location_id,
            customer_number: self.customer_number,
            folder_id: self.folder_id,
            unread: self.unread_count > 0,
            unread_count: self.unread_count,
            last_message,
            last_message_at: Timestamp::from_micros(self.last_message_at),
        }
    }
}

/// The message columns `message_at` reads (a macro, so that `concat!` can build constant SQL
/// with them; `MESSAGE_COLUMNS` is the same text).
macro_rules! message_columns {
    () => {
        "m.id, m.thread_id, m.direction, m.body, m.attachments, m.created_at, m.author_id, m.external_id, m.seq"
    };
}
pub(super) use message_columns;

/// The thread columns `ThreadRow::from_row` reads, then the last message's (`message_at(r, 7)`)
/// (a macro, as `message_columns`; `THREAD_AND_LAST` is the same text).
macro_rules! thread_and_last {
    () => {
        concat!(
            "t.id, t.location_id, t.customer_number, t.folder_id, t.unread_count, t.last_message_id, t.last_message_at, ",
            $crate::store::postgres::reads::message_columns!()
        )
    };
}
pub(super) use thread_and_last;

const THREAD_AND_LAST: &str = thread_and_last!();
const MESSAGE_COLUMNS: &str = message_columns!();

/// An attachment as stored in `messages.attachments` (a JSON array).
#[derive(Deserialize)]
struct StoredAttachment {
    id: String,
    url: String,
    content_type: String,
}

/// The JSON text of a message's attachments, as stored.
pub(super) fn attachments_json(attachments: &[Attachment]) -> String {
    // unwrap_or: a list of plain string structs always serializes.
    serde_json::to_string(attachments).unwrap_or_else(|_| "[]".into())
}

/// A message and its sequence number from the columns of `MESSAGE_COLUMNS`, from `at`.
pub(super) fn message_at(r: &Row, at: usize) -> Result<(Message, i64)> {
    let stored: Vec<StoredAttachment> =
        serde_json::from_str(r.get(at + 4)).map_err(|e| StoreError::Unavailable(format!("attachments: {e}")))?;
    let direction: &str = r.get(at + 2);
    Ok((
        Message {
            id: MessageId::trusted(r.get::<_, String>(at)),
            thread_id: ThreadId::trusted(r.get::<_, String>(at + 1)),
            direction: if direction == "outbound" {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            body: r.get(at + 3),
            attachments: stored
                .into_iter()
                .map(|a| Attachment {
                    id: AttachmentId::trusted(a.id),
                    url: a.url,
                    content_type: a.content_type,
                })
                .collect(),
            created_at: Timestamp::from_micros(r.get(at + 5)),
            author_id: r.get::<_, Option<String>>(at + 6).map(UserId::trusted),
            external_id: r.get(at + 7),
        },
        r.get(at + 8),
    ))
}

fn thread_of(r: &Row) -> Result<Thread> {
    let (last, _) = message_at(r, 7)?;
    Ok(ThreadRow::from_row(r).into_thread(last))
}

// ---------------------------------------------------------------------------------------
// Records

pub(super) async fn message(c: &Conn, tenant: &TenantId, id: &MessageId) -> Result<Message> {
    let row = c
        .query_opt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.tenant = $1 AND m.id = $2"),
            &[&tenant.as_str(), &id.as_str()],
        )
        .await?
        .ok_or(StoreError::NotFound("message"))?;
    Ok(message_at(&row, 0)?.0)
}

pub(super) async fn thread(c: &Conn, tenant: &TenantId, id: &ThreadId) -> Result<Thread> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {THREAD_AND_LAST} FROM threads t JOIN messages m ON m.tenant = t.tenant AND m.id = t.last_message_id
                 WHERE t.tenant = $1 AND t.id = $2"
            ),
            &[&tenant.as_str(), &id.as_str()],
        )
        .await?
        .ok_or(StoreError::NotFound("thread"))?;
    thread_of(&row)
}

pub(super) async fn preferences(c: &Conn, tenant: &TenantId) -> Result<Preferences> {
    let row = c
        .query_opt(
            "SELECT notify_sales, notify_service FROM preferences WHERE tenant = $1",
            &[&tenant.as_str()],
        )
        .await?;
    Ok(row.map(|r| preferences_at(&r, 0)).unwrap_or_default())
}

const FOLDER_COLUMNS: &str = "f.id, f.name, f.location_id, f.sales_resource_id, f.service_resource_id, \
     ARRAY(SELECT n.number FROM folder_numbers n WHERE n.tenant = f.tenant AND n.folder_id = f.id ORDER BY n.position)";

fn folder_of(r: &Row) -> Folder {
    Folder {
        id: FolderId::trusted(r.get::<_, String>(0)),
        name: r.get(1),
        location_id: LocationId::trusted(r.get::<_, String>(2)),
        sales_resource_id: r.get::<_, Option<String>>(3).map(UserId::trusted),
        service_resource_id: r.get::<_, Option<String>>(4).map(UserId::trusted),
        phone_numbers: r
            .get::<_, Vec<String>>(5)
            .into_iter()
            .map(PhoneNumber::trusted)
            .collect(),
    }
}

pub(super) async fn folder(c: &Conn, tenant: &TenantId, id: &FolderId) -> Result<Folder> {
    let row = c
        .query_opt(
            &format!("SELECT {FOLDER_COLUMNS} FROM folders f WHERE f.tenant = $1 AND f.id = $2"),
            &[&tenant.as_str(), &id.as_str()],
        )
        .await?
        .ok_or(StoreError::NotFound("folder"))?;
    Ok(folder_of(&row))
}

fn photo_of(r: &Row) -> Photo {
    Photo {
        attachment_id: AttachmentId::trusted(r.get::<_, String>(0)),
        message_id: MessageId::trusted(r.get::<_, String>(1)),
        url: r.get(2),
        linked_by: UserId::trusted(r.get::<_, String>(3)),
        linked_at: Timestamp::from_micros(r.get(4)),
    }
}

/// The photos of one message linked to a folder.
pub(super) async fn photos_of_message(
    c: &Conn,
    tenant: &TenantId,
    folder: &FolderId,
    message: &MessageId,
) -> Result<Vec<Photo>> {
    let rows = c
        .query(
            "SELECT attachment_id, message_id, url, linked_by, linked_at FROM photos
             WHERE tenant = $1 AND folder_id = $2 AND message_id = $3 ORDER BY linked_at, attachment_id",
            &[&tenant.as_str(), &folder.as_str(), &message.as_str()],
        )
        .await?;
    Ok(rows.iter().map(photo_of).collect())
}

/// The folder's photos: only of messages in threads at the scope's locations (as the
/// message pages).
pub(super) async fn folder_photos(c: &Conn, scope: &Scope, id: &FolderId) -> Result<Vec<Photo>> {
    folder(c, &scope.tenant, id).await?;
    let rows = c
        .query(
            "SELECT p.attachment_id, p.message_id, p.url, p.linked_by, p.linked_at FROM photos p
             WHERE p.tenant = $1 AND p.folder_id = $2
               AND EXISTS (SELECT 1 FROM messages m JOIN threads t ON t.tenant = m.tenant AND t.id = m.thread_id
                           WHERE m.tenant = p.tenant AND m.id = p.message_id AND t.location_id = ANY($3::text[]))
             ORDER BY p.linked_at, p.attachment_id",
            &[&scope.tenant.as_str(), &id.as_str(), &locations(scope)],
        )
        .await?;
    Ok(rows.iter().map(photo_of).collect())
}

fn locations(scope: &Scope) -> Vec<&str> {
    let mut out: Vec<&str> = scope.locations.iter().map(|l| l.as_str()).collect();
    // Distinct: the per-location scan would list a thread once per repetition.
    out.sort_unstable();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------
// The caller

/// What the rules need to know about the caller and the tenant, in one statement.
struct Facts {
    name: Option<String>,
    subscribe_all: bool,
    prefs: Preferences,
    head: u64,
}

async fn facts(c: &Conn, scope: &Scope) -> Result<Facts> {
    let row = c
        .query_one(
            "SELECT (SELECT name FROM users WHERE tenant = $1 AND id = $2),
                    (SELECT subscribe_all FROM subscriptions WHERE tenant = $1 AND user_id = $2),
                    (SELECT notify_sales FROM preferences WHERE tenant = $1),
                    (SELECT notify_service FROM preferences WHERE tenant = $1),
                    (SELECT head FROM event_heads WHERE tenant = $1)",
            &[&scope.tenant.as_str(), &scope.user.as_str()],
        )
        .await?;
    let defaults = Preferences::default();
    Ok(Facts {
        name: row.get(0),
        subscribe_all: row.get::<_, Option<bool>>(1).unwrap_or(false),
        prefs: Preferences {
            notify_sales_resource: row.get::<_, Option<bool>>(2).unwrap_or(defaults.notify_sales_resource),
            notify_service_resource: row
                .get::<_, Option<bool>>(3)
                .unwrap_or(defaults.notify_service_resource),
        },
        head: row.get::<_, Option<i64>>(4).map_or(0, |h| h as u64),
    })
}

impl Facts {
    fn viewer<'a>(&self, scope: &'a Scope) -> Viewer<'a> {
        Viewer {
            user: &scope.user,
            locations: &scope.locations,
            subscribe_all: self.subscribe_all,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lists and counts

/// An `AudienceFilter` written as SQL over `threads t` (see the module's doc), with the
/// parameters it binds after the caller's first ones.
struct Audience<'a> {
    filter: &'a AudienceFilter<'a>,
    locations: Vec<&'a str>,
}

impl<'a> Audience<'a> {
    fn new(filter: &'a AudienceFilter<'a>) -> Self {
        let mut locations: Vec<&str> = filter.locations.iter().map(|l| l.as_str()).collect();
        locations.sort_unstable();
        locations.dedup();
        Audience { filter, locations }
    }

    /// The condition on the folder `f` of a thread for a filter that does not take every
    /// thread: the user in a resource column that counts. `$user` is the user's parameter.
    fn folder_condition(&self, user: &str) -> String {
        match (self.filter.sales, self.filter.service) {
            (true, true) => format!("(f.sales_resource_id = {user} OR f.service_resource_id = {user})"),
            (true, false) => format!("f.sales_resource_id = {user}"),
            (false, true) => format!("f.service_resource_id = {user}"),
            // `is_empty` filters never reach a query.
            (false, false) => "false".into(),
        }
    }

    /// The conditions on `threads t` (tenant `$1`, locations `$2`, user `$3`), besides the
    /// list's own (unread only, the cursor).
    fn where_clause(&self, unread_only: bool) -> String {
        let unread = if unread_only { " AND t.unread_count > 0" } else { "" };
        if self.filter.all {
            format!("t.tenant = $1 AND t.location_id = ANY($2::text[]){unread}")
        } else {
            format!(
                "t.tenant = $1 AND t.location_id = ANY($2::text[]){unread}
                 AND t.folder_id IN (SELECT f.id FROM folders f WHERE f.tenant = $1 AND {})",
                self.folder_condition("$3")
            )
        }
    }

    /// A page of the list: at most `$6` threads strictly past the position (`$4`, `$5`),
    /// newest first, with their last messages.
    fn page_sql(&self, unread_only: bool) -> String {
        let unread = if unread_only { " AND t.unread_count > 0" } else { "" };
        let page = if self.filter.all {
            // One index scan per location, each stopping after a page: merged below.
            format!(
                "SELECT t.* FROM unnest($2::text[]) AS l(location_id)
                 CROSS JOIN LATERAL (
                     SELECT t.* FROM threads t
                     WHERE t.tenant = $1 AND t.location_id = l.location_id{unread}
                       AND (t.last_message_at, t.id) < ($4, $5)
                       -- Every shape binds the same parameters; this one has no use for $3.
                       AND $3::text IS NOT NULL
                     ORDER BY t.last_message_at DESC, t.id DESC LIMIT $6) t
                 ORDER BY t.last_message_at DESC, t.id DESC LIMIT $6"
            )
        } else {
            format!(
                "SELECT t.* FROM threads t WHERE {} AND (t.last_message_at, t.id) < ($4, $5)
                 ORDER BY t.last_message_at DESC, t.id DESC LIMIT $6",
                self.where_clause(unread_only)
            )
        };
        format!(
            "SELECT {THREAD_AND_LAST} FROM ({page}) t
             JOIN messages m ON m.tenant = t.tenant AND m.id = t.last_message_id
             ORDER BY t.last_message_at DESC, t.id DESC"
        )
    }

    /// The sum of the unread counts of the threads passing the filter.
    fn count_sql(&self) -> String {
        format!(
            "SELECT COALESCE(SUM(t.unread_count), 0)::bigint FROM threads t WHERE {} AND $3::text IS NOT NULL",
            self.where_clause(true)
        )
    }
}

pub(super) async fn threads(c: &Conn, scope: &Scope, q: &ThreadQuery) -> Result<ThreadPage> {
    let facts = facts(c, scope).await?;
    let viewer = facts.viewer(scope);
    let filter = rules::audience_filter(&viewer, q.view.resource(), facts.prefs);
    if filter.is_empty() || q.limit == 0 {
        return Ok(ThreadPage {
            threads: Vec::new(),
            next: None,
        });
    }
    let audience = Audience::new(&filter);
    let (at, id) = q.before.as_ref().map_or((i64::MAX, ""), |b| (b.at, b.id.as_str()));
    // `(at, id) < (MAX, '')` holds for every thread: `last_message_at` is never MAX.
    let limit = q.limit as i64 + 1;
    let params: [&(dyn ToSql + Sync); 6] = [
        &scope.tenant.as_str(),
        &audience.locations,
        &filter.resource.as_str(),
        &at,
        &id,
        &limit,
    ];
    let rows = c.query(&audience.page_sql(q.unread_only), &params).await?;
    let mut threads = rows.iter().map(thread_of).collect::<Result<Vec<_>>>()?;
    let next = if threads.len() > q.limit {
        threads.truncate(q.limit);
        threads.last().map(|t| ThreadPosition {
            at: t.last_message_at.micros(),
            id: t.id.clone(),
        })
    } else {
        None
    };
    Ok(ThreadPage { threads, next })
}

async fn count(c: &Conn, scope: &Scope, facts: &Facts) -> Result<u64> {
    let viewer = facts.viewer(scope);
    let filter = rules::audience_filter(&viewer, None, facts.prefs);
    if filter.is_empty() {
        return Ok(0);
    }
    let audience = Audience::new(&filter);
    let row = c
        .query_one(
            &audience.count_sql(),
            &[&scope.tenant.as_str(), &audience.locations, &filter.resource.as_str()],
        )
        .await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

pub(super) async fn user_name(c: &Conn, tenant: &TenantId, user: &UserId) -> Result<Option<String>> {
    let row = c
        .query_opt(
            "SELECT name FROM users WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &user.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn me(c: &Conn, scope: &Scope) -> Result<Me> {
    let facts = facts(c, scope).await?;
    let unread_count = count(c, scope, &facts).await?;
    Ok(Me {
        user_id: scope.user.clone(),
        tenant: scope.tenant.clone(),
        name: facts.name,
        locations: scope.locations.to_vec(),
        subscribe_all: facts.subscribe_all,
        unread_count,
    })
}

/// The count and the log's head in one snapshot (a REPEATABLE READ transaction): a write
/// commits its rows and its events together, so the count is exact as of the head.
pub(super) async fn session_start(c: &Conn, scope: &Scope) -> Result<SessionStart> {
    c.start("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    let facts = facts(c, scope).await?;
    let unread_count = count(c, scope, &facts).await?;
    c.control("COMMIT").await?;
    Ok(SessionStart {
        subscribe_all: facts.subscribe_all,
        unread_count,
        last_event_id: facts.head,
    })
}

pub(super) async fn resources(c: &Conn, scope: &Scope) -> Result<Vec<Resource>> {
    let rows = c
        .query(
            "SELECT r.id, u.name FROM (
               SELECT sales_resource_id AS id FROM folders WHERE tenant = $1 AND location_id = ANY($2::text[]) AND sales_resource_id IS NOT NULL
               UNION
               SELECT service_resource_id FROM folders WHERE tenant = $1 AND location_id = ANY($2::text[]) AND service_resource_id IS NOT NULL
             ) r LEFT JOIN users u ON u.tenant = $1 AND u.id = r.id
             ORDER BY COALESCE(u.name, r.id) COLLATE \"C\", r.id",
            &[&scope.tenant.as_str(), &locations(scope)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Resource {
            user_id: UserId::trusted(r.get::<_, String>(0)),
            name: r.get(1),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Folders and messages

/// `%s%` for LIKE, with the pattern characters of `s` escaped.
fn contains(s: &str) -> String {
    format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

pub(super) async fn search_folders(
    c: &Conn,
    scope: &Scope,
    digits: Option<&str>,
    text: Option<&str>,
) -> Result<Vec<Folder>> {
    let (digits, text) = (digits.map(contains), text.map(contains));
    // Only the conditions asked for, so that each plan uses its own trigram index.
    let mut sql =
        format!("SELECT {FOLDER_COLUMNS} FROM folders f WHERE f.tenant = $1 AND f.location_id = ANY($2::text[])");
    let tenant = scope.tenant.as_str();
    let locs = locations(scope);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &locs];
    if let Some(d) = &digits {
        params.push(d);
        sql.push_str(&format!(
            " AND f.id IN (SELECT n.folder_id FROM folder_numbers n WHERE n.tenant = $1 AND n.number LIKE ${})",
            params.len()
        ));
    }
    if let Some(t) = &text {
        params.push(t);
        sql.push_str(&format!(" AND f.name ILIKE ${}", params.len()));
    }
    sql.push_str(" ORDER BY f.name COLLATE \"C\", f.id LIMIT 200");
    let rows = c.query(&sql, &params).await?;
    Ok(rows.iter().map(folder_of).collect())
}

/// A page of messages, newest first from the position, of the threads `threads` picks (a
/// condition on `threads t`, with `$2` its key), only of threads at the scope's locations
/// whatever it says (`$6`); returned oldest first.
async fn message_page(c: &Conn, scope: &Scope, sql: &str, key: &str, paging: &Paging) -> Result<MessagePage> {
    let (at, seq) = paging.before.map_or((i64::MAX, i64::MAX), |b| (b.at, b.seq));
    let limit = paging.limit as i64 + 1;
    let rows = c
        .query(
            sql,
            &[&scope.tenant.as_str(), &key, &at, &seq, &limit, &locations(scope)],
        )
        .await?;
    let mut page = rows.iter().map(|r| message_at(r, 0)).collect::<Result<Vec<_>>>()?;
    let next = if page.len() > paging.limit {
        page.truncate(paging.limit);
        page.last().map(|(m, seq)| MessagePosition {
            at: m.created_at.micros(),
            seq: *seq,
        })
    } else {
        None
    };
    page.reverse();
    Ok(MessagePage {
        messages: page.into_iter().map(|(m, _)| m).collect(),
        next,
    })
}

/// The thread's messages after `after` (the newest `NEWER_LIMIT`, oldest first);
/// `Invalid("after_message_id")` when `after` is not one of the thread's.
pub(super) async fn newer_than(
    c: &Conn,
    tenant: &TenantId,
    thread: &ThreadId,
    after: &MessageId,
) -> Result<Vec<Message>> {
    let at = c
        .query_opt(
            "SELECT created_at, seq FROM messages WHERE tenant = $1 AND id = $2 AND thread_id = $3",
            &[&tenant.as_str(), &after.as_str(), &thread.as_str()],
        )
        .await?
        .ok_or_else(|| StoreError::invalid("after_message_id", "is not a message of this thread"))?;
    let (at, seq): (i64, i64) = (at.get(0), at.get(1));
    let rows = c
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.tenant = $1 AND m.thread_id = $2
                   AND (m.created_at, m.seq) > ($3, $4)
                 ORDER BY m.created_at DESC, m.seq DESC LIMIT $5"
            ),
            &[
                &tenant.as_str(),
                &thread.as_str(),
                &at,
                &seq,
                &(crate::store::NEWER_LIMIT as i64),
            ],
        )
        .await?;
    let mut newer = rows
        .iter()
        .map(|r| message_at(r, 0).map(|(m, _)| m))
        .collect::<Result<Vec<_>>>()?;
    newer.reverse();
    Ok(newer)
}

pub(super) async fn thread_messages(c: &Conn, scope: &Scope, id: &ThreadId, paging: &Paging) -> Result<MessagePage> {
    // The location check is a one-time condition, so the scan is the thread's index in
    // order, stopping after a page.
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m
         WHERE m.tenant = $1 AND m.thread_id = $2 AND (m.created_at, m.seq) < ($3, $4)
           AND EXISTS (SELECT 1 FROM threads t WHERE t.tenant = $1 AND t.id = $2 AND t.location_id = ANY($6::text[]))
         ORDER BY m.created_at DESC, m.seq DESC LIMIT $5"
    );
    let found = c
        .query_opt(
            "SELECT 1 FROM threads WHERE tenant = $1 AND id = $2",
            &[&scope.tenant.as_str(), &id.as_str()],
        )
        .await?;
    if found.is_none() {
        return Err(StoreError::NotFound("thread").into());
    }
    message_page(c, scope, &sql, id.as_str(), paging).await
}

pub(super) async fn folder_messages(c: &Conn, scope: &Scope, id: &FolderId, paging: &Paging) -> Result<MessagePage> {
    folder(c, &scope.tenant, id).await?;
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m
         WHERE m.tenant = $1 AND (m.created_at, m.seq) < ($3, $4)
           AND m.thread_id IN (SELECT t.id FROM threads t WHERE t.tenant = $1 AND t.folder_id = $2 AND t.location_id = ANY($6::text[]))
         ORDER BY m.created_at DESC, m.seq DESC LIMIT $5"
    );
    message_page(c, scope, &sql, id.as_str(), paging).await
}
