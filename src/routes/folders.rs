//! The Assign Folder search, a folder's Communications and Photos tabs, and Link Image(s) to
//! Folder.

use actix_web::{HttpResponse, web};

use super::{
    Caller, State,
    input::{self, Query, path_id},
    paging::{self, MessageList},
};
use crate::{
    cursor::List,
    domain::{FolderId, MessageId, model::Folder},
    error::ApiError,
};

#[utoipa::path(get, path = "/api/v1/folders", tag = "message center",
    params(("phone" = Option<String>, Query, description = "Digits a folder's number contains"),
        ("q" = Option<String>, Query, description = "Text its name contains")),
    responses((status = 200, body = Vec<crate::domain::model::Folder>), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn search(state: State, caller: Caller, q: Query) -> Result<HttpResponse, ApiError> {
    let scope = caller.scope()?;
    let digits = match q.get("phone") {
        None => None,
        Some(p) => {
            let digits: String = p.chars().filter(char::is_ascii_digit).collect();
            if digits.is_empty() {
                return Err(ApiError::invalid("phone", "must contain digits"));
            }
            Some(digits)
        }
    };
    let text = q.get("q").map(|s| input::without_nul("q", s)).transpose()?;
    let text = text.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    Ok(HttpResponse::Ok().json(state.store.search_folders(&scope, digits, text).await?))
}

/// The folder, if the caller is granted its location (resource or not).
async fn visible(state: &State, caller: &Caller, raw: &str) -> Result<Folder, ApiError> {
    caller.member()?;
    let id: FolderId = path_id(raw)?;
    let folder = state.store.folder(&caller.0.tenant, &id).await?;
    caller.granted(&folder.location_id)?;
    Ok(folder)
}

#[utoipa::path(get, path = "/api/v1/folders/{id}", tag = "message center", params(("id" = String, Path, description = "The folder")),
    responses((status = 200, body = crate::domain::model::Folder), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn get(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(visible(&state, &caller, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/folders/{id}/messages", tag = "message center",
    params(("id" = String, Path, description = "The folder"), ("limit" = Option<u32>, Query, description = "1-200, default 50"),
        ("before" = Option<String>, Query, description = "A `next` cursor of this list")),
    responses((status = 200, body = super::paging::MessageList), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn messages(state: State, caller: Caller, id: web::Path<String>, q: Query) -> Result<HttpResponse, ApiError> {
    let folder = visible(&state, &caller, &id).await?;
    let (tenant, list) = (&caller.0.tenant, List::FolderMessages(&folder.id));
    let paging = paging::messages(&q, &state.cursors, tenant, list)?;
    let page = state
        .store
        .folder_messages(&caller.scope()?, &folder.id, paging)
        .await?;
    Ok(HttpResponse::Ok().json(MessageList::new(page, &state.cursors, tenant, list)))
}

#[utoipa::path(get, path = "/api/v1/folders/{id}/photos", tag = "message center", params(("id" = String, Path, description = "The folder")),
    responses((status = 200, body = Vec<crate::domain::model::Photo>), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn photos(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let folder = visible(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(state.store.folder_photos(&caller.scope()?, &folder.id).await?))
}

#[utoipa::path(post, path = "/api/v1/messages/{id}/link-images", tag = "message center", params(("id" = String, Path, description = "The message")),
    responses((status = 200, body = crate::domain::model::Linked), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn link_images(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    caller.member()?;
    let id: MessageId = path_id(&id)?;
    let tenant = &caller.0.tenant;
    let message = state.store.message(tenant, &id).await?;
    let thread = state.store.thread(tenant, &message.thread_id).await?;
    caller.granted(&thread.location_id)?;
    Ok(HttpResponse::Ok().json(state.store.link_images(tenant, &id, &caller.0.user).await?))
}
