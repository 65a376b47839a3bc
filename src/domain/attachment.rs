//! An inbound attachment's `url` and `content_type`, parsed at the edge.
//!
//! The web client puts an attachment's URL in an `<img src>`/`<a href>` and its content type
//! decides whether it is an image, so both are parsed as what they claim to be, and stored in
//! the parser's normalized form:
//! - `AttachmentUrl`: an absolute `http`/`https` URL with a host, parsed by the `url` crate
//!   (the WHATWG URL standard, what browsers do). That parser silently drops tabs and
//!   newlines and percent-encodes spaces, so the raw text is checked first: no whitespace and
//!   no control character anywhere.
//! - `MediaType`: `type/subtype` with optional `; name=value` parameters (RFC 9110, section
//!   8.3.1), parsed by the `mime` crate; ASCII only, no control character, no wildcard.

use std::fmt;

/// Longest URL accepted, raw or normalized, in bytes.
pub const MAX_URL: usize = 2048;
/// Longest content type accepted, in bytes (RFC 6838 allows 127 for each name; parameters
/// take the rest).
pub const MAX_CONTENT_TYPE: usize = 255;

/// Why an attachment URL was refused (the 422's detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUrl {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_URL} bytes")]
    TooLong,
    #[error("must not contain whitespace or control characters")]
    Whitespace,
    #[error("must be an absolute http(s) URL (http:// or https://)")]
    Scheme,
    #[error("must name a host")]
    NoHost,
    #[error("must be a valid URL: {0}")]
    Malformed(String),
}

/// An attachment's location: an absolute `http`/`https` URL with a host, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentUrl(String);

impl AttachmentUrl {
    pub fn parse(raw: &str) -> Result<Self, InvalidUrl> {
        if raw.is_empty() {
            return Err(InvalidUrl::Empty);
        }
        if raw.len() > MAX_URL {
            return Err(InvalidUrl::TooLong);
        }
        // Before the parser, which would strip tabs and newlines and encode spaces.
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidUrl::Whitespace);
        }
        // The WHATWG parser also reads `http:host`, `http:\\host` and `https:///host` as
        // URLs with a host; we take only the plain `scheme://host` form.
        let rest = strip_prefix_ignore_case(raw, "https://")
            .or_else(|| strip_prefix_ignore_case(raw, "http://"))
            .ok_or(InvalidUrl::Scheme)?;
        if rest.is_empty() || rest.starts_with(['/', '\\', '?', '#']) {
            return Err(InvalidUrl::NoHost);
        }
        let url = url::Url::parse(raw).map_err(|e| match e {
            url::ParseError::EmptyHost => InvalidUrl::NoHost,
            other => InvalidUrl::Malformed(other.to_string()),
        })?;
        // The prefix check settled the scheme; this is the parser agreeing.
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidUrl::Scheme);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidUrl::NoHost);
        }
        let normalized = String::from(url);
        // Normalizing percent-encodes non-ASCII text and punycodes hosts: it may grow.
        if normalized.len() > MAX_URL {
            return Err(InvalidUrl::TooLong);
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<AttachmentUrl> for String {
    fn from(u: AttachmentUrl) -> String {
        u.0
    }
}

impl fmt::Display for AttachmentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Why a content type was refused (the 422's detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMediaType {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_CONTENT_TYPE} bytes")]
    TooLong,
    #[error("must be printable ASCII without control characters")]
    Characters,
    #[error("must be a media type: type/subtype with optional ; name=value parameters")]
    Malformed,
    #[error("must name one media type, not a wildcard")]
    Wildcard,
}

/// A media type such as `image/jpeg` or `text/plain; charset=utf-8`, normalized: type,
/// subtype and parameter names in lower case (the `charset` value too, as it is
/// case-insensitive), parameters joined by `"; "`, values quoted only where they must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType(String);

impl MediaType {
    pub fn parse(raw: &str) -> Result<Self, InvalidMediaType> {
        if raw.trim().is_empty() {
            return Err(InvalidMediaType::Empty);
        }
        if raw.len() > MAX_CONTENT_TYPE {
            return Err(InvalidMediaType::TooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()) {
            return Err(InvalidMediaType::Characters);
        }
        let m: mime::Mime = raw.parse().map_err(|_| InvalidMediaType::Malformed)?;
        let (ty, sub) = (m.type_().as_str(), m.subtype().as_str());
        // `mime` accepts `image/` (an empty subtype) and `*/*`.
        if ty.is_empty() || sub.is_empty() {
            return Err(InvalidMediaType::Malformed);
        }
        if ty == "*" || sub == "*" {
            return Err(InvalidMediaType::Wildcard);
        }
        // The essence is `type/subtype+suffix`, in lower case.
        let mut out = m.essence_str().to_owned();
        for (name, value) in m.params() {
            let value = value.as_str();
            if value.is_empty() {
                // `mime` takes `a=` but not `a=""`: a parameter without a value is no parameter.
                return Err(InvalidMediaType::Malformed);
            }
            out.push_str("; ");
            out.push_str(name.as_str());
            out.push('=');
            if !value.is_empty() && value.bytes().all(is_token_byte) {
                out.push_str(value);
            } else {
                // `mime` reads quoted values without escapes, so there is no `"` or `\` in it.
                out.push('"');
                out.push_str(value);
                out.push('"');
            }
        }
        // The normal form must read back as itself (the fuzz target `inputs` holds it to that).
        if out.parse::<mime::Mime>().is_err() {
            return Err(InvalidMediaType::Malformed);
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<MediaType> for String {
    fn from(m: MediaType) -> String {
        m.0
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `tchar` of RFC 9110, section 5.6.2.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_urls_are_absolute_http_urls_with_a_host_and_nothing_odd_in_them() {
        use InvalidUrl::*;
        let long = format!("https://media.example/{}", "a".repeat(MAX_URL));
        let table: &[(&str, Result<&str, InvalidUrl>)] = &[
            ("https://media.example/1.jpg", Ok("https://media.example/1.jpg")),
            ("http://media.example/1.jpg", Ok("http://media.example/1.jpg")),
            (
                "https://media.example/a.jpg?size=large&v=2#top",
                Ok("https://media.example/a.jpg?size=large&v=2#top"),
            ),
            (
                "https://media.example/caf%C3%A9%20menu.jpg",
                Ok("https://media.example/caf%C3%A9%20menu.jpg"),
            ),
            ("https://Media.Example:8443/x", Ok("https://media.example:8443/x")),
            ("HTTPS://media.example", Ok("https://media.example/")),
            (
                "https://media.example/café.jpg",
                Ok("https://media.example/caf%C3%A9.jpg"),
            ),
            ("https://127.0.0.1/x.png", Ok("https://127.0.0.1/x.png")),
            ("http://media.example/a b.jpg", Err(Whitespace)),
            ("http://media.example/a\nb.jpg", Err(Whitespace)),
            ("http://media.example/a\r\nb.jpg", Err(Whitespace)),
            ("http://media.example/a\tb.jpg", Err(Whitespace)),
            (" https://media.example/a.jpg", Err(Whitespace)),
            ("https://media.example/a.jpg\u{a0}", Err(Whitespace)),
            ("https://media.example/a\u{0}.jpg", Err(Whitespace)),
            ("https://media.example/a\u{7f}.jpg", Err(Whitespace)),
            ("javascript:alert(1)", Err(Scheme)),
            ("ftp://media.example/1.jpg", Err(Scheme)),
            ("data:image/png;base64,AAAA", Err(Scheme)),
            ("//media.example/1.jpg", Err(Scheme)),
            ("media.example/1.jpg", Err(Scheme)),
            ("http:media.example/1.jpg", Err(Scheme)),
            ("http:\\\\media.example/1.jpg", Err(Scheme)),
            ("http://", Err(NoHost)),
            ("https:///1.jpg", Err(NoHost)),
            ("https://\\media.example/1.jpg", Err(NoHost)),
            ("https://?x=1", Err(NoHost)),
            ("", Err(Empty)),
            (&long, Err(TooLong)),
        ];
        for (raw, want) in table {
            let got = AttachmentUrl::parse(raw);
            assert_eq!(
                got.as_ref().map(AttachmentUrl::as_str).map_err(Clone::clone),
                want.clone(),
                "{raw:?}"
            );
        }
        for bad in ["https://exa mple.com/", "https://[::1/x", "https://a..b:99999/"] {
            assert!(AttachmentUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_types_are_media_types_stored_normalized() {
        use InvalidMediaType::*;
        let table: &[(&str, Result<&str, InvalidMediaType>)] = &[
            ("image/jpeg", Ok("image/jpeg")),
            ("IMAGE/PNG", Ok("image/png")),
            ("application/pdf", Ok("application/pdf")),
            ("image/svg+xml", Ok("image/svg+xml")),
            ("application/vnd.ms-excel", Ok("application/vnd.ms-excel")),
            ("image/jpeg; charset=binary", Ok("image/jpeg; charset=binary")),
            ("image/jpeg;charset=binary", Ok("image/jpeg; charset=binary")),
            ("text/plain; Charset=UTF-8", Ok("text/plain; charset=utf-8")),
            ("IMAGE/JPEG;charset=Binary", Ok("image/jpeg; charset=binary")),
            ("text/plain; name=\"a b\"", Ok("text/plain; name=\"a b\"")),
            ("text/plain; a=1; b=2", Ok("text/plain; a=1; b=2")),
            ("image/png\r\nX-Injected: 1", Err(Characters)),
            ("image/png\n", Err(Characters)),
            ("image/png\t", Err(Characters)),
            ("image/pngé", Err(Characters)),
            ("image", Err(Malformed)),
            ("image/", Err(Malformed)),
            ("/png", Err(Malformed)),
            // Found by fuzzing: a parameter without a value normalized to one that did not parse.
            ("a+/+; ++=", Err(Malformed)),
            ("image/png/x", Err(Malformed)),
            ("image png", Err(Malformed)),
            ("image/png; charset", Err(Malformed)),
            ("image/png; =x", Err(Malformed)),
            ("image/png; a=\"open", Err(Malformed)),
            ("*/*", Err(Wildcard)),
            ("image/*", Err(Wildcard)),
            ("", Err(Empty)),
            ("   ", Err(Empty)),
        ];
        for (raw, want) in table {
            let got = MediaType::parse(raw);
            assert_eq!(
                got.as_ref().map(MediaType::as_str).map_err(Clone::clone),
                want.clone(),
                "{raw:?}"
            );
        }
        assert_eq!(
            MediaType::parse(&format!("image/{}", "x".repeat(MAX_CONTENT_TYPE))),
            Err(TooLong)
        );
    }

    #[test]
    fn a_normalized_media_type_parses_to_itself() {
        for raw in [
            "image/jpeg; charset=binary",
            "text/plain; name=\"a b\"; x=1",
            "IMAGE/Png",
        ] {
            let once = MediaType::parse(raw).unwrap();
            assert_eq!(MediaType::parse(once.as_str()).unwrap(), once, "{raw}");
        }
    }
}
