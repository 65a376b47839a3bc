//! The HTTP error type: every failure a handler can meet, mapped once to an RFC 9457
//! `application/problem+json` body.

use std::sync::Arc;

use actix_web::{
    HttpResponse, ResponseError,
    http::{Method, StatusCode, header},
};
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
    /// A guarded reply to a thread that moved on: the newer messages, oldest first.
    #[error("the thread holds {} message(s) newer than after_message_id; nothing was sent", .0.len())]
    ThreadChanged(Vec<crate::domain::model::Message>),
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
    /// A method the path does not take; `allow` lists the ones it does ("GET, PUT").
    #[error("{method} is not allowed on this path; it takes {allow}")]
    MethodNotAllowed { method: Method, allow: Arc<str> },
    /// An error response actix-web produced itself (an extractor, the static files), carried
    /// over with its status.
    #[error("{detail}")]
    Http { status: StatusCode, detail: String },
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
            ApiError::ThreadChanged(_) => "thread-changed",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::Invalid { .. } => "invalid-field",
            ApiError::TooManyRequests(_) => "rate-limited",
            ApiError::TooManySessions(_) => "too-many-sessions",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::MethodNotAllowed { .. } => "method-not-allowed",
            ApiError::Http { status, .. } => http_kind(*status).0,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "Malformed JSON",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::ThreadChanged(_) => "Thread changed",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::Invalid { .. } => "Invalid field",
            ApiError::TooManyRequests(_) => "Too many requests",
            ApiError::TooManySessions(_) => "Too many sessions",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::MethodNotAllowed { .. } => "Method not allowed",
            ApiError::Http { status, .. } => http_kind(*status).1,
        }
    }
}

/// Slug and title of a status carried over from actix-web, in the words our own errors use
/// for the same status.
fn http_kind(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("bad-request", "Bad request"),
        404 => ("not-found", "Not found"),
        405 => ("method-not-allowed", "Method not allowed"),
        413 => ("payload-too-large", "Payload too large"),
        415 => ("unsupported-media-type", "Unsupported media type"),
        429 => ("rate-limited", "Too many requests"),
        503 => ("unavailable", "Service unavailable"),
        _ if status.is_server_error() => ("server-error", "Server error"),
        _ => ("client-error", "Client error"),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::ThreadChanged(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) | ApiError::TooManySessions(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Http { status, .. } => *status,
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
        match self {
            ApiError::Invalid { field, .. } => body["field"] = json!(field),
            ApiError::ThreadChanged(newer) => body["newer"] = json!(newer),
            _ => {}
        }
        let mut res = HttpResponse::build(status);
        res.content_type("application/problem+json");
        // Also set here, not only by `routes::edge::headers`: actix renders an error that a
        // service returns (rather than answers) after every middleware has run.
        res.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        match self {
            ApiError::Unauthorized(_) => {
                res.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::TooManyRequests(secs) => {
                res.insert_header(("Retry-After", secs.to_string()));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                res.insert_header((header::ALLOW, &**allow));
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
            StoreError::ThreadChanged(newer) => ApiError::ThreadChanged(newer),
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
