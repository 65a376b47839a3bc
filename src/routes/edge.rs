//! What every response gets on its way out of the hub:
//! - [`problems`]: an error response that actix-web or actix-files produced itself (an
//!   extractor's failure, a path the static files refuse, an unknown file) becomes
//!   `application/problem+json` like every error of ours;
//! - [`headers`]: `X-Content-Type-Options: nosniff` on every response;
//! - [`static_client`]: the web client's files (built in, see `assets`, or a folder in
//!   development), for GET and HEAD only, with the page's Content-Security-Policy,
//!   `frame-ancestors 'none'` and `Referrer-Policy`.
//!
//! Handlers keep answering with `ApiError`; nothing here changes a response that is already
//! problem+json, or one a handler marked with [`OwnBody`].

use std::{path::Path, sync::Arc};

use actix_files::Files;
use actix_web::{
    Error, HttpResponse, ResponseError,
    body::{BoxBody, EitherBody, MessageBody, to_bytes_limited},
    dev::{HttpServiceFactory, ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode,
        header::{self, HeaderValue},
    },
    middleware::{DefaultHeaders, Next, from_fn},
    web,
};

use super::{State, origin::Authority};
use crate::error::ApiError;

/// Marks an error response whose body is the answer itself and must stay as it is (`/readyz`
/// reports what is down in its 503).
#[derive(Debug, Clone, Copy)]
pub struct OwnBody;

/// Headers every response carries.
pub fn headers() -> DefaultHeaders {
    DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

/// The answer for a path nothing serves.
pub async fn unknown_path() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

/// How much of an error body actix produced is kept as the problem's `detail`.
const DETAIL_LIMIT: usize = 512;

/// Turns every error response that is not problem+json into one, keeping its status and
/// its headers (`Allow`, `Retry-After`, the page's headers).
pub async fn problems(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let res = match next.call(req).await {
        Ok(res) => res.map_into_boxed_body(),
        // No request to answer with here (a middleware may not keep a clone of it across the
        // call: routing needs it unshared), so the error itself becomes a problem, rendered
        // where actix renders errors.
        Err(e) if e.as_error::<ApiError>().is_some() => return Err(e),
        Err(e) => {
            let status = e.as_response_error().status_code();
            return Err(ApiError::Http {
                status,
                detail: detail_of(status, Some(e.to_string())),
            }
            .into());
        }
    };
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_problem(res.headers())
        || res.response().extensions().contains::<OwnBody>()
    {
        return Ok(res);
    }
    let (request, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let text = if is_text(head.headers()) {
        to_bytes_limited(body, DETAIL_LIMIT)
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
    } else {
        None
    };
    let mut problem = ApiError::Http {
        status,
        detail: detail_of(status, text),
    }
    .error_response();
    for (name, value) in head.headers() {
        let framing = [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
        ];
        if !framing.contains(name) && !problem.headers().contains_key(name) {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, problem))
}

/// A client error keeps actix's message (it says what was wrong with the request); a server
/// error's text is logged, never sent.
fn detail_of(status: StatusCode, text: Option<String>) -> String {
    let text = text.filter(|t| !t.is_empty());
    if status.is_server_error() {
        if let Some(t) = &text {
            tracing::warn!(status = status.as_u16(), error = %t, "server error");
        }
        return "the hub could not answer this request".into();
    }
    match (status, text) {
        (_, Some(t)) => t,
        (StatusCode::NOT_FOUND, None) => ApiError::NotFound("route").to_string(),
        (s, None) => s.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
    }
}

fn is_problem(headers: &header::HeaderMap) -> bool {
    content_type(headers).starts_with("application/problem+json")
}

fn is_text(headers: &header::HeaderMap) -> bool {
    content_type(headers).starts_with("text/plain")
}

fn content_type(headers: &header::HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The Message Center web client at `/`, `index.html` for a directory: the files built into
/// the binary, or with `dir` (`server.static_dir`, for development) the files of that folder
/// as they are now.
pub fn static_client(dir: Option<&Path>) -> impl HttpServiceFactory + use<> {
    let scope = web::scope("").wrap(from_fn(static_answers));
    match dir {
        Some(dir) => scope.service(
            Files::new("/", dir)
                .index_file("index.html")
                .default_handler(web::to(unknown_path)),
        ),
        None => scope.default_service(web::to(super::assets::serve)),
    }
}

/// The policy the page works under: its own scripts and styles only (it has no inline script,
/// style or event handler), pictures from anywhere over http(s) (attachments live on the MMS
/// provider's hosts), API calls and the websocket to its own host only, and no framing.
/// `'self'` covers ws:/wss: on the same host in CSP 3; older browsers need them spelled out.
fn content_security_policy(own: Option<&Authority>) -> String {
    let websocket = own.map(|a| format!(" ws://{a} wss://{a}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' http: https:; \
         connect-src 'self'{websocket}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The static client takes GET and HEAD; its answers carry the page's protective headers.
async fn static_answers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let own = req.app_data::<State>().and_then(|s| s.hosts.own(req.request()));
    // The authority was parsed strictly (letters, digits and `.-_:[]`): it cannot smuggle a
    // directive in, and makes a valid header value.
    let policy = HeaderValue::try_from(content_security_policy(own.as_ref().map(|o| o.authority())))
        .or_else(|_| HeaderValue::try_from(content_security_policy(None)))?;
    let mut res = if matches!(*req.method(), Method::GET | Method::HEAD) {
        next.call(req).await?.map_into_left_body()
    } else {
        let method = req.method().clone();
        req.error_response(ApiError::MethodNotAllowed {
            method,
            allow: Arc::from("GET, HEAD"),
        })
        .map_into_right_body()
    };
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    // The legacy form of frame-ancestors, for browsers without CSP 2.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Attachment links go to other hosts: they learn nothing of the hub's URLs.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test as actix_test};

    use super::*;

    #[actix_web::test]
    async fn an_error_actix_answers_in_text_becomes_a_problem_and_a_marked_one_keeps_its_body() {
        let app = actix_test::init_service(
            App::new()
                .wrap(from_fn(problems))
                .route(
                    "/text",
                    web::get().to(|| async {
                        HttpResponse::BadRequest()
                            .insert_header(("Retry-After", "3"))
                            .content_type("text/plain")
                            .body("the query is odd")
                    }),
                )
                .route(
                    "/report",
                    web::get().to(|| async {
                        let mut res = HttpResponse::ServiceUnavailable().json(serde_json::json!({"storage": "down"}));
                        res.extensions_mut().insert(OwnBody);
                        res
                    }),
                ),
        )
        .await;

        let res = actix_test::call_service(&app, actix_test::TestRequest::get().uri("/text").to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers().get("content-type").unwrap(), "application/problem+json");
        assert_eq!(
            res.headers().get("retry-after").unwrap(),
            "3",
            "the other headers are kept"
        );
        let body: serde_json::Value = actix_test::read_body_json(res).await;
        assert_eq!(body["detail"], "the query is odd");
        assert_eq!(body["status"], 400);

        let res = actix_test::call_service(&app, actix_test::TestRequest::get().uri("/report").to_request()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get("content-type").unwrap(), "application/json");
        let body: serde_json::Value = actix_test::read_body_json(res).await;
        assert_eq!(body, serde_json::json!({"storage": "down"}));
    }

    #[test]
    fn the_policy_names_the_pages_own_websocket_and_nothing_inline() {
        let own = Authority::parse("127.0.0.1:8080").unwrap();
        let csp = content_security_policy(Some(&own));
        assert!(
            csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(content_security_policy(None).contains("connect-src 'self';"));
    }

    #[test]
    fn a_server_errors_text_is_not_sent_but_a_client_errors_is() {
        assert_eq!(
            detail_of(StatusCode::BAD_REQUEST, Some("bad segment".into())),
            "bad segment"
        );
        assert_eq!(detail_of(StatusCode::NOT_FOUND, Some(String::new())), "route not found");
        assert_eq!(detail_of(StatusCode::METHOD_NOT_ALLOWED, None), "method not allowed");
        assert_eq!(
            detail_of(StatusCode::INTERNAL_SERVER_ERROR, Some("/etc/secret: denied".into())),
            "the hub could not answer this request"
        );
    }
}
