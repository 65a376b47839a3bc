//! `GET /api/v1/presence`: who is viewing or typing where, now, on every node (`presence`,
//! `bus::presence`).

use actix_web::HttpResponse;
use serde::Serialize;

use super::{Caller, State};
use crate::{domain::ThreadId, error::ApiError, presence::UserPresence};

/// One thread where someone is.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ThreadPresence {
    pub thread_id: ThreadId,
    pub users: Vec<UserPresence>,
}

#[utoipa::path(get, path = "/api/v1/presence", tag = "message center",
    description = "The threads at the caller's locations where someone is present, with who and what they do: the picture a reconnecting client starts from (live changes come as `presence` frames).",
    responses((status = 200, body = Vec<ThreadPresence>), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn list(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    let scope = caller.scope()?;
    // Redis out of reach: what this node heard of the others is the best picture left.
    let elsewhere = match state.bus.presence_elsewhere(&scope.tenant).await {
        Ok(elsewhere) => Some(elsewhere),
        Err(e) => {
            tracing::warn!(error = %e, "presence of the other nodes unreadable; answering with what this node heard");
            None
        }
    };
    let threads: Vec<ThreadPresence> = state
        .hub
        .presence_snapshot(&scope.tenant, &scope.locations, elsewhere)
        .into_iter()
        .map(|(thread_id, users)| ThreadPresence { thread_id, users })
        .collect();
    Ok(HttpResponse::Ok().json(threads))
}
