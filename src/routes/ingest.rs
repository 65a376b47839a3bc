//! `POST /api/v1/messages/inbound`: inbound SMS/MMS from the ingestion service.

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{Caller, State, input::Body};
use crate::{
    domain::{AttachmentUrl, MediaType, model::Timestamp},
    error::ApiError,
    store::{AttachmentInput, InboundInput},
};

const MAX_ATTACHMENTS: usize = 20;
const MAX_EXTERNAL_ID: usize = 200;

#[utoipa::path(post, path = "/api/v1/messages/inbound", tag = "ingestion",
    request_body = super::openapi::InboundBody,
    responses((status = 201, body = crate::domain::model::Ingested, description = "Stored (durable)"),
        (status = 200, body = crate::domain::model::Ingested, description = "The same `external_id` again: nothing new"), (status = "4XX", description = "Refused (problem+json; a 422 names the field)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "A dependency is unavailable (problem+json)", body = super::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn inbound(state: State, caller: Caller, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    let p = caller.service()?;
    let input = parse(&state, Body::new(body)?)?;
    let timer = state.metrics.ingest_seconds.start_timer();
    let ingested = state.store.ingest(&p.tenant, input).await?;
    timer.observe_duration();
    if ingested.created {
        state.metrics.ingested.inc();
        Ok(HttpResponse::Created().json(ingested))
    } else {
        Ok(HttpResponse::Ok().json(ingested))
    }
}

fn parse(state: &State, body: Body) -> Result<InboundInput, ApiError> {
    let external_id = body.text("external_id", MAX_EXTERNAL_ID)?;
    let from = body.phone("from", &state.phones)?;
    let to = body.phone("to", &state.phones)?;
    let text = body.opt_string("body")?.unwrap_or_default();
    let raw = body.array("attachments")?;
    if raw.len() > MAX_ATTACHMENTS {
        return Err(ApiError::invalid(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments"),
        ));
    }
    let attachments = raw
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let field = |name: &str| format!("attachments[{i}].{name}");
            if !a.is_object() {
                return Err(ApiError::invalid(format!("attachments[{i}]"), "must be an object"));
            }
            let string = |name: &str| match a.get(name) {
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(Value::Null) | None => Err(ApiError::invalid(field(name), "is required")),
                Some(_) => Err(ApiError::invalid(field(name), "must be a string")),
            };
            Ok(AttachmentInput {
                url: AttachmentUrl::parse(string("url")?).map_err(|e| ApiError::invalid(field("url"), e))?,
                content_type: MediaType::parse(string("content_type")?)
                    .map_err(|e| ApiError::invalid(field("content_type"), e))?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if text.is_empty() && attachments.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "may be empty only when there are attachments",
        ));
    }
    let received_at = match body.opt_string("received_at")? {
        None => None,
        Some(s) => {
            Some(Timestamp::parse_reported(&s, Timestamp::now()).map_err(|e| ApiError::invalid("received_at", e))?)
        }
    };
    Ok(InboundInput {
        external_id,
        from,
        to,
        body: text,
        attachments,
        received_at,
    })
}
