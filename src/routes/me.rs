//! `/me`, `/me/subscriptions` and `/resources` (the drop-down).

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{Caller, State, input::Body};
use crate::{domain::model::Me, error::ApiError};

fn with_token_name(mut me: Me, caller: &Caller) -> Me {
    if me.name.is_none() {
        me.name = caller.0.name.clone();
    }
    me
}

pub async fn get(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    let me = state.store.me(&caller.scope()?).await?;
    Ok(HttpResponse::Ok().json(with_token_name(me, &caller)))
}

pub async fn put_subscriptions(state: State, caller: Caller, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    let scope = caller.scope()?;
    let on = Body::new(body)?.bool("subscribe_all")?;
    let me = state.store.set_subscribe_all(&scope, on).await?;
    Ok(HttpResponse::Ok().json(with_token_name(me, &caller)))
}

pub async fn resources(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.resources(&caller.scope()?).await?))
}
