//! The subscription state machine both transports share: which partitions are wanted, where
//! each one is subscribed, the subscription connections (one per node), and the gap reports.
//!
//! # One task owns the state
//! Every partition's state, every connection and the topology belong to one task (`Engine::
//! run`); the API sends it requests, the commands it starts report back to it, and the
//! connections' reading tasks only set flags and wake it. So a partition never has two
//! commands in flight, and nothing needs a lock held across an `.await`.
//!
//! # A subscription connection ("link")
//! A RESP3 `MultiplexedConnection` to one node, with a push sender: messages are handed to the
//! receiver right there, in the reading task, if the partition's *owner* (an atomic per
//! partition holding the id of the link whose messages count) is this link. So a message from
//! a link that no longer holds the partition (being replaced, or a late one after
//! `unsubscribe`) is dropped rather than delivered twice or out of turn. A link is never
//! repaired: on a disconnect, a failed PING, a command timeout or a reply that does not answer
//! the command, it is dropped and a new one (new id) is made; its partitions are lost (a gap
//! owed) and resubscribed on whatever link now serves them.
//!
//! Why not redis-rs's resubscription: the `ConnectionManager` replays what it saw confirmed
//! but cannot say when that is done, and the cluster connection replays all of a node's
//! sharded channels in ONE `SSUBSCRIBE` (CROSSSLOT as soon as two slots are involved) and
//! forgets a channel the server unsubscribed after a slot moved. Here every partition is
//! (re)subscribed with a command of its own (one channel, one slot) and confirmed before a
//! gap is reported.
//!
//! Why every reply is checked: redis-rs takes a server-sent `SUNSUBSCRIBE` (a slot moved away)
//! for the reply to the oldest command in flight on that connection (`PushKind::has_reply`),
//! so after one the replies may be off by one. Each command's reply is checked against the
//! command (a `ssubscribe` confirmation naming the channel, `PONG`); one that does not match
//! drops the link. The push itself is seen first, by the push sender.
//!
//! # Gaps
//! A partition whose confirmed subscription is lost (or whose `subscribe` timed out) owes a
//! gap; when it is confirmed again the gap is reported, in one batch with every other owed
//! partition whose resubscription was in flight. A wanted partition lost for longer than
//! `Tuning::interrupted_after` is reported `Interrupted` once per loss.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, ConnectionInfo, ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisError, ServerErrorKind,
    Value, aio::MultiplexedConnection,
};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tracing::{debug, info, warn};

use super::{
    Gap, PARTITIONS, PubSubError, Receiver, Tuning, check_partition, partition,
    topology::{NodeAddr, Topology},
};

const N: usize = PARTITIONS as usize;

/// First retry delay after a failed attempt; doubles up to `Tuning::max_backoff`.
const BACKOFF_BASE: Duration = Duration::from_millis(20);
/// Requests the API may queue for the engine before callers wait.
const REQUEST_QUEUE: usize = 1024;
/// Completions of the engine's commands: at most one command per partition, one connect and
/// one PING per link and one topology read are in flight, so this never fills.
const DONE_QUEUE: usize = 4 * N + 16;

/// Plain pub/sub (a single Redis) or sharded pub/sub (a cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    Plain,
    Sharded,
}

impl Flavor {
    fn subscribe(self) -> &'static str {
        match self {
            Flavor::Plain => "SUBSCRIBE",
            Flavor::Sharded => "SSUBSCRIBE",
        }
    }

    fn unsubscribe(self) -> &'static str {
        match self {
            Flavor::Plain => "UNSUBSCRIBE",
            Flavor::Sharded => "SUNSUBSCRIBE",
        }
    }

    fn message(self) -> PushKind {
        match self {
            Flavor::Plain => PushKind::Message,
            Flavor::Sharded => PushKind::SMessage,
        }
    }

    fn subscribed(self) -> PushKind {
        match self {
            Flavor::Plain => PushKind::Subscribe,
            Flavor::Sharded => PushKind::SSubscribe,
        }
    }

    fn unsubscribed(self) -> PushKind {
        match self {
            Flavor::Plain => PushKind::Unsubscribe,
            Flavor::Sharded => PushKind::SUnsubscribe,
        }
    }
}

/// Where the nodes are and how to learn the topology.
pub(super) enum Source {
    /// One server, which owns every slot; `info` reaches it.
    Single { info: ConnectionInfo },
    /// A cluster: `template` (credentials, protocol) is used for every node; `seeds` are asked
    /// for the topology when no known node answers.
    Cluster {
        template: ConnectionInfo,
        seeds: Vec<NodeAddr>,
    },
}

impl Source {
    fn connection_info(&self, node: &NodeAddr) -> ConnectionInfo {
        let info = match self {
            Source::Single { info, .. } => info.clone(),
            Source::Cluster { template, .. } => template
                .clone()
                .set_addr(redis::ConnectionAddr::Tcp(node.host.clone(), node.port)),
        };
        // Subscriptions and their replies share the connection only on RESP3, where messages
        // come as pushes.
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        info.set_redis_settings(resp3)
    }
}

/// What the API, the links' reading tasks and the engine share.
pub(super) struct Shared {
    prefix: String,
    receiver: Arc<dyn Receiver>,
    flavor: Flavor,
    /// Per partition, the id of the link whose messages are delivered; 0 for none.
    owner: [AtomicU64; N],
    connected: AtomicBool,
    /// Wakes the engine: a link's flags changed.
    wake: Notify,
}

/// What a link's reading task tells the engine, without blocking: flags it reads on waking.
#[derive(Default)]
struct Signals {
    /// The connection dropped.
    dead: AtomicBool,
    /// Partitions the server confirmed unsubscribed (ours, or the server's after a slot moved).
    /// Bounded by the number of partitions.
    dropped: Mutex<BTreeSet<u16>>,
}

/// A request of the API.
enum Request {
    Subscribe(u16, oneshot::Sender<Result<(), PubSubError>>),
    Unsubscribe(u16, oneshot::Sender<()>),
}

/// A command of the engine, finished.
enum Done {
    Connected {
        node: NodeAddr,
        link: u64,
        result: Result<MultiplexedConnection, RedisError>,
    },
    Subscribed {
        partition: u16,
        op: u64,
        result: Result<(), OpError>,
    },
    Unsubscribed {
        partition: u16,
        op: u64,
        result: Result<(), OpError>,
    },
    Pinged {
        link: u64,
        result: Result<(), OpError>,
    },
    Topology {
        started: Instant,
        result: Result<Topology, String>,
    },
}

/// Why a command on a link failed, and so what to do about it.
#[derive(Debug)]
enum OpError {
    /// MOVED: another node serves the slot (its address).
    Moved(NodeAddr),
    /// Any other error answer (ASK, TRYAGAIN, CLUSTERDOWN, …): the link is fine, retry later.
    Refused(String),
    /// No answer in time, a connection error, or an answer that is not the command's: the
    /// link is no good.
    Link(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Subscribing { link: u64, op: u64 },
    Subscribed { link: u64, since: Instant },
    Unsubscribing { link: u64, op: u64 },
}

/// One partition, as the engine sees it.
struct Part {
    /// The API asked for it (and has not given it up).
    wanted: bool,
    state: State,
    /// `subscribe` calls waiting for the confirmation, with their deadlines.
    waiters: Vec<(oneshot::Sender<Result<(), PubSubError>>, Instant)>,
    unsubscribers: Vec<oneshot::Sender<()>>,
    /// A gap is to be reported once it is confirmed again.
    owes_gap: bool,
    /// When its confirmed subscription was lost (for `Gap::Interrupted`).
    lost_at: Option<Instant>,
    interrupted_reported: bool,
    /// The node a MOVED named: tried before the topology's owner.
    hint: Option<NodeAddr>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Part {
    fn new() -> Part {
        Part {
            wanted: false,
            state: State::Idle,
            waiters: Vec::new(),
            unsubscribers: Vec::new(),
            owes_gap: false,
            lost_at: None,
            interrupted_reported: false,
            hint: None,
            failures: 0,
            retry_at: None,
        }
    }
}

struct Link {
    id: u64,
    /// `None` while connecting.
    conn: Option<MultiplexedConnection>,
    signals: Arc<Signals>,
    next_ping: Instant,
    pinging: bool,
}

/// Reconnection attempts to one node.
struct Backoff {
    failures: u32,
    retry_at: Instant,
}

/// Topology reads.
struct Refresh {
    /// Whether a read is in flight.
    running: bool,
    /// Something suggested the topology changed: read it as soon as allowed.
    due: bool,
    next_periodic: Instant,
    not_before: Instant,
    failures: u32,
    /// When the topology in use was asked for.
    fetched: Option<Instant>,
}

/// The API's handle on the engine task; dropping it stops the task.
pub(super) struct Handle {
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Handle {
    /// Starts the engine for `source`, with `topology` as first known.
    pub(super) fn start(
        source: Source,
        topology: Topology,
        prefix: &str,
        flavor: Flavor,
        receiver: Arc<dyn Receiver>,
        tuning: Tuning,
    ) -> Handle {
        let shared = Arc::new(Shared {
            prefix: prefix.to_owned(),
            receiver,
            flavor,
            owner: std::array::from_fn(|_| AtomicU64::new(0)),
            connected: AtomicBool::new(true),
            wake: Notify::new(),
        });
        let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
        let (done_tx, done) = mpsc::channel(DONE_QUEUE);
        let now = Instant::now();
        let periodic = matches!(source, Source::Cluster { .. });
        let engine = Engine {
            source,
            shared: shared.clone(),
            tuning: tuning.clone(),
            inbox,
            done,
            done_tx,
            parts: (0..N).map(|_| Part::new()).collect(),
            links: HashMap::new(),
            backoff: HashMap::new(),
            topology,
            refresh: Refresh {
                running: false,
                due: false,
                next_periodic: if periodic {
                    now + tuning.refresh_interval
                } else {
                    far_future(now)
                },
                not_before: now,
                failures: 0,
                fetched: Some(now),
            },
            next_id: 1,
        };
        let task = tokio::spawn(engine.run());
        Handle { requests, shared, task }
    }

    pub(super) async fn subscribe(&self, partition: u16) -> Result<(), PubSubError> {
        check_partition(partition)?;
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Subscribe(partition, tx))
            .await
            .map_err(|_| PubSubError::Stopped)?;
        rx.await.map_err(|_| PubSubError::Stopped)?
    }

    pub(super) async fn unsubscribe(&self, partition: u16) -> Result<(), PubSubError> {
        check_partition(partition)?;
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Unsubscribe(partition, tx))
            .await
            .map_err(|_| PubSubError::Stopped)?;
        rx.await.map_err(|_| PubSubError::Stopped)
    }

    pub(super) fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Engine {
    source: Source,
    shared: Arc<Shared>,
    tuning: Tuning,
    inbox: mpsc::Receiver<Request>,
    done: mpsc::Receiver<Done>,
    done_tx: mpsc::Sender<Done>,
    parts: Vec<Part>,
    links: HashMap<NodeAddr, Link>,
    backoff: HashMap<NodeAddr, Backoff>,
    topology: Topology,
    refresh: Refresh,
    /// Ids of links and commands: never reused, so a late report is recognised as stale.
    next_id: u64,
}

impl Engine {
    async fn run(mut self) {
        loop {
            // Flags first: a server's unsubscribe confirmation is flagged before the command
            // that asked for it reports done, so it is matched to that command here.
            self.take_signals();
            let now = Instant::now();
            self.step(now);
            let wake_at = self.next_wake(now);
            tokio::select! {
                biased;
                Some(done) = self.done.recv() => self.on_done(done),
                request = self.inbox.recv() => match request {
                    Some(request) => self.on_request(request),
                    // The transport was dropped.
                    None => return,
                },
                _ = self.shared.wake.notified() => {}
                _ = sleep_until(wake_at) => {}
            }
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Subscribe(p, reply) => {
                let part = &mut self.parts[usize::from(p)];
                part.wanted = true;
                if matches!(part.state, State::Subscribed { .. }) {
                    let _ = reply.send(Ok(()));
                } else {
                    part.waiters
                        .push((reply, Instant::now() + self.tuning.subscribe_timeout));
                }
            }
            Request::Unsubscribe(p, reply) => {
                self.shared.owner[usize::from(p)].store(0, Ordering::Release);
                let part = &mut self.parts[usize::from(p)];
                part.wanted = false;
                part.owes_gap = false;
                part.lost_at = None;
                part.interrupted_reported = false;
                part.hint = None;
                part.retry_at = None;
                part.failures = 0;
                for (waiter, _) in part.waiters.drain(..) {
                    // The caller gave it up before it was confirmed.
                    let _ = waiter.send(Err(PubSubError::Stopped));
                }
                match part.state {
                    State::Idle => {
                        let _ = reply.send(());
                    }
                    // Answered when the UNSUBSCRIBE is (sent by `step`, or after the
                    // SUBSCRIBE in flight is done).
                    _ => part.unsubscribers.push(reply),
                }
            }
        }
    }

    /// Reads the flags the links' reading tasks set.
    fn take_signals(&mut self) {
        let mut dead = Vec::new();
        let mut dropped = Vec::new();
        for (node, link) in &self.links {
            if link.signals.dead.load(Ordering::Acquire) {
                dead.push(node.clone());
                continue;
            }
            // unwrap: the lock is only held for short, non-panicking sections.
            let mut set = link.signals.dropped.lock().unwrap();
            if !set.is_empty() {
                dropped.push((link.id, std::mem::take(&mut *set)));
            }
        }
        for node in dead {
            self.drop_link(&node, "the connection closed");
        }
        let now = Instant::now();
        let mut moved = false;
        for (link, partitions) in dropped {
            for p in partitions {
                let part = &mut self.parts[usize::from(p)];
                match part.state {
                    State::Subscribed { link: l, .. } | State::Subscribing { link: l, .. } if l == link => {
                        // Not asked for: the server let go of the channel (its slot moved).
                        self.shared.owner[usize::from(p)].store(0, Ordering::Release);
                        part.state = State::Idle;
                        part.owes_gap = true;
                        part.lost_at.get_or_insert(now);
                        part.hint = None;
                        moved = true;
                        info!(
                            partition = p,
                            "the server unsubscribed a partition (its slot moved): resubscribing"
                        );
                    }
                    // Our own UNSUBSCRIBE's confirmation (its command reports done next), or
                    // news of a link already left.
                    _ => {}
                }
            }
        }
        if moved {
            self.refresh.due = true;
        }
    }

    /// Starts what the state calls for, answers what is due, reports gaps.
    fn step(&mut self, now: Instant) {
        self.expire_waiters(now);
        self.ping_links(now);
        self.maybe_refresh(now);
        for p in 0..PARTITIONS {
            self.drive(p, now);
        }
        self.report_gaps(now);
        // A node that could not be reached counts only while something is wanted: nothing
        // retries it otherwise.
        let wanted = self.parts.iter().any(|p| p.wanted);
        let connected =
            (self.backoff.is_empty() || !wanted) && self.parts.iter().all(|p| !p.wanted || p.lost_at.is_none());
        self.shared.connected.store(connected, Ordering::Release);
    }

    fn expire_waiters(&mut self, now: Instant) {
        for part in &mut self.parts {
            if part.waiters.iter().all(|(_, deadline)| *deadline > now) {
                continue;
            }
            let (expired, waiting): (Vec<_>, Vec<_>) =
                part.waiters.drain(..).partition(|(_, deadline)| *deadline <= now);
            part.waiters = waiting;
            for (waiter, _) in expired {
                let _ = waiter.send(Err(PubSubError::Timeout));
            }
            // Those callers were told it failed: if it succeeds after all, they hear of it as
            // a gap.
            part.owes_gap = true;
        }
    }

    fn ping_links(&mut self, now: Instant) {
        let due: Vec<(u64, MultiplexedConnection)> = self
            .links
            .values_mut()
            .filter(|l| !l.pinging && l.next_ping <= now)
            .filter_map(|l| {
                let conn = l.conn.clone()?;
                l.pinging = true;
                Some((l.id, conn))
            })
            .collect();
        for (link, mut conn) in due {
            let done = self.done_tx.clone();
            let limit = self.tuning.command_timeout;
            tokio::spawn(async move {
                let result = match command(limit, &mut conn, &redis::cmd("PING")).await {
                    Ok(Value::SimpleString(s)) if s == "PONG" => Ok(()),
                    Ok(other) => Err(OpError::Link(format!("PING answered with {other:?}"))),
                    Err(e) => Err(e),
                };
                let _ = done.send(Done::Pinged { link, result }).await;
            });
        }
    }

    fn maybe_refresh(&mut self, now: Instant) {
        let Source::Cluster { seeds, .. } = &self.source else {
            return;
        };
        let r = &mut self.refresh;
        if r.running || now < r.not_before || !(r.due || now >= r.next_periodic) {
            return;
        }
        r.running = true;
        r.due = false;
        // Nodes with a live link first (they answer), then every node known, then the seeds.
        let mut candidates: Vec<NodeAddr> = self
            .links
            .iter()
            .filter(|(_, l)| l.conn.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for n in self.topology.nodes().iter().chain(seeds) {
            if !candidates.contains(n) {
                candidates.push(n.clone());
            }
        }
        let infos: Vec<ConnectionInfo> = candidates.iter().map(|n| self.source.connection_info(n)).collect();
        let done = self.done_tx.clone();
        let limit = self.tuning.command_timeout;
        tokio::spawn(async move {
            let result = read_topology(&infos, limit).await;
            let _ = done.send(Done::Topology { started: now, result }).await;
        });
    }

    /// Moves partition `p` one step towards where it should be.
    fn drive(&mut self, p: u16, now: Instant) {
        let i = usize::from(p);
        let part = &self.parts[i];
        match (part.wanted, part.state) {
            (false, State::Subscribed { link, .. }) => {
                let Some((_, conn)) = self.link_by_id(link) else {
                    self.parts[i].state = State::Idle;
                    self.answer_unsubscribers(p);
                    return;
                };
                let op = self.id();
                self.parts[i].state = State::Unsubscribing { link, op };
                self.spawn_unsubscribe(p, op, conn);
            }
            (false, State::Idle) => self.answer_unsubscribers(p),
            (true, State::Idle) => {
                if part.retry_at.is_some_and(|at| at > now) {
                    return;
                }
                let target = match &part.hint {
                    Some(hint) => Some(hint.clone()),
                    None => self.topology.owner(partition::slot_of_partition(p)).cloned(),
                };
                let Some(node) = target else {
                    // No node serves the slot (as far as we know): ask again.
                    self.refresh.due = true;
                    return;
                };
                let Some(conn) = self.link_to(&node, now) else {
                    // Connecting, or waiting to retry: `on_done` gets back here.
                    return;
                };
                let (link, conn) = conn;
                let op = self.id();
                self.shared.owner[i].store(link, Ordering::Release);
                self.parts[i].state = State::Subscribing { link, op };
                self.spawn_subscribe(p, op, conn);
            }
            (true, State::Subscribed { link, since }) => {
                // The safety net for a move nobody told us about: the topology, read after the
                // subscription was confirmed, names another owner.
                if part.hint.is_some() || self.refresh.fetched.is_none_or(|f| f <= since) {
                    return;
                }
                let Some(owner) = self.topology.owner(partition::slot_of_partition(p)) else {
                    return;
                };
                let Some((node, conn)) = self.link_by_id(link) else {
                    return;
                };
                if *owner == node {
                    return;
                }
                info!(partition = p, from = %node, to = %owner, "the topology moved a partition: resubscribing");
                self.shared.owner[i].store(0, Ordering::Release);
                let part = &mut self.parts[i];
                part.state = State::Idle;
                part.owes_gap = true;
                part.lost_at.get_or_insert(now);
                // Best effort, answered to no one: the link is not ours for this partition now.
                let op = self.id();
                self.spawn_unsubscribe(p, op, conn);
            }
            // A command is in flight: its report decides.
            (_, State::Subscribing { .. } | State::Unsubscribing { .. }) => {}
        }
    }

    /// The link to `node` if it is up; else starts connecting (unless waiting to retry).
    fn link_to(&mut self, node: &NodeAddr, now: Instant) -> Option<(u64, MultiplexedConnection)> {
        if let Some(link) = self.links.get(node) {
            return link.conn.clone().map(|c| (link.id, c));
        }
        if self.backoff.get(node).is_some_and(|b| b.retry_at > now) {
            return None;
        }
        let id = self.id();
        let signals = Arc::new(Signals::default());
        self.links.insert(
            node.clone(),
            Link {
                id,
                conn: None,
                signals: signals.clone(),
                next_ping: now + self.tuning.health_interval,
                pinging: false,
            },
        );
        let info = self.source.connection_info(node);
        let shared = self.shared.clone();
        let done = self.done_tx.clone();
        let limit = self.tuning.command_timeout;
        let node = node.clone();
        debug!(%node, link = id, "opening a subscription connection");
        tokio::spawn(async move {
            let result = open_link(info, id, shared, signals, limit).await;
            let _ = done.send(Done::Connected { node, link: id, result }).await;
        });
        None
    }

    fn link_by_id(&self, id: u64) -> Option<(NodeAddr, MultiplexedConnection)> {
        self.links
            .iter()
            .find(|(_, l)| l.id == id)
            .and_then(|(n, l)| Some((n.clone(), l.conn.clone()?)))
    }

    fn spawn_subscribe(&self, p: u16, op: u64, mut conn: MultiplexedConnection) {
        let flavor = self.shared.flavor;
        let channel = partition::channel(&self.shared.prefix, p);
        let done = self.done_tx.clone();
        let limit = self.tuning.command_timeout;
        tokio::spawn(async move {
            let cmd = redis::cmd(flavor.subscribe()).arg(&channel).clone();
            let result = match command(limit, &mut conn, &cmd).await {
                Ok(reply) if confirms(&reply, flavor.subscribed(), &channel) => Ok(()),
                Ok(other) => Err(OpError::Link(format!("{} answered with {other:?}", flavor.subscribe()))),
                Err(e) => Err(e),
            };
            let _ = done
                .send(Done::Subscribed {
                    partition: p,
                    op,
                    result,
                })
                .await;
        });
    }

    fn spawn_unsubscribe(&self, p: u16, op: u64, mut conn: MultiplexedConnection) {
        let flavor = self.shared.flavor;
        let channel = partition::channel(&self.shared.prefix, p);
        let done = self.done_tx.clone();
        let limit = self.tuning.command_timeout;
        tokio::spawn(async move {
            let cmd = redis::cmd(flavor.unsubscribe()).arg(&channel).clone();
            let result = match command(limit, &mut conn, &cmd).await {
                Ok(reply) if confirms(&reply, flavor.unsubscribed(), &channel) => Ok(()),
                Ok(other) => Err(OpError::Link(format!(
                    "{} answered with {other:?}",
                    flavor.unsubscribe()
                ))),
                Err(e) => Err(e),
            };
            let _ = done
                .send(Done::Unsubscribed {
                    partition: p,
                    op,
                    result,
                })
                .await;
        });
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Connected { node, link, result } => {
                let Some(l) = self.links.get_mut(&node).filter(|l| l.id == link) else {
                    return;
                };
                match result {
                    Ok(conn) => {
                        debug!(%node, link, "subscription connection open");
                        l.conn = Some(conn);
                        self.backoff.remove(&node);
                    }
                    Err(e) => {
                        self.links.remove(&node);
                        let b = self.backoff.entry(node.clone()).or_insert(Backoff {
                            failures: 0,
                            retry_at: now,
                        });
                        b.failures += 1;
                        b.retry_at = now + backoff(b.failures, self.tuning.max_backoff);
                        if b.failures == 1 {
                            warn!(%node, error = %e, "cannot reach a Redis node for subscriptions; retrying");
                        } else {
                            debug!(%node, error = %e, failures = b.failures, "still cannot reach a Redis node");
                        }
                        // Perhaps it is gone for good (a failover): look again.
                        self.refresh.due = true;
                    }
                }
            }
            Done::Subscribed {
                partition: p,
                op,
                result,
            } => {
                let i = usize::from(p);
                let State::Subscribing { link, op: current } = self.parts[i].state else {
                    return;
                };
                if current != op {
                    return;
                }
                match result {
                    Ok(()) => {
                        let part = &mut self.parts[i];
                        part.state = State::Subscribed { link, since: now };
                        part.hint = None;
                        part.failures = 0;
                        part.retry_at = None;
                        for (waiter, _) in part.waiters.drain(..) {
                            let _ = waiter.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        self.shared.owner[i].store(0, Ordering::Release);
                        self.parts[i].state = State::Idle;
                        self.failed(p, link, e, now);
                    }
                }
            }
            Done::Unsubscribed {
                partition: p,
                op,
                result,
            } => {
                let i = usize::from(p);
                let State::Unsubscribing { link, op: current } = self.parts[i].state else {
                    return;
                };
                if current != op {
                    return;
                }
                self.parts[i].state = State::Idle;
                self.answer_unsubscribers(p);
                if let Err(e) = result {
                    self.failed(p, link, e, now);
                }
            }
            Done::Pinged { link, result } => {
                let Some((node, l)) = self.links.iter_mut().find(|(_, l)| l.id == link) else {
                    return;
                };
                l.pinging = false;
                l.next_ping = now + self.tuning.health_interval;
                if let Err(e) = result {
                    let node = node.clone();
                    self.drop_link(&node, &format!("PING failed: {e:?}"));
                }
            }
            Done::Topology { started, result } => {
                self.refresh.running = false;
                match result {
                    Ok(topology) => {
                        if topology != self.topology {
                            info!(nodes = topology.nodes().len(), "the cluster topology changed");
                        }
                        self.topology = topology;
                        self.refresh.fetched = Some(started);
                        self.refresh.failures = 0;
                        self.refresh.not_before = now;
                        self.refresh.next_periodic = now + self.tuning.refresh_interval;
                        self.retire_links();
                    }
                    Err(e) => {
                        self.refresh.failures += 1;
                        self.refresh.due = true;
                        self.refresh.not_before = now + backoff(self.refresh.failures, self.tuning.max_backoff);
                        if self.refresh.failures == 1 {
                            warn!(error = %e, "cannot read the cluster topology; retrying");
                        }
                    }
                }
            }
        }
    }

    /// A command on `link` for partition `p` failed: decide what it says about the link and
    /// when to try again.
    fn failed(&mut self, p: u16, link: u64, e: OpError, now: Instant) {
        let i = usize::from(p);
        let part = &mut self.parts[i];
        part.failures += 1;
        part.retry_at = Some(now + backoff(part.failures, self.tuning.max_backoff));
        match e {
            OpError::Moved(node) => {
                debug!(partition = p, %node, "MOVED: subscribing where the server says");
                // Where the slot went is known: go there at once, unless the nodes keep sending
                // each other's way (mid-migration), which the backoff then paces.
                if part.failures == 1 {
                    part.retry_at = None;
                }
                part.hint = Some(node);
                self.refresh.due = true;
            }
            OpError::Refused(e) => {
                if part.failures == 1 {
                    warn!(partition = p, error = %e, "Redis refused a subscription command; retrying");
                }
                part.hint = None;
                self.refresh.due = true;
            }
            OpError::Link(e) => {
                if let Some((node, _)) = self.links.iter().find(|(_, l)| l.id == link) {
                    let node = node.clone();
                    self.drop_link(&node, &e);
                }
            }
        }
    }

    /// Drops the link to `node`; its partitions are lost and will be resubscribed.
    fn drop_link(&mut self, node: &NodeAddr, why: &str) {
        let Some(link) = self.links.remove(node) else {
            return;
        };
        let now = Instant::now();
        let mut lost = Vec::new();
        for p in 0..PARTITIONS {
            let part = &mut self.parts[usize::from(p)];
            let on_link = match part.state {
                State::Subscribed { link: l, .. } => {
                    if l == link.id {
                        part.owes_gap = true;
                        part.lost_at.get_or_insert(now);
                        lost.push(p);
                    }
                    l == link.id
                }
                State::Subscribing { link: l, .. } | State::Unsubscribing { link: l, .. } => l == link.id,
                State::Idle => false,
            };
            if on_link {
                self.shared.owner[usize::from(p)].store(0, Ordering::Release);
                part.state = State::Idle;
                if !part.wanted {
                    // Gone with the connection: nothing left to unsubscribe.
                    for reply in part.unsubscribers.drain(..) {
                        let _ = reply.send(());
                    }
                }
            }
        }
        if link.conn.is_some() {
            warn!(%node, link = link.id, reason = why, lost = ?lost, "a subscription connection is gone; resubscribing its partitions");
        }
        self.refresh.due = true;
    }

    /// Drops links to nodes that own no slot any more and hold nothing.
    fn retire_links(&mut self) {
        let owners: BTreeSet<NodeAddr> = (0..PARTITIONS)
            .filter_map(|p| self.topology.owner(partition::slot_of_partition(p)).cloned())
            .collect();
        let busy: BTreeSet<u64> = self
            .parts
            .iter()
            .filter_map(|p| match p.state {
                State::Idle => None,
                State::Subscribing { link, .. }
                | State::Subscribed { link, .. }
                | State::Unsubscribing { link, .. } => Some(link),
            })
            .collect();
        self.links
            .retain(|node, link| owners.contains(node) || busy.contains(&link.id));
        self.backoff.retain(|node, _| owners.contains(node));
    }

    fn answer_unsubscribers(&mut self, p: u16) {
        for reply in self.parts[usize::from(p)].unsubscribers.drain(..) {
            let _ = reply.send(());
        }
    }

    fn report_gaps(&mut self, now: Instant) {
        // Resubscribed: once no owed partition's resubscription is still in flight, so that
        // one loss makes one report.
        let in_flight = self
            .parts
            .iter()
            .any(|p| p.wanted && p.owes_gap && matches!(p.state, State::Subscribing { .. }));
        if !in_flight {
            let back: Vec<u16> = (0..PARTITIONS)
                .filter(|p| {
                    let part = &self.parts[usize::from(*p)];
                    part.wanted && part.owes_gap && matches!(part.state, State::Subscribed { .. })
                })
                .collect();
            if !back.is_empty() {
                for p in &back {
                    let part = &mut self.parts[usize::from(*p)];
                    part.owes_gap = false;
                    part.lost_at = None;
                    part.interrupted_reported = false;
                }
                info!(partitions = ?back, "partitions subscribed again: reporting a gap");
                self.shared.receiver.gap(&back, Gap::Resubscribed);
            }
        }
        let down: Vec<u16> = (0..PARTITIONS)
            .filter(|p| {
                let part = &self.parts[usize::from(*p)];
                part.wanted
                    && !part.interrupted_reported
                    && !matches!(part.state, State::Subscribed { .. })
                    && part.lost_at.is_some_and(|at| at + self.tuning.interrupted_after <= now)
            })
            .collect();
        if !down.is_empty() {
            for p in &down {
                self.parts[usize::from(*p)].interrupted_reported = true;
            }
            warn!(partitions = ?down, "partitions still not subscribed again: reporting them interrupted");
            self.shared.receiver.gap(&down, Gap::Interrupted);
        }
    }

    /// The next moment something is due (a deadline, a retry, a PING); at most a second
    /// ahead, and never in the past (what is due now was started by `step`).
    fn next_wake(&self, now: Instant) -> Instant {
        let mut at = now + Duration::from_secs(1);
        let mut consider = |t: Instant| {
            if t > now && t < at {
                at = t;
            }
        };
        for part in &self.parts {
            part.waiters.iter().for_each(|(_, d)| consider(*d));
            if let Some(r) = part.retry_at {
                consider(r);
            }
            if let (Some(l), false) = (part.lost_at, part.interrupted_reported) {
                consider(l + self.tuning.interrupted_after);
            }
        }
        for link in self.links.values() {
            consider(link.next_ping);
        }
        for b in self.backoff.values() {
            consider(b.retry_at);
        }
        if !self.refresh.running {
            consider(self.refresh.not_before);
            consider(self.refresh.next_periodic);
        }
        at
    }
}

/// Opens link `id`: a RESP3 connection whose pushes go to `route`.
async fn open_link(
    info: ConnectionInfo,
    id: u64,
    shared: Arc<Shared>,
    signals: Arc<Signals>,
    limit: Duration,
) -> Result<MultiplexedConnection, RedisError> {
    let client = redis::Client::open(info)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit))
        .set_push_sender(move |push: PushInfo| {
            route(&shared, &signals, id, push);
            Ok::<(), std::convert::Infallible>(())
        });
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// A push of link `link`: a message goes to the receiver if the link holds its partition;
/// an unsubscribe or a disconnect is flagged for the engine. Runs in the connection's reading
/// task: no blocking, no awaiting.
fn route(shared: &Shared, signals: &Signals, link: u64, push: PushInfo) {
    let flavor = shared.flavor;
    if push.kind == flavor.message() {
        let mut data = push.data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) = (data.next(), data.next()) else {
            warn!("a pub/sub message without channel or payload");
            return;
        };
        let Some(p) = partition::partition_of_channel(&shared.prefix, &channel) else {
            return;
        };
        if shared.owner[usize::from(p)].load(Ordering::Acquire) == link {
            shared.receiver.message(p, payload);
        }
    } else if push.kind == flavor.unsubscribed() {
        let Some(Value::BulkString(channel)) = push.data.first() else {
            return;
        };
        if let Some(p) = partition::partition_of_channel(&shared.prefix, channel) {
            // unwrap: the lock is only held for short, non-panicking sections.
            signals.dropped.lock().unwrap().insert(p);
            shared.wake.notify_one();
        }
    } else if push.kind == PushKind::Disconnection {
        signals.dead.store(true, Ordering::Release);
        shared.wake.notify_one();
    }
}

/// Whether `reply` is the server's confirmation `kind` for `channel`.
fn confirms(reply: &Value, kind: PushKind, channel: &str) -> bool {
    match reply {
        Value::Push { kind: k, data } => {
            *k == kind && matches!(data.first(), Some(Value::BulkString(c)) if c == channel.as_bytes())
        }
        _ => false,
    }
}

/// Sends `cmd` on a link with a deadline, sorting the failure.
async fn command(limit: Duration, conn: &mut MultiplexedConnection, cmd: &redis::Cmd) -> Result<Value, OpError> {
    match tokio::time::timeout(limit, conn.send_packed_command(cmd)).await {
        Err(_) => Err(OpError::Link("no answer in time".into())),
        // An error answer comes back as a value (`send_packed_command` does not look inside).
        Ok(Ok(v)) => v.extract_error().map_err(sort),
        Ok(Err(e)) => Err(sort(e)),
    }
}

fn sort(e: RedisError) -> OpError {
    if let ErrorKind::Server(ServerErrorKind::Moved) = e.kind() {
        // `redirect_node` is (address, slot); the address is `host:port`.
        let node = e
            .redirect_node()
            .and_then(|(addr, _)| addr.rsplit_once(':'))
            .and_then(|(host, port)| Some((host, port.parse().ok()?)));
        if let Some((host, port)) = node {
            return OpError::Moved(NodeAddr {
                host: host.to_owned(),
                port,
            });
        }
    }
    match e.kind() {
        ErrorKind::Server(_) => OpError::Refused(e.to_string()),
        _ => OpError::Link(e.to_string()),
    }
}

/// Asks each of `candidates` in turn for `CLUSTER SHARDS`; the first answer wins.
async fn read_topology(candidates: &[ConnectionInfo], limit: Duration) -> Result<Topology, String> {
    let mut last = String::from("no node to ask");
    for info in candidates {
        let attempt = async {
            let client = redis::Client::open(info.clone()).map_err(|e| e.to_string())?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| e.to_string())?;
            let reply: Value = redis::cmd("CLUSTER")
                .arg("SHARDS")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Topology::from_shards(&reply)
        };
        match tokio::time::timeout(limit * 2, attempt).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(e)) => last = format!("{}: {e}", info.addr()),
            Err(_) => last = format!("{}: no answer in time", info.addr()),
        }
    }
    Err(last)
}

/// The delay before attempt `failures + 1`.
fn backoff(failures: u32, max: Duration) -> Duration {
    (BACKOFF_BASE * 2u32.saturating_pow(failures.saturating_sub(1).min(16))).min(max)
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(365 * 24 * 3600)
}

/// The first topology of a cluster: from the first of `seeds` that answers.
pub(super) async fn first_topology(
    template: &ConnectionInfo,
    seeds: &[NodeAddr],
    limit: Duration,
) -> Result<Topology, String> {
    let source = Source::Cluster {
        template: template.clone(),
        seeds: seeds.to_vec(),
    };
    let infos: Vec<ConnectionInfo> = seeds.iter().map(|n| source.connection_info(n)).collect();
    read_topology(&infos, limit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let max = Duration::from_secs(1);
        assert_eq!(backoff(1, max), Duration::from_millis(20));
        assert_eq!(backoff(2, max), Duration::from_millis(40));
        assert_eq!(backoff(6, max), Duration::from_millis(640));
        assert_eq!(backoff(7, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
    }

    #[test]
    fn only_the_commands_own_confirmation_confirms_it() {
        let push = |kind, ch: &str| Value::Push {
            kind,
            data: vec![Value::BulkString(ch.as_bytes().to_vec()), Value::Int(1)],
        };
        assert!(confirms(&push(PushKind::SSubscribe, "a"), PushKind::SSubscribe, "a"));
        assert!(!confirms(&push(PushKind::SSubscribe, "b"), PushKind::SSubscribe, "a"));
        // A server-sent SUNSUBSCRIBE taken for the reply to our SSUBSCRIBE.
        assert!(!confirms(&push(PushKind::SUnsubscribe, "a"), PushKind::SSubscribe, "a"));
        assert!(!confirms(&Value::Okay, PushKind::Subscribe, "a"));
    }

    #[test]
    fn moved_names_the_node_and_other_answers_keep_the_link() {
        let moved = RedisError::from((
            ErrorKind::Server(ServerErrorKind::Moved),
            "moved",
            "3999 127.0.0.1:7002".to_owned(),
        ));
        match sort(moved) {
            OpError::Moved(n) => assert_eq!(n.to_string(), "127.0.0.1:7002"),
            other => panic!("{other:?}"),
        }
        let ask = RedisError::from((
            ErrorKind::Server(ServerErrorKind::Ask),
            "ask",
            "3999 127.0.0.1:7002".to_owned(),
        ));
        assert!(matches!(sort(ask), OpError::Refused(_)));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(sort(io), OpError::Link(_)));
    }
}
