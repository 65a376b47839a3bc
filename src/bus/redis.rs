//! The Redis bus: the events the Redis store publishes reach the hub of every node that has a
//! session of their tenant.
//!
//! # What it owns
//! One RESP3 connection (a `redis::aio::ConnectionManager`) carrying this node's subscriptions,
//! one per tenant channel (`keys::channel`), held only while this node has a session of that
//! tenant (`join`/`leave` count them); and, per subscribed tenant, the id of the last event
//! handed to the hub. Publishing is not ours: the store's script appends each event to the log
//! and PUBLISHes it in one step, so a channel carries a tenant's events in id order.
//! `Bus::barrier` (a websocket `ping`) reads the tenant's head and waits until this node has
//! handed the hub everything up to it, so a `pong` still follows every event committed before
//! the `ping`, on whichever node it was committed.
//!
//! A node subscribes to nothing else: no pattern, no global channel. Events of a tenant with
//! no session here never reach this node (Redis sends a channel's messages only to its
//! subscribers); its traffic is its own tenants' events.
//!
//! # The guarantee
//! At-least-once within the log's retention, de-duplicated by event id: the hub gets every
//! event of a joined tenant in increasing id order; an event may be handed over twice (sessions
//! skip ids they have), never skipped. Pub/sub alone is at-most-once, so every hole is filled
//! from the log: a message whose id is not `last + 1`, and every (re)subscription after a
//! disconnect, first reads `EventLog::events_after(last)`. When the log cannot fill it (trimmed
//! past `last`, or unreadable while Redis answers), the tenant's sessions here are closed with
//! 4008 (`EventSink::lost`) and the clients resume: no session stays open and deaf.
//!
//! # What redis-rs does and does not do on a reconnect
//! The classic async `PubSub` never reconnects. A `ConnectionManager` with a push sender
//! reconnects when its connection drops (it sees the `Disconnection` push), retrying a bounded
//! number of times; after that only a new command makes it try again, which is why a
//! supervisor here PINGs until Redis answers. `set_automatic_resubscription` replays the
//! SUBSCRIBEs it saw confirmed on the new connection (ignoring their failures), and nothing
//! more: what was published in the gap is gone from pub/sub. So after every disconnect each
//! tenant SUBSCRIBEs again itself (a no-op if the resubscription worked) and, once that is
//! confirmed, catches up from the log.
//!
//! # Layout
//! `RedisBus` (this file): the connection, the push router, the supervisor. `tenant`: one
//! tenant's subscription and delivery order, a task per joined tenant.

mod tenant;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use redis::{
    Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::{
    runtime::Handle,
    sync::{Notify, mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{Bus, EventSink};
use crate::{config::RedisSettings, domain::TenantId, store::EventLog, store::redis::keys};

use tenant::{Input, TenantTask};

/// Longest a `join` waits for its tenant's subscription (and catch-up) before the session is
/// refused; longer than the connection manager's reconnect attempts take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `/readyz` waits for PONG: an answer later than this is as good as none.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest one Redis command of the bus (SUBSCRIBE, GET, UNSUBSCRIBE) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a `barrier` waits for delivery to reach the head (a `pong` waits that long at most
/// while this node catches up).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// Most events one catch-up reads from the log; a node further behind than this on one tenant
/// closes that tenant's sessions (they resume) rather than pushing that many frames at them.
const CATCH_UP_LIMIT: usize = 10_000;
/// Bounds of the supervisor's PING interval while Redis is away.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_millis(200);

pub struct RedisBus {
    shared: Arc<Shared>,
    supervisor: JoinHandle<()>,
}

/// What the bus, its supervisor and the tenant tasks share.
struct Shared {
    conn: ConnectionManager,
    router: Arc<Router>,
    sink: Arc<dyn EventSink>,
    log: Arc<dyn EventLog>,
    /// The runtime the bus was started on: tenant tasks run there whichever worker's runtime
    /// a session lives on, so they outlive any one of them.
    runtime: Handle,
}

/// Routes the connection's pushes to the tenant tasks. Called from redis-rs's reading task,
/// so it never blocks and never awaits.
struct Router {
    prefix: String,
    tasks: Mutex<HashMap<TenantId, Entry>>,
    next_generation: AtomicU64,
    /// `Disconnection` pushes seen so far.
    disconnects: AtomicU64,
    /// The number of disconnects the supervisor has had a PONG after: connected while it
    /// equals `disconnects`.
    recovered: AtomicU64,
    /// Woken on `Disconnection`: the supervisor brings the connection back.
    disconnected: Notify,
}

/// A tenant task's inbox, and how far it delivered. `generation` tells a task apart from a
/// later one of the same tenant.
struct Entry {
    generation: u64,
    tx: mpsc::UnboundedSender<Input>,
    delivered: watch::Receiver<u64>,
}

impl RedisBus {
    /// Connects and starts receiving; `log` is read to catch up after a gap.
    pub async fn start(
        settings: &RedisSettings,
        sink: Arc<dyn EventSink>,
        log: Arc<dyn EventLog>,
    ) -> anyhow::Result<RedisBus> {
        // Subscriptions and commands share one connection only on RESP3, where messages come
        // as pushes; force it whatever the URL says (`?protocol=resp3` is its URL form).
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .context("parsing redis.url")?;
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(resp3)).context("parsing redis.url")?;
        let router = Arc::new(Router {
            prefix: settings.key_prefix.clone(),
            tasks: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            disconnects: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            disconnected: Notify::new(),
        });
        let pushes = router.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                pushes.route(push);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            .set_min_delay(RECONNECT_MIN)
            .set_max_delay(RECONNECT_MAX)
            .set_number_of_retries(4)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("connecting the bus to Redis at {}", redacted(&settings.url)))?;
        let shared = Arc::new(Shared {
            conn,
            router,
            sink,
            log,
            runtime: Handle::current(),
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        Ok(RedisBus { shared, supervisor })
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn join(&self, tenant: &TenantId) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.shared.send(tenant, Input::Join(reply), true);
        // A timed-out join drops `answer`; the task sees that and counts no session.
        match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the bus stopped".into()),
            Err(_) => Err("Redis did not confirm the subscription in time".into()),
        }
    }

    fn leave(&self, tenant: &TenantId) {
        self.shared.send(tenant, Input::Leave, false);
    }

    async fn barrier(&self, tenant: &TenantId) -> Result<(), String> {
        let Some(mut delivered) = self.shared.delivered(tenant) else {
            // No session of the tenant here: nothing to wait for.
            return Ok(());
        };
        // Read now, the head covers every event committed before the caller asked.
        let mut conn = self.shared.conn.clone();
        let head: Option<u64> = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("GET")
                .arg(self.shared.seq_key(tenant))
                .query_async(&mut conn),
        )
        .await
        .map_err(|_| "Redis did not answer in time".to_owned())?
        .map_err(|e| format!("Redis: {e}"))?;
        let head = head.unwrap_or(0);
        match tokio::time::timeout(BARRIER_TIMEOUT, delivered.wait_for(|d| *d >= head)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("the tenant's task ended".into()),
            Err(_) => Err(format!("event {head} not delivered here in time")),
        }
    }

    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.shared.conn.clone();
        match tokio::time::timeout(PING_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Redis: {e}")),
            Err(_) => Err("Redis did not answer PING in time".into()),
        }
    }
}

impl Shared {
    /// Hands `input` to `tenant`'s task, starting one if there is none and `start` says so.
    fn send(self: &Arc<Self>, tenant: &TenantId, input: Input, start: bool) {
        // Sent under the lock: a task retires only under it, with an empty inbox, so nothing
        // sent here is ever left in the inbox of a task that has ended.
        // unwrap: the lock is only held for short, non-panicking sections.
        let mut tasks = self.router.tasks.lock().unwrap();
        let input = match tasks.get(tenant) {
            Some(entry) => match entry.tx.send(input) {
                Ok(()) => return,
                // The task is gone without retiring (it panicked): replace it.
                Err(mpsc::error::SendError(input)) => input,
            },
            None => input,
        };
        if !start {
            debug!(%tenant, "no bus task for this tenant");
            return;
        }
        let generation = self.router.next_generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        // unwrap: the receiver is right here.
        tx.send(input).map_err(|_| ()).unwrap();
        let (delivered_tx, delivered) = watch::channel(0);
        tasks.insert(
            tenant.clone(),
            Entry {
                generation,
                tx,
                delivered,
            },
        );
        let task = TenantTask::new(self.clone(), tenant.clone(), generation, delivered_tx);
        self.runtime.spawn(task.run(rx));
    }

    /// How far `tenant`'s task delivered, if this node has one.
    fn delivered(&self, tenant: &TenantId) -> Option<watch::Receiver<u64>> {
        // unwrap: the lock is only held for short, non-panicking sections.
        let tasks = self.router.tasks.lock().unwrap();
        tasks.get(tenant).map(|e| e.delivered.clone())
    }

    /// Removes the task `generation` of `tenant` if nothing waits in its inbox; false if it
    /// must go on (something was sent to it meanwhile).
    fn retire(&self, tenant: &TenantId, generation: u64, inbox: &mpsc::UnboundedReceiver<Input>) -> bool {
        // unwrap: the lock is only held for short, non-panicking sections.
        let mut tasks = self.router.tasks.lock().unwrap();
        if !inbox.is_empty() {
            return false;
        }
        if tasks.get(tenant).is_some_and(|e| e.generation == generation) {
            tasks.remove(tenant);
        }
        true
    }

    fn channel(&self, tenant: &TenantId) -> String {
        keys::channel(&self.router.prefix, tenant)
    }

    fn seq_key(&self, tenant: &TenantId) -> String {
        keys::seq(&self.router.prefix, tenant)
    }

    /// Whether the connection is up, as far as the supervisor knows.
    fn connected(&self) -> bool {
        self.router.recovered.load(Ordering::Acquire) == self.router.disconnects.load(Ordering::Acquire)
    }
}

impl Router {
    fn route(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    warn!("a pub/sub message without channel or payload");
                    return;
                };
                let (Some(channel), Some(payload)) = (text(channel), text(payload)) else {
                    warn!("a pub/sub message that is not text");
                    return;
                };
                let Some(tenant) = keys::tenant_of_channel(&self.prefix, &channel) else {
                    // Another prefix's channel on a shared Redis: not ours.
                    return;
                };
                // unwrap: the lock is only held for short, non-panicking sections.
                if let Some(entry) = self.tasks.lock().unwrap().get(&tenant) {
                    let _ = entry.tx.send(Input::Message(payload));
                }
            }
            PushKind::Disconnection => {
                self.disconnects.fetch_add(1, Ordering::AcqRel);
                self.broadcast(|| Input::Disconnected);
                self.disconnected.notify_one();
            }
            // Subscribe confirmations answer our own SUBSCRIBEs (awaited where they are sent) or
            // redis-rs's resubscription, which every tenant repeats itself after a disconnect.
            _ => {}
        }
    }

    fn broadcast(&self, input: impl Fn() -> Input) {
        // unwrap: the lock is only held for short, non-panicking sections.
        for entry in self.tasks.lock().unwrap().values() {
            let _ = entry.tx.send(input());
        }
    }
}

/// Brings the connection back after each disconnect and tells every tenant task, which then
/// resubscribes and catches up from the log.
async fn supervise(shared: Arc<Shared>) {
    loop {
        shared.router.disconnected.notified().await;
        warn!("the bus lost its Redis connection; reconnecting");
        // A disconnect after this load keeps `connected()` false until its own round.
        let through = shared.router.disconnects.load(Ordering::Acquire);
        let mut delay = RECONNECT_MIN;
        loop {
            // redis-rs gives up reconnecting after a few attempts; a command starts it again.
            let mut conn = shared.conn.clone();
            let pong = tokio::time::timeout(PING_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await;
            if matches!(pong, Ok(Ok(_))) {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX);
        }
        info!("the bus is connected to Redis again; catching up from the log");
        shared.router.recovered.fetch_max(through, Ordering::AcqRel);
        shared.router.broadcast(|| Input::Reconnected);
    }
}

fn text(v: Value) -> Option<String> {
    redis::from_redis_value::<String>(v).ok()
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn urls_in_messages_carry_no_password() {
        assert_eq!(redacted("redis://:pw@host:6379/0"), "redis://…@host:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
