//! `/healthz`, `/readyz` and `/metrics`.

use actix_web::HttpResponse;
use serde_json::json;

use super::{State, edge::OwnBody};
use crate::config::StorageBackend;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready while storage answers, and the bus too unless events can come from the log without
/// it: with `postgres` storage a node rides out a Redis outage (writes commit, sessions get
/// their events from PostgreSQL), so it stays ready and says so in the report.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready; the JSON report says what answers"), (status = 503, description = "Not ready: the JSON report says what is down")))]
pub async fn readyz(state: State) -> HttpResponse {
    let storage = state.store.ping().await.is_ok();
    let bus = state.bus.ping().await.is_ok();
    state.metrics.bus_up.set(i64::from(bus));
    let without_bus = state.settings.storage.backend == StorageBackend::Postgres;
    let body = json!({
        "storage": if storage { "ok" } else { "unavailable" },
        "bus": if bus { "ok" } else { "unavailable" },
        "live_events": match (bus, without_bus) {
            (true, _) => "live",
            (false, true) => "from the log, within a second",
            (false, false) => "stopped",
        },
    });
    if storage && (bus || without_bus) {
        HttpResponse::Ok().json(body)
    } else {
        let mut res = HttpResponse::ServiceUnavailable().json(body);
        // The report is the answer: it stays JSON rather than becoming a problem.
        res.extensions_mut().insert(OwnBody);
        res
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
