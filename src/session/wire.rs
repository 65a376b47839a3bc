//! A session's write side, on HTTP: the websocket's response body drains the session's wire
//! queue (`hub::outbox::Outgoing` frames) and encodes them onto the socket itself.
//!
//! [`OutBody`] is the body of the 101 response. Whenever the HTTP dispatcher polls it, it
//! takes everything queued (up to [`CHUNK`] bytes) and encodes it into one buffer: a burst
//! is one write, and no task sits between the hub and the socket. Server frames are never
//! masked, so encoding is a header and a copy.
//!
//! Invariants:
//! - Every frame a session writes goes through its one queue, whoever produces it (the hub
//!   in direct mode, the session task otherwise, see `hub::outbox`): the queue's order is the
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
    mem,
    pin::Pin,
    sync::Weak,
    task::{Context, Poll},
};

use actix_web::{
    body::{BodySize, MessageBody},
    web::{BufMut, Bytes, BytesMut},
};
use futures_util::StreamExt;

use crate::hub::outbox::{Outgoing, Room};

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
pub fn encode(frame: &Outgoing, buf: &mut BytesMut) {
    match frame {
        Outgoing::Text(text) => encode_text(text, buf),
        Outgoing::Texts(texts) => texts.iter().for_each(|t| encode_text(t, buf)),
        Outgoing::Ping => header(buf, OP_PING, 0),
        Outgoing::Pong(payload) => {
            let payload = &payload[..payload.len().min(MAX_CONTROL)];
            header(buf, OP_PONG, payload.len());
            buf.put_slice(payload);
        }
        Outgoing::Close(close) => encode_close(close.code(), close.reason(), buf),
    }
}

/// A Close frame: the code, and the reason cut to 123 bytes on a character boundary.
fn encode_close(code: u16, reason: &str, buf: &mut BytesMut) {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    header(buf, OP_CLOSE, 2 + end);
    buf.put_u16(code);
    buf.put_slice(&reason.as_bytes()[..end]);
}

/// What holds a session's [`Room`] (the hub's session handle). The body holds it weakly: it
/// must not keep the session's senders alive, or it would never end.
pub type RoomOwner = Weak<dyn AsRef<Room> + Send + Sync>;

/// The websocket's response body (see the module doc).
pub struct OutBody {
    /// `None` once the body is done: senders then find the queue disconnected.
    queue: Option<flume::r#async::RecvStream<'static, Outgoing>>,
    buf: BytesMut,
    room: RoomOwner,
}

impl OutBody {
    pub fn new(queue: flume::Receiver<Outgoing>, room: RoomOwner) -> OutBody {
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
                    if matches!(frame, Outgoing::Close(..)) {
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
    use crate::protocol::Close;

    fn encoded(frame: Outgoing) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        buf.to_vec()
    }

    #[test]
    fn frames_are_encoded_unmasked_with_the_shortest_length() {
        assert_eq!(encoded(Outgoing::Text("hi".into())), b"\x81\x02hi");
        assert_eq!(
            encoded(Outgoing::Texts(["a".into(), "bc".into()].into())),
            b"\x81\x01a\x81\x02bc"
        );
        assert_eq!(encoded(Outgoing::Ping), b"\x89\x00");
        assert_eq!(encoded(Outgoing::Pong(Bytes::from_static(b"p"))), b"\x8a\x01p");
        assert_eq!(
            encoded(Outgoing::Close(Close::TooSlow)),
            b"\x88\x12\x0f\xa8too slow: resume"
        );
        let long = encoded(Outgoing::Text("x".repeat(300).into()));
        assert_eq!(&long[..4], b"\x81\x7e\x01\x2c");
        assert_eq!(long.len(), 304);
        let huge = encoded(Outgoing::Text("x".repeat(70_000).into()));
        assert_eq!(&huge[..10], b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70");
        assert_eq!(encoded(Outgoing::Pong(Bytes::from(vec![1; 200]))).len(), 2 + 125);
        let mut close = BytesMut::new();
        encode_close(1000, &"é".repeat(100), &mut close);
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
        tx.try_send(Outgoing::Text("a".into())).unwrap();
        tx.try_send(Outgoing::Text("b".into())).unwrap();
        tx.try_send(Outgoing::Close(Close::Normal)).unwrap();
        assert!(tx.try_send(Outgoing::Text("late".into())).is_ok());
        let Poll::Ready(Some(Ok(bytes))) = Pin::new(&mut body).poll_next(&mut cx) else {
            panic!("one chunk")
        };
        assert_eq!(&bytes[..], b"\x81\x01a\x81\x01b\x88\x02\x03\xe8");
        assert!(matches!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(None)));
        assert!(tx.try_send(Outgoing::Text("after".into())).is_err(), "closed");
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
            tx.try_send(Outgoing::Text(frame.into())).unwrap();
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
        assert_eq!(Outgoing::Ping.bytes() + Outgoing::Close(Close::Normal).bytes(), 0);
    }
}
