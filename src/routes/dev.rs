//! The web client's one-click sign-in for trying the hub out: offered only while the hub
//! runs on the development secret on a loopback address (anyone who can reach it could mint
//! `switchboard token` output anyway), and only to requests addressed to a loopback name and
//! the bound port (`Host: localhost:PORT`, `127.0.0.1:PORT`, `[::1]:PORT`): a page on another
//! name that DNS rebinding pointed at 127.0.0.1 must not mint tokens. Anywhere else the route
//! answers 404, as if absent.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde_json::{Value, json};

use super::{State, input::Body};
use crate::{
    auth::{TokenSpec, mint_hs256},
    config::{DEV_SECRET, configured},
    domain::{Id, LocationId, TenantId, UserId},
    error::ApiError,
};

fn offered(state: &State, req: &HttpRequest) -> Result<(), ApiError> {
    if state.dev_sign_in && state.hosts.is_local_request(req) {
        Ok(())
    } else {
        Err(ApiError::NotFound("route"))
    }
}

/// `GET /api/v1/dev/token`: 200 while the one-click sign-in is offered.
#[utoipa::path(get, path = "/api/v1/dev/token", tag = "development",
    description = "200 only on the development secret on loopback; 404 elsewhere.",
    responses((status = 200, description = "The one-click sign-in is offered"), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub async fn available(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    offered(&state, &req)?;
    Ok(HttpResponse::Ok().json(json!({"available": true})))
}

/// `POST /api/v1/dev/token` `{"sub", "tenant", "roles", "locations", "name"?}`: a one-hour
/// token signed with the development secret.
#[utoipa::path(post, path = "/api/v1/dev/token", tag = "development",
    request_body = super::openapi::DevTokenBody,
    responses((status = 200, description = "`{\"token\"}`, one hour"), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub async fn mint(state: State, req: HttpRequest, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    offered(&state, &req)?;
    let body = Body::new(body)?;
    let sub: UserId = body.id("sub")?;
    let tenant: TenantId = body.id("tenant")?;
    let strings = |field: &str| -> Result<Vec<String>, ApiError> {
        body.array(field)?
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid(field, "must be strings"))
            })
            .collect()
    };
    let roles = strings("roles")?;
    if roles.is_empty() || !roles.iter().all(|r| matches!(r.as_str(), "user" | "admin" | "service")) {
        return Err(ApiError::invalid("roles", "must be some of user, admin, service"));
    }
    let locations = strings("locations")?;
    for l in &locations {
        LocationId::parse(l).map_err(|e| ApiError::invalid("locations", e))?;
    }
    let mut spec = TokenSpec::new(sub.as_str(), tenant.as_str(), &[], &[]);
    spec.roles = roles;
    spec.locations = locations;
    spec.name = body.opt_string("name")?;
    spec.issuer = configured(&state.settings.auth.issuer).map(str::to_owned);
    spec.audience = configured(&state.settings.auth.audience).map(str::to_owned);
    // A bearer token: no cache may keep it (RFC 6749 §5.1 asks the same of token answers).
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"token": mint_hs256(DEV_SECRET, &spec)})))
}
