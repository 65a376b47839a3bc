//! The Customer Messages list, a thread's conversation, read/unread, replies and Assign
//! Folder.

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{
    Caller, State,
    input::{self, Body, Query, path_id},
    paging::{self, MessageList, ThreadList},
};
use crate::{
    cursor::List,
    domain::{Id, MessageId, ThreadId, UserId, model::Thread},
    error::ApiError,
    store::{ThreadQuery, ThreadView},
};

/// Longest reply accepted.
const MAX_REPLY: usize = 1600;

#[utoipa::path(get, path = "/api/v1/threads", tag = "message center",
    params(("view" = Option<String>, Query, description = "`mine` (default) or `resource`"),
        ("resource_id" = Option<String>, Query, description = "With view=resource"),
        ("unread_only" = Option<bool>, Query, description = "Only unread threads"),
        ("limit" = Option<u32>, Query, description = "1-200, default 50"),
        ("before" = Option<String>, Query, description = "A `next` cursor of this list")),
    responses((status = 200, body = super::paging::ThreadList), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn list(state: State, caller: Caller, q: Query) -> Result<HttpResponse, ApiError> {
    let scope = caller.scope()?;
    let view = match q.get("view").map(String::as_str) {
        None | Some("mine") => ThreadView::Mine,
        Some("resource") => {
            let raw = q
                .get("resource_id")
                .ok_or_else(|| ApiError::invalid("resource_id", "is required with view=resource"))?;
            ThreadView::Resource(UserId::parse(raw).map_err(|e| ApiError::invalid("resource_id", e))?)
        }
        Some(_) => return Err(ApiError::invalid("view", "must be mine or resource")),
    };
    let query = ThreadQuery {
        view,
        unread_only: input::query_bool(&q, "unread_only")?,
        limit: paging::limit(&q)?,
        before: paging::before(&q, &state.cursors, &scope.tenant, List::Threads)?,
    };
    let page = state.store.threads(&scope, query).await?;
    Ok(HttpResponse::Ok().json(ThreadList::new(page, &state.cursors, &scope.tenant)))
}

/// The thread, if the caller is granted its location.
async fn visible(state: &State, caller: &Caller, raw: &str) -> Result<Thread, ApiError> {
    caller.member()?;
    let id: ThreadId = path_id(raw)?;
    let thread = state.store.thread(&caller.0.tenant, &id).await?;
    caller.granted(&thread.location_id)?;
    Ok(thread)
}

#[utoipa::path(get, path = "/api/v1/threads/{id}", tag = "message center", params(("id" = String, Path, description = "The thread")),
    responses((status = 200, body = crate::domain::model::Thread), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn get(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(visible(&state, &caller, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/threads/{id}/messages", tag = "message center",
    params(("id" = String, Path, description = "The thread"), ("limit" = Option<u32>, Query, description = "1-200, default 50"),
        ("before" = Option<String>, Query, description = "A `next` cursor of this list")),
    responses((status = 200, body = super::paging::MessageList), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn messages(state: State, caller: Caller, id: web::Path<String>, q: Query) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    let (tenant, list) = (&caller.0.tenant, List::ThreadMessages(&thread.id));
    let paging = paging::messages(&q, &state.cursors, tenant, list)?;
    let page = state
        .store
        .thread_messages(&caller.scope()?, &thread.id, paging)
        .await?;
    Ok(HttpResponse::Ok().json(MessageList::new(page, &state.cursors, tenant, list)))
}

#[utoipa::path(post, path = "/api/v1/threads/{id}/read", tag = "message center", params(("id" = String, Path, description = "The thread")),
    responses((status = 200, body = crate::domain::model::Thread), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn read(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(
        state
            .store
            .mark_read(&caller.0.tenant, &thread.id, &caller.0.user)
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/threads/{id}/unread", tag = "message center", params(("id" = String, Path, description = "The thread")),
    responses((status = 200, body = crate::domain::model::Thread), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn unread(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(
        state
            .store
            .mark_unread(&caller.0.tenant, &thread.id, &caller.0.user)
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/threads/{id}/replies", tag = "message center", params(("id" = String, Path, description = "The thread")),
    request_body = super::openapi::ReplyBody,
    responses((status = 201, body = crate::domain::model::Message), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn reply(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    let body = Body::new(body)?;
    let text = body.text("body", MAX_REPLY)?;
    let after: Option<MessageId> = body.opt_id("after_message_id")?;
    // `force`: the replier saw the newer messages and answers anyway.
    let force = body.opt_bool("force")?.unwrap_or(false);
    let guard = after.filter(|_| !force);
    let message = state
        .store
        .reply(&caller.0.tenant, &thread.id, &caller.0.user, text, guard.as_ref())
        .await?;
    Ok(HttpResponse::Created().json(message))
}

#[utoipa::path(post, path = "/api/v1/threads/{id}/assign", tag = "message center", params(("id" = String, Path, description = "The thread")),
    request_body = super::openapi::AssignBody,
    responses((status = 200, body = crate::domain::model::Thread), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn assign(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    let folder_id = Body::new(body)?.id("folder_id")?;
    let folder = state.store.folder(&caller.0.tenant, &folder_id).await?;
    caller.granted(&folder.location_id)?;
    Ok(HttpResponse::Ok().json(
        state
            .store
            .assign(&caller.0.tenant, &thread.id, &folder.id, &caller.0.user)
            .await?,
    ))
}
