//! The web client's files (`static/`), compiled into the binary so that one executable is
//! the whole product, whatever directory it starts in.
//!
//! Each answer carries its content type, a strong `ETag` (a SHA-256 of the file, computed at
//! build time), `Last-Modified` (the file's time when it was built in) and
//! `Cache-Control: no-cache`: the files keep their names from release to release, so a
//! browser keeps its copy but asks again each time, and gets a body-less 304 while the file
//! is the same (`If-None-Match`, else `If-Modified-Since`). `server.static_dir` serves a
//! folder instead (development: edit and reload without rebuilding; see `edge`).

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue, HttpDate},
};
use rust_embed::Embed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::ApiError;

/// `static/` as it was when the binary was built (in every profile: `debug-embed`).
#[derive(Embed)]
#[folder = "static/"]
struct Assets;

/// How browsers may keep the files: always revalidated (the names are not versioned).
pub const CACHE_CONTROL: &str = "no-cache";

/// Answers GET and HEAD for an embedded file; `index.html` for `/`.
pub async fn serve(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let path = req.path().trim_start_matches('/');
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    let file = Assets::get(&path).ok_or(ApiError::NotFound("route"))?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let modified = file
        .metadata
        .last_modified()
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));

    let mut res = if unchanged(&req, &etag, modified) {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, content_type(file.metadata.mimetype())))
            .body(file.data.into_owned())
    };
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    if let Ok(v) = HeaderValue::try_from(etag) {
        headers.insert(header::ETAG, v);
    }
    if let Some(t) = modified
        && let Ok(v) = HeaderValue::try_from(HttpDate::from(t).to_string())
    {
        headers.insert(header::LAST_MODIFIED, v);
    }
    Ok(res)
}

/// Whether the browser's copy is current: `If-None-Match` decides when present (RFC 9110
/// §13.1.2), else `If-Modified-Since`.
fn unchanged(req: &HttpRequest, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(v) = req.headers().get(header::IF_NONE_MATCH) {
        let v = v.to_str().unwrap_or("");
        return v
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
    }
    let since = req
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<HttpDate>().ok());
    match (since, modified) {
        (Some(since), Some(m)) => {
            // HTTP dates have whole seconds.
            let m = UNIX_EPOCH + Duration::from_secs(m.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
            m <= SystemTime::from(since)
        }
        _ => false,
    }
}

/// Text types say their charset (the files are UTF-8).
fn content_type(mime: &str) -> String {
    if mime.starts_with("text/") || mime == "application/javascript" || mime == "image/svg+xml" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_scripts_and_its_icon_are_built_in() {
        for name in [
            "index.html",
            "message-center.js",
            "switchboard-client.js",
            "presence.js",
            "ui.js",
            "message-center.css",
            "favicon.svg",
        ] {
            assert!(Assets::get(name).is_some(), "{name} is embedded");
        }
        assert_eq!(content_type("text/javascript"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("image/png"), "image/png");
    }
}
