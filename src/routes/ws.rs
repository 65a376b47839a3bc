//! `GET /ws`: the websocket handshake. Origin and token are checked before the upgrade; the
//! session itself runs in `crate::session`. Which origin is the hub's own is `origin`'s call.
//!
//! The 101 response is actix-http's websocket handshake with our body
//! (`session::wire::OutBody`), drained from the session's wire queue, into which the hub
//! writes live events directly; the client's frames are read by `session::inbound`.

use actix_web::{HttpRequest, HttpResponse, ResponseError, http::header, web};
use tracing::Instrument;

use super::{State, authenticate, origin::Hosts};
use crate::{auth::Role, error::ApiError, hub::QueueBounds, session};

#[utoipa::path(get, path = "/ws", tag = "websocket",
    description = "The websocket handshake (RFC 6455); frames and events are in docs/protocol.md. The token may also come as `access_token`.",
    params(("access_token" = Option<String>, Query, description = "The JWT, for browsers"),
        ("last_event_id" = Option<String>, Query, description = "Resume in the handshake")),
    responses((status = 101, description = "Upgraded"), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn handshake(state: State, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    check_origin(&req, &state.hosts, &state.settings.server.allowed_origins)?;
    let principal = authenticate(&req, true)?;
    if state.hub.len() >= state.settings.server.max_sessions {
        return Err(ApiError::Unavailable(
            "this node holds as many sessions as it may; retry elsewhere".into(),
        ));
    }
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    // actix-web gives the handshake's errors their status in `error_response` alone.
    let mut response = actix_http::ws::handshake(req.head()).map_err(|e| ApiError::Http {
        status: e.error_response().status(),
        detail: e.to_string(),
    })?;
    let stream = session::inbound::Reader::new(body.into_inner(), state.settings.ws.max_frame_bytes);
    let is_service = principal.has(Role::Service) && !principal.is_member();
    let max_per_user = state.settings.ws.max_sessions_per_user;
    let (handle, queue, wire) = state
        .hub
        .register(
            principal.tenant.clone(),
            principal.user.clone(),
            is_service,
            principal.locations.clone(),
            QueueBounds {
                items: state.settings.ws.queue_capacity,
                bytes: state.settings.ws.queue_bytes,
            },
            max_per_user,
        )
        .map_err(|held| {
            ApiError::TooManySessions(format!(
                "{} already holds {held} sessions on this node, the most allowed (ws.max_sessions_per_user = \
                 {max_per_user}); close one first",
                principal.user
            ))
        })?;
    state.metrics.handshakes.inc();
    let span =
        tracing::info_span!("session", tenant = %principal.tenant, user_id = %principal.user, session_id = %handle.id);
    let deps = state.session_deps.clone();
    // `?last_event_id=ID`: resume in the handshake, so the replay precedes every live event.
    let resume_from = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("last_event_id").cloned());
    let room = std::sync::Arc::downgrade(&handle) as session::wire::RoomOwner;
    let run = session::run(deps, handle, queue, stream, &principal, resume_from);
    actix_web::rt::spawn(run.instrument(span));
    Ok(HttpResponse::from(response.body(session::wire::OutBody::new(wire, room))).map_into_boxed_body())
}

/// Browsers send `Origin`; only the hub's own and the configured ones may open a session.
/// Non-browser clients send none and are let through (their token is what counts).
fn check_origin(req: &HttpRequest, hosts: &Hosts, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    if hosts.own(req).is_some_and(|own| own.matches(origin))
        || allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("origin {origin} is not allowed")))
    }
}
