//! The embedded store's operations: plain functions over one SQLite connection. Writes take
//! a `Tx` (they run on the writer thread) and are each: read the facts, call their plan in
//! `crate::plan`, apply it (rows, then the plan's events). Reads take a pooled read
//! connection and filter with `crate::rules`.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, Params, Row, params};

use super::Tx;
use crate::{
    domain::{
        AttachmentId, FolderId, LocationId, MessageId, PhoneNumber, TenantId, ThreadId, UserId,
        model::{
            Attachment, Direction, Folder, Ingested, Linked, Location, Me, Message, MessagePage, MessagePosition,
            Photo, Preferences, Resource, Thread, ThreadPage, ThreadPosition, Timestamp, User,
        },
    },
    event::EventKind,
    rules::{self, ReadChange, Resources, Viewer, plan},
    store::*,
};

/// `Connection::execute` and `query_row` compile their SQL on every call; these go through
/// the connection's statement cache instead (the writer runs the same few statements all
/// day, and compiling them was a tenth of its time in the W2 profile).
pub(super) trait Cached {
    fn exec_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row_cached<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row_cached<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

pub(super) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn json_list<T: AsRef<str>>(items: &[T]) -> String {
    serde_json::to_string(&items.iter().map(|s| s.as_ref()).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

// ---------------------------------------------------------------------------------------
// Directory

pub(super) fn upsert_location(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    id: &LocationId,
    input: LocationInput,
) -> StoreResult<Location> {
    let c = tx.conn;
    let numbers = dedup(input.sms_numbers);
    for n in &numbers {
        let holder: Option<String> = c
            .row_cached(
                "SELECT location_id FROM location_numbers WHERE tenant = ?1 AND number = ?2",
                params![tenant.as_str(), n.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(other) = holder.filter(|h| h != id.as_str()) {
            return Err(StoreError::Conflict(format!(
                "sms number {n} belongs to location {other}"
            )));
        }
    }
    c.exec_cached(
        "INSERT INTO locations (tenant, id, name) VALUES (?1, ?2, ?3) ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name",
        params![tenant.as_str(), id.as_str(), input.name],
    )
    .map_err(db)?;
    replace_numbers(c, tenant, "location_numbers", "location_id", id.as_str(), &numbers)?;
    Ok(Location {
        id: id.clone(),
        name: input.name,
        sms_numbers: numbers,
    })
}

pub(super) fn upsert_user(tx: &mut Tx<'_>, tenant: &TenantId, id: &UserId, name: String) -> StoreResult<User> {
    tx.conn
        .exec_cached(
            "INSERT INTO users (tenant, id, name) VALUES (?1, ?2, ?3) ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name",
            params![tenant.as_str(), id.as_str(), name],
        )
        .map_err(db)?;
    Ok(User { id: id.clone(), name })
}

pub(super) fn upsert_folder(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    id: &FolderId,
    input: FolderInput,
) -> StoreResult<Folder> {
    let c = tx.conn;
    let location_known = c
        .row_cached(
            "SELECT 1 FROM locations WHERE tenant = ?1 AND id = ?2",
            params![tenant.as_str(), input.location_id.as_str()],
            |_| Ok(()),
        )
        .optional()
        .map_err(db)?
        .is_some();
    if !location_known {
        return Err(StoreError::invalid(
            "location_id",
            format!("unknown location {}", input.location_id),
        ));
    }
    let before = folder_resources(c, tenant, Some(id))?;
    let numbers = dedup(input.phone_numbers);
    c.exec_cached(
        "INSERT INTO folders (tenant, id, name, location_id, sales_resource_id, service_resource_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name, location_id = excluded.location_id,
           sales_resource_id = excluded.sales_resource_id, service_resource_id = excluded.service_resource_id",
        params![
            tenant.as_str(),
            id.as_str(),
            input.name,
            input.location_id.as_str(),
            input.sales_resource_id.as_ref().map(|u| u.as_str()),
            input.service_resource_id.as_ref().map(|u| u.as_str())
        ],
    )
    .map_err(db)?;
    replace_numbers(c, tenant, "folder_numbers", "folder_id", id.as_str(), &numbers)?;
    let after = Resources {
        sales: input.sales_resource_id.clone(),
        service: input.service_resource_id.clone(),
    };
    let events = plan::upsert_folder(
        before.as_ref(),
        &after,
        preferences(c, tenant)?,
        has_unread_threads(c, tenant, id)?,
    );
    tx.emit_all(tenant, events)?;
    Ok(Folder {
        id: id.clone(),
        name: input.name,
        location_id: input.location_id,
        phone_numbers: numbers,
        sales_resource_id: input.sales_resource_id,
        service_resource_id: input.service_resource_id,
    })
}

pub(super) fn preferences(c: &Connection, tenant: &TenantId) -> StoreResult<Preferences> {
    Ok(c.row_cached(
        "SELECT notify_sales, notify_service FROM preferences WHERE tenant = ?1",
        [tenant.as_str()],
        |r| {
            Ok(Preferences {
                notify_sales_resource: r.get(0)?,
                notify_service_resource: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(db)?
    .unwrap_or_default())
}

pub(super) fn set_preferences(tx: &mut Tx<'_>, tenant: &TenantId, patch: PreferencesPatch) -> StoreResult<Preferences> {
    let before = preferences(tx.conn, tenant)?;
    let after = plan::preferences(before, patch);
    tx.conn
        .exec_cached(
            "INSERT INTO preferences (tenant, notify_sales, notify_service) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant) DO UPDATE SET notify_sales = excluded.notify_sales, notify_service = excluded.notify_service",
            params![tenant.as_str(), after.notify_sales_resource, after.notify_service_resource],
        )
        .map_err(db)?;
    if plan::preferences_changed(before, after) {
        let folders = resources_with_unread(tx.conn, tenant)?;
        tx.emit_all(tenant, plan::preference_counts(before, after, &folders))?;
    }
    Ok(after)
}

// ---------------------------------------------------------------------------------------
// Threads and messages

/// A thread row without its last message.
struct ThreadRow {
    id: ThreadId,
    location_id: LocationId,
    customer_number: PhoneNumber,
    folder_id: Option<FolderId>,
    unread_count: u32,
    last_message_id: MessageId,
    last_message_at: i64,
}

impl From<&Thread> for ThreadRow {
    fn from(t: &Thread) -> ThreadRow {
        ThreadRow {
            id: t.id.clone(),
            location_id: t.location_id.clone(),
            customer_number: t.customer_number.clone(),
            folder_id: t.folder_id.clone(),
            unread_count: t.unread_count,
            last_message_id: t.last_message.id.clone(),
            last_message_at: t.last_message_at.micros(),
        }
    }
}

const THREAD_COLUMNS: &str =
    "t.id, t.location_id, t.customer_number, t.folder_id, t.unread_count, t.last_message_id, t.last_message_at";

fn thread_row(r: &Row<'_>) -> rusqlite::Result<ThreadRow> {
    Ok(ThreadRow {
        id: ThreadId::trusted(r.get::<_, String>(0)?),
        location_id: LocationId::trusted(r.get::<_, String>(1)?),
        customer_number: PhoneNumber::trusted(r.get::<_, String>(2)?),
        folder_id: r.get::<_, Option<String>>(3)?.map(FolderId::trusted),
        unread_count: r.get(4)?,
        last_message_id: MessageId::trusted(r.get::<_, String>(5)?),
        last_message_at: r.get(6)?,
    })
}

fn find_thread(c: &Connection, tenant: &TenantId, id: &ThreadId) -> StoreResult<ThreadRow> {
    c.row_cached(
        &format!("SELECT {THREAD_COLUMNS} FROM threads t WHERE t.tenant = ?1 AND t.id = ?2"),
        params![tenant.as_str(), id.as_str()],
        thread_row,
    )
    .optional()
    .map_err(db)?
    .ok_or(StoreError::NotFound("thread"))
}

fn full_thread(c: &Connection, tenant: &TenantId, row: ThreadRow) -> StoreResult<Thread> {
    let last_message = load_message(c, tenant, &row.last_message_id)?;
    Ok(thread_of(row, last_message))
}

fn thread_of(row: ThreadRow, last_message: Message) -> Thread {
    Thread {
        id: row.id,
        location_id: row.location_id,
        customer_number: row.customer_number,
        folder_id: row.folder_id,
        unread: row.unread_count > 0,
        unread_count: row.unread_count,
        last_message,
        last_message_at: Timestamp::from_micros(row.last_message_at),
    }
}

pub(super) fn load_thread(c: &Connection, tenant: &TenantId, id: &ThreadId) -> StoreResult<Thread> {
    let row = find_thread(c, tenant, id)?;
    full_thread(c, tenant, row)
}

const MESSAGE_COLUMNS: &str = "m.id, m.thread_id, m.direction, m.body, m.created_at, m.author_id, m.external_id, m.seq";

fn message_row(r: &Row<'_>) -> rusqlite::Result<(Message, i64)> {
    let direction: String = r.get(2)?;
    Ok((
        Message {
            id: MessageId::trusted(r.get::<_, String>(0)?),
            thread_id: ThreadId::trusted(r.get::<_, String>(1)?),
            direction: if direction == "outbound" {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            body: r.get(3)?,
            attachments: Vec::new(),
            created_at: Timestamp::from_micros(r.get(4)?),
            author_id: r.get::<_, Option<String>>(5)?.map(UserId::trusted),
            external_id: r.get(6)?,
        },
        r.get(7)?,
    ))
}

fn with_attachments(c: &Connection, tenant: &TenantId, mut m: Message) -> StoreResult<Message> {
    let mut stmt = c
        .prepare_cached(
            "SELECT id, url, content_type FROM attachments WHERE tenant = ?1 AND message_id = ?2 ORDER BY position",
        )
        .map_err(db)?;
    m.attachments = stmt
        .query_map(params![tenant.as_str(), m.id.as_str()], |r| {
            Ok(Attachment {
                id: AttachmentId::trusted(r.get::<_, String>(0)?),
                url: r.get(1)?,
                content_type: r.get(2)?,
            })
        })
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    Ok(m)
}

pub(super) fn load_message(c: &Connection, tenant: &TenantId, id: &MessageId) -> StoreResult<Message> {
    let (m, _) = c
        .row_cached(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.tenant = ?1 AND m.id = ?2"),
            params![tenant.as_str(), id.as_str()],
            message_row,
        )
        .optional()
        .map_err(db)?
        .ok_or(StoreError::NotFound("message"))?;
    with_attachments(c, tenant, m)
}

fn insert_message(c: &Connection, tenant: &TenantId, m: &Message) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO messages (tenant, id, thread_id, direction, body, created_at, author_id, external_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant.as_str(),
            m.id.as_str(),
            m.thread_id.as_str(),
            m.direction.as_str(),
            m.body,
            m.created_at.micros(),
            m.author_id.as_ref().map(|u| u.as_str()),
            m.external_id
        ])
    })
    .map_err(db)?;
    for (i, a) in m.attachments.iter().enumerate() {
        c.prepare_cached("INSERT INTO attachments (tenant, id, message_id, position, url, content_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut s| s.execute(params![tenant.as_str(), a.id.as_str(), m.id.as_str(), i as i64, a.url, a.content_type]))
            .map_err(db)?;
    }
    Ok(())
}

fn save_thread(c: &Connection, tenant: &TenantId, t: &ThreadRow) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO threads (tenant, id, location_id, customer_number, folder_id, unread_count, last_message_id, last_message_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (tenant, id) DO UPDATE SET folder_id = excluded.folder_id, unread_count = excluded.unread_count,
           last_message_id = excluded.last_message_id, last_message_at = excluded.last_message_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant.as_str(),
            t.id.as_str(),
            t.location_id.as_str(),
            t.customer_number.as_str(),
            t.folder_id.as_ref().map(|f| f.as_str()),
            t.unread_count,
            t.last_message_id.as_str(),
            t.last_message_at
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// The resources of a folder, or `None` when there is no such folder.
fn folder_resources(c: &Connection, tenant: &TenantId, folder: Option<&FolderId>) -> StoreResult<Option<Resources>> {
    let Some(folder) = folder else {
        return Ok(None);
    };
    c.row_cached(
        "SELECT sales_resource_id, service_resource_id FROM folders WHERE tenant = ?1 AND id = ?2",
        params![tenant.as_str(), folder.as_str()],
        |r| {
            Ok(Resources {
                sales: r.get::<_, Option<String>>(0)?.map(UserId::trusted),
                service: r.get::<_, Option<String>>(1)?.map(UserId::trusted),
            })
        },
    )
    .optional()
    .map_err(db)
}

pub(super) fn ingest(tx: &mut Tx<'_>, tenant: &TenantId, input: InboundInput) -> StoreResult<Ingested> {
    let c = tx.conn;
    let existing: Option<String> = c
        .row_cached(
            "SELECT id FROM messages WHERE tenant = ?1 AND external_id = ?2",
            params![tenant.as_str(), input.external_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    if let Some(id) = existing {
        // The same message again: answered as it is, nothing changes.
        let message = load_message(c, tenant, &MessageId::trusted(id))?;
        let thread = load_thread(c, tenant, &message.thread_id)?;
        return Ok(Ingested {
            message,
            thread,
            created: false,
        });
    }
    let location: LocationId = c
        .row_cached(
            "SELECT location_id FROM location_numbers WHERE tenant = ?1 AND number = ?2",
            params![tenant.as_str(), input.to.as_str()],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(db)?
        .map(LocationId::trusted)
        .ok_or_else(|| StoreError::invalid("to", format!("{} is not an SMS number of any location", input.to)))?;
    let thread = c
        .row_cached(
            &format!("SELECT {THREAD_COLUMNS} FROM threads t WHERE t.tenant = ?1 AND t.location_id = ?2 AND t.customer_number = ?3"),
            params![tenant.as_str(), location.as_str(), input.from.as_str()],
            thread_row,
        )
        .optional()
        .map_err(db)?
        .map(|row| full_thread(c, tenant, row))
        .transpose()?;
    let current = folder_resources(c, tenant, thread.as_ref().and_then(|t| t.folder_id.as_ref()))?.unwrap_or_default();
    let listing = folders_listing(c, tenant, &input.from)?;
    let ids = plan::NewIds {
        thread: ThreadId::generate(),
        message: MessageId::generate(),
        attachments: input.attachments.iter().map(|_| AttachmentId::generate()).collect(),
    };
    let facts = plan::IngestFacts {
        location: &location,
        thread: thread.as_ref(),
        current,
        listing: &listing,
        prefs: preferences(c, tenant)?,
    };
    let planned = plan::ingest(facts, input, ids, Timestamp::now());
    insert_message(c, tenant, &planned.message)?;
    save_thread(c, tenant, &ThreadRow::from(&planned.thread))?;
    tx.emit_all(tenant, planned.events)?;
    Ok(Ingested {
        message: planned.message,
        thread: planned.thread,
        created: true,
    })
}

/// The folders that list a number (`?2`), found through the number: `CROSS JOIN` makes SQLite
/// start from `folder_numbers_by_number` and fetch each folder by its key. With a plain JOIN it
/// walked every folder of the tenant in id order (to skip sorting for the ORDER BY), probing
/// each for the number: every inbound message read all of its tenant's folders, which cost the
/// single node more than half of its ingestion rate with 1,000 folders (W2, BENCHMARKS.md).
const FOLDERS_LISTING: &str = "SELECT DISTINCT f.id, f.location_id, f.sales_resource_id, f.service_resource_id
     FROM folder_numbers n CROSS JOIN folders f ON f.tenant = n.tenant AND f.id = n.folder_id
     WHERE n.tenant = ?1 AND n.number = ?2 ORDER BY f.id";

/// Every folder that lists `number`, with its location and resources (auto-assignment's facts).
fn folders_listing(c: &Connection, tenant: &TenantId, number: &PhoneNumber) -> StoreResult<Vec<plan::FolderFacts>> {
    let mut stmt = c.prepare_cached(FOLDERS_LISTING).map_err(db)?;
    stmt.query_map(params![tenant.as_str(), number.as_str()], |r| {
        Ok(plan::FolderFacts {
            id: FolderId::trusted(r.get::<_, String>(0)?),
            location_id: LocationId::trusted(r.get::<_, String>(1)?),
            resources: Resources {
                sales: r.get::<_, Option<String>>(2)?.map(UserId::trusted),
                service: r.get::<_, Option<String>>(3)?.map(UserId::trusted),
            },
        })
    })
    .map_err(db)?
    .collect::<Result<_, _>>()
    .map_err(db)
}

/// A folder as `plan` sees it, or `None` when there is no such folder.
fn folder_facts(c: &Connection, tenant: &TenantId, id: &FolderId) -> StoreResult<Option<plan::FolderFacts>> {
    c.row_cached(
        "SELECT location_id, sales_resource_id, service_resource_id FROM folders WHERE tenant = ?1 AND id = ?2",
        params![tenant.as_str(), id.as_str()],
        |r| {
            Ok(plan::FolderFacts {
                id: id.clone(),
                location_id: LocationId::trusted(r.get::<_, String>(0)?),
                resources: Resources {
                    sales: r.get::<_, Option<String>>(1)?.map(UserId::trusted),
                    service: r.get::<_, Option<String>>(2)?.map(UserId::trusted),
                },
            })
        },
    )
    .optional()
    .map_err(db)
}

/// The resources of a thread's folder (none when it has no folder).
fn resources_of(c: &Connection, tenant: &TenantId, thread: &Thread) -> StoreResult<Resources> {
    Ok(folder_resources(c, tenant, thread.folder_id.as_ref())?.unwrap_or_default())
}

pub(super) fn change_read_state(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    id: &ThreadId,
    by: &UserId,
    change: ReadChange,
) -> StoreResult<Thread> {
    let c = tx.conn;
    let thread = load_thread(c, tenant, id)?;
    let resources = resources_of(c, tenant, &thread)?;
    match plan::read_state(&thread, &resources, preferences(c, tenant)?, by, change) {
        None => Ok(thread),
        Some(changed) => apply(tx, tenant, changed),
    }
}

/// Stores the thread a plan changed and appends its events.
fn apply(tx: &mut Tx<'_>, tenant: &TenantId, changed: plan::Changed) -> StoreResult<Thread> {
    save_thread(tx.conn, tenant, &ThreadRow::from(&changed.thread))?;
    tx.emit_all(tenant, changed.events)?;
    Ok(changed.thread)
}

pub(super) fn reply(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    id: &ThreadId,
    by: &UserId,
    body: String,
    after: Option<&MessageId>,
) -> StoreResult<Message> {
    let c = tx.conn;
    let thread = load_thread(c, tenant, id)?;
    let resources = resources_of(c, tenant, &thread)?;
    let prefs = preferences(c, tenant)?;
    let newer = match after {
        Some(after) => newer_than(c, tenant, id, after)?,
        None => Vec::new(),
    };
    let replied = plan::reply(
        &thread,
        &resources,
        prefs,
        by,
        body,
        MessageId::generate(),
        Timestamp::now(),
        newer,
    )?;
    insert_message(c, tenant, &replied.message)?;
    save_thread(c, tenant, &ThreadRow::from(&replied.thread))?;
    tx.emit_all(tenant, replied.events)?;
    Ok(replied.message)
}

/// The thread's messages after `after` (the newest `NEWER_LIMIT`, oldest first);
/// `Invalid("after_message_id")` when `after` is not one of the thread's.
fn newer_than(c: &Connection, tenant: &TenantId, thread: &ThreadId, after: &MessageId) -> StoreResult<Vec<Message>> {
    let (at, seq): (i64, i64) = c
        .prepare_cached("SELECT created_at, seq FROM messages WHERE tenant = ?1 AND id = ?2 AND thread_id = ?3")
        .map_err(db)?
        .query_row(params![tenant.as_str(), after.as_str(), thread.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(db)?
        .ok_or_else(|| StoreError::invalid("after_message_id", "is not a message of this thread"))?;
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.tenant = ?1 AND m.thread_id = ?2
               AND (m.created_at, m.seq) > (?3, ?4)
             ORDER BY m.created_at DESC, m.seq DESC LIMIT ?5"
        ))
        .map_err(db)?;
    let mut rows: Vec<(Message, i64)> = stmt
        .query_map(
            params![
                tenant.as_str(),
                thread.as_str(),
                at,
                seq,
                crate::store::NEWER_LIMIT as i64
            ],
            message_row,
        )
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    rows.reverse();
    rows.into_iter().map(|(m, _)| with_attachments(c, tenant, m)).collect()
}

pub(super) fn assign(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    id: &ThreadId,
    folder: &FolderId,
    by: &UserId,
) -> StoreResult<Thread> {
    let c = tx.conn;
    let thread = load_thread(c, tenant, id)?;
    let target = folder_facts(c, tenant, folder)?.ok_or(StoreError::NotFound("folder"))?;
    let current = resources_of(c, tenant, &thread)?;
    match plan::assign(&thread, &current, &target, preferences(c, tenant)?, by)? {
        None => Ok(thread),
        Some(changed) => apply(tx, tenant, changed),
    }
}

/// Messages of the threads `thread_filter` (on `threads t`, with `key` as `?2`) picks, oldest
/// first, a page at a time going back. Only threads at the scope's locations, whatever the
/// filter says: a thread is never on another location's folder (`rules::assignable`), and
/// this holds even if one were.
fn message_page(
    c: &Connection,
    scope: &Scope,
    thread_filter: &str,
    key: &str,
    paging: &Paging,
) -> StoreResult<MessagePage> {
    let tenant = &scope.tenant;
    let (at, seq) = paging.before.map_or((i64::MAX, i64::MAX), |b| (b.at, b.seq));
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.tenant = ?1
           AND m.thread_id IN (SELECT t.id FROM threads t WHERE t.tenant = ?1 AND {thread_filter}
             AND t.location_id IN (SELECT value FROM json_each(?6)))
           AND (m.created_at, m.seq) < (?3, ?4)
         ORDER BY m.created_at DESC, m.seq DESC LIMIT ?5"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(db)?;
    let mut rows: Vec<(Message, i64)> = stmt
        .query_map(
            params![
                tenant.as_str(),
                key,
                at,
                seq,
                paging.limit as i64 + 1,
                json_list(&scope.locations)
            ],
            message_row,
        )
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    let more = rows.len() > paging.limit;
    rows.truncate(paging.limit);
    let next = if more {
        rows.last().map(|(m, seq)| MessagePosition {
            at: m.created_at.micros(),
            seq: *seq,
        })
    } else {
        None
    };
    rows.reverse();
    let messages = rows
        .into_iter()
        .map(|(m, _)| with_attachments(c, tenant, m))
        .collect::<StoreResult<_>>()?;
    Ok(MessagePage { messages, next })
}

pub(super) fn thread_messages(
    c: &Connection,
    scope: &Scope,
    id: &ThreadId,
    paging: &Paging,
) -> StoreResult<MessagePage> {
    find_thread(c, &scope.tenant, id)?;
    message_page(c, scope, "t.id = ?2", id.as_str(), paging)
}

pub(super) fn folder_messages(
    c: &Connection,
    scope: &Scope,
    id: &FolderId,
    paging: &Paging,
) -> StoreResult<MessagePage> {
    load_folder(c, &scope.tenant, id)?;
    message_page(c, scope, "t.folder_id = ?2", id.as_str(), paging)
}

// ---------------------------------------------------------------------------------------
// Views

fn subscribe_all(c: &Connection, tenant: &TenantId, user: &UserId) -> StoreResult<bool> {
    Ok(c.row_cached(
        "SELECT subscribe_all FROM subscriptions WHERE tenant = ?1 AND user_id = ?2",
        params![tenant.as_str(), user.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)?
    .unwrap_or(false))
}

/// Threads in the scope's locations with what the rules need, newest first, optionally only
/// unread ones and only past a cursor. The caller filters with the rules.
fn for_each_candidate(
    c: &Connection,
    scope: &Scope,
    unread_only: bool,
    before: Option<&ThreadPosition>,
    mut visit: impl FnMut(ThreadRow, Resources) -> bool,
) -> StoreResult<()> {
    let (at, id) = before.map(|b| (b.at, b.id.as_str())).unwrap_or((i64::MAX, ""));
    let sql = format!(
        "SELECT {THREAD_COLUMNS}, f.sales_resource_id, f.service_resource_id FROM threads t
         LEFT JOIN folders f ON f.tenant = t.tenant AND f.id = t.folder_id
         WHERE t.tenant = ?1 AND t.location_id IN (SELECT value FROM json_each(?2))
           AND (?3 = 0 OR t.unread_count > 0)
           AND (?4 = '' OR (t.last_message_at, t.id) < (?5, ?4))
         ORDER BY t.last_message_at DESC, t.id DESC"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt
        .query(params![
            scope.tenant.as_str(),
            json_list(&scope.locations),
            unread_only,
            id,
            at
        ])
        .map_err(db)?;
    while let Some(r) = rows.next().map_err(db)? {
        let row = thread_row(r).map_err(db)?;
        let resources = Resources {
            sales: r.get::<_, Option<String>>(7).map_err(db)?.map(UserId::trusted),
            service: r.get::<_, Option<String>>(8).map_err(db)?.map(UserId::trusted),
        };
        if !visit(row, resources) {
            break;
        }
    }
    Ok(())
}

pub(super) fn threads(c: &Connection, scope: &Scope, q: &ThreadQuery) -> StoreResult<ThreadPage> {
    let prefs = preferences(c, &scope.tenant)?;
    let subscribed = subscribe_all(c, &scope.tenant, &scope.user)?;
    let viewer = Viewer {
        user: &scope.user,
        locations: &scope.locations,
        subscribe_all: subscribed,
    };
    let mut page = Vec::new();
    let mut more = false;
    for_each_candidate(c, scope, q.unread_only, q.before.as_ref(), |row, resources| {
        let notified = rules::notified(&resources, prefs);
        let shown = rules::listed(&viewer, q.view.resource(), &row.location_id, &notified);
        if shown {
            if page.len() == q.limit {
                more = true;
                return false;
            }
            page.push(row);
        }
        true
    })?;
    let next = if more {
        page.last().map(|t| ThreadPosition {
            at: t.last_message_at,
            id: t.id.clone(),
        })
    } else {
        None
    };
    let threads = page
        .into_iter()
        .map(|row| full_thread(c, &scope.tenant, row))
        .collect::<StoreResult<_>>()?;
    Ok(ThreadPage { threads, next })
}

pub(super) fn unread_count(c: &Connection, scope: &Scope) -> StoreResult<u64> {
    let prefs = preferences(c, &scope.tenant)?;
    let subscribed = subscribe_all(c, &scope.tenant, &scope.user)?;
    let viewer = Viewer {
        user: &scope.user,
        locations: &scope.locations,
        subscribe_all: subscribed,
    };
    let mut total = 0;
    for_each_candidate(c, scope, true, None, |row, resources| {
        let notified = rules::notified(&resources, prefs);
        total += rules::unread_total(&viewer, [(&row.location_id, &notified[..], row.unread_count)]);
        true
    })?;
    Ok(total)
}

pub(super) fn user_name(c: &Connection, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>> {
    c.row_cached(
        "SELECT name FROM users WHERE tenant = ?1 AND id = ?2",
        params![tenant.as_str(), user.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)
}

pub(super) fn me(c: &Connection, scope: &Scope) -> StoreResult<Me> {
    let name = user_name(c, &scope.tenant, &scope.user)?;
    Ok(Me {
        user_id: scope.user.clone(),
        tenant: scope.tenant.clone(),
        name,
        locations: scope.locations.to_vec(),
        subscribe_all: subscribe_all(c, &scope.tenant, &scope.user)?,
        unread_count: unread_count(c, scope)?,
    })
}

pub(super) fn set_subscribe_all(tx: &mut Tx<'_>, scope: &Scope, on: bool) -> StoreResult<Me> {
    let before = subscribe_all(tx.conn, &scope.tenant, &scope.user)?;
    let events = plan::subscribe_all(&scope.user, before, on);
    if !events.is_empty() {
        tx.conn
            .exec_cached(
                "INSERT INTO subscriptions (tenant, user_id, subscribe_all) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, user_id) DO UPDATE SET subscribe_all = excluded.subscribe_all",
                params![scope.tenant.as_str(), scope.user.as_str(), on],
            )
            .map_err(db)?;
        tx.emit_all(&scope.tenant, events)?;
    }
    me(tx.conn, scope)
}

/// The resources of the folders in the caller's locations (`?2`, a JSON list), with their
/// names. The folders are found through `folders_by_location`, named: without statistics SQLite
/// walked every folder of the tenant instead (`EXPLAIN QUERY PLAN`), as it did for
/// `FOLDERS_LISTING`.
const RESOURCES: &str = "SELECT r.id, u.name FROM (
       SELECT sales_resource_id AS id FROM folders INDEXED BY folders_by_location
       WHERE tenant = ?1 AND location_id IN (SELECT value FROM json_each(?2)) AND sales_resource_id IS NOT NULL
       UNION
       SELECT service_resource_id FROM folders INDEXED BY folders_by_location
       WHERE tenant = ?1 AND location_id IN (SELECT value FROM json_each(?2)) AND service_resource_id IS NOT NULL
     ) r LEFT JOIN users u ON u.tenant = ?1 AND u.id = r.id
     ORDER BY COALESCE(u.name, r.id), r.id";

pub(super) fn resources(c: &Connection, scope: &Scope) -> StoreResult<Vec<Resource>> {
    let mut stmt = c.prepare_cached(RESOURCES).map_err(db)?;
    stmt.query_map(params![scope.tenant.as_str(), json_list(&scope.locations)], |r| {
        Ok(Resource {
            user_id: UserId::trusted(r.get::<_, String>(0)?),
            name: r.get(1)?,
        })
    })
    .map_err(db)?
    .collect::<Result<_, _>>()
    .map_err(db)
}

// ---------------------------------------------------------------------------------------
// Folders and photos

pub(super) fn load_folder(c: &Connection, tenant: &TenantId, id: &FolderId) -> StoreResult<Folder> {
    let mut folder = c
        .row_cached(
            "SELECT id, name, location_id, sales_resource_id, service_resource_id FROM folders WHERE tenant = ?1 AND id = ?2",
            params![tenant.as_str(), id.as_str()],
            |r| {
                Ok(Folder {
                    id: FolderId::trusted(r.get::<_, String>(0)?),
                    name: r.get(1)?,
                    location_id: LocationId::trusted(r.get::<_, String>(2)?),
                    phone_numbers: Vec::new(),
                    sales_resource_id: r.get::<_, Option<String>>(3)?.map(UserId::trusted),
                    service_resource_id: r.get::<_, Option<String>>(4)?.map(UserId::trusted),
                })
            },
        )
        .optional()
        .map_err(db)?
        .ok_or(StoreError::NotFound("folder"))?;
    let mut stmt = c
        .prepare_cached("SELECT number FROM folder_numbers WHERE tenant = ?1 AND folder_id = ?2 ORDER BY position")
        .map_err(db)?;
    folder.phone_numbers = stmt
        .query_map(params![tenant.as_str(), id.as_str()], |r| {
            r.get::<_, String>(0).map(PhoneNumber::trusted)
        })
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    Ok(folder)
}

pub(super) fn search_folders(
    c: &Connection,
    scope: &Scope,
    digits: Option<&str>,
    text: Option<&str>,
) -> StoreResult<Vec<Folder>> {
    let like = |s: &str| format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let mut stmt = c
        .prepare_cached(
            "SELECT f.id FROM folders f WHERE f.tenant = ?1 AND f.location_id IN (SELECT value FROM json_each(?2))
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM folder_numbers n WHERE n.tenant = f.tenant AND n.folder_id = f.id AND n.number LIKE ?3 ESCAPE '\\'))
               AND (?4 IS NULL OR f.name LIKE ?4 ESCAPE '\\')
             ORDER BY f.name, f.id LIMIT 200",
        )
        .map_err(db)?;
    let ids: Vec<String> = stmt
        .query_map(
            params![
                scope.tenant.as_str(),
                json_list(&scope.locations),
                digits.map(like),
                text.map(like)
            ],
            |r| r.get(0),
        )
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    ids.into_iter()
        .map(|id| load_folder(c, &scope.tenant, &FolderId::trusted(id)))
        .collect()
}

fn photos_where(c: &Connection, tenant: &TenantId, filter: &str, a: &str, b: &str) -> StoreResult<Vec<Photo>> {
    let sql = format!(
        "SELECT p.attachment_id, p.message_id, p.url, p.linked_by, p.linked_at FROM photos p WHERE p.tenant = ?1 AND {filter}
         ORDER BY p.linked_at, p.attachment_id"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(db)?;
    stmt.query_map(params![tenant.as_str(), a, b], |r| {
        Ok(Photo {
            attachment_id: AttachmentId::trusted(r.get::<_, String>(0)?),
            message_id: MessageId::trusted(r.get::<_, String>(1)?),
            url: r.get(2)?,
            linked_by: UserId::trusted(r.get::<_, String>(3)?),
            linked_at: Timestamp::from_micros(r.get(4)?),
        })
    })
    .map_err(db)?
    .collect::<Result<_, _>>()
    .map_err(db)
}

pub(super) fn folder_photos(c: &Connection, scope: &Scope, id: &FolderId) -> StoreResult<Vec<Photo>> {
    load_folder(c, &scope.tenant, id)?;
    // Only photos of messages in threads at the scope's locations (as `message_page`).
    photos_where(
        c,
        &scope.tenant,
        "p.folder_id = ?2 AND EXISTS (SELECT 1 FROM messages m JOIN threads t ON t.tenant = m.tenant AND t.id = m.thread_id
           WHERE m.tenant = ?1 AND m.id = p.message_id AND t.location_id IN (SELECT value FROM json_each(?3)))",
        id.as_str(),
        &json_list(&scope.locations),
    )
}

pub(super) fn link_images(tx: &mut Tx<'_>, tenant: &TenantId, message: &MessageId, by: &UserId) -> StoreResult<Linked> {
    let c = tx.conn;
    let m = load_message(c, tenant, message)?;
    let thread = load_thread(c, tenant, &m.thread_id)?;
    let already: Vec<AttachmentId> = match &thread.folder_id {
        None => Vec::new(),
        Some(folder) => photos_where(
            c,
            tenant,
            "p.folder_id = ?2 AND p.message_id = ?3",
            folder.as_str(),
            m.id.as_str(),
        )?
        .into_iter()
        .map(|p| p.attachment_id)
        .collect(),
    };
    let resources = resources_of(c, tenant, &thread)?;
    let prefs = preferences(c, tenant)?;
    let linking = plan::link_images(&m, &thread, &resources, prefs, &already, by, Timestamp::now())?;
    for p in &linking.new_photos {
        c.prepare_cached(
            "INSERT INTO photos (tenant, folder_id, attachment_id, message_id, url, linked_by, linked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant.as_str(),
                linking.folder_id.as_str(),
                p.attachment_id.as_str(),
                p.message_id.as_str(),
                p.url,
                p.linked_by.as_str(),
                p.linked_at.micros()
            ])
        })
        .map_err(db)?;
    }
    let linked = linking.new_photos.len() as u32;
    tx.emit_all(tenant, linking.events)?;
    let photos = photos_where(
        tx.conn,
        tenant,
        "p.folder_id = ?2 AND p.message_id = ?3",
        linking.folder_id.as_str(),
        m.id.as_str(),
    )?;
    Ok(Linked {
        folder_id: linking.folder_id,
        linked,
        photos,
    })
}

// ---------------------------------------------------------------------------------------
// Sessions and the event log

pub(super) fn head(c: &Connection, tenant: &TenantId) -> StoreResult<u64> {
    Ok(c.row_cached(
        "SELECT head FROM event_heads WHERE tenant = ?1",
        [tenant.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)?
    .unwrap_or(0))
}

pub(super) fn session_start(c: &mut Connection, scope: &Scope) -> StoreResult<SessionStart> {
    // One read transaction, so one WAL snapshot from its first read: the count and the log
    // head describe the same moment (a write commits its rows and its events together). The
    // sessions' counts rest on this (see `SessionStart`).
    let tx = c.transaction().map_err(db)?;
    let start = SessionStart {
        subscribe_all: subscribe_all(&tx, &scope.tenant, &scope.user)?,
        unread_count: unread_count(&tx, scope)?,
        last_event_id: head(&tx, &scope.tenant)?,
    };
    tx.commit().map_err(db)?;
    Ok(start)
}

pub(super) fn events_after(c: &mut Connection, tenant: &TenantId, after: u64, limit: usize) -> StoreResult<Replay> {
    let tx = c.transaction().map_err(db)?;
    let head = head(&tx, tenant)?;
    if after > head || head - after > limit as u64 {
        return Ok(Replay::TooOld);
    }
    if after == head {
        return Ok(Replay::Events(Vec::new()));
    }
    let oldest: Option<u64> = tx
        .row_cached("SELECT MIN(id) FROM events WHERE tenant = ?1", [tenant.as_str()], |r| {
            r.get(0)
        })
        .map_err(db)?;
    if oldest.is_none_or(|o| o > after + 1) {
        return Ok(Replay::TooOld);
    }
    let mut stmt = tx
        .prepare_cached("SELECT id, kind, route, data FROM events WHERE tenant = ?1 AND id > ?2 ORDER BY id")
        .map_err(db)?;
    let events = stmt
        .query_map(params![tenant.as_str(), after], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(db)?
        .map(|row| {
            let (id, kind, route, data) = row.map_err(db)?;
            Ok(crate::event::Event {
                tenant: tenant.clone(),
                id,
                kind: EventKind::parse(&kind)
                    .ok_or_else(|| StoreError::Unavailable(format!("unknown event kind {kind}")))?,
                route: serde_json::from_str(&route).map_err(|e| StoreError::Unavailable(e.to_string()))?,
                data,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Replay::Events(events))
}

/// Replaces the phone numbers an owner (a location or a folder) lists, keeping their order.
fn replace_numbers(
    c: &Connection,
    tenant: &TenantId,
    table: &str,
    owner_column: &str,
    owner: &str,
    numbers: &[PhoneNumber],
) -> StoreResult<()> {
    c.exec_cached(
        &format!("DELETE FROM {table} WHERE tenant = ?1 AND {owner_column} = ?2"),
        params![tenant.as_str(), owner],
    )
    .map_err(db)?;
    let insert = format!("INSERT INTO {table} (tenant, number, {owner_column}, position) VALUES (?1, ?2, ?3, ?4)");
    for (i, n) in numbers.iter().enumerate() {
        c.exec_cached(&insert, params![tenant.as_str(), n.as_str(), owner, i as i64])
            .map_err(db)?;
    }
    Ok(())
}

fn has_unread_threads(c: &Connection, tenant: &TenantId, folder: &FolderId) -> StoreResult<bool> {
    let sql = "SELECT 1 FROM threads WHERE tenant = ?1 AND folder_id = ?2 AND unread_count > 0 LIMIT 1";
    let found = c
        .row_cached(sql, params![tenant.as_str(), folder.as_str()], |_| Ok(()))
        .optional()
        .map_err(db)?;
    Ok(found.is_some())
}

/// The resources of every folder that has an unread thread.
fn resources_with_unread(c: &Connection, tenant: &TenantId) -> StoreResult<Vec<Resources>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT DISTINCT f.sales_resource_id, f.service_resource_id FROM folders f WHERE f.tenant = ?1
               AND EXISTS (SELECT 1 FROM threads t WHERE t.tenant = f.tenant AND t.folder_id = f.id AND t.unread_count > 0)",
        )
        .map_err(db)?;
    stmt.query_map([tenant.as_str()], |r| {
        Ok(Resources {
            sales: r.get::<_, Option<String>>(0)?.map(UserId::trusted),
            service: r.get::<_, Option<String>>(1)?.map(UserId::trusted),
        })
    })
    .map_err(db)?
    .collect::<Result<_, _>>()
    .map_err(db)
}

fn dedup(numbers: Vec<PhoneNumber>) -> Vec<PhoneNumber> {
    let mut seen = BTreeSet::new();
    numbers.into_iter().filter(|n| seen.insert(n.clone())).collect()
}

/// The deployment's cursor key: `candidate` if none is stored yet, else the stored one.
pub(super) fn cursor_key(c: &Connection, candidate: &[u8; 32]) -> StoreResult<[u8; 32]> {
    c.exec_cached(
        "INSERT INTO deployment_keys (name, key) VALUES ('cursor', ?1) ON CONFLICT (name) DO NOTHING",
        params![&candidate[..]],
    )
    .map_err(db)?;
    let key: Vec<u8> = c
        .row_cached("SELECT key FROM deployment_keys WHERE name = 'cursor'", [], |r| {
            r.get(0)
        })
        .map_err(db)?;
    key.try_into()
        .map_err(|_| StoreError::Unavailable("the stored cursor key is not 32 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cursor_key_stored_is_the_one_every_later_call_reads() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(include_str!("schema.sql")).unwrap();
        assert_eq!(cursor_key(&c, &[1; 32]), Ok([1; 32]));
        assert_eq!(cursor_key(&c, &[2; 32]), Ok([1; 32]), "a later candidate is ignored");
    }

    /// The steps of `sql`'s query plan on the schema (no statistics), with `params`.
    fn plan_of(sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(include_str!("schema.sql")).unwrap();
        c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn the_folders_listing_a_number_are_found_through_the_number_not_by_a_walk_of_all_folders() {
        let plan = plan_of(FOLDERS_LISTING, params!["acme", "+15551234567"]);
        let searches: Vec<&String> = plan.iter().filter(|step| step.starts_with("SEARCH")).collect();
        assert_eq!(searches.len(), 2, "{plan:?}");
        assert!(
            searches[0].contains("folder_numbers_by_number (tenant=? AND number=?)"),
            "{plan:?}"
        );
        assert!(searches[1].contains("PRIMARY KEY (tenant=? AND id=?)"), "{plan:?}");
    }

    #[test]
    fn the_resources_drop_down_finds_folders_by_location_not_by_a_walk_of_all_folders() {
        let plan = plan_of(RESOURCES, params!["acme", r#"["L1","L2"]"#]);
        let folders: Vec<&String> = plan.iter().filter(|step| step.contains("folders")).collect();
        assert_eq!(folders.len(), 2, "both halves of the UNION: {plan:?}");
        for step in folders {
            assert!(
                step.contains("folders_by_location (tenant=? AND location_id=?)"),
                "{plan:?}"
            );
        }
    }
}
