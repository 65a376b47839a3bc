//! Debian's nginx with `config/nginx.conf`, rendered the way `scripts/cluster-up.sh` renders
//! it, in front of three in-process nodes: the directory, a websocket and an inbound message
//! all go through nginx, round-robin and with no stickiness.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

use crate::cluster::{Cluster, eventually, until_message};
use crate::helpers::{
    PATIENCE, service_token,
    ws::{F1_PHONE, L1_SMS, hang_up, member, query_url, request, try_open},
};

/// The temp directories nginx needs under its prefix (as the script creates them).
const TEMP_DIRS: [&str; 5] = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"];

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().port()
}

/// `nginx` on PATH, else where Debian puts it (`/usr/sbin` is not on every user's PATH).
fn nginx_binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .expect("nginx is installed (apt-get install nginx-light; .ci/run does)")
}

/// An nginx master process (with `daemon off;`) on a free loopback port; stopped on drop.
struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    client: reqwest::Client,
}

impl Nginx {
    /// Renders `config/nginx.conf` for `nodes` (their `127.0.0.1:<port>`), starts nginx and
    /// waits until it answers `/healthz`.
    async fn start(nodes: &[String; 3]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // Private, like the script's `mktemp -d`: when the test runs as root, nginx's workers
        // (user nobody) can write nothing under it, so nothing may depend on temp files.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let run = dir.path().to_str().expect("a UTF-8 temp dir").to_owned();
        for sub in TEMP_DIRS {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let port = free_port();
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/nginx.conf"))
            .expect("config/nginx.conf");
        let rendered = template
            .replace("@RUN@", &run)
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@NODE1@", &nodes[0])
            .replace("@NODE2@", &nodes[1])
            .replace("@NODE3@", &nodes[2]);
        assert!(!rendered.contains('@'), "a placeholder is left: {rendered}");
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, rendered).unwrap();
        let stderr = std::fs::File::create(dir.path().join("nginx-stderr.log")).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            // The error log before the configuration is read (else /var/log/nginx).
            .arg("-e")
            .arg(dir.path().join("nginx-error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx {
            child: Some(child),
            dir,
            port,
            client: reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().unwrap(),
        };
        // nginx announces nothing once it listens: poll (bounded) until it proxies /healthz.
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = nginx.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "nginx exited early ({status}): {}{}",
                    nginx.file("nginx-stderr.log"),
                    nginx.file("nginx-error.log")
                );
            }
            let answer = nginx
                .client
                .get(nginx.url("/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer /healthz within {PATIENCE:?}: {}",
                nginx.file("nginx-error.log")
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// A file of nginx's prefix directory (empty if missing).
    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A call through nginx with the service token; returns (status, JSON body).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(service_token());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("nginx answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn put_ok(&self, path: &str, body: Value) {
        let (status, answer) = self.call(reqwest::Method::PUT, path, Some(body)).await;
        assert_eq!(status, 200, "PUT {path} through nginx: {answer}");
    }
}

impl Drop for Nginx {
    /// SIGTERM (nginx's fast shutdown: the master stops its workers, then exits); SIGKILL
    /// if it is still there after a bounded wait.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The upstream addresses of the access-log lines for `request` ("GET /healthz"), in order.
/// Format (config/nginx.conf): `addr "METHOD /path" status bytes time upstream=a[, b]`.
fn upstreams(log: &str, request: &str) -> Vec<String> {
    let needle = format!("\"{request}\"");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(|l| {
            l.rsplit_once("upstream=")
                .unwrap_or_else(|| panic!("no upstream= in {l:?}"))
                .1
                .to_owned()
        })
        .collect()
}

fn exists(path: &Path) -> bool {
    path.try_exists().unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn through_nginx_round_robin_a_websocket_gets_the_message_posted_and_no_token_is_logged() {
    let cluster = Cluster::start().await;
    let nodes: [String; 3] = std::array::from_fn(|i| format!("127.0.0.1:{}", cluster.nodes[i].port));
    let nginx = Nginx::start(&nodes).await;
    assert!(
        exists(&nginx.path("nginx.pid")),
        "the pid file lands in the run directory"
    );

    // The directory, through nginx only.
    nginx
        .put_ok(
            "/api/v1/locations/L1",
            json!({"name": "Location L1", "sms_numbers": [L1_SMS]}),
        )
        .await;
    nginx.put_ok("/api/v1/users/sam", json!({"name": "Sam Sales"})).await;
    nginx.put_ok("/api/v1/users/sue", json!({"name": "Sue Service"})).await;
    nginx
        .put_ok(
            "/api/v1/folders/F1",
            json!({"name": "Folder F1", "location_id": "L1", "phone_numbers": [F1_PHONE],
                   "sales_resource_id": "sam", "service_resource_id": "sue"}),
        )
        .await;

    // A browser on nginx's origin: the Host nginx passes on makes that origin the node's own.
    let origin = format!("http://127.0.0.1:{}", nginx.port);
    let handshake = request(&query_url(&nginx.ws_url(), &member("sam")), None, Some(&origin));
    let (mut sam, hello) = try_open(handshake)
        .await
        .unwrap_or_else(|r| panic!("the handshake through nginx was refused: {r:?}"));
    assert_eq!(hello["user_id"], "sam", "{hello}");

    let (status, posted) = nginx
        .call(
            reqwest::Method::POST,
            "/api/v1/messages/inbound",
            Some(json!({"external_id": "NGX1", "from": F1_PHONE, "to": L1_SMS, "body": "through nginx"})),
        )
        .await;
    assert_eq!(status, 201, "inbound through nginx: {posted}");
    let (got, _) = until_message(&mut sam, "NGX1").await;
    assert_eq!(got["data"]["message"]["id"], posted["message"]["id"], "{got}");
    assert_eq!(got["data"]["message"]["body"], "through nginx", "{got}");
    assert_eq!(got["data"]["thread"]["folder_id"], "F1", "{got}");

    // A body nginx cannot hold in its default 16k buffer, well within the hub's limit: nginx
    // keeps it in memory rather than in a temp file its workers may not be allowed to write.
    let long = "x".repeat(64 * 1024);
    let (status, posted) = nginx
        .call(
            reqwest::Method::POST,
            "/api/v1/messages/inbound",
            Some(json!({"external_id": "NGX2", "from": F1_PHONE, "to": L1_SMS, "body": long})),
        )
        .await;
    assert_eq!(status, 201, "a 64 KiB inbound through nginx: {posted}");
    let (got, _) = until_message(&mut sam, "NGX2").await;
    assert_eq!(
        got["data"]["message"]["body"],
        long.as_str(),
        "the long body arrives whole"
    );

    // No stickiness: consecutive calls from one client land on different nodes.
    for _ in 0..6 {
        let r = nginx
            .client
            .get(nginx.url("/healthz"))
            .send()
            .await
            .expect("nginx answers");
        assert_eq!(r.status(), 200);
    }

    // The websocket's line is logged when it closes; everything before it is logged by then.
    hang_up(sam).await;
    let log_path = nginx.path("nginx-access.log");
    eventually("the access log has the websocket's line", || async {
        std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("\"GET /ws\" 101 "))
    })
    .await;
    let log = nginx.file("nginx-access.log");
    assert!(!log.contains("access_token"), "a token reached the access log:\n{log}");

    let healthz = upstreams(&log, "GET /healthz");
    assert!(healthz.len() >= 6, "{log}");
    let known: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    let every: Vec<String> = [
        "GET /healthz",
        "PUT /api/v1/locations/L1",
        "GET /ws",
        "POST /api/v1/messages/inbound",
    ]
    .iter()
    .flat_map(|r| upstreams(&log, r))
    .collect();
    for upstream in &every {
        assert!(
            known.contains(upstream.as_str()),
            "{upstream} is not a node {known:?}:\n{log}"
        );
    }
    let reached: BTreeSet<&str> = healthz.iter().map(String::as_str).collect();
    assert!(
        reached.len() >= 2,
        "/healthz through nginx reached only {reached:?}:\n{log}"
    );
}
