//! A session's write side: one bounded FIFO of frames, drained by the websocket's response
//! body itself.
//!
//! [`OutBody`] is the body of the 101 response. Whenever the HTTP dispatcher polls it, it
//! takes everything queued (up to [`CHUNK`] bytes) and encodes it into one buffer: a burst
//! is one write, and no task sits between the hub and the socket. Server frames are never
//! masked, so encoding is a header and a copy.
//!
//! Invariants:
//! - Every frame a session writes goes through its one queue, whoever produces it (the hub
//!   in direct mode, the session task otherwise, see `session`): the queue's order is the
//!   order on the wire.
//! - A `Close` frame is the last frame written: the body closes the queue once it has encoded
//!   one and ends after flushing it.
//! - Without a `Close`, the body ends once every sender is gone (the session ended and the
//!   hub dropped it), and the connection with it.
//! - The read side (`inbound`) reads the request's payload on its own.
//! - The queue is bounded in items (a flume channel) and in bytes ([`Room`]): whoever queues a
//!   frame takes room for its bytes first, and the body gives the room back as it takes the
//!   frame off the queue. A session's frames in memory (its task's queue included, see `hub`)
//!   are so never more than `ws.queue_bytes`, plus the one chunk the body handed to the
//!   connection.

use std::{
    convert::Infallible,
    future::poll_fn,
    mem,
    pin::Pin,
    sync::{
        Weak,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
};

use actix_web::{
    body::{BodySize, MessageBody},
    web::{BufMut, Bytes, BytesMut},
};
use bytestring::ByteString;
use futures_util::{StreamExt, task::AtomicWaker};

/// One frame to write.
#[derive(Debug, Clone)]
pub enum Wire {
    Text(ByteString),
    /// Several text frames queued at once (one delivery's frames for one session): one
    /// wake-up of the socket, one write.
    Texts(Box<[ByteString]>),
    /// The heartbeat: a Ping without payload.
    Ping,
    /// The answer to a client's Ping (payload cut to 125 bytes, the control frame limit).
    Pong(Bytes),
    /// The last frame: close code and reason (cut to 123 bytes on a character boundary).
    Close(u16, &'static str),
}

impl Wire {
    /// The bytes this frame holds while queued: its text. Control frames count as nothing, so
    /// that a heartbeat or the closing frame never waits for room.
    pub fn bytes(&self) -> usize {
        match self {
            Wire::Text(t) => t.len(),
            Wire::Texts(ts) => ts.iter().map(|t| t.len()).sum(),
            Wire::Ping | Wire::Pong(_) | Wire::Close(..) => 0,
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

/// Encoded bytes one poll hands the dispatcher at most (more stays queued for the next).
pub const CHUNK: usize = 256 * 1024;

/// RFC 6455: control frames carry at most 125 bytes.
const MAX_CONTROL: usize = 125;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

fn header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_u8(0x80 | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

fn encode_text(text: &str, buf: &mut BytesMut) {
    buf.reserve(text.len() + 10);
    header(buf, OP_TEXT, text.len());
    buf.put_slice(text.as_bytes());
}

/// Appends `frame`, unmasked (a server's frames are never masked).
pub fn encode(frame: &Wire, buf: &mut BytesMut) {
    match frame {
        Wire::Text(text) => encode_text(text, buf),
        Wire::Texts(texts) => texts.iter().for_each(|t| encode_text(t, buf)),
        Wire::Ping => header(buf, OP_PING, 0),
        Wire::Pong(payload) => {
            let payload = &payload[..payload.len().min(MAX_CONTROL)];
            header(buf, OP_PONG, payload.len());
            buf.put_slice(payload);
        }
        Wire::Close(code, reason) => {
            let mut end = reason.len().min(MAX_CONTROL - 2);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            header(buf, OP_CLOSE, 2 + end);
            buf.put_u16(*code);
            buf.put_slice(&reason.as_bytes()[..end]);
        }
    }
}

/// What holds a session's [`Room`] (the hub's session handle). The body holds it weakly: it
/// must not keep the session's senders alive, or it would never end.
pub type RoomOwner = Weak<dyn AsRef<Room> + Send + Sync>;

/// The websocket's response body (see the module doc).
pub struct OutBody {
    /// `None` once the body is done: senders then find the queue disconnected.
    queue: Option<flume::r#async::RecvStream<'static, Wire>>,
    buf: BytesMut,
    room: RoomOwner,
}

impl OutBody {
    pub fn new(queue: flume::Receiver<Wire>, room: RoomOwner) -> OutBody {
        OutBody {
            queue: Some(queue.into_stream()),
            buf: BytesMut::new(),
            room,
        }
    }
}

impl MessageBody for OutBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        let mut freed = 0;
        while let Some(queue) = this.queue.as_mut()
            && this.buf.len() < CHUNK
        {
            match queue.poll_next_unpin(cx) {
                Poll::Ready(Some(frame)) => {
                    freed += frame.bytes();
                    encode(&frame, &mut this.buf);
                    if matches!(frame, Wire::Close(..)) {
                        this.queue = None;
                    }
                }
                Poll::Ready(None) => this.queue = None,
                Poll::Pending => break,
            }
        }
        if freed > 0
            && let Some(owner) = this.room.upgrade()
        {
            (*owner).as_ref().give(freed);
        }
        if !this.buf.is_empty() {
            // `take`: no buffer grows to the largest burst and stays that size.
            return Poll::Ready(Some(Ok(mem::take(&mut this.buf).freeze())));
        }
        if this.queue.is_none() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frame: Wire) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        buf.to_vec()
    }

    #[test]
    fn frames_are_encoded_unmasked_with_the_shortest_length() {
        assert_eq!(encoded(Wire::Text("hi".into())), b"\x81\x02hi");
        assert_eq!(
            encoded(Wire::Texts(["a".into(), "bc".into()].into())),
            b"\x81\x01a\x81\x02bc"
        );
        assert_eq!(encoded(Wire::Ping), b"\x89\x00");
        assert_eq!(encoded(Wire::Pong(Bytes::from_static(b"p"))), b"\x8a\x01p");
        assert_eq!(encoded(Wire::Close(4008, "slow")), b"\x88\x06\x0f\xa8slow");
        let long = encoded(Wire::Text("x".repeat(300).into()));
        assert_eq!(&long[..4], b"\x81\x7e\x01\x2c");
        assert_eq!(long.len(), 304);
        let huge = encoded(Wire::Text("x".repeat(70_000).into()));
        assert_eq!(&huge[..10], b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70");
        assert_eq!(encoded(Wire::Pong(Bytes::from(vec![1; 200]))).len(), 2 + 125);
        let reason: &'static str = "é".repeat(100).leak();
        let close = encoded(Wire::Close(1000, reason));
        assert_eq!(close[1] as usize, close.len() - 2);
        assert_eq!(close.len() - 4, 122, "cut on a character boundary");
    }

    struct Owner(Room);

    impl AsRef<Room> for Owner {
        fn as_ref(&self) -> &Room {
            &self.0
        }
    }

    fn owner(max: usize) -> (std::sync::Arc<Owner>, RoomOwner) {
        let owner = std::sync::Arc::new(Owner(Room::new(max)));
        let weak: RoomOwner = std::sync::Arc::downgrade(&owner) as RoomOwner;
        (owner, weak)
    }

    #[test]
    fn a_poll_writes_everything_queued_and_the_body_ends_after_close() {
        let (tx, rx) = flume::bounded(16);
        let (_owner, room) = owner(1024);
        let mut body = OutBody::new(rx, room);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_next(&mut cx).is_pending());
        tx.try_send(Wire::Text("a".into())).unwrap();
        tx.try_send(Wire::Text("b".into())).unwrap();
        tx.try_send(Wire::Close(1001, "")).unwrap();
        assert!(tx.try_send(Wire::Text("late".into())).is_ok());
        let Poll::Ready(Some(Ok(bytes))) = Pin::new(&mut body).poll_next(&mut cx) else {
            panic!("one chunk")
        };
        assert_eq!(&bytes[..], b"\x81\x01a\x81\x01b\x88\x02\x03\xe9");
        assert!(matches!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(None)));
        assert!(tx.try_send(Wire::Text("after".into())).is_err(), "closed");
    }

    #[test]
    fn room_is_taken_for_a_frames_bytes_and_given_back_when_the_body_writes_it() {
        let (tx, rx) = flume::bounded(16);
        let (owner, room) = owner(10);
        let mut body = OutBody::new(rx, room);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let room = &owner.0;
        for frame in ["abcd", "efgh"] {
            assert!(room.try_take(frame.len()));
            tx.try_send(Wire::Text(frame.into())).unwrap();
        }
        assert!(!room.try_take(3), "8 of 10 bytes are queued");
        assert!(room.try_take(2));
        room.give(2);
        assert_eq!(room.used(), 8);
        assert!(matches!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(room.used(), 0, "written: the room is back");
        assert!(room.try_take(25), "a frame larger than the room takes all of it");
        assert!(!room.try_take(1));
        room.give(25);
        assert_eq!(room.used(), 0);
        assert_eq!(Wire::Ping.bytes() + Wire::Close(1000, "bye").bytes(), 0);
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
