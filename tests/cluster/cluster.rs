//! Three nodes sharing one PostgreSQL database and one Redis bus: in this process
//! (`Cluster`), or as processes of the built binary (`Node`). Where they keep their state and
//! carry their events is a `Deployment`: a database of the test's own (on the machine's
//! PostgreSQL, or on a private server the test starts) and the relay bus on a single Redis or
//! on a Redis Cluster (`Redis`), under a key prefix of the test's own.
//!
//! Scenarios that must hold on both buses take a `Redis` and are run on each by
//! `on_both_buses!`, which makes one test per scenario and bus.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};
use switchboard::config::{BusBackend, Settings, StorageBackend};

use crate::helpers::{
    PATIENCE, SECRET, TestApp, Ws, base_settings,
    postgres::{TestDatabase, fresh_database},
    redis as redis_server,
    redis_cluster::RedisCluster,
    service_token, start,
    ws::{F1_PHONE, L1_SMS, request, try_open},
};

/// The Redis the bus runs on.
#[derive(Debug, Clone)]
pub enum Redis {
    /// A single server at this URL.
    Single(String),
    /// A Redis Cluster reached through these nodes (`redis.cluster_nodes`).
    Cluster(Vec<String>),
}

impl Redis {
    /// The test process's shared redis-server.
    pub fn single() -> Redis {
        Redis::Single(redis_server::shared().url())
    }

    /// The test process's shared Redis Cluster (3 primaries, 3 replicas), started on first use.
    /// Tests that break a cluster start one of their own (`pubsub`).
    pub fn cluster() -> Redis {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        Redis::Cluster(CLUSTER.get_or_init(RedisCluster::start).urls())
    }
}

/// Runs each scenario `name(bus: Redis)` of the calling module as two tests,
/// `on_redis::name` (a single Redis) and `on_redis_cluster::name` (a Redis Cluster).
#[macro_export]
macro_rules! on_both_buses {
    ($($name:ident),+ $(,)?) => {
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::cluster::Redis::single()).await
                }
            )+
        }
        mod on_redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::cluster::Redis::cluster()).await
                }
            )+
        }
    };
}

/// Where a test's nodes keep their state (one PostgreSQL database) and carry their events
/// (the relay bus on `redis`, under `prefix`).
pub struct Deployment {
    pub postgres_url: String,
    pub redis: Redis,
    pub prefix: String,
    /// The database, when the deployment made it (dropped with it).
    _database: Option<TestDatabase>,
}

impl Deployment {
    /// A new database on the machine's PostgreSQL, and the bus on `redis`.
    pub fn new(redis: Redis) -> Deployment {
        let database = fresh_database();
        Deployment {
            postgres_url: database.url.clone(),
            redis,
            prefix: redis_server::unique_prefix(),
            _database: Some(database),
        }
    }

    /// The database at `postgres_url` (a private server's), and the bus on `redis`.
    pub fn on(postgres_url: String, redis: Redis) -> Deployment {
        Deployment {
            postgres_url,
            redis,
            prefix: redis_server::unique_prefix(),
            _database: None,
        }
    }

    /// Settings of one in-process node, its scratch files in `dir`.
    pub fn settings(&self, dir: &std::path::Path) -> Settings {
        let mut s = base_settings(dir);
        s.storage.backend = StorageBackend::Postgres;
        s.bus.backend = BusBackend::Redis;
        s.postgres.url = self.postgres_url.clone();
        // Three nodes, and other tests, on one server.
        s.postgres.pool_size = 4;
        s.redis.key_prefix = self.prefix.clone();
        match &self.redis {
            Redis::Single(url) => s.redis.url = url.clone(),
            Redis::Cluster(nodes) => s.redis.cluster_nodes = nodes.clone(),
        }
        s
    }

    /// The same settings as environment variables, for a node process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("SWITCHBOARD__STORAGE__BACKEND", "postgres".to_owned()),
            ("SWITCHBOARD__BUS__BACKEND", "redis".to_owned()),
            ("SWITCHBOARD__POSTGRES__URL", self.postgres_url.clone()),
            ("SWITCHBOARD__POSTGRES__POOL_SIZE", "4".to_owned()),
            ("SWITCHBOARD__REDIS__KEY_PREFIX", self.prefix.clone()),
        ];
        match &self.redis {
            Redis::Single(url) => env.push(("SWITCHBOARD__REDIS__URL", url.clone())),
            Redis::Cluster(nodes) => env.push(("SWITCHBOARD__REDIS__CLUSTER_NODES", nodes.join(","))),
        }
        env
    }
}

/// Three in-process nodes of one deployment: any node for any call.
pub struct Cluster {
    pub nodes: Vec<TestApp>,
    /// Kept for the nodes' life: its database is dropped with it.
    _deployment: Deployment,
}

impl Cluster {
    /// Three nodes on a new database and the shared test Redis.
    pub async fn start() -> Cluster {
        Cluster::start_on(Deployment::new(Redis::single())).await
    }

    /// Three nodes on a new database and the bus on `redis`.
    pub async fn on(redis: Redis) -> Cluster {
        Cluster::start_on(Deployment::new(redis)).await
    }

    /// Three nodes of `deployment`, started together (their schema migrations race).
    pub async fn start_on(deployment: Deployment) -> Cluster {
        Cluster::start_adjusted(deployment, |_| {}).await
    }

    /// Like `start_on`, with every node's settings adjusted first.
    pub async fn start_adjusted(deployment: Deployment, adjust: impl Fn(&mut Settings)) -> Cluster {
        let nodes = futures_util::future::join_all((0..3).map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let mut settings = deployment.settings(dir.path());
            adjust(&mut settings);
            start(settings, dir)
        }))
        .await;
        Cluster {
            nodes,
            _deployment: deployment,
        }
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

/// `switchboard serve` as a process of a `Deployment`.
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
    pub async fn start(deployment: &Deployment) -> Node {
        Node::start_with(deployment, &[]).await
    }

    /// A node with extra environment variables (a failpoint, say).
    pub async fn start_with(deployment: &Deployment, extra: &[(&str, &str)]) -> Node {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD__SERVER__WORKERS", "2")
            .env("SWITCHBOARD__AUTH__HS256_SECRET", SECRET)
            .env("SWITCHBOARD__STORAGE__PATH", dir.path())
            .envs(deployment.env())
            .envs(extra.iter().copied())
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
            client: reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().unwrap(),
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
