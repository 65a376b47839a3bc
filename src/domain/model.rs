//! The contract's JSON shapes (PROTOCOL.md, "Shapes"), as the store returns them.

use std::fmt;

use serde::{Serialize, Serializer};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{AttachmentId, FolderId, LocationId, MessageId, PhoneNumber, TenantId, ThreadId, UserId};

/// A UTC instant with microsecond precision, serialized as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn from_datetime(t: OffsetDateTime) -> Self {
        Self((t.unix_timestamp_nanos() / 1000) as i64)
    }

    /// Parses an RFC 3339 timestamp (any offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339).ok().map(Self::from_datetime)
    }

    /// Parses an instant a client says something happened at (an inbound message's
    /// `received_at`): RFC 3339, no earlier than the Unix epoch and no later than
    /// `MAX_AHEAD_OF_NOW` past `now`.
    pub fn parse_reported(s: &str, now: Timestamp) -> Result<Self, InvalidInstant> {
        let t = Self::parse_rfc3339(s).ok_or(InvalidInstant::Format)?;
        if t.0 < 0 {
            return Err(InvalidInstant::BeforeEpoch);
        }
        if t.0 > now.0.saturating_add(MAX_AHEAD_OF_NOW.whole_microseconds() as i64) {
            return Err(InvalidInstant::Future);
        }
        Ok(t)
    }
}

/// How far ahead of this hub's clock a reported instant may be: the sender's clock may run a
/// little fast, but a message dated later would sit at the top of every thread list (they are
/// newest first) until real time caught up with it.
pub const MAX_AHEAD_OF_NOW: time::Duration = time::Duration::minutes(5);

/// Why a reported instant was refused (the 422's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInstant {
    #[error("must be an RFC 3339 timestamp")]
    Format,
    #[error("must not be before 1970-01-01T00:00:00Z")]
    BeforeEpoch,
    #[error("must not be more than 5 minutes ahead of the hub's clock")]
    Future,
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        // unwrap_or: Rfc3339 formatting only fails for years outside 0..=9999.
        f.write_str(&t.format(&Rfc3339).unwrap_or_default())
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::string_schema("", Some(utoipa::openapi::KnownFormat::DateTime))
    }
}

impl utoipa::ToSchema for Timestamp {}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Location {
    pub id: LocationId,
    pub name: String,
    pub sms_numbers: Vec<PhoneNumber>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Folder {
    pub id: FolderId,
    pub name: String,
    pub location_id: LocationId,
    pub phone_numbers: Vec<PhoneNumber>,
    pub sales_resource_id: Option<UserId>,
    pub service_resource_id: Option<UserId>,
}

/// Tenant preferences (Setup / Company / Preferences / Folders).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, utoipa::ToSchema, Eq)]
pub struct Preferences {
    pub notify_sales_resource: bool,
    pub notify_service_resource: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            notify_sales_resource: true,
            notify_service_resource: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, utoipa::ToSchema, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Attachment {
    pub id: AttachmentId,
    pub url: String,
    pub content_type: String,
}

impl Attachment {
    /// Whether "Link Image(s) to Folder" takes this attachment.
    pub fn is_image(&self) -> bool {
        self.content_type.to_ascii_lowercase().starts_with("image/")
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub thread_id: ThreadId,
    pub direction: Direction,
    pub body: String,
    pub attachments: Vec<Attachment>,
    pub created_at: Timestamp,
    pub author_id: Option<UserId>,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Thread {
    pub id: ThreadId,
    pub location_id: LocationId,
    pub customer_number: PhoneNumber,
    pub folder_id: Option<FolderId>,
    pub unread: bool,
    pub unread_count: u32,
    pub last_message: Message,
    pub last_message_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Photo {
    pub attachment_id: AttachmentId,
    pub message_id: MessageId,
    pub url: String,
    pub linked_by: UserId,
    pub linked_at: Timestamp,
}

/// One entry of the resource drop-down.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Resource {
    pub user_id: UserId,
    pub name: Option<String>,
}

/// `GET /api/v1/me`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Me {
    pub user_id: UserId,
    pub tenant: TenantId,
    pub name: Option<String>,
    pub locations: Vec<LocationId>,
    pub subscribe_all: bool,
    pub unread_count: u64,
}

/// Where a thread list stopped: the last listed thread's `last_message_at` (microseconds) and
/// id. Lists are newest first, ties broken by id; the next page holds the threads strictly
/// past this position. Clients never see it raw: the edge hands it out sealed in a cursor
/// (`crate::cursor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPosition {
    pub at: i64,
    pub id: ThreadId,
}

/// Where a message list stopped: the oldest listed message's `created_at` (microseconds) and
/// the store's sequence number for it, which orders messages of the same instant. The next
/// page holds the messages strictly before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagePosition {
    pub at: i64,
    pub seq: i64,
}

/// A page of a thread list, newest first, as the store returns it: `next` is where the next
/// page starts, if there is one. (Not serialized: the edge answers `next` as a cursor.)
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadPage {
    pub threads: Vec<Thread>,
    pub next: Option<ThreadPosition>,
}

/// A page of a thread's or a folder's messages, oldest first; `next` goes further back.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub next: Option<MessagePosition>,
}

/// `POST /api/v1/messages/inbound` (201 on first sight, 200 on a repeat).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Ingested {
    pub message: Message,
    pub thread: Thread,
    #[serde(skip)]
    pub created: bool,
}

/// `POST /api/v1/messages/{id}/link-images`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Linked {
    pub folder_id: FolderId,
    pub linked: u32,
    pub photos: Vec<Photo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_instant_lies_between_the_epoch_and_five_minutes_from_now() {
        let now = Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        let table: &[(&str, Result<&str, InvalidInstant>)] = &[
            ("2026-11-23T10:00:00Z", Ok("2026-11-23T10:00:00Z")),
            ("2026-11-23T09:00:00Z", Ok("2026-11-23T09:00:00Z")),
            ("2026-11-23T10:05:00Z", Ok("2026-11-23T10:05:00Z")),
            ("2026-11-23T12:04:59+02:00", Ok("2026-11-23T10:04:59Z")),
            ("1970-01-01T00:00:00Z", Ok("1970-01-01T00:00:00Z")),
            ("2001-09-09T01:46:40.5Z", Ok("2001-09-09T01:46:40.5Z")),
            ("2026-11-23T10:05:00.000001Z", Err(InvalidInstant::Future)),
            ("2026-11-23T10:06:00Z", Err(InvalidInstant::Future)),
            ("9999-12-31T23:59:59Z", Err(InvalidInstant::Future)),
            ("1969-12-31T23:59:59Z", Err(InvalidInstant::BeforeEpoch)),
            ("1970-01-01T00:00:00+00:01", Err(InvalidInstant::BeforeEpoch)),
            ("0000-01-01T00:00:00Z", Err(InvalidInstant::BeforeEpoch)),
            ("2026-11-23 10:00:00", Err(InvalidInstant::Format)),
            ("yesterday", Err(InvalidInstant::Format)),
            ("", Err(InvalidInstant::Format)),
        ];
        for (raw, want) in table {
            let got = Timestamp::parse_reported(raw, now).map(|t| t.to_string());
            assert_eq!(got, want.map(str::to_owned), "{raw}");
        }
    }
}
