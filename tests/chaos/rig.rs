//! What the chaos runs on: a private PostgreSQL (it is restarted), a redis-server on a free
//! port, and three `switchboard serve` processes on them (`storage.backend = "postgres"`,
//! `bus.backend = "redis"`); the cast of the directory; and which nodes a client may pick.
//!
//! A node that is killed or stopped comes back as a new process on a new free port; the
//! list of running nodes (`live_ports`) is what a client or the ingestion service would get
//! from its balancer. A frozen (SIGSTOPped) node stays listed: nobody outside can tell it
//! from a slow one, so callers must time out.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

use crate::helpers::{SECRET, pg_server::PgServer, redis::RedisServer, service_token, token};

/// L1's SMS number: every inbound message is texted to it.
pub const L1_SMS: &str = "+15550001111";
/// The customers who text in. The first three each have a folder at L1 (F1..F3, sam sales and
/// sue service); the last has none, so its thread stays unassigned.
pub const CUSTOMERS: [&str; 4] = ["+15551230001", "+15551230002", "+15551230003", "+15551230009"];
/// The users with sessions: sam and sue are the folders' resources, olga subscribes to
/// everything at L1, nick is granted L1 and is in no audience.
pub const USERS: [&str; 4] = ["sam", "sue", "olga", "nick"];

/// Whether `user` is in the audience of customer `customer`'s thread.
pub fn in_audience(user: &str, customer: usize) -> bool {
    match user {
        "sam" | "sue" => customer < 3,
        "olga" => true,
        _ => false,
    }
}

/// A user token granting L1.
pub fn member(user: &str) -> String {
    token(user, &["user"], &["L1"])
}

/// How long a node may take to answer `/readyz` 200 after it starts, or to exit after SIGTERM.
const NODE_DEADLINE: Duration = Duration::from_secs(30);
/// The nodes' drain on SIGTERM.
const SHUTDOWN_SECS: u64 = 3;

/// One node's place: its current process, if any.
struct Slot {
    child: Option<Child>,
    port: u16,
    frozen: bool,
    incarnation: u32,
}

pub struct Rig {
    pub pg: Mutex<PgServer>,
    pub redis: Mutex<RedisServer>,
    db_url: String,
    redis_url: String,
    slots: Vec<Mutex<Slot>>,
    /// For every call the test makes; short timeout, since a frozen node never answers.
    pub http: reqwest::Client,
    /// The nodes' logs (`warn` and up), one file per process, under the target directory's
    /// scratch space (kept when the test fails).
    pub logs: PathBuf,
}

/// A failure worth another try: 5xx, and 408 (actix answers it when a request's head or body
/// did not arrive in time, as when the node was frozen or starved mid-request).
pub fn retryable(status: u16) -> bool {
    status >= 500 || status == 408
}

/// The nodes' log filter: `warn`, or `SWITCHBOARD_CHAOS_LOG` (which also keeps the logs).
pub fn log_filter() -> String {
    std::env::var("SWITCHBOARD_CHAOS_LOG").unwrap_or_else(|_| "warn".into())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().port()
}

impl Rig {
    /// Starts PostgreSQL, Redis and three ready nodes.
    pub async fn start() -> Rig {
        let (pg, redis) = tokio::task::spawn_blocking(|| (PgServer::start(), RedisServer::start()))
            .await
            .unwrap();
        let db_url = pg.create_database("chaos");
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{}", std::process::id()));
        std::fs::create_dir_all(&logs).unwrap();
        let rig = Rig {
            redis_url: redis.url(),
            pg: Mutex::new(pg),
            redis: Mutex::new(redis),
            db_url,
            slots: (0..3)
                .map(|_| {
                    Mutex::new(Slot {
                        child: None,
                        port: 0,
                        frozen: false,
                        incarnation: 0,
                    })
                })
                .collect(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .connect_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
            logs,
        };
        eprintln!("chaos: node logs under {}", rig.logs.display());
        // The first node applies the schema; the others start after it.
        for i in 0..3 {
            rig.start_node(i).await;
        }
        rig
    }

    pub fn nodes(&self) -> usize {
        self.slots.len()
    }

    /// The ports of the nodes whose process runs (frozen ones included).
    pub fn live_ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| {
                let s = s.lock().unwrap();
                s.child.as_ref().map(|_| s.port)
            })
            .collect()
    }

    /// Starts node `i` as a new process on a new port and waits until `/readyz` answers 200.
    pub async fn start_node(&self, i: usize) {
        let port = free_port();
        let child = {
            let mut slot = self.slots[i].lock().unwrap();
            assert!(slot.child.is_none(), "node {i} runs already");
            slot.incarnation += 1;
            let log = std::fs::File::create(self.logs.join(format!("node{i}-{}.log", slot.incarnation))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .arg("serve")
                .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
                .env("SWITCHBOARD__SERVER__WORKERS", "2")
                .env("SWITCHBOARD__SERVER__SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
                .env("SWITCHBOARD__AUTH__HS256_SECRET", SECRET)
                .env("SWITCHBOARD__STORAGE__BACKEND", "postgres")
                .env("SWITCHBOARD__STORAGE__PATH", &self.logs)
                .env("SWITCHBOARD__POSTGRES__URL", &self.db_url)
                .env("SWITCHBOARD__POSTGRES__POOL_SIZE", "8")
                .env("SWITCHBOARD__BUS__BACKEND", "redis")
                .env("SWITCHBOARD__REDIS__URL", &self.redis_url)
                .env("SWITCHBOARD__REDIS__KEY_PREFIX", "chaos")
                .env("SWITCHBOARD__LOG__FILTER", log_filter())
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("the binary starts");
            let pid = child.id();
            slot.child = Some(child);
            slot.port = port;
            slot.frozen = false;
            pid
        };
        let deadline = Instant::now() + NODE_DEADLINE;
        loop {
            {
                let mut slot = self.slots[i].lock().unwrap();
                if let Some(status) = slot.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("node {i} (pid {child}) exited at start: {status}");
                }
            }
            if self.readyz(port).await == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} was not ready within {NODE_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/readyz` of the node on `port`, or `None` without an answer.
    pub async fn readyz(&self, port: u16) -> Option<u16> {
        let r = self.http.get(format!("http://127.0.0.1:{port}/readyz")).send().await;
        r.ok().map(|r| r.status().as_u16())
    }

    /// Sends `signal` to node `i`'s process.
    pub fn signal(&self, i: usize, signal: Signal) {
        let mut slot = self.slots[i].lock().unwrap();
        let pid = Pid::from_raw(slot.child.as_ref().expect("node runs").id() as i32);
        kill(pid, signal).expect("signal sent");
        match signal {
            Signal::SIGSTOP => slot.frozen = true,
            Signal::SIGCONT => slot.frozen = false,
            _ => {}
        }
    }

    /// Waits for node `i`'s process to exit (after SIGKILL or SIGTERM); returns how long it
    /// took and its exit code.
    pub async fn exited(&self, i: usize) -> (Duration, Option<i32>) {
        let mut child = self.slots[i].lock().unwrap().child.take().expect("node runs");
        let pid = Pid::from_raw(child.id() as i32);
        let t = Instant::now();
        let waited = tokio::time::timeout(NODE_DEADLINE, tokio::task::spawn_blocking(move || child.wait())).await;
        match waited {
            Ok(status) => (t.elapsed(), status.unwrap().expect("wait").code()),
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                panic!("node {i} did not exit within {NODE_DEADLINE:?}");
            }
        }
    }

    /// Waits until every node runs, none is frozen, and each answers `/readyz` 200.
    pub async fn wait_all_ready(&self) {
        let deadline = Instant::now() + NODE_DEADLINE;
        for i in 0..self.nodes() {
            let port = {
                let slot = self.slots[i].lock().unwrap();
                assert!(slot.child.is_some() && !slot.frozen, "node {i} was left down");
                slot.port
            };
            while self.readyz(port).await != Some(200) {
                assert!(Instant::now() < deadline, "node {i} not ready after the faults");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A call to a node on `port`, with the service token unless `token` is given.
    pub async fn call(
        &self,
        method: reqwest::Method,
        port: u16,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self
            .http
            .request(method, format!("http://127.0.0.1:{port}{path}"))
            .bearer_auth(token.map_or_else(service_token, str::to_owned));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// A call that must succeed with 200 (idempotent, so retried on a slow start: the first
    /// calls of a debug build on a loaded machine may take longer than the 2 s timeout).
    async fn must(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Value) {
        let deadline = Instant::now() + NODE_DEADLINE;
        loop {
            let port = self.live_ports()[0];
            match self.call(method.clone(), port, path, token, Some(body.clone())).await {
                Ok((200, _)) => return,
                Ok((status, answer)) if !retryable(status) => panic!("{method} {path}: {status} {answer}"),
                other => assert!(Instant::now() < deadline, "{method} {path}: {other:?}"),
            }
        }
    }

    /// The directory: L1, the users, F1..F3; olga subscribes to everything.
    pub async fn seed_directory(&self) {
        use reqwest::Method;
        self.must(
            Method::PUT,
            "/api/v1/locations/L1",
            None,
            json!({"name": "Location L1", "sms_numbers": [L1_SMS]}),
        )
        .await;
        for user in USERS {
            self.must(
                Method::PUT,
                &format!("/api/v1/users/{user}"),
                None,
                json!({"name": user}),
            )
            .await;
        }
        for (f, phone) in CUSTOMERS[..3].iter().enumerate() {
            self.must(
                Method::PUT,
                &format!("/api/v1/folders/F{}", f + 1),
                None,
                json!({"name": format!("Folder F{}", f + 1), "location_id": "L1", "phone_numbers": [phone],
                       "sales_resource_id": "sam", "service_resource_id": "sue"}),
            )
            .await;
        }
        self.must(
            Method::PUT,
            "/api/v1/me/subscriptions",
            Some(&member("olga")),
            json!({"subscribe_all": true}),
        )
        .await;
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
