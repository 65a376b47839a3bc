//! Everything the edge parses from a request: phone numbers, ids, attachment URLs and media
//! types, reported instants and cursors. Each parses or refuses, never panics, and what it
//! accepts parses again to itself.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use switchboard::{
    cursor::{Cursors, List},
    domain::{
        AttachmentUrl, Id, MediaType, PhoneParser, TenantId, ThreadId, UserId,
        model::{MessagePosition, ThreadPosition, Timestamp},
    },
};

static PHONES: LazyLock<PhoneParser> = LazyLock::new(|| PhoneParser::new("US").unwrap());
static CURSORS: LazyLock<Cursors> = LazyLock::new(|| Cursors::new(&[7; 32]));

fuzz_target!(|text: &str| {
    let phones = &*PHONES;
    if let Ok(p) = phones.parse(text) {
        // A parser of its own parses afresh (`phones` may answer from what it remembers).
        let fresh = PhoneParser::new("US").unwrap();
        assert_eq!(fresh.parse(p.as_str()).as_ref(), Ok(&p), "E.164 parses to itself");
        assert_eq!(
            fresh.parse(text).as_ref(),
            Ok(&p),
            "what is remembered is what a parse gives"
        );
    }
    if let Ok(id) = UserId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
    if let Ok(url) = AttachmentUrl::parse(text) {
        assert_eq!(
            AttachmentUrl::parse(url.as_str()).as_ref(),
            Ok(&url),
            "a normal URL parses to itself"
        );
    }
    if let Ok(m) = MediaType::parse(text) {
        assert_eq!(
            MediaType::parse(m.as_str()).as_ref(),
            Ok(&m),
            "a normal media type parses to itself"
        );
    }
    let _ = Timestamp::parse_reported(text, Timestamp::now());
    let cursors = &*CURSORS;
    let tenant = TenantId::parse("acme").unwrap();
    let thread = ThreadId::parse("t_1").unwrap();
    assert!(
        cursors.open::<ThreadPosition>(&tenant, List::Threads, text).is_err() || text.len() <= 256,
        "a cursor longer than any this hub hands out"
    );
    let _ = cursors.open::<MessagePosition>(&tenant, List::ThreadMessages(&thread), text);
});
