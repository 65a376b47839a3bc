//! The embedded store: SQLite (bundled, WAL, `synchronous=FULL`) in `storage.path`.
//!
//! Writes go to one writer thread that owns the only writing connection. It takes every
//! write waiting in its queue, runs each under its own savepoint inside one transaction and
//! commits them together (group commit: one fsync for a burst of concurrent requests), then
//! publishes the batch's events to the bus in log order, then answers the callers. A write
//! that fails is rolled back to its savepoint alone, so nothing partial is stored. Reads run
//! on a small pool of read connections on the blocking thread pool.

mod ops;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    sync::Arc,
};

use anyhow::Context;
use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::{
    domain::model::{
        Folder, Linked, Location, Me, Message, MessagePage, Photo, Preferences, Resource, Thread, ThreadPage, User,
    },
    event::{Event, NewEvent},
};

/// Writes waiting for the writer thread; callers wait (back-pressure) beyond this.
const WRITE_QUEUE: usize = 4096;
/// Most writes committed together.
const MAX_BATCH: usize = 512;

pub struct Embedded {
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: r2d2::Pool<SqliteConnectionManager>,
}

impl Embedded {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path, publisher: Arc<dyn Publisher>, retention: u64) -> anyhow::Result<Embedded> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("switchboard.sqlite3");
        let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // temp_store: the savepoint each write runs in journals the pages it touches; in memory
        // that costs a copy, in a temporary file a write(2) per page.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; \
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(include_str!("schema.sql"))
            .context("creating the schema")?;
        let manager = SqliteConnectionManager::file(&path).with_init(|c| {
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = true;")
        });
        let readers = r2d2::Pool::builder()
            .max_size(8)
            .build(manager)
            .context("opening read connections")?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, publisher, retention))
            .context("starting the writer thread")?;
        Ok(Embedded { writer: tx, readers })
    }

    /// Runs `f` on a read connection.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Runs `f` in the writer's transaction; returns once it is committed and published.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            f: Some(f),
            out: None,
            reply,
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }
}

/// A write transaction in progress, with the events it has appended.
pub(crate) struct Tx<'c> {
    pub conn: &'c Connection,
    events: Vec<Event>,
    retention: u64,
}

impl Tx<'_> {
    /// Appends an event to the tenant's log; it is published after the commit.
    pub fn emit(&mut self, tenant: &TenantId, e: NewEvent) -> StoreResult<u64> {
        let id: u64 = self
            .conn
            .prepare_cached(
                "INSERT INTO event_heads (tenant, head) VALUES (?1, 1)
             ON CONFLICT (tenant) DO UPDATE SET head = head + 1 RETURNING head",
            )
            .and_then(|mut s| s.query_row([tenant.as_str()], |r| r.get(0)))
            .map_err(ops::db)?;
        let route = serde_json::to_string(&e.route).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.conn
            .prepare_cached("INSERT INTO events (tenant, id, kind, route, data) VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut s| s.execute(rusqlite::params![tenant.as_str(), id, e.kind.as_str(), route, e.data]))
            .map_err(ops::db)?;
        if id > self.retention {
            self.conn
                .prepare_cached("DELETE FROM events WHERE tenant = ?1 AND id <= ?2")
                .and_then(|mut s| s.execute(rusqlite::params![tenant.as_str(), id - self.retention]))
                .map_err(ops::db)?;
        }
        self.events.push(Event {
            tenant: tenant.clone(),
            id,
            kind: e.kind,
            route: e.route,
            data: e.data,
        });
        Ok(id)
    }
}

impl Tx<'_> {
    /// Appends a plan's events in order.
    pub fn emit_all(&mut self, tenant: &TenantId, events: Vec<NewEvent>) -> StoreResult<()> {
        for e in events {
            self.emit(tenant, e)?;
        }
        Ok(())
    }
}

trait Job: Send {
    /// Runs inside the batch's transaction; false when the job failed (and must be undone).
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, committed: StoreResult<()>);
}

struct Typed<F, R> {
    f: Option<F>,
    out: Option<StoreResult<R>>,
    reply: oneshot::Sender<StoreResult<R>>,
}

impl<F, R> Job for Typed<F, R>
where
    F: FnOnce(&mut Tx<'_>) -> StoreResult<R> + Send,
    R: Send,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        let Some(f) = self.f.take() else { return false };
        let out = catch_unwind(AssertUnwindSafe(|| f(tx)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("a write panicked".into())));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, committed: StoreResult<()>) {
        let answer = match (committed, self.out) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(StoreError::Unavailable("the write never ran".into())),
        };
        // The caller may have gone away (request cancelled); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// Statements kept compiled per connection (rusqlite's default is 16; the store has more).
const STATEMENT_CACHE: usize = 128;

/// Runs one transaction-control statement from the statement cache (`execute_batch` would
/// compile it on every batch).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>, publisher: Arc<dyn Publisher>, retention: u64) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE") {
            let err = ops::db(e);
            batch.into_iter().for_each(|j| j.finish(Err(err.clone())));
            continue;
        }
        let mut events = Vec::new();
        let mut broken = None;
        for job in batch.iter_mut() {
            if let Err(e) = run(&conn, "SAVEPOINT job") {
                broken = Some(ops::db(e));
                break;
            }
            let mut tx = Tx {
                conn: &conn,
                events: Vec::new(),
                retention,
            };
            let undo = if job.run(&mut tx) {
                events.append(&mut tx.events);
                run(&conn, "RELEASE job")
            } else {
                run(&conn, "ROLLBACK TO job").and_then(|()| run(&conn, "RELEASE job"))
            };
            if let Err(e) = undo {
                broken = Some(ops::db(e));
                break;
            }
        }
        let committed = match broken {
            Some(e) => Err(e),
            None => run(&conn, "COMMIT").map_err(ops::db),
        };
        match committed {
            Ok(()) => {
                if !events.is_empty() {
                    publisher.publish(events);
                }
                batch.into_iter().for_each(|j| j.finish(Ok(())));
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the batch is rolled back");
                let _ = run(&conn, "ROLLBACK");
                batch.into_iter().for_each(|j| j.finish(Err(e.clone())));
            }
        }
    }
}

#[async_trait]
impl EventLog for Embedded {
    async fn head(&self, tenant: &TenantId) -> StoreResult<u64> {
        let tenant = tenant.clone();
        self.read(move |c| ops::head(c, &tenant)).await
    }

    async fn heads(&self, tenants: &[TenantId]) -> StoreResult<Vec<u64>> {
        let tenants = tenants.to_vec();
        self.read(move |c| tenants.iter().map(|t| ops::head(c, t)).collect())
            .await
    }

    async fn events_after(&self, tenant: &TenantId, after: u64, limit: usize) -> StoreResult<Replay> {
        let tenant = tenant.clone();
        self.read(move |c| ops::events_after(c, &tenant, after, limit)).await
    }
}

#[async_trait]
impl Store for Embedded {
    async fn upsert_location(&self, tenant: &TenantId, id: &LocationId, input: LocationInput) -> StoreResult<Location> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |tx| ops::upsert_location(tx, &tenant, &id, input))
            .await
    }

    async fn upsert_user(&self, tenant: &TenantId, id: &UserId, name: String) -> StoreResult<User> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |tx| ops::upsert_user(tx, &tenant, &id, name)).await
    }

    async fn upsert_folder(&self, tenant: &TenantId, id: &FolderId, input: FolderInput) -> StoreResult<Folder> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |tx| ops::upsert_folder(tx, &tenant, &id, input)).await
    }

    async fn preferences(&self, tenant: &TenantId) -> StoreResult<Preferences> {
        let tenant = tenant.clone();
        self.read(move |c| ops::preferences(c, &tenant)).await
    }

    async fn set_preferences(&self, tenant: &TenantId, patch: PreferencesPatch) -> StoreResult<Preferences> {
        let tenant = tenant.clone();
        self.write(move |tx| ops::set_preferences(tx, &tenant, patch)).await
    }

    async fn ingest(&self, tenant: &TenantId, input: InboundInput) -> StoreResult<Ingested> {
        let tenant = tenant.clone();
        self.write(move |tx| ops::ingest(tx, &tenant, input)).await
    }

    async fn me(&self, scope: &Scope) -> StoreResult<Me> {
        let scope = scope.clone();
        self.read(move |c| ops::me(c, &scope)).await
    }

    async fn user_name(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>> {
        let (tenant, user) = (tenant.clone(), user.clone());
        self.read(move |c| ops::user_name(c, &tenant, &user)).await
    }

    async fn set_subscribe_all(&self, scope: &Scope, on: bool) -> StoreResult<Me> {
        let scope = scope.clone();
        self.write(move |tx| ops::set_subscribe_all(tx, &scope, on)).await
    }

    async fn resources(&self, scope: &Scope) -> StoreResult<Vec<Resource>> {
        let scope = scope.clone();
        self.read(move |c| ops::resources(c, &scope)).await
    }

    async fn threads(&self, scope: &Scope, query: ThreadQuery) -> StoreResult<ThreadPage> {
        let scope = scope.clone();
        self.read(move |c| ops::threads(c, &scope, &query)).await
    }

    async fn thread(&self, tenant: &TenantId, id: &ThreadId) -> StoreResult<Thread> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| ops::load_thread(c, &tenant, &id)).await
    }

    async fn thread_messages(&self, scope: &Scope, id: &ThreadId, paging: Paging) -> StoreResult<MessagePage> {
        let (scope, id) = (scope.clone(), id.clone());
        self.read(move |c| ops::thread_messages(c, &scope, &id, &paging)).await
    }

    async fn mark_read(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread> {
        let (tenant, id, by) = (tenant.clone(), id.clone(), by.clone());
        self.write(move |tx| ops::change_read_state(tx, &tenant, &id, &by, crate::rules::ReadChange::MarkRead))
            .await
    }

    async fn mark_unread(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread> {
        let (tenant, id, by) = (tenant.clone(), id.clone(), by.clone());
        self.write(move |tx| ops::change_read_state(tx, &tenant, &id, &by, crate::rules::ReadChange::MarkUnread))
            .await
    }

    async fn reply(
        &self,
        tenant: &TenantId,
        id: &ThreadId,
        by: &UserId,
        body: String,
        after: Option<&MessageId>,
    ) -> StoreResult<Message> {
        let (tenant, id, by, after) = (tenant.clone(), id.clone(), by.clone(), after.cloned());
        self.write(move |tx| ops::reply(tx, &tenant, &id, &by, body, after.as_ref()))
            .await
    }

    async fn assign(&self, tenant: &TenantId, id: &ThreadId, folder: &FolderId, by: &UserId) -> StoreResult<Thread> {
        let (tenant, id, folder, by) = (tenant.clone(), id.clone(), folder.clone(), by.clone());
        self.write(move |tx| ops::assign(tx, &tenant, &id, &folder, &by)).await
    }

    async fn search_folders(
        &self,
        scope: &Scope,
        phone_digits: Option<String>,
        text: Option<String>,
    ) -> StoreResult<Vec<Folder>> {
        let scope = scope.clone();
        self.read(move |c| ops::search_folders(c, &scope, phone_digits.as_deref(), text.as_deref()))
            .await
    }

    async fn folder(&self, tenant: &TenantId, id: &FolderId) -> StoreResult<Folder> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| ops::load_folder(c, &tenant, &id)).await
    }

    async fn folder_messages(&self, scope: &Scope, id: &FolderId, paging: Paging) -> StoreResult<MessagePage> {
        let (scope, id) = (scope.clone(), id.clone());
        self.read(move |c| ops::folder_messages(c, &scope, &id, &paging)).await
    }

    async fn message(&self, tenant: &TenantId, id: &MessageId) -> StoreResult<Message> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| ops::load_message(c, &tenant, &id)).await
    }

    async fn link_images(&self, tenant: &TenantId, message: &MessageId, by: &UserId) -> StoreResult<Linked> {
        let (tenant, message, by) = (tenant.clone(), message.clone(), by.clone());
        self.write(move |tx| ops::link_images(tx, &tenant, &message, &by)).await
    }

    async fn folder_photos(&self, scope: &Scope, id: &FolderId) -> StoreResult<Vec<Photo>> {
        let (scope, id) = (scope.clone(), id.clone());
        self.read(move |c| ops::folder_photos(c, &scope, &id)).await
    }

    async fn session_start(&self, scope: &Scope) -> StoreResult<SessionStart> {
        let scope = scope.clone();
        self.read(move |c| ops::session_start(c, &scope)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        if self.writer.is_closed() {
            return Err(StoreError::Unavailable("the writer stopped".into()));
        }
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(ops::db))
            .await
    }

    async fn cursor_key(&self) -> StoreResult<[u8; 32]> {
        let candidate = new_key()?;
        // On the writer: insert-if-absent and the read back are one transaction.
        self.write(move |tx| ops::cursor_key(tx.conn, &candidate)).await
    }
}
