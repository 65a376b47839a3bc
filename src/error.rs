//! The HTTP error type: every failure a handler can meet, mapped once to an RFC 9457
//! `application/problem+json` body.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde_json::json;

use crate::{auth::AuthError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the body is over the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("too many requests; retry in {0} s")]
    TooManyRequests(u64),
    /// A websocket handshake beyond the user's session cap.
    #[error("{0}")]
    TooManySessions(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.to_string(),
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "malformed-json",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::Invalid { .. } => "invalid-field",
            ApiError::TooManyRequests(_) => "rate-limited",
            ApiError::TooManySessions(_) => "too-many-sessions",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "Malformed JSON",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::Invalid { .. } => "Invalid field",
            ApiError::TooManyRequests(_) => "Too many requests",
            ApiError::TooManySessions(_) => "Too many sessions",
            ApiError::Unavailable(_) => "Service unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) | ApiError::TooManySessions(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut body = json!({
            "type": format!("https://switchboard.dev/problems/{}", self.slug()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        if let ApiError::Invalid { field, .. } = self {
            body["field"] = json!(field);
        }
        let mut res = HttpResponse::build(status);
        res.content_type("application/problem+json");
        match self {
            ApiError::Unauthorized(_) => {
                res.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::TooManyRequests(secs) => {
                res.insert_header(("Retry-After", secs.to_string()));
            }
            _ => {}
        }
        res.body(body.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            StoreError::Invalid { field, detail } => ApiError::Invalid {
                field: field.into(),
                detail,
            },
            StoreError::Unavailable(msg) => {
                tracing::error!(error = %msg, "storage unavailable");
                ApiError::Unavailable("storage is unavailable; retry".into())
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}
