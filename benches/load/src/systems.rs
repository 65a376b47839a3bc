//! The systems under test: how to start each one pinned to the server core, and how the load
//! tool talks to it (client URL, directory set-up, sending a message).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use switchboard::auth::{TokenSpec, mint_hs256};
use tokio::process::{Child, Command};

use crate::{
    backends::{Postgres, Redis},
    proc::now_ns,
    worker::{Client, Proto, marker},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Switchboard,
    /// Switchboard in W4 with the bus on a Redis Cluster (W4 only).
    SwitchboardRedisCluster,
    SocketIoxide,
    SocketIo,
    BareActix,
    BareTungstenite,
}

impl System {
    pub const ALL: [System; 6] = [
        System::Switchboard,
        System::SwitchboardRedisCluster,
        System::SocketIoxide,
        System::SocketIo,
        System::BareActix,
        System::BareTungstenite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Switchboard => "switchboard",
            System::SwitchboardRedisCluster => "switchboard-redis-cluster",
            System::SocketIoxide => "socketioxide",
            System::SocketIo => "socketio",
            System::BareActix => "bare-actix",
            System::BareTungstenite => "bare-tungstenite",
        }
    }

    pub fn parse(s: &str) -> Result<System> {
        System::ALL
            .into_iter()
            .find(|sys| sys.name() == s)
            .with_context(|| format!("unknown system {s:?}"))
    }

    pub fn proto(self) -> Proto {
        match self {
            System::Switchboard | System::SwitchboardRedisCluster => Proto::Switchboard,
            System::SocketIoxide | System::SocketIo => Proto::SocketIo,
            System::BareActix | System::BareTungstenite => Proto::Bare,
        }
    }

    /// Whether the system runs as several nodes on Redis (W4).
    pub fn clusters(self) -> bool {
        matches!(
            self,
            System::Switchboard | System::SwitchboardRedisCluster | System::SocketIoxide | System::SocketIo
        )
    }

    /// Whether the system is measured in W4 alone (a variant of another's cluster).
    pub fn w4_only(self) -> bool {
        self == System::SwitchboardRedisCluster
    }

    /// What the system does per inbound message (BENCHMARKS.md says it next to the figures).
    pub fn per_message(self) -> &'static str {
        match self {
            System::Switchboard => {
                "verifies the JWT, validates the message, stores it durably with its thread, auto-assignment and unread state (W1–W3: SQLite WAL, fsync, group commit; W4: a PostgreSQL transaction, shared by the tenant's messages that queued behind the one before it (group commit), its events appended to the log in it, fsync at commit), routes by the product rules, writes `message.new` and `unread.count` to each recipient session; in W4 the writing node publishes the committed events once on Redis, and each node delivers them in log order"
            }
            System::SwitchboardRedisCluster => {
                "as switchboard in W4, with the events published on a Redis Cluster of 3 primaries (sharded pub/sub, SPUBLISH/SSUBSCRIBE)"
            }
            System::SocketIoxide | System::SocketIo => {
                "parses the JSON request and emits one event to the users' rooms (nothing stored, no auth check)"
            }
            System::BareActix | System::BareTungstenite => {
                "writes the request body as-is to the listed sessions (no auth, routing, storage or JSON)"
            }
        }
    }
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Env {
    pub repo: PathBuf,
    /// Directory holding the `switchboard` binary (this tool's own directory).
    pub bin_dir: PathBuf,
    /// Core the servers are pinned to (None: not pinned).
    pub server_core: Option<usize>,
    /// W4's PostgreSQL: a database of its own on this server (a URL of an existing database
    /// there); None: a private server.
    pub postgres_url: Option<String>,
}

/// A running server process.
pub struct Server {
    pub pid: u32,
    pub port: u16,
    child: Child,
    dir: Option<PathBuf>,
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn pinned(env: &Env, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match env.server_core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

pub fn scratch_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchboard-load-{}-{tag}-{}", std::process::id(), now_ns()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Server {
    /// Starts `system` on a free port; `cluster` puts it in cluster mode on that Redis (and,
    /// for Switchboard, that PostgreSQL).
    pub async fn start(system: System, env: &Env, cluster: Option<(&Redis, Option<&Postgres>)>) -> Result<Server> {
        let port = free_port()?;
        let (mut cmd, dir) = match system {
            System::Switchboard | System::SwitchboardRedisCluster => {
                let dir = scratch_dir("data")?;
                let mut c = pinned(env, env.bin_dir.join("switchboard"));
                c.arg("serve")
                    .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
                    .env("SWITCHBOARD__SERVER__WORKERS", "1")
                    .env("SWITCHBOARD__SERVER__MAX_SESSIONS", "100000")
                    .env("SWITCHBOARD__SERVER__STATIC_DIR", env.repo.join("static"))
                    .env("SWITCHBOARD__STORAGE__PATH", &dir)
                    .env("SWITCHBOARD__LOG__FILTER", "warn");
                if let Some((r, pg)) = cluster {
                    let pg = pg.context("Switchboard's cluster needs PostgreSQL")?;
                    c.env("SWITCHBOARD__STORAGE__BACKEND", "postgres")
                        .env("SWITCHBOARD__BUS__BACKEND", "redis")
                        .env("SWITCHBOARD__POSTGRES__URL", &pg.url)
                        .env("SWITCHBOARD__REDIS__URL", &r.url)
                        .env("SWITCHBOARD__REDIS__KEY_PREFIX", &r.prefix);
                    if !r.cluster_nodes.is_empty() {
                        c.env("SWITCHBOARD__REDIS__CLUSTER_NODES", r.cluster_nodes.join(","));
                    }
                }
                (c, Some(dir))
            }
            peer => {
                let mut c = pinned(env, env.repo.join("benches/peers/start.sh"));
                c.arg(peer.name()).arg(port.to_string());
                if let Some((r, _)) = cluster {
                    c.env("REDIS_URL", &r.url);
                }
                (c, None)
            }
        };
        cmd.stdout(Stdio::null()).stdin(Stdio::null()).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", system.name()))?;
        let pid = child.id().context("server pid")?;
        let server = Server { pid, port, child, dir };
        server
            .wait_ready()
            .await
            .with_context(|| format!("{} did not start", system.name()))?;
        Ok(server)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) -> Result<()> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{}/healthz", self.base())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no answer on /healthz within 30 s")
    }

    /// SIGTERM, then SIGKILL if it lingers.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Who a message is for.
#[derive(Debug, Clone, Copy)]
pub enum Audience {
    /// The three users of group `g` (users 3g, 3g+1, 3g+2 at location g).
    Group(usize),
    /// Every session (all subscribe-all at location 0).
    Everyone,
}

fn user(k: usize) -> String {
    format!("u{k}")
}

fn location(g: usize) -> String {
    format!("L{g}")
}

/// The SMS number of location `g`, and the customer who texts it.
fn sms_number(g: usize) -> String {
    format!("+1555{:07}", 2_000_000 + g)
}

fn customer_number(g: usize) -> String {
    format!("+1555{:07}", 5_000_000 + g)
}

/// Filler that brings a peer's event to about 200 bytes of JSON.
const PAD: &str = "The water is back on at the house, can someone come by this afternoon to check the heater?";

/// Talks to one system: set-up, client URLs, messages.
pub struct Driver {
    system: System,
    http: reqwest::Client,
    tenant: String,
    secret: String,
}

impl Driver {
    pub fn new(system: System) -> Result<Arc<Driver>> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1024)
            // Below the servers' keep-alive (actix's is 5 s): a connection idle that long may
            // be closing on the server's side just as a request is sent on it, which fails
            // the request.
            .pool_idle_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .build()?;
        Ok(Arc::new(Driver {
            system,
            http,
            tenant: format!("load{}", now_ns() % 1_000_000_000),
            secret: switchboard::config::DEV_SECRET.to_string(),
        }))
    }

    fn token(&self, sub: &str, roles: &[&str], locations: &[&str]) -> String {
        let mut spec = TokenSpec::new(sub, &self.tenant, roles, locations);
        spec.ttl = Duration::from_secs(24 * 3600);
        mint_hs256(&self.secret, &spec)
    }

    fn service_token(&self) -> String {
        self.token("load-ingest", &["service"], &[])
    }

    /// The websocket client of user `k` at location `g`.
    pub fn client(&self, k: usize, g: usize) -> Client {
        let (u, l) = (user(k), location(g));
        match self.system.proto() {
            Proto::Switchboard => Client {
                path: format!("/ws?access_token={}", self.token(&u, &["user"], &[&l])),
                auth: None,
            },
            Proto::SocketIo => Client {
                path: "/socket.io/?EIO=4&transport=websocket".into(),
                auth: Some(json!({"user": u, "location": l}).to_string()),
            },
            Proto::Bare => Client {
                path: format!("/ws?user={u}"),
                auth: None,
            },
        }
    }

    async fn put(&self, base: &str, path: String, token: String, body: Value) -> Result<()> {
        let r = self
            .http
            .put(format!("{base}/api/v1/{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("PUT {path}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    async fn all(&self, calls: Vec<(String, String, Value)>, base: &str) -> Result<()> {
        let results: Vec<Result<()>> = stream::iter(calls)
            .map(|(path, token, body)| self.put(base, path, token, body))
            .buffer_unordered(32)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Directory for W2/W4: per group a location, a folder listing the group's customer with
    /// users 3g (sales) and 3g+1 (service), and user 3g+2 subscribed to all of the location.
    pub async fn setup_groups(&self, base: &str, groups: usize) -> Result<()> {
        if self.system.proto() != Proto::Switchboard {
            return Ok(());
        }
        let svc = self.service_token();
        let mut first = Vec::new();
        for g in 0..groups {
            let l = location(g);
            first.push((
                format!("locations/{l}"),
                svc.clone(),
                json!({"name": l, "sms_numbers": [sms_number(g)]}),
            ));
            for k in 3 * g..3 * g + 3 {
                first.push((format!("users/{}", user(k)), svc.clone(), json!({"name": user(k)})));
            }
        }
        self.all(first, base).await?;
        let mut second = Vec::new();
        for g in 0..groups {
            let l = location(g);
            second.push((
                format!("folders/F{g}"),
                svc.clone(),
                json!({"name": format!("F{g}"), "location_id": l, "phone_numbers": [customer_number(g)],
                       "sales_resource_id": user(3 * g), "service_resource_id": user(3 * g + 1)}),
            ));
            let watcher = self.token(&user(3 * g + 2), &["user"], &[&l]);
            second.push(("me/subscriptions".into(), watcher, json!({"subscribe_all": true})));
        }
        self.all(second, base).await
    }

    /// Directory for W3: location 0, and users 0..n subscribed to all of it.
    pub async fn setup_broadcast(&self, base: &str, users: usize) -> Result<()> {
        if self.system.proto() != Proto::Switchboard {
            return Ok(());
        }
        let l = location(0);
        self.all(
            vec![(
                format!("locations/{l}"),
                self.service_token(),
                json!({"name": l, "sms_numbers": [sms_number(0)]}),
            )],
            base,
        )
        .await?;
        let calls = (0..users)
            .map(|k| {
                let t = self.token(&user(k), &["user"], &[&l]);
                ("me/subscriptions".to_string(), t, json!({"subscribe_all": true}))
            })
            .collect();
        self.all(calls, base).await
    }

    /// Sends message `seq` to `to` through `base`; returns the CLOCK_MONOTONIC time written
    /// into it (taken just before the request).
    pub async fn send(&self, base: &str, svc: &str, seq: u64, to: Audience) -> Result<u64> {
        let sent = now_ns();
        let body = format!("{} {PAD}", marker(seq, sent));
        let req = match self.system.proto() {
            Proto::Switchboard => {
                let g = match to {
                    Audience::Group(g) => g,
                    Audience::Everyone => 0,
                };
                let customer = match to {
                    // Nobody's folder lists this number: the thread stays unassigned and its
                    // audience is the location's subscribe-all users, i.e. everyone.
                    Audience::Everyone => format!("+1555{:07}", 9_000_000),
                    Audience::Group(g) => customer_number(g),
                };
                self.http
                    .post(format!("{base}/api/v1/messages/inbound"))
                    .bearer_auth(svc)
                    .json(
                        &json!({"external_id": format!("{}-{seq}", self.tenant), "from": customer,
                                  "to": sms_number(g), "body": body}),
                    )
            }
            Proto::SocketIo => {
                let rooms: Vec<String> = match to {
                    Audience::Group(g) => (3 * g..3 * g + 3).map(|k| format!("user:{}", user(k))).collect(),
                    Audience::Everyone => vec![format!("loc:{}", location(0))],
                };
                self.http
                    .post(format!("{base}/emit"))
                    .json(&json!({"rooms": rooms, "event": "event",
                    "data": {"type": "message.new", "id": seq.to_string(), "body": body}}))
            }
            Proto::Bare => {
                let q = match to {
                    Audience::Group(g) => {
                        format!("users={},{},{}", user(3 * g), user(3 * g + 1), user(3 * g + 2))
                    }
                    Audience::Everyone => "all=1".into(),
                };
                let payload = json!({"type": "message.new", "id": seq.to_string(), "body": body}).to_string();
                self.http.post(format!("{base}/emit?{q}")).body(payload)
            }
        };
        let r = req.send().await?;
        if !r.status().is_success() {
            bail!("send {seq}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(sent)
    }

    /// The token `send` needs (Switchboard's ingestion is a service call).
    pub fn sender_token(&self) -> String {
        self.service_token()
    }
}

/// The repository root (the load tool lives in `benches/load`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}
