//! The PostgreSQL store (`storage.backend = "postgres"`): the same `Store` contract as the
//! embedded one, on a database that several nodes can share.
//!
//! # Layout
//! - this file: the pool, the runner every call goes through (its own task, a deadline, a
//!   connection that is thrown away unless it was left clean) and the transaction of a write
//!   (`Tx`, the `write!` retry loop, COMMIT, then publishing).
//! - `migrate`: creating or upgrading the schema (`migrations/postgres/`) at start, under an
//!   advisory lock so that nodes starting together apply it once.
//! - `ops`: the mutating calls. Each reads its facts with the locks that order it against
//!   every write that could change them, calls its plan in `crate::plan`, and stages the
//!   plan's rows and events; it decides nothing itself.
//! - `reads`: lists, counts, pages, search and the session snapshot; the thread lists and
//!   counts filter in SQL with `rules::AudienceFilter`.
//! - `log`: the event log (append in the write's transaction, trim, `EventLog`) and the
//!   per-tenant publisher that hands committed events to the bus in id order.
//! - `batch`: group commit of inbound messages: a tenant's ingests that queue behind its
//!   running transaction go in together, in one transaction.
//!
//! # A write
//! BEGIN (READ COMMITTED, sent with the op's first statement: `Conn::start`); the op reads
//! its facts (`FOR SHARE` / `FOR UPDATE`, always in the order preferences → thread → folders →
//! log head, so that writes never wait in a cycle) and stages the rows its plan writes
//! (`Tx::stage_message`, `Tx::stage_thread`: written one statement per table, `staged`; an
//! op that must read an answer back executes it at once); the runner sends those rows, the
//! plan's events' append and the COMMIT in one pipeline (`log::commit`; the
//! tenant's head row is the last lock taken and is held only until COMMIT); then, still in id
//! order for the tenant, to the store's `Publisher` (the bus); then the caller's answer. A unique violation (two first messages
//! racing to create a thread, one `external_id` posted twice at once, a number claimed twice),
//! a serialization failure or a deadlock rolls the whole write back and runs it again from
//! its first read, where it finds what the other write committed: the racer's thread, the
//! message to answer with (200), the holder of the number (409). A 2xx is sent only after
//! COMMIT returned.
//!
//! # Failures
//! Every database or pool error is `StoreError::Unavailable` (503). Every call has a deadline
//! (`postgres.timeout_ms`, waiting for a connection included) and runs in a task of its own,
//! so neither a hung server nor a client that goes away leaves a transaction half done: a
//! connection that was not left clean (COMMIT or ROLLBACK answered) is closed, never reused,
//! and the server rolls its transaction back.

mod log;
mod migrate;
mod ops;
mod reads;
mod staged;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio_postgres::{NoTls, Row, Statement, error::SqlState, types::ToSql};

use self::{
    log::{Appended, Outbox},
    staged::Staged,
};
use super::*;
use crate::{
    config::PostgresSettings,
    domain::model::{
        Folder, Ingested, Linked, Location, Me, Message, MessagePage, Photo, Preferences, Resource, Thread, ThreadPage,
        User,
    },
    event::NewEvent,
    metrics::Metrics,
    rules::ReadChange,
};

pub use self::migrate::MIGRATIONS_TABLE;

/// Attempts of one write before it answers 503: each retry follows a collision with a
/// concurrent write that has since committed, so a few suffice; the bound is for the
/// pathological case.
const MAX_ATTEMPTS: u32 = 8;

pub struct PgStore {
    inner: Arc<Inner>,
}

/// What every call's task shares.
struct Inner {
    pool: Pool,
    /// Where committed events go (the bus).
    sink: Arc<dyn Publisher>,
    /// Hands them over in id order per tenant.
    outbox: Outbox,
    /// Inbound messages waiting to be written together, per tenant (`batch`).
    batches: batch::Waiting,
    /// Where `batch` counts the messages of each ingestion transaction (`PgStore::report_to`).
    metrics: std::sync::OnceLock<Arc<Metrics>>,
    /// Set on a store made by `explaining`: every query is explained first (see `Conn`).
    explain: Option<Explained>,
    retention: u64,
    timeout: Duration,
    /// `postgres.ingest_linger_us` (`batch`).
    linger: Option<Duration>,
    /// The runtime the store was opened on: calls run there, whichever actix worker asked,
    /// so the pool's connections live on one runtime for the store's whole life.
    runtime: Handle,
}

/// Why a step of a call failed: a verdict for the caller, or the database's error (which the
/// runner turns into a retry or a 503).
pub(super) enum Fail {
    Store(StoreError),
    Db(tokio_postgres::Error),
    /// Statements of one round trip read disagreeing facts: a concurrent write committed
    /// between two of them (each has a snapshot of its own). Run again, as after a collision.
    Raced(&'static str),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<crate::rules::plan::Refused> for Fail {
    fn from(r: crate::rules::plan::Refused) -> Self {
        Fail::Store(r.into())
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

pub(super) type Result<T, E = Fail> = std::result::Result<T, E>;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("postgres: {e}"))
}

impl Fail {
    fn into_store(self) -> StoreError {
        match self {
            Fail::Store(e) => e,
            Fail::Raced(what) => unavailable(format!("raced with a concurrent write: {what}")),
            // The driver's own text is only "db error": the server's code and message say why.
            Fail::Db(e) => match e.as_db_error() {
                Some(db) => unavailable(format!("{} ({})", db.message(), db.code().code())),
                None => unavailable(e),
            },
        }
    }

    /// Whether running the whole write again can succeed: it collided with a concurrent one.
    fn collided(&self) -> bool {
        if let Fail::Raced(_) = self {
            return true;
        }
        let Fail::Db(e) = self else { return false };
        matches!(
            e.code(),
            Some(c) if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        )
    }
}

/// A pooled connection that goes back to the pool only when the call left it clean (no
/// transaction open, no query in flight); otherwise, dropped, it is closed and the server
/// rolls back whatever it was doing. That is what makes a call safe to abandon at any await.
pub(super) struct Conn {
    client: Option<Object>,
    clean: bool,
    explain: Option<Explained>,
    /// A transaction's BEGIN not sent yet (`start`): it goes out in front of the next
    /// statement, pipelined with it, so that opening a transaction costs no round trip.
    pending: std::sync::Mutex<Option<&'static str>>,
}

/// The plans of the queries a store made by `PgStore::explaining` ran: for each, its SQL and
/// what `EXPLAIN (ANALYZE, BUFFERS)` said of it with the same parameters (the benchmark tool,
/// `examples/pg_bench.rs`, writes them down).
#[derive(Clone, Default)]
pub struct Explained(Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl Explained {
    /// The plans recorded since the last call, oldest first.
    pub fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.clean {
            if let Some(client) = self.client.take() {
                // Detached from the pool and dropped: its connection task ends, the socket
                // closes.
                drop(Object::take(client));
            }
        }
    }
}

impl Conn {
    fn client(&self) -> &Object {
        // unwrap: `client` is only taken in `drop`.
        self.client.as_ref().unwrap()
    }

    async fn prepare(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Statement> {
        if let Some(explained) = &self.explain {
            // EXPLAIN ANALYZE runs the statement: only reads are explained (`explaining`).
            let rows = self
                .client()
                .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), params)
                .await?;
            let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            explained
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((sql.to_owned(), plan.join("\n")));
        }
        Ok(self.client().prepare_cached(sql).await?)
    }

    pub(super) async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let st = self.prepare(sql, params).await?;
        self.send(self.client().query(&st, params)).await
    }

    pub(super) async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let st = self.prepare(sql, params).await?;
        self.send(self.client().query_opt(&st, params)).await
    }

    pub(super) async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let st = self.prepare(sql, params).await?;
        self.send(self.client().query_one(&st, params)).await
    }

    pub(super) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let st = self.prepare(sql, params).await?;
        self.send(self.client().execute(&st, params)).await
    }

    /// Opens a transaction with `begin` (a BEGIN statement) at no cost of its own: it is sent
    /// with the next statement (`send`), or with the COMMIT or ROLLBACK if none comes.
    pub(super) fn start(&self, begin: &'static str) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(begin);
    }

    /// Runs a statement of the driver, behind the BEGIN that `start` left pending if there is
    /// one: both are sent before either answer is read (a request goes out when its future is
    /// first polled, and `biased` polls the BEGIN first).
    async fn send<T>(&self, statement: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T> {
        let begin = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        match begin {
            None => Ok(statement.await?),
            Some(begin) => {
                let (began, out) = tokio::join!(biased; self.client().batch_execute(begin), statement);
                began?;
                Ok(out?)
            }
        }
    }

    /// Transaction control (COMMIT, ROLLBACK): the simple protocol, one round trip (with the
    /// pending BEGIN in front when no statement sent it).
    async fn control(&self, sql: &str) -> Result<()> {
        let begin = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        match begin {
            None => Ok(self.client().batch_execute(sql).await?),
            Some(begin) => Ok(self.client().batch_execute(&format!("{begin}; {sql}")).await?),
        }
    }
}

/// A write's transaction: its connection, the rows its plan wrote that nothing reads back
/// in the transaction (`Tx::stage_message`, `Tx::stage_thread`), and the events its plan
/// emitted (`Tx::emit_all`). The runner sends those rows, the events' append and the COMMIT
/// together, in one round trip (`log::commit`).
pub(super) struct Tx {
    conn: Conn,
    staged: Staged,
    events: Vec<NewEvent>,
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

/// How much a transaction had staged at one moment (`Tx::mark`), to go back to.
#[derive(Clone, Copy)]
pub(super) struct TxMark {
    staged: staged::Mark,
    events: usize,
}

impl Tx {
    /// Stages a plan's events, in order.
    pub(super) fn emit_all(&mut self, events: Vec<NewEvent>) {
        self.events.extend(events);
    }

    /// Stages a new message, to be written with the other staged rows (`Tx::take_writes`):
    /// in the COMMIT's round trip, or in front of a later op's reads. Its failure (a
    /// collision with a racer's row, say) fails the write as an executed statement's would,
    /// only later.
    pub(super) fn stage_message(&mut self, m: &Message) {
        self.staged.message(m);
    }

    /// Stages a new or changed thread, like `stage_message`.
    pub(super) fn stage_thread(&mut self, t: &Thread) {
        self.staged.thread(t);
    }

    /// What is staged now, rows and events.
    pub(super) fn mark(&self) -> TxMark {
        TxMark {
            staged: self.staged.mark(),
            events: self.events.len(),
        }
    }

    /// Unstages the rows and events staged after `mark`.
    pub(super) fn back_to(&mut self, mark: TxMark) {
        self.staged.truncate(mark.staged);
        self.events.truncate(mark.events);
    }

    /// Takes the staged rows (one statement per table, `staged`), prepared (from the cache),
    /// to be sent in front of the statements that come next (`Conn::send_writes`): a later
    /// op of the same transaction (`batch`) or the append and COMMIT (`log::commit`).
    /// Preparing them all before anything is sent keeps them in order: were one prepared in
    /// the pipeline, what follows it could reach the server first.
    pub(super) async fn take_writes(&mut self, tenant: &TenantId) -> Result<Writes> {
        let columns = std::mem::take(&mut self.staged).columns(tenant);
        let mut statements = Vec::with_capacity(2);
        for (sql, params) in columns.statements() {
            statements.push(self.prepare(sql, &params).await?);
        }
        Ok(Writes { columns, statements })
    }
}

/// Staged rows ready to send (`Tx::take_writes`).
pub(super) struct Writes {
    columns: staged::Columns,
    statements: Vec<Statement>,
}

impl Conn {
    /// Sends staged rows, in order, each request going out as its future is first polled
    /// (so a `biased` join sends them ahead of what it polls next); the first failure, if any.
    pub(super) async fn send_writes(&self, writes: &Writes) -> Result<()> {
        let params = writes.columns.statements();
        // `join_all` polls its futures in order the first time: each request goes out then.
        let written = futures_util::future::join_all(
            writes
                .statements
                .iter()
                .zip(&params)
                .map(|(st, (_, params))| self.send(self.client().execute(st, params))),
        )
        .await;
        written.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }
}

/// What finishing one attempt of a write came to.
enum Finished<R> {
    Done(StoreResult<R>),
    /// It failed and surely did not commit (COMMIT was never sent, or the server rolled the
    /// transaction back), for a reason that running it again would not change.
    RolledBack(StoreError),
    /// It collided with a concurrent write, or lost its connection before COMMIT: run again.
    Retry,
}

/// Runs one write: `|$tx| $body` is one attempt (an expression using `$tx: &mut Tx` that
/// evaluates to `Result<R, Fail>`), run again on a collision. Evaluates to `StoreResult<R>`.
macro_rules! transact {
    ($inner:expr, $tenant:expr, |$tx:ident| $body:expr) => {{
        let inner: &Inner = &$inner;
        let mut attempt = 1u32;
        loop {
            let mut $tx = match inner.begin().await {
                Ok(tx) => tx,
                Err(e) => break Err(e),
            };
            let out = { $body };
            match inner.finish($tenant, $tx, out).await {
                Finished::Done(r) => break r,
                Finished::RolledBack(e) => break Err(e),
                Finished::Retry if attempt < MAX_ATTEMPTS => attempt += 1,
                Finished::Retry => break Err(unavailable("gave up after repeated collisions with concurrent writes")),
            }
        }
    }};
}

// Declared after `transact!`, which it uses.
mod batch;

impl PgStore {
    /// Opens the pool and creates or upgrades the schema (safe when several nodes start at
    /// once). Fails when the database cannot be reached or migrated: `serve` stops.
    pub async fn connect(
        settings: &PostgresSettings,
        publisher: Arc<dyn Publisher>,
        retention: u64,
    ) -> anyhow::Result<PgStore> {
        let config = pg_config(settings)?;
        migrate::run(&config, settings.timeout().max(Duration::from_secs(60)))
            .await
            .context("creating or upgrading the PostgreSQL schema")?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A closed connection is noticed by the driver (its task ends); one the server
                // lost without closing fails its first query, and the write that met it is run
                // again on a fresh one (`Inner::finish`). No extra round trip per checkout.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            // The connection used last is handed out first: under a light load a few hot
            // backends serve every write, instead of each call waking the coldest one.
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout()))
            .create_timeout(Some(settings.connect_timeout()))
            .recycle_timeout(Some(settings.connect_timeout()))
            .build()
            .context("building the PostgreSQL pool")?;
        let store = PgStore {
            inner: Arc::new(Inner {
                pool,
                outbox: Outbox::new(publisher.clone()),
                batches: batch::Waiting::default(),
                metrics: std::sync::OnceLock::new(),
                sink: publisher,
                explain: None,
                retention: retention.max(1),
                timeout: settings.timeout(),
                linger: settings.ingest_linger(),
                runtime: Handle::current(),
            }),
        };
        store.ping().await.context("connecting to PostgreSQL")?;
        Ok(store)
    }

    /// Counts into `metrics` how many inbound messages each ingestion transaction committed
    /// (`switchboard_ingest_batch_messages`). The first call wins; `serve` makes it once.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// The same store (pool, settings), explaining every query it runs into the returned
    /// record before running it: for the benchmark tool, and for reads only (EXPLAIN ANALYZE
    /// executes a write too).
    #[doc(hidden)]
    pub fn explaining(&self) -> (PgStore, Explained) {
        let explained = Explained::default();
        let i = &self.inner;
        let store = PgStore {
            inner: Arc::new(Inner {
                pool: i.pool.clone(),
                sink: i.sink.clone(),
                outbox: Outbox::new(i.sink.clone()),
                batches: batch::Waiting::default(),
                metrics: std::sync::OnceLock::new(),
                explain: Some(explained.clone()),
                retention: i.retention,
                timeout: i.timeout,
                linger: i.linger,
                runtime: i.runtime.clone(),
            }),
        };
        (store, explained)
    }

    /// Runs a call in a task of its own on the store's runtime, under the deadline: a caller
    /// that goes away does not cut a transaction short, and nothing waits past the deadline.
    async fn run<R, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> StoreResult<R>
    where
        F: Future<Output = StoreResult<R>> + Send + 'static,
        R: Send + 'static,
    {
        let timeout = self.inner.timeout;
        let call = f(self.inner.clone());
        let task = self.inner.runtime.spawn(async move {
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| Err(unavailable(format!("no answer within {timeout:?}"))))
        });
        task.await
            .unwrap_or_else(|e| Err(unavailable(format!("the call's task failed: {e}"))))
    }
}

/// The driver's settings from `postgres.url`, with our bounds where the URL sets none.
fn pg_config(settings: &PostgresSettings) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = settings
        .url
        .parse()
        .with_context(|| "postgres.url is not a PostgreSQL URL (postgres://user@host:5432/db)".to_string())?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.connect_timeout());
    }
    if config.get_application_name().is_none() {
        config.application_name("switchboard");
    }
    if config.get_options().is_none() {
        // The server gives up on what we gave up on: a statement past our deadline, and a
        // transaction left open by a node that froze (it would hold the tenant's log head).
        config.options(format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            settings.timeout_ms,
            settings.timeout_ms.saturating_mul(2)
        ));
    }
    config.keepalives(true);
    Ok(config)
}

impl Inner {
    /// A connection from the pool, marked unclean until the caller says otherwise.
    async fn conn(&self) -> StoreResult<Conn> {
        let client = self.pool.get().await.map_err(unavailable)?;
        Ok(Conn {
            client: Some(client),
            clean: false,
            explain: self.explain.clone(),
            pending: std::sync::Mutex::new(None),
        })
    }

    /// Runs a read on a pooled connection; the connection goes back to the pool unless the
    /// read met a database error.
    async fn read<R>(&self, f: impl AsyncFnOnce(&Conn) -> Result<R>) -> StoreResult<R> {
        let mut conn = self.conn().await?;
        let out = f(&conn).await;
        conn.clean = !matches!(out, Err(Fail::Db(_)));
        out.map_err(Fail::into_store)
    }

    async fn begin(&self) -> StoreResult<Tx> {
        self.begin_with("BEGIN").await
    }

    /// A write's transaction opened with the caller's own BEGIN statement (`batch::BEGIN_BATCH`).
    async fn begin_with(&self, begin: &'static str) -> StoreResult<Tx> {
        let conn = self.conn().await?;
        conn.start(begin);
        Ok(Tx {
            conn,
            staged: Staged::default(),
            events: Vec::new(),
        })
    }

    /// Ends one attempt of a write: COMMIT and publish what it did, or ROLLBACK and say
    /// whether to run it again.
    async fn finish<R>(&self, tenant: &TenantId, mut tx: Tx, out: Result<R>) -> Finished<R> {
        let out = match out {
            Ok(r) => r,
            Err(fail) => return self.abandon(tx, fail).await,
        };
        // Publishing in id order: the tenant's turn is taken before its log head is locked
        // (so no write waits for the turn while holding the head) and kept until the events
        // are handed to the bus. A write with no events takes no turn and no head.
        let turn = if tx.events.is_empty() {
            None
        } else {
            Some(self.outbox.turn(tenant).await)
        };
        match log::commit(&mut tx, tenant, self.retention).await {
            Appended::Committed(events) => {
                tx.conn.clean = true;
                if let Some(turn) = turn {
                    turn.publish(events);
                }
                Finished::Done(Ok(out))
            }
            Appended::NotSent(fail) => {
                drop(turn);
                self.abandon(tx, fail).await
            }
            Appended::RolledBack(fail) => {
                drop(turn);
                // The transaction is over: the connection is clean.
                tx.conn.clean = true;
                if fail.collided() {
                    Finished::Retry
                } else {
                    Finished::RolledBack(fail.into_store())
                }
            }
            Appended::CommitFailed(fail) => {
                drop(turn);
                self.failed_commit(tx, fail).await
            }
        }
    }

    /// Rolls back an attempt that failed before COMMIT: run again after a collision or a lost
    /// connection (the server rolled back), else the failure is the answer.
    async fn abandon<R>(&self, tx: Tx, fail: Fail) -> Finished<R> {
        let retry = fail.collided() || matches!(&fail, Fail::Db(e) if e.is_closed());
        let mut tx = tx;
        if tx.conn.control("ROLLBACK").await.is_ok() {
            tx.conn.clean = true;
        }
        if retry {
            Finished::Retry
        } else {
            Finished::RolledBack(fail.into_store())
        }
    }

    /// A COMMIT that failed: rolled back (a conflict found at commit: run again), or of
    /// unknown outcome (the connection went away): 503, never a retry that could apply the
    /// write twice. If it did commit, the publisher fills the gap from the log.
    async fn failed_commit<R>(&self, mut tx: Tx, fail: Fail) -> Finished<R> {
        if fail.collided() {
            if tx.conn.control("ROLLBACK").await.is_ok() {
                tx.conn.clean = true;
            }
            return Finished::Retry;
        }
        tx.conn.clean = false;
        Finished::Done(Err(fail.into_store()))
    }
}

#[async_trait]
impl EventLog for PgStore {
    async fn head(&self, tenant: &TenantId) -> StoreResult<u64> {
        let tenant = tenant.clone();
        self.run(|i| async move { i.read(async |c| log::head(c, &tenant).await).await })
            .await
    }

    async fn heads(&self, tenants: &[TenantId]) -> StoreResult<Vec<u64>> {
        let tenants = tenants.to_vec();
        self.run(|i| async move { i.read(async |c| log::heads(c, &tenants).await).await })
            .await
    }

    async fn events_after(&self, tenant: &TenantId, after: u64, limit: usize) -> StoreResult<Replay> {
        let tenant = tenant.clone();
        self.run(|i| async move {
            i.read(async |c| log::events_after(c, &tenant, after, limit).await)
                .await
        })
        .await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn upsert_location(&self, tenant: &TenantId, id: &LocationId, input: LocationInput) -> StoreResult<Location> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.run(|i| async move {
            transact!(i, &tenant, |tx| ops::upsert_location(
                &mut tx,
                &tenant,
                &id,
                input.clone()
            )
            .await)
        })
        .await
    }

    async fn upsert_user(&self, tenant: &TenantId, id: &UserId, name: String) -> StoreResult<User> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.run(|i| async move {
            transact!(i, &tenant, |tx| ops::upsert_user(&mut tx, &tenant, &id, name.clone())
                .await)
        })
        .await
    }

    async fn upsert_folder(&self, tenant: &TenantId, id: &FolderId, input: FolderInput) -> StoreResult<Folder> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.run(|i| async move {
            transact!(i, &tenant, |tx| ops::upsert_folder(
                &mut tx,
                &tenant,
                &id,
                input.clone()
            )
            .await)
        })
        .await
    }

    async fn preferences(&self, tenant: &TenantId) -> StoreResult<Preferences> {
        let tenant = tenant.clone();
        self.run(|i| async move { i.read(async |c| reads::preferences(c, &tenant).await).await })
            .await
    }

    async fn set_preferences(&self, tenant: &TenantId, patch: PreferencesPatch) -> StoreResult<Preferences> {
        let tenant = tenant.clone();
        self.run(|i| async move { transact!(i, &tenant, |tx| ops::set_preferences(&mut tx, &tenant, patch).await) })
            .await
    }

    async fn ingest(&self, tenant: &TenantId, input: InboundInput) -> StoreResult<Ingested> {
        batch::ingest(&self.inner, tenant, input).await
    }

    async fn me(&self, scope: &Scope) -> StoreResult<Me> {
        let scope = scope.clone();
        self.run(|i| async move { i.read(async |c| reads::me(c, &scope).await).await })
            .await
    }

    async fn user_name(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>> {
        let (tenant, user) = (tenant.clone(), user.clone());
        self.run(|i| async move { i.read(async |c| reads::user_name(c, &tenant, &user).await).await })
            .await
    }

    async fn set_subscribe_all(&self, scope: &Scope, on: bool) -> StoreResult<Me> {
        let (writer, tenant) = (scope.clone(), scope.tenant.clone());
        self.run(|i| async move { transact!(i, &tenant, |tx| ops::set_subscribe_all(&mut tx, &writer, on).await) })
            .await?;
        // Read after the commit, like any `/me`.
        self.me(scope).await
    }

    async fn resources(&self, scope: &Scope) -> StoreResult<Vec<Resource>> {
        let scope = scope.clone();
        self.run(|i| async move { i.read(async |c| reads::resources(c, &scope).await).await })
            .await
    }

    async fn threads(&self, scope: &Scope, query: ThreadQuery) -> StoreResult<ThreadPage> {
        let scope = scope.clone();
        self.run(|i| async move { i.read(async |c| reads::threads(c, &scope, &query).await).await })
            .await
    }

    async fn thread(&self, tenant: &TenantId, id: &ThreadId) -> StoreResult<Thread> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.run(|i| async move { i.read(async |c| reads::thread(c, &tenant, &id).await).await })
            .await
    }

    async fn thread_messages(&self, scope: &Scope, id: &ThreadId, paging: Paging) -> StoreResult<MessagePage> {
        let (scope, id) = (scope.clone(), id.clone());
        self.run(|i| async move {
            i.read(async |c| reads::thread_messages(c, &scope, &id, &paging).await)
                .await
        })
        .await
    }

    async fn mark_read(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread> {
        let (tenant, id, by) = (tenant.clone(), id.clone(), by.clone());
        self.run(|i| async move {
            transact!(i, &tenant, |tx| ops::change_read_state(
                &mut tx,
                &tenant,
                &id,
                &by,
                ReadChange::MarkRead
            )
            .await)
        })
        .await
    }

    async fn mark_unread(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread> {
        let (tenant, id, by) = (tenant.clone(), id.clone(), by.clone());
        self.run(|i| async move {
            transact!(i, &tenant, |tx| ops::change_read_state(
                &mut tx,
                &tenant,
                &id,
                &by,
                ReadChange::MarkUnread
            )
            .await)
        })
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
        self.run(|i| async move {
            transact!(i, &tenant, |tx| ops::reply(
                &mut tx,
                &tenant,
                &id,
                &by,
                body.clone(),
                after.as_ref()
            )
            .await)
        })
        .await
    }

    async fn assign(&self, tenant: &TenantId, id: &ThreadId, folder: &FolderId, by: &UserId) -> StoreResult<Thread> {
        let (tenant, id, folder, by) = (tenant.clone(), id.clone(), folder.clone(), by.clone());
        self.run(|i| async move { transact!(i, &tenant, |tx| ops::assign(&mut tx, &tenant, &id, &folder, &by).await) })
            .await
    }

    async fn search_folders(
        &self,
        scope: &Scope,
        phone_digits: Option<String>,
        text: Option<String>,
    ) -> StoreResult<Vec<Folder>> {
        let scope = scope.clone();
        self.run(|i| async move {
            i.read(async |c| reads::search_folders(c, &scope, phone_digits.as_deref(), text.as_deref()).await)
                .await
        })
        .await
    }

    async fn folder(&self, tenant: &TenantId, id: &FolderId) -> StoreResult<Folder> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.run(|i| async move { i.read(async |c| reads::folder(c, &tenant, &id).await).await })
            .await
    }

    async fn folder_messages(&self, scope: &Scope, id: &FolderId, paging: Paging) -> StoreResult<MessagePage> {
        let (scope, id) = (scope.clone(), id.clone());
        self.run(|i| async move {
            i.read(async |c| reads::folder_messages(c, &scope, &id, &paging).await)
                .await
        })
        .await
    }

    async fn message(&self, tenant: &TenantId, id: &MessageId) -> StoreResult<Message> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.run(|i| async move { i.read(async |c| reads::message(c, &tenant, &id).await).await })
            .await
    }

    async fn link_images(&self, tenant: &TenantId, message: &MessageId, by: &UserId) -> StoreResult<Linked> {
        let (tenant, message, by) = (tenant.clone(), message.clone(), by.clone());
        self.run(|i| async move { transact!(i, &tenant, |tx| ops::link_images(&mut tx, &tenant, &message, &by).await) })
            .await
    }

    async fn folder_photos(&self, scope: &Scope, id: &FolderId) -> StoreResult<Vec<Photo>> {
        let (scope, id) = (scope.clone(), id.clone());
        self.run(|i| async move { i.read(async |c| reads::folder_photos(c, &scope, &id).await).await })
            .await
    }

    async fn session_start(&self, scope: &Scope) -> StoreResult<SessionStart> {
        let scope = scope.clone();
        self.run(|i| async move {
            let mut conn = i.conn().await?;
            let out = reads::session_start(&conn, &scope).await;
            conn.clean = out.is_ok();
            out.map_err(Fail::into_store)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(|i| async move { i.read(async |c| c.query_one("SELECT 1", &[]).await.map(|_| ())).await })
            .await
    }

    async fn cursor_key(&self) -> StoreResult<[u8; 32]> {
        let candidate = new_key()?;
        let nobody = TenantId::trusted("");
        self.run(|i| async move { transact!(i, &nobody, |tx| ops::cursor_key(&mut tx, &candidate).await) })
            .await
    }
}
