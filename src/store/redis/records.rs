//! What the Redis store keeps in its hash fields and strings: one JSON record per entity,
//! and the conversions to and from the contract's shapes. A record never carries its own id
//! (the field name is the id), so renaming nothing can make the two disagree.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{
        AttachmentId, FolderId, LocationId, MessageId, PhoneNumber, ThreadId, UserId,
        model::{Attachment, Direction, Folder, Location, Message, Photo, Preferences, Thread, Timestamp},
    },
    rules::Resources,
    store::{StoreError, StoreResult},
};

/// Encodes a record (plain data: cannot fail).
pub fn encode<T: Serialize>(record: &T) -> String {
    // unwrap: records are structs of strings, numbers, bools and lists of them.
    serde_json::to_string(record).unwrap()
}

/// Decodes a record; a record we cannot read is a storage fault, not a client's.
pub fn decode<'a, T: Deserialize<'a>>(what: &str, text: &'a str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Unavailable(format!("unreadable {what} record: {e}")))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationRecord {
    pub name: String,
    pub sms_numbers: Vec<String>,
}

impl LocationRecord {
    pub fn numbers(&self) -> Vec<PhoneNumber> {
        self.sms_numbers.iter().map(PhoneNumber::trusted).collect()
    }

    pub fn into_location(self, id: &LocationId) -> Location {
        Location {
            id: id.clone(),
            sms_numbers: self.numbers(),
            name: self.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FolderRecord {
    pub name: String,
    pub location_id: LocationId,
    pub phone_numbers: Vec<String>,
    pub sales_resource_id: Option<UserId>,
    pub service_resource_id: Option<UserId>,
}

impl FolderRecord {
    pub fn resources(&self) -> Resources {
        Resources {
            sales: self.sales_resource_id.clone(),
            service: self.service_resource_id.clone(),
        }
    }

    pub fn numbers(&self) -> Vec<PhoneNumber> {
        self.phone_numbers.iter().map(PhoneNumber::trusted).collect()
    }

    pub fn into_folder(self, id: &FolderId) -> Folder {
        Folder {
            id: id.clone(),
            phone_numbers: self.numbers(),
            name: self.name,
            location_id: self.location_id,
            sales_resource_id: self.sales_resource_id,
            service_resource_id: self.service_resource_id,
        }
    }
}

/// Tenant preferences as stored; absent means the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrefsRecord {
    pub notify_sales_resource: bool,
    pub notify_service_resource: bool,
}

impl From<PrefsRecord> for Preferences {
    fn from(p: PrefsRecord) -> Self {
        Preferences {
            notify_sales_resource: p.notify_sales_resource,
            notify_service_resource: p.notify_service_resource,
        }
    }
}

impl From<Preferences> for PrefsRecord {
    fn from(p: Preferences) -> Self {
        PrefsRecord {
            notify_sales_resource: p.notify_sales_resource,
            notify_service_resource: p.notify_service_resource,
        }
    }
}

/// A thread without its last message (which lives in `msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub location_id: LocationId,
    pub customer_number: String,
    pub folder_id: Option<FolderId>,
    pub unread_count: u32,
    pub last_message_id: MessageId,
    pub last_message_at: i64,
}

impl ThreadRecord {
    pub fn into_thread(self, id: &ThreadId, last_message: Message) -> Thread {
        Thread {
            id: id.clone(),
            location_id: self.location_id,
            customer_number: PhoneNumber::trusted(self.customer_number),
            folder_id: self.folder_id,
            unread: self.unread_count > 0,
            unread_count: self.unread_count,
            last_message,
            last_message_at: Timestamp::from_micros(self.last_message_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub id: AttachmentId,
    pub url: String,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub thread_id: ThreadId,
    pub outbound: bool,
    pub body: String,
    pub attachments: Vec<AttachmentRecord>,
    pub created_at: i64,
    pub author_id: Option<UserId>,
    pub external_id: Option<String>,
    /// The tenant's message counter when it was stored: orders equal `created_at`s.
    pub seq: i64,
}

impl MessageRecord {
    pub fn of(m: &Message, seq: i64) -> Self {
        MessageRecord {
            thread_id: m.thread_id.clone(),
            outbound: m.direction == Direction::Outbound,
            body: m.body.clone(),
            attachments: m
                .attachments
                .iter()
                .map(|a| AttachmentRecord {
                    id: a.id.clone(),
                    url: a.url.clone(),
                    content_type: a.content_type.clone(),
                })
                .collect(),
            created_at: m.created_at.micros(),
            author_id: m.author_id.clone(),
            external_id: m.external_id.clone(),
            seq,
        }
    }

    pub fn into_message(self, id: &MessageId) -> Message {
        Message {
            id: id.clone(),
            thread_id: self.thread_id,
            direction: if self.outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            body: self.body,
            attachments: self
                .attachments
                .into_iter()
                .map(|a| Attachment {
                    id: a.id,
                    url: a.url,
                    content_type: a.content_type,
                })
                .collect(),
            created_at: Timestamp::from_micros(self.created_at),
            author_id: self.author_id,
            external_id: self.external_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoRecord {
    pub message_id: MessageId,
    pub url: String,
    pub linked_by: UserId,
    pub linked_at: i64,
}

impl PhotoRecord {
    pub fn into_photo(self, attachment: AttachmentId) -> Photo {
        Photo {
            attachment_id: attachment,
            message_id: self.message_id,
            url: self.url,
            linked_by: self.linked_by,
            linked_at: Timestamp::from_micros(self.linked_at),
        }
    }
}
