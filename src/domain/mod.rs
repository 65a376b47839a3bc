//! Parsed values: ids and phone numbers become typed values at the edge, so nothing inside
//! re-checks a raw string. Also the public JSON shapes of the contract (`model`).

mod ids;
pub mod model;
mod phone;

pub use ids::{AttachmentId, FolderId, Id, InvalidId, LocationId, MessageId, SessionId, TenantId, ThreadId, UserId};
pub use phone::{InvalidPhone, PhoneNumber, PhoneParser};
