//! Ids: strings of 1–64 characters from `[A-Za-z0-9._:-]`, one newtype per kind so a user id
//! can never be passed where a folder id is meant.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1-64 characters from A-Z a-z 0-9 . _ : -")]
pub struct InvalidId;

/// Whether `s` is a well-formed id.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Behaviour shared by every id newtype.
pub trait Id: Sized + AsRef<str> {
    fn parse(s: &str) -> Result<Self, InvalidId>;
}

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl Id for $name {
            fn parse(s: &str) -> Result<Self, InvalidId> {
                if is_valid_id(s) { Ok(Self(s.to_owned())) } else { Err(InvalidId) }
            }
        }

        impl $name {
            /// Wraps a value that was already validated (read back from storage, or generated).
            #[allow(dead_code)] // not every kind is read back from storage
            pub(crate) fn trusted(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::domain::string_schema(r"^[A-Za-z0-9._:-]{1,64}$", None)
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if is_valid_id(&s) {
                    Ok(Self(s))
                } else {
                    Err(serde::de::Error::custom(InvalidId))
                }
            }
        }
    )*};
}

id_type!(
    /// A company.
    TenantId,
    /// A person (the JWT `sub`).
    UserId,
    /// A branch of the company.
    LocationId,
    /// A job/case record.
    FolderId,
    /// The conversation with one customer number at one location.
    ThreadId,
    /// One inbound or outbound message.
    MessageId,
    /// One attachment of a message.
    AttachmentId,
    /// One websocket connection.
    SessionId,
);

macro_rules! generated {
    ($($name:ident => $prefix:literal),*) => {$(
        impl $name {
            /// A new unique id, time-ordered.
            pub fn generate() -> Self {
                Self(format!(concat!($prefix, "{}"), uuid::Uuid::now_v7().simple()))
            }
        }
    )*};
}

generated!(ThreadId => "t_", MessageId => "m_", AttachmentId => "a_", SessionId => "s_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet_and_length() {
        for ok in ["a", "A-z_0.9:x", &"x".repeat(64)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", " a", "a b", "ü", "a/b", &"x".repeat(65)] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let (a, b) = (ThreadId::generate(), ThreadId::generate());
        assert_ne!(a, b);
        assert!(is_valid_id(a.as_str()));
    }
}
