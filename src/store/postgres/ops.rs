//! The mutating calls, one attempt each (the runner in `mod.rs` commits, or rolls back and
//! runs them again after a collision). Each is the embedded store's three steps: read the
//! facts, call its plan in `crate::plan`, apply what it says (rows here, events staged on
//! the `Tx` and appended by the runner). Nothing here decides who hears of a change.
//!
//! # Locks: why concurrent writes of a tenant come out as if one after the other
//! Writes run in READ COMMITTED, each statement seeing what committed before it started, so a
//! fact another write is changing must be locked before it is read:
//! - the tenant's `preferences` row: `FOR SHARE` by every write whose plan routes by the
//!   preferences, `FOR UPDATE` by `set_preferences` (whose plan reads which folders have
//!   unread threads). `upsert_location` creates the row, so it exists before any thread can.
//! - a `threads` row: `FOR UPDATE` by the write that changes it (its unread count, last
//!   message, folder), `FOR SHARE` by `link_images`; two writes of one thread take turns.
//! - a `folders` row: `FOR SHARE` by every write that routes by the folder's resources (the
//!   thread's folder, an assignment's target, the folders an inbound message may be
//!   auto-assigned to), `FOR UPDATE` by `upsert_folder` before it reads whether the folder
//!   has unread threads. So a resource change and an unread change of one of its threads
//!   never both miss each other, and the `unread.count`s they send add up.
//! - creations race on unique keys instead (a thread per customer and location, a message per
//!   `external_id`, an SMS number per location, a photo per attachment and folder): the loser
//!   fails, rolls back, and runs again from its first read, where it finds the winner's row.
//!
//! The order is always preferences → thread → folders → (at COMMIT) the log's head. A
//! thread's last message is read with the statement that locks the thread, and read again on
//! its own in the rare case that the lock waited for a write that moved it on
//! (`locked_thread`).
//!
//! # Round trips
//! An op's statements that need no earlier one's answer are sent together (ingest's reads:
//! one round trip), and the rows a plan writes go with the COMMIT (`Tx::stage_message`; one
//! statement per table, `staged`): an inbound message is two round trips, BEGIN to COMMIT.
//! When several inbound messages share a transaction (`batch`), the reads of those of
//! different customers go out together, one statement per read for all of them (`WAVE_FIRST`),
//! behind the rows the ones before them staged (`Tx::take_writes`): a batch of different
//! customers is two round trips too.

use std::collections::BTreeSet;

use tokio_postgres::{Row, Statement, types::ToSql};

use super::{
    Fail, Result, Tx,
    reads::{self, ThreadRow},
    unavailable,
};
use crate::{
    domain::{
        AttachmentId, FolderId, LocationId, MessageId, PhoneNumber, TenantId, ThreadId, UserId,
        model::{Folder, Ingested, Linked, Location, Message, Preferences, Thread, Timestamp, User},
    },
    rules::plan,
    rules::{ReadChange, Resources},
    store::*,
};

// ---------------------------------------------------------------------------------------
// Directory

pub(super) async fn upsert_location(
    tx: &mut Tx,
    tenant: &TenantId,
    id: &LocationId,
    input: LocationInput,
) -> Result<Location> {
    let numbers = dedup(input.sms_numbers);
    // The preferences row every later write of the tenant locks (see the module's doc).
    tx.execute(
        "INSERT INTO preferences (tenant, notify_sales, notify_service) VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING",
        &[
            &tenant.as_str(),
            &Preferences::default().notify_sales_resource,
            &Preferences::default().notify_service_resource,
        ],
    )
    .await?;
    // Takes the location's row lock: upserts of one location take turns.
    tx.execute(
        "INSERT INTO locations (tenant, id, name) VALUES ($1, $2, $3) ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name",
        &[&tenant.as_str(), &id.as_str(), &input.name],
    )
    .await?;
    let numbers_text: Vec<&str> = numbers.iter().map(|n| n.as_str()).collect();
    let held = tx
        .query(
            "SELECT number, location_id FROM location_numbers WHERE tenant = $1 AND number = ANY($2::text[]) AND location_id <> $3 ORDER BY number LIMIT 1",
            &[&tenant.as_str(), &numbers_text, &id.as_str()],
        )
        .await?;
    if let Some(r) = held.first() {
        let (n, other): (&str, &str) = (r.get(0), r.get(1));
        return Err(StoreError::Conflict(format!("sms number {n} belongs to location {other}")).into());
    }
    replace_numbers(
        tx,
        tenant,
        "location_numbers",
        "location_id",
        id.as_str(),
        &numbers_text,
    )
    .await?;
    Ok(Location {
        id: id.clone(),
        name: input.name,
        sms_numbers: numbers,
    })
}

pub(super) async fn upsert_user(tx: &mut Tx, tenant: &TenantId, id: &UserId, name: String) -> Result<User> {
    tx.execute(
        "INSERT INTO users (tenant, id, name) VALUES ($1, $2, $3) ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name",
        &[&tenant.as_str(), &id.as_str(), &name],
    )
    .await?;
    Ok(User { id: id.clone(), name })
}

pub(super) async fn upsert_folder(tx: &mut Tx, tenant: &TenantId, id: &FolderId, input: FolderInput) -> Result<Folder> {
    let known = tx
        .query_opt(
            "SELECT 1 FROM locations WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &input.location_id.as_str()],
        )
        .await?;
    if known.is_none() {
        return Err(StoreError::invalid("location_id", format!("unknown location {}", input.location_id)).into());
    }
    let prefs = preferences_shared(tx, tenant).await?;
    // Locked before `has_unread_threads` is read: a thread write that holds the folder
    // FOR SHARE commits first, and one that comes later reads the new resources.
    let before = tx
        .query_opt(
            "SELECT sales_resource_id, service_resource_id FROM folders WHERE tenant = $1 AND id = $2 FOR UPDATE",
            &[&tenant.as_str(), &id.as_str()],
        )
        .await?
        .map(|r| reads::resources_at(&r, 0));
    let numbers = dedup(input.phone_numbers);
    tx.execute(
        "INSERT INTO folders (tenant, id, name, location_id, sales_resource_id, service_resource_id) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name, location_id = excluded.location_id,
           sales_resource_id = excluded.sales_resource_id, service_resource_id = excluded.service_resource_id",
        &[
            &tenant.as_str(),
            &id.as_str(),
            &input.name,
            &input.location_id.as_str(),
            &input.sales_resource_id.as_ref().map(|u| u.as_str()),
            &input.service_resource_id.as_ref().map(|u| u.as_str()),
        ],
    )
    .await?;
    let numbers_text: Vec<&str> = numbers.iter().map(|n| n.as_str()).collect();
    replace_numbers(tx, tenant, "folder_numbers", "folder_id", id.as_str(), &numbers_text).await?;
    let after = Resources {
        sales: input.sales_resource_id.clone(),
        service: input.service_resource_id.clone(),
    };
    let has_unread = tx
        .query_opt(
            "SELECT 1 FROM threads WHERE tenant = $1 AND folder_id = $2 AND unread_count > 0 LIMIT 1",
            &[&tenant.as_str(), &id.as_str()],
        )
        .await?
        .is_some();
    tx.emit_all(plan::upsert_folder(before.as_ref(), &after, prefs, has_unread));
    Ok(Folder {
        id: id.clone(),
        name: input.name,
        location_id: input.location_id,
        phone_numbers: numbers,
        sales_resource_id: input.sales_resource_id,
        service_resource_id: input.service_resource_id,
    })
}

/// The tenant's preferences, locked against a change until this write commits.
async fn preferences_shared(tx: &Tx, tenant: &TenantId) -> Result<Preferences> {
    let row = tx
        .query_opt(
            "SELECT notify_sales, notify_service FROM preferences WHERE tenant = $1 FOR SHARE",
            &[&tenant.as_str()],
        )
        .await?;
    Ok(row.map(|r| reads::preferences_at(&r, 0)).unwrap_or_default())
}

pub(super) async fn set_preferences(tx: &mut Tx, tenant: &TenantId, patch: PreferencesPatch) -> Result<Preferences> {
    // A row to lock even for a tenant that never had one (two first changes take turns).
    tx.execute(
        "INSERT INTO preferences (tenant, notify_sales, notify_service) VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING",
        &[
            &tenant.as_str(),
            &Preferences::default().notify_sales_resource,
            &Preferences::default().notify_service_resource,
        ],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT notify_sales, notify_service FROM preferences WHERE tenant = $1 FOR UPDATE",
            &[&tenant.as_str()],
        )
        .await?;
    let before = reads::preferences_at(&row, 0);
    let after = plan::preferences(before, patch);
    tx.execute(
        "UPDATE preferences SET notify_sales = $2, notify_service = $3 WHERE tenant = $1",
        &[
            &tenant.as_str(),
            &after.notify_sales_resource,
            &after.notify_service_resource,
        ],
    )
    .await?;
    if plan::preferences_changed(before, after) {
        // Every write that could make a thread unread holds the row FOR SHARE: they have
        // all committed, and none runs until this one does.
        let rows = tx
            .query(
                "SELECT DISTINCT f.sales_resource_id, f.service_resource_id FROM folders f WHERE f.tenant = $1
                   AND EXISTS (SELECT 1 FROM threads t WHERE t.tenant = f.tenant AND t.folder_id = f.id AND t.unread_count > 0)",
                &[&tenant.as_str()],
            )
            .await?;
        let folders: Vec<Resources> = rows.iter().map(|r| reads::resources_at(r, 0)).collect();
        tx.emit_all(plan::preference_counts(before, after, &folders));
    }
    Ok(after)
}

pub(super) async fn set_subscribe_all(tx: &mut Tx, scope: &Scope, on: bool) -> Result<()> {
    let (tenant, user) = (scope.tenant.as_str(), scope.user.as_str());
    // A row to lock even for a user who never set it (two first changes take turns).
    tx.execute(
        "INSERT INTO subscriptions (tenant, user_id, subscribe_all) VALUES ($1, $2, false) ON CONFLICT (tenant, user_id) DO NOTHING",
        &[&tenant, &user],
    )
    .await?;
    let before: bool = tx
        .query_one(
            "SELECT subscribe_all FROM subscriptions WHERE tenant = $1 AND user_id = $2 FOR UPDATE",
            &[&tenant, &user],
        )
        .await?
        .get(0);
    let events = plan::subscribe_all(&scope.user, before, on);
    if !events.is_empty() {
        tx.execute(
            "UPDATE subscriptions SET subscribe_all = $3 WHERE tenant = $1 AND user_id = $2",
            &[&tenant, &user, &on],
        )
        .await?;
        tx.emit_all(events);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Threads and messages

/// The join of a thread (`t`) with its last message (`m`), for a statement that locks the
/// thread. The message is looked up by its primary key from inside a LATERAL sub-select that
/// the planner cannot merge into a join (`OFFSET 0`): a plain LEFT JOIN, planned while the
/// tables were still empty (a new database), got a generic plan that scanned all of the
/// tenant's messages for it, and kept it.
macro_rules! last_message {
    () => {
        concat!(
            "LEFT JOIN LATERAL (SELECT ",
            reads::message_columns!(),
            " FROM messages m WHERE m.tenant = t.tenant AND m.id = t.last_message_id OFFSET 0) m ON true"
        )
    };
}

/// The thread with this id, its row locked (`FOR UPDATE`, or `FOR SHARE` when `share`).
async fn lock_thread(tx: &Tx, tenant: &TenantId, id: &ThreadId, share: bool) -> Result<Thread> {
    macro_rules! by_id {
        ($lock:literal) => {
            concat!(
                "SELECT ",
                reads::thread_and_last!(),
                " FROM threads t ",
                last_message!(),
                " WHERE t.tenant = $1 AND t.id = $2 FOR ",
                $lock,
                " OF t"
            )
        };
    }
    let sql = if share { by_id!("SHARE") } else { by_id!("UPDATE") };
    let row = tx
        .query_opt(sql, &[&tenant.as_str(), &id.as_str()])
        .await?
        .ok_or(StoreError::NotFound("thread"))?;
    locked_thread(tx, tenant, &row).await
}

/// A thread from a row of `reads::thread_and_last!()` that locked the thread and joined its
/// last message (`last_message!()`). When the lock had to wait for a write that moved the thread
/// on, PostgreSQL returns the thread as that write left it but with the message row it found
/// before the wait, which no longer matches: the last message is then read in a statement of
/// its own, which sees that write. Otherwise no second read.
async fn locked_thread(tx: &Tx, tenant: &TenantId, row: &tokio_postgres::Row) -> Result<Thread> {
    let thread = ThreadRow::from_row(row);
    match row.get::<_, Option<&str>>(7) {
        Some(joined) if joined == thread.last_message_id.as_str() => {
            Ok(thread.into_thread(reads::message_at(row, 7)?.0))
        }
        _ => {
            let last = reads::message(tx, tenant, &thread.last_message_id).await?;
            Ok(thread.into_thread(last))
        }
    }
}

/// The resources of a folder, locked against a change until this write commits; `None` when
/// there is no such folder.
async fn folder_resources_shared(tx: &Tx, tenant: &TenantId, folder: Option<&FolderId>) -> Result<Option<Resources>> {
    let Some(folder) = folder else { return Ok(None) };
    let row = tx
        .query_opt(
            "SELECT sales_resource_id, service_resource_id FROM folders WHERE tenant = $1 AND id = $2 FOR SHARE",
            &[&tenant.as_str(), &folder.as_str()],
        )
        .await?;
    Ok(row.map(|r| reads::resources_at(&r, 0)))
}

/// The resources of a thread's folder (none when it has no folder), locked.
async fn resources_of(tx: &Tx, tenant: &TenantId, thread: &Thread) -> Result<Resources> {
    Ok(folder_resources_shared(tx, tenant, thread.folder_id.as_ref())
        .await?
        .unwrap_or_default())
}

/// The location of the `to` number (`$to`), as a sub-select: ingest's statements find the
/// thread by its key through it, so that they need no answer of an earlier one.
macro_rules! location_of {
    ($to:literal) => {
        concat!(
            "(SELECT location_id FROM location_numbers WHERE tenant = $1 AND number = ",
            $to,
            ")"
        )
    };
}

/// The facts of an inbound message, in one statement: a message with this external_id
/// already, the location of `to`, and the preferences (locked FOR SHARE: the first lock
/// taken, as everywhere).
const INGEST_FIRST: &str = concat!(
    "SELECT (SELECT id FROM messages WHERE tenant = $1 AND external_id = $2), ",
    location_of!("$3"),
    ", (SELECT ARRAY[notify_sales, notify_service] FROM preferences WHERE tenant = $1 FOR SHARE)"
);

/// The thread of the customer (`$3`) at the location of `to` (`$2`), locked, with its last
/// message (`locked_thread`).
const INGEST_THREAD: &str = concat!(
    "SELECT ",
    reads::thread_and_last!(),
    " FROM threads t ",
    last_message!(),
    "
     WHERE t.tenant = $1 AND t.location_id = ",
    location_of!("$2"),
    " AND t.customer_number = $3 FOR UPDATE OF t"
);

/// An inbound message's folders, locked FOR SHARE: the thread's folder (`listed` false, with
/// the thread's id; the thread is found by the customer, `$2`, and the location of `to`,
/// `$3`), and every folder that lists the customer's number (`listed` true: auto-assignment's
/// facts).
///
/// It starts from those few folder ids and fetches each folder by its primary key in a
/// LATERAL sub-select that the planner cannot merge into a join (`OFFSET 0`), so the plan is
/// the same with or without statistics. Two earlier shapes scanned all of the tenant's
/// folders whenever the planner misjudged them: `f.id = ANY(ARRAY(…) || $3)` never became an
/// index condition (1,000 folders: 0.5 ms a message, half of PostgreSQL's work in W4), and a
/// correlated EXISTS got a generic plan that probed the trigram index (1 ms a message).
const INGEST_FOLDERS: &str = concat!(
    "SELECT f.id, f.location_id, f.sales_resource_id, f.service_resource_id, c.listed, c.thread
     FROM (SELECT n.folder_id AS id, true AS listed, NULL::text AS thread FROM folder_numbers n
           WHERE n.tenant = $1 AND n.number = $2
           UNION ALL
           SELECT t.folder_id, false, t.id FROM threads t
           WHERE t.tenant = $1 AND t.location_id = ",
    location_of!("$3"),
    " AND t.customer_number = $2 AND t.folder_id IS NOT NULL
           ORDER BY 1) c,
     LATERAL (SELECT f.id, f.location_id, f.sales_resource_id, f.service_resource_id FROM folders f
              WHERE f.tenant = $1 AND f.id = c.id OFFSET 0) f
     FOR SHARE OF f"
);

/// The three reads of a wave of several inbound messages (`batch`), one statement each for
/// all of them: the same facts as `INGEST_FIRST`, `INGEST_THREAD` and `INGEST_FOLDERS`, in
/// the same columns, found through arrays with an element per message (`$2`, `$3`: the
/// columns of `unnest` named in each), each row ending with its message's place in the wave
/// (from 1). Each statement's fixed cost is paid once per wave instead of once per message:
/// PostgreSQL spends on the reads of a wave of eight about 0.4 of what it spends reading them
/// one by one, of two about 0.9; for one message alone these cost about 1.2 times its own three,
/// which it keeps.
///
/// The facts of each message, and the preferences once (an InitPlan), locked FOR SHARE.
const WAVE_FIRST: &str = concat!(
    "SELECT (SELECT id FROM messages WHERE tenant = $1 AND external_id = u.external_id), ",
    location_of!("u.to_number"),
    ", (SELECT ARRAY[notify_sales, notify_service] FROM preferences WHERE tenant = $1 FOR SHARE), u.place
     FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(external_id, to_number, place)
     ORDER BY u.place"
);

/// Each message's thread, locked in the wave's order (that of the threads' keys, `batch`):
/// the lock is taken inside the LATERAL sub-select, row by row as the array is walked.
const WAVE_THREAD: &str = concat!(
    "SELECT ",
    reads::thread_and_last!(),
    ", u.place FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(to_number, customer, place)
     JOIN LATERAL (SELECT * FROM threads t WHERE t.tenant = $1 AND t.location_id = ",
    location_of!("u.to_number"),
    " AND t.customer_number = u.customer OFFSET 0) t ON true ",
    last_message!(),
    " ORDER BY u.place FOR UPDATE OF t"
);

/// Each message's folders (as `INGEST_FOLDERS`, per message by a LATERAL sub-select), all
/// locked FOR SHARE in the order of their ids.
const WAVE_FOLDERS: &str = concat!(
    "SELECT f.id, f.location_id, f.sales_resource_id, f.service_resource_id, c.listed, c.thread, c.place
     FROM (SELECT u.place, c.id, c.listed, c.thread
           FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(customer, to_number, place),
           LATERAL (SELECT n.folder_id AS id, true AS listed, NULL::text AS thread FROM folder_numbers n
                    WHERE n.tenant = $1 AND n.number = u.customer
                    UNION ALL
                    SELECT t.folder_id, false, t.id FROM threads t
                    WHERE t.tenant = $1 AND t.location_id = ",
    location_of!("u.to_number"),
    " AND t.customer_number = u.customer AND t.folder_id IS NOT NULL
                    OFFSET 0) c
           ORDER BY c.id, u.place) c,
     LATERAL (SELECT f.id, f.location_id, f.sales_resource_id, f.service_resource_id FROM folders f
              WHERE f.tenant = $1 AND f.id = c.id OFFSET 0) f
     FOR SHARE OF f"
);

/// An inbound message's three reads (`INGEST_FIRST`, `INGEST_THREAD`, `INGEST_FOLDERS`),
/// prepared: the same statements for every message.
pub(super) struct IngestStatements([Statement; 3]);

/// What those reads found for one message.
pub(super) struct IngestFacts {
    first: Row,
    thread: Option<Row>,
    folders: Vec<Row>,
}

/// Prepares (from the cache) the reads of an inbound message, before anything is sent, so
/// that every read goes out in the order it is sent in.
async fn prepare_ingest(tx: &Tx, tenant: &TenantId, input: &InboundInput) -> Result<IngestStatements> {
    let (t, to, from) = (tenant.as_str(), input.to.as_str(), input.from.as_str());
    Ok(IngestStatements([
        tx.prepare(INGEST_FIRST, &[&t, &input.external_id, &to]).await?,
        tx.prepare(INGEST_THREAD, &[&t, &to, &from]).await?,
        tx.prepare(INGEST_FOLDERS, &[&t, &from, &to]).await?,
    ]))
}

/// Sends an inbound message's three reads, in lock order (preferences, thread, folders),
/// each request going out as this future is first polled (so a `biased` join sends them in
/// order). Each finds what it needs by the message's numbers, not by an earlier one's answer,
/// and runs after the one before it, in a snapshot of its own (READ COMMITTED): so the folders
/// are read with the thread already locked.
async fn ingest_reads(
    tx: &Tx,
    statements: &IngestStatements,
    tenant: &TenantId,
    input: &InboundInput,
) -> Result<IngestFacts> {
    let (t, to, from) = (tenant.as_str(), input.to.as_str(), input.from.as_str());
    let first_params: [&(dyn ToSql + Sync); 3] = [&t, &input.external_id, &to];
    let key: [&(dyn ToSql + Sync); 3] = [&t, &to, &from];
    let folder_params: [&(dyn ToSql + Sync); 3] = [&t, &from, &to];
    let [first, thread, folders] = &statements.0;
    let (first, thread, folders) = tokio::join!(
        biased;
        tx.send(tx.client().query_one(first, &first_params)),
        tx.send(tx.client().query_opt(thread, &key)),
        tx.send(tx.client().query(folders, &folder_params)),
    );
    // The first failure is the cause; the ones after it only say the transaction aborted.
    Ok(IngestFacts {
        first: first?,
        thread: thread?,
        folders: folders?,
    })
}

/// The reads of inbound messages that cannot see each other's rows (one, or a `batch`
/// wave), in one round trip: behind the rows staged before them (`Tx::take_writes`), which
/// they then see. What each found, in order. A wave of several is read with one statement
/// per read (`WAVE_FIRST`), a message alone with its own three (`INGEST_FIRST`).
pub(super) async fn ingest_reads_all(
    tx: &mut Tx,
    tenant: &TenantId,
    inputs: &[InboundInput],
) -> Result<Vec<IngestFacts>> {
    let writes = tx.take_writes(tenant).await?;
    let (written, facts) = match inputs {
        [] => return Ok(Vec::new()),
        [input] => {
            let statements = prepare_ingest(tx, tenant, input).await?;
            tokio::join!(biased; tx.send_writes(&writes), async {
                Ok(vec![ingest_reads(tx, &statements, tenant, input).await?])
            })
        }
        wave => tokio::join!(biased; tx.send_writes(&writes), wave_reads(tx, tenant, wave)),
    };
    // The first failure is the cause; the ones after it only say the transaction aborted.
    written?;
    facts
}

/// The reads of a wave of several messages: three statements (`WAVE_FIRST`, `WAVE_THREAD`,
/// `WAVE_FOLDERS`), sent in that order as this future is first polled, their rows then
/// dealt out to the messages by the place each row ends with.
async fn wave_reads(tx: &Tx, tenant: &TenantId, wave: &[InboundInput]) -> Result<Vec<IngestFacts>> {
    let t = tenant.as_str();
    let external_ids: Vec<&str> = wave.iter().map(|i| i.external_id.as_str()).collect();
    let tos: Vec<&str> = wave.iter().map(|i| i.to.as_str()).collect();
    let froms: Vec<&str> = wave.iter().map(|i| i.from.as_str()).collect();
    let first_params: [&(dyn ToSql + Sync); 3] = [&t, &external_ids, &tos];
    let thread_params: [&(dyn ToSql + Sync); 3] = [&t, &tos, &froms];
    let folder_params: [&(dyn ToSql + Sync); 3] = [&t, &froms, &tos];
    // Prepared (from the cache) before anything is sent, so that all go out in order.
    let first = tx.prepare(WAVE_FIRST, &first_params).await?;
    let thread = tx.prepare(WAVE_THREAD, &thread_params).await?;
    let folders = tx.prepare(WAVE_FOLDERS, &folder_params).await?;
    let (first, thread, folders) = tokio::join!(
        biased;
        tx.send(tx.client().query(&first, &first_params)),
        tx.send(tx.client().query(&thread, &thread_params)),
        tx.send(tx.client().query(&folders, &folder_params)),
    );
    let (first, thread, folders) = (first?, thread?, folders?);
    let mut facts: Vec<(Option<Row>, Option<Row>, Vec<Row>)> = wave.iter().map(|_| (None, None, Vec::new())).collect();
    for row in first {
        let i = place(&row, wave.len())?;
        facts[i].0 = Some(row);
    }
    for row in thread {
        let i = place(&row, wave.len())?;
        facts[i].1 = Some(row);
    }
    for row in folders {
        let i = place(&row, wave.len())?;
        facts[i].2.push(row);
    }
    facts
        .into_iter()
        .map(|(first, thread, folders)| {
            let first = first.ok_or_else(|| Fail::Store(unavailable("a message of the wave was not read")))?;
            Ok(IngestFacts { first, thread, folders })
        })
        .collect()
}

/// Which message of a wave of `len` a row of a `WAVE_*` read is of: its last column, from 1.
fn place(row: &Row, len: usize) -> Result<usize> {
    let place: i64 = row.get(row.len() - 1);
    usize::try_from(place - 1).ok().filter(|&i| i < len).ok_or_else(|| {
        Fail::Store(unavailable(format!(
            "a read of the wave named message {place} of {len}"
        )))
    })
}

/// One inbound message: its reads (`ingest_reads_all`), then `ingest_with`.
pub(super) async fn ingest(tx: &mut Tx, tenant: &TenantId, input: InboundInput) -> Result<Ingested> {
    let facts = ingest_reads_all(tx, tenant, std::slice::from_ref(&input)).await?;
    // unwrap: one message, one answer.
    let facts = facts.into_iter().next().unwrap();
    ingest_with(tx, tenant, input, facts).await
}

/// The rest of an inbound message, from what its reads found: the plan, and its rows and
/// events staged.
pub(super) async fn ingest_with(
    tx: &mut Tx,
    tenant: &TenantId,
    input: InboundInput,
    facts: IngestFacts,
) -> Result<Ingested> {
    let IngestFacts { first, thread, folders } = facts;
    if let Some(id) = first.get::<_, Option<String>>(0) {
        // The same message again: answered as it is, nothing changes.
        let message = reads::message(tx, tenant, &MessageId::trusted(id)).await?;
        let thread = reads::thread(tx, tenant, &message.thread_id).await?;
        return Ok(Ingested {
            message,
            thread,
            created: false,
        });
    }
    let location = first
        .get::<_, Option<String>>(1)
        .map(LocationId::trusted)
        .ok_or_else(|| StoreError::invalid("to", format!("{} is not an SMS number of any location", input.to)))?;
    let prefs = first
        .get::<_, Option<Vec<bool>>>(2)
        .and_then(|p| match p[..] {
            [sales, service] => Some(Preferences {
                notify_sales_resource: sales,
                notify_service_resource: service,
            }),
            _ => None,
        })
        .unwrap_or_default();
    let thread = match thread {
        Some(row) => Some(locked_thread(tx, tenant, &row).await?),
        None => None,
    };
    // The thread was found through the location of `to` as of its own statement: if the
    // number moved to another location after the first statement read it, the facts
    // disagree (no folder of one location may be given to a thread of the other).
    if thread.as_ref().is_some_and(|t| t.location_id != location) {
        return Err(Fail::Raced("the number moved to another location"));
    }
    let mut current = None;
    let mut listing = Vec::new();
    for r in &folders {
        if r.get::<_, bool>(4) {
            listing.push(plan::FolderFacts {
                id: FolderId::trusted(r.get::<_, String>(0)),
                location_id: LocationId::trusted(r.get::<_, String>(1)),
                resources: reads::resources_at(r, 2),
            });
        } else if thread.as_ref().map(|t| t.id.as_str()) == r.get::<_, Option<&str>>(5) {
            current = Some(reads::resources_at(r, 2));
        }
    }
    // Folders are never deleted: a thread with a folder whose row did not come back was not
    // the thread this statement found (the number moved after the thread was locked).
    if thread.as_ref().is_some_and(|t| t.folder_id.is_some()) && current.is_none() {
        return Err(Fail::Raced("the number moved to another location"));
    }
    let current = current.unwrap_or_default();
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
        prefs,
    };
    let planned = plan::ingest(facts, input, ids, Timestamp::now());
    // A new thread collides with a racer's (threads_by_key), a repeated external_id with the
    // racer's message (messages_by_external_id), when these are written at COMMIT: the
    // runner runs this again.
    save_message_and_thread(tx, &planned.message, &planned.thread);
    tx.emit_all(planned.events);
    Ok(Ingested {
        message: planned.message,
        thread: planned.thread,
        created: true,
    })
}

/// Stages a new message and the thread it moved (`Tx::stage_message`): both are written
/// in the COMMIT's round trip.
fn save_message_and_thread(tx: &mut Tx, m: &Message, t: &Thread) {
    tx.stage_message(m);
    tx.stage_thread(t);
}

pub(super) async fn change_read_state(
    tx: &mut Tx,
    tenant: &TenantId,
    id: &ThreadId,
    by: &UserId,
    change: ReadChange,
) -> Result<Thread> {
    let prefs = preferences_shared(tx, tenant).await?;
    let thread = lock_thread(tx, tenant, id, false).await?;
    let resources = resources_of(tx, tenant, &thread).await?;
    match plan::read_state(&thread, &resources, prefs, by, change) {
        None => Ok(thread),
        Some(changed) => Ok(apply(tx, changed)),
    }
}

/// Stores the thread a plan changed and stages its events.
fn apply(tx: &mut Tx, changed: plan::Changed) -> Thread {
    tx.stage_thread(&changed.thread);
    tx.emit_all(changed.events);
    changed.thread
}

pub(super) async fn reply(
    tx: &mut Tx,
    tenant: &TenantId,
    id: &ThreadId,
    by: &UserId,
    body: String,
    after: Option<&MessageId>,
) -> Result<Message> {
    let prefs = preferences_shared(tx, tenant).await?;
    // Locked first: a message stored after this read waits for the reply, and the reply is
    // then the older of the two (the guard saw everything before it).
    let thread = lock_thread(tx, tenant, id, false).await?;
    let resources = resources_of(tx, tenant, &thread).await?;
    let newer = match after {
        Some(after) => reads::newer_than(tx, tenant, id, after).await?,
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
    save_message_and_thread(tx, &replied.message, &replied.thread);
    tx.emit_all(replied.events);
    Ok(replied.message)
}

pub(super) async fn assign(
    tx: &mut Tx,
    tenant: &TenantId,
    id: &ThreadId,
    folder: &FolderId,
    by: &UserId,
) -> Result<Thread> {
    let prefs = preferences_shared(tx, tenant).await?;
    let thread = lock_thread(tx, tenant, id, false).await?;
    let target = tx
        .query_opt(
            "SELECT location_id, sales_resource_id, service_resource_id FROM folders WHERE tenant = $1 AND id = $2 FOR SHARE",
            &[&tenant.as_str(), &folder.as_str()],
        )
        .await?
        .map(|r| plan::FolderFacts {
            id: folder.clone(),
            location_id: LocationId::trusted(r.get::<_, String>(0)),
            resources: reads::resources_at(&r, 1),
        })
        .ok_or(StoreError::NotFound("folder"))?;
    let current = resources_of(tx, tenant, &thread).await?;
    match plan::assign(&thread, &current, &target, prefs, by)? {
        None => Ok(thread),
        Some(changed) => Ok(apply(tx, changed)),
    }
}

pub(super) async fn link_images(tx: &mut Tx, tenant: &TenantId, message: &MessageId, by: &UserId) -> Result<Linked> {
    let prefs = preferences_shared(tx, tenant).await?;
    let m = reads::message(tx, tenant, message).await?;
    // Shared: linking changes no thread, but an assignment must not move it meanwhile.
    let thread = lock_thread(tx, tenant, &m.thread_id, true).await?;
    let resources = resources_of(tx, tenant, &thread).await?;
    let already: Vec<AttachmentId> = match &thread.folder_id {
        None => Vec::new(),
        Some(folder) => reads::photos_of_message(tx, tenant, folder, &m.id)
            .await?
            .into_iter()
            .map(|p| p.attachment_id)
            .collect(),
    };
    let linking = plan::link_images(&m, &thread, &resources, prefs, &already, by, Timestamp::now())?;
    for p in &linking.new_photos {
        // A racer linking the same message collides here (the photos' key) and the runner
        // runs this again: it then finds them linked and adds nothing.
        tx.execute(
            "INSERT INTO photos (tenant, folder_id, attachment_id, message_id, url, linked_by, linked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &tenant.as_str(),
                &linking.folder_id.as_str(),
                &p.attachment_id.as_str(),
                &p.message_id.as_str(),
                &p.url,
                &p.linked_by.as_str(),
                &p.linked_at.micros(),
            ],
        )
        .await?;
    }
    let linked = linking.new_photos.len() as u32;
    tx.emit_all(linking.events);
    let photos = reads::photos_of_message(tx, tenant, &linking.folder_id, &m.id).await?;
    Ok(Linked {
        folder_id: linking.folder_id,
        linked,
        photos,
    })
}

/// Replaces the phone numbers an owner (a location or a folder) lists, keeping their order.
async fn replace_numbers(
    tx: &Tx,
    tenant: &TenantId,
    table: &str,
    owner_column: &str,
    owner: &str,
    numbers: &[&str],
) -> Result<()> {
    tx.execute(
        &format!("DELETE FROM {table} WHERE tenant = $1 AND {owner_column} = $2"),
        &[&tenant.as_str(), &owner],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO {table} (tenant, number, {owner_column}, position)
             SELECT $1, n.number, $2, n.position - 1 FROM unnest($3::text[]) WITH ORDINALITY AS n(number, position)"
        ),
        &[&tenant.as_str(), &owner, &numbers],
    )
    .await?;
    Ok(())
}

fn dedup(numbers: Vec<PhoneNumber>) -> Vec<PhoneNumber> {
    let mut seen = BTreeSet::new();
    numbers.into_iter().filter(|n| seen.insert(n.clone())).collect()
}

/// The deployment's cursor key: `candidate` if none is stored yet, else the stored one. Two
/// statements: the SELECT's snapshot is taken after the INSERT waited for any racer.
pub(super) async fn cursor_key(tx: &mut Tx, candidate: &[u8; 32]) -> Result<[u8; 32]> {
    tx.execute(
        "INSERT INTO deployment_keys (name, key) VALUES ('cursor', $1) ON CONFLICT (name) DO NOTHING",
        &[&&candidate[..]],
    )
    .await?;
    let key: Vec<u8> = tx
        .query_one("SELECT key FROM deployment_keys WHERE name = 'cursor'", &[])
        .await?
        .get(0);
    Ok(key
        .try_into()
        .map_err(|_| StoreError::Unavailable("the stored cursor key is not 32 bytes".into()))?)
}
