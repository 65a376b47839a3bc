//! A session's outbox: what delivery hands one session, and the one decision of what is
//! written for it.
//!
//! - The frames themselves (`Outgoing`), queued in the session's wire queue, which the edge
//!   drains to the socket; the items delivery leaves to the session task (`Deferred`).
//! - `Room`: the bytes both queues may hold (`ws.queue_bytes`).
//! - `Delivery`: where the session stands (direct mode, the newest id written, the unread
//!   count's anchor), and `Delivery::decide`: for an event, write its frame, skip it, or read
//!   the count again. Fan-out (`Hub::deliver`, in direct mode) and the session task (for what
//!   was deferred to it) both decide through it, under the session's state mutex, so the two
//!   can never disagree.
//!
//! Nothing here knows HTTP or a socket: encoding `Outgoing` is the edge's (`session::wire`).

use std::{
    future::poll_fn,
    sync::atomic::{AtomicU32, Ordering},
    task::Poll,
};

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;

use crate::protocol::Close;

/// One frame on its way out of a session, in its wire queue.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text(ByteString),
    /// Several text frames queued at once (one delivery's frames for one session): one
    /// wake-up of the socket, one write.
    Texts(Box<[ByteString]>),
    /// The heartbeat: a Ping without payload.
    Ping,
    /// The answer to a client's Ping (payload cut to 125 bytes, the control frame limit).
    Pong(Bytes),
    /// The last frame.
    Close(Close),
}

impl Outgoing {
    /// The bytes this frame holds while queued: its text. Control frames count as nothing, so
    /// that a heartbeat or the closing frame never waits for room.
    pub fn bytes(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Texts(ts) => ts.iter().map(|t| t.len()).sum(),
            Outgoing::Ping | Outgoing::Pong(_) | Outgoing::Close(_) => 0,
        }
    }
}

/// A session's room for queued frames, in bytes (`ws.queue_bytes`): taken by whoever queues a
/// frame, given back when the frame leaves the queue (the body wrote it, or the session task
/// took it from its own queue). A frame larger than the whole room takes all of it.
///
/// A counter and the one waiter there can be (the session task): 32 bytes a session, where a
/// semaphore would take 48.
#[derive(Debug)]
pub struct Room {
    used: AtomicU32,
    max: u32,
    waiter: AtomicWaker,
}

impl Room {
    pub fn new(max: usize) -> Room {
        Room {
            used: AtomicU32::new(0),
            max: max.clamp(1, u32::MAX as usize) as u32,
            waiter: AtomicWaker::new(),
        }
    }

    fn cost(&self, bytes: usize) -> u32 {
        bytes.min(self.max as usize) as u32
    }

    /// Takes room for `bytes` if there is that much now (delivery, which never waits).
    pub fn try_take(&self, bytes: usize) -> bool {
        let cost = self.cost(bytes);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(cost).filter(|&after| after <= self.max)
            })
            .is_ok()
    }

    /// Waits until there is room for `bytes`, and takes it. Only the session task waits.
    pub async fn take(&self, bytes: usize) {
        poll_fn(|cx| {
            if self.try_take(bytes) {
                return Poll::Ready(());
            }
            self.waiter.register(cx.waker());
            // Room given back between the first try and the registration woke nobody.
            if self.try_take(bytes) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Gives back the room of `bytes` that left the queue.
    pub fn give(&self, bytes: usize) {
        self.used.fetch_sub(self.cost(bytes), Ordering::AcqRel);
        self.waiter.wake();
    }

    /// Bytes queued now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire) as usize
    }
}

/// What an `unread.count` frame takes in a session's room (`{"type":"unread.count","id":…}`).
const COUNT_FRAME_BYTES: usize = 64;

/// What delivery leaves to the session task (outside direct mode): the task decides it, in
/// order, through the same `Delivery::decide`.
#[derive(Debug, Clone)]
pub enum Deferred {
    /// A frame shared by every recipient.
    Event { id: u64, frame: ByteString },
    /// `unread.count` with this event id: the session writes its own number. `delta`: the
    /// amount every recipient's count moved by (an inbound message), or `None`: read it again.
    Count { id: u64, delta: Option<i64> },
    /// A presence frame: state, not an event (no id); written as it comes.
    Presence { frame: ByteString },
}

impl Deferred {
    /// The bytes it holds while queued (the session's `Room` counts them).
    pub fn bytes(&self) -> usize {
        match self {
            Deferred::Event { frame, .. } | Deferred::Presence { frame } => frame.len(),
            Deferred::Count { .. } => COUNT_FRAME_BYTES,
        }
    }
}

/// A session's unread count, exact as of event `as_of` (`session`'s doc has the argument).
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

/// What a session gets for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write this frame.
    Write(ByteString),
    /// Write `unread.count` event `id` with this count (the caller encodes it, so recipients
    /// of one count can share one encoding).
    WriteCount { id: u64, count: u64 },
    /// Nothing to write (written already, or nothing for this session).
    Skip,
    /// The count must be read again (`Delivery::counted` takes it): only the session task
    /// reads, so in direct mode the event is deferred to it.
    ReadCount,
}

/// Where a session's delivery stands. Lives under the session's state mutex.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Whether fan-out writes to the wire queue itself (`hub`'s doc).
    pub direct: bool,
    /// The newest event id written (or skipped as not this session's); older ones are never
    /// written again except by an explicit `resume`.
    pub last_sent: u64,
    /// The user's unread count and how far in the log it is exact.
    pub counts: CountAnchor,
}

impl Delivery {
    /// The one decision, for the live `item` (`id`, and the count's `delta` for a count):
    /// skip what was written already; write an event's frame; write a count that follows from
    /// the anchor; or say the count must be read (`stale()`: the session's count was marked
    /// stale, asked only for a count, so that a mark is never consumed by another event).
    /// `is_service`: a service session has no count (its ids count as written).
    pub fn decide(&mut self, item: &Deferred, is_service: bool, stale: impl FnOnce() -> bool) -> Decision {
        let id = match item {
            Deferred::Presence { frame } => return Decision::Write(frame.clone()),
            Deferred::Event { id, .. } | Deferred::Count { id, .. } => *id,
        };
        if id <= self.last_sent {
            return Decision::Skip;
        }
        match item {
            Deferred::Presence { frame } | Deferred::Event { frame, .. } => {
                self.last_sent = id;
                Decision::Write(frame.clone())
            }
            Deferred::Count { .. } if is_service => {
                self.last_sent = id;
                Decision::Skip
            }
            Deferred::Count { delta, .. } => match self.counts.step(id, *delta, stale()) {
                Some(count) => {
                    self.last_sent = id;
                    Decision::WriteCount { id, count }
                }
                None => Decision::ReadCount,
            },
        }
    }

    /// The count read for event `id` (after `Decision::ReadCount`): `count`, exact as of the
    /// log's head `as_of`, becomes the anchor, and the event counts as written.
    pub fn counted(&mut self, id: u64, count: u64, as_of: u64) {
        self.counts.anchor(count, as_of);
        self.last_sent = self.last_sent.max(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn event(id: u64) -> Deferred {
        Deferred::Event {
            id,
            frame: format!("frame {id}").into(),
        }
    }

    fn count(id: u64, delta: Option<i64>) -> Deferred {
        Deferred::Count { id, delta }
    }

    #[test]
    fn a_session_writes_each_event_once_and_counts_from_its_anchor_or_reads_them() {
        let mut d = Delivery::default();
        d.counted(0, 3, 10);
        d.last_sent = 10;
        let never = || panic!("asked about staleness for an event");
        assert_eq!(
            d.decide(&event(9), false, never),
            Decision::Skip,
            "older than what it has"
        );
        assert_eq!(d.decide(&event(11), false, never), Decision::Write("frame 11".into()));
        assert_eq!(d.decide(&event(11), false, never), Decision::Skip, "once");
        assert_eq!(
            d.decide(&count(12, Some(1)), false, || false),
            Decision::WriteCount { id: 12, count: 4 }
        );
        assert_eq!(d.decide(&count(13, None), false, || false), Decision::ReadCount);
        assert_eq!(d.last_sent, 12, "a count to read is not written yet");
        d.counted(13, 7, 13);
        assert_eq!(d.last_sent, 13);
        assert_eq!(
            d.decide(&count(14, Some(1)), false, || false),
            Decision::WriteCount { id: 14, count: 8 }
        );
        assert_eq!(
            d.decide(&count(15, Some(1)), false, || true),
            Decision::ReadCount,
            "stale"
        );
        assert_eq!(
            d.decide(&count(16, None), true, never),
            Decision::Skip,
            "a service session has no count"
        );
        assert_eq!(d.last_sent, 16);
    }
    #[tokio::test]
    async fn a_writer_waiting_for_room_is_woken_when_the_body_gives_it_back() {
        let room = std::sync::Arc::new(Room::new(10));
        assert!(room.try_take(8));
        let waiting = {
            let room = room.clone();
            tokio::spawn(async move { room.take(5).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "8 of 10 bytes are queued");
        room.give(8);
        waiting.await.unwrap();
        assert_eq!(room.used(), 5);
    }
}
