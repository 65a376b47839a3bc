//! Shared helpers for the contract tests: JSON round trips, problem+json checks, shapes.
#![allow(dead_code)]

use std::collections::BTreeSet;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::*;

/// The SMS number of L1 in `TestApp::seed`.
pub const L1_SMS: &str = "+15550001111";
/// The customer number F1 lists in `TestApp::seed`.
pub const CUSTOMER: &str = "+15551234567";

pub fn user_token(sub: &str, locations: &[&str]) -> String {
    token(sub, &["user"], locations)
}

pub fn admin_token(sub: &str, locations: &[&str]) -> String {
    token(sub, &["admin"], locations)
}

/// Status and body (JSON, or the raw text as a JSON string when it is not JSON).
pub async fn json_of(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub async fn send(app: &TestApp, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    json_of(app.call(method, path, token, body).await).await
}

pub async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    json_of(app.get(path, token).await).await
}

pub async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    json_of(app.post(path, token, body).await).await
}

pub async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    json_of(app.put(path, token, body).await).await
}

/// GET and assert 200.
pub async fn get_ok(app: &TestApp, path: &str, token: &str) -> Value {
    let (status, body) = get(app, path, token).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// POST and assert `expected`.
pub async fn post_expect(app: &TestApp, path: &str, token: &str, body: Value, expected: u16) -> Value {
    let (status, body) = post(app, path, token, body).await;
    assert_eq!(status, expected, "POST {path}: {body}");
    body
}

/// Posts an inbound message (service token) and asserts 201; returns `{message, thread}`.
pub async fn ingest_json(app: &TestApp, body: Value) -> Value {
    let (status, resp) = app.inbound_json(body.clone()).await;
    assert_eq!(status, 201, "inbound {body}: {resp}");
    resp
}

/// An inbound text from `from` to L1's number; returns `{message, thread}`.
pub async fn ingest(app: &TestApp, external_id: &str, from: &str) -> Value {
    ingest_json(
        app,
        json!({"external_id": external_id, "from": from, "to": L1_SMS, "body": format!("text {external_id}")}),
    )
    .await
}

/// Like `ingest`, received at the RFC 3339 instant `at`.
pub async fn ingest_at(app: &TestApp, external_id: &str, from: &str, at: &str) -> Value {
    ingest_json(
        app,
        json!({"external_id": external_id, "from": from, "to": L1_SMS, "body": format!("text {external_id}"), "received_at": at}),
    )
    .await
}

/// The thread id of an ingestion answer.
pub fn thread_id(ingested: &Value) -> String {
    ingested["thread"]["id"]
        .as_str()
        .expect("thread.id is a string")
        .to_owned()
}

pub fn message_id(ingested: &Value) -> String {
    ingested["message"]["id"]
        .as_str()
        .expect("message.id is a string")
        .to_owned()
}

/// First page of `GET /api/v1/threads{query}`, as thread objects.
pub async fn threads(app: &TestApp, query: &str, token: &str) -> Vec<Value> {
    let page = get_ok(app, &format!("/api/v1/threads{query}"), token).await;
    page["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("threads is an array: {page}"))
        .clone()
}

pub async fn mine(app: &TestApp, token: &str) -> Vec<Value> {
    threads(app, "?view=mine", token).await
}

/// Thread ids of a resource view.
pub async fn resource_view(app: &TestApp, resource: &str, token: &str) -> Vec<String> {
    ids(&threads(app, &format!("?view=resource&resource_id={resource}"), token).await)
}

pub async fn mine_ids(app: &TestApp, token: &str) -> Vec<String> {
    ids(&mine(app, token).await)
}

pub fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|v| {
            v["id"]
                .as_str()
                .unwrap_or_else(|| panic!("id is a string: {v}"))
                .to_owned()
        })
        .collect()
}

pub async fn me(app: &TestApp, token: &str) -> Value {
    get_ok(app, "/api/v1/me", token).await
}

pub async fn unread_of(app: &TestApp, token: &str) -> u64 {
    let me = me(app, token).await;
    me["unread_count"]
        .as_u64()
        .unwrap_or_else(|| panic!("unread_count is a number: {me}"))
}

pub async fn thread(app: &TestApp, id: &str, token: &str) -> Value {
    get_ok(app, &format!("/api/v1/threads/{id}"), token).await
}

pub async fn subscribe(app: &TestApp, token: &str, on: bool) -> Value {
    let (status, body) = put(app, "/api/v1/me/subscriptions", token, json!({"subscribe_all": on})).await;
    assert_eq!(status, 200, "PUT /me/subscriptions: {body}");
    body
}

pub async fn set_preferences(app: &TestApp, body: Value) -> Value {
    let (status, resp) = put(app, "/api/v1/preferences", &service_token(), body).await;
    assert_eq!(status, 200, "PUT /preferences: {resp}");
    resp
}

/// Every message of a thread (following `next`), in the order served.
pub async fn all_messages(app: &TestApp, path: &str, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &before {
            Some(c) => format!("{path}{sep}before={}", encode(c)),
            None => path.to_owned(),
        };
        let page = get_ok(app, &url, token).await;
        out.extend(
            page["messages"]
                .as_array()
                .unwrap_or_else(|| panic!("messages is an array: {page}"))
                .iter()
                .cloned(),
        );
        match page["next"].as_str() {
            Some(c) => before = Some(c.to_owned()),
            None => {
                assert!(page["next"].is_null(), "next is a string or null: {page}");
                return out;
            }
        }
    }
    panic!("{path} kept answering a next cursor");
}

/// Percent-encodes everything but unreserved characters (for query values).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// The set of `names`, to compare with `keys`.
pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Asserts the RFC 3339 instant and returns it.
pub fn instant(v: &Value) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("a timestamp string: {v}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s} is RFC 3339: {e}"))
}

/// PROTOCOL.md "Shapes": Message.
pub fn assert_message_shape(m: &Value) {
    assert_eq!(
        keys(m),
        set(&[
            "id",
            "thread_id",
            "direction",
            "body",
            "attachments",
            "created_at",
            "author_id",
            "external_id"
        ]),
        "message fields: {m}"
    );
    assert!(
        m["id"].is_string() && m["thread_id"].is_string() && m["body"].is_string(),
        "{m}"
    );
    assert!(m["direction"] == "inbound" || m["direction"] == "outbound", "{m}");
    instant(&m["created_at"]);
    assert!(m["author_id"].is_string() || m["author_id"].is_null(), "{m}");
    assert!(m["external_id"].is_string() || m["external_id"].is_null(), "{m}");
    for a in m["attachments"]
        .as_array()
        .unwrap_or_else(|| panic!("attachments is an array: {m}"))
    {
        assert_eq!(keys(a), set(&["id", "url", "content_type"]), "attachment fields: {a}");
        assert!(a["id"].as_str().is_some_and(|s| !s.is_empty()), "{a}");
    }
}

/// PROTOCOL.md "Shapes": Thread.
pub fn assert_thread_shape(t: &Value) {
    assert_eq!(
        keys(t),
        set(&[
            "id",
            "location_id",
            "customer_number",
            "folder_id",
            "unread",
            "unread_count",
            "last_message",
            "last_message_at"
        ]),
        "thread fields: {t}"
    );
    assert!(
        t["id"].is_string() && t["location_id"].is_string() && t["customer_number"].is_string(),
        "{t}"
    );
    assert!(t["folder_id"].is_string() || t["folder_id"].is_null(), "{t}");
    assert!(t["unread"].is_boolean() && t["unread_count"].is_u64(), "{t}");
    assert_message_shape(&t["last_message"]);
    assert_eq!(t["last_message"]["thread_id"], t["id"], "{t}");
    instant(&t["last_message_at"]);
}

/// PROTOCOL.md "Shapes": Photo.
pub fn assert_photo_shape(p: &Value) {
    assert_eq!(
        keys(p),
        set(&["attachment_id", "message_id", "url", "linked_by", "linked_at"]),
        "photo fields: {p}"
    );
    instant(&p["linked_at"]);
}

/// decisions-draft: Folder.
pub fn assert_folder_shape(f: &Value) {
    assert_eq!(
        keys(f),
        set(&[
            "id",
            "name",
            "location_id",
            "phone_numbers",
            "sales_resource_id",
            "service_resource_id"
        ]),
        "folder fields: {f}"
    );
}

/// Asserts an RFC 9457 problem with `status`; returns its body.
pub async fn problem(r: Response, status: u16) -> Value {
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (got, body) = json_of(r).await;
    assert_eq!(got, status, "status (body {body})");
    assert!(
        ct.starts_with("application/problem+json"),
        "content type is problem+json, got {ct:?} (body {body})"
    );
    assert_problem_fields(&body, status);
    body
}

pub fn assert_problem_fields(body: &Value, status: u16) {
    assert!(body["type"].is_string(), "problem has type: {body}");
    assert!(
        body["title"].as_str().is_some_and(|s| !s.is_empty()),
        "problem has a title: {body}"
    );
    assert_eq!(body["status"], json!(status), "problem status: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|s| !s.is_empty()),
        "problem has a detail: {body}"
    );
}

/// A 422 whose detail names `field` (and whose `field` member is it, per the decisions).
pub fn assert_invalid(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 422, "expected 422 naming {field}: {body}");
    assert_problem_fields(body, 422);
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.contains(field), "detail names {field}: {body}");
    let named = body["field"].as_str().unwrap_or("");
    assert!(
        named == field || named.starts_with(&format!("{field}[")) || named.starts_with(&format!("{field}.")),
        "field is {field}: {body}"
    );
}
