//! What websocket.rs, resume.rs and crash.rs share on top of `helpers.rs`.
use reqwest::Method;
use serde_json::{Value, json};
use switchboard::auth::Claims;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, client::IntoClientRequest, handshake::client::Request, http::HeaderValue},
};

use crate::helpers::*;

/// L1's SMS number and the customer number F1 lists (see `TestApp::seed`).
pub const L1_SMS: &str = "+15550001111";
pub const F1_PHONE: &str = "+15551234567";

/// A `user` token granting L1.
pub fn member(sub: &str) -> String {
    token(sub, &["user"], &["L1"])
}

/// An `admin` token granting L1 (may set tenant preferences).
pub fn admin() -> String {
    token("boss", &["admin"], &["L1"])
}

/// A token of the test tenant with an exact `exp` (seconds since the epoch).
pub fn token_expiring(sub: &str, roles: &[&str], locations: &[&str], exp: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        tenant: TENANT.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        locations: Some(locations.iter().map(|l| l.to_string()).collect()),
        name: None,
        exp,
        iss: None,
        aud: None,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A handshake request for `url` with an optional bearer header and `Origin`.
pub fn request(url: &str, bearer: Option<&str>, origin: Option<&str>) -> Request {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("Authorization", HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    req
}

/// `url` with the token in `?access_token=`.
pub fn query_url(url: &str, token: &str) -> String {
    format!("{url}?access_token={token}")
}

/// A handshake the hub answered with an HTTP status instead of an upgrade.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

/// Opens a websocket and reads `hello`, or returns the HTTP answer that refused it.
pub async fn try_open(req: Request) -> Result<(Ws, Value), Refusal> {
    let answer = tokio::time::timeout(PATIENCE, connect_async(req))
        .await
        .expect("the handshake is answered in time");
    match answer {
        Ok((stream, _)) => {
            let mut ws = Ws { stream };
            let hello = ws.next_json().await;
            assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
            Ok((ws, hello))
        }
        Err(tungstenite::Error::Http(resp)) => Err(Refusal {
            status: resp.status().as_u16(),
            content_type: resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null),
        }),
        Err(e) => panic!("the handshake failed without an HTTP answer: {e}"),
    }
}

/// Expects the handshake to be refused and returns how.
pub async fn refused(req: Request) -> Refusal {
    match try_open(req).await {
        Ok((_, hello)) => panic!("the handshake was accepted: {hello}"),
        Err(r) => r,
    }
}

/// Opens a session with the token in the Authorization header; returns it with `hello`.
pub async fn open(app: &TestApp, token: &str) -> (Ws, Value) {
    try_open(request(&app.ws_url(), Some(token), None))
        .await
        .expect("the handshake is accepted")
}

/// Closes the client side and lets the socket go.
pub async fn hang_up(mut ws: Ws) {
    let _ = ws.stream.close(None).await;
}

/// Asserts the status of `r` and returns its JSON body.
pub async fn expect_status(r: reqwest::Response, status: u16, what: &str) -> Value {
    let got = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{what}: {body}");
    body
}

/// Posts an inbound message from `from` to L1 and expects 201.
pub async fn inbound_ok(app: &TestApp, external_id: &str, from: &str) -> Value {
    let (status, body) = app
        .inbound(external_id, from, L1_SMS, &format!("body of {external_id}"))
        .await;
    assert_eq!(status, 201, "inbound {external_id}: {body}");
    body
}

pub async fn me(app: &TestApp, tok: &str) -> Value {
    expect_status(app.get("/api/v1/me", tok).await, 200, "GET /me").await
}

pub async fn subscribe_all(app: &TestApp, tok: &str, on: bool) -> Value {
    let body = expect_status(
        app.put("/api/v1/me/subscriptions", tok, json!({"subscribe_all": on}))
            .await,
        200,
        "PUT /me/subscriptions",
    )
    .await;
    assert_eq!(body["subscribe_all"], on, "{body}");
    body
}

pub async fn preferences(app: &TestApp, body: Value) -> Value {
    expect_status(
        app.put("/api/v1/preferences", &admin(), body).await,
        200,
        "PUT /preferences",
    )
    .await
}

/// POST /threads/{id}/read or /unread; expects 200.
pub async fn mark(app: &TestApp, tok: &str, thread: &Value, what: &str) -> Value {
    let path = format!("/api/v1/threads/{}/{what}", thread.as_str().unwrap());
    expect_status(app.call(Method::POST, &path, Some(tok), None).await, 200, &path).await
}

pub async fn reply(app: &TestApp, tok: &str, thread: &Value, body: &str) -> Value {
    let path = format!("/api/v1/threads/{}/replies", thread.as_str().unwrap());
    expect_status(app.post(&path, tok, json!({"body": body})).await, 201, &path).await
}

pub async fn assign(app: &TestApp, tok: &str, thread: &Value, folder: &str) -> Value {
    let path = format!("/api/v1/threads/{}/assign", thread.as_str().unwrap());
    expect_status(app.post(&path, tok, json!({"folder_id": folder})).await, 200, &path).await
}

pub async fn link_images(app: &TestApp, tok: &str, message: &Value) -> Value {
    let path = format!("/api/v1/messages/{}/link-images", message.as_str().unwrap());
    expect_status(app.call(Method::POST, &path, Some(tok), None).await, 200, &path).await
}

/// The frames of type `ty`.
pub fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == ty).collect()
}

/// The one frame of type `ty`; fails unless there is exactly one.
pub fn one<'a>(frames: &'a [Value], ty: &str) -> &'a Value {
    let found = of_type(frames, ty);
    assert_eq!(found.len(), 1, "expected exactly one {ty} among {frames:#?}");
    found[0]
}

pub fn none_of(frames: &[Value], ty: &str, who: &str) {
    let found = of_type(frames, ty);
    assert!(found.is_empty(), "{who} must not receive {ty}: {found:#?}");
}

/// The `count`s of the `unread.count` frames, in order.
pub fn counts(frames: &[Value]) -> Vec<i64> {
    of_type(frames, "unread.count")
        .iter()
        .map(|f| f["data"]["count"].as_i64().expect("count is an integer"))
        .collect()
}

/// Event frames: the ones that carry an event id.
pub fn events_only(frames: &[Value]) -> Vec<Value> {
    frames.iter().filter(|f| f.get("id").is_some()).cloned().collect()
}

pub fn ids(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["id"].as_str().expect("event ids are strings").to_owned())
        .collect()
}

/// Two deliveries of the same events agree on type and id, and on data except for
/// `unread.count` (a count is computed for each delivery).
pub fn assert_same_events(got: &[Value], want: &[Value], what: &str) {
    let brief = |fs: &[Value]| {
        fs.iter()
            .map(|f| format!("{} {}", f["type"], f["id"]))
            .collect::<Vec<_>>()
    };
    assert_eq!(brief(got), brief(want), "{what}: types and ids");
    for (g, w) in got.iter().zip(want) {
        if g["type"] != "unread.count" {
            assert_eq!(g["data"], w["data"], "{what}: data of {} {}", g["type"], g["id"]);
        }
    }
}

/// How the hub answered a `resume`.
#[derive(Debug)]
pub enum Resumed {
    Replayed { events: Vec<Value>, replayed: u64 },
    Resync,
}

/// Sends `resume` and reads up to `resumed` or `resync`.
pub async fn resume(ws: &mut Ws, last_event_id: &str) -> Resumed {
    ws.send_json(json!({"type": "resume", "last_event_id": last_event_id}))
        .await;
    resume_answer(ws).await
}

/// Reads up to `resumed` or `resync` (the `resume` frame was sent already).
pub async fn resume_answer(ws: &mut Ws) -> Resumed {
    let mut events = Vec::new();
    for _ in 0..20_000 {
        let v = ws.next_json().await;
        match v["type"].as_str() {
            Some("resumed") => {
                let replayed = v["replayed"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("resumed carries replayed: {v}"));
                return Resumed::Replayed { events, replayed };
            }
            Some("resync") => return Resumed::Resync,
            _ => events.push(v),
        }
    }
    panic!("no resumed or resync after 20000 frames");
}

/// Expects a replay and returns its events, checking `replayed` against them.
pub async fn replay(ws: &mut Ws, last_event_id: &str) -> Vec<Value> {
    match resume(ws, last_event_id).await {
        Resumed::Replayed { events, replayed } => {
            assert_eq!(
                replayed as usize,
                events.len(),
                "replayed counts the frames before resumed: {events:#?}"
            );
            events
        }
        Resumed::Resync => panic!("expected a replay from {last_event_id}, got resync"),
    }
}

/// The sum of the Prometheus samples whose line contains `needle`.
pub async fn metric_total(app: &TestApp, needle: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(needle))
        .filter_map(|l| {
            let rest = match l.rfind('}') {
                Some(i) => &l[i + 1..],
                None => l.split_once(' ')?.1,
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// A `presence` frame saying the session is `state` in `thread`.
pub fn say(thread: &str, state: &str) -> Value {
    json!({"type": "presence", "thread_id": thread, "state": state})
}

/// The users of the next presence frame of `thread` (other frames skipped), as (user, state).
pub async fn next_presence(ws: &mut Ws, thread: &str) -> Vec<(String, String)> {
    loop {
        let v = ws.next_json().await;
        if v["type"] == "presence" && v["data"]["thread_id"] == thread {
            return users_of(&v["data"]["users"]);
        }
    }
}

/// A presence list's users as (user, state).
pub fn users_of(users: &Value) -> Vec<(String, String)> {
    users
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["user_id"].as_str().unwrap().to_owned(),
                u["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
