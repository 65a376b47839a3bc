//! Token verification on arbitrary text: a token verifies only if it is signed with the
//! configured secret (the fuzzer cannot forge one), and nothing panics on the way.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use switchboard::{auth::Verifier, config::Settings};

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let mut settings = Settings::defaults().auth;
    settings.hs256_secret = "fuzz-secret".into();
    Verifier::from_settings(&settings).unwrap()
});

fuzz_target!(|text: &str| {
    assert!(
        VERIFIER.verify(text).is_err(),
        "a token the fuzzer made up verified: {text:?}"
    );
});
