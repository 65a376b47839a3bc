//! Parsing request input at the edge: JSON bodies field by field (so a 422 names the field),
//! query strings, path ids and bearer tokens.

use actix_web::{HttpRequest, error::JsonPayloadError, web};
use serde_json::{Map, Value};

use crate::{
    domain::{Id, PhoneNumber, PhoneParser},
    error::ApiError,
};

/// The JSON extractor's failures, as problem+json.
pub fn json_error(err: JsonPayloadError, limit: usize) -> ApiError {
    match err {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge(limit)
        }
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// A JSON object body, read one named field at a time.
pub struct Body(Map<String, Value>);

impl Body {
    pub fn new(v: web::Json<Value>) -> Result<Body, ApiError> {
        match v.into_inner() {
            Value::Object(m) => Ok(Body(m)),
            _ => Err(ApiError::invalid("body", "must be a JSON object")),
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    pub fn string(&self, field: &str) -> Result<String, ApiError> {
        match self.get(field) {
            Some(Value::String(s)) => without_nul(field, s).map(str::to_owned),
            Some(_) => Err(ApiError::invalid(field, "must be a string")),
            None => Err(ApiError::invalid(field, "is required")),
        }
    }

    pub fn opt_string(&self, field: &str) -> Result<Option<String>, ApiError> {
        self.get(field).map(|_| self.string(field)).transpose()
    }

    /// A required non-empty string of at most `max` characters.
    pub fn text(&self, field: &str, max: usize) -> Result<String, ApiError> {
        let s = self.string(field)?;
        if s.trim().is_empty() {
            return Err(ApiError::invalid(field, "must not be empty"));
        }
        if s.chars().count() > max {
            return Err(ApiError::invalid(field, format!("must be at most {max} characters")));
        }
        Ok(s)
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.get(field) {
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(field, "must be true or false")),
            None => Ok(None),
        }
    }

    pub fn bool(&self, field: &str) -> Result<bool, ApiError> {
        self.opt_bool(field)?
            .ok_or_else(|| ApiError::invalid(field, "is required"))
    }

    pub fn id<T: Id>(&self, field: &str) -> Result<T, ApiError> {
        T::parse(&self.string(field)?).map_err(|e| ApiError::invalid(field, e))
    }

    /// An id or null; the key must be present when `required`.
    pub fn opt_id<T: Id>(&self, field: &str) -> Result<Option<T>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.id(field).map(Some),
        }
    }

    pub fn phone(&self, field: &str, phones: &PhoneParser) -> Result<PhoneNumber, ApiError> {
        phones
            .parse(&self.string(field)?)
            .map_err(|e| ApiError::invalid(field, e))
    }

    pub fn phones(&self, field: &str, phones: &PhoneParser) -> Result<Vec<PhoneNumber>, ApiError> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => phones
                        .parse(s)
                        .map_err(|e| ApiError::invalid(format!("{field}[{i}]"), e)),
                    _ => Err(ApiError::invalid(format!("{field}[{i}]"), "must be a string")),
                })
                .collect(),
            Some(_) => Err(ApiError::invalid(field, "must be an array of phone numbers")),
        }
    }

    pub fn array(&self, field: &str) -> Result<Vec<Value>, ApiError> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(ApiError::invalid(field, "must be an array")),
        }
    }
}

/// `s` if it holds no NUL character (U+0000). JSON and query strings may carry one, but no
/// text of the hub's may: PostgreSQL refuses it in `text`, so on that backend it would be a
/// failed write instead of the caller's 422 naming the field.
pub fn without_nul<'a>(field: &str, s: &'a str) -> Result<&'a str, ApiError> {
    if s.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain the NUL character (U+0000)"));
    }
    Ok(s)
}

/// A path segment that must be an id.
pub fn path_id<T: Id>(raw: &str) -> Result<T, ApiError> {
    T::parse(raw).map_err(|e| ApiError::invalid("id", e))
}

/// The query string as key/value pairs.
pub type Query = web::Query<std::collections::HashMap<String, String>>;

pub fn query_bool(q: &Query, field: &str) -> Result<bool, ApiError> {
    match q.get(field).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ApiError::invalid(field, "must be true or false")),
    }
}

/// The bearer token of a request: the Authorization header, or `access_token` in the query
/// when `allow_query` (the websocket handshake: browsers cannot set headers).
pub fn bearer(req: &HttpRequest, allow_query: bool) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let h = h.to_str().ok()?;
        let (scheme, token) = h.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    if allow_query {
        let q = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string()).ok()?;
        return q.get("access_token").cloned();
    }
    None
}
