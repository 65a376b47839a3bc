//! One tenant's delivery on this node: a task owning the tenant's session count, its
//! partition subscription and its delivery order (`Order`: the newest id handed to the hub,
//! and the events that arrived ahead of a hole).
//!
//! Everything about one tenant happens in this task, in the order it arrived, so the hub sees
//! the tenant's ids only increase, each once. Events come from the transport (`Events`), from
//! the log when a hole is filled (`catch_up`), or both; ids at or below the last delivered
//! are dropped, and an event above the next expected one waits in `Order::ahead` until the
//! hole is filled, by a late message or, after `REORDER_WAIT`, from the log.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until},
};
use tracing::{debug, info, warn};

use super::{LOG_TIMEOUT, Shared};
use crate::{domain::TenantId, event::Event, store::Replay};

/// What a tenant task is told.
pub(super) enum Input {
    /// A session of the tenant opens here: answer once this node delivers its events.
    Join(oneshot::Sender<Result<(), String>>),
    /// A session of the tenant closed here.
    Leave,
    /// A published batch of the tenant's events, in id order.
    Events(Vec<Arc<Event>>),
    /// The transport may have lost messages of the tenant's partition, and is subscribed
    /// again: catch up, then messages flow.
    Gap,
    /// The transport has lost the tenant's partition for a while and is still trying: until
    /// the next `Gap`, the head check delivers.
    Interrupted,
    /// The head check read the log's head; `transport_up`: messages are expected to flow.
    Head { head: u64, transport_up: bool },
    /// Someone waits for delivery to reach this head (a `ping`'s barrier): catch up now.
    CatchUp(u64),
}

/// How long events ahead of a hole wait for the publishes before them before the hole is
/// filled from the log. Two writers' publishes of one tenant may cross on the way.
const REORDER_WAIT: Duration = Duration::from_millis(5);
/// Events held ahead of a hole at most; beyond it the hole is filled from the log at once.
const MAX_AHEAD: usize = 4096;
/// Most events one catch-up reads; a node further behind than this closes the tenant's
/// sessions (they resume) rather than pushing that many frames at them.
const CATCH_UP_LIMIT: usize = 10_000;
/// After a failed read of the log: first retry delay, doubling up to `RETRY_MAX`.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What made a task read the log.
#[derive(Debug, Clone, Copy)]
enum Reason {
    /// Events arrived ahead of a hole that no late message filled.
    Reorder,
    /// The transport said it may have lost messages.
    Gap,
    /// The head check found an event whose publish did not come.
    Head,
    /// The transport is down: the head check delivers.
    Outage,
    /// A `ping` waits for delivery to reach the head.
    Barrier,
    /// An earlier read failed.
    Retry,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Reorder => "reorder",
            Reason::Gap => "gap",
            Reason::Head => "head",
            Reason::Outage => "outage",
            Reason::Barrier => "barrier",
            Reason::Retry => "retry",
        }
    }
}

/// Where delivery of the tenant stands.
#[derive(Debug)]
struct Order {
    /// The newest id handed to the hub (or known to precede every session's hello); `None`
    /// until the log's head was read.
    last: Option<u64>,
    /// Events above `last + 1`, waiting for the hole below them.
    ahead: BTreeMap<u64, Arc<Event>>,
    /// `last`, for `Bus::barrier`.
    delivered: watch::Sender<u64>,
}

impl Order {
    /// Takes `events` in: hands the hub everything that continues `last` without a hole,
    /// keeps what is ahead of one. Returns whether a hole remains.
    fn take(&mut self, events: Vec<Arc<Event>>, shared: &Shared) -> bool {
        let Some(last) = self.last else {
            return false;
        };
        for e in events {
            if e.id > last {
                self.ahead.insert(e.id, e);
            }
        }
        let mut next = last + 1;
        let mut run = Vec::new();
        while let Some(e) = self.ahead.remove(&next) {
            run.push(e);
            next += 1;
        }
        if !run.is_empty() {
            shared.sink.deliver(&run);
            self.set_last(next - 1);
        }
        !self.ahead.is_empty()
    }

    fn set_last(&mut self, last: u64) {
        self.last = Some(last);
        self.delivered.send_replace(last);
        // Anything at or below it is delivered already.
        self.ahead = self.ahead.split_off(&(last + 1));
    }
}

pub(super) struct TenantTask {
    shared: Arc<Shared>,
    tenant: TenantId,
    generation: u64,
    /// Sessions of the tenant on this node that joined and have not left.
    sessions: usize,
    /// The partition is counted as needed by this tenant (`Shared::subscribe`).
    subscribed: bool,
    /// Messages are expected to flow for the partition (not `Interrupted` since the last
    /// `Gap`, and the subscription was confirmed).
    live: bool,
    order: Order,
    /// When to fill the hole below `order.ahead` from the log.
    fill_at: Option<Instant>,
    /// The head the previous check saw ahead of delivery: still ahead at the next check means
    /// its publish is not coming.
    behind: Option<u64>,
    /// When to try the log again after a failed read.
    retry_at: Option<Instant>,
    failures: u32,
}

impl TenantTask {
    pub(super) fn new(shared: Arc<Shared>, tenant: TenantId, generation: u64, delivered: watch::Sender<u64>) -> Self {
        TenantTask {
            shared,
            tenant,
            generation,
            sessions: 0,
            subscribed: false,
            live: false,
            order: Order {
                last: None,
                ahead: BTreeMap::new(),
                delivered,
            },
            fill_at: None,
            behind: None,
            retry_at: None,
            failures: 0,
        }
    }

    pub(super) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Input>) {
        loop {
            let wake = match (self.fill_at, self.retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let input = match wake {
                Some(at) => tokio::select! {
                    input = inbox.recv() => input,
                    () = sleep_until(at) => {
                        let reason = if self.retry_at.is_some() { Reason::Retry } else { Reason::Reorder };
                        self.fill_at = None;
                        self.retry_at = None;
                        self.catch_up(reason).await;
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
            if self.sessions == 0 && self.shared.retire(&self.tenant, self.generation, &inbox) {
                if self.subscribed {
                    self.shared.unsubscribe(&self.tenant).await;
                }
                debug!(tenant = %self.tenant, "no session of this tenant left");
                return;
            }
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Join(reply) => {
                let started = self.start().await;
                match started {
                    Ok(()) => {
                        self.sessions += 1;
                        if reply.send(Ok(())).is_err() {
                            // The session stopped waiting (its join timed out): it never leaves.
                            self.sessions -= 1;
                        }
                    }
                    Err(e) => {
                        warn!(tenant = %self.tenant, error = %e, "cannot deliver this tenant's events here");
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Input::Leave => self.sessions = self.sessions.saturating_sub(1),
            Input::Events(events) => {
                if self.order.take(events, &self.shared) {
                    if self.order.ahead.len() > MAX_AHEAD {
                        self.catch_up(Reason::Reorder).await;
                    } else if self.fill_at.is_none() {
                        self.fill_at = Some(Instant::now() + REORDER_WAIT);
                    }
                } else {
                    self.fill_at = None;
                }
            }
            Input::Gap => {
                self.live = true;
                self.catch_up(Reason::Gap).await;
            }
            Input::Interrupted => self.live = false,
            Input::Head { head, transport_up } => {
                let last = self.order.last.unwrap_or(0);
                if head <= last {
                    self.behind = None;
                } else if !transport_up || !self.live {
                    // Nothing flows: the head check is the delivery.
                    self.behind = None;
                    self.catch_up(Reason::Outage).await;
                } else if self.behind.is_some_and(|seen| seen > last) {
                    // The head seen last time is still not delivered: its publish is lost.
                    self.behind = None;
                    self.catch_up(Reason::Head).await;
                } else {
                    self.behind = Some(head);
                }
            }
            Input::CatchUp(head) => {
                if self.order.last.is_some_and(|last| last < head) {
                    self.catch_up(Reason::Barrier).await;
                }
            }
        }
    }

    /// Makes sure the tenant's events are delivered here: its partition subscribed (or the
    /// head check delivering while the transport is away), and the log's head known.
    async fn start(&mut self) -> Result<(), String> {
        if !self.subscribed {
            match self.shared.subscribe(&self.tenant).await {
                Ok(()) => self.live = true,
                // Counted anyway: the head check delivers until the transport resubscribes.
                Err(e) => warn!(tenant = %self.tenant, error = %e, "no live subscription yet: delivering from the log"),
            }
            self.subscribed = true;
        }
        if self.order.last.is_none() {
            // Read after the subscription: every event after the head reaches us, and a
            // session reads its hello's head after this join, so it misses nothing between.
            let head = tokio::time::timeout(LOG_TIMEOUT, self.shared.log.head(&self.tenant))
                .await
                .map_err(|_| "the log did not answer in time".to_owned())?
                .map_err(|e| e.to_string())?;
            self.order.set_last(head);
        }
        Ok(())
    }

    /// Hands the hub what the log holds after `last`. When the log no longer reaches back that
    /// far, the tenant's sessions here cannot be made whole: they are closed to resume, and
    /// delivery goes on from the head. A failed read is retried (sessions stay open).
    async fn catch_up(&mut self, reason: Reason) {
        let Some(last) = self.order.last else {
            return;
        };
        self.shared
            .metrics
            .catch_ups
            .with_label_values(&[reason.as_str()])
            .inc();
        self.fill_at = None;
        let read = tokio::time::timeout(
            LOG_TIMEOUT,
            self.shared.log.events_after(&self.tenant, last, CATCH_UP_LIMIT),
        )
        .await;
        match read {
            Ok(Ok(Replay::Events(events))) => {
                self.failures = 0;
                self.retry_at = None;
                let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
                if self.order.take(events, &self.shared) {
                    // The log ends before what arrived ahead: those ids are not committed yet
                    // (or never will be); wait for them again.
                    self.fill_at = Some(Instant::now() + REORDER_WAIT);
                }
                if self.order.last != Some(last) {
                    debug!(tenant = %self.tenant, after = last, newest = ?self.order.last, "caught up from the log");
                }
            }
            Ok(Ok(Replay::TooOld)) => {
                warn!(tenant = %self.tenant, after = last, "the log no longer reaches back to the last event delivered here: closing the tenant's sessions to resume");
                match self.shared.log.head(&self.tenant).await {
                    Ok(head) => {
                        self.order.set_last(head);
                        self.shared.sink.lost(&self.tenant);
                    }
                    Err(e) => self.failed(e.to_string()),
                }
            }
            Ok(Err(e)) => self.failed(e.to_string()),
            Err(_) => self.failed("the log did not answer in time".into()),
        }
    }

    fn failed(&mut self, error: String) {
        self.failures += 1;
        if self.failures == 1 {
            warn!(tenant = %self.tenant, %error, "cannot read the log; delivery waits for it");
        }
        let delay = (RETRY_BASE * 2u32.pow(self.failures.min(5))).min(RETRY_MAX);
        self.retry_at = Some(Instant::now() + delay);
        if self.failures == 1 {
            info!(tenant = %self.tenant, retry_in = ?delay, "retrying the log");
        }
    }
}
