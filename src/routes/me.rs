//! `/me`, `/me/subscriptions` and `/resources` (the drop-down).

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{Caller, State, input::Body};
use crate::{domain::model::Me, error::ApiError};

fn with_token_name(mut me: Me, caller: &Caller) -> Me {
    if me.name.is_none() {
        me.name = caller.0.name.clone();
    }
    me
}

#[utoipa::path(get, path = "/api/v1/me", tag = "message center",
    responses((status = 200, body = crate::domain::model::Me), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn get(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    let me = state.store.me(&caller.scope()?).await?;
    Ok(HttpResponse::Ok().json(with_token_name(me, &caller)))
}

#[utoipa::path(put, path = "/api/v1/me/subscriptions", tag = "message center",
    request_body = super::openapi::SubscriptionsBody,
    responses((status = 200, body = crate::domain::model::Me), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn put_subscriptions(state: State, caller: Caller, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    let scope = caller.scope()?;
    let on = Body::new(body)?.bool("subscribe_all")?;
    let me = state.store.set_subscribe_all(&scope, on).await?;
    Ok(HttpResponse::Ok().json(with_token_name(me, &caller)))
}

#[utoipa::path(get, path = "/api/v1/resources", tag = "message center",
    responses((status = 200, body = Vec<crate::domain::model::Resource>), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn resources(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.resources(&caller.scope()?).await?))
}
