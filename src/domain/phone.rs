//! Phone numbers in E.164, parsed with the `phonenumber` crate (libphonenumber's metadata).
//!
//! Input may carry spaces, dashes, dots and parentheses; a national number gets the
//! configured default country. We check the characters ourselves first because
//! libphonenumber is lenient on purpose (it accepts letters, extensions, "tel:" URIs), and
//! the contract is not. We do not require the number to be *assigned* in the numbering plan:
//! test numbers such as +1 555 … are legitimate input here.
//!
//! Parsing is dear (libphonenumber's regexes: two parses, since the result is read back; about
//! 30 µs of a node's CPU per inbound message in W4) and the same few numbers come back all day
//! (a company's own numbers in every `to`, its customers in `from`), so a parser remembers the
//! numbers it parsed lately (`MEMO_ENTRIES`, each input at most `MEMO_INPUT_BYTES`): the
//! outcome is a function of the input and the default country alone.

use std::{fmt, str::FromStr, sync::Arc};

use phonenumber::{Mode, country};
use serde::Serialize;

use crate::memo::Memo;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a phone number: E.164 (+ and 8-15 digits) or a national number")]
pub struct InvalidPhone;

/// A phone number in E.164 form (`+` and 8–15 digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl utoipa::PartialSchema for PhoneNumber {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::string_schema(r"^\+[0-9]{8,15}$", None)
    }
}

impl utoipa::ToSchema for PhoneNumber {}

impl PhoneNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a number read back from storage (already E.164).
    pub(crate) fn trusted(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

impl AsRef<str> for PhoneNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many parsed numbers a parser (and its clones) remember; when full, it forgets them all
/// and starts again, so a stream of numbers never seen before costs no more than without it.
const MEMO_ENTRIES: usize = 4_096;
/// Longer input is parsed every time (a number, however decorated, is shorter).
const MEMO_INPUT_BYTES: usize = 32;

/// Parses numbers with a default country for national input. Clones share what was parsed.
#[derive(Debug, Clone)]
pub struct PhoneParser {
    default_country: country::Id,
    /// Input lately parsed to a number, as given, and that number.
    memo: Arc<Memo<PhoneNumber>>,
}

impl PhoneParser {
    /// `default_country` is an ISO 3166 alpha-2 region such as "US".
    ///
    /// Loads libphonenumber's metadata here, once per process: the crate builds it lazily on
    /// the first parse, compiling thousands of regexes (5–10 s in a debug build on a busy
    /// machine, as `tests/chaos` saw), and whatever thread gets there first blocks meanwhile.
    /// At start-up that is before the node listens; otherwise it was the first inbound
    /// message's actix worker, freezing every session, request and Redis connection driven by
    /// that worker.
    pub fn new(default_country: &str) -> Result<Self, String> {
        let _ = &*phonenumber::metadata::DATABASE;
        country::Id::from_str(&default_country.to_ascii_uppercase())
            .map(|default_country| Self {
                default_country,
                memo: Arc::new(Memo::new(MEMO_ENTRIES, MEMO_INPUT_BYTES)),
            })
            .map_err(|_| format!("unknown country {default_country:?}"))
    }

    /// The number `input` names, in E.164; remembered (see the module's doc).
    pub fn parse(&self, input: &str) -> Result<PhoneNumber, InvalidPhone> {
        if let Some(known) = self.memo.get(input) {
            return Ok(known);
        }
        let number = self.parse_anew(input)?;
        self.memo.remember(input, &number);
        Ok(number)
    }

    fn parse_anew(&self, input: &str) -> Result<PhoneNumber, InvalidPhone> {
        let trimmed = input.trim();
        let allowed = |(i, c): (usize, char)| {
            c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')') || (c == '+' && i == 0)
        };
        if trimmed.is_empty() || !trimmed.char_indices().all(allowed) {
            return Err(InvalidPhone);
        }
        let digits = trimmed.bytes().filter(u8::is_ascii_digit).count();
        if !(4..=17).contains(&digits) {
            return Err(InvalidPhone);
        }
        let e164 = to_e164(phonenumber::parse(Some(self.default_country), trimmed))?;
        let n = e164.len() - 1;
        if !(e164.starts_with('+') && (8..=15).contains(&n) && e164[1..].bytes().all(|b| b.is_ascii_digit())) {
            return Err(InvalidPhone);
        }
        // A number whose E.164 form reads back as another one (the library drops a national
        // prefix from `+1 1…`) is ambiguous: the stored form must be what it parses to.
        if to_e164(phonenumber::parse(Some(self.default_country), &e164))? != e164 {
            return Err(InvalidPhone);
        }
        Ok(PhoneNumber(e164))
    }
}

fn to_e164(parsed: Result<phonenumber::PhoneNumber, phonenumber::ParseError>) -> Result<String, InvalidPhone> {
    Ok(parsed.map_err(|_| InvalidPhone)?.format().mode(Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> PhoneParser {
        PhoneParser::new("US").unwrap()
    }

    #[test]
    fn e164_and_decorated_numbers_normalise_to_e164() {
        for input in [
            "+15551234567",
            "+1 (555) 123-4567",
            "555.123.4567",
            "(555) 123 4567",
            "+44 20 7946 0958",
        ] {
            let n = us().parse(input).unwrap_or_else(|_| panic!("{input}"));
            assert!(n.as_str().starts_with('+'), "{input} -> {n}");
        }
        assert_eq!(us().parse("555-123-4567").unwrap().as_str(), "+15551234567");
        assert_eq!(us().parse("+44 20 7946 0958").unwrap().as_str(), "+442079460958");
    }

    #[test]
    fn anything_else_is_rejected() {
        for input in [
            "",
            "abc",
            "555-CALL-NOW",
            "+1 555 123 4567 ext 2",
            "tel:+15551234567",
            "12",
            "++15551234567",
            "1+5551234567",
            // Found by fuzzing (fuzz/fuzz_targets/inputs.rs): it read as +114987887, which
            // reads back as +14987887.
            "11114987887",
        ] {
            assert!(us().parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn a_stored_number_parses_back_to_itself() {
        for input in ["555-123-4567", "+44 20 7946 0958", "+15550001111", "+14987887"] {
            let n = us().parse(input).unwrap_or_else(|_| panic!("{input}"));
            assert_eq!(us().parse(n.as_str()), Ok(n.clone()), "{input}");
        }
    }

    #[test]
    fn a_number_parsed_again_is_the_same_and_the_memo_stays_bounded() {
        let parser = us();
        let inputs: Vec<String> = (0..MEMO_ENTRIES + 10)
            .map(|i| format!("555-{:03}-{:04}", i / 10_000 + 200, i % 10_000))
            .collect();
        for input in &inputs {
            let first = parser.parse(input).unwrap();
            assert_eq!(parser.parse(input), Ok(first.clone()), "{input}");
            assert_eq!(parser.parse_anew(input), Ok(first), "{input}");
            assert!(parser.memo.len() <= MEMO_ENTRIES);
        }
        assert!(!parser.memo.is_empty(), "numbers are remembered");
        let clone = parser.clone();
        assert_eq!(clone.memo.len(), parser.memo.len(), "clones share the memo");
        let long = format!("+1 555 123 4567{}", " ".repeat(MEMO_INPUT_BYTES));
        let before = parser.memo.len();
        assert_eq!(parser.parse(&long).unwrap().as_str(), "+15551234567");
        assert_eq!(parser.memo.len(), before, "long input is not remembered");
        for bad in ["abc", "12", "11114987887"] {
            assert!(parser.parse(bad).is_err() && parser.parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_country_applies_to_national_numbers() {
        let gb = PhoneParser::new("gb").unwrap();
        assert_eq!(gb.parse("020 7946 0958").unwrap().as_str(), "+442079460958");
        assert!(PhoneParser::new("XX").is_err());
    }
}
