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
//!   wait in the task's queue (`Outbound`) until `hello` (and a handshake replay) is written.
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
//! - `last_sent` and the count anchor live in the session's state (under its mutex), shared
//!   by the hub and the task; whoever writes an event's frame sets `last_sent` to its id.
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
//! In direct mode the hub takes the steps that need no read (under the state mutex, where the
//! anchor lives); a stale mark or a step that needs a read hands the count to this task.

pub mod budget;
pub mod inbound;
pub mod wire;

use std::{sync::Arc, time::Duration};

use actix_ws::AggregatedMessage;
use serde_json::{Value, json};
use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use tracing::{debug, info};

use crate::{
    auth::{Principal, Verifier, now_secs},
    bus::Bus,
    config::WsSettings,
    domain::{Id, UserId},
    event::{self, Event, EventKind},
    hub::{self, Hub, Outbound, SessionHandle},
    store::{Replay, Scope, Store},
};
use budget::Budget;
use wire::Wire;

/// Close codes of the contract.
pub mod close {
    /// The token expired (or was revoked).
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The client fell behind: its queue overflowed. It should resume.
    pub const TOO_SLOW: u16 = crate::hub::CLOSE_TOO_SLOW;
    /// A frame above `ws.max_frame_bytes`.
    pub const FRAME_TOO_BIG: u16 = 4009;
    /// No frame or pong within `ws.client_timeout_ms`.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The server is shutting down: reconnect (elsewhere) and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the websocket protocol (RFC 6455).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8 (RFC 6455 §8.1).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The answer to a client's Close without a code.
    pub const NORMAL: u16 = 1000;
    /// A dependency (storage, the bus) failed: reconnect later and resume.
    pub const UNAVAILABLE: u16 = 1011;

    /// The code to answer a client's Close with: its own (RFC 6455 §5.5.1), unless that is
    /// one an endpoint may not send (1004–1006, 1015, unassigned ones), then 1000.
    pub fn echo(code: Option<u16>) -> u16 {
        match code {
            Some(c @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => c,
            _ => NORMAL,
        }
    }
}

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
    wire: flume::Sender<Wire>,
    /// What the hub queued for this task (outside direct mode).
    queue: flume::Receiver<Outbound>,
    /// The client's frames.
    stream: inbound::Reader,
    /// The log's head when the session opened (`hello.last_event_id`): events after it
    /// reach the session live.
    opened_at: u64,
    /// When the token runs out (seconds since the epoch).
    exp: u64,
    /// What the client may still ask of the hub (`budget`).
    budget: Budget,
}

/// The session's unread count, exact as of event `as_of` (the module doc has the argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountAnchor {
    pub count: u64,
    pub as_of: u64,
}

impl CountAnchor {
    /// The count to write for `unread.count` event `id` carrying `delta`, without a read;
    /// `None` when it must be read again (then `anchor` it). `stale`: the hub marked the
    /// session's count stale since the last anchor.
    pub fn step(&mut self, id: u64, delta: Option<i64>, stale: bool) -> Option<u64> {
        if stale {
            return None;
        }
        if id <= self.as_of {
            // Already counted: the anchor was read at or after this event.
            return Some(self.count);
        }
        let d = delta?;
        self.count = self.count.saturating_add_signed(d);
        self.as_of = id;
        Some(self.count)
    }

    /// A count read together with the log's head `as_of`.
    pub fn anchor(&mut self, count: u64, as_of: u64) {
        *self = CountAnchor { count, as_of };
    }
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

/// Why the loop ended.
enum End {
    Close(u16, &'static str),
    Gone,
}

impl End {
    /// The client fell behind (or the log no longer reaches back to it): it resumes.
    const TOO_SLOW: End = End::Close(close::TOO_SLOW, "too slow: resume");
    /// The server is stopping: the client resumes on another node.
    const GOING_AWAY: End = End::Close(close::GOING_AWAY, "server shutting down: resume elsewhere");
}

/// Runs a session until it closes. Its frames go to `handle.wire`, which the response body
/// drains (`wire::OutBody`).
///
/// Not an `async fn`: the future holds only the `Conn` (an `async fn` would keep every
/// argument, `principal` included, for the session's whole life).
pub fn run(
    deps: Arc<Deps>,
    handle: Arc<SessionHandle>,
    queue: flume::Receiver<Outbound>,
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
    };
    conn.run(resume_from)
}

impl Conn {
    async fn run(mut self, resume_from: Option<String>) {
        let tenant = self.handle.tenant.clone();
        let end = match self.deps.bus.join(&tenant).await {
            Err(e) => {
                tracing::warn!(error = %e, "the bus is unavailable; refusing the session");
                End::Close(close::UNAVAILABLE, "bus unavailable: reconnect later")
            }
            Ok(()) => {
                // Boxed here and in `serve`: what runs only now and then must not size the
                // idle session's future (a state machine is as large as its largest await).
                let end = match Box::pin(self.open(resume_from.as_deref())).await {
                    Ok(()) => self.serve().await,
                    Err(end) => end,
                };
                self.deps.bus.leave(&tenant);
                end
            }
        };
        self.deps.hub.unregister(&self.handle);
        if let End::Close(code, reason) = end {
            debug!(code, reason, "closing session");
            let close = self.wire.send_async(Wire::Close(code, reason));
            let _ = tokio::time::timeout(CLOSE_PATIENCE, close).await;
        }
        // Without a close frame, the body ends once the last sender (this one, the handle's) is
        // gone.
        info!("session closed");
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
    async fn write(&mut self, frame: Wire) -> Result<(), End> {
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
    fn take_queued(&self) -> Option<Outbound> {
        let out = self.queue.try_recv().ok()?;
        self.handle.room.give(out.bytes());
        Some(out)
    }

    /// How the session ends when the hub kicked it.
    fn kicked(&self) -> End {
        match self.handle.kick_code() {
            Some(close::GOING_AWAY) => End::GOING_AWAY,
            _ => End::TOO_SLOW,
        }
    }

    async fn send(&mut self, frame: impl Into<bytestring::ByteString>) -> Result<(), End> {
        self.write(Wire::Text(frame.into())).await
    }

    async fn send_json(&mut self, v: Value) -> Result<(), End> {
        self.send(v.to_string()).await
    }

    async fn error(&mut self, code: &str, message: impl Into<String>) -> Result<(), End> {
        self.send_json(json!({"type": "error", "code": code, "message": message.into()}))
            .await
    }

    /// Reads the session's starting point and says hello; with `resume_from` (the handshake's
    /// `last_event_id`), replays what came after it before any live event.
    async fn open(&mut self, resume_from: Option<&str>) -> Result<(), End> {
        // The snapshot below is the first anchor: nothing before it can make it stale.
        self.handle.take_count_stale();
        let mut start = self
            .deps
            .store
            .session_start(&self.scope())
            .await
            .map_err(|_| End::Close(close::UNAVAILABLE, "storage unavailable"))?;
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
            let mut state = self.handle.state();
            state.counts.anchor(start.unread_count, start.last_event_id);
            state.last_sent = start.last_event_id;
        }
        self.opened_at = start.last_event_id;
        let hello = json!({
            "type": "hello",
            "session_id": self.handle.id,
            "user_id": self.handle.user,
            "unread_count": start.unread_count,
            "last_event_id": start.last_event_id.to_string(),
        });
        self.send_json(hello).await?;
        // A handshake resume replays everything after its id up to the log's head, which
        // covers what delivery may have passed by (`missed`): it must come first, or those
        // newer events would precede the older ones it replays.
        let covered = match resume_from {
            Some(id) => self.resume(id.parse().ok()).await? == Answer::Resumed,
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
            return End::GOING_AWAY;
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
                        Err(End::Close(close::TOKEN_EXPIRED, "token expired"))
                    } else if now < next_ping {
                        Ok(())
                    } else if now.duration_since(last_heard) > timeout {
                        Err(End::Close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"))
                    } else {
                        next_ping = now + interval;
                        Box::pin(self.write(Wire::Ping)).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sets `last_sent` to `id` if it is newer; false if the client already has it.
    fn advance(&self, id: u64) -> bool {
        let mut state = self.handle.state();
        if id > state.last_sent {
            state.last_sent = id;
            true
        } else {
            false
        }
    }

    /// Writes one queued item, unless the client already has it (the hub's
    /// `direct_frame` does the same in direct mode).
    async fn outbound(&mut self, out: Outbound) -> Result<(), End> {
        match out {
            Outbound::Event { id, frame } if self.advance(id) => self.send(frame).await,
            Outbound::Count { id, delta } if self.advance(id) => self.count(id, delta).await,
            _ => Ok(()),
        }
    }

    /// Sends `unread.count` with event id `id` and the user's count as of that event (or a
    /// later one): the anchor plus `delta`, or read again (see the module doc). The store
    /// routes count events only to users whose count moved, so live and replayed sessions see
    /// the same ids.
    async fn count(&mut self, id: u64, delta: Option<i64>) -> Result<(), End> {
        if self.handle.is_service {
            return Ok(());
        }
        // Outside direct mode: only this task moves the anchor.
        let stale = self.handle.take_count_stale();
        let stepped = self.handle.state().counts.step(id, delta, stale);
        let n = match stepped {
            Some(n) => n,
            None => {
                // The count and the head in one read: exact as of that head.
                let start = self
                    .deps
                    .store
                    .session_start(&self.scope())
                    .await
                    .map_err(|_| End::Close(close::UNAVAILABLE, "storage unavailable: resume later"))?;
                self.handle
                    .state()
                    .counts
                    .anchor(start.unread_count, start.last_event_id);
                start.unread_count
            }
        };
        self.send(hub::count_frame(id, n)).await
    }

    async fn inbound(&mut self, msg: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>) -> Result<(), End> {
        match msg {
            None => Err(End::Gone),
            Some(Err(actix_ws::ProtocolError::Overflow)) => Err(End::Close(close::FRAME_TOO_BIG, "frame too big")),
            Some(Err(actix_ws::ProtocolError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(End::Close(close::INVALID_PAYLOAD, "text frames must be UTF-8"))
            }
            Some(Err(_)) => Err(End::Close(close::PROTOCOL_ERROR, "protocol error")),
            // RFC 6455 §5.5.1: answer a Close with a Close, echoing its code.
            Some(Ok(AggregatedMessage::Close(reason))) => {
                Err(End::Close(close::echo(reason.map(|r| u16::from(r.code))), ""))
            }
            // A Ping beyond the budget goes unanswered (control frames get no error frame).
            Some(Ok(AggregatedMessage::Ping(p))) if self.pay(budget::frame_cost(p.len())) => {
                self.write(Wire::Pong(p)).await
            }
            Some(Ok(AggregatedMessage::Ping(_) | AggregatedMessage::Pong(_))) => Ok(()),
            Some(Ok(AggregatedMessage::Binary(b))) if !self.pay(budget::frame_cost(b.len())) => {
                self.rate_limited().await
            }
            Some(Ok(AggregatedMessage::Text(t))) if !self.pay(budget::frame_cost(t.len())) => self.rate_limited().await,
            Some(Ok(AggregatedMessage::Binary(_))) => self.error("bad_frame", "frames are JSON text").await,
            Some(Ok(AggregatedMessage::Text(text))) => match serde_json::from_str::<Value>(&text) {
                Ok(v) => self.client_frame(v).await,
                Err(_) => self.error("bad_frame", "frames are JSON text").await,
            },
        }
    }

    /// Takes `cost` units from the client's budget if it holds them (see `budget`).
    fn pay(&mut self, cost: u32) -> bool {
        self.budget.try_take(cost, self.deps.ws.frame_rate(), Instant::now())
    }

    /// The answer to a frame the budget could not pay for: it was dropped unread.
    async fn rate_limited(&mut self) -> Result<(), End> {
        let rate = self.deps.ws.frame_rate();
        let msg = format!(
            "over this session's budget ({} units a second, {} at once; a frame costs one unit per 4 KiB begun, \
             a resume one more per 100 events it may replay): the frame was dropped",
            rate.per_second, rate.burst
        );
        self.error("rate_limited", msg).await
    }

    async fn client_frame(&mut self, v: Value) -> Result<(), End> {
        match v.get("type").and_then(Value::as_str) {
            Some("ping") => self.pong().await,
            Some("resume") => match v.get("last_event_id") {
                Some(Value::String(s)) => self.resume(s.parse().ok()).await.map(drop),
                _ => self.error("bad_frame", "resume needs last_event_id (a string)").await,
            },
            Some("follow") => match v.get("resource_id") {
                Some(Value::Null) => {
                    self.deps.hub.set_follow(&self.handle, None);
                    Ok(())
                }
                Some(Value::String(s)) => match UserId::parse(s) {
                    Ok(_) if self.handle.is_service => {
                        self.error("forbidden", "service sessions have no resource view").await
                    }
                    Ok(u) => {
                        self.deps.hub.set_follow(&self.handle, Some(u));
                        Ok(())
                    }
                    Err(e) => self.error("bad_frame", format!("resource_id: {e}")).await,
                },
                _ => {
                    self.error("bad_frame", "follow needs resource_id (a user id or null)")
                        .await
                }
            },
            Some("refresh") => match v.get("token").and_then(Value::as_str) {
                Some(token) => self.refresh(token).await,
                None => self.error("bad_frame", "refresh needs token").await,
            },
            Some(other) => {
                let msg = format!("unknown frame type {other:?}");
                self.error("bad_frame", msg).await
            }
            None => self.error("bad_frame", "frames need a string type").await,
        }
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
        self.send_json(json!({"type": "pong"})).await
    }

    async fn refresh(&mut self, token: &str) -> Result<(), End> {
        match self.deps.verifier.verify(token) {
            Err(e) => self.error("unauthorized", e.to_string()).await,
            Ok(p) if p.tenant != self.handle.tenant || p.user != self.handle.user => {
                self.error("forbidden", "a refresh token must be for the same user")
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
        let rate = self.deps.ws.frame_rate();
        let limit = self.deps.ws.replay_limit as u64;
        let known = self.opened_at.max(self.handle.state().last_sent);
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
            Err(_) => return Err(End::Close(close::UNAVAILABLE, "storage unavailable: resume later")),
        };
        let cost = budget::replay_cost(events.len() as u64, rate);
        self.budget.charge(cost.saturating_sub(estimate), rate, Instant::now());
        let replayed = self.replay(&events).await?;
        self.send_json(json!({"type": "resumed", "replayed": replayed})).await?;
        Ok(Answer::Resumed)
    }

    async fn resync(&mut self) -> Result<Answer, End> {
        self.send_json(json!({"type": "resync"})).await?;
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
            Ok(Replay::TooOld) => Err(End::TOO_SLOW),
            Err(_) => Err(End::Close(close::UNAVAILABLE, "storage unavailable: resume later")),
        }
    }

    /// Writes the events of `events` this session receives and has not written yet; returns
    /// how many.
    async fn replay(&mut self, events: &[Event]) -> Result<u64, End> {
        let mut subscribed = self.subscribed_before(events);
        let mut replayed = 0u64;
        // Only this task moves it outside direct mode.
        let last_sent = self.handle.state().last_sent;
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
                // As live: the anchor covers the older ones, deltas move it on.
                self.count(e.id, event::count_delta(&e.data)).await?;
            } else {
                self.send(e.frame()).await?;
            }
            replayed += 1;
        }
        if let Some(last) = events.last() {
            let mut state = self.handle.state();
            state.last_sent = state.last_sent.max(last.id);
        }
        Ok(replayed)
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

#[cfg(test)]
mod tests {
    use super::CountAnchor;

    #[test]
    fn a_count_anchor_adds_deltas_past_it_and_reads_for_anything_else() {
        let mut a = CountAnchor::default();
        a.anchor(5, 100);
        assert_eq!(a.step(90, Some(1), false), Some(5), "counted in the anchor already");
        assert_eq!(a.step(100, None, false), Some(5), "counted in the anchor already");
        assert_eq!(a.step(101, Some(1), false), Some(6));
        assert_eq!(a.step(105, Some(1), false), Some(7));
        assert_eq!(a, CountAnchor { count: 7, as_of: 105 });
        assert_eq!(a.step(106, None, false), None, "recompute");
        assert_eq!(a.step(104, Some(1), true), None, "stale: read whatever the event");
        a.anchor(2, 110);
        assert_eq!(a.step(108, Some(1), false), Some(2));
        assert_eq!(a.step(111, Some(-5), false), Some(0), "never below zero");
    }
}
