//! HTTP routes, one file per area of the contract. Handlers parse their input at the edge
//! (`input`), check the caller's role and locations, and talk to the `Store` and the hub.

mod assets;
mod dev;
mod directory;
pub mod edge;
mod endpoint;
mod folders;
mod health;
mod ingest;
pub mod input;
mod me;
pub mod openapi;
pub mod origin;
pub mod paging;
mod presence;
mod threads;
mod ws;

use std::{future::Future, pin::Pin, sync::Arc};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use endpoint::{Endpoint, resource};
use tokio::sync::watch;

use crate::{
    auth::{Principal, Role, Verifier},
    bus::Bus,
    config::Settings,
    cursor::Cursors,
    domain::{LocationId, PhoneParser},
    error::ApiError,
    hub::Hub,
    limits::RateLimits,
    metrics::Metrics,
    session,
    store::{Scope, Store},
};

/// What every handler may use.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Arc<Hub>,
    pub verifier: Arc<Verifier>,
    pub phones: PhoneParser,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub limits: RateLimits,
    /// Seals and opens the paged lists' cursors with the deployment's key.
    pub cursors: Cursors,
    /// Whether `/api/v1/dev/token` is offered: the development secret on a loopback address.
    pub dev_sign_in: bool,
    /// Which hosts the hub answers as, and which proxies it believes about them.
    pub hosts: origin::Hosts,
    pub session_deps: Arc<session::Deps>,
    pub shutdown: watch::Receiver<bool>,
}

pub type State = web::Data<AppState>;

/// Every route the hub serves, with the methods each takes (each with `resource`, so that
/// other methods answer 405 with `Allow`).
fn endpoints() -> Vec<Endpoint> {
    vec![
        resource("/healthz").get(health::healthz),
        resource("/readyz").get(health::readyz),
        resource("/metrics").get(health::metrics),
        resource("/ws").get(ws::handshake),
        resource("/api/v1/openapi.json").get(openapi::openapi_json),
        resource("/api/v1/dev/token").get(dev::available).post(dev::mint),
        resource("/api/v1/locations/{id}").put(directory::put_location),
        resource("/api/v1/users/{id}").put(directory::put_user),
        resource("/api/v1/folders").get(folders::search),
        resource("/api/v1/folders/{id}")
            .put(directory::put_folder)
            .get(folders::get),
        resource("/api/v1/folders/{id}/messages").get(folders::messages),
        resource("/api/v1/folders/{id}/photos").get(folders::photos),
        resource("/api/v1/preferences")
            .get(directory::get_preferences)
            .put(directory::put_preferences),
        resource("/api/v1/messages/inbound").post(ingest::inbound),
        resource("/api/v1/messages/{id}/link-images").post(folders::link_images),
        resource("/api/v1/me").get(me::get),
        resource("/api/v1/me/subscriptions").put(me::put_subscriptions),
        resource("/api/v1/resources").get(me::resources),
        resource("/api/v1/presence").get(presence::list),
        resource("/api/v1/threads").get(threads::list),
        resource("/api/v1/threads/{id}").get(threads::get),
        resource("/api/v1/threads/{id}/messages").get(threads::messages),
        resource("/api/v1/threads/{id}/read").post(threads::read),
        resource("/api/v1/threads/{id}/unread").post(threads::unread),
        resource("/api/v1/threads/{id}/replies").post(threads::reply),
        resource("/api/v1/threads/{id}/assign").post(threads::assign),
    ]
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for endpoint in endpoints() {
        cfg.service(endpoint);
    }
}

/// What `configure` serves: each path (as `{id}` templates) with the methods it takes, for
/// checking the OpenAPI description against.
pub fn served() -> Vec<(String, Vec<String>)> {
    endpoints()
        .iter()
        .map(|e| (e.path().to_owned(), e.methods().iter().map(|m| m.to_string()).collect()))
        .collect()
}

/// The authenticated caller of an API call (bearer token in the Authorization header).
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = authenticate(req, false).map(Caller);
        Box::pin(async move { result })
    }
}

/// Verifies the request's token and notes who it is on the request's span.
pub fn authenticate(req: &HttpRequest, allow_query: bool) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<State>()
        .ok_or_else(|| ApiError::Unavailable("not configured".into()))?;
    let token =
        input::bearer(req, allow_query).ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
    let p = state.verifier.verify(&token)?;
    state
        .limits
        .check(&p)
        .map_err(|wait| ApiError::TooManyRequests(wait.as_secs().max(1)))?;
    let span = tracing::Span::current();
    span.record("tenant", p.tenant.as_str());
    span.record("user_id", p.user.as_str());
    Ok(p)
}

impl Caller {
    /// Directory and ingestion calls.
    pub fn service(&self) -> Result<&Principal, ApiError> {
        if self.0.has(Role::Service) {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden("this call needs the service role".into()))
        }
    }

    /// Message Center calls.
    pub fn member(&self) -> Result<&Principal, ApiError> {
        if self.0.is_member() {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden("this call needs the user or admin role".into()))
        }
    }

    /// A Message Center caller's scope.
    pub fn scope(&self) -> Result<Scope, ApiError> {
        let p = self.member()?;
        Ok(Scope {
            tenant: p.tenant.clone(),
            user: p.user.clone(),
            locations: p.locations.clone(),
        })
    }

    /// Members granted `location`.
    pub fn granted(&self, location: &LocationId) -> Result<&Principal, ApiError> {
        let p = self.member()?;
        if p.grants(location) {
            Ok(p)
        } else {
            Err(ApiError::Forbidden(format!(
                "your token does not grant location {location}"
            )))
        }
    }
}
