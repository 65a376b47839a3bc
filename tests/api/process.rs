//! The built binary as a child process: what a 2xx promised survives SIGKILL, SIGTERM is a
//! graceful shutdown, and a client that never reads costs the process no more memory than its
//! queue's bound.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use reqwest::Response;
use serde_json::{Value, json};
use switchboard::config::Settings;

use crate::helpers::ws::*;
use crate::helpers::*;

/// `switchboard serve` on a free port of 127.0.0.1 with its storage in `dir`.
struct Hub {
    child: Option<Child>,
    base: String,
    ws_url: String,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().port()
}

impl Hub {
    async fn start(dir: &Path) -> Hub {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD__SERVER__WORKERS", "2")
            .env("SWITCHBOARD__AUTH__HS256_SECRET", SECRET)
            .env("SWITCHBOARD__STORAGE__PATH", dir)
            .env("SWITCHBOARD__LOG__FILTER", "warn")
            .env_remove("RUST_LOG")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let mut hub = Hub {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}/ws"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        // Connection refused means not listening yet.
        for _ in 0..200 {
            if let Some(status) = hub.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("switchboard serve exited early: {status}");
            }
            if let Ok(r) = hub.client.get(format!("{}/healthz", hub.base)).send().await {
                assert_eq!(r.status(), 200, "GET /healthz");
                return hub;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("switchboard serve did not answer /healthz in 10 s");
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// The process's resident set, in KiB (`VmRSS`).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("a VmRSS line")
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal sent");
    }

    /// Waits for the process to exit.
    async fn exited(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = Pid::from_raw(child.id() as i32);
        let waited = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || child.wait())).await;
        match waited {
            Ok(status) => status.unwrap().expect("wait"),
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                panic!("the process did not exit in time");
            }
        }
    }

    async fn sigkill(mut self) {
        self.signal(Signal::SIGKILL);
        self.exited().await;
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request sent")
    }

    async fn put_ok(&self, path: &str, body: Value) -> Value {
        expect_status(
            self.send(reqwest::Method::PUT, path, &service_token(), Some(body))
                .await,
            200,
            path,
        )
        .await
    }

    async fn get_ok(&self, path: &str, token: &str) -> Value {
        expect_status(self.send(reqwest::Method::GET, path, token, None).await, 200, path).await
    }

    async fn inbound(&self, external_id: &str, body: &str) -> (u16, Value) {
        let r = self
            .send(
                reqwest::Method::POST,
                "/api/v1/messages/inbound",
                &service_token(),
                Some(json!({"external_id": external_id, "from": F1_PHONE, "to": L1_SMS, "body": body})),
            )
            .await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The cast of `TestApp::seed`: L1, sam (sales) and sue (service) on F1.
    async fn seed(&self) {
        self.put_ok(
            "/api/v1/locations/L1",
            json!({"name": "Location L1", "sms_numbers": [L1_SMS]}),
        )
        .await;
        self.put_ok("/api/v1/users/sam", json!({"name": "Sam Sales"})).await;
        self.put_ok("/api/v1/users/sue", json!({"name": "Sue Service"})).await;
        self.put_ok(
            "/api/v1/folders/F1",
            json!({"name": "Folder F1", "location_id": "L1", "phone_numbers": [F1_PHONE],
                   "sales_resource_id": "sam", "service_resource_id": "sue"}),
        )
        .await;
    }

    async fn ws(&self, token: &str) -> (Ws, Value) {
        try_open(request(&self.ws_url, Some(token), None))
            .await
            .expect("the handshake is accepted")
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn messages_acknowledged_before_a_sigkill_survive_with_thread_unread_counts_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    hub.seed().await;
    let (status, first) = hub.inbound("SM1", "The water is back").await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = hub.inbound("SM2", "And the power").await;
    assert_eq!(status, 201, "{second}");
    let thread_id = first["thread"]["id"].as_str().unwrap().to_owned();
    assert_eq!(second["thread"]["id"], thread_id.as_str());
    let sam = member("sam");
    let thread_before = hub.get_ok(&format!("/api/v1/threads/{thread_id}"), &sam).await;
    let me_before = hub.get_ok("/api/v1/me", &sam).await;

    hub.sigkill().await;
    let hub = Hub::start(dir.path()).await;

    let thread = hub.get_ok(&format!("/api/v1/threads/{thread_id}"), &sam).await;
    assert_eq!(thread["folder_id"], "F1", "{thread}");
    assert_eq!(thread["unread"], true, "{thread}");
    assert_eq!(thread["unread_count"], 2, "{thread}");
    assert_eq!(thread["unread_count"], thread_before["unread_count"]);
    assert_eq!(thread["last_message"]["id"], second["message"]["id"], "{thread}");
    let messages = hub.get_ok(&format!("/api/v1/threads/{thread_id}/messages"), &sam).await;
    let listed: Vec<_> = messages["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["id"].clone(), m["body"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (first["message"]["id"].clone(), json!("The water is back")),
            (second["message"]["id"].clone(), json!("And the power")),
        ]
    );
    let me = hub.get_ok("/api/v1/me", &sam).await;
    assert_eq!(me["unread_count"], 2, "{me}");
    assert_eq!(me["unread_count"], me_before["unread_count"]);

    let (status, repeat) = hub.inbound("SM1", "The water is back").await;
    assert_eq!(status, 200, "the external id is remembered: {repeat}");
    assert_eq!(repeat["message"]["id"], first["message"]["id"]);
    let messages = hub.get_ok(&format!("/api/v1/threads/{thread_id}/messages"), &sam).await;
    assert_eq!(
        messages["messages"].as_array().unwrap().len(),
        2,
        "no second copy: {messages}"
    );
    assert_eq!(hub.get_ok("/api/v1/me", &sam).await["unread_count"], 2);
}

#[tokio::test]
async fn event_ids_are_not_reused_after_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    hub.seed().await;
    let sam = member("sam");
    let (mut ws, _) = hub.ws(&sam).await;
    let (status, body) = hub.inbound("SM1", "before").await;
    assert_eq!(status, 201, "{body}");
    let before = events_only(&ws.drain().await);
    assert!(!before.is_empty());
    let last_before = before.last().unwrap()["id"].as_str().unwrap().to_owned();

    hub.sigkill().await;
    let hub = Hub::start(dir.path()).await;
    let (mut live, _) = hub.ws(&sam).await;
    let (status, body) = hub.inbound("SM2", "after").await;
    assert_eq!(status, 201, "{body}");
    let after = events_only(&live.drain().await);

    let before_ids = ids(&before);
    for id in ids(&after) {
        assert!(
            !before_ids.contains(&id),
            "event id {id} was handed out before the crash too"
        );
    }
    // A client that saw the events before the crash resumes from the last one.
    let (mut back, _) = hub.ws(&sam).await;
    match resume(&mut back, &last_before).await {
        Resumed::Replayed { events, .. } => assert_same_events(&events, &after, "replay after a restart"),
        Resumed::Resync => {}
    }
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let (mut ws, _) = hub.ws(&member("sam")).await;
    ws.expect_quiet().await;

    hub.signal(Signal::SIGTERM);

    assert_eq!(ws.expect_close().await, Some(1001));
    let status = hub.exited().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn a_session_that_never_reads_grows_the_process_by_no_more_than_its_queue_bound_then_is_closed_with_4008() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    hub.seed().await;
    let body = "x".repeat(100 * 1024);
    // Warm-up: the traffic to come, without the session, so that storage caches and the
    // allocator's pools have grown to what this traffic needs before the measurement.
    for i in 0..100 {
        let (status, answer) = hub.inbound(&format!("warm{i}"), &body).await;
        assert_eq!(status, 201, "{answer}");
    }
    let before = hub.rss_kib();

    // sam, F1's sales resource, over a socket with a small receive buffer, never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = hub.base.trim_start_matches("http://").parse().unwrap();
    let stream = socket.connect(addr).await.expect("connected");
    let (mut stuck, _) = tokio_tungstenite::client_async(query_url(&hub.ws_url, &member("sam")), stream)
        .await
        .expect("upgraded");
    // 20 MB for sam, far past what the kernel's buffers and the queue's bound hold.
    for i in 0..200 {
        let (status, answer) = hub.inbound(&format!("stuck{i}"), &body).await;
        assert_eq!(status, 201, "ingestion goes on while a session is stuck: {answer}");
    }
    let grown = hub.rss_kib().saturating_sub(before);

    let queue_kib = (Settings::defaults().ws.queue_bytes / 1024) as u64;
    let chunk_kib = (switchboard::session::wire::CHUNK / 1024) as u64;
    // What the allocator and storage may still grow by on their own, whatever the session.
    let allowance_kib = 4 * 1024;
    assert!(
        grown <= queue_kib + chunk_kib + allowance_kib,
        "the hub grew by {grown} KiB for one stuck session (its queue may hold {queue_kib} KiB)"
    );

    // Read now: what was queued before the hub gave up, then the close asking it to resume.
    let mut frames = 0;
    let code = loop {
        match tokio::time::timeout(PATIENCE, stuck.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(_))) => frames += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("the session ended without a close: {other:?}"),
        }
    };
    assert_eq!(code, Some(4008), "closed as too slow after {frames} frames");
    assert!(frames < 200 * 2, "the hub gave up before the end: {frames} frames");
}
