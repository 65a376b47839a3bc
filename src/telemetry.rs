//! Logging: tracing with an env filter, and an access log that never prints a query string
//! (the websocket handshake may carry `access_token` there) or a body.

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
};
use tracing::{Instrument, field::Empty, info, warn};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls are ignored). `RUST_LOG` wins over
/// `default_filter`.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// One line per request: method, path (no query), status, duration; inside a span that the
/// authentication step fills with `tenant` and `user_id`.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let span = tracing::info_span!("http", method = %req.method(), path = %req.path(), tenant = Empty, user_id = Empty);
    let started = Instant::now();
    let res = next.call(req).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match &res {
        Ok(r) if r.status().is_server_error() => warn!(status = r.status().as_u16(), ms, "request"),
        Ok(r) => info!(status = r.status().as_u16(), ms, "request"),
        Err(e) => warn!(error = %e, ms, "request failed"),
    });
    res
}
