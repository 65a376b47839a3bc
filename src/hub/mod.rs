//! The hub: this node's websocket sessions and the delivery of events to them.
//!
//! Sessions live in `DashMap`s keyed by (tenant, user), plus indexes by (tenant, location)
//! for subscribe-all sessions, by (tenant, resource) for followers of the drop-down, and by
//! tenant for service sessions. Delivery never waits on a session:
//! the frame is encoded once and `try_send` into each recipient's bounded queue; a full queue
//! closes that session with 4008 (it resumes), and nobody else is slowed down.
//!
//! Lock order: a session's state mutex may be held while a map shard is locked, never the
//! other way round; no guard of either kind is held across an `.await`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
};

use bytestring::ByteString;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc, watch};

use crate::{
    bus::EventSink,
    domain::{LocationId, SessionId, TenantId, UserId},
    event::{Event, EventKind},
    metrics::Metrics,
    rules::{self, Recipient, Viewer},
};

/// What a session's queue carries.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame shared by every recipient.
    Event { id: u64, frame: ByteString },
    /// `unread.count` with this event id: the session computes its own number.
    Count { id: u64 },
}

/// What a session is, and what may change while it lives.
#[derive(Debug)]
pub struct SessionState {
    pub locations: Arc<[LocationId]>,
    pub subscribe_all: bool,
    /// Id of the event that last set `subscribe_all` (0: none yet).
    subscribe_all_event: u64,
    pub follow: Option<UserId>,
}

/// One session as the hub sees it.
pub struct SessionHandle {
    key: u64,
    pub id: SessionId,
    pub tenant: TenantId,
    pub user: UserId,
    pub is_service: bool,
    tx: mpsc::Sender<Outbound>,
    state: Mutex<SessionState>,
    /// Woken when the hub wants the session closed (code in `kick_code`).
    pub kicked: Notify,
    kick_code: AtomicU16,
}

impl SessionHandle {
    pub fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // unwrap: the lock is only held for short, non-panicking sections.
        self.state.lock().unwrap()
    }

    /// The close code the hub asked for, if any.
    pub fn kick_code(&self) -> Option<u16> {
        match self.kick_code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }

    fn kick(&self, code: u16) {
        if self
            .kick_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.kicked.notify_one();
        }
    }
}

type Sessions = HashMap<u64, Arc<SessionHandle>>;

/// Close code for a session whose queue overflowed.
pub const CLOSE_TOO_SLOW: u16 = 4008;

pub struct Hub {
    next_key: AtomicU64,
    by_user: DashMap<(TenantId, UserId), Sessions>,
    subscribed: DashMap<(TenantId, LocationId), Sessions>,
    followers: DashMap<(TenantId, UserId), Sessions>,
    services: DashMap<TenantId, Sessions>,
    count: watch::Sender<usize>,
    metrics: Arc<Metrics>,
}

fn insert<K: Eq + std::hash::Hash>(map: &DashMap<K, Sessions>, k: K, h: &Arc<SessionHandle>) {
    map.entry(k).or_default().insert(h.key, h.clone());
}

fn remove<K: Eq + std::hash::Hash>(map: &DashMap<K, Sessions>, k: K, key: u64) {
    map.remove_if_mut(&k, |_, sessions| {
        sessions.remove(&key);
        sessions.is_empty()
    });
}

fn collect<K: Eq + std::hash::Hash>(map: &DashMap<K, Sessions>, k: &K, into: &mut HashMap<u64, Arc<SessionHandle>>) {
    if let Some(sessions) = map.get(k) {
        for (key, h) in sessions.iter() {
            into.entry(*key).or_insert_with(|| h.clone());
        }
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
            count: watch::channel(0).0,
            metrics,
        }
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

    /// Adds a session; events committed from now on reach its queue.
    pub fn register(
        &self,
        tenant: TenantId,
        user: UserId,
        is_service: bool,
        locations: Arc<[LocationId]>,
        capacity: usize,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let h = Arc::new(SessionHandle {
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
            id: SessionId::generate(),
            tenant: tenant.clone(),
            user: user.clone(),
            is_service,
            tx,
            state: Mutex::new(SessionState {
                locations,
                subscribe_all: false,
                subscribe_all_event: 0,
                follow: None,
            }),
            kicked: Notify::new(),
            kick_code: AtomicU16::new(0),
        });
        insert(&self.by_user, (tenant.clone(), user), &h);
        if is_service {
            insert(&self.services, tenant, &h);
        }
        self.count.send_modify(|n| *n += 1);
        self.metrics.sessions.inc();
        (h, rx)
    }

    pub fn unregister(&self, h: &Arc<SessionHandle>) {
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
        }
        self.count.send_modify(|n| *n = n.saturating_sub(1));
        self.metrics.sessions.dec();
    }

    /// Asks every session of `tenant` on this node to close with `code`.
    pub fn close_tenant(&self, tenant: &TenantId, code: u16) {
        for sessions in self.by_user.iter().filter(|e| &e.key().0 == tenant) {
            for h in sessions.values() {
                h.kick(code);
            }
        }
    }

    /// Sets `subscribe_all` as of event `as_of`, unless a newer change was applied already.
    pub fn set_subscribe_all(&self, h: &Arc<SessionHandle>, on: bool, as_of: u64) {
        let mut state = h.state();
        if state.subscribe_all_event > as_of {
            return;
        }
        state.subscribe_all_event = as_of;
        if state.subscribe_all != on {
            state.subscribe_all = on;
            for l in state.locations.iter() {
                let k = (h.tenant.clone(), l.clone());
                if on {
                    insert(&self.subscribed, k, h)
                } else {
                    remove(&self.subscribed, k, h.key)
                }
            }
        }
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

    /// Swaps in the locations of a refreshed token.
    pub fn set_locations(&self, h: &Arc<SessionHandle>, locations: Arc<[LocationId]>) {
        let mut state = h.state();
        if state.subscribe_all {
            for l in state.locations.iter() {
                remove(&self.subscribed, (h.tenant.clone(), l.clone()), h.key);
            }
            for l in locations.iter() {
                insert(&self.subscribed, (h.tenant.clone(), l.clone()), h);
            }
        }
        state.locations = locations;
    }

    /// The sessions that may receive an event, before the rules look at each.
    fn candidates(&self, e: &Event) -> HashMap<u64, Arc<SessionHandle>> {
        let mut out = HashMap::new();
        let r = &e.route;
        for u in &r.users {
            collect(&self.by_user, &(e.tenant.clone(), u.clone()), &mut out);
        }
        for u in &r.resources {
            collect(&self.followers, &(e.tenant.clone(), u.clone()), &mut out);
        }
        if r.subscribers {
            if let Some(l) = &r.location {
                collect(&self.subscribed, &(e.tenant.clone(), l.clone()), &mut out);
            }
        }
        if r.services {
            collect(&self.services, &e.tenant, &mut out);
        }
        out
    }

    fn deliver_one(&self, e: &Event) {
        self.metrics.events.with_label_values(&[e.kind.as_str()]).inc();
        if e.kind == EventKind::SubscriptionChanged {
            let on = serde_json::from_str::<serde_json::Value>(&e.data)
                .ok()
                .and_then(|v| v["subscribe_all"].as_bool())
                .unwrap_or(false);
            for u in &e.route.users {
                let mut sessions = HashMap::new();
                collect(&self.by_user, &(e.tenant.clone(), u.clone()), &mut sessions);
                for h in sessions.values() {
                    self.set_subscribe_all(h, on, e.id);
                }
            }
            return;
        }
        let mut frame = None;
        let mut delivered = 0;
        for h in self.candidates(e).into_values() {
            if !Self::receives(&h, e, None) {
                continue;
            }
            let out = match e.kind {
                EventKind::UnreadCount => Outbound::Count { id: e.id },
                _ => Outbound::Event {
                    id: e.id,
                    frame: frame.get_or_insert_with(|| e.frame()).clone(),
                },
            };
            match h.tx.try_send(out) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.queue_overflows.inc();
                    h.kick(CLOSE_TOO_SLOW);
                }
                // The session is ending; it will resume elsewhere if it wants.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.metrics.deliveries.inc_by(delivered);
    }

    /// Whether session `h` receives `e`, by the rules; `subscribe_all` overrides the
    /// session's current flag (a replay uses the value it had when `e` was made).
    pub fn receives(h: &SessionHandle, e: &Event, subscribe_all: Option<bool>) -> bool {
        let state = h.state();
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

impl EventSink for Hub {
    fn deliver(&self, events: &[Arc<Event>]) {
        for e in events {
            self.deliver_one(e);
        }
    }

    fn lost(&self, tenant: &TenantId) {
        // 4008 is the contract's "resume" close: the client reconnects and resumes, and gets
        // `resync` if the log no longer reaches back to its last event.
        self.close_tenant(tenant, CLOSE_TOO_SLOW);
    }
}
