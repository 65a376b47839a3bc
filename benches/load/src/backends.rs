//! The servers W4's nodes run on, started by the load tool for each run: Redis (one server,
//! or a Redis Cluster of three primaries) and PostgreSQL (a private server made with `initdb`,
//! or a database of its own on a server given with `--postgres-url`), with what W4 reads off
//! them: their CPU time (every process of the server) and Redis's memory (`INFO memory`).
//!
//! Everything is pinned to the server core, like the nodes, so the figures add up to what
//! one core spent on the cluster.

use std::{collections::HashMap, path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::{
    proc::{cpu_secs, now_ns},
    systems::{Env, free_port, pinned, scratch_dir},
};

/// Longest a server may take to come up.
const START: Duration = Duration::from_secs(60);

/// Polls `ready` every 50 ms until it holds, for at most [`START`].
async fn until(what: &str, mut ready: impl AsyncFnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + START;
    while !ready().await {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not come up within {START:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().await?;
    if !out.status.success() {
        bail!(
            "{:?}: {}{}",
            cmd.as_std().get_program(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn redis_cli(port: u16, args: &[&str]) -> Result<String> {
    run(Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args)).await
}

struct RedisNode {
    port: u16,
    pid: u32,
    child: Child,
}

/// The Redis of one W4 run: one server (`url`) or a cluster (`cluster_nodes`).
pub struct Redis {
    nodes: Vec<RedisNode>,
    dir: PathBuf,
    /// `redis://` URL of the single server (the first node of a cluster).
    pub url: String,
    /// Every node's URL when it is a cluster; empty for one server.
    pub cluster_nodes: Vec<String>,
    pub prefix: String,
}

impl Redis {
    /// One redis-server. Nothing is stored in it by any system W4 runs (pub/sub only), so
    /// it runs without persistence.
    pub async fn single(env: &Env) -> Result<Redis> {
        let dir = scratch_dir("redis")?;
        let node = Redis::spawn(env, &dir, free_port()?, &[]).await?;
        Ok(Redis {
            url: format!("redis://127.0.0.1:{}", node.port),
            nodes: vec![node],
            dir,
            cluster_nodes: Vec::new(),
            prefix: format!("load{}", now_ns() % 1_000_000),
        })
    }

    /// A Redis Cluster of `primaries` primaries (no replicas), slots split evenly.
    pub async fn cluster(env: &Env, primaries: usize) -> Result<Redis> {
        let dir = scratch_dir("redis-cluster")?;
        let mut ports = Vec::new();
        let mut held = Vec::new();
        while ports.len() < primaries {
            // The cluster bus listens 10000 above the port.
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = l.local_addr()?.port();
            if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                ports.push(port);
            }
            held.push(l);
        }
        drop(held);
        let mut nodes = Vec::new();
        for port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(Redis::spawn(env, &node_dir, *port, &args).await?);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        run(&mut create).await.context("redis-cli --cluster create")?;
        for port in &ports {
            until("the Redis Cluster", async || {
                redis_cli(*port, &["cluster", "info"])
                    .await
                    .is_ok_and(|s| s.contains("cluster_state:ok"))
            })
            .await?;
        }
        Ok(Redis {
            url: format!("redis://127.0.0.1:{}", ports[0]),
            cluster_nodes: ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect(),
            nodes,
            dir,
            prefix: format!("load{}", now_ns() % 1_000_000),
        })
    }

    async fn spawn(env: &Env, dir: &std::path::Path, port: u16, extra: &[&str]) -> Result<RedisNode> {
        let mut c = pinned(env, "redis-server");
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let child = c.spawn().context("starting redis-server")?;
        let pid = child.id().context("redis pid")?;
        until("redis-server", async || redis_cli(port, &["ping"]).await.is_ok()).await?;
        Ok(RedisNode { port, pid, child })
    }

    /// CPU time of every Redis process, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.nodes.iter().filter_map(|n| cpu_secs(n.pid).ok()).sum()
    }

    /// `used_memory` of `INFO memory`, summed over the nodes, in bytes.
    pub async fn used_memory(&self) -> Result<u64> {
        let mut total = 0;
        for n in &self.nodes {
            let info = redis_cli(n.port, &["info", "memory"]).await?;
            total += info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .context("used_memory in INFO memory")?
                .trim()
                .parse::<u64>()?;
        }
        Ok(total)
    }

    pub async fn stop(self) {
        for mut n in self.nodes {
            let _ = n.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The folder of PostgreSQL's server binaries: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout).
fn pg_bindir() -> Result<PathBuf> {
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
            })
            .collect()
        })
        .unwrap_or_default();
    found.retain(|(_, d)| d.join("initdb").exists());
    found.sort();
    found
        .pop()
        .map(|(_, d)| d)
        .context("PostgreSQL's server binaries (apt-get install postgresql)")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The PostgreSQL of one W4 run.
pub struct Postgres {
    /// The database the nodes use.
    pub url: String,
    kind: PgKind,
}

enum PgKind {
    /// A server of our own: every process of it is ours to count.
    Private { child: Child, pid: u32, dir: PathBuf },
    /// A database of our own on a shared server: only its backends are counted.
    Shared { admin: String, db: String },
}

impl Postgres {
    /// A private server (initdb in a scratch folder, as the `postgres` OS user when root),
    /// or, given `shared` (a URL of an existing database on a server), a new database there.
    pub async fn start(env: &Env, shared: Option<&str>) -> Result<Postgres> {
        match shared {
            Some(admin) => Postgres::on_shared(admin).await,
            None => Postgres::private(env).await,
        }
    }

    async fn on_shared(admin: &str) -> Result<Postgres> {
        let db = format!("switchboard_load_{}", now_ns() % 1_000_000_000);
        run(Command::new("psql").args([admin, "-Atqc", &format!("CREATE DATABASE {db}")]))
            .await
            .context("creating the load tool's database")?;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Ok(Postgres {
            url: format!("{base}/{db}"),
            kind: PgKind::Shared {
                admin: admin.to_string(),
                db,
            },
        })
    }

    async fn private(env: &Env) -> Result<Postgres> {
        let bindir = pg_bindir()?;
        let dir = scratch_dir("postgres")?;
        let data = dir.join("data");
        let as_server_user = |program: PathBuf| -> Command {
            let mut c = pinned(env, if is_root() { "setpriv".into() } else { program.clone() });
            if is_root() {
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
                    .arg(program);
            }
            c
        };
        if is_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir)).await?;
        }
        run(as_server_user(bindir.join("initdb")).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))
        .await
        .context("initdb")?;
        let port = free_port()?;
        // The server's defaults otherwise (fsync and synchronous_commit on): a 2xx means
        // the commit is on disk, as with the embedded store.
        let child = as_server_user(bindir.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("starting postgres")?;
        let pid = child.id().context("postgres pid")?;
        let isready = bindir.join("pg_isready");
        until("postgres", async || {
            Command::new(&isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .await
                .is_ok_and(|s| s.success())
        })
        .await?;
        run(Command::new(bindir.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "switchboard",
        ]))
        .await?;
        Ok(Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/switchboard"),
            kind: PgKind::Private { child, pid, dir },
        })
    }

    /// Gathers the planner's statistics of the database, as autovacuum would within a minute
    /// of the first writes (W4's warm-up; a fresh database has none).
    pub async fn analyze(&self) -> Result<()> {
        run(Command::new("psql").args([self.url.as_str(), "-Atqc", "ANALYZE"]))
            .await
            .context("ANALYZE")?;
        Ok(())
    }

    /// What the figures count: "every process of a private server" or "its backends only".
    pub fn counted(&self) -> &'static str {
        match self.kind {
            PgKind::Private { .. } => "every process of a private PostgreSQL server",
            PgKind::Shared { .. } => "the backends of its database on a shared server (not the server's own processes)",
        }
    }

    /// CPU seconds so far of each process counted, by pid.
    pub async fn cpu_sample(&self) -> Result<HashMap<u32, f64>> {
        let pids: Vec<u32> = match &self.kind {
            PgKind::Private { pid, .. } => {
                let mut pids = vec![*pid];
                pids.extend(children_of(*pid));
                pids
            }
            PgKind::Shared { admin, db } => run(Command::new("psql").args([
                admin.as_str(),
                "-Atqc",
                &format!("SELECT pid FROM pg_stat_activity WHERE datname = '{db}'"),
            ]))
            .await?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
        };
        Ok(pids.into_iter().filter_map(|p| Some((p, cpu_secs(p).ok()?))).collect())
    }

    /// CPU seconds spent between two samples (a process new since the first counts whole).
    pub fn cpu_between(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
        after
            .iter()
            .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0))
            .filter(|d| *d > 0.0)
            .sum()
    }

    pub async fn stop(self) {
        match self.kind {
            PgKind::Private { mut child, pid, dir } => {
                // SIGINT: fast shutdown (the nodes are gone already).
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGINT) };
                if tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
                let _ = std::fs::remove_dir_all(dir);
            }
            PgKind::Shared { admin, db } => {
                let _ = run(Command::new("psql").args([
                    admin.as_str(),
                    "-Atqc",
                    &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                ]))
                .await;
            }
        }
    }
}

/// The processes whose parent is `pid` (a postmaster's backends and helpers).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`; comm may hold spaces, so read after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}
