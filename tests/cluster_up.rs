//! `scripts/cluster-up.sh`, run as a user runs it, on free ports of loopback: it starts
//! PostgreSQL, Redis (or a Redis Cluster), three nodes and nginx, the nodes share one inbox,
//! Ctrl-C stops every process and removes the temporary folder; a taken port (seen before the
//! start, or only when nginx binds) stops it with a message naming the port and leaves nothing
//! behind; it builds into `CARGO_TARGET_DIR` and runs what it built there.
//!
//! Each run has a `TMPDIR` of its own, so "nothing left behind" is an empty folder. The hub is
//! this build's binary (`SWITCHBOARD_BIN`), except in the `CARGO_TARGET_DIR` test, where `cargo`
//! on the script's `PATH` is a stand-in that puts this build's binary where a release build
//! would go (a real release build takes minutes here) and fails on any other command line.
//! Every wait is bounded; the whole file takes about 40 s on a busy 2-core machine (the four
//! tests run in parallel; three of them start a cluster).

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

/// Longest a start (or a failed start) may take.
const START: Duration = Duration::from_secs(120);
/// Longest stopping may take (the nodes drain, PostgreSQL shuts down).
const STOP: Duration = Duration::from_secs(40);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn hub() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// A temporary folder the postgres OS user may cross (the script's private server keeps its
/// data under it).
fn tmpdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// What a run left in its `TMPDIR`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

/// A base port such that every port the script takes is free now: base..=base+20, and the
/// cluster bus ports 10000 above base+10..base+15. Each call looks from a block of its own, so
/// the tests of this file (run in parallel) never pick the same one. Every block lies below
/// Linux's ephemeral range (32768 and up by default), so no connection another test opens
/// meanwhile is given one of these ports between this check and the script's start.
fn free_base() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // 10000 + 509 * 25 + 10015 = 32740: the highest bus port stays below 32768.
    const BLOCKS: u32 = 510;
    for _ in 0..BLOCKS {
        let block = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCKS;
        let base = 10_000 + block as u16 * 25;
        let mut ports = (0..=20u16)
            .map(|i| base + i)
            .chain((10..=15).map(|i| base + i + 10_000));
        if ports.all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of ports");
}

/// The script, with this run's environment.
fn script(port: u16, tmp: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/cluster-up.sh"))
        .env("PORT", port.to_string())
        .env("TMPDIR", tmp)
        .env("SWITCHBOARD_BIN", hub())
        .env_remove("POSTGRES_URL")
        .env_remove("REDIS_URL")
        .env_remove("KEEP_RUN_DIR")
        .stdin(Stdio::null());
    c
}

/// Runs the script to its end (bounded).
fn run_to_end(mut cmd: Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(START) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            // What it said, to tell a script that kept running from a process it started
            // that still holds its output open.
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(out)) => panic!(
                    "cluster-up.sh did not end within {START:?}; stopped, it said:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                _ => panic!(
                    "cluster-up.sh did not end within {START:?}, and its output stayed open 30 s \
                     after SIGTERM (a process it started still holds it)"
                ),
            }
        }
    }
}

/// A started cluster: the script's process and what it printed. Dropping it stops the script.
struct Cluster {
    child: Child,
    banner: String,
    stderr: PathBuf,
}

impl Cluster {
    /// Starts the script and waits for its banner (bounded).
    fn start(mut cmd: Command, tmp: &Path) -> Cluster {
        let stderr = tmp
            .join("..")
            .join(format!("{}.stderr", tmp.file_name().unwrap().to_string_lossy()));
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                banner.push_str(&line);
                banner.push('\n');
                if line.starts_with("Ctrl-C stops everything") {
                    let _ = tx.send(banner.clone());
                }
            }
        });
        let banner = match rx.recv_timeout(START) {
            Ok(banner) => banner,
            Err(_) => {
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                let _ = child.wait();
                panic!(
                    "cluster-up.sh did not come up: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        Cluster { child, banner, stderr }
    }

    /// Ctrl-C: SIGINT to the script; its exit status (bounded).
    fn interrupt(&mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                return status.code().or(status.signal().map(|s| 128 + s)).unwrap();
            }
            assert!(Instant::now() < deadline, "cluster-up.sh did not stop within {STOP:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// `curl`: the status code and the response headers.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let code = text[text.len().saturating_sub(3)..].parse().unwrap_or(0);
    (code, text)
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn service_token() -> String {
    let out = Command::new(hub())
        .args(["token", "--sub", "ingest", "--tenant", "acme", "--roles", "service"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// nginx answers on the port, the three nodes share one store (a message posted through one
/// node is known to the others), then Ctrl-C stops every process and removes the folder.
fn up_share_and_stop(cmd: Command, port: u16, tmp: &Path) -> String {
    let mut cluster = Cluster::start(cmd, tmp);
    let (code, headers) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(code, 200, "{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("server: nginx"),
        "nginx answers on the port: {headers}"
    );
    let svc = format!("Authorization: Bearer {}", service_token());
    let json = "Content-Type: application/json";
    let url = |node: u16, path: &str| format!("http://127.0.0.1:{}/api/v1/{path}", port + node);
    let (code, _) = curl(&[
        "-X",
        "PUT",
        &url(0, "locations/L1"),
        "-H",
        &svc,
        "-H",
        json,
        "-d",
        r#"{"name": "Downtown", "sms_numbers": ["+15550001111"]}"#,
    ]);
    assert_eq!(code, 200, "a location through nginx");
    let message = r#"{"external_id": "SM1", "from": "+15551234567", "to": "+15550001111", "body": "hi"}"#;
    let post = |node: u16| {
        curl(&[
            "-X",
            "POST",
            &url(node, "messages/inbound"),
            "-H",
            &svc,
            "-H",
            json,
            "-d",
            message,
        ])
        .0
    };
    assert_eq!(post(1), 201, "stored through node 1");
    assert_eq!(post(2), 200, "node 2 finds the message node 1 stored");
    assert_eq!(post(3), 200, "node 3 too");

    let status = cluster.interrupt();
    assert_eq!(status, 130, "Ctrl-C ends the script with 130");
    for p in [port, port + 1, port + 2, port + 3, port + 10, port + 20] {
        assert!(!answers(p), "port {p} still answers after Ctrl-C");
    }
    assert_eq!(leftovers(tmp), Vec::<PathBuf>::new(), "the temporary folder is gone");
    cluster.banner.clone()
}

#[test]
fn a_taken_port_stops_it_before_anything_starts_naming_the_port() {
    let tmp = tmpdir();
    let base = free_base();
    for (offset, what) in [(0, "nginx"), (2, "node 2"), (20, "postgresql")] {
        let holder = TcpListener::bind(("127.0.0.1", base + offset)).unwrap();
        let out = run_to_end(script(base, tmp.path()));
        drop(holder);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("port {} ({what}) is taken", base + offset)),
            "the message names the port: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("Switchboard cluster"));
        assert_eq!(leftovers(tmp.path()), Vec::<PathBuf>::new(), "nothing left behind");
        for p in [base, base + 1, base + 10, base + 20] {
            assert!(!answers(p), "port {p} answers after a failed start");
        }
    }
}

/// The port is free when the script looks but taken when nginx binds (here: a socket bound to
/// it that does not listen, so nothing answers on it): nginx cannot bind, and the script says
/// so, stops what it started and removes its folder, rather than reporting a cluster.
#[test]
fn nginx_failing_to_bind_fails_the_start_and_stops_everything() {
    let tmp = tmpdir();
    let base = free_base();
    let squatter = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{base}").parse().unwrap();
    squatter.bind(&addr.into()).unwrap();
    let out = run_to_end(script(base, tmp.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("nginx on {base} exited while starting")),
        "{stderr}"
    );
    assert!(
        stderr.contains("Address already in use"),
        "nginx's reason is shown: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Switchboard cluster"));
    for p in [base + 1, base + 2, base + 3, base + 10, base + 20] {
        assert!(!answers(p), "port {p} still answers after the failed start");
    }
    assert_eq!(leftovers(tmp.path()), Vec::<PathBuf>::new(), "nothing left behind");
}

#[test]
fn it_builds_into_cargo_target_dir_and_runs_postgres_redis_three_nodes_and_nginx() {
    let tmp = tmpdir();
    let tools = tempfile::tempdir().unwrap();
    let target = tools.path().join("target");
    let cargo = tools.path().join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\n[ \"$*\" = \"build --release --bin switchboard\" ] || {{ echo \"unexpected: cargo $*\" >&2; exit 3; }}\n\
             mkdir -p \"$CARGO_TARGET_DIR/release\" && ln -sf {} \"$CARGO_TARGET_DIR/release/switchboard\"\n",
            hub()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = free_base();
    let mut cmd = script(base, tmp.path());
    cmd.env_remove("SWITCHBOARD_BIN").env("CARGO_TARGET_DIR", &target).env(
        "PATH",
        format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap()),
    );
    let banner = up_share_and_stop(cmd, base, tmp.path());
    assert!(
        banner.contains(&format!("binary     {}/release/switchboard", target.display())),
        "it runs what it built in CARGO_TARGET_DIR: {banner}"
    );
    assert!(banner.contains(&format!(
        "postgresql postgres://postgres@127.0.0.1:{}/switchboard",
        base + 20
    )));
}

#[test]
fn with_a_redis_cluster() {
    let tmp = tmpdir();
    let base = free_base();
    let mut cmd = script(base, tmp.path());
    cmd.arg("--redis-cluster");
    let banner = up_share_and_stop(cmd, base, tmp.path());
    assert!(banner.contains("redis      cluster redis://"), "{banner}");
    for p in base + 10..=base + 15 {
        assert!(!answers(p), "redis {p} still answers");
    }
}
