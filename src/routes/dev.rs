//! The web client's one-click sign-in for trying the hub out: offered only while the hub
//! runs on the development secret on a loopback address (anyone who can reach it could mint
//! `switchboard token` output anyway). Anywhere else the route answers 404, as if absent.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::{State, input::Body};
use crate::{
    auth::{TokenSpec, mint_hs256},
    config::{DEV_SECRET, configured},
    domain::{Id, LocationId, TenantId, UserId},
    error::ApiError,
};

fn offered(state: &State) -> Result<(), ApiError> {
    if state.dev_sign_in {
        Ok(())
    } else {
        Err(ApiError::NotFound("route"))
    }
}

/// `GET /api/v1/dev/token`: 200 while the one-click sign-in is offered.
pub async fn available(state: State) -> Result<HttpResponse, ApiError> {
    offered(&state)?;
    Ok(HttpResponse::Ok().json(json!({"available": true})))
}

/// `POST /api/v1/dev/token` `{"sub", "tenant", "roles", "locations", "name"?}`: a one-hour
/// token signed with the development secret.
pub async fn mint(state: State, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    offered(&state)?;
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
    Ok(HttpResponse::Ok().json(json!({"token": mint_hs256(DEV_SECRET, &spec)})))
}
