//! One websocket connection's protocol: `hello`, event frames, `ping`, `resume`, `follow`,
//! `refresh`, error frames, heartbeat and the close codes.
//!
//! Every frame the session writes goes through one bounded FIFO, its wire queue, which the
//! websocket's response body drains and encodes itself (`wire`). Live events normally reach
//! it straight from the hub (*direct mode*, see `hub`): one queue and no task between the
//! event and the socket. The task handles client frames, the heartbeat, expiry and the close,
//! and everything that must be ordered against live events:
//!
//! - Nothing is written before `hello`: a session starts outside direct mode, so live events
//!   wait in the task's queue (`Deferred`) until `hello` (and a handshake replay) is written.
//! - A replay (`resume`, or the handshake's `last_event_id`) leaves direct mode first, so the
//!   live events that arrive meanwhile wait in the task's queue; they are written after
//!   `resumed`, minus those the replay covered (`last_sent`).
//! - A count that needs a store read leaves direct mode (the hub does that); the task reads
//!   it, writes it and what queued behind it.
//! - The task re-enters direct mode only when its queue is empty, under the state mutex
//!   (`SessionHandle::try_direct`): no live frame overtakes another.
//! - The task drains its queue ahead of client frames, so every event committed before a
//!   client frame was read is written before that frame's answer (in direct mode it already
//!   is in the wire queue). A `ping`'s `pong` follows the bus's barrier and that drain.
//! - What to write for an event is decided in one place, `hub::outbox::Delivery::decide`,
//!   under the session's state mutex, by the hub in direct mode and by this task for what was
//!   deferred to it; whoever writes an event's frame sets `last_sent` to its id.
//!
//! Writes to a client that stopped reading never block the hub: it finds the queue full and
//! asks this task to close with 4008. The task's own writes wait for room (or that kick).
//!
//! # Unread counts
//! The session holds the user's count and the event id it is exact up to (`CountAnchor`),
//! both from the `session_start` snapshot, which reads the count with the log's head. An
//! `unread.count` whose event carries a delta (an inbound message: every recipient's count
//! moved by exactly that, see `rules::count_delta`) is added to the count without a store
//! read; one the count already includes (an id up to the anchor) sends the count as it is;
//! any other (`{}`: "recompute"), or any after the hub marked the count stale (the session's
//! `subscribe_all` or locations changed), reads the count and the head together again
//! (`session_start`) and anchors there. That is exact because every change that moves a
//! session's count sends it an `unread.count` (the rules route them to exactly those users),
//! the hub delivers them in log order, and the anchor is re-read whenever the set of threads
//! the count covers changes. A replay goes through the same steps with the logged data.
//! In direct mode the hub takes the steps that need no read (`Decision::WriteCount`); a stale
//! mark or a step that needs a read (`Decision::ReadCount`) hands the count to this task.

pub mod budget;
pub mod inbound;
pub mod wire;

use std::{sync::Arc, time::Duration};

use actix_ws::AggregatedMessage;
use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use tracing::{debug, info};

use crate::{
    auth::{Principal, Verifier, now_secs},
    bus::Bus,
    config::WsSettings,
    domain::{Id, LocationId, ThreadId, UserId},
    event::{self, Event, EventKind},
    hub::{
        Hub, SessionHandle,
        outbox::{Decision, Deferred, Outgoing},
    },
    presence::{Activity, Place, Present},
    protocol::{self, ClientFrame, Close, ErrorCode, PresenceState, ServerFrame},
    store::{Replay, Scope, Store, StoreError},
};
use budget::Budget;

/// How long a close frame may wait behind a client that does not read.
const CLOSE_PATIENCE: Duration = Duration::from_secs(10);

/// What every session task needs.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Arc<Hub>,
    pub verifier: Arc<Verifier>,
    pub ws: WsSettings,
    pub leeway_secs: u64,
    pub shutdown: watch::Receiver<bool>,
}

struct Conn {
    deps: Arc<Deps>,
    handle: Arc<SessionHandle>,
    /// The wire queue (`handle.wire`).
    wire: flume::Sender<Outgoing>,
    /// What the hub deferred to this task (outside direct mode).
    queue: flume::Receiver<Deferred>,
    /// The client's frames.
    stream: inbound::Reader,
    /// The log's head when the session opened (`hello.last_event_id`): events after it
    /// reach the session live.
    opened_at: u64,
    /// When the token runs out (seconds since the epoch).
    exp: u64,
    /// What the client may still ask of the hub (`budget`).
    budget: Budget,
    /// What presence needs once the client uses it: allocated then, so that a session that
    /// never does costs nothing for it.
    presence: Option<Box<PresenceMemo>>,
}

// An idle session's task holds the `Conn` and `serve`'s state, in an allocation rounded up
// to 128 bytes (see `Conn::run`): a field added here may cost a whole step of 128 per session.
const _: () = assert!(std::mem::size_of::<Conn>() <= 192);

/// A session's presence: the name it shows, and the last thread it was allowed into.
struct PresenceMemo {
    name: Option<String>,
    checked: Option<(ThreadId, LocationId)>,
}

/// How a `resume` was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The log reached back: every event after the id up to the head was replayed.
    Resumed,
    /// The client must reload over REST.
    Resync,
    /// The session's budget could not pay for it: answered `rate_limited`, nothing replayed.
    Dropped,
}

/// Why the loop ended: a close to send, or the client is gone.
enum End {
    Close(Close),
    Gone,
}

/// Runs a session until it closes. Its frames go to `handle.wire`, which the response body
/// drains (`wire::OutBody`).
///
/// Not an `async fn`: the future holds only the `Conn` (an `async fn` would keep every
/// argument, `principal` included, for the session's whole life).
pub fn run(
    deps: Arc<Deps>,
    handle: Arc<SessionHandle>,
    queue: flume::Receiver<Deferred>,
    stream: inbound::Reader,
    principal: &Principal,
    resume_from: Option<String>,
) -> impl Future<Output = ()> + 'static {
    let budget = Budget::new(Instant::now());
    let conn = Conn {
        deps,
        wire: handle.wire.clone(),
        handle,
        queue,
        stream,
        opened_at: 0,
        exp: principal.exp,
        budget,
        presence: None,
    };
    // Parsed now: the id is all the session keeps of it (`None` inside: not an id, resync).
    conn.run(resume_from.map(|id| id.parse().ok()))
}

impl Conn {
    /// The session's whole life. Not an `async fn` either: an `async fn` moves its arguments
    /// into locals of its future, and a future keeps the slots of both for its whole life (the
    /// `Conn` twice, 192 bytes per idle session); an `async move` block uses what it captured
    /// in place. Nothing held across `serve` but the `Conn` and `resume_from`. (Measured with
    /// `-Zprint-type-sizes` on a debug build: the task, allocated at a 128-byte alignment, is 768 bytes.)
    #[allow(clippy::manual_async_fn, reason = "an async fn would keep the Conn twice (above)")]
    fn run(mut self, resume_from: Option<Option<u64>>) -> impl Future<Output = ()> + 'static {
        async move {
            let end = if let Err(e) = self.deps.bus.join(&self.handle.tenant).await {
                tracing::warn!(error = %e, "the bus is unavailable; refusing the session");
                End::Close(Close::Unavailable)
            } else {
                // Boxed here and in `serve`: what runs only now and then must not size the
                // idle session's future (a state machine is as large as its largest await).
                let end = match Box::pin(self.open(resume_from)).await {
                    Ok(()) => self.serve().await,
                    Err(end) => end,
                };
                self.deps.bus.leave(&self.handle.tenant);
                end
            };
            self.deps.hub.unregister(&self.handle);
            if let End::Close(close) = end {
                debug!(code = close.code(), reason = close.reason(), "closing session");
                let close = self.wire.send_async(Outgoing::Close(close));
                let _ = tokio::time::timeout(CLOSE_PATIENCE, close).await;
            }
            // Without a close frame, the body ends once the last sender (this one, the
            // handle's) is gone.
            info!("session closed");
        }
    }

    fn scope(&self) -> Scope {
        let locations = self.handle.state().locations.clone();
        Scope {
            tenant: self.handle.tenant.clone(),
            user: self.handle.user.clone(),
            locations,
        }
    }

    /// Queues `frame` on the wire, waiting for room, in items and in bytes (or a kick).
    async fn write(&mut self, frame: Outgoing) -> Result<(), End> {
        let queued = async {
            self.handle.room.take(frame.bytes()).await;
            self.wire.send_async(frame).await
        };
        tokio::select! {
            sent = queued => sent.map_err(|_| End::Gone),
            _ = self.handle.kicked.notified() => Err(self.kicked()),
        }
    }

    /// The next item of the task's queue, if one is there; its room is given back (what the
    /// task writes of it takes room on the wire).
    fn take_queued(&self) -> Option<Deferred> {
        let out = self.queue.try_recv().ok()?;
        self.handle.room.give(out.bytes());
        Some(out)
    }

    /// How the session ends when the hub kicked it.
    fn kicked(&self) -> End {
        End::Close(self.handle.kick_code().unwrap_or(Close::TooSlow))
    }

    async fn send(&mut self, frame: impl Into<bytestring::ByteString>) -> Result<(), End> {
        self.write(Outgoing::Text(frame.into())).await
    }

    async fn error(&mut self, code: ErrorCode, message: &str) -> Result<(), End> {
        self.send(ServerFrame::Error { code, message }.encode()).await
    }

    /// Reads the session's starting point and says hello; with `resume_from` (the handshake's
    /// `last_event_id`), replays what came after it before any live event.
    async fn open(&mut self, resume_from: Option<Option<u64>>) -> Result<(), End> {
        // The snapshot below is the first anchor: nothing before it can make it stale.
        self.handle.take_count_stale();
        let mut start = self
            .deps
            .store
            .session_start(&self.scope())
            .await
            .map_err(|_| End::Close(Close::Unavailable))?;
        if self.handle.is_service {
            // A service session has no "mine" view.
            start.unread_count = 0;
        }
        let missed = self
            .deps
            .hub
            .open_view(&self.handle, start.subscribe_all, start.last_event_id);
        {
            // Not in direct mode yet: live events wait in the task's queue.
            self.handle
                .state()
                .delivery
                .counted(start.last_event_id, start.unread_count, start.last_event_id);
        }
        self.opened_at = start.last_event_id;
        let hello = ServerFrame::Hello {
            session_id: self.handle.id.as_str(),
            user_id: self.handle.user.as_str(),
            unread_count: start.unread_count,
            last_event_id: start.last_event_id.to_string(),
        };
        self.send(hello.encode()).await?;
        // A handshake resume replays everything after its id up to the log's head, which
        // covers what delivery may have passed by (`missed`): it must come first, or those
        // newer events would precede the older ones it replays.
        let covered = match resume_from {
            Some(id) => self.resume(id).await? == Answer::Resumed,
            None => false,
        };
        if missed && !covered {
            self.catch_up(start.last_event_id).await?;
        }
        Ok(())
    }

    async fn serve(&mut self) -> End {
        if *self.deps.shutdown.borrow() {
            // Opened after the hub's shutdown kick went past it (`Hub::close_all`).
            return End::Close(Close::GoingAway);
        }
        let interval = Duration::from_millis(self.deps.ws.heartbeat_interval_ms.max(1));
        let timeout = Duration::from_millis(self.deps.ws.client_timeout_ms.max(1));
        let mut next_ping = Instant::now() + interval;
        let mut last_heard = Instant::now();
        // One timer for the heartbeat and the token's expiry, whichever is due first: an idle
        // session waits on one `Sleep` (shutdown and overflow come as kicks).
        let timer = sleep_until(next_ping);
        tokio::pin!(timer);
        loop {
            // Between steps, and nothing queued: live events may go straight to the wire.
            self.handle.try_direct(&self.queue);
            let expires = expiry_instant(self.exp + self.deps.leeway_secs);
            timer.as_mut().reset(next_ping.min(expires));
            let step = tokio::select! {
                biased;
                _ = self.handle.kicked.notified() => Err(self.kicked()),
                out = self.queue.recv_async() => match out {
                    Ok(out) => {
                        self.handle.room.give(out.bytes());
                        Box::pin(self.outbound(out)).await
                    }
                    Err(_) => Err(End::Gone),
                },
                msg = self.stream.recv() => {
                    last_heard = Instant::now();
                    Box::pin(self.inbound(msg)).await
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= expires {
                        Err(End::Close(Close::TokenExpired))
                    } else if now < next_ping {
                        Ok(())
                    } else if now.duration_since(last_heard) > timeout {
                        Err(End::Close(Close::HeartbeatTimeout))
                    } else {
                        next_ping = now + interval;
                        Box::pin(self.write(Outgoing::Ping)).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Writes what the hub deferred to this task, decided as the hub decides in direct mode
    /// (`Delivery::decide`): a count that must be read is read here.
    async fn outbound(&mut self, item: Deferred) -> Result<(), End> {
        match self.handle.decide(&item) {
            Decision::Write(frame) => self.send(frame).await,
            Decision::WriteCount { id, count } => self.send(protocol::count_frame(id, count)).await,
            Decision::Skip => Ok(()),
            Decision::ReadCount => {
                let Deferred::Count { id, .. } = item else {
                    unreachable!("only a count is read")
                };
                let count = self.read_count(id).await?;
                self.send(protocol::count_frame(id, count)).await
            }
        }
    }

    /// The user's count as of event `id` or later, read with the log's head and anchored
    /// there (see the module doc).
    async fn read_count(&mut self, id: u64) -> Result<u64, End> {
        let start = self
            .deps
            .store
            .session_start(&self.scope())
            .await
            .map_err(|_| End::Close(Close::Unavailable))?;
        self.handle
            .state()
            .delivery
            .counted(id, start.unread_count, start.last_event_id);
        Ok(start.unread_count)
    }

    async fn inbound(&mut self, msg: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>) -> Result<(), End> {
        match msg {
            None => Err(End::Gone),
            Some(Err(actix_ws::ProtocolError::Overflow)) => Err(End::Close(Close::FrameTooBig)),
            Some(Err(actix_ws::ProtocolError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(End::Close(Close::InvalidPayload))
            }
            Some(Err(_)) => Err(End::Close(Close::ProtocolError)),
            // RFC 6455 §5.5.1: answer a Close with a Close, echoing its code.
            Some(Ok(AggregatedMessage::Close(reason))) => {
                Err(End::Close(Close::echo(reason.map(|r| u16::from(r.code)))))
            }
            // A Ping beyond the budget goes unanswered (control frames get no error frame).
            Some(Ok(AggregatedMessage::Ping(p))) if self.pay(budget::frame_cost(p.len())) => {
                self.write(Outgoing::Pong(p)).await
            }
            Some(Ok(AggregatedMessage::Ping(_) | AggregatedMessage::Pong(_))) => Ok(()),
            Some(Ok(AggregatedMessage::Binary(b))) if !self.pay(budget::frame_cost(b.len())) => {
                self.rate_limited().await
            }
            Some(Ok(AggregatedMessage::Text(t))) if !self.pay(budget::frame_cost(t.len())) => self.rate_limited().await,
            Some(Ok(AggregatedMessage::Binary(_))) => self.error(ErrorCode::BadFrame, "frames are JSON text").await,
            Some(Ok(AggregatedMessage::Text(text))) => match ClientFrame::parse(&text) {
                Ok(frame) => self.client_frame(frame).await,
                Err(e) => self.error(ErrorCode::BadFrame, &e.0).await,
            },
        }
    }

    /// Takes `cost` units from the client's budget if it holds them (see `budget`).
    fn pay(&mut self, cost: u32) -> bool {
        self.budget
            .try_take(cost, budget::Rate::from(&self.deps.ws), Instant::now())
    }

    /// The answer to a frame the budget could not pay for: it was dropped unread.
    async fn rate_limited(&mut self) -> Result<(), End> {
        let rate = budget::Rate::from(&self.deps.ws);
        let msg = format!(
            "over this session's budget ({} units a second, {} at once; a frame costs one unit per 4 KiB begun, \
             a resume one more per 100 events it may replay): the frame was dropped",
            rate.per_second, rate.burst
        );
        self.error(ErrorCode::RateLimited, &msg).await
    }

    async fn client_frame(&mut self, frame: ClientFrame) -> Result<(), End> {
        match frame {
            ClientFrame::Ping => self.pong().await,
            ClientFrame::Resume { last_event_id } => self.resume(last_event_id.parse().ok()).await.map(drop),
            ClientFrame::Follow { resource_id: None } => {
                self.deps.hub.set_follow(&self.handle, None);
                Ok(())
            }
            ClientFrame::Follow { resource_id: Some(raw) } => match UserId::parse(&raw) {
                Ok(_) if self.handle.is_service => {
                    self.error(ErrorCode::Forbidden, "service sessions have no resource view")
                        .await
                }
                Ok(u) => {
                    self.deps.hub.set_follow(&self.handle, Some(u));
                    Ok(())
                }
                Err(e) => self.error(ErrorCode::BadFrame, &format!("resource_id: {e}")).await,
            },
            ClientFrame::Refresh { token } => self.refresh(&token).await,
            ClientFrame::Presence { thread_id, state } => self.presence(&thread_id, state).await,
        }
    }

    /// Where the client says it is. A thread the caller may not read (or that does not
    /// exist) is `forbidden`; the thread's location is read once per thread.
    async fn presence(&mut self, raw: &str, state: PresenceState) -> Result<(), End> {
        if self.handle.is_service {
            return self
                .error(ErrorCode::Forbidden, "service sessions have no presence")
                .await;
        }
        let origin = self.deps.hub.origin(&self.handle);
        let tenant = self.handle.tenant.clone();
        let activity = match state {
            PresenceState::Idle => {
                self.deps.hub.set_presence(&tenant, origin, None);
                return Ok(());
            }
            PresenceState::Viewing => Activity::Viewing,
            PresenceState::Typing => Activity::Typing,
        };
        let thread = match ThreadId::parse(raw) {
            Ok(t) => t,
            Err(e) => return self.error(ErrorCode::BadFrame, &format!("thread_id: {e}")).await,
        };
        if self.presence.is_none() {
            let name = match self.deps.store.user_name(&tenant, &self.handle.user).await {
                Ok(name) => name,
                Err(_) => {
                    return self
                        .error(ErrorCode::Unavailable, "storage is unavailable; try again")
                        .await;
                }
            };
            self.presence = Some(Box::new(PresenceMemo { name, checked: None }));
        }
        let known = self
            .presence
            .as_ref()
            .and_then(|p| p.checked.clone())
            .filter(|(t, _)| *t == thread)
            .map(|(_, l)| l);
        let location = match known {
            Some(l) => Some(l),
            None => match self.deps.store.thread(&tenant, &thread).await {
                Ok(t) => Some(t.location_id),
                // As for one at a location the token lacks: nothing says which it is.
                Err(StoreError::NotFound(_)) => None,
                Err(_) => {
                    return self
                        .error(ErrorCode::Unavailable, "storage is unavailable; try again")
                        .await;
                }
            },
        };
        let Some(location) = location.filter(|l| self.handle.state().locations.contains(l)) else {
            return self.error(ErrorCode::Forbidden, "you may not read this thread").await;
        };
        // unwrap: made above.
        let memo = self.presence.as_mut().unwrap();
        memo.checked = Some((thread.clone(), location.clone()));
        let place = Place {
            thread,
            location,
            present: Present {
                user: self.handle.user.clone(),
                name: memo.name.clone(),
                activity,
            },
        };
        self.deps.hub.set_presence(&tenant, origin, Some(place));
        Ok(())
    }

    /// Answers `ping` once every event committed before it reached this session has been
    /// written: the bus brings this node up to the log's head, then the queue is drained.
    async fn pong(&mut self) -> Result<(), End> {
        if let Err(e) = self.deps.bus.barrier(&self.handle.tenant).await {
            debug!(error = %e, "no delivery barrier; answering ping anyway");
        }
        while let Some(out) = self.take_queued() {
            self.outbound(out).await?;
        }
        self.send(ServerFrame::Pong.encode()).await
    }

    async fn refresh(&mut self, token: &str) -> Result<(), End> {
        match self.deps.verifier.verify(token) {
            Err(e) => self.error(ErrorCode::Unauthorized, &e.to_string()).await,
            Ok(p) if p.tenant != self.handle.tenant || p.user != self.handle.user => {
                self.error(ErrorCode::Forbidden, "a refresh token must be for the same user")
                    .await
            }
            Ok(p) => {
                self.exp = p.exp;
                self.deps.hub.set_locations(&self.handle, p.locations);
                Ok(())
            }
        }
    }

    /// Replays what this user should have received after `after`, then says `resumed`; or
    /// says `resync` when the log cannot tell.
    async fn resume(&mut self, after: Option<u64>) -> Result<Answer, End> {
        // Live events wait in the task's queue until `resumed` is written (the serve loop
        // drains it, then re-enters direct mode).
        self.handle.pause_direct();
        let Some(after) = after else {
            return self.resync().await;
        };
        // Paid for before the log is read: the events up to the newest this session knows of,
        // settled below with what the log held.
        let rate = budget::Rate::from(&self.deps.ws);
        let limit = self.deps.ws.replay_limit as u64;
        let known = self.opened_at.max(self.handle.state().delivery.last_sent);
        let estimate = budget::replay_cost(known.saturating_sub(after).min(limit), rate);
        if !self.pay(estimate) {
            self.rate_limited().await?;
            return Ok(Answer::Dropped);
        }
        let events = match self
            .deps
            .store
            .events_after(&self.handle.tenant, after, self.deps.ws.replay_limit)
            .await
        {
            Ok(Replay::Events(events)) => events,
            Ok(Replay::TooOld) => return self.resync().await,
            Err(_) => return Err(End::Close(Close::Unavailable)),
        };
        let cost = budget::replay_cost(events.len() as u64, rate);
        self.budget.charge(cost.saturating_sub(estimate), rate, Instant::now());
        let replayed = self.replay(&events).await?;
        self.send(ServerFrame::Resumed { replayed }.encode()).await?;
        Ok(Answer::Resumed)
    }

    async fn resync(&mut self) -> Result<Answer, End> {
        self.send(ServerFrame::Resync.encode()).await?;
        Ok(Answer::Resync)
    }

    /// Sends what delivery handed out after the session's snapshot `after` but before the
    /// session joined the subscribers' index (`Hub::open_view`), so `hello.last_event_id`
    /// holds: every later event reaches the session. Live events wait in the task's queue
    /// meanwhile and are skipped there once sent from here.
    async fn catch_up(&mut self, after: u64) -> Result<(), End> {
        match self
            .deps
            .store
            .events_after(&self.handle.tenant, after, self.deps.ws.replay_limit)
            .await
        {
            Ok(Replay::Events(events)) => self.replay(&events).await.map(|_| ()),
            Ok(Replay::TooOld) => Err(End::Close(Close::TooSlow)),
            Err(_) => Err(End::Close(Close::Unavailable)),
        }
    }

    /// Writes the events of `events` this session receives and has not written yet; returns
    /// how many.
    async fn replay(&mut self, events: &[Event]) -> Result<u64, End> {
        let mut subscribed = self.subscribed_before(events);
        let mut replayed = 0u64;
        // Only this task moves it outside direct mode.
        let last_sent = self.handle.state().delivery.last_sent;
        for e in events {
            if e.kind == EventKind::SubscriptionChanged {
                if e.route.users.contains(&self.handle.user) {
                    subscribed = event::subscribe_all_of(e);
                }
                continue;
            }
            // Sent live already: this session wrote every event it should have after it
            // opened, up to `last_sent`.
            let sent_live = e.id > self.opened_at && e.id <= last_sent;
            if sent_live || !Hub::receives(&self.handle, e, Some(subscribed)) {
                continue;
            }
            if e.kind == EventKind::UnreadCount {
                self.replay_count(e.id, event::count_delta(&e.data)).await?;
            } else {
                self.send(protocol::event_frame(e.kind, e.id, &e.data)).await?;
            }
            replayed += 1;
        }
        if let Some(last) = events.last() {
            let mut state = self.handle.state();
            state.delivery.last_sent = state.delivery.last_sent.max(last.id);
        }
        Ok(replayed)
    }

    /// A replayed `unread.count`: as live, the anchor covers the older ones and deltas move it
    /// on; anything else reads the count again.
    async fn replay_count(&mut self, id: u64, delta: Option<i64>) -> Result<(), End> {
        let stale = self.handle.take_count_stale();
        let stepped = self.handle.state().delivery.counts.step(id, delta, stale);
        let count = match stepped {
            Some(n) => n,
            None => self.read_count(id).await?,
        };
        self.send(protocol::count_frame(id, count)).await
    }

    /// The user's `subscribe_all` before the first of `events`: the opposite of the first
    /// change among them, or the current value if none.
    fn subscribed_before(&self, events: &[Event]) -> bool {
        events
            .iter()
            .find(|e| e.kind == EventKind::SubscriptionChanged && e.route.users.contains(&self.handle.user))
            .map(|e| !event::subscribe_all_of(e))
            .unwrap_or_else(|| self.handle.state().subscribe_all)
    }
}

/// The instant a token expiring at `exp` (seconds since the epoch) runs out.
fn expiry_instant(exp: u64) -> Instant {
    let now = now_secs();
    Instant::now() + Duration::from_secs(exp.saturating_sub(now)).min(Duration::from_secs(365 * 24 * 3600))
}
