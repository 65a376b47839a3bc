//! The Redis store: the same `Store` contract as the embedded one, on Redis, so several nodes
//! share one state.
//!
//! - `keys`: every key name (the layout table is there); one hash tag per tenant, so all of
//!   a tenant's keys sit on one Redis Cluster shard and one script may touch them all.
//! - `records`: the JSON records kept in hash fields.
//! - `tx` + `commit.lua`: optimistic transactions. A mutating call reads what it needs,
//!   decides in Rust with `crate::rules`, then commits its writes *and* its events in one
//!   Lua script that first re-checks every value the decision rested on. If one changed, the
//!   call starts over (`transact`, a bounded number of times). The script also gives the
//!   events their ids (`INCR seq`), appends them to the log (`ZADD log`, trimmed to
//!   `events.retention`) and publishes them on the tenant's channel, in id order: the log and
//!   the channel can never disagree, and the Redis bus only has to listen.
//! - `ops`: the mutating calls, one attempt each, mirroring `store::embedded::ops`.
//! - `reads` + `gather.lua`: lists, counts, snapshots and the event log.
//!
//! Every Redis error is `StoreError::Unavailable` (HTTP 503): a call answers 2xx only after
//! its script ran. The connection is a `ConnectionManager`, which reconnects by itself; its
//! timeouts are short so that an outage turns into 503s quickly rather than hung requests.

pub mod keys;
mod ops;
mod reads;
mod records;
mod tx;

use std::{sync::LazyLock, time::Duration};

use ::redis::{Script, aio::ConnectionManager};
use anyhow::Context;
use async_trait::async_trait;

use self::{
    keys::TenantKeys,
    tx::{Commit, Tx},
};
use super::*;
use crate::{
    config::RedisSettings,
    domain::model::{
        Folder, Ingested, Linked, Location, Me, Message, MessagePage, Photo, Preferences, Resource, Thread, ThreadPage,
        User,
    },
    rules::ReadChange,
};

/// The commit script (see `tx`).
static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("commit.lua")));
/// The consistent read behind thread lists and unread counts (see `reads`).
static GATHER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gather.lua")));

/// Attempts of one mutating call before it gives up with 503 (only under heavy contention
/// on the same records).
const MAX_ATTEMPTS: u32 = 100;

pub(crate) fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    retention: u64,
}

/// Runs one attempt of a mutating call (`$body`, which stages writes on `$tx`) and commits
/// it; on a conflict, starts over with a fresh `Tx`. Evaluates to the call's result.
macro_rules! transact {
    ($store:expr, $tenant:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let mut $tx = $store.tx($tenant);
            let out = $body;
            if out.is_err() {
                // A refusal (404, 409, 422) or an outage: nothing was written.
                break out;
            }
            match $tx.commit().await {
                Err(e) => break Err(e),
                Ok(Commit::Done) => break out,
                Ok(Commit::Conflict) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        tracing::warn!(tenant = %$tenant, "giving up after {attempt} conflicting attempts");
                        break Err(StoreError::Unavailable("too much contention; retry".into()));
                    }
                    backoff(attempt).await;
                }
            }
        }
    }};
}

/// A short, growing, jittered pause between conflicting attempts, so that contenders spread
/// out instead of colliding again.
async fn backoff(attempt: u32) {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            % 1000,
    );
    let micros = (u64::from(attempt.min(20)) * 200) + jitter;
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

impl RedisStore {
    /// Connects to `settings.url`; fails when Redis does not answer.
    pub async fn connect(settings: &RedisSettings, retention: u64) -> anyhow::Result<RedisStore> {
        let client = ::redis::Client::open(settings.url.as_str()).context("parsing redis.url")?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            // Few, quick reconnect attempts per outage: callers wait for them, and the next
            // call starts a new round anyway.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("connecting to Redis at {}", redacted(&settings.url)))?;
        Ok(RedisStore {
            conn,
            prefix: settings.key_prefix.clone(),
            retention,
        })
    }

    fn keys(&self, tenant: &TenantId) -> TenantKeys {
        TenantKeys::new(&self.prefix, tenant)
    }

    fn tx(&self, tenant: &TenantId) -> Tx {
        Tx::new(self.conn.clone(), self.keys(tenant), self.retention)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// A Redis URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn head(&self, tenant: &TenantId) -> StoreResult<u64> {
        let head: Option<u64> = ::redis::AsyncCommands::get(&mut self.conn(), self.keys(tenant).seq())
            .await
            .map_err(unavailable)?;
        Ok(head.unwrap_or(0))
    }

    async fn events_after(&self, tenant: &TenantId, after: u64, limit: usize) -> StoreResult<Replay> {
        reads::events_after(&mut self.conn(), &self.keys(tenant), after, limit).await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn upsert_location(&self, tenant: &TenantId, id: &LocationId, input: LocationInput) -> StoreResult<Location> {
        transact!(self, tenant, |tx| ops::upsert_location(&mut tx, id, &input).await)
    }

    async fn upsert_user(&self, tenant: &TenantId, id: &UserId, name: String) -> StoreResult<User> {
        transact!(self, tenant, |tx| ops::upsert_user(&mut tx, id, &name).await)
    }

    async fn upsert_folder(&self, tenant: &TenantId, id: &FolderId, input: FolderInput) -> StoreResult<Folder> {
        transact!(self, tenant, |tx| ops::upsert_folder(&mut tx, id, &input).await)
    }

    async fn preferences(&self, tenant: &TenantId) -> StoreResult<Preferences> {
        reads::preferences(&mut self.conn(), &self.keys(tenant)).await
    }

    async fn set_preferences(&self, tenant: &TenantId, patch: PreferencesPatch) -> StoreResult<Preferences> {
        transact!(self, tenant, |tx| ops::set_preferences(&mut tx, patch).await)
    }

    async fn ingest(&self, tenant: &TenantId, input: InboundInput) -> StoreResult<Ingested> {
        transact!(self, tenant, |tx| ops::ingest(&mut tx, &input).await)
    }

    async fn me(&self, scope: &Scope) -> StoreResult<Me> {
        reads::me(&mut self.conn(), &self.keys(&scope.tenant), scope).await
    }

    async fn user_name(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>> {
        ::redis::AsyncCommands::hget(&mut self.conn(), self.keys(tenant).users(), user.as_str())
            .await
            .map_err(unavailable)
    }

    async fn set_subscribe_all(&self, scope: &Scope, on: bool) -> StoreResult<Me> {
        transact!(self, &scope.tenant, |tx| ops::set_subscribe_all(&mut tx, scope, on)
            .await)?;
        self.me(scope).await
    }

    async fn resources(&self, scope: &Scope) -> StoreResult<Vec<Resource>> {
        reads::resources(&mut self.conn(), &self.keys(&scope.tenant), scope).await
    }

    async fn threads(&self, scope: &Scope, query: ThreadQuery) -> StoreResult<ThreadPage> {
        reads::threads(&mut self.conn(), &self.keys(&scope.tenant), scope, &query).await
    }

    async fn thread(&self, tenant: &TenantId, id: &ThreadId) -> StoreResult<Thread> {
        reads::load_thread(&mut self.conn(), &self.keys(tenant), id).await
    }

    async fn thread_messages(&self, scope: &Scope, id: &ThreadId, paging: Paging) -> StoreResult<MessagePage> {
        reads::thread_messages(&mut self.conn(), &self.keys(&scope.tenant), scope, id, &paging).await
    }

    async fn mark_read(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread> {
        transact!(self, tenant, |tx| ops::change_read_state(
            &mut tx,
            id,
            by,
            ReadChange::MarkRead
        )
        .await)
    }

    async fn mark_unread(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread> {
        transact!(self, tenant, |tx| ops::change_read_state(
            &mut tx,
            id,
            by,
            ReadChange::MarkUnread
        )
        .await)
    }

    /// No guard here (this store is on its way out): a guarded reply is refused, never sent
    /// unguarded.
    async fn reply(
        &self,
        tenant: &TenantId,
        id: &ThreadId,
        by: &UserId,
        body: String,
        after: Option<&MessageId>,
    ) -> StoreResult<Message> {
        if after.is_some() {
            return Err(StoreError::invalid(
                "after_message_id",
                "not supported on the Redis store; use storage.backend = \"postgres\"",
            ));
        }
        transact!(self, tenant, |tx| ops::reply(&mut tx, id, by, &body).await)
    }

    async fn assign(&self, tenant: &TenantId, id: &ThreadId, folder: &FolderId, by: &UserId) -> StoreResult<Thread> {
        transact!(self, tenant, |tx| ops::assign(&mut tx, id, folder, by).await)
    }

    async fn search_folders(
        &self,
        scope: &Scope,
        phone_digits: Option<String>,
        text: Option<String>,
    ) -> StoreResult<Vec<Folder>> {
        reads::search_folders(
            &mut self.conn(),
            &self.keys(&scope.tenant),
            scope,
            phone_digits.as_deref(),
            text.as_deref(),
        )
        .await
    }

    async fn folder(&self, tenant: &TenantId, id: &FolderId) -> StoreResult<Folder> {
        reads::load_folder(&mut self.conn(), &self.keys(tenant), id).await
    }

    async fn folder_messages(&self, scope: &Scope, id: &FolderId, paging: Paging) -> StoreResult<MessagePage> {
        reads::folder_messages(&mut self.conn(), &self.keys(&scope.tenant), scope, id, &paging).await
    }

    async fn message(&self, tenant: &TenantId, id: &MessageId) -> StoreResult<Message> {
        reads::load_message(&mut self.conn(), &self.keys(tenant), id).await
    }

    async fn link_images(&self, tenant: &TenantId, message: &MessageId, by: &UserId) -> StoreResult<Linked> {
        transact!(self, tenant, |tx| ops::link_images(&mut tx, message, by).await)
    }

    async fn folder_photos(&self, scope: &Scope, id: &FolderId) -> StoreResult<Vec<Photo>> {
        reads::folder_photos(&mut self.conn(), &self.keys(&scope.tenant), scope, id).await
    }

    async fn session_start(&self, scope: &Scope) -> StoreResult<SessionStart> {
        reads::session_start(&mut self.conn(), &self.keys(&scope.tenant), scope).await
    }

    async fn unread_count(&self, scope: &Scope) -> StoreResult<u64> {
        reads::unread_count(&mut self.conn(), &self.keys(&scope.tenant), scope).await
    }

    async fn ping(&self) -> StoreResult<()> {
        ::redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn cursor_key(&self) -> StoreResult<[u8; 32]> {
        let name = keys::cursor_key(&self.prefix);
        let candidate = new_key()?;
        let mut conn = self.conn();
        // SET NX: of nodes starting together, the first one's key stays; all read that one.
        ::redis::cmd("SET")
            .arg(&name)
            .arg(&candidate[..])
            .arg("NX")
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        let stored: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        stored
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| StoreError::Unavailable(format!("{name} does not hold a 32-byte key")))
    }
}
