//! `/healthz`, `/readyz` and `/metrics`.

use actix_web::HttpResponse;
use serde_json::json;

use super::{State, edge::OwnBody};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready while storage and the bus answer.
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

pub async fn metrics(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
