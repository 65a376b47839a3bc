//! HTTP routes, one file per area of the contract. Handlers parse their input at the edge
//! (`input`), check the caller's role and locations, and talk to the `Store` and the hub.

mod dev;
mod directory;
pub mod edge;
mod endpoint;
mod folders;
mod health;
mod ingest;
pub mod input;
mod me;
pub mod origin;
mod paging;
mod threads;
mod ws;

use std::{future::Future, pin::Pin, sync::Arc};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use endpoint::resource;
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

/// Mounts every route (each with `resource`, so that other methods answer 405 with `Allow`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").get(health::healthz))
        .service(resource("/readyz").get(health::readyz))
        .service(resource("/metrics").get(health::metrics))
        .service(resource("/ws").get(ws::handshake))
        .service(
            web::scope("/api/v1")
                .service(resource("/dev/token").get(dev::available).post(dev::mint))
                .service(resource("/locations/{id}").put(directory::put_location))
                .service(resource("/users/{id}").put(directory::put_user))
                .service(resource("/folders").get(folders::search))
                .service(resource("/folders/{id}").put(directory::put_folder).get(folders::get))
                .service(resource("/folders/{id}/messages").get(folders::messages))
                .service(resource("/folders/{id}/photos").get(folders::photos))
                .service(
                    resource("/preferences")
                        .get(directory::get_preferences)
                        .put(directory::put_preferences),
                )
                .service(resource("/messages/inbound").post(ingest::inbound))
                .service(resource("/messages/{id}/link-images").post(folders::link_images))
                .service(resource("/me").get(me::get))
                .service(resource("/me/subscriptions").put(me::put_subscriptions))
                .service(resource("/resources").get(me::resources))
                .service(resource("/threads").get(threads::list))
                .service(resource("/threads/{id}").get(threads::get))
                .service(resource("/threads/{id}/messages").get(threads::messages))
                .service(resource("/threads/{id}/read").post(threads::read))
                .service(resource("/threads/{id}/unread").post(threads::unread))
                .service(resource("/threads/{id}/replies").post(threads::reply))
                .service(resource("/threads/{id}/assign").post(threads::assign)),
        );
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
