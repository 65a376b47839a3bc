//! Parsed values: ids, phone numbers and attachments' URLs and content types become typed
//! values at the edge, so nothing inside re-checks a raw string. Also the public JSON shapes
//! of the contract (`model`).

mod attachment;
mod ids;
pub mod model;
mod phone;

pub use attachment::{AttachmentUrl, InvalidMediaType, InvalidUrl, MediaType};
pub use ids::{AttachmentId, FolderId, Id, InvalidId, LocationId, MessageId, SessionId, TenantId, ThreadId, UserId};
pub use phone::{InvalidPhone, PhoneNumber, PhoneParser};
