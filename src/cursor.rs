//! List cursors: the `next`/`before` of the paged lists, unforgeable.
//!
//! A store answers a page with the raw position where it stopped (`ThreadPosition`,
//! `MessagePosition`); the edge hands it to the client sealed in a `Cursor`, and opens the
//! `before` a client sends back only if this deployment sealed it for the same list. A
//! cursor the hub did not hand out, or handed out for another list (another tenant, another
//! thread's or folder's messages, the thread list), is refused (422 `before`): a client can
//! never make a store read from a position it chose.
//!
//! # Format
//! `base64url(version ‖ position ‖ tag)`, without padding, where `version` is one byte (1),
//! `position` is `at` as 8 bytes big-endian then the thread id's bytes (thread list) or
//! `seq` as 8 bytes big-endian (message lists), and `tag` is the first 16 bytes of
//! HMAC-SHA256 under the deployment's key over the list the cursor belongs to (tenant, kind,
//! thread or folder id, each length-prefixed) and then `version ‖ position`. The position
//! is readable by whoever holds the cursor (it is their own data: a time and an id), but
//! not changeable. The key comes from the store (`Store::cursor_key`): created once per
//! deployment and shared by every node, so a cursor stays good across nodes and restarts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Serialize, Serializer};
use sha2::Sha256;

use crate::domain::{
    FolderId, Id, TenantId, ThreadId,
    model::{MessagePosition, ThreadPosition},
};

type HmacSha256 = Hmac<Sha256>;

/// The format's version byte.
const VERSION: u8 = 1;
/// Bytes of the tag kept (128 bits: RFC 2104 allows truncating to half the hash).
const TAG: usize = 16;
/// Longest cursor text looked at (a thread cursor with a 64-byte id is 118 characters).
const MAX_TEXT: usize = 256;
/// Separates cursor tags from any other use of the key.
const DOMAIN: &[u8] = b"switchboard list cursor";

/// Which list a cursor belongs to.
#[derive(Debug, Clone, Copy)]
pub enum List<'a> {
    /// `GET /api/v1/threads` (every view and filter: one order, so one position space).
    Threads,
    /// `GET /api/v1/threads/{id}/messages`.
    ThreadMessages(&'a ThreadId),
    /// `GET /api/v1/folders/{id}/messages`.
    FolderMessages(&'a FolderId),
}

impl List<'_> {
    fn kind(&self) -> u8 {
        match self {
            List::Threads => 1,
            List::ThreadMessages(_) => 2,
            List::FolderMessages(_) => 3,
        }
    }

    fn id(&self) -> &str {
        match self {
            List::Threads => "",
            List::ThreadMessages(t) => t.as_str(),
            List::FolderMessages(f) => f.as_str(),
        }
    }
}

/// A position of some list, as bytes.
pub trait Position: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    /// `None` when `bytes` is not a position of this kind.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Position for ThreadPosition {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(self.id.as_str().as_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (at, id) = bytes.split_first_chunk::<8>()?;
        Some(ThreadPosition {
            at: i64::from_be_bytes(*at),
            id: ThreadId::parse(std::str::from_utf8(id).ok()?).ok()?,
        })
    }
}

impl Position for MessagePosition {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (at, seq): (&[u8; 8], &[u8; 8]) = (bytes.first_chunk()?, bytes.get(8..)?.try_into().ok()?);
        Some(MessagePosition {
            at: i64::from_be_bytes(*at),
            seq: i64::from_be_bytes(*seq),
        })
    }
}

/// A sealed position, as clients see it. Only `Cursors::seal` makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A `before` that this deployment did not seal for this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is not a cursor this server gave out for this list")]
pub struct InvalidCursor;

/// Seals and opens cursors with the deployment's key.
pub struct Cursors {
    key: HmacSha256,
}

impl Cursors {
    pub fn new(key: &[u8; 32]) -> Self {
        Cursors {
            // unwrap: HMAC takes a key of any length.
            key: HmacSha256::new_from_slice(key).unwrap(),
        }
    }

    /// The MAC state over the list, ready for `version ‖ position`.
    fn mac(&self, tenant: &TenantId, list: List<'_>) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(DOMAIN);
        for part in [tenant.as_str().as_bytes(), &[list.kind()], list.id().as_bytes()] {
            // Ids are at most 64 bytes: one length byte is unambiguous.
            mac.update(&[part.len() as u8]);
            mac.update(part);
        }
        mac
    }

    /// The cursor a client sends back to get the page after `position` of `list`.
    pub fn seal<P: Position>(&self, tenant: &TenantId, list: List<'_>, position: &P) -> Cursor {
        let mut body = vec![VERSION];
        position.encode(&mut body);
        let mut mac = self.mac(tenant, list);
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes()[..TAG]);
        Cursor(URL_SAFE_NO_PAD.encode(body))
    }

    /// The position in a cursor sealed by this deployment for `list` of `tenant`.
    pub fn open<P: Position>(&self, tenant: &TenantId, list: List<'_>, text: &str) -> Result<P, InvalidCursor> {
        if text.len() > MAX_TEXT {
            return Err(InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
        let split = bytes.len().checked_sub(TAG).ok_or(InvalidCursor)?;
        let (body, tag) = bytes.split_at(split);
        let mut mac = self.mac(tenant, list);
        mac.update(body);
        // Constant time: a forger learns nothing from how long the refusal took.
        mac.verify_truncated_left(tag).map_err(|_| InvalidCursor)?;
        match body.split_first() {
            Some((&VERSION, position)) => P::decode(position).ok_or(InvalidCursor),
            _ => Err(InvalidCursor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn thread(s: &str) -> ThreadId {
        ThreadId::parse(s).unwrap()
    }

    fn folder(s: &str) -> FolderId {
        FolderId::parse(s).unwrap()
    }

    #[test]
    fn a_sealed_position_opens_to_itself_on_its_own_list() {
        let c = Cursors::new(&[7; 32]);
        let acme = t("acme");
        let tp = ThreadPosition {
            at: 1_767_225_600_000_000,
            id: thread(&"t".repeat(64)),
        };
        let sealed = c.seal(&acme, List::Threads, &tp);
        assert!(sealed.as_str().len() <= MAX_TEXT, "{}", sealed.as_str().len());
        assert_eq!(c.open::<ThreadPosition>(&acme, List::Threads, sealed.as_str()), Ok(tp));
        let t1 = thread("t_1");
        for mp in [
            MessagePosition { at: 0, seq: 0 },
            MessagePosition { at: -5, seq: i64::MAX },
            MessagePosition { at: i64::MAX, seq: 1 },
        ] {
            let sealed = c.seal(&acme, List::ThreadMessages(&t1), &mp);
            assert_eq!(c.open(&acme, List::ThreadMessages(&t1), sealed.as_str()), Ok(mp));
        }
    }

    #[test]
    fn a_cursor_opens_only_on_the_list_and_tenant_it_was_sealed_for() {
        let c = Cursors::new(&[7; 32]);
        let (t1, t2, f1) = (thread("t_1"), thread("t_2"), folder("t_1"));
        let mp = MessagePosition { at: 10, seq: 3 };
        let sealed = c.seal(&t("acme"), List::ThreadMessages(&t1), &mp);
        let opens = |tenant: &str, list: List<'_>| c.open::<MessagePosition>(&t(tenant), list, sealed.as_str());
        assert_eq!(opens("acme", List::ThreadMessages(&t1)), Ok(mp));
        assert_eq!(opens("acme", List::ThreadMessages(&t2)), Err(InvalidCursor));
        assert_eq!(
            opens("acme", List::FolderMessages(&f1)),
            Err(InvalidCursor),
            "same id, other kind"
        );
        assert_eq!(opens("acme", List::Threads), Err(InvalidCursor));
        assert_eq!(opens("globex", List::ThreadMessages(&t1)), Err(InvalidCursor));
        let other_key = Cursors::new(&[8; 32]);
        assert_eq!(
            other_key.open::<MessagePosition>(&t("acme"), List::ThreadMessages(&t1), sealed.as_str()),
            Err(InvalidCursor),
            "another deployment's cursor"
        );
    }

    #[test]
    fn forged_altered_and_malformed_cursors_are_refused() {
        let c = Cursors::new(&[7; 32]);
        let acme = t("acme");
        let sealed = c
            .seal(
                &acme,
                List::Threads,
                &ThreadPosition {
                    at: 5,
                    id: thread("t_1"),
                },
            )
            .as_str()
            .to_owned();
        let mut flipped = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        flipped[3] ^= 1;
        let mut short_tag = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        short_tag.pop();
        let forged_body = {
            // A well-formed body with a made-up tag.
            let mut b = vec![VERSION];
            ThreadPosition {
                at: 9_999_999_999_999_999,
                id: thread("zzz"),
            }
            .encode(&mut b);
            b.extend_from_slice(&[0; TAG]);
            URL_SAFE_NO_PAD.encode(b)
        };
        let table = [
            "1~x".to_owned(),
            "9999999999999999~zzz".to_owned(),
            "-5~' OR '1'='1".to_owned(),
            "1~1".to_owned(),
            String::new(),
            "AAAA".to_owned(),
            format!("{sealed}="),
            format!("{sealed}A"),
            sealed[1..].to_owned(),
            URL_SAFE_NO_PAD.encode(flipped),
            URL_SAFE_NO_PAD.encode(short_tag),
            forged_body,
            base64::engine::general_purpose::STANDARD.encode(URL_SAFE_NO_PAD.decode(&sealed).unwrap()) + "+/",
            "A".repeat(MAX_TEXT + 1),
        ];
        for text in &table {
            assert_eq!(
                c.open::<ThreadPosition>(&acme, List::Threads, text),
                Err(InvalidCursor),
                "{text:?}"
            );
        }
        assert!(c.open::<ThreadPosition>(&acme, List::Threads, &sealed).is_ok());
    }

    #[test]
    fn a_validly_tagged_body_that_is_no_position_of_the_kind_is_refused() {
        let c = Cursors::new(&[7; 32]);
        let acme = t("acme");
        let t1 = thread("t_1");
        // A thread position's bytes sealed for a message list: the tag is right, the shape not.
        let sealed = c.seal(
            &acme,
            List::ThreadMessages(&t1),
            &ThreadPosition {
                at: 5,
                id: thread("t_1"),
            },
        );
        assert_eq!(
            c.open::<MessagePosition>(&acme, List::ThreadMessages(&t1), sealed.as_str()),
            Err(InvalidCursor)
        );
        assert_eq!(ThreadPosition::decode(&[0; 8]), None, "an empty id");
        assert_eq!(ThreadPosition::decode(b"12345678bad id"), None);
        assert_eq!(MessagePosition::decode(&[0; 15]), None);
        assert_eq!(MessagePosition::decode(&[0; 17]), None);
    }
}
