//! Registering a path with the methods it takes: every resource of the hub is built here, so
//! that a method it does not take answers 405 problem+json with an `Allow` header listing the
//! ones it does (actix-web's own 405 has neither a body nor `Allow`).
//!
//! `clippy.toml` forbids `actix_web::web::resource` elsewhere, so a new route cannot forget it.

use std::sync::Arc;

use actix_web::{
    FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder,
    dev::{AppService, HttpServiceFactory},
    http::Method,
    web,
};

use crate::error::ApiError;

/// A resource under construction: `resource("/me").get(me::get)`, used like actix-web's
/// `web::resource`.
pub struct Endpoint {
    path: String,
    resource: Resource,
    methods: Vec<Method>,
}

/// Starts the resource at `path`.
#[allow(clippy::disallowed_methods)] // the one place that may call `web::resource`
pub fn resource(path: &str) -> Endpoint {
    Endpoint {
        path: path.to_owned(),
        resource: web::resource(path),
        methods: Vec::new(),
    }
}

impl Endpoint {
    /// The path, as its template (`/api/v1/threads/{id}`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The methods it takes.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    pub fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::GET, handler)
    }

    pub fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::POST, handler)
    }

    pub fn put<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::PUT, handler)
    }

    /// `handler` answers `method` on this path.
    pub fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }
}

impl HttpServiceFactory for Endpoint {
    fn register(self, config: &mut AppService) {
        let allow: Arc<str> = self
            .methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
            .into();
        let not_allowed = move |req: HttpRequest| {
            let allow = allow.clone();
            async move {
                Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
                    method: req.method().clone(),
                    allow,
                })
            }
        };
        self.resource.default_service(web::to(not_allowed)).register(config);
    }
}
