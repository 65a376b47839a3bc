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
    domain::{Id, ThreadId, UserId, model::Thread},
    error::ApiError,
    store::{ThreadQuery, ThreadView},
};

/// Longest reply accepted.
const MAX_REPLY: usize = 1600;

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

pub async fn get(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(visible(&state, &caller, &id).await?))
}

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

pub async fn read(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(
        state
            .store
            .mark_read(&caller.0.tenant, &thread.id, &caller.0.user)
            .await?,
    ))
}

pub async fn unread(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(
        state
            .store
            .mark_unread(&caller.0.tenant, &thread.id, &caller.0.user)
            .await?,
    ))
}

pub async fn reply(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let thread = visible(&state, &caller, &id).await?;
    let text = Body::new(body)?.text("body", MAX_REPLY)?;
    let message = state
        .store
        .reply(&caller.0.tenant, &thread.id, &caller.0.user, text)
        .await?;
    Ok(HttpResponse::Created().json(message))
}

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
