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
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        // unwrap_or: Rfc3339 formatting only fails for years outside 0..=9999.
        f.write_str(&t.format(&Rfc3339).unwrap_or_default())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Location {
    pub id: LocationId,
    pub name: String,
    pub sms_numbers: Vec<PhoneNumber>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub id: UserId,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Folder {
    pub id: FolderId,
    pub name: String,
    pub location_id: LocationId,
    pub phone_numbers: Vec<PhoneNumber>,
    pub sales_resource_id: Option<UserId>,
    pub service_resource_id: Option<UserId>,
}

/// Tenant preferences (Setup / Company / Preferences / Folders).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Serialize, PartialEq)]
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

#[derive(Debug, Clone, Serialize, PartialEq)]
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

#[derive(Debug, Clone, Serialize, PartialEq)]
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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Photo {
    pub attachment_id: AttachmentId,
    pub message_id: MessageId,
    pub url: String,
    pub linked_by: UserId,
    pub linked_at: Timestamp,
}

/// One entry of the resource drop-down.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resource {
    pub user_id: UserId,
    pub name: Option<String>,
}

/// `GET /api/v1/me`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Me {
    pub user_id: UserId,
    pub tenant: TenantId,
    pub name: Option<String>,
    pub locations: Vec<LocationId>,
    pub subscribe_all: bool,
    pub unread_count: u64,
}

/// A page of a list, newest or oldest first as the call documents.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThreadPage {
    pub threads: Vec<Thread>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub next: Option<String>,
}

/// `POST /api/v1/messages/inbound` (201 on first sight, 200 on a repeat).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ingested {
    pub message: Message,
    pub thread: Thread,
    #[serde(skip)]
    pub created: bool,
}

/// `POST /api/v1/messages/{id}/link-images`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Linked {
    pub folder_id: FolderId,
    pub linked: u32,
    pub photos: Vec<Photo>,
}
