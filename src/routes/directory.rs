//! Directory upserts (role `service`) and tenant preferences.

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{
    Caller, State,
    input::{Body, path_id},
};
use crate::{
    auth::Role,
    domain::{FolderId, LocationId, UserId},
    error::ApiError,
    store::{FolderInput, LocationInput, PreferencesPatch},
};

/// Longest name accepted for a location, user or folder.
const MAX_NAME: usize = 200;

#[utoipa::path(put, path = "/api/v1/locations/{id}", tag = "directory", params(("id" = String, Path, description = "The location")),
    request_body = super::openapi::LocationBody,
    responses((status = 200, body = crate::domain::model::Location), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn put_location(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let p = caller.service()?;
    let id: LocationId = path_id(&id)?;
    let body = Body::new(body)?;
    let input = LocationInput {
        name: body.text("name", MAX_NAME)?,
        sms_numbers: body.phones("sms_numbers", &state.phones)?,
    };
    Ok(HttpResponse::Ok().json(state.store.upsert_location(&p.tenant, &id, input).await?))
}

#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "directory", params(("id" = String, Path, description = "The user")),
    request_body = super::openapi::UserBody,
    responses((status = 200, body = crate::domain::model::User), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn put_user(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let p = caller.service()?;
    let id: UserId = path_id(&id)?;
    let name = Body::new(body)?.text("name", MAX_NAME)?;
    Ok(HttpResponse::Ok().json(state.store.upsert_user(&p.tenant, &id, name).await?))
}

#[utoipa::path(put, path = "/api/v1/folders/{id}", tag = "directory", params(("id" = String, Path, description = "The folder")),
    request_body = super::openapi::FolderBody,
    responses((status = 200, body = crate::domain::model::Folder), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn put_folder(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let p = caller.service()?;
    let id: FolderId = path_id(&id)?;
    let body = Body::new(body)?;
    let input = FolderInput {
        name: body.text("name", MAX_NAME)?,
        location_id: body.id("location_id")?,
        phone_numbers: body.phones("phone_numbers", &state.phones)?,
        sales_resource_id: body.opt_id("sales_resource_id")?,
        service_resource_id: body.opt_id("service_resource_id")?,
    };
    Ok(HttpResponse::Ok().json(state.store.upsert_folder(&p.tenant, &id, input).await?))
}

#[utoipa::path(get, path = "/api/v1/preferences", tag = "directory",
    responses((status = 200, body = crate::domain::model::Preferences), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn get_preferences(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.preferences(&caller.0.tenant).await?))
}

#[utoipa::path(put, path = "/api/v1/preferences", tag = "directory",
    request_body = super::openapi::PreferencesBody,
    responses((status = 200, body = crate::domain::model::Preferences), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn put_preferences(state: State, caller: Caller, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    if !(caller.0.has(Role::Service) || caller.0.has(Role::Admin)) {
        return Err(ApiError::Forbidden(
            "preferences are set by the service or an admin".into(),
        ));
    }
    let body = Body::new(body)?;
    let patch = PreferencesPatch {
        notify_sales_resource: body.opt_bool("notify_sales_resource")?,
        notify_service_resource: body.opt_bool("notify_service_resource")?,
    };
    Ok(HttpResponse::Ok().json(state.store.set_preferences(&caller.0.tenant, patch).await?))
}
