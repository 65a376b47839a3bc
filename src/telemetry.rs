//! Logging: tracing with an env filter, and an access log that never prints a query string
//! (the websocket handshake may carry `access_token` there) or a body, and counts every
//! response by status class (`switchboard_http_responses_total`).

use std::{io::IsTerminal, time::Instant};

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use tracing::{Instrument, field::Empty, info, warn};
use tracing_subscriber::EnvFilter;

use crate::metrics::Metrics;

/// Installs the global subscriber (once; later calls are ignored). `RUST_LOG` wins over
/// `default_filter`. Lines go to stderr, coloured only when stderr is a terminal (a file or a
/// pipe gets plain text).
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// One line per request: method, path (no query), status, duration; inside a span that the
/// authentication step fills with `tenant` and `user_id`.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let span = tracing::info_span!("http", method = %req.method(), path = %req.path(), tenant = Empty, user_id = Empty);
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let started = Instant::now();
    let res = next.call(req).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match &res {
        Ok(r) if r.status().is_server_error() => warn!(status = r.status().as_u16(), ms, "request"),
        Ok(r) => info!(status = r.status().as_u16(), ms, "request"),
        Err(e) => warn!(error = %e, ms, "request failed"),
    });
    if let Some(metrics) = metrics {
        let status = match &res {
            Ok(r) => r.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        let class = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .get(usize::from(status.as_u16() / 100).saturating_sub(1))
            .unwrap_or(&"5xx");
        metrics.http_responses.with_label_values(&[class]).inc();
    }
    res
}
