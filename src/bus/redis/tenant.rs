//! One tenant's subscription on this node and the order of its deliveries: a task that owns
//! the session count, the SUBSCRIBE/UNSUBSCRIBE of the tenant's channel, and the tenant's
//! `Cursor`: the id of the newest event handed to the hub.
//!
//! Everything about one tenant happens in this one task, in the order it arrived: so a
//! SUBSCRIBE and an UNSUBSCRIBE of the same channel never race on the connection, a catch-up
//! from the log never interleaves with live messages, and the hub sees ids only increase.
//! The cursor publishes how far it got on a `watch`, for `Bus::barrier`.
//!
//! States: *live* (SUBSCRIBE confirmed on the current connection and `last` known: a message
//! with id `last + 1` is delivered at once) or not (a fresh task, or a disconnect happened).
//! Leaving *not live* is `sync`: SUBSCRIBE, wait for the confirmation, then either read the
//! log's head (first join) or catch up from `last` (after a disconnect). A failed `sync`
//! while Redis answers is retried a few times, then the tenant's sessions here are closed
//! (4008) rather than left deaf; while Redis is away the task waits for the supervisor's
//! `Reconnected`.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until},
};
use tracing::{debug, info, warn};

use super::{CATCH_UP_LIMIT, COMMAND_TIMEOUT, Shared};
use crate::{bus::EventSink, domain::TenantId, event::Event, store::Replay};

/// What a tenant task is told.
pub(super) enum Input {
    /// A session of the tenant opens here: answer once this node receives its events.
    Join(oneshot::Sender<Result<(), String>>),
    /// A session of the tenant closed here.
    Leave,
    /// A pub/sub message on the tenant's channel (`Event::to_wire` text).
    Message(String),
    /// The connection dropped: pub/sub may be missing events from here on.
    Disconnected,
    /// The connection is back: resubscribe and catch up.
    Reconnected,
}

/// Failed syncs (while Redis answers) before the tenant's sessions are closed to resume.
const GIVE_UP_AFTER: u32 = 4;
/// First retry delay after a failed sync or unsubscribe; doubles up to `RETRY_MAX`.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Where delivery of one tenant stands on this node.
#[derive(Debug)]
struct Cursor {
    /// SUBSCRIBE confirmed on the current connection and `last` up to date: what follows
    /// `last` may be handed over as it comes.
    live: bool,
    /// The newest event id handed to the hub (or known to precede every session's hello).
    last: Option<u64>,
    /// `last` as it was last known, for `Bus::barrier`.
    delivered: watch::Sender<u64>,
}

/// What `Cursor::advance` found.
#[derive(Debug, PartialEq, Eq)]
enum Advance {
    /// Everything new was handed over (possibly nothing: all delivered already).
    Done,
    /// An event does not follow `last`: what precedes it is missing.
    Gap,
    /// `last` is unknown.
    Unknown,
}

impl Cursor {
    /// Hands the hub the events (in id order) that continue `last` without a hole; those at or
    /// below it were delivered already. Stops at the first hole.
    fn advance(&mut self, events: &[Arc<Event>], sink: &dyn EventSink) -> Advance {
        let Some(mut last) = self.last else {
            return Advance::Unknown;
        };
        let mut from = events.len();
        let mut to = events.len();
        let mut outcome = Advance::Done;
        for (i, e) in events.iter().enumerate() {
            if e.id <= last {
                continue;
            }
            if e.id != last + 1 {
                outcome = Advance::Gap;
                to = i;
                break;
            }
            from = from.min(i);
            last = e.id;
        }
        if from < to {
            sink.deliver(&events[from..to]);
            self.set_last(Some(last));
        }
        outcome
    }

    fn set_last(&mut self, last: Option<u64>) {
        self.last = last;
        if let Some(last) = last {
            self.delivered.send_replace(last);
        }
    }
}

pub(super) struct TenantTask {
    shared: Arc<Shared>,
    tenant: TenantId,
    channel: String,
    generation: u64,
    /// Sessions of the tenant on this node that joined and have not left.
    sessions: usize,
    /// The channel may be subscribed (or in redis-rs's resubscription list): it must be
    /// unsubscribed before the task ends.
    maybe_subscribed: bool,
    cursor: Cursor,
    failures: u32,
    retry_at: Option<Instant>,
}

impl TenantTask {
    /// A task for `tenant`, reporting how far it delivered on `delivered`.
    pub(super) fn new(
        shared: Arc<Shared>,
        tenant: TenantId,
        generation: u64,
        delivered: watch::Sender<u64>,
    ) -> TenantTask {
        TenantTask {
            channel: shared.channel(&tenant),
            shared,
            tenant,
            generation,
            sessions: 0,
            maybe_subscribed: false,
            cursor: Cursor {
                live: false,
                last: None,
                delivered,
            },
            failures: 0,
            retry_at: None,
        }
    }

    pub(super) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Input>) {
        loop {
            let input = match self.retry_at {
                Some(at) => tokio::select! {
                    input = inbox.recv() => input,
                    _ = sleep_until(at) => {
                        self.retry_at = None;
                        self.repair().await;
                        continue;
                    }
                },
                None => inbox.recv().await,
            };
            let Some(input) = input else {
                // The bus is gone.
                return;
            };
            self.handle(input).await;
            if self.sessions == 0 && !self.maybe_subscribed && self.shared.retire(&self.tenant, self.generation, &inbox)
            {
                debug!(tenant = %self.tenant, "no session of this tenant left: unsubscribed");
                return;
            }
        }
    }

    fn live(&self) -> bool {
        self.cursor.live
    }

    fn set_live(&mut self, live: bool) {
        self.cursor.live = live;
    }

    fn set_last(&mut self, last: Option<u64>) {
        self.cursor.set_last(last);
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Join(reply) => {
                self.sessions += 1;
                let synced = if self.live() { Ok(()) } else { self.sync().await };
                match synced {
                    Ok(()) => {
                        if reply.send(Ok(())).is_err() {
                            // The session stopped waiting (join timed out): it never leaves.
                            self.leave().await;
                        }
                    }
                    Err(e) => {
                        warn!(tenant = %self.tenant, error = %e, "could not subscribe for a session");
                        self.sessions -= 1;
                        let _ = reply.send(Err(e));
                        self.after_failure();
                        if self.sessions == 0 {
                            self.release().await;
                        }
                    }
                }
            }
            Input::Leave => self.leave().await,
            Input::Message(payload) => self.message(&payload).await,
            Input::Disconnected => {
                self.set_live(false);
                self.failures = 0;
                self.retry_at = None;
            }
            Input::Reconnected => {
                self.failures = 0;
                self.repair().await;
            }
        }
    }

    async fn leave(&mut self) {
        self.sessions = self.sessions.saturating_sub(1);
        if self.sessions == 0 {
            self.release().await;
        }
    }

    /// Brings the task to where it should be: live while it has sessions, unsubscribed when
    /// it has none.
    async fn repair(&mut self) {
        if self.sessions == 0 {
            if self.maybe_subscribed {
                self.release().await;
            }
        } else if !self.live() {
            if let Err(e) = self.sync().await {
                warn!(tenant = %self.tenant, error = %e, "could not resubscribe and catch up");
                self.after_failure();
            }
        }
    }

    /// SUBSCRIBE (confirmed), then the log's head for a first join or a catch-up after a gap.
    async fn sync(&mut self) -> Result<(), String> {
        self.maybe_subscribed = true;
        let mut conn = self.shared.conn.clone();
        within(COMMAND_TIMEOUT, conn.subscribe(&self.channel)).await?;
        match self.cursor.last {
            // Read after the confirmation: every event after the head reaches us live, and a
            // session reads its hello's head after this, so it misses nothing in between.
            None => {
                let head = self.head().await?;
                self.set_last(Some(head));
            }
            Some(last) => self.catch_up(last).await?,
        }
        self.set_live(true);
        self.failures = 0;
        self.retry_at = None;
        Ok(())
    }

    /// UNSUBSCRIBE once the last session left.
    async fn release(&mut self) {
        self.set_live(false);
        self.set_last(None);
        let mut conn = self.shared.conn.clone();
        match within(COMMAND_TIMEOUT, conn.unsubscribe(&self.channel)).await {
            Ok(()) => {
                self.maybe_subscribed = false;
                self.failures = 0;
                self.retry_at = None;
            }
            Err(e) => {
                // Kept: retried, and redis-rs would resubscribe it after a reconnect otherwise.
                debug!(tenant = %self.tenant, error = %e, "unsubscribe failed; will retry");
                self.after_failure();
            }
        }
    }

    async fn message(&mut self, payload: &str) {
        if self.sessions == 0 {
            return;
        }
        if !self.live() {
            // A message after a disconnect, before `Reconnected` reached us: catch up first.
            if let Err(e) = self.sync().await {
                warn!(tenant = %self.tenant, error = %e, "could not catch up before a message");
                self.after_failure();
                return;
            }
        }
        let Some(event) = Event::from_wire(&self.tenant, payload) else {
            // The next event will look like a gap and be fetched from the log with this one.
            warn!(tenant = %self.tenant, "an unreadable message on the event channel");
            return;
        };
        let event = [Arc::new(event)];
        let advance = self.cursor.advance(&event, &*self.shared.sink);
        let (Advance::Gap, Some(last)) = (advance, self.cursor.last) else {
            return;
        };
        let id = event[0].id;
        debug!(tenant = %self.tenant, last, id, "a gap in the channel: catching up");
        if let Err(e) = self.catch_up(last).await {
            warn!(tenant = %self.tenant, error = %e, "could not fill a gap from the log");
            self.set_live(false);
            self.after_failure();
            return;
        }
        if self.cursor.advance(&event, &*self.shared.sink) == Advance::Gap {
            warn!(tenant = %self.tenant, id, "the log does not hold the events before a published one");
            self.shared.sink.lost(&self.tenant);
            self.shared.sink.deliver(&event);
            self.set_last(Some(id));
        }
    }

    /// Hands the hub what the log holds after `after`. When it no longer reaches back that far
    /// the sessions here cannot be made whole: they are closed to resume, and delivery goes on
    /// from the current head.
    async fn catch_up(&mut self, after: u64) -> Result<(), String> {
        let replay = self
            .shared
            .log
            .events_after(&self.tenant, after, CATCH_UP_LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        match replay {
            Replay::Events(events) => {
                let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
                let before = self.cursor.last;
                if self.cursor.advance(&events, &*self.shared.sink) == Advance::Gap {
                    warn!(tenant = %self.tenant, after, "the log has a hole");
                }
                if self.cursor.last != before {
                    info!(tenant = %self.tenant, after, newest = ?self.cursor.last, "caught up from the log");
                }
                Ok(())
            }
            Replay::TooOld => {
                warn!(tenant = %self.tenant, after, "the log no longer reaches back to the last event delivered here: closing the tenant's sessions to resume");
                // Unknown until the head is read: if that fails, the next sync reads it. Read
                // before the sessions are told, so that delivery has moved on when they resume.
                self.set_last(None);
                let head = self.head().await;
                self.shared.sink.lost(&self.tenant);
                self.set_last(Some(head?));
                Ok(())
            }
        }
    }

    /// The id of the tenant's newest event (0 when none).
    async fn head(&self) -> Result<u64, String> {
        let mut conn = self.shared.conn.clone();
        let head: Option<u64> = within(
            COMMAND_TIMEOUT,
            redis::cmd("GET")
                .arg(self.shared.seq_key(&self.tenant))
                .query_async(&mut conn),
        )
        .await?;
        Ok(head.unwrap_or(0))
    }

    /// Schedules a retry of `repair`, or gives up on the sessions here after too many failures
    /// while Redis answers. While it is away the supervisor's `Reconnected` is the retry.
    fn after_failure(&mut self) {
        self.retry_at = None;
        if !self.shared.connected() {
            return;
        }
        self.failures += 1;
        if self.sessions > 0 && !self.live() && self.failures >= GIVE_UP_AFTER {
            warn!(tenant = %self.tenant, "cannot catch up from the log: closing the tenant's sessions to resume");
            self.shared.sink.lost(&self.tenant);
            // Sessions that join from now on read the head again.
            self.set_last(None);
            self.failures = 0;
            return;
        }
        let delay = RETRY_BASE * 2u32.pow(self.failures.min(5));
        self.retry_at = Some(Instant::now() + delay.min(RETRY_MAX));
    }
}

/// Runs a Redis command with a deadline of its own.
async fn within<T>(
    limit: Duration,
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, command).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("Redis: {e}")),
        Err(_) => Err("Redis did not answer in time".into()),
    }
}
