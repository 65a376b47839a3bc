//! The Assign Folder search, a folder's Communications and Photos tabs, and Link Image(s) to
//! Folder.

use actix_web::{HttpResponse, web};

use super::{
    Caller, State,
    input::{Query, path_id},
    paging::{self, MessageList},
};
use crate::{
    cursor::List,
    domain::{FolderId, MessageId, model::Folder},
    error::ApiError,
};

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
    let text = q.get("q").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
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

pub async fn get(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(visible(&state, &caller, &id).await?))
}

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

pub async fn photos(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let folder = visible(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(state.store.folder_photos(&caller.scope()?, &folder.id).await?))
}

pub async fn link_images(state: State, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    caller.member()?;
    let id: MessageId = path_id(&id)?;
    let tenant = &caller.0.tenant;
    let message = state.store.message(tenant, &id).await?;
    let thread = state.store.thread(tenant, &message.thread_id).await?;
    caller.granted(&thread.location_id)?;
    Ok(HttpResponse::Ok().json(state.store.link_images(tenant, &id, &caller.0.user).await?))
}
