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

pub async fn get_preferences(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.preferences(&caller.0.tenant).await?))
}

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
