//! What the HTTP edge parses a write's body into (`routes::input`), and what the stores and
//! the plans take: already parsed values, nothing left to check.

use super::{AttachmentUrl, LocationId, MediaType, PhoneNumber, UserId, model::Timestamp};

/// `PUT /api/v1/locations/{id}`.
#[derive(Debug, Clone)]
pub struct LocationInput {
    pub name: String,
    pub sms_numbers: Vec<PhoneNumber>,
}

/// `PUT /api/v1/folders/{id}`.
#[derive(Debug, Clone)]
pub struct FolderInput {
    pub name: String,
    pub location_id: LocationId,
    pub phone_numbers: Vec<PhoneNumber>,
    pub sales_resource_id: Option<UserId>,
    pub service_resource_id: Option<UserId>,
}

/// A partial preferences update: `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreferencesPatch {
    pub notify_sales_resource: Option<bool>,
    pub notify_service_resource: Option<bool>,
}

/// One attachment of an inbound message.
#[derive(Debug, Clone)]
pub struct AttachmentInput {
    pub url: AttachmentUrl,
    pub content_type: MediaType,
}

/// `POST /api/v1/messages/inbound`.
#[derive(Debug, Clone)]
pub struct InboundInput {
    pub external_id: String,
    pub from: PhoneNumber,
    pub to: PhoneNumber,
    pub body: String,
    pub attachments: Vec<AttachmentInput>,
    pub received_at: Option<Timestamp>,
}
