//! What the chaos test found at start-up, pinned by a test of its own: libphonenumber's
//! metadata (thousands of regexes, built lazily by the `phonenumber` crate on the first
//! parse) is loaded when the hub makes its phone parser, at start-up, and not by the first
//! inbound message, whose actix worker it froze for 5–10 s in a debug build, with every
//! session, request and Redis connection that worker drives.
//!
//! Nothing else in this test binary parses a phone number, so the metadata is unloaded until
//! this test makes a parser.

use once_cell::sync::Lazy;
use switchboard::domain::PhoneParser;

#[test]
fn making_the_phone_parser_loads_the_phone_metadata_before_any_number_is_parsed() {
    assert!(
        Lazy::get(&phonenumber::metadata::DATABASE).is_none(),
        "nothing in this binary has parsed a number yet"
    );
    PhoneParser::new("US").expect("US is a country");
    assert!(
        Lazy::get(&phonenumber::metadata::DATABASE).is_some(),
        "the metadata is loaded once the parser is made"
    );
}
