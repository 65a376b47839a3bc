//! `/healthz`, `/readyz` and `/metrics`.

use actix_web::HttpResponse;
use serde_json::json;

use super::{State, edge::OwnBody};

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready while storage and the bus answer.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Storage and bus answer"), (status = 503, description = "What is down (JSON report)")))]
pub async fn readyz(state: State) -> HttpResponse {
    let storage = state.store.ping().await;
    let bus = state.bus.ping().await;
    let body = json!({
        "storage": if storage.is_ok() { "ok" } else { "unavailable" },
        "bus": if bus.is_ok() { "ok" } else { "unavailable" },
    });
    if storage.is_ok() && bus.is_ok() {
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
