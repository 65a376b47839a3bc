//! Parsed values: ids, phone numbers and attachments' URLs and content types become typed
//! values at the edge, so nothing inside re-checks a raw string. Also the public JSON shapes
//! of the contract (`model`).

mod attachment;
mod ids;
pub mod input;
pub mod model;
mod phone;

pub use attachment::{AttachmentUrl, InvalidMediaType, InvalidUrl, MediaType};
pub use ids::{AttachmentId, FolderId, Id, InvalidId, LocationId, MessageId, SessionId, TenantId, ThreadId, UserId};
pub use phone::{InvalidPhone, PhoneNumber, PhoneParser};

/// The OpenAPI schema of a string with a `pattern` and/or a `format` (how the parsed values
/// above describe themselves).
pub(crate) fn string_schema(
    pattern: &str,
    format: Option<utoipa::openapi::KnownFormat>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::{ObjectBuilder, SchemaFormat, Type};
    let mut b = ObjectBuilder::new().schema_type(Type::String);
    if !pattern.is_empty() {
        b = b.pattern(Some(pattern));
    }
    if let Some(f) = format {
        b = b.format(Some(SchemaFormat::KnownFormat(f)));
    }
    b.into()
}
