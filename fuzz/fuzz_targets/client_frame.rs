//! A client's text frame, parsed into a typed frame (or refused with a reason), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::protocol::ClientFrame;

fuzz_target!(|text: &str| {
    if let Err(e) = ClientFrame::parse(text) {
        assert!(!e.0.is_empty(), "a refusal says why");
    }
});
