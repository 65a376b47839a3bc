//! Operations: health and readiness, Prometheus metrics, the static client, the `token`
//! and `serve` commands, and configuration overrides from the environment.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Output, Stdio},
};

use reqwest::Method;
use serde_json::{Value, json};
use switchboard::auth::now_secs;

use crate::helpers::http::*;
use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A command with no `SWITCHBOARD__*` variable inherited from the test's environment.
fn clean_command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHBOARD__") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG").current_dir(dir);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `switchboard token ...` with `secret` (if any) in SWITCHBOARD__AUTH__HS256_SECRET.
fn cli_token(secret: Option<&str>, dir: &Path) -> String {
    let mut cmd = clean_command(BIN, dir);
    cmd.args([
        "token",
        "--sub",
        "cli-user",
        "--tenant",
        "initech",
        "--roles",
        "user",
        "--locations",
        "L1,L2",
        "--ttl",
        "1h",
    ]);
    if let Some(s) = secret {
        cmd.env("SWITCHBOARD__AUTH__HS256_SECRET", s);
    }
    let out = run(&mut cmd);
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "the command prints one JWT: {token:?}");
    token
}

/// A child process killed when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `GET /healthz` on `port` until it answers 200 (readiness wait for a child process
/// whose log format is not part of the contract).
async fn await_healthy(port: u16, child: &mut Running) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let wait = async {
        loop {
            if let Ok(r) = client.get(&url).send().await {
                assert_eq!(r.status(), 200, "healthz on the configured port");
                return;
            }
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("switchboard serve exited early with {status}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the served hub answers /healthz in time");
}

// ---------------------------------------------------------------------------------------
// Health, readiness, metrics, static client

#[tokio::test]
async fn healthz_answers_200_without_a_token() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn readyz_answers_200_while_storage_and_bus_answer() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn metrics_are_prometheus_text_naming_sessions_events_deliveries_drops_and_ingestion_latency() {
    let app = spawn_app().await;
    app.seed().await;
    let mut ws = app.ws(&user_token("sam", &["L1"])).await;
    ingest(&app, "SM1", CUSTOMER).await;
    ws.next_of_type("message.new").await;

    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("text/plain"), "Prometheus text exposition, got {ct:?}");
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE "), "{text}");

    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next().map(str::to_owned),
            None if !l.starts_with('#') && !l.trim().is_empty() => l.split(['{', ' ']).next().map(str::to_owned),
            None => None,
        })
        .filter(|n| n.starts_with("switchboard_"))
        .collect();
    assert!(!names.is_empty(), "metrics are named switchboard_*: {text}");
    let has = |parts: &[&str]| names.iter().any(|n| parts.iter().all(|p| n.contains(p)));
    assert!(has(&["session"]), "a sessions metric: {names:?}");
    assert!(has(&["event"]), "an events metric: {names:?}");
    assert!(has(&["deliver"]), "a deliveries metric: {names:?}");
    assert!(
        has(&["overflow"]) || has(&["drop"]),
        "a queue overflow/drop metric: {names:?}"
    );
    assert!(
        has(&["ingest", "seconds"]) || has(&["ingest", "latency"]) || has(&["ingest", "duration"]),
        "an ingestion latency metric: {names:?}"
    );
}

#[tokio::test]
async fn the_message_center_client_is_served_at_the_root_without_a_token() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("text/html"), "the web client's page, got {ct:?}");
}

/// One header of `r` as text ("" when absent).
fn header_of(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_hub_started_in_another_directory_serves_its_built_in_page_with_cache_validators_and_plain_logs() {
    // A working directory with no static/ in it: the files come from the binary.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("hub.log");
    let mut cmd = clean_command(BIN, dir.path());
    cmd.arg("serve")
        .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD__STORAGE__PATH", dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = Running(cmd.spawn().expect("switchboard serve starts"));
    await_healthy(port, &mut child).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");

    let page = client.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(header_of(&page, "content-type"), "text/html; charset=utf-8");
    assert!(header_of(&page, "content-security-policy").contains("default-src 'none'"));
    assert!(page.text().await.unwrap().contains("<title>Message Center"));

    for (path, kind) in [
        ("/message-center.js", "javascript"),
        ("/switchboard-client.js", "javascript"),
        ("/message-center.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = client.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header_of(&r, "content-type").contains(kind),
            "{path}: {:?}",
            r.headers()
        );
        assert_eq!(
            header_of(&r, "cache-control"),
            "no-cache",
            "{path}: revalidated, never stale"
        );
        let etag = header_of(&r, "etag");
        assert!(
            etag.len() > 8 && etag.starts_with('"'),
            "{path}: a strong ETag, got {etag:?}"
        );
        let modified = header_of(&r, "last-modified");
        assert!(modified.ends_with(" GMT"), "{path}: Last-Modified, got {modified:?}");
        let body = r.bytes().await.unwrap();
        assert!(!body.is_empty());

        // The browser's copy is current: 304 with no body, still under the page's policy.
        let again = client
            .get(url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(header_of(&again, "etag"), etag);
        assert!(header_of(&again, "content-security-policy").contains("default-src 'none'"));
        assert!(again.bytes().await.unwrap().is_empty());
        let since = client
            .get(url(path))
            .header("If-Modified-Since", &modified)
            .send()
            .await
            .unwrap();
        assert_eq!(since.status(), 304, "{path} by date");

        // Another copy is not.
        let stale = client
            .get(url(path))
            .header("If-None-Match", "\"0123\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200, "{path}");
        assert_eq!(stale.bytes().await.unwrap(), body);
    }
    let missing = client.get(url("/no-such-file.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(header_of(&missing, "content-type"), "application/problem+json");

    // Its log, written to a file, is plain text: no colour codes.
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("switchboard listening"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI escapes in a log file: {text:?}");
}

#[tokio::test]
async fn server_static_dir_serves_a_folder_as_it_is_now_for_development() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("index.html"), "<title>work in progress</title>").unwrap();
    let path = folder.path().to_path_buf();
    let app = spawn_app_with(|s| s.server.static_dir = path).await;
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header_of(&r, "content-security-policy").contains("default-src 'none'"));
    assert_eq!(r.text().await.unwrap(), "<title>work in progress</title>");
    std::fs::write(folder.path().join("index.html"), "<title>edited</title>").unwrap();
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "<title>edited</title>",
        "no rebuild, no restart"
    );
    let r = app.client.get(app.url("/message-center.js")).send().await.unwrap();
    assert_eq!(r.status(), 404, "only the folder's files");
}

#[test]
fn token_help_describes_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(clean_command(BIN, dir.path()).args(["token", "--help"]));
    let help = String::from_utf8(out.stdout).unwrap();
    let flags = [
        "--sub",
        "--tenant",
        "--roles",
        "--locations",
        "--name",
        "--ttl",
        "--config",
    ];
    for flag in flags {
        let start = help
            .find(&format!("  {flag} "))
            .unwrap_or_else(|| panic!("{flag} in {help}"));
        let rest = &help[start + flag.len() + 2..];
        let end = rest.find("\n  -").unwrap_or(rest.len());
        let words = rest[..end]
            .split_whitespace()
            .skip(1) // the value's name, <SUB>
            .filter(|w| w.chars().any(char::is_alphabetic))
            .count();
        assert!(words >= 3, "{flag} has a description: {:?}", &rest[..end]);
    }
}

// ---------------------------------------------------------------------------------------
// switchboard token

#[tokio::test]
async fn the_token_command_prints_a_token_the_hub_accepts_when_both_share_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "cli-shared-secret";
    let app = spawn_app_with(|s| s.auth.hs256_secret = secret.into()).await;
    let token = cli_token(Some(secret), dir.path());

    let me = get_ok(&app, "/api/v1/me", &token).await;
    assert_eq!(me["user_id"], "cli-user");
    assert_eq!(me["tenant"], "initech");
    assert_eq!(me["locations"], json!(["L1", "L2"]));

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .expect("signed with the configured secret")
    .claims;
    assert_eq!(claims["roles"], json!(["user"]));
    let exp = claims["exp"].as_u64().expect("exp");
    let now = now_secs();
    assert!(exp > now + 3500 && exp <= now + 3700, "--ttl 1h: exp {exp}, now {now}");
}

#[tokio::test]
async fn a_token_printed_with_another_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|s| s.auth.hs256_secret = "cli-shared-secret".into()).await;
    let token = cli_token(None, dir.path());
    problem(app.get("/api/v1/me", &token).await, 401).await;
    let token = cli_token(Some("some-other-secret"), dir.path());
    problem(app.get("/api/v1/me", &token).await, 401).await;
}

// ---------------------------------------------------------------------------------------
// Configuration: SWITCHBOARD__SECTION__KEY

/// Run only as a child process (see below): prints what `Settings::load(None)` read.
#[test]
#[ignore = "a probe run in a child process by environment_variables_override_the_built_in_settings"]
fn settings_probe() {
    let s = switchboard::config::Settings::load(None).expect("settings load");
    println!(
        "PROBE {}",
        json!({"key_prefix": s.redis.key_prefix, "replay_limit": s.ws.replay_limit,
               "allowed_origins": s.server.allowed_origins, "issuer": s.auth.issuer,
               "trusted_proxies": s.server.trusted_proxies})
    );
}

fn probe(vars: &[(&str, &str)]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = clean_command(std::env::current_exe().unwrap(), dir.path());
    cmd.args([
        "--exact",
        "operations::settings_probe",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("PROBE ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("the probe ran: {stdout}"));
    serde_json::from_str(&line).expect("probe output is JSON")
}

#[tokio::test]
async fn environment_variables_override_the_built_in_settings() {
    let plain = probe(&[]);
    assert_eq!(plain["key_prefix"], "switchboard");
    assert_eq!(plain["replay_limit"], 10000);
    assert_eq!(plain["allowed_origins"], json!([]));
    assert_eq!(plain["trusted_proxies"], json!([]));
    assert_eq!(plain["issuer"], "");

    let over = probe(&[
        ("SWITCHBOARD__REDIS__KEY_PREFIX", "probe-prefix"),
        ("SWITCHBOARD__WS__REPLAY_LIMIT", "77"),
        (
            "SWITCHBOARD__SERVER__ALLOWED_ORIGINS",
            "https://a.example,https://b.example",
        ),
        ("SWITCHBOARD__AUTH__ISSUER", "https://id.example"),
        ("SWITCHBOARD__SERVER__TRUSTED_PROXIES", "10.0.0.5,10.1.0.0/16"),
    ]);
    assert_eq!(over["trusted_proxies"], json!(["10.0.0.5", "10.1.0.0/16"]));
    assert_eq!(over["key_prefix"], "probe-prefix");
    assert_eq!(over["replay_limit"], 77);
    assert_eq!(
        over["allowed_origins"],
        json!(["https://a.example", "https://b.example"])
    );
    assert_eq!(over["issuer"], "https://id.example");
}

#[tokio::test]
async fn serve_listens_where_the_environment_says() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = clean_command(BIN, dir.path());
    cmd.arg("serve")
        .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD__STORAGE__PATH", dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Running(cmd.spawn().expect("switchboard serve starts"));
    await_healthy(port, &mut child).await;
}

/// `switchboard serve` with `vars` set; it must stop at start: returns what it wrote.
fn serve_refused(vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = clean_command(BIN, dir.path());
    cmd.arg("serve")
        .env("SWITCHBOARD__SERVER__BIND", "127.0.0.1:0")
        .env("SWITCHBOARD__STORAGE__PATH", dir.path().join("data"))
        // Nothing answers here: the refusal must come before any connection is tried.
        .env("SWITCHBOARD__REDIS__URL", "redis://127.0.0.1:1")
        .env("SWITCHBOARD__POSTGRES__URL", "postgres://postgres@127.0.0.1:1/none")
        .envs(vars.iter().copied());
    let out = cmd.output().expect("switchboard runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "serve with {vars:?} must stop: {stderr}");
    stderr
}

#[test]
fn serve_stops_at_start_on_the_retired_redis_store_or_an_invalid_backend_pair_naming_what_to_use() {
    for bus in ["redis", "local"] {
        let said = serve_refused(&[
            ("SWITCHBOARD__STORAGE__BACKEND", "redis"),
            ("SWITCHBOARD__BUS__BACKEND", bus),
        ]);
        assert!(
            said.contains(r#"storage.backend = "redis" is retired"#)
                && said.contains(r#"storage.backend = "postgres""#)
                && said.contains(r#"bus.backend = "redis""#),
            "bus {bus}: {said}"
        );
    }
    let said = serve_refused(&[
        ("SWITCHBOARD__STORAGE__BACKEND", "embedded"),
        ("SWITCHBOARD__BUS__BACKEND", "redis"),
    ]);
    assert!(
        said.contains(r#"needs bus.backend = "local""#) && said.contains(r#"storage.backend = "postgres""#),
        "{said}"
    );
    // The same from a configuration file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        "[storage]\nbackend = \"redis\"\n\n[bus]\nbackend = \"redis\"\n",
    )
    .unwrap();
    let out = clean_command(BIN, dir.path())
        .args(["serve", "--config"])
        .arg(&config)
        .env("SWITCHBOARD__SERVER__BIND", "127.0.0.1:0")
        .output()
        .expect("switchboard runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("is retired"), "{said}");
    // And in-process: `Application::build` refuses it too.
    let mut settings = test_settings(dir.path());
    settings.storage.backend = switchboard::config::StorageBackend::Redis;
    settings.bus.backend = switchboard::config::BusBackend::Redis;
    let refused = switchboard::startup::check_backends(&settings).unwrap_err();
    assert!(refused.to_string().contains("is retired"), "{refused}");
}

#[tokio::test]
async fn serve_reads_a_config_file_and_the_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
    };
    let secret = "file-secret";
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{file_port}\"\n\n[auth]\nhs256_secret = \"{secret}\"\n\n[storage]\npath = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = clean_command(BIN, dir.path());
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{env_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Running(cmd.spawn().expect("switchboard serve starts"));
    await_healthy(env_port, &mut child).await;

    // The file's secret is in force (nothing overrode it).
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let me = |tok: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{env_port}/api/v1/me"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let spec = switchboard::auth::TokenSpec::new("olga", TENANT, &["user"], &["L1"]);
    assert_eq!(me(switchboard::auth::mint_hs256(secret, &spec)).await, 200);
    assert_eq!(me(switchboard::auth::mint_hs256(SECRET, &spec)).await, 401);
}

#[tokio::test]
async fn tokens_never_reach_a_log_line_even_at_debug_level() {
    use futures_util::StreamExt;
    use nix::{sys::signal::Signal, unistd::Pid};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log_path = dir.path().join("hub.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = clean_command(BIN, dir.path());
    cmd.arg("serve")
        .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD__STORAGE__PATH", dir.path().join("data"))
        .env("SWITCHBOARD__AUTH__HS256_SECRET", SECRET)
        .env("SWITCHBOARD__LOG__FILTER", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = Running(cmd.spawn().expect("switchboard serve starts"));
    await_healthy(port, &mut child).await;

    let sam = user_token("sam", &["L1"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?access_token={sam}"))
        .await
        .expect("handshake with the token in the query string");
    let hello = ws.next().await.expect("hello").expect("hello frame");
    assert!(hello.to_text().unwrap().contains("\"hello\""));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let me = client
        .get(format!("http://127.0.0.1:{port}/api/v1/me"))
        .bearer_auth(&sam)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let forged = format!("{sam}x");
    let refused = client
        .get(format!("http://127.0.0.1:{port}/api/v1/me?access_token={forged}"))
        .bearer_auth(&forged);
    assert_eq!(refused.send().await.unwrap().status(), 401);
    drop((ws, client));

    nix::sys::signal::kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "a SIGTERM ends the hub cleanly: {status}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("/ws") && text.contains("/api/v1/me"),
        "the requests were logged:\n{text}"
    );
    let signature = sam.rsplit('.').next().unwrap();
    assert!(
        !text.contains(signature),
        "a token's signature reached the log:\n{text}"
    );
    assert!(
        !text.contains("access_token"),
        "the query string reached the log:\n{text}"
    );
}

#[tokio::test]
async fn the_dev_sign_in_is_absent_unless_the_hub_runs_on_the_development_secret() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/api/v1/dev/token"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let body = json!({"sub": "sam", "tenant": "acme", "roles": ["admin"], "locations": ["L1"]});
    let r = app
        .client
        .post(app.url("/api/v1/dev/token"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no token minted with someone else's secret");
}

#[tokio::test]
async fn on_the_development_secret_on_loopback_the_dev_sign_in_mints_a_working_token() {
    let app = spawn_app_with(|s| s.auth.hs256_secret = switchboard::config::DEV_SECRET.into()).await;
    let offered = app.client.get(app.url("/api/v1/dev/token")).send().await.unwrap();
    assert_eq!(offered.status(), 200);
    let body = json!({"sub": "sam", "tenant": "acme", "roles": ["user"], "locations": ["L1", "L2"], "name": "Sam"});
    let r = app
        .client
        .post(app.url("/api/v1/dev/token"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let minted: Value = r.json().await.unwrap();
    let token = minted["token"].as_str().expect("a token");
    let me = get_ok(&app, "/api/v1/me", token).await;
    assert_eq!(me["user_id"], "sam");
    assert_eq!(me["locations"], json!(["L1", "L2"]));
    let bad = json!({"sub": "sam", "tenant": "acme", "roles": ["root"], "locations": []});
    let (status, problem) = send(&app, Method::POST, "/api/v1/dev/token", None, Some(bad)).await;
    assert_invalid(status, &problem, "roles");
}

#[tokio::test]
async fn every_http_response_is_counted_by_its_status_class() {
    let app = spawn_app().await;
    let before = ws::metric_total(&app, "http_responses_total{class=\"4xx\"}").await;
    let r = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.client.get(app.url("/api/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let after = ws::metric_total(&app, "http_responses_total{class=\"4xx\"}").await;
    assert_eq!(after - before, 2.0, "the 401 and the 404");
    assert!(
        ws::metric_total(&app, "http_responses_total{class=\"2xx\"}").await >= 1.0,
        "the metrics reads"
    );
}

#[tokio::test]
async fn the_openapi_description_lists_exactly_the_routes_the_hub_serves() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200, "no token needed");
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (path.clone(), m.to_ascii_uppercase()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = switchboard::routes::served()
        .into_iter()
        .flat_map(|(path, methods)| methods.into_iter().map(move |m| (path.clone(), m)))
        .collect();
    assert_eq!(documented, served, "documented vs served");
    // Every reference resolves to a schema of the document.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let name = reference
            .split('"')
            .next()
            .unwrap()
            .trim_start_matches("#/components/schemas/");
        assert!(doc["components"]["schemas"][name].is_object(), "unresolved {name}");
    }
}
