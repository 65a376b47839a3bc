//! Measures what two hostile clients cost a running hub: a session flooding `resume` frames,
//! and a session that never reads while large messages arrive for it.
//!
//! ```sh
//! ./target/release/switchboard serve & HUB=$!
//! cargo run --release --example abuse_probe -- resume-flood http://127.0.0.1:8080 $HUB 2000 1000
//! cargo run --release --example abuse_probe -- stuck-reader http://127.0.0.1:8080 $HUB 600 51200
//! ```
//!
//! - `resume-flood URL PID EVENTS FRAMES`: logs EVENTS events in a fresh tenant (an inbound
//!   message is two), then one session granted a location without any thread (outside every
//!   audience) sends FRAMES `{"type":"resume","last_event_id":"0"}` frames back to back and
//!   reads until each has been answered (`resumed`, `resync` or an error frame). Prints the
//!   CPU time the hub's threads ran over the attack (`/proc/PID/task/*/schedstat`) and the
//!   answers.
//! - `stuck-reader URL PID MESSAGES BYTES`: posts MESSAGES messages with a BYTES-long body for
//!   a warm-up without any session, then opens a subscribe-all session over a socket with a
//!   small receive buffer that never reads, and posts MESSAGES more. Prints the hub's RSS
//!   (`/proc/PID/status` VmRSS) before and after the stuck session's messages, and whether
//!   the hub closed it (`switchboard_queue_overflows_total`).
//!
//! It signs tokens with the development secret unless SWITCHBOARD__AUTH__HS256_SECRET is set.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::auth::{TokenSpec, mint_hs256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::{connect_async, tungstenite::Message};

struct Hub {
    base: String,
    pid: u32,
    secret: String,
    tenant: String,
    http: reqwest::Client,
}

impl Hub {
    fn token(&self, sub: &str, roles: &[&str], locations: &[&str]) -> String {
        mint_hs256(&self.secret, &TokenSpec::new(sub, &self.tenant, roles, locations))
    }

    async fn put(&self, path: &str, body: Value) {
        let r = self
            .http
            .put(format!("{}/api/v1{path}", self.base))
            .bearer_auth(self.token("ingest", &["service"], &[]))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    }

    /// Posts `n` inbound messages with `body`, eight at a time.
    async fn ingest(&self, n: usize, body: &str, tag: &str) {
        let svc = self.token("ingest", &["service"], &[]);
        let posters: Vec<_> = (0..8)
            .map(|p| {
                let (http, svc, base, body, tag) = (
                    self.http.clone(),
                    svc.clone(),
                    self.base.clone(),
                    body.to_owned(),
                    tag.to_owned(),
                );
                tokio::spawn(async move {
                    for i in (p..n).step_by(8) {
                        let msg = json!({"external_id": format!("{tag}-{i}"), "from": "+15557770000",
                                         "to": "+15550001111", "body": body});
                        let r = http
                            .post(format!("{base}/api/v1/messages/inbound"))
                            .bearer_auth(&svc)
                            .json(&msg)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 201, "inbound {tag}-{i}");
                    }
                })
            })
            .collect();
        for p in posters {
            p.await.unwrap();
        }
    }

    fn ws_url(&self, token: &str) -> String {
        format!("{}/ws?access_token={token}", self.base.replacen("http", "ws", 1))
    }

    /// The CPU time the hub's threads have run so far, to the nanosecond: the sum of the
    /// first field of each thread's `/proc/PID/task/TID/schedstat` (`/proc/PID/stat` counts
    /// in 10 ms ticks, too coarse for a cheap attack).
    fn cpu(&self) -> Duration {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).expect("the hub's /proc/PID/task");
        let ns: u64 = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(ns)
    }

    /// The hub's resident set, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

async fn resume_flood(hub: &Hub, events: usize, frames: usize) {
    hub.put("/locations/L1", json!({"name": "L1", "sms_numbers": ["+15550001111"]}))
        .await;
    hub.ingest(events / 2, "probe", "flood").await;
    let (mut ws, _) = connect_async(hub.ws_url(&hub.token("mallory", &["user"], &["L9"])))
        .await
        .expect("websocket");
    ws.next().await.expect("hello").unwrap();

    let before = hub.cpu();
    let started = Instant::now();
    let frame = r#"{"type":"resume","last_event_id":"0"}"#;
    let (mut tx, mut rx) = ws.split();
    let send = tokio::spawn(async move {
        for _ in 0..frames {
            tx.send(Message::Text(frame.into())).await.unwrap();
        }
        tx
    });
    let mut answers: std::collections::BTreeMap<String, usize> = Default::default();
    let mut answered = 0;
    while answered < frames {
        let Some(Ok(Message::Text(t))) = rx.next().await else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        let kind = match v["type"].as_str() {
            Some("error") => format!("error {}", v["code"].as_str().unwrap_or("?")),
            Some(k @ ("resumed" | "resync")) => k.to_owned(),
            _ => continue,
        };
        *answers.entry(kind).or_default() += 1;
        answered += 1;
    }
    let _tx = send.await.unwrap();
    let cpu = hub.cpu() - before;
    println!(
        "resume-flood: {events} events logged, {frames} resume frames answered in {:.3} s; hub CPU {:.1} ms; answers {answers:?}",
        started.elapsed().as_secs_f64(),
        cpu.as_secs_f64() * 1000.0
    );
}

async fn stuck_reader(hub: &Hub, messages: usize, bytes: usize) {
    hub.put("/locations/L1", json!({"name": "L1", "sms_numbers": ["+15550001111"]}))
        .await;
    let body = "x".repeat(bytes);
    // Warm-up: the same traffic without the stuck session, so storage caches and allocator
    // pools are as large as they get before the measurement.
    hub.ingest(messages, &body, "warm").await;
    let olga = hub.token("olga", &["user"], &["L1"]);
    let r = hub
        .http
        .put(format!("{}/api/v1/me/subscriptions", hub.base))
        .bearer_auth(&olga)
        .json(&json!({"subscribe_all": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let overflows = hub.metric("switchboard_queue_overflows_total").await;
    let rss_before = hub.rss_kib();

    // A websocket client that completes the handshake and never reads again.
    let addr = hub.base.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /ws?access_token={olga} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 1024];
    let n = stream.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 101"), "upgraded");

    hub.ingest(messages, &body, "stuck").await;
    let rss_after = hub.rss_kib();
    let closed = hub.metric("switchboard_queue_overflows_total").await > overflows;
    println!(
        "stuck-reader: {messages} messages of {bytes} B for a session that never reads: hub RSS {rss_before} KiB -> \
         {rss_after} KiB ({:+} KiB); closed as too slow: {closed}",
        rss_after as i64 - rss_before as i64
    );
    drop(stream);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<usize>().expect("a number");
    let hub = Hub {
        base: arg(2),
        pid: arg(3).parse().expect("the hub's PID"),
        secret: std::env::var("SWITCHBOARD__AUTH__HS256_SECRET")
            .unwrap_or_else(|_| switchboard::config::DEV_SECRET.into()),
        tenant: format!("probe{}", std::process::id()),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    };
    match arg(1).as_str() {
        "resume-flood" => resume_flood(&hub, num(4), num(5)).await,
        "stuck-reader" => stuck_reader(&hub, num(4), num(5)).await,
        other => panic!("unknown scenario {other:?}: resume-flood or stuck-reader"),
    }
}
