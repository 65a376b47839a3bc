//! The hub: this node's websocket sessions and the delivery of events to them.
//!
//! Sessions live in `DashMap`s keyed by (tenant, user), plus indexes by (tenant, location)
//! for subscribe-all sessions, by (tenant, resource) for followers of the drop-down, and by
//! tenant for service sessions. Delivery never waits on a session:
//! the frame is encoded once and `try_send` into each recipient's bounded queue; a full queue
//! (in items, or in bytes: the session's `Room`, shared by both its queues) closes that
//! session with 4008 (it resumes), and nobody else is slowed down. A batch of
//! events (what one commit published) is delivered session by session, in log order within
//! each: a recipient's frames of the batch enter its wire queue as one item, so its socket
//! wakes once and writes them together (`Hub::deliver_run`).
//!
//! # Direct delivery
//! A session has two queues (`outbox`): its wire queue (`Outgoing` frames, drained to the
//! socket by the edge) and its task's queue (`Deferred` items). While the session is in
//! *direct* mode (`Delivery::direct`), fan-out decides each event here, under the session's
//! state mutex, with the one decision `Delivery::decide` (skip what was written, write the
//! shared frame, write a count that follows from the anchor), and writes the frames straight
//! into the wire queue. Otherwise (before `hello`, during a replay, or from a count that needs
//! a store read on) the item goes to the task's queue; the task decides it through the same
//! `Delivery::decide`, in order, and re-enters direct mode, under the same mutex, only once
//! that queue is empty. The mutex keeps the order: the mode flag, `last_sent`, the anchor and
//! the pushes into either queue change together.
//!
//! The hub knows nothing of HTTP or of the session task: `session` drives a session through
//! `SessionHandle`, and the edge encodes `Outgoing` frames.
//!
//! `unread.count` costs no store read here either: the delta its logged data carries
//! (`event::count_delta`) is parsed once per event and queued with the id; each session adds
//! it to the count it holds (see `session`). Whatever changes which threads a session's count
//! covers (its `subscribe_all`, its locations) marks that session's count stale
//! (`SessionHandle::take_count_stale`), so that it reads the count again instead of adding to
//! one that no longer describes its view.
//!
//! Lock order: a session's state mutex may be held while a map shard is locked, never the
//! other way round; no guard of either kind is held across an `.await`.

use std::{
    collections::{HashMap, HashSet},
    mem,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    },
};

use bytestring::ByteString;
use dashmap::DashMap;
use flume::TrySendError;
use tokio::sync::{Notify, watch};

use self::outbox::{Decision, Deferred, Delivery, Outgoing, Room};
use crate::{
    bus::{
        Elsewhere, EventSink,
        presence::{Announcer, PresenceSink},
    },
    domain::{LocationId, SessionId, TenantId, ThreadId, UserId},
    event::{self, Event, EventKind},
    metrics::Metrics,
    presence::{Board, Due, Origin, Place, UserPresence},
    protocol::{self, Close},
    rules::{self, Recipient, Viewer},
};

pub mod outbox;

/// Room in a session's wire queue beyond `ws.queue_capacity`: what actix-ws's writer channel
/// used to hold behind the hub's queue, so that a client is closed as slow at the same point.
pub const WIRE_SLACK: usize = 32;

/// How much one session may have queued: items in each of its queues, and bytes in both.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    /// `ws.queue_capacity`.
    pub items: usize,
    /// `ws.queue_bytes`.
    pub bytes: usize,
}

/// What a session is, and what may change while it lives.
#[derive(Debug)]
pub struct SessionState {
    pub locations: Arc<[LocationId]>,
    pub subscribe_all: bool,
    /// Id of the event that last set `subscribe_all` (0: none yet).
    subscribe_all_event: u64,
    pub follow: Option<UserId>,
    /// Where delivery to the session stands (`outbox`).
    pub delivery: Delivery,
}

/// One session as the hub sees it.
pub struct SessionHandle {
    key: u64,
    pub id: SessionId,
    pub tenant: TenantId,
    pub user: UserId,
    pub is_service: bool,
    /// The session task's queue (outside direct mode).
    tx: flume::Sender<Deferred>,
    /// The wire queue: every frame the session writes, in order.
    pub wire: flume::Sender<Outgoing>,
    /// Bytes of frames queued, in the task's queue and the wire queue together.
    pub room: Room,
    state: Mutex<SessionState>,
    /// Woken when the hub wants the session closed (code in `kick_code`).
    pub kicked: Notify,
    kick_code: AtomicU16,
    /// Set when the threads the session's unread count covers changed (`subscribe_all`, the
    /// locations) or the count it holds may have missed a change: its next count is read.
    count_stale: AtomicBool,
}

impl AsRef<Room> for SessionHandle {
    fn as_ref(&self) -> &Room {
        &self.room
    }
}

impl SessionHandle {
    pub fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // unwrap: the lock is only held for short, non-panicking sections.
        self.state.lock().unwrap()
    }

    /// How the hub asked the session to close, if it did.
    pub fn kick_code(&self) -> Option<Close> {
        Close::from_code(self.kick_code.load(Ordering::Acquire))
    }

    /// Whether the session's count must be read again (see `count_stale`); clears the mark,
    /// so call it *before* the read: a change during the read marks it again.
    pub fn take_count_stale(&self) -> bool {
        self.count_stale.swap(false, Ordering::AcqRel)
    }

    /// Enters direct mode if the task's queue is empty (it is only filled under the state
    /// mutex, so it stays empty until delivery sees the flag). Returns whether it is direct.
    pub fn try_direct(&self, queue: &flume::Receiver<Deferred>) -> bool {
        let mut state = self.state();
        if !state.delivery.direct && queue.is_empty() {
            state.delivery.direct = true;
        }
        state.delivery.direct
    }

    /// Leaves direct mode: live events wait in the task's queue (a replay is being written).
    pub fn pause_direct(&self) {
        self.state().delivery.direct = false;
    }

    /// The one decision for a deferred item, taken by the session task (a count's stale
    /// mark is taken here, so a change during the read that follows marks it again).
    pub fn decide(&self, item: &Deferred) -> Decision {
        self.state()
            .delivery
            .decide(item, self.is_service, || self.take_count_stale())
    }

    fn mark_count_stale(&self) {
        self.count_stale.store(true, Ordering::Release);
    }

    fn kick(&self, close: Close) {
        if self
            .kick_code
            .compare_exchange(0, close.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.kicked.notify_one();
        }
    }
}

/// The sessions under one index key, by session key. Mostly one (a user on one device), held
/// without a map: a map per idle user was ~100 bytes of every session (W1).
enum Sessions {
    One(Arc<SessionHandle>),
    Many(HashMap<u64, Arc<SessionHandle>>),
}

impl Sessions {
    fn insert(&mut self, h: &Arc<SessionHandle>) {
        match self {
            Sessions::One(first) if first.key == h.key => *first = h.clone(),
            Sessions::One(first) => {
                let map = HashMap::from([(first.key, first.clone()), (h.key, h.clone())]);
                *self = Sessions::Many(map);
            }
            Sessions::Many(map) => {
                map.insert(h.key, h.clone());
            }
        }
    }

    /// Removes session `key`; returns whether none is left.
    fn remove(&mut self, key: u64) -> bool {
        match self {
            Sessions::One(h) => h.key == key,
            Sessions::Many(map) => {
                map.remove(&key);
                match map.len() {
                    0 => true,
                    1 => {
                        let last = map.values().next().expect("one left").clone();
                        *self = Sessions::One(last);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Sessions::One(_) => 1,
            Sessions::Many(map) => map.len(),
        }
    }

    fn values(&self) -> impl Iterator<Item = &Arc<SessionHandle>> {
        let (one, many) = match self {
            Sessions::One(h) => (Some(h), None),
            Sessions::Many(map) => (None, Some(map.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// What setting a session's `subscribe_all` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// A newer change was applied already; nothing changed.
    Superseded,
    /// The flag already had that value.
    Same,
    /// The flag changed.
    Changed,
}

/// A session just added: its handle, its task's queue and its wire queue.
pub type Registered = (Arc<SessionHandle>, flume::Receiver<Deferred>, flume::Receiver<Outgoing>);

pub struct Hub {
    next_key: AtomicU64,
    by_user: DashMap<(TenantId, UserId), Sessions>,
    subscribed: DashMap<(TenantId, LocationId), Sessions>,
    followers: DashMap<(TenantId, UserId), Sessions>,
    services: DashMap<TenantId, Sessions>,
    /// Per tenant, the newest event id delivery has looked at (see `open_view`).
    delivered: DashMap<TenantId, AtomicU64>,
    /// Every member (user, admin) session of a tenant, for presence frames; kept only for
    /// tenants that have used presence on this node (built from `by_user` at the first use),
    /// so that a tenant that never does costs nothing here.
    members: DashMap<TenantId, Sessions>,
    /// Who is where (`presence`), this node's sessions and what other nodes announced.
    board: Mutex<Board>,
    /// This node's name in `presence::Origin`: random, one per process.
    node: String,
    /// Told of every change of this node's presence (`announce_to`).
    announcer: OnceLock<Arc<dyn Announcer>>,
    count: watch::Sender<usize>,
    metrics: Arc<Metrics>,
}

fn insert<K: Eq + std::hash::Hash>(map: &DashMap<K, Sessions>, k: K, h: &Arc<SessionHandle>) {
    match map.entry(k) {
        dashmap::Entry::Occupied(mut o) => o.get_mut().insert(h),
        dashmap::Entry::Vacant(v) => {
            v.insert(Sessions::One(h.clone()));
        }
    }
}

fn remove<K: Eq + std::hash::Hash>(map: &DashMap<K, Sessions>, k: K, key: u64) {
    map.remove_if_mut(&k, |_, sessions| sessions.remove(key));
}

/// Appends the sessions under `k`; returns whether there were any.
fn collect<K: Eq + std::hash::Hash>(map: &DashMap<K, Sessions>, k: &K, into: &mut Vec<Arc<SessionHandle>>) -> bool {
    match map.get(k) {
        Some(sessions) => {
            into.extend(sessions.values().cloned());
            true
        }
        None => false,
    }
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Hub {
        Hub {
            next_key: AtomicU64::new(1),
            by_user: DashMap::new(),
            subscribed: DashMap::new(),
            followers: DashMap::new(),
            services: DashMap::new(),
            delivered: DashMap::new(),
            members: DashMap::new(),
            board: Mutex::new(Board::default()),
            node: uuid::Uuid::now_v7().simple().to_string(),
            announcer: OnceLock::new(),
            count: watch::channel(0).0,
            metrics,
        }
    }

    /// This node's name in presence (`presence::Origin::node`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sessions open on this node.
    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once no session is open.
    pub async fn until_empty(&self) {
        let mut rx = self.count.subscribe();
        // Err: the hub is gone, so there are no sessions either.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Adds a session; events committed from now on reach its queue. Returns the handle, the
    /// task's queue and the wire queue (`bounds.items` + `WIRE_SLACK` items, an item being a
    /// frame or the session's frames of one delivered batch; `bounds.bytes` in both); or,
    /// when the user already holds `max_per_user` sessions on this node, how many. The
    /// session starts outside direct mode.
    pub fn register(
        &self,
        tenant: TenantId,
        user: UserId,
        is_service: bool,
        locations: Arc<[LocationId]>,
        bounds: QueueBounds,
        max_per_user: usize,
    ) -> Result<Registered, usize> {
        // flume's bounded queues allocate as they fill (a tokio channel allocates a block of
        // 32 slots up front): an idle session holds ~1.5 KB less per queue (W1).
        let (tx, rx) = flume::bounded(bounds.items.max(1));
        let (wire, wire_rx) = flume::bounded(bounds.items.max(1) + WIRE_SLACK);
        let h = Arc::new(SessionHandle {
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
            id: SessionId::generate(),
            tenant: tenant.clone(),
            user: user.clone(),
            is_service,
            tx,
            wire,
            room: Room::new(bounds.bytes),
            state: Mutex::new(SessionState {
                locations,
                subscribe_all: false,
                subscribe_all_event: 0,
                follow: None,
                delivery: Delivery::default(),
            }),
            kicked: Notify::new(),
            kick_code: AtomicU16::new(0),
            count_stale: AtomicBool::new(false),
        });
        // Counted and inserted under the entry's shard lock: concurrent handshakes of one user
        // cannot both take the last place.
        match self.by_user.entry((tenant.clone(), user)) {
            dashmap::Entry::Occupied(mut o) => {
                let held = o.get().len();
                if held >= max_per_user {
                    return Err(held);
                }
                o.get_mut().insert(&h);
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Sessions::One(h.clone()));
            }
        }
        if is_service {
            insert(&self.services, tenant, &h);
        } else if let Some(mut members) = self.members.get_mut(&tenant) {
            members.insert(&h);
        }
        self.count.send_modify(|n| *n += 1);
        self.metrics.sessions.inc();
        Ok((h, rx, wire_rx))
    }

    pub fn unregister(self: &Arc<Self>, h: &Arc<SessionHandle>) {
        if !h.is_service {
            // A closed session is in no thread.
            self.set_presence(&h.tenant, self.origin(h), None);
        }
        let state = h.state();
        if state.subscribe_all {
            for l in state.locations.iter() {
                remove(&self.subscribed, (h.tenant.clone(), l.clone()), h.key);
            }
        }
        if let Some(f) = &state.follow {
            remove(&self.followers, (h.tenant.clone(), f.clone()), h.key);
        }
        drop(state);
        remove(&self.by_user, (h.tenant.clone(), h.user.clone()), h.key);
        if h.is_service {
            remove(&self.services, h.tenant.clone(), h.key);
        } else {
            remove(&self.members, h.tenant.clone(), h.key);
        }
        self.count.send_modify(|n| *n = n.saturating_sub(1));
        self.metrics.sessions.dec();
    }

    /// Asks every session on this node to close with `close` (the server is stopping).
    pub fn close_all(&self, close: Close) {
        for sessions in self.by_user.iter() {
            sessions.values().for_each(|h| h.kick(close));
        }
    }

    /// Asks every session of `tenant` on this node to close with `close`.
    pub fn close_tenant(&self, tenant: &TenantId, close: Close) {
        for sessions in self.by_user.iter().filter(|e| &e.key().0 == tenant) {
            for h in sessions.values() {
                h.kick(close);
            }
        }
    }

    /// Sets `subscribe_all` as of event `as_of`, unless a newer change was applied already.
    /// A change marks the session's count stale: it now covers other threads.
    pub fn set_subscribe_all(&self, h: &Arc<SessionHandle>, on: bool, as_of: u64) {
        if self.apply_subscribe_all(h, on, as_of) == Applied::Changed {
            h.mark_count_stale();
        }
    }

    /// Sets the `subscribe_all` of a session that is opening from the snapshot it read
    /// (`Store::session_start`: the flag, the count and the log's head `as_of`, read
    /// together), which is then the session's count anchor. Marks the count stale unless the
    /// anchor holds for every event after `as_of`: a newer change applied already, or the
    /// flag turned on after delivery looked at events past `as_of` (the session, not yet in
    /// the subscribers' index, may have missed a count that moved it).
    ///
    /// Returns whether delivery may have passed the session by: then the session catches up
    /// from the log (`session::Conn::open`), or a subscribe-all event committed between its
    /// snapshot and its joining the index would be lost.
    #[must_use]
    pub fn open_view(&self, h: &Arc<SessionHandle>, on: bool, as_of: u64) -> bool {
        let holds = match self.apply_subscribe_all(h, on, as_of) {
            Applied::Superseded => false,
            // `delivered` is raised before delivery looks the sessions up, and the lookup and
            // the insertion above meet on the index's shard lock: a delivery that missed this
            // session shows here.
            Applied::Changed if on => self.delivered_up_to(&h.tenant) <= as_of,
            _ => true,
        };
        if !holds {
            h.mark_count_stale();
        }
        !holds
    }

    fn apply_subscribe_all(&self, h: &Arc<SessionHandle>, on: bool, as_of: u64) -> Applied {
        let mut state = h.state();
        if state.subscribe_all_event > as_of {
            return Applied::Superseded;
        }
        state.subscribe_all_event = as_of;
        if state.subscribe_all == on {
            return Applied::Same;
        }
        state.subscribe_all = on;
        for l in state.locations.iter() {
            let k = (h.tenant.clone(), l.clone());
            if on {
                insert(&self.subscribed, k, h)
            } else {
                remove(&self.subscribed, k, h.key)
            }
        }
        Applied::Changed
    }

    /// The newest event id of `tenant` delivery has looked at on this node (0: none).
    fn delivered_up_to(&self, tenant: &TenantId) -> u64 {
        self.delivered.get(tenant).map_or(0, |d| d.load(Ordering::SeqCst))
    }

    /// Follows a resource's view (the drop-down), or stops with `None`.
    pub fn set_follow(&self, h: &Arc<SessionHandle>, resource: Option<UserId>) {
        let mut state = h.state();
        if let Some(old) = state.follow.take() {
            remove(&self.followers, (h.tenant.clone(), old), h.key);
        }
        if let Some(new) = &resource {
            insert(&self.followers, (h.tenant.clone(), new.clone()), h);
        }
        state.follow = resource;
    }

    /// Swaps in the locations of a refreshed token; other locations mark the session's count
    /// stale (it covers other threads).
    pub fn set_locations(self: &Arc<Self>, h: &Arc<SessionHandle>, locations: Arc<[LocationId]>) {
        let mut state = h.state();
        if state.locations[..] != locations[..] {
            h.mark_count_stale();
        }
        if state.subscribe_all {
            for l in state.locations.iter() {
                remove(&self.subscribed, (h.tenant.clone(), l.clone()), h.key);
            }
            for l in locations.iter() {
                insert(&self.subscribed, (h.tenant.clone(), l.clone()), h);
            }
        }
        let place = self.board().place_of(&h.tenant, &self.origin(h));
        let left = place.is_some_and(|(_, at)| !locations.contains(&at));
        state.locations = locations;
        drop(state);
        if left {
            // The session may no longer see where it was: it leaves at once (after the swap,
            // so that it does not see that frame either).
            self.set_presence(&h.tenant, self.origin(h), None);
        }
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        // unwrap: the lock is only held for short, non-panicking sections.
        self.board.lock().unwrap()
    }

    /// The presence name of this node's session `h`.
    pub fn origin(&self, h: &SessionHandle) -> Origin {
        Origin {
            node: self.node.clone(),
            session: h.key,
        }
    }

    /// A session of this node is now at `place`, or nowhere: the threads whose users this
    /// changes get their frame now, or at the end of their interval (`presence`), and the
    /// other nodes are told (`announce_to`). Never waits: a later frame is sent by a task of
    /// its own.
    pub fn set_presence(self: &Arc<Self>, tenant: &TenantId, origin: Origin, place: Option<Place>) {
        let now = tokio::time::Instant::now();
        let due = self.board().set(tenant, origin, place, now);
        if let Some(announcer) = self.announcer.get() {
            announcer.changed(tenant);
        }
        self.send_due(tenant, due, now);
    }

    /// From now on, every change of this node's presence is told to `announcer` (the
    /// cluster's `bus::presence` relay; a single node has none).
    pub fn announce_to(&self, announcer: Arc<dyn Announcer>) {
        let _ = self.announcer.set(announcer);
    }

    /// The threads of `tenant` at `locations` where someone is, with their users (`GET
    /// /api/v1/presence`): this node's own sessions as they are now, and `elsewhere` (what
    /// the other nodes last told), or what this node heard of them when that is `None`
    /// (Redis out of reach).
    pub fn presence_snapshot(
        &self,
        tenant: &TenantId,
        locations: &[LocationId],
        elsewhere: Option<Elsewhere>,
    ) -> Vec<(ThreadId, Vec<UserPresence>)> {
        let Some(elsewhere) = elsewhere else {
            return self.board().snapshot(tenant, locations);
        };
        let now = tokio::time::Instant::now();
        let mut picture = Board::default();
        let own = self.board().places_of(tenant, &self.node);
        for (node, places) in std::iter::once((self.node.clone(), own)).chain(elsewhere) {
            picture.replace_node(tenant, &node, places, now);
        }
        picture.snapshot(tenant, locations)
    }

    fn send_due(self: &Arc<Self>, tenant: &TenantId, due: Vec<Due>, now: tokio::time::Instant) {
        for d in due {
            if d.at <= now {
                self.send_presence(tenant, &d.thread);
            } else {
                let (hub, tenant) = (self.clone(), tenant.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(d.at).await;
                    hub.send_presence(&tenant, &d.thread);
                });
            }
        }
    }

    /// Sends `thread`'s presence frame to every member session of the tenant here that is
    /// granted its location.
    fn send_presence(&self, tenant: &TenantId, thread: &ThreadId) {
        let now = tokio::time::Instant::now();
        let Some((location, users)) = self.board().send(tenant, thread, now) else {
            return;
        };
        let frame = protocol::presence_frame(thread.as_str(), &users);
        for h in self.members_of(tenant) {
            let state = h.state();
            if !state.locations.contains(&location) {
                continue;
            }
            let item = Deferred::Presence { frame: frame.clone() };
            let sent = if state.delivery.direct {
                let mut wire = vec![frame.clone()];
                push_wire(&h, &mut wire)
            } else {
                to_task(&h, item)
            };
            drop(state);
            if let Err(TrySendError::Full(())) = sent {
                self.metrics.queue_overflows.inc();
                h.kick(Close::TooSlow);
            }
        }
    }

    /// The member sessions of `tenant` here, building the tenant's index at its first use.
    fn members_of(&self, tenant: &TenantId) -> Vec<Arc<SessionHandle>> {
        let mut out = Vec::new();
        if !collect(&self.members, tenant, &mut out) {
            // Built under the entry's lock: a session registering meanwhile waits for it and
            // then adds itself (an insert is idempotent).
            if let dashmap::Entry::Vacant(v) = self.members.entry(tenant.clone()) {
                let mut all: Option<Sessions> = None;
                for sessions in self.by_user.iter().filter(|e| &e.key().0 == tenant) {
                    for h in sessions.values().filter(|h| !h.is_service) {
                        match &mut all {
                            Some(s) => s.insert(h),
                            None => all = Some(Sessions::One(h.clone())),
                        }
                    }
                }
                if let Some(all) = all {
                    out.extend(all.values().cloned());
                    v.insert(all);
                }
            }
        }
        out
    }

    /// The sessions that may receive an event, before the rules look at each; each once.
    /// A broadcast comes from one index alone and needs no de-duplication.
    fn candidates(&self, e: &Event) -> Vec<Arc<SessionHandle>> {
        let mut out = Vec::new();
        let mut sources = 0;
        let r = &e.route;
        for u in &r.users {
            sources += usize::from(collect(&self.by_user, &(e.tenant.clone(), u.clone()), &mut out));
        }
        for u in &r.resources {
            sources += usize::from(collect(&self.followers, &(e.tenant.clone(), u.clone()), &mut out));
        }
        if r.subscribers
            && let Some(l) = &r.location
        {
            sources += usize::from(collect(&self.subscribed, &(e.tenant.clone(), l.clone()), &mut out));
        }
        if r.services {
            sources += usize::from(collect(&self.services, &e.tenant, &mut out));
        }
        if sources > 1 {
            let mut seen = HashSet::with_capacity(out.len());
            out.retain(|h| seen.insert(h.key));
        }
        out
    }

    /// Raises the tenant's delivered mark to `e` (before any session is looked up for it,
    /// see `open_view`) and counts the event.
    fn note_delivered(&self, e: &Event) {
        self.metrics.events.with_label_values(&[e.kind.as_str()]).inc();
        match self.delivered.get(&e.tenant) {
            Some(d) => d.fetch_max(e.id, Ordering::SeqCst),
            None => self
                .delivered
                .entry(e.tenant.clone())
                .or_default()
                .fetch_max(e.id, Ordering::SeqCst),
        };
    }

    /// A `subscription.changed` event changes its user's sessions; nothing is written.
    fn apply_subscription(&self, e: &Event) {
        let on = event::subscribe_all_of(e);
        for u in &e.route.users {
            let mut sessions = Vec::new();
            collect(&self.by_user, &(e.tenant.clone(), u.clone()), &mut sessions);
            for h in &sessions {
                self.set_subscribe_all(h, on, e.id);
            }
        }
    }

    /// Delivers a run of events without subscription changes, session by session: each
    /// recipient's frames from the whole run are pushed as one wire item, so one wake-up of
    /// its socket writes them all (a message's `message.new` and `unread.count` leave in one
    /// write instead of racing the socket for two).
    fn deliver_run(&self, events: &[Arc<Event>]) {
        if events.is_empty() {
            return;
        }
        let mut plans: Vec<Plan> = events
            .iter()
            .map(|e| {
                self.note_delivered(e);
                Plan {
                    // Parsed once for every recipient.
                    delta: match e.kind {
                        EventKind::UnreadCount => event::count_delta(&e.data),
                        _ => None,
                    },
                    frame: None,
                    last_count: None,
                }
            })
            .collect();
        // Every recipient once, with the events it is a candidate for, in log order.
        let mut recipients: Vec<(Arc<SessionHandle>, Vec<u32>)> = Vec::new();
        if let [e] = events {
            recipients.extend(self.candidates(e).into_iter().map(|h| (h, vec![0])));
        } else {
            let mut slots: HashMap<u64, usize> = HashMap::new();
            for (i, e) in events.iter().enumerate() {
                for h in self.candidates(e) {
                    match slots.entry(h.key) {
                        std::collections::hash_map::Entry::Occupied(o) => recipients[*o.get()].1.push(i as u32),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(recipients.len());
                            recipients.push((h, vec![i as u32]));
                        }
                    }
                }
            }
        }
        let mut delivered = 0;
        for (h, indexes) in recipients {
            match Self::deliver_to(&h, events, &mut plans, &indexes) {
                Ok(n) => delivered += n,
                Err(TrySendError::Full(())) => {
                    self.metrics.queue_overflows.inc();
                    h.kick(Close::TooSlow);
                }
                // The session is ending; it will resume elsewhere if it wants.
                Err(TrySendError::Disconnected(())) => {}
            }
        }
        self.metrics.deliveries.inc_by(delivered);
    }

    /// Hands session `h` the events at `indexes` it receives, under its state mutex; returns
    /// how many it got. In direct mode each is decided here (`Delivery::decide`) and its frame
    /// gathered for the wire; a count to read, and everything after it until the task's queue
    /// is empty, goes to the session task, which decides them the same way.
    fn deliver_to(
        h: &SessionHandle,
        events: &[Arc<Event>],
        plans: &mut [Plan],
        indexes: &[u32],
    ) -> Result<u64, TrySendError<()>> {
        let mut state = h.state();
        let mut wire: Vec<ByteString> = Vec::new();
        let mut delivered = 0;
        for &i in indexes {
            let (e, plan) = (&events[i as usize], &mut plans[i as usize]);
            if !Self::receives_in(h, &state, e, None) {
                continue;
            }
            let item = plan.item(e);
            if state.delivery.direct {
                // A stale mark is the task's to take: it reads the count again.
                match state
                    .delivery
                    .decide(&item, h.is_service, || h.count_stale.load(Ordering::Acquire))
                {
                    Decision::Write(frame) => wire.push(frame),
                    Decision::WriteCount { id, count } => wire.push(plan.count_frame(id, count)),
                    Decision::Skip => continue,
                    Decision::ReadCount => {
                        // What is gathered for the wire goes first.
                        push_wire(h, &mut wire)?;
                        state.delivery.direct = false;
                        to_task(h, item)?;
                    }
                }
            } else {
                to_task(h, item)?;
            }
            delivered += 1;
        }
        push_wire(h, &mut wire)?;
        Ok(delivered)
    }

    /// Whether session `h` receives `e`, by the rules; `subscribe_all` overrides the
    /// session's current flag (a replay uses the value it had when `e` was made).
    pub fn receives(h: &SessionHandle, e: &Event, subscribe_all: Option<bool>) -> bool {
        Self::receives_in(h, &h.state(), e, subscribe_all)
    }

    fn receives_in(h: &SessionHandle, state: &SessionState, e: &Event, subscribe_all: Option<bool>) -> bool {
        let r = Recipient {
            viewer: Viewer {
                user: &h.user,
                locations: &state.locations,
                subscribe_all: subscribe_all.unwrap_or(state.subscribe_all),
            },
            is_service: h.is_service,
            follow: state.follow.as_ref(),
        };
        rules::receives(&r, &e.route)
    }
}

/// One event of a run being delivered: what is worked out once for all its recipients.
struct Plan {
    /// The count delta of an `unread.count`.
    delta: Option<i64>,
    /// The shared frame, encoded at its first recipient.
    frame: Option<ByteString>,
    /// The last count frame encoded: recipients of one count mostly hold the same number.
    last_count: Option<(u64, ByteString)>,
}

impl Plan {
    /// What a session gets of `e`, to decide: the shared frame, or the count's delta.
    fn item(&mut self, e: &Event) -> Deferred {
        match e.kind {
            EventKind::UnreadCount => Deferred::Count {
                id: e.id,
                delta: self.delta,
            },
            _ => Deferred::Event {
                id: e.id,
                frame: self
                    .frame
                    .get_or_insert_with(|| protocol::event_frame(e.kind, e.id, &e.data))
                    .clone(),
            },
        }
    }

    /// The count frame of event `id` with `count`: recipients of one count mostly hold the
    /// same number, so it is encoded once per number.
    fn count_frame(&mut self, id: u64, count: u64) -> ByteString {
        match &self.last_count {
            Some((n, f)) if *n == count => f.clone(),
            _ => self
                .last_count
                .insert((count, protocol::count_frame(id, count)))
                .1
                .clone(),
        }
    }
}

/// Pushes the frames gathered for a session's wire as one item (one wake-up of its socket).
/// Full: no room for the item, in items or in bytes.
fn push_wire(h: &SessionHandle, frames: &mut Vec<ByteString>) -> Result<(), TrySendError<()>> {
    let item = match frames.len() {
        0 => return Ok(()),
        1 => Outgoing::Text(frames.pop().expect("one frame")),
        _ => Outgoing::Texts(mem::take(frames).into_boxed_slice()),
    };
    let bytes = item.bytes();
    if !h.room.try_take(bytes) {
        return Err(TrySendError::Full(()));
    }
    h.wire.try_send(item).map_err(|e| {
        h.room.give(bytes);
        drop_item(e)
    })
}

/// Queues an item for the session task. Full: no room for it, in items or in bytes.
fn to_task(h: &SessionHandle, item: Deferred) -> Result<(), TrySendError<()>> {
    let bytes = item.bytes();
    if !h.room.try_take(bytes) {
        return Err(TrySendError::Full(()));
    }
    h.tx.try_send(item).map_err(|e| {
        h.room.give(bytes);
        drop_item(e)
    })
}

fn drop_item<T>(e: TrySendError<T>) -> TrySendError<()> {
    match e {
        TrySendError::Full(_) => TrySendError::Full(()),
        TrySendError::Disconnected(_) => TrySendError::Disconnected(()),
    }
}

impl PresenceSink for Hub {
    fn node(&self) -> &str {
        &self.node
    }

    fn here(&self, tenant: &TenantId) -> Vec<(u64, Place)> {
        self.board().places_of(tenant, &self.node)
    }

    fn tenants_here(&self) -> Vec<TenantId> {
        self.board().tenants_of(&self.node)
    }

    fn heard(self: Arc<Self>, tenant: &TenantId, node: &str, places: Vec<(u64, Place)>) {
        if node == self.node {
            return;
        }
        let now = tokio::time::Instant::now();
        let due = self.board().replace_node(tenant, node, places, now);
        self.send_due(tenant, due, now);
    }

    fn expire(self: Arc<Self>) {
        let now = tokio::time::Instant::now();
        let due = self.board().expire(now);
        for (tenant, d) in due {
            self.send_due(&tenant, vec![d], now);
        }
    }
}

impl EventSink for Hub {
    fn deliver(&self, events: &[Arc<Event>]) {
        // Runs between subscription changes: a change moves sessions in and out of the
        // indexes the next events are looked up in.
        let mut start = 0;
        for (i, e) in events.iter().enumerate() {
            if e.kind == EventKind::SubscriptionChanged {
                self.deliver_run(&events[start..i]);
                self.note_delivered(e);
                self.apply_subscription(e);
                start = i + 1;
            }
        }
        self.deliver_run(&events[start..]);
    }

    fn lost(&self, tenant: &TenantId) {
        // 4008 is the contract's "resume" close: the client reconnects and resumes, and gets
        // `resync` if the log no longer reaches back to its last event.
        self.close_tenant(tenant, Close::TooSlow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::Id,
        event::{Route, count_data},
        hub::outbox::CountAnchor,
    };

    fn id<T: Id>(s: &str) -> T {
        T::parse(s).unwrap()
    }

    fn hub() -> Arc<Hub> {
        Arc::new(Hub::new(Arc::new(Metrics::new())))
    }

    const BOUNDS: QueueBounds = QueueBounds {
        items: 64,
        bytes: 1 << 20,
    };

    fn locations(ls: &[&str]) -> Arc<[LocationId]> {
        ls.iter().map(|l| id(l)).collect::<Vec<_>>().into()
    }

    fn count_event(event_id: u64, delta: Option<i64>) -> Arc<Event> {
        Arc::new(Event {
            tenant: id("acme"),
            id: event_id,
            kind: EventKind::UnreadCount,
            route: rules::count_route(&rules::thread_route(&id("L1"), &[id("sam")])),
            data: count_data(delta).to_string(),
        })
    }

    fn subscription(event_id: u64, user: &str, on: bool) -> Arc<Event> {
        Arc::new(Event {
            tenant: id("acme"),
            id: event_id,
            kind: EventKind::SubscriptionChanged,
            route: Route {
                users: vec![id(user)],
                ..Route::default()
            },
            data: serde_json::json!({ "subscribe_all": on }).to_string(),
        })
    }

    /// N subscribe-all sessions opened at event 10 with a count of 3 each.
    fn subscribers(hub: &Hub, n: usize) -> Vec<(Arc<SessionHandle>, flume::Receiver<Deferred>, CountAnchor)> {
        (0..n)
            .map(|i| {
                let (h, rx, _wire) = hub
                    .register(
                        id("acme"),
                        id(&format!("u{i}")),
                        false,
                        locations(&["L1"]),
                        BOUNDS,
                        usize::MAX,
                    )
                    .unwrap();
                h.take_count_stale();
                let _ = hub.open_view(&h, true, 10);
                let mut anchor = CountAnchor::default();
                anchor.anchor(3, 10);
                (h, rx, anchor)
            })
            .collect()
    }

    #[test]
    fn inbound_counts_reach_every_subscriber_with_their_delta_and_need_no_read() {
        let hub = hub();
        let mut sessions = subscribers(&hub, 50);
        for event_id in 11..=20 {
            hub.deliver(&[count_event(event_id, Some(1))]);
        }
        for (h, rx, anchor) in sessions.iter_mut() {
            let mut written = Vec::new();
            while let Ok(out) = rx.try_recv() {
                let Deferred::Count { id, delta } = out else {
                    panic!("a count: {out:?}")
                };
                assert_eq!(delta, Some(1));
                let n = anchor.step(id, delta, h.take_count_stale());
                written.push(n.expect("a delta on a fresh anchor needs no store read"));
            }
            assert_eq!(written, (4..=13).collect::<Vec<u64>>(), "{}", h.user);
        }
    }

    #[test]
    fn a_recompute_count_carries_no_delta() {
        let hub = hub();
        let mut sessions = subscribers(&hub, 1);
        hub.deliver(&[count_event(11, None)]);
        let (h, rx, anchor) = &mut sessions[0];
        let out = rx.try_recv().unwrap();
        assert!(matches!(out, Deferred::Count { id: 11, delta: None }), "{out:?}");
        assert_eq!(anchor.step(11, None, h.take_count_stale()), None, "read again");
    }

    #[test]
    fn a_subscription_change_or_other_locations_mark_the_count_stale_and_nothing_else_does() {
        let hub = hub();
        let (h, _rx, _wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        let _ = hub.open_view(&h, false, 10);
        assert!(!h.take_count_stale(), "a snapshot with the flag off holds");

        hub.set_follow(&h, Some(id("sam")));
        hub.set_locations(&h, locations(&["L1"]));
        assert!(!h.take_count_stale(), "following, or a refresh with the same locations");

        hub.set_locations(&h, locations(&["L1", "L2"]));
        assert!(h.take_count_stale(), "other locations: other threads");

        hub.deliver(&[subscription(11, "olga", true)]);
        assert!(h.take_count_stale(), "subscribe_all on");
        hub.deliver(&[subscription(11, "olga", true)]);
        assert!(!h.take_count_stale(), "the same event again changes nothing");
        hub.deliver(&[subscription(12, "sam", false)]);
        assert!(!h.take_count_stale(), "someone else's");
        hub.deliver(&[subscription(13, "olga", false)]);
        assert!(h.take_count_stale(), "subscribe_all off");
    }

    #[test]
    fn an_opening_subscriber_whose_snapshot_delivery_overtook_catches_up_and_reads_its_count_again() {
        let hub = hub();
        // Delivery looks at event 11 before the session opening from the head 10 is in the
        // subscribers' index: it may have missed a count.
        let (h, rx, _wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        hub.deliver(&[count_event(11, Some(1))]);
        assert!(rx.try_recv().is_err(), "not yet a subscriber");
        assert!(hub.open_view(&h, true, 10), "the session must catch up from the log");
        assert!(h.take_count_stale());

        // A snapshot at or after everything delivered holds.
        let (h, _rx, _wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        assert!(!hub.open_view(&h, true, 11), "nothing to catch up");
        assert!(!h.take_count_stale());

        // A newer change applied before the snapshot's: the anchor does not hold.
        let (h, _rx, _wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        hub.deliver(&[subscription(12, "olga", true)]);
        h.take_count_stale();
        let _ = hub.open_view(&h, false, 11);
        assert!(h.take_count_stale());
        assert!(h.state().subscribe_all, "the newer change stands");
    }

    fn message(event_id: u64) -> Arc<Event> {
        Arc::new(Event {
            tenant: id("acme"),
            id: event_id,
            kind: EventKind::MessageNew,
            route: rules::thread_route(&id("L1"), &[]),
            data: r#"{"n":1}"#.into(),
        })
    }

    fn texts(wire: &mut flume::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(w) = wire.try_recv() {
            match w {
                Outgoing::Text(t) => out.push(t.to_string()),
                Outgoing::Texts(ts) => out.extend(ts.iter().map(|t| t.to_string())),
                _ => panic!("text: {w:?}"),
            }
        }
        out
    }

    /// A subscriber opened at event 10 with a count of 3, in direct mode.
    fn direct_subscriber(hub: &Hub) -> (Arc<SessionHandle>, flume::Receiver<Deferred>, flume::Receiver<Outgoing>) {
        let (h, rx, wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        h.take_count_stale();
        let _ = hub.open_view(&h, true, 10);
        {
            let mut state = h.state();
            state.delivery.counts.anchor(3, 10);
            state.delivery.last_sent = 10;
        }
        assert!(h.try_direct(&rx));
        (h, rx, wire)
    }

    #[test]
    fn in_direct_mode_events_and_counts_with_a_delta_go_straight_to_the_wire() {
        let hub = hub();
        let (h, rx, mut wire) = direct_subscriber(&hub);
        hub.deliver(&[
            message(9),
            message(11),
            count_event(12, Some(1)),
            count_event(13, Some(2)),
        ]);
        assert_eq!(
            texts(&mut wire),
            vec![
                r#"{"type":"message.new","id":"11","data":{"n":1}}"#,
                r#"{"type":"unread.count","id":"12","data":{"count":4}}"#,
                r#"{"type":"unread.count","id":"13","data":{"count":6}}"#,
            ],
            "9 is older than what the session has"
        );
        assert!(rx.try_recv().is_err(), "nothing for the task");
        assert_eq!(h.state().delivery.last_sent, 13);
    }

    #[test]
    fn a_count_that_needs_a_read_hands_it_and_what_follows_to_the_task_until_its_queue_is_empty() {
        let hub = hub();
        let (h, rx, mut wire) = direct_subscriber(&hub);
        hub.deliver(&[message(11), count_event(12, None), message(13)]);
        assert_eq!(texts(&mut wire).len(), 1, "11 only");
        assert!(matches!(rx.try_recv(), Ok(Deferred::Count { id: 12, delta: None })));
        assert!(!h.try_direct(&rx), "13 is still queued");
        let Ok(Deferred::Event { id: 13, .. }) = rx.try_recv() else {
            panic!("13 waits behind the count")
        };
        assert!(h.try_direct(&rx), "an empty queue: direct again");

        // A stale count is the task's too, and so is a service session's nothing.
        h.mark_count_stale();
        hub.deliver(&[count_event(14, Some(1))]);
        assert!(matches!(rx.try_recv(), Ok(Deferred::Count { id: 14, .. })));
        assert!(wire.try_recv().is_err());
        assert!(h.take_count_stale(), "the mark stays for the task to take");
    }

    #[test]
    fn a_batch_reaches_a_direct_session_as_one_wire_item_in_log_order() {
        let hub = hub();
        let (_h, _rx, wire) = direct_subscriber(&hub);
        hub.deliver(&[message(11), count_event(12, Some(1)), message(13)]);
        let Ok(Outgoing::Texts(frames)) = wire.try_recv() else {
            panic!("one item for the batch")
        };
        let ids: Vec<String> = frames
            .iter()
            .map(|f| {
                serde_json::from_str::<serde_json::Value>(f).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, ["11", "12", "13"]);
        assert!(wire.try_recv().is_err(), "and nothing else");
    }

    #[test]
    fn events_after_a_subscription_change_in_one_batch_follow_the_new_flag() {
        let hub = hub();
        let (h, rx, _wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        let _ = hub.open_view(&h, false, 10);
        hub.deliver(&[message(11), subscription(12, "olga", true), message(13)]);
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| match o {
                Deferred::Event { id, .. } | Deferred::Count { id, .. } => id,
                Deferred::Presence { .. } => panic!("no presence here"),
            })
            .collect();
        assert_eq!(got, [13], "11 went to subscribers only; 13 came after olga subscribed");
    }

    #[test]
    fn a_users_second_device_joins_and_leaves_the_index_and_the_first_stays() {
        let hub = hub();
        let (a, a_rx, _a_wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        let (b, b_rx, _b_wire) = hub
            .register(id("acme"), id("olga"), false, locations(&["L1"]), BOUNDS, usize::MAX)
            .unwrap();
        let to_olga = |event_id| {
            Arc::new(Event {
                tenant: id("acme"),
                id: event_id,
                kind: EventKind::MessageNew,
                route: Route {
                    users: vec![id("olga")],
                    ..Route::default()
                },
                data: "{}".into(),
            })
        };
        hub.deliver(&[to_olga(1)]);
        assert!(a_rx.try_recv().is_ok() && b_rx.try_recv().is_ok(), "both devices");
        hub.unregister(&b);
        hub.deliver(&[to_olga(2)]);
        assert!(a_rx.try_recv().is_ok(), "the first stays");
        assert!(b_rx.try_recv().is_err(), "the second left");
        hub.unregister(&a);
        assert!(hub.by_user.is_empty(), "the last one takes the key with it");
        assert!(hub.is_empty());
    }

    #[test]
    fn a_paused_session_gets_live_events_in_its_task_queue() {
        let hub = hub();
        let (h, rx, wire) = direct_subscriber(&hub);
        h.pause_direct();
        hub.deliver(&[message(11)]);
        assert!(wire.try_recv().is_err());
        assert!(matches!(rx.try_recv(), Ok(Deferred::Event { id: 11, .. })));
        assert_eq!(h.state().delivery.last_sent, 10, "the task sets it when it writes");
    }
}
