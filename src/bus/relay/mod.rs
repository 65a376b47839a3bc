//! The relay bus: committed events reach the hub of every node through a pub/sub transport,
//! in log order, with the log as the truth.
//!
//! # What it owns
//! - **Publishing**: the store hands every committed batch to its `RelayPublisher` (a
//!   `store::Publisher`); the batch is encoded once per tenant (`Batch`) and queued for the
//!   bus's publisher task, which publishes it on the tenant's partition channel (what queued
//!   meanwhile goes out together, pipelined, in the order queued). Publishing never blocks a
//!   write: a full queue drops the batch (counted), and the receivers' head
//!   check brings it from the log. The transport is a `bus::pubsub::PubSub` (Redis, Redis
//!   Cluster, or the `Loopback` of one node).
//! - **Receiving**: one task per tenant with a session on this node (`tenant`), fed by the
//!   transport's messages for that tenant, owning the tenant's delivery order: the hub gets
//!   every event of the tenant once, in increasing id order, with no hole. A batch that does
//!   not continue the last delivered id waits a moment for the ones before it (two writers'
//!   publishes may cross), then the hole is filled from the log (`EventLog::events_after`).
//! - **The head check**: every `CHECK_INTERVAL` one read of the log's heads for every tenant
//!   served here (`EventLog::heads`). A tenant whose head stayed ahead of its delivery for
//!   two checks in a row catches up from the log: a publish that never came (the writer died
//!   between its commit and its publish, or the transport dropped it) is noticed within a
//!   second, without waiting for the tenant's next event. While the transport is down the
//!   check *is* the delivery: every check catches up at once, so sessions keep receiving
//!   events within `CHECK_INTERVAL` through an outage of the transport.
//!
//! # The failpoint (tests only)
//! With `SWITCHBOARD_FAILPOINT=abort-before-publish` in its environment (read once, when the
//! publisher is made at start), a node aborts the process inside the first `publish` it is
//! handed: after the commit of a write and before its events are queued for the transport.
//! That is the window a node killed between commit and publish dies in, made reachable for
//! `tests/cluster` (the other nodes must still deliver the event, from the log). No setting
//! names it and nothing else reads that variable.
//!
//! # The guarantee
//! Every event of a tenant with a session here, committed after the session joined, reaches
//! the hub exactly once and in id order, within about a second even if its publish was lost,
//! as long as the log holds it; when the log no longer does (trimmed past what was delivered),
//! the tenant's sessions here are closed to resume (`EventSink::lost`). While the log cannot
//! be read, delivery waits (sessions stay open) and catches up once it can.

mod tenant;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::{
    runtime::Handle,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{debug, warn};

use self::tenant::{Input, TenantTask};
use super::{
    Bus, Elsewhere, EventSink,
    presence::{PresenceRelay, PresenceSink, State},
    pubsub::{Gap, PubSub, Receiver, partition_of},
};
use crate::{
    domain::TenantId,
    event::Event,
    metrics::Metrics,
    store::{EventLog, Publisher},
};

/// How often the log's heads are read for every tenant served here.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(300);
/// Longest one read of the log may take before it counts as failed.
const LOG_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a `join` waits for the transport to confirm the tenant's subscription; after it the
/// session opens anyway and its events come by the head check until the transport is back.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a `barrier` waits for delivery to reach the head.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// Batches waiting for the publisher; beyond it a batch is dropped (and comes from the log).
const PUBLISH_QUEUE: usize = 65_536;
/// The most queued batches published together (`publish_all`).
const PUBLISH_PIPELINE: usize = 64;

/// What one published message carries: a tenant's events of one commit, in id order.
#[derive(Serialize, Deserialize)]
struct Batch<'a> {
    #[serde(rename = "t")]
    tenant: TenantId,
    /// `Event::to_wire` texts.
    #[serde(rename = "e", borrow)]
    events: Vec<&'a serde_json::value::RawValue>,
}

impl Batch<'_> {
    fn encode(tenant: &TenantId, events: &[Event]) -> String {
        let wires: Vec<String> = events.iter().map(Event::to_wire).collect();
        let raws: Vec<Box<serde_json::value::RawValue>> = wires
            .into_iter()
            // unwrap: `to_wire` writes JSON.
            .map(|w| serde_json::value::RawValue::from_string(w).unwrap())
            .collect();
        let batch = Batch {
            tenant: tenant.clone(),
            events: raws.iter().map(AsRef::as_ref).collect(),
        };
        // unwrap: plain data.
        serde_json::to_string(&batch).unwrap()
    }

    /// The tenant and its events, or `None` for a message that is not a batch.
    fn decode(payload: &[u8]) -> Option<(TenantId, Vec<Arc<Event>>)> {
        let batch: Batch<'_> = serde_json::from_slice(payload).ok()?;
        let events = batch
            .events
            .iter()
            .map(|raw| Event::from_wire(&batch.tenant, raw.get()).map(Arc::new))
            .collect::<Option<Vec<_>>>()?;
        Some((batch.tenant, events))
    }
}

pub struct RelayBus {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the bus, its tasks and the tenant tasks share.
struct Shared {
    log: Arc<dyn EventLog>,
    sink: Arc<dyn EventSink>,
    transport: Arc<dyn PubSub>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    /// Per partition, the tenants here that need it subscribed; its lock is held across the
    /// transport's SUBSCRIBE/UNSUBSCRIBE, so the two never race for one channel.
    partitions: tokio::sync::Mutex<HashMap<u16, usize>>,
    /// The runtime the bus was started on: tenant tasks run there whichever worker's runtime
    /// a session lives on.
    runtime: Handle,
}

/// Routes the transport's messages to the tenant tasks. Called from the transport's reading
/// task: never blocks, never awaits.
#[derive(Default)]
pub struct Router {
    tasks: Mutex<HashMap<TenantId, Entry>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// Where presence messages go, once presence is shared (`RelayBus::share_presence`).
    presence: OnceLock<Arc<PresenceRelay>>,
}

/// A tenant task's inbox, and how far it delivered. `generation` tells a task apart from a
/// later one of the same tenant.
struct Entry {
    generation: u64,
    tx: mpsc::UnboundedSender<Input>,
    delivered: watch::Receiver<u64>,
}

impl Receiver for Router {
    fn message(&self, _partition: u16, payload: Vec<u8>) {
        let Some((tenant, events)) = Batch::decode(&payload) else {
            match (State::decode(&payload), self.presence.get()) {
                (Some(state), Some(presence)) => presence.heard(state),
                (Some(_), None) => {}
                (None, _) => warn!("an unreadable message on an event channel"),
            }
            return;
        };
        // unwrap: the lock is only held for short, non-panicking sections.
        if let Some(entry) = self.tasks.lock().unwrap().get(&tenant) {
            let _ = entry.tx.send(Input::Events(events));
        }
    }

    fn gap(&self, partitions: &[u16], gap: Gap) {
        // unwrap: the lock is only held for short, non-panicking sections.
        for (tenant, entry) in self.tasks.lock().unwrap().iter() {
            if partitions.contains(&partition_of(tenant)) {
                let _ = entry.tx.send(match gap {
                    Gap::Resubscribed => Input::Gap,
                    Gap::Interrupted => Input::Interrupted,
                });
            }
        }
    }
}

/// The publishing side of a relay bus, which the store holds (`store::Publisher`): it encodes
/// each committed batch and queues it for the bus's publisher task. Made before the bus,
/// because the bus reads the store's log and the store publishes through this.
pub struct RelayPublisher {
    queue: mpsc::Sender<(u16, String)>,
    metrics: Arc<Metrics>,
    /// The test failpoint (see the module's docs).
    abort_before_publish: bool,
}

/// The environment variable of the test failpoint, and its one value.
const FAILPOINT: (&str, &str) = ("SWITCHBOARD_FAILPOINT", "abort-before-publish");

/// The other end: what the bus publishes from (`RelayBus::start`).
pub struct PublishQueue(mpsc::Receiver<(u16, String)>);

/// A publisher and the queue it feeds.
pub fn publisher(metrics: Arc<Metrics>) -> (RelayPublisher, PublishQueue) {
    let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
    let abort_before_publish = std::env::var(FAILPOINT.0).is_ok_and(|v| v == FAILPOINT.1);
    if abort_before_publish {
        warn!("failpoint {}: this node aborts before its first publish", FAILPOINT.1);
    }
    (
        RelayPublisher {
            queue,
            metrics,
            abort_before_publish,
        },
        PublishQueue(rx),
    )
}

impl RelayBus {
    /// Starts the bus on `transport`, whose messages must reach `router` (the same one:
    /// make it with `RelayBus::router()` first and hand it to the transport), publishing what
    /// `queue`'s publisher was handed.
    pub fn start(
        router: Arc<Router>,
        transport: Arc<dyn PubSub>,
        log: Arc<dyn EventLog>,
        sink: Arc<dyn EventSink>,
        metrics: Arc<Metrics>,
        queue: PublishQueue,
    ) -> RelayBus {
        let shared = Arc::new(Shared {
            log,
            sink,
            transport,
            router,
            metrics,
            partitions: tokio::sync::Mutex::new(HashMap::new()),
            runtime: Handle::current(),
        });
        let tasks = vec![
            tokio::spawn(publish_all(shared.clone(), queue.0)),
            tokio::spawn(check_heads(shared.clone())),
        ];
        RelayBus { shared, tasks }
    }

    /// The router a transport hands its messages to.
    pub fn router() -> Arc<Router> {
        Arc::new(Router::default())
    }

    /// Shares this node's presence with the other nodes over the transport (`bus::presence`)
    /// and hands theirs to `sink`; returns the relay, which the hub announces its changes to.
    pub fn share_presence(&self, sink: Arc<dyn PresenceSink>, key_prefix: &str) -> Arc<PresenceRelay> {
        let relay = PresenceRelay::start(sink, self.shared.transport.clone(), key_prefix);
        let _ = self.shared.router.presence.set(relay.clone());
        relay
    }
}

impl Drop for RelayBus {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Publisher for RelayPublisher {
    fn publish(&self, events: Vec<Event>) {
        if self.abort_before_publish {
            // The events are committed; nothing of them leaves this node.
            eprintln!("failpoint {}: aborting", FAILPOINT.1);
            std::process::abort();
        }
        // A commit's events are one tenant's in the stores that use this bus, but group runs
        // of one tenant anyway.
        let mut start = 0;
        while start < events.len() {
            let tenant = &events[start].tenant;
            let end = events[start..]
                .iter()
                .position(|e| &e.tenant != tenant)
                .map_or(events.len(), |n| start + n);
            let payload = Batch::encode(tenant, &events[start..end]);
            if self.queue.try_send((partition_of(tenant), payload)).is_err() {
                self.metrics.publish_failures.inc();
                debug!(%tenant, "the publish queue is full: the head check brings the batch");
            }
            start = end;
        }
    }
}

#[async_trait]
impl Bus for RelayBus {
    async fn join(&self, tenant: &TenantId) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.shared.send(tenant, Input::Join(reply), true);
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT + LOG_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the bus stopped".into()),
            Err(_) => Err("the log did not answer in time".into()),
        }
    }

    fn leave(&self, tenant: &TenantId) {
        self.shared.send(tenant, Input::Leave, false);
    }

    async fn barrier(&self, tenant: &TenantId) -> Result<(), String> {
        let Some(mut delivered) = self.shared.delivered(tenant) else {
            return Ok(());
        };
        let head = tokio::time::timeout(LOG_TIMEOUT, self.shared.log.head(tenant))
            .await
            .map_err(|_| "the log did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if *delivered.borrow() >= head {
            return Ok(());
        }
        // Behind: catch up now rather than at the next check.
        self.shared.send(tenant, Input::CatchUp(head), false);
        match tokio::time::timeout(BARRIER_TIMEOUT, delivered.wait_for(|d| *d >= head)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("the tenant's task ended".into()),
            Err(_) => Err(format!("event {head} not delivered here in time")),
        }
    }

    async fn ping(&self) -> Result<(), String> {
        self.shared.transport.ping().await.map_err(|e| e.to_string())
    }

    async fn presence_elsewhere(&self, tenant: &TenantId) -> Result<Elsewhere, String> {
        match self.shared.router.presence.get() {
            Some(relay) => relay.elsewhere(tenant).await,
            None => Ok(Vec::new()),
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
            return;
        }
        let generation = self
            .router
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// Subscribes `tenant`'s partition for it (confirmed by the transport), bounded by
    /// `SUBSCRIBE_TIMEOUT`.
    async fn subscribe(&self, tenant: &TenantId) -> Result<(), String> {
        let p = partition_of(tenant);
        let mut partitions = self.partitions.lock().await;
        let result = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, self.transport.subscribe(p)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the transport did not confirm in time".into()),
        };
        // Counted either way: the transport keeps asking for it once it is back.
        *partitions.entry(p).or_default() += 1;
        result
    }

    /// The matching release: unsubscribes the partition when no tenant here needs it.
    async fn unsubscribe(&self, tenant: &TenantId) {
        let p = partition_of(tenant);
        let mut partitions = self.partitions.lock().await;
        let Some(n) = partitions.get_mut(&p) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            partitions.remove(&p);
            if let Err(e) = self.transport.unsubscribe(p).await {
                debug!(partition = p, error = %e, "unsubscribe failed");
            }
        }
    }
}

/// Publishes queued batches in the order they were queued. What queued while the publishes
/// before were on their way goes out together (up to `PUBLISH_PIPELINE`), pipelined on the
/// transport's connection: sent in order (each is sent when first polled, and `join_all`
/// polls in order), answered together, so a burst costs Redis one wake-up instead of one per
/// batch, and no batch waits for the answers to those before it.
async fn publish_all(shared: Arc<Shared>, mut queue: mpsc::Receiver<(u16, String)>) {
    let mut queued = Vec::with_capacity(PUBLISH_PIPELINE);
    while queue.recv_many(&mut queued, PUBLISH_PIPELINE).await > 0 {
        let sends = queued.iter().map(|(partition, payload)| {
            let shared = &shared;
            async move {
                (
                    *partition,
                    shared.transport.publish(*partition, payload.as_bytes()).await,
                )
            }
        });
        for (partition, outcome) in futures_util::future::join_all(sends).await {
            if let Err(e) = outcome {
                shared.metrics.publish_failures.inc();
                debug!(partition, error = %e, "publish failed: the head check brings the batch");
            }
        }
        queued.clear();
    }
}

/// Reads the heads of every tenant served here every `CHECK_INTERVAL` and tells each task.
async fn check_heads(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let transport_up = shared.transport.connected();
        shared.metrics.bus_up.set(i64::from(transport_up));
        let tenants: Vec<TenantId> = {
            // unwrap: the lock is only held for short, non-panicking sections.
            let tasks = shared.router.tasks.lock().unwrap();
            tasks.keys().cloned().collect()
        };
        if tenants.is_empty() {
            continue;
        }
        let heads = match tokio::time::timeout(LOG_TIMEOUT, shared.log.heads(&tenants)).await {
            Ok(Ok(heads)) => heads,
            Ok(Err(e)) => {
                debug!(error = %e, "the head check could not read the log");
                continue;
            }
            Err(_) => {
                debug!("the head check timed out");
                continue;
            }
        };
        for (tenant, head) in tenants.iter().zip(heads) {
            shared.send(tenant, Input::Head { head, transport_up }, false);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The delivery logic against an in-memory log and a transport the test drives by hand
    //! (what each node receives, and when, is the test's choice); the real transports and the
    //! real logs are tested end to end in `tests/`.

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::{super::pubsub::PubSubError, *};
    use crate::{
        domain::Id,
        event::{EventKind, Route},
        store::{Replay, StoreError, StoreResult},
    };

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    /// A log in memory: appended events, trimmed to `retention`, readable unless `down`.
    #[derive(Default)]
    struct MemLog {
        events: Mutex<Vec<Event>>,
        head: std::sync::atomic::AtomicU64,
        retention: usize,
        down: AtomicBool,
    }

    impl MemLog {
        fn new(retention: usize) -> Arc<MemLog> {
            Arc::new(MemLog {
                retention,
                ..MemLog::default()
            })
        }

        /// Commits `n` events; returns them.
        fn commit(&self, n: usize) -> Vec<Event> {
            let mut log = self.events.lock().unwrap();
            let out: Vec<Event> = (0..n)
                .map(|_| Event {
                    tenant: acme(),
                    id: self.head.fetch_add(1, Ordering::SeqCst) + 1,
                    kind: EventKind::MessageNew,
                    route: Route::default(),
                    data: "{}".into(),
                })
                .collect();
            log.extend(out.iter().cloned());
            let excess = log.len().saturating_sub(self.retention);
            log.drain(..excess);
            out
        }

        fn check(&self) -> StoreResult<()> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl EventLog for MemLog {
        async fn head(&self, _tenant: &TenantId) -> StoreResult<u64> {
            self.check()?;
            Ok(self.head.load(Ordering::SeqCst))
        }

        async fn events_after(&self, _tenant: &TenantId, after: u64, limit: usize) -> StoreResult<Replay> {
            self.check()?;
            let log = self.events.lock().unwrap();
            let head = self.head.load(Ordering::SeqCst);
            let oldest = log.first().map_or(head + 1, |e| e.id);
            if after > head || head - after > limit as u64 || oldest > after + 1 {
                return Ok(Replay::TooOld);
            }
            Ok(Replay::Events(log.iter().filter(|e| e.id > after).cloned().collect()))
        }
    }

    /// A transport that publishes nowhere: the test hands the router what a node receives.
    #[derive(Default)]
    struct Manual {
        connected: AtomicBool,
        published: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl PubSub for Manual {
        async fn subscribe(&self, _: u16) -> Result<(), PubSubError> {
            Ok(())
        }
        async fn unsubscribe(&self, _: u16) -> Result<(), PubSubError> {
            Ok(())
        }
        async fn publish(&self, _: u16, payload: &[u8]) -> Result<(), PubSubError> {
            self.published
                .lock()
                .unwrap()
                .push(String::from_utf8(payload.to_vec()).unwrap());
            Ok(())
        }
        async fn run(&self, _: &str, _: &redis::Pipeline) -> Result<redis::Value, PubSubError> {
            Err(PubSubError::Stopped)
        }
        async fn ping(&self) -> Result<(), PubSubError> {
            Ok(())
        }
        fn connected(&self) -> bool {
            self.connected.load(Ordering::SeqCst)
        }
    }

    /// The hub: what it was handed, in order, and how often it was told events were lost.
    #[derive(Default)]
    struct Hub {
        delivered: Mutex<Vec<u64>>,
        lost: AtomicUsize,
        arrived: tokio::sync::Notify,
        told: tokio::sync::Notify,
    }

    impl EventSink for Hub {
        fn deliver(&self, events: &[Arc<Event>]) {
            self.delivered.lock().unwrap().extend(events.iter().map(|e| e.id));
            self.arrived.notify_waiters();
        }
        fn lost(&self, _tenant: &TenantId) {
            self.lost.fetch_add(1, Ordering::SeqCst);
            self.told.notify_one();
        }
    }

    struct Rig {
        bus: RelayBus,
        publisher: RelayPublisher,
        router: Arc<Router>,
        transport: Arc<Manual>,
        log: Arc<MemLog>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    }

    async fn rig(retention: usize) -> Rig {
        let router = RelayBus::router();
        let transport = Arc::new(Manual::default());
        transport.connected.store(true, Ordering::SeqCst);
        let (log, hub, metrics) = (
            MemLog::new(retention),
            Arc::new(Hub::default()),
            Arc::new(Metrics::new()),
        );
        let (publisher, queue) = publisher(metrics.clone());
        let bus = RelayBus::start(
            router.clone(),
            transport.clone(),
            log.clone(),
            hub.clone(),
            metrics.clone(),
            queue,
        );
        bus.join(&acme()).await.expect("joined");
        Rig {
            bus,
            publisher,
            router,
            transport,
            log,
            hub,
            metrics,
        }
    }

    impl Rig {
        /// What a node receives: the batch of `events`.
        fn receive(&self, events: &[Event]) {
            self.router
                .message(partition_of(&acme()), Batch::encode(&acme(), events).into_bytes());
        }

        fn delivered(&self) -> Vec<u64> {
            self.hub.delivered.lock().unwrap().clone()
        }

        /// Waits (in the test's paused time) until the hub has `n` events; returns how long.
        async fn until_delivered(&self, n: usize) -> Duration {
            let started = tokio::time::Instant::now();
            while self.delivered().len() < n {
                let arrived = self.hub.arrived.notified();
                if self.delivered().len() >= n {
                    break;
                }
                tokio::time::timeout(Duration::from_secs(10), arrived)
                    .await
                    .unwrap_or_else(|_| panic!("delivered {:?}, expected {n} events", self.delivered()));
            }
            started.elapsed()
        }

        fn catch_ups(&self, reason: &str) -> u64 {
            self.metrics.catch_ups.with_label_values(&[reason]).get()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn published_batches_reach_the_hub_once_each_in_order() {
        let rig = rig(100).await;
        let (a, b) = (rig.log.commit(2), rig.log.commit(1));
        rig.publisher.publish(a.clone());
        rig.publisher.publish(b.clone());
        tokio::task::yield_now().await;
        let published = rig.transport.published.lock().unwrap().clone();
        // Queued together, published together (`publish_all`), in the order queued.
        assert_eq!(
            published,
            [Batch::encode(&acme(), &a), Batch::encode(&acme(), &b)],
            "one message per commit, in order"
        );
        for payload in &published {
            rig.router.message(partition_of(&acme()), payload.clone().into_bytes());
        }
        rig.receive(&a); // again: a duplicate
        rig.until_delivered(3).await;
        assert_eq!(rig.delivered(), [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_ahead_of_a_hole_waits_for_the_one_before_it() {
        let rig = rig(100).await;
        let (a, b) = (rig.log.commit(1), rig.log.commit(1));
        rig.receive(&b);
        tokio::task::yield_now().await;
        assert!(rig.delivered().is_empty(), "2 waits for 1");
        rig.receive(&a);
        rig.until_delivered(2).await;
        assert_eq!(rig.delivered(), [1, 2]);
        assert_eq!(rig.catch_ups("reorder"), 0, "filled by the late message, not the log");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hole_no_message_fills_is_filled_from_the_log() {
        let rig = rig(100).await;
        let (_lost, b) = (rig.log.commit(1), rig.log.commit(1));
        rig.receive(&b);
        let took = rig.until_delivered(2).await;
        assert_eq!(rig.delivered(), [1, 2]);
        assert_eq!(rig.catch_ups("reorder"), 1);
        assert!(
            took < CHECK_INTERVAL,
            "filled after a short wait, not at the head check: {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_that_never_comes_is_delivered_by_the_head_check_within_a_second() {
        let rig = rig(100).await;
        rig.log.commit(1); // the writer died before publishing
        let took = rig.until_delivered(1).await;
        assert_eq!(rig.delivered(), [1]);
        assert_eq!(rig.catch_ups("head"), 1);
        assert!(took <= Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_transport_is_down_every_head_check_delivers() {
        let rig = rig(100).await;
        rig.transport.connected.store(false, Ordering::SeqCst);
        for n in 1..=3 {
            rig.log.commit(1);
            let took = rig.until_delivered(n).await;
            assert!(took <= CHECK_INTERVAL, "event {n} after {took:?}");
        }
        assert_eq!(rig.delivered(), [1, 2, 3]);
        assert_eq!(rig.catch_ups("outage"), 3);
        // Back: the transport reports the gap, and live messages flow again, without repeats.
        rig.transport.connected.store(true, Ordering::SeqCst);
        rig.router.gap(&[partition_of(&acme())], Gap::Resubscribed);
        let e = rig.log.commit(1);
        rig.receive(&e);
        rig.until_delivered(4).await;
        assert_eq!(rig.delivered(), [1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_tenants_partition_is_interrupted_every_head_check_delivers() {
        // One shard of a cluster is away: the transport is up for the others.
        let rig = rig(100).await;
        rig.router.gap(&[partition_of(&acme())], Gap::Interrupted);
        rig.log.commit(1);
        let took = rig.until_delivered(1).await;
        assert!(took <= CHECK_INTERVAL, "{took:?}");
        assert_eq!(rig.catch_ups("outage"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_the_transport_reports_is_filled_from_the_log_at_once() {
        let rig = rig(100).await;
        rig.log.commit(2);
        rig.router.gap(&[partition_of(&acme())], Gap::Resubscribed);
        let took = rig.until_delivered(2).await;
        assert_eq!(rig.catch_ups("gap"), 1);
        assert!(took < CHECK_INTERVAL, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_trimmed_past_what_was_delivered_closes_the_tenants_sessions_to_resume() {
        let rig = rig(3).await;
        rig.log.commit(5); // 1 and 2 are trimmed before anything was delivered
        rig.router.gap(&[partition_of(&acme())], Gap::Resubscribed);
        tokio::time::timeout(Duration::from_secs(5), rig.hub.told.notified())
            .await
            .expect("the sessions are told");
        assert_eq!(rig.hub.lost.load(Ordering::SeqCst), 1);
        // Delivery goes on from the head.
        let e = rig.log.commit(1);
        rig.receive(&e);
        rig.until_delivered(1).await;
        assert_eq!(rig.delivered(), [6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_that_cannot_be_read_is_retried_until_it_can_and_nothing_is_lost() {
        let rig = rig(100).await;
        rig.log.down.store(true, Ordering::SeqCst);
        let (_lost, b) = (rig.log.commit(1), rig.log.commit(1));
        rig.receive(&b);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(rig.delivered().is_empty(), "2 waits for 1, which only the log has");
        rig.log.down.store(false, Ordering::SeqCst);
        rig.until_delivered(2).await;
        assert_eq!(rig.delivered(), [1, 2]);
        assert_eq!(rig.hub.lost.load(Ordering::SeqCst), 0, "sessions stayed open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_barrier_resolves_once_everything_committed_before_it_is_delivered() {
        let rig = rig(100).await;
        rig.log.commit(2);
        rig.bus.barrier(&acme()).await.expect("caught up");
        assert_eq!(rig.delivered(), [1, 2]);
        assert_eq!(rig.catch_ups("barrier"), 1);
    }

    #[test]
    fn a_batch_survives_the_wire_and_anything_else_is_no_batch() {
        let events = vec![Event {
            tenant: acme(),
            id: 7,
            kind: EventKind::ThreadRead,
            route: Route::default(),
            data: r#"{"thread_id":"t1","by":"u"}"#.into(),
        }];
        let (tenant, decoded) = Batch::decode(Batch::encode(&acme(), &events).as_bytes()).unwrap();
        assert_eq!(tenant, acme());
        assert_eq!(*decoded[0], events[0]);
        assert!(Batch::decode(b"not json").is_none());
        assert!(Batch::decode(br#"{"t":"acme","e":[{"id":"x"}]}"#).is_none());
    }
}
