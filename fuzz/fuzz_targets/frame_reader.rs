//! The websocket frame reader on arbitrary client bytes, split into arbitrary reads: every
//! message it yields is within the size limit, and it ends (an error is reported once).
#![no_main]

use std::{
    pin::pin,
    task::{Context, Poll, Waker},
};

use actix_http::{BoxedPayloadStream, error::PayloadError};
use actix_web::{dev::Payload, web::Bytes};
use actix_ws::AggregatedMessage;
use libfuzzer_sys::fuzz_target;
use switchboard::session::inbound::Reader;

const MAX: usize = 1024;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (bytes, cuts) = input;
    // The client's bytes, in reads of the sizes `cuts` gives.
    let mut chunks = Vec::new();
    let mut rest = &bytes[..];
    for c in cuts.iter().cycle().take(bytes.len()) {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*c) + 1).min(rest.len());
        chunks.push(Ok::<_, PayloadError>(Bytes::copy_from_slice(&rest[..n])));
        rest = &rest[n..];
    }
    let stream: BoxedPayloadStream = Box::pin(futures_util::stream::iter(chunks));
    let mut reader = Reader::new(Payload::from(stream), MAX);
    let mut cx = Context::from_waker(Waker::noop());
    let mut errors = 0;
    // Every read is ready at once, so the reader never waits; it must end.
    for _ in 0..=bytes.len() + 1 {
        let next = pin!(reader.recv()).poll(&mut cx);
        match next {
            Poll::Ready(None) => return,
            Poll::Ready(Some(Err(_))) => errors += 1,
            Poll::Ready(Some(Ok(m))) => {
                assert_eq!(errors, 0, "nothing after an error");
                let len = match &m {
                    AggregatedMessage::Text(t) => t.len(),
                    AggregatedMessage::Binary(b) | AggregatedMessage::Ping(b) | AggregatedMessage::Pong(b) => b.len(),
                    AggregatedMessage::Close(_) => 0,
                };
                assert!(len <= MAX, "a message of {len} bytes over the limit {MAX}");
            }
            Poll::Pending => panic!("the reader waited on bytes that were all there"),
        }
    }
    panic!("the reader did not end");
});

use std::future::Future;
