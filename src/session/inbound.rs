//! A session's read side: the client's frames, decoded from the upgraded request's payload
//! with the websocket codec actix-ws itself uses (`actix_http::ws::Codec`), fragments put
//! back together.
//!
//! Why not actix-ws's `MessageStream`: it comes with actix-ws's writer (`Session`), whose
//! channel allocates a block of 32 message slots per connection up front and ties the read
//! side's end to a body we never poll. The hub writes through `wire` instead, so that was
//! about 1.9 KB per idle session spent on nothing (W1 in BENCHMARKS.md). The items are still
//! actix-ws's `AggregatedMessage` and `ProtocolError`.
//!
//! The read side ends when the client's bytes do: the connection closed, or the payload
//! failed (an I/O error, reported once).

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use actix_http::ws::{Codec, Frame, Item};
use actix_web::{
    dev::Payload,
    web::{Bytes, BytesMut},
};
use actix_ws::{AggregatedMessage, ProtocolError};
use bytestring::ByteString;
use futures_util::Stream;
use tokio_util::codec::Decoder;

/// A text or binary message arriving in fragments.
struct Fragments {
    text: bool,
    bytes: BytesMut,
}

pub struct Reader {
    payload: Payload,
    buf: BytesMut,
    codec: Codec,
    partial: Option<Fragments>,
    /// Largest message, whole or in fragments.
    max: usize,
    /// The payload ended (what is buffered is still decoded).
    ended: bool,
}

impl Reader {
    /// Reads `payload`; a frame or a fragmented message over `max` bytes is an
    /// `Overflow` error.
    pub fn new(payload: Payload, max: usize) -> Reader {
        Reader {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max),
            partial: None,
            max,
            ended: false,
        }
    }

    /// The next message; `None` once the client's bytes ended.
    pub async fn recv(&mut self) -> Option<Result<AggregatedMessage, ProtocolError>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<AggregatedMessage, ProtocolError>>> {
        loop {
            while let Some(frame) = match self.codec.decode(&mut self.buf) {
                Ok(frame) => frame,
                Err(e) => return self.fail(e),
            } {
                match self.message(frame) {
                    Ok(Some(m)) => return Poll::Ready(Some(Ok(m))),
                    Ok(None) => {}
                    Err(e) => return self.fail(e),
                }
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) if self.buf.is_empty() => self.buf = BytesMut::from(bytes),
                Poll::Ready(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(e))) => return self.fail(ProtocolError::Io(io::Error::other(e))),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// A protocol error ends the read side: it is reported once, then `None`.
    fn fail(&mut self, e: ProtocolError) -> Poll<Option<Result<AggregatedMessage, ProtocolError>>> {
        self.ended = true;
        self.buf.clear();
        Poll::Ready(Some(Err(e)))
    }

    /// The message `frame` completes, if any.
    fn message(&mut self, frame: Frame) -> Result<Option<AggregatedMessage>, ProtocolError> {
        Ok(Some(match frame {
            Frame::Text(bytes) => AggregatedMessage::Text(text(bytes)?),
            Frame::Binary(bytes) => AggregatedMessage::Binary(bytes),
            Frame::Ping(bytes) => AggregatedMessage::Ping(bytes),
            Frame::Pong(bytes) => AggregatedMessage::Pong(bytes),
            Frame::Close(reason) => AggregatedMessage::Close(reason),
            Frame::Continuation(item) => return self.fragment(item),
        }))
    }

    fn fragment(&mut self, item: Item) -> Result<Option<AggregatedMessage>, ProtocolError> {
        let (first, bytes, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        match (first, &mut self.partial) {
            (Some(_), Some(_)) => return Err(ProtocolError::ContinuationStarted),
            (None, None) => return Err(ProtocolError::ContinuationNotStarted),
            (Some(text), None) => {
                self.partial = Some(Fragments {
                    text,
                    bytes: BytesMut::new(),
                })
            }
            (None, Some(_)) => {}
        }
        let partial = self.partial.as_mut().expect("a message in fragments");
        if partial.bytes.len() + bytes.len() > self.max {
            self.partial = None;
            return Err(ProtocolError::Overflow);
        }
        partial.bytes.extend_from_slice(&bytes);
        if !last {
            return Ok(None);
        }
        let Fragments { text: is_text, bytes } = self.partial.take().expect("a message in fragments");
        let bytes = bytes.freeze();
        Ok(Some(if is_text {
            AggregatedMessage::Text(text(bytes)?)
        } else {
            AggregatedMessage::Binary(bytes)
        }))
    }
}

fn text(bytes: Bytes) -> Result<ByteString, ProtocolError> {
    ByteString::try_from(bytes).map_err(|e| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use actix_http::{
        BoxedPayloadStream,
        error::PayloadError,
        ws::{OpCode, Parser},
    };

    use super::*;

    /// A client's bytes, arriving in `chunks` (each a list of frames), then the end.
    fn reader(chunks: Vec<Vec<(OpCode, &'static [u8], bool)>>, max: usize) -> Reader {
        let chunks: Vec<Result<Bytes, PayloadError>> = chunks
            .into_iter()
            .map(|frames| {
                let mut buf = BytesMut::new();
                for (op, payload, fin) in frames {
                    Parser::write_message(&mut buf, payload, op, fin, true);
                }
                Ok(buf.freeze())
            })
            .collect();
        let stream: BoxedPayloadStream = Box::pin(futures_util::stream::iter(chunks));
        Reader::new(Payload::from(stream), max)
    }

    async fn all(mut r: Reader) -> Vec<Result<AggregatedMessage, ProtocolError>> {
        let mut out = Vec::new();
        while let Some(m) = r.recv().await {
            out.push(m);
        }
        out
    }

    fn text_of(m: &Result<AggregatedMessage, ProtocolError>) -> &str {
        match m {
            Ok(AggregatedMessage::Text(t)) => t,
            other => panic!("a text message: {other:?}"),
        }
    }

    #[actix_web::test]
    async fn frames_split_over_reads_and_fragments_come_out_whole_in_order() {
        let r = reader(
            vec![
                vec![(OpCode::Text, b"one", true), (OpCode::Ping, b"p", true)],
                vec![(OpCode::Text, b"tw", false), (OpCode::Pong, b"", true)],
                vec![(OpCode::Continue, b"o ", false), (OpCode::Continue, b"parts", true)],
                vec![(OpCode::Binary, b"\x00\x01", true)],
            ],
            64,
        );
        let out = all(r).await;
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(text_of(&out[0]), "one");
        assert!(matches!(&out[1], Ok(AggregatedMessage::Ping(p)) if &p[..] == b"p"));
        assert!(
            matches!(&out[2], Ok(AggregatedMessage::Pong(_))),
            "a control frame between fragments"
        );
        assert_eq!(text_of(&out[3]), "two parts");
        assert!(matches!(&out[4], Ok(AggregatedMessage::Binary(b)) if &b[..] == b"\x00\x01"));
    }

    #[actix_web::test]
    async fn a_message_over_the_limit_whole_or_in_fragments_is_an_overflow_and_the_end() {
        let whole = all(reader(vec![vec![(OpCode::Text, b"0123456789", true)]], 8)).await;
        assert!(matches!(whole[..], [Err(ProtocolError::Overflow)]), "{whole:?}");
        let parts = all(reader(
            vec![vec![
                (OpCode::Text, b"01234", false),
                (OpCode::Continue, b"56789", true),
                (OpCode::Text, b"after", true),
            ]],
            8,
        ))
        .await;
        assert!(matches!(parts[..], [Err(ProtocolError::Overflow)]), "{parts:?}");
    }

    #[actix_web::test]
    async fn fragments_out_of_order_and_bad_utf8_are_protocol_errors() {
        let stray = all(reader(vec![vec![(OpCode::Continue, b"x", true)]], 64)).await;
        assert!(
            matches!(stray[..], [Err(ProtocolError::ContinuationNotStarted)]),
            "{stray:?}"
        );
        let twice = all(reader(
            vec![vec![(OpCode::Text, b"a", false), (OpCode::Text, b"b", false)]],
            64,
        ))
        .await;
        assert!(
            matches!(twice[..], [Err(ProtocolError::ContinuationStarted)]),
            "{twice:?}"
        );
        let bad = all(reader(vec![vec![(OpCode::Text, b"\xff\xfe", true)]], 64)).await;
        assert!(matches!(bad[..], [Err(ProtocolError::Io(_))]), "{bad:?}");
    }

    #[actix_web::test]
    async fn an_unmasked_client_frame_is_refused() {
        let mut buf = BytesMut::new();
        Parser::write_message(&mut buf, b"hi", OpCode::Text, true, false);
        let stream: BoxedPayloadStream = Box::pin(futures_util::stream::iter([Ok::<_, PayloadError>(buf.freeze())]));
        let out = all(Reader::new(Payload::from(stream), 64)).await;
        assert!(matches!(out[..], [Err(ProtocolError::UnmaskedFrame)]), "{out:?}");
    }
}
