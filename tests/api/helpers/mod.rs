//! Starting a hub for one test, minting tokens, and a small websocket client.

#![allow(dead_code)]

pub mod http;
pub mod pg_server;
pub mod plant;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
pub mod ws;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use switchboard::{
    auth::{TokenSpec, mint_hs256},
    config::Settings,
    startup::{Application, Stopper},
};
use tempfile::TempDir;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message as WsMessage, client::IntoClientRequest, http::HeaderValue},
};

pub const SECRET: &str = "test-secret";
pub const TENANT: &str = "acme";
/// How long a test waits for something it expects before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    pub stopper: Stopper,
    /// What it was started with (`restart` starts it again on the same storage).
    pub settings: Settings,
    /// Its own PostgreSQL database, dropped with it (PostgreSQL backend).
    pub database: Option<postgres::TestDatabase>,
}

/// A hub on the embedded default with a fresh data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like `spawn_app`, with settings adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(data_dir.path());
    adjust(&mut settings);
    start(settings, data_dir).await
}

/// Which storage and bus a test binary runs the contract suite on (`crate::BACKEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the test's data directory, in-process bus.
    Embedded,
    /// The machine's PostgreSQL, with a database of the test's own; in-process bus.
    Postgres,
}

/// Settings every test starts from: port 0, the test secret, storage in `dir` (or in a new
/// PostgreSQL database, when this binary runs the suite on PostgreSQL).
pub fn test_settings(dir: &std::path::Path) -> Settings {
    use switchboard::config::StorageBackend;
    let mut s = base_settings(dir);
    if crate::BACKEND == Backend::Postgres {
        s.storage.backend = StorageBackend::Postgres;
        s.postgres.url = postgres::database_for_settings();
        // Tests run two at a time against one server that other runs share.
        s.postgres.pool_size = 4;
    }
    s
}

/// The part of `test_settings` every backend shares: port 0, two workers, the test secret,
/// the embedded store in `dir` (a test that picks its own storage starts from this).
pub fn base_settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::defaults();
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = 2;
    s.auth.hs256_secret = SECRET.into();
    s.storage.path = dir.to_path_buf();
    s
}

pub async fn start(settings: Settings, data_dir: TempDir) -> TestApp {
    let database = postgres::claim(&settings.postgres.url);
    start_on(settings, data_dir, database).await
}

async fn start_on(settings: Settings, data_dir: TempDir, database: Option<postgres::TestDatabase>) -> TestApp {
    let app = Application::build(settings.clone()).await.expect("the hub starts");
    let port = app.port();
    let stopper = app.stopper();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        data_dir,
        stopper,
        settings,
        database,
    }
}

/// A token for `sub` in the test tenant.
pub fn token(sub: &str, roles: &[&str], locations: &[&str]) -> String {
    mint_hs256(SECRET, &TokenSpec::new(sub, TENANT, roles, locations))
}

/// A token for `sub` in another tenant.
pub fn token_in(tenant: &str, sub: &str, roles: &[&str], locations: &[&str]) -> String {
    mint_hs256(SECRET, &TokenSpec::new(sub, tenant, roles, locations))
}

pub fn service_token() -> String {
    token("ingest", &["service"], &[])
}

impl TestApp {
    /// Stops the hub gracefully and starts a new one on the same storage (data directory or
    /// PostgreSQL database) and settings, on a new port.
    pub async fn restart(self) -> TestApp {
        tokio::time::timeout(PATIENCE, self.stopper.stop())
            .await
            .expect("the hub stops in time");
        start_on(self.settings, self.data_dir, self.database).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Sends `body` (if any) as JSON with a bearer token (if any).
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// PUT and assert 200; returns the body.
    pub async fn put_ok(&self, path: &str, body: Value) -> Value {
        let r = self.put(path, &service_token(), body).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "PUT {path}: {body}");
        body
    }

    pub async fn location(&self, id: &str, sms: &[&str]) -> Value {
        self.put_ok(
            &format!("/api/v1/locations/{id}"),
            json!({"name": format!("Location {id}"), "sms_numbers": sms}),
        )
        .await
    }

    pub async fn user(&self, id: &str, name: &str) -> Value {
        self.put_ok(&format!("/api/v1/users/{id}"), json!({"name": name})).await
    }

    pub async fn folder(
        &self,
        id: &str,
        location: &str,
        phones: &[&str],
        sales: Option<&str>,
        service: Option<&str>,
    ) -> Value {
        self.put_ok(
            &format!("/api/v1/folders/{id}"),
            json!({"name": format!("Folder {id}"), "location_id": location, "phone_numbers": phones,
                   "sales_resource_id": sales, "service_resource_id": service}),
        )
        .await
    }

    /// Posts an inbound message and returns (status, body).
    pub async fn inbound(&self, external_id: &str, from: &str, to: &str, body: &str) -> (u16, Value) {
        self.inbound_json(json!({"external_id": external_id, "from": from, "to": to, "body": body}))
            .await
    }

    pub async fn inbound_json(&self, body: Value) -> (u16, Value) {
        let r = self.post("/api/v1/messages/inbound", &service_token(), body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The usual cast: location L1 (SMS +15550001111), users sam (sales) and sue (service),
    /// operator olga, folder F1 at L1 listing +15551234567 with sam and sue as resources.
    pub async fn seed(&self) {
        self.location("L1", &["+15550001111"]).await;
        self.user("sam", "Sam Sales").await;
        self.user("sue", "Sue Service").await;
        self.user("olga", "Olga Operator").await;
        self.folder("F1", "L1", &["+15551234567"], Some("sam"), Some("sue"))
            .await;
    }

    /// Opens a websocket with the token in the Authorization header and reads `hello`.
    pub async fn ws(&self, token: &str) -> Ws {
        let mut req = self.ws_url().into_client_request().unwrap();
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let (stream, _) = connect_async(req).await.expect("websocket handshake");
        let mut ws = Ws { stream };
        let hello = ws.next_json().await;
        assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
        ws
    }

    /// Opens a websocket and returns it with its hello frame.
    pub async fn ws_hello(&self, token: &str) -> (Ws, Value) {
        let (stream, _) = connect_async(format!("{}?access_token={token}", self.ws_url()))
            .await
            .expect("websocket handshake");
        let mut ws = Ws { stream };
        let hello = ws.next_json().await;
        assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
        (ws, hello)
    }
}

/// A connected websocket client.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

/// What the next frame was.
#[derive(Debug)]
pub enum Next {
    Json(Value),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn send_json(&mut self, v: Value) {
        self.stream
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .expect("frame sent");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.stream
            .send(WsMessage::Text(s.to_owned().into()))
            .await
            .expect("frame sent");
    }

    /// The next text frame or close, skipping control frames; fails the test after PATIENCE.
    pub async fn next(&mut self) -> Next {
        let fut = async {
            loop {
                match self.stream.next().await {
                    Some(Ok(WsMessage::Text(t))) => {
                        return Next::Json(serde_json::from_str(&t).expect("frames are JSON"));
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        return Next::Closed(frame.map(|f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Next::Closed(None),
                }
            }
        };
        tokio::time::timeout(PATIENCE, fut)
            .await
            .expect("a frame arrives in time")
    }

    pub async fn next_json(&mut self) -> Value {
        match self.next().await {
            Next::Json(v) => v,
            Next::Closed(code) => panic!("expected a frame, the socket closed with {code:?}"),
        }
    }

    /// Skips frames until one of type `ty`.
    pub async fn next_of_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.next_json().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Asserts nothing is pending: a ping's pong comes before any other frame. The hub queues
    /// every event committed before the ping ahead of the pong.
    pub async fn expect_quiet(&mut self) {
        self.send_json(json!({"type": "ping"})).await;
        let v = self.next_json().await;
        assert_eq!(v["type"], "pong", "expected no event, got {v}");
    }

    /// Reads frames until `pong`, returning what came before it.
    pub async fn drain(&mut self) -> Vec<Value> {
        self.send_json(json!({"type": "ping"})).await;
        let mut seen = Vec::new();
        loop {
            let v = self.next_json().await;
            if v["type"] == "pong" {
                return seen;
            }
            seen.push(v);
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            if let Next::Closed(code) = self.next().await {
                return code;
            }
        }
    }
}
