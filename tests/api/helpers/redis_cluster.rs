//! A real Redis Cluster for the tests: `redis-server` processes in cluster mode on free ports
//! of 127.0.0.1, each in a directory of its own under one temp dir, joined by
//! `redis-cli --cluster create`.
//!
//! ```ignore
//! let mut cluster = RedisCluster::start(); // 3 primaries + 3 replicas, cluster_state:ok
//! let urls = cluster.urls();               // redis://127.0.0.1:P for every node
//! let port = cluster.owner_of(slot);       // the primary serving a slot now
//! cluster.kill(port);                      // SIGKILL; or `stop` (SIGTERM), `restart`
//! cluster.wait_for_new_owner(slot, port);  // a replica took over, every node agrees
//! cluster.move_slot(slot, to_port);        // SETSLOT IMPORTING/MIGRATING, keys, NODE
//! ```
//!
//! Every call blocks (std I/O and sleeps): call it from a `multi_thread` test runtime, where
//! the code under test keeps running on the other worker, or from `spawn_blocking`. Every wait
//! polls the servers with a bounded deadline ([`DEADLINE`]) and panics past it. The servers
//! die with the test: each runs under a shell that kills it once the test's end of its stdin
//! closes (on drop, or when the test process dies), as `redis::RedisServer` does for one.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::redis::answers;

/// Longest any wait on the cluster takes before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// `cluster-node-timeout`: how long a primary may be unreachable before its replica takes over.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// One node of a [`RedisCluster`].
pub struct Node {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The redis-server's own pid (not the shell's), for signals.
    pid: Option<i32>,
}

/// A running Redis Cluster of `redis-server` processes. Dropping it kills them all.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failed: bool,
    /// Slot ranges served (inclusive), migrating/importing markers left out.
    pub slots: Vec<(u16, u16)>,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Held together so that no two are the same; the cluster bus port is port + 10000, so
    // ports above 55535 are skipped.
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bus_free = port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok();
        if bus_free {
            ports.push(port);
        }
        listeners.push(l);
    }
    ports
}

impl RedisCluster {
    /// 3 primaries with a replica each, `cluster_state:ok` on every node.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(3, 1)
    }

    /// `primaries` primaries with `replicas` replicas each (slots split evenly by redis-cli).
    pub fn start_with(primaries: usize, replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(primaries * (1 + replicas));
        let mut cluster = RedisCluster {
            nodes: ports
                .iter()
                .map(|port| {
                    let dir = dir.path().join(port.to_string());
                    std::fs::create_dir_all(&dir).unwrap();
                    Node {
                        port: *port,
                        dir,
                        child: None,
                        pid: None,
                    }
                })
                .collect(),
            _dir: dir,
        };
        for port in ports.clone() {
            cluster.spawn(port);
        }
        for port in &ports {
            cluster.wait_answers(*port);
        }
        let mut create = Command::new("timeout");
        create.args(["60", "redis-cli", "--cluster", "create"]);
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (apt-get install redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// Every node's port, primaries and replicas, running or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:P` for every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports().iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    fn running(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn spawn(&mut self, port: u16) {
        let node = self.node(port);
        assert!(node.child.is_none(), "node {port} already runs");
        let cmd = format!(
            "redis-server --port {port} --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
             --cluster-node-timeout {NODE_TIMEOUT_MS} --repl-diskless-sync-delay 0 --save '' --appendonly no \
             --dir {dir} --logfile redis.log \
             & pid=$!; echo $pid; read _; kill $pid 2>/dev/null; wait $pid",
            dir = node.dir.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &cmd])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let mut line = String::new();
        // unwrap: stdout was piped just above.
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        node.pid = Some(line.trim().parse().expect("the shell prints redis-server's pid"));
        node.child = Some(child);
    }

    fn wait_answers(&self, port: u16) {
        let deadline = Instant::now() + DEADLINE;
        while !answers(port) {
            assert!(Instant::now() < deadline, "redis-server on port {port} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the node on `port` (no goodbye to its clients or peers) and reaps it.
    pub fn kill(&mut self, port: u16) {
        self.signal_and_reap(port, Signal::SIGKILL);
    }

    /// Stops the node on `port` with SIGTERM.
    pub fn stop(&mut self, port: u16) {
        self.signal_and_reap(port, Signal::SIGTERM);
    }

    fn signal_and_reap(&mut self, port: u16, signal: Signal) {
        let node = self.node(port);
        let pid = node.pid.take().expect("the node runs");
        let _ = kill(Pid::from_raw(pid), signal);
        if let Some(mut child) = node.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
        let deadline = Instant::now() + DEADLINE;
        while answers(port) {
            assert!(Instant::now() < deadline, "node {port} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node on `port` again, on its own `nodes.conf` (it rejoins as what the
    /// cluster now says it is: a failed-over primary comes back as a replica), and waits until
    /// every running node says `cluster_state:ok`.
    pub fn restart(&mut self, port: u16) {
        self.spawn(port);
        self.wait_answers(port);
        self.wait_ok();
    }

    /// Runs one command on the node on `port`.
    pub fn cmd<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// `CLUSTER NODES` as the node on `port` sees it.
    pub fn nodes_seen_by(&self, port: u16) -> redis::RedisResult<Vec<NodeInfo>> {
        let text: String = self.cmd(port, &["CLUSTER", "NODES"])?;
        Ok(text.lines().filter_map(parse_node_line).collect())
    }

    /// The cluster id of the node on `port`.
    pub fn id_of(&self, port: u16) -> String {
        self.cmd(port, &["CLUSTER", "MYID"]).unwrap()
    }

    /// The primary serving `slot`, as the first running node that answers sees it.
    pub fn owner_of(&self, slot: u16) -> u16 {
        self.running()
            .into_iter()
            .find_map(|p| owner_in(&self.nodes_seen_by(p).ok()?, slot))
            .unwrap_or_else(|| panic!("no running node knows who serves slot {slot}"))
    }

    /// The primaries serving slots, as the first running node that answers sees it.
    pub fn primaries(&self) -> Vec<u16> {
        let nodes = self
            .running()
            .into_iter()
            .find_map(|p| self.nodes_seen_by(p).ok())
            .expect("a running node answers");
        let mut ports: Vec<u16> = nodes
            .iter()
            .filter(|n| n.primary && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        ports.sort();
        ports
    }

    /// Waits until every running node says `cluster_state:ok` and knows every node, and every
    /// running replica is in sync with its primary (`master_link_status:up`): a replica that
    /// never synced would not take over from a failed primary.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + DEADLINE;
        let total = self.nodes.len();
        loop {
            let ok = self.running().into_iter().all(|p| {
                let cluster = self.cmd::<String>(p, &["CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{total}\r"))
                });
                let replication = self
                    .cmd::<String>(p, &["INFO", "replication"])
                    .is_ok_and(|info| info.contains("role:master") || info.contains("master_link_status:up"));
                cluster && replication
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running node says a running node other than `old` serves `slot`
    /// (a replica was promoted) and `cluster_state:ok`; returns the new primary's port.
    pub fn wait_for_new_owner(&self, slot: u16, old: u16) -> u16 {
        let deadline = Instant::now() + DEADLINE;
        let running = self.running();
        loop {
            let owners: Vec<Option<u16>> = running
                .iter()
                .map(|p| self.nodes_seen_by(*p).ok().and_then(|n| owner_in(&n, slot)))
                .collect();
            if let Some(Some(new)) = owners.first()
                && *new != old
                && running.contains(new)
                && owners.iter().all(|o| *o == Some(*new))
            {
                let ok = running.iter().all(|p| {
                    self.cmd::<String>(*p, &["CLUSTER", "INFO"])
                        .is_ok_and(|i| i.contains("cluster_state:ok"))
                });
                if ok {
                    return *new;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over slot {slot} from {old}: {owners:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `slot` to the primary on `to` the standard way: `SETSLOT IMPORTING` on the
    /// target, `SETSLOT MIGRATING` on the source, `MIGRATE` of its keys, then `SETSLOT NODE`
    /// on the target, the source and every other primary. Waits until every running node
    /// agrees.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is on {to} already");
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let s = slot.to_string();
        let _: () = self
            .cmd(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])
            .unwrap();
        let _: () = self
            .cmd(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])
            .unwrap();
        let to_port = to.to_string();
        // Bounded: each round moves up to 100 keys, and nothing writes to the slot meanwhile.
        for _ in 0..10_000 {
            let keys: Vec<String> = self.cmd(from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]).unwrap();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let _: () = self.cmd(from, &args).unwrap();
        }
        let _: () = self.cmd(to, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]).unwrap();
        let _: () = self.cmd(from, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]).unwrap();
        for p in self.primaries() {
            if p != to && p != from {
                let _: () = self.cmd(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]).unwrap();
            }
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let agreed = self.running().into_iter().all(|p| {
                self.nodes_seen_by(p)
                    .ok()
                    .and_then(|n| owner_in(&n, slot))
                    .is_some_and(|o| o == to)
            });
            if agreed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes did not agree that {to} serves slot {slot}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                drop(child.stdin.take());
                let _ = child.wait();
            }
        }
    }
}

fn owner_in(nodes: &[NodeInfo], slot: u16) -> Option<u16> {
    nodes
        .iter()
        .filter(|n| n.primary && !n.failed)
        .find(|n| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|n| n.port)
}

/// `<id> <ip:port@cport> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`
fn parse_node_line(line: &str) -> Option<NodeInfo> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let addr = fields.get(1)?;
    let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let flags = fields.get(2)?;
    let slots = fields
        .get(8..)
        .unwrap_or_default()
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(NodeInfo {
        id: fields[0].to_owned(),
        port,
        primary: flags.contains("master"),
        failed: flags.contains("fail") && !flags.contains("fail?"),
        slots,
    })
}
