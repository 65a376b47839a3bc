//! Three nodes sharing one Redis: in this process (`Cluster`), or as processes of the built
//! binary (`Node`).

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

use crate::helpers::{
    PATIENCE, SECRET, TestApp, Ws, redis as redis_server, service_token, start, test_settings,
    ws::{F1_PHONE, L1_SMS, request, try_open},
};

/// Three in-process nodes on the same Redis and key prefix: any node for any call.
pub struct Cluster {
    pub nodes: Vec<TestApp>,
}

impl Cluster {
    /// Three nodes on the shared test Redis under a prefix of their own.
    pub async fn start() -> Cluster {
        Cluster::start_on(&redis_server::shared().url()).await
    }

    /// Three nodes on the Redis at `url`.
    pub async fn start_on(url: &str) -> Cluster {
        let prefix = redis_server::unique_prefix();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let mut settings = test_settings(dir.path());
            settings.redis.url = url.to_owned();
            settings.redis.key_prefix = prefix.clone();
            nodes.push(start(settings, dir).await);
        }
        Cluster { nodes }
    }

    pub fn a(&self) -> &TestApp {
        &self.nodes[0]
    }

    pub fn b(&self) -> &TestApp {
        &self.nodes[1]
    }

    pub fn c(&self) -> &TestApp {
        &self.nodes[2]
    }
}

/// The status `/readyz` of `app` answers.
pub async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/readyz"))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}

/// Polls (bounded) until `check` holds: for states nothing announces, like a dependency
/// coming back.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Reads frames until a `message.new` whose message has `external_id`; returns it with the
/// frames before it.
pub async fn until_message(ws: &mut Ws, external_id: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    for _ in 0..10_000 {
        let v = ws.next_json().await;
        if v["type"] == "message.new" && v["data"]["message"]["external_id"] == external_id {
            return (v, before);
        }
        before.push(v);
    }
    panic!("no message.new for {external_id} in 10000 frames");
}

/// `switchboard serve` as a process on Redis storage and the Redis bus.
pub struct Node {
    child: Option<Child>,
    pub base: String,
    pub ws_url: String,
    pub client: reqwest::Client,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().port()
}

impl Node {
    pub async fn start(redis_url: &str, prefix: &str) -> Node {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD__SERVER__WORKERS", "2")
            .env("SWITCHBOARD__AUTH__HS256_SECRET", SECRET)
            .env("SWITCHBOARD__STORAGE__BACKEND", "redis")
            .env("SWITCHBOARD__STORAGE__PATH", dir.path())
            .env("SWITCHBOARD__BUS__BACKEND", "redis")
            .env("SWITCHBOARD__REDIS__URL", redis_url)
            .env("SWITCHBOARD__REDIS__KEY_PREFIX", prefix)
            .env("SWITCHBOARD__LOG__FILTER", "warn")
            .env_remove("RUST_LOG")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let mut node = Node {
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
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("switchboard serve exited early: {status}");
            }
            if let Ok(r) = node.client.get(format!("{}/readyz", node.base)).send().await {
                if r.status() == 200 {
                    return node;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("switchboard serve was not ready in 10 s");
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal sent");
    }

    /// Waits for the process to exit.
    pub async fn exited(&mut self) -> ExitStatus {
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

    pub async fn sigkill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.exited().await;
    }

    pub async fn put_ok(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .put(format!("{}{path}", self.base))
            .bearer_auth(service_token())
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "PUT {path}: {body}");
        body
    }

    /// Posts an inbound message from F1's number to L1; returns (status, body).
    pub async fn inbound(&self, external_id: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/api/v1/messages/inbound", self.base))
            .bearer_auth(service_token())
            .json(&json!({"external_id": external_id, "from": F1_PHONE, "to": L1_SMS,
                          "body": format!("body of {external_id}")}))
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The cast of `TestApp::seed`: L1, sam (sales) and sue (service) on F1.
    pub async fn seed(&self) {
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

    pub async fn ws(&self, token: &str) -> (Ws, Value) {
        try_open(request(&self.ws_url, Some(token), None))
            .await
            .expect("the handshake is accepted")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
