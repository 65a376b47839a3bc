//! Measures what presence costs running hubs: SESSIONS sessions at one location, ACTIVE of
//! them changing their presence once a second each (viewing a thread, typing in it, then
//! viewing the next), for SECONDS. Prints the presence changes sent, the presence frames
//! the sessions received per second, the hubs' CPU per change and, given Redis's PID, Redis's
//! CPU per change (cluster mode).
//!
//! ```sh
//! # One node, embedded:
//! ./target/release/switchboard serve & HUB=$!
//! cargo run --release --example presence_load -- --hub http://127.0.0.1:8080=$HUB
//! # Two nodes on PostgreSQL + Redis (see docs/cluster.md), Redis's PID for its CPU:
//! cargo run --release --example presence_load -- --hub http://127.0.0.1:8081=$A \
//!     --hub http://127.0.0.1:8082=$B --redis-pid $(pgrep -f 'redis-server.*:6390')
//! ```
//!
//! Options: `--sessions 1000 --active 50 --seconds 20 --threads 20`. Sessions are spread over
//! the hubs in turn; the directory and the threads are made through the first. Tokens are
//! signed with the development secret unless SWITCHBOARD__AUTH__HS256_SECRET is set; each
//! run uses a tenant of its own. CPU is read from `/proc/PID/task/*/schedstat` (what the
//! process's threads ran), so other load on the machine does not count against the hub.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::auth::{TokenSpec, mint_hs256};
use tokio_tungstenite::{connect_async, tungstenite::Message};

struct Options {
    hubs: Vec<(String, u32)>,
    redis_pid: Option<u32>,
    sessions: usize,
    active: usize,
    seconds: u64,
    threads: usize,
}

fn options() -> Options {
    let mut o = Options {
        hubs: Vec::new(),
        redis_pid: None,
        sessions: 1000,
        active: 50,
        seconds: 20,
        threads: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--hub" => {
                let (url, pid) = value.split_once('=').expect("--hub URL=PID");
                o.hubs
                    .push((url.trim_end_matches('/').to_owned(), pid.parse().expect("a PID")));
            }
            "--redis-pid" => o.redis_pid = Some(value.parse().expect("a PID")),
            "--sessions" => o.sessions = value.parse().expect("a number"),
            "--active" => o.active = value.parse().expect("a number"),
            "--seconds" => o.seconds = value.parse().expect("a number"),
            "--threads" => o.threads = value.parse().expect("a number"),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(!o.hubs.is_empty(), "at least one --hub URL=PID");
    assert!(o.active <= o.sessions);
    o
}

/// CPU time the threads of process `pid` have run (`/proc/PID/task/*/schedstat`).
fn cpu(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's /proc/PID/task");
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

#[tokio::main]
async fn main() {
    let o = options();
    let secret =
        std::env::var("SWITCHBOARD__AUTH__HS256_SECRET").unwrap_or_else(|_| switchboard::config::DEV_SECRET.to_owned());
    let tenant = format!("presence{}", std::process::id());
    let token = |sub: &str, roles: &[&str], locations: &[&str]| {
        mint_hs256(&secret, &TokenSpec::new(sub, &tenant, roles, locations))
    };
    let http = reqwest::Client::new();
    let base = &o.hubs[0].0;
    let svc = token("ingest", &["service"], &[]);
    let put = |path: String, body: Value| {
        let (http, svc) = (http.clone(), svc.clone());
        async move {
            let r = http.put(path).bearer_auth(svc).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "PUT: {}", r.status());
        }
    };
    put(
        format!("{base}/api/v1/locations/L1"),
        json!({"name": "Main", "sms_numbers": ["+15550001111"]}),
    )
    .await;
    for i in 0..o.active {
        put(
            format!("{base}/api/v1/users/u{i}"),
            json!({"name": format!("User {i}")}),
        )
        .await;
    }
    let mut threads = Vec::new();
    for i in 0..o.threads {
        let r = http
            .post(format!("{base}/api/v1/messages/inbound"))
            .bearer_auth(&svc)
            .json(
                &json!({"external_id": format!("pl{i}"), "from": format!("+1555300{i:04}"),
                          "to": "+15550001111", "body": "hello"}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "inbound: {}", r.status());
        let v: Value = r.json().await.unwrap();
        threads.push(v["thread"]["id"].as_str().unwrap().to_owned());
    }

    // Everyone at L1; the first ACTIVE are users u0.. who change, the rest only watch.
    let frames = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for i in 0..o.sessions {
        let (url, _) = &o.hubs[i % o.hubs.len()];
        let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
        let sub = if i < o.active { format!("u{i}") } else { format!("w{i}") };
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", token(&sub, &["user"], &["L1"])).parse().unwrap(),
        );
        let (ws, _) = connect_async(req).await.expect("a session opens");
        let (write, mut read) = ws.split();
        let counter = frames.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = read.next().await {
                if let Message::Text(t) = m
                    && t.contains("\"type\":\"presence\"")
                {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if i < o.active {
            writers.push(write);
        }
    }
    eprintln!(
        "{} sessions open on {} hub(s); {} change presence",
        o.sessions,
        o.hubs.len(),
        o.active
    );

    let changes = Arc::new(AtomicU64::new(0));
    let cpu_before: Vec<Duration> = o.hubs.iter().map(|(_, pid)| cpu(*pid)).collect();
    let redis_before = o.redis_pid.map(cpu);
    let frames_before = frames.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.seconds);
    let mut tasks = Vec::new();
    for (i, mut write) in writers.into_iter().enumerate() {
        let (threads, changes) = (threads.clone(), changes.clone());
        let stagger = Duration::from_millis(1000 * i as u64 / o.active as u64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + stagger, Duration::from_secs(1));
            let mut step = i;
            loop {
                tick.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                // viewing t, typing t, viewing t+1, typing t+1, ...
                let thread = &threads[(step / 2) % threads.len()];
                let state = if step % 2 == 0 { "viewing" } else { "typing" };
                let frame = json!({"type": "presence", "thread_id": thread, "state": state});
                write.send(Message::Text(frame.to_string().into())).await.unwrap();
                changes.fetch_add(1, Ordering::Relaxed);
                step += 1;
            }
            let idle = json!({"type": "presence", "thread_id": threads[0], "state": "idle"});
            let _ = write.send(Message::Text(idle.to_string().into())).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The last frames (coalesced by up to half a second) and Redis's refresh settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wall = started.elapsed().as_secs_f64();
    let hub_cpu: Duration = o
        .hubs
        .iter()
        .zip(&cpu_before)
        .map(|((_, pid), before)| cpu(*pid) - *before)
        .sum();
    let n = changes.load(Ordering::Relaxed) as f64;
    let received = (frames.load(Ordering::Relaxed) - frames_before) as f64;
    println!(
        "presence: {} hub(s), {} sessions, {} active, {:.0} s: {:.0} changes ({:.1}/s), {:.0} presence frames received ({:.0}/s)",
        o.hubs.len(),
        o.sessions,
        o.active,
        wall,
        n,
        n / wall,
        received,
        received / wall
    );
    println!(
        "  hub CPU {:.3} s in all: {:.0} µs per change",
        hub_cpu.as_secs_f64(),
        hub_cpu.as_secs_f64() * 1e6 / n
    );
    if let (Some(pid), Some(before)) = (o.redis_pid, redis_before) {
        let redis_cpu = cpu(pid) - before;
        println!(
            "  Redis CPU {:.3} s: {:.1} µs per change",
            redis_cpu.as_secs_f64(),
            redis_cpu.as_secs_f64() * 1e6 / n
        );
    }
}
