//! Measures a running hub: the time from an inbound POST to its `message.new` frame on a
//! connected client, and ingestion requests per second.
//!
//! ```sh
//! taskset -c 0 ./target/release/switchboard serve &        # server on core 0
//! taskset -c 1 cargo run --release --example ingest_probe -- http://127.0.0.1:8080 1000 8 10
//! ```
//! Arguments: base URL, messages for the latency phase, concurrent posters and seconds for
//! the throughput phase, and optionally another node's base URL for the websocket (cluster
//! mode: POST on one node, frame on another). It uses the development secret unless SWITCHBOARD__AUTH__HS256_SECRET
//! is set, and a fresh tenant per run.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchboard::auth::{TokenSpec, mint_hs256};
use tokio_tungstenite::{connect_async, tungstenite::Message};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let posters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let seconds: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10);
    let ws_base = args.get(5).cloned().unwrap_or_else(|| base.clone());
    let secret =
        std::env::var("SWITCHBOARD__AUTH__HS256_SECRET").unwrap_or_else(|_| switchboard::config::DEV_SECRET.into());
    let tenant = format!("probe{}", std::process::id());
    let svc = mint_hs256(&secret, &TokenSpec::new("ingest", &tenant, &["service"], &[]));
    let sam = mint_hs256(&secret, &TokenSpec::new("sam", &tenant, &["user"], &["L1"]));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = format!("{base}/api/v1");
    let put = |path: String, body: Value| {
        let (http, svc) = (http.clone(), svc.clone());
        async move {
            assert!(
                http.put(path)
                    .bearer_auth(svc)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .is_success()
            )
        }
    };
    put(
        format!("{api}/locations/L1"),
        json!({"name": "L1", "sms_numbers": ["+15550001111"]}),
    )
    .await;
    put(format!("{api}/folders/F1"), json!({"name": "F1", "location_id": "L1", "phone_numbers": ["+15551234567"], "sales_resource_id": "sam", "service_resource_id": null})).await;

    let ws_url = format!("{}/ws?access_token={sam}", ws_base.replacen("http", "ws", 1));
    let (mut ws, _) = connect_async(ws_url).await.expect("websocket");
    ws.next().await.expect("hello").unwrap();

    // Latency: one message at a time, POST sent -> message.new received.
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for i in 0..n {
        let body =
            json!({"external_id": format!("lat-{i}"), "from": "+15551234567", "to": "+15550001111", "body": "probe"});
        let sent = Instant::now();
        let post = http
            .post(format!("{api}/messages/inbound"))
            .bearer_auth(&svc)
            .json(&body)
            .send();
        let frame = async {
            loop {
                if let Some(Ok(Message::Text(t))) = ws.next().await {
                    if t.contains("\"message.new\"") {
                        return sent.elapsed();
                    }
                }
            }
        };
        let (res, took) = tokio::join!(post, frame);
        assert_eq!(res.unwrap().status(), 201);
        latency.record(took.as_micros() as u64).unwrap();
    }
    println!(
        "latency POST->frame over {n} messages: median {} us, p99 {} us, max {} us",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.max()
    );
    drop(ws);

    // Throughput: `posters` concurrent posters for `seconds`, distinct customers.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..posters)
        .map(|p| {
            let (http, svc, api) = (http.clone(), svc.clone(), api.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let body = json!({"external_id": format!("tp-{p}-{done}"), "from": format!("+1555200{:04}", done % 10_000), "to": "+15550001111", "body": "probe"});
                    let r = http.post(format!("{api}/messages/inbound")).bearer_auth(&svc).json(&body).send().await.unwrap();
                    assert_eq!(r.status(), 201);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingestion: {total} requests in {secs:.1} s with {posters} posters = {:.0} req/s",
        total as f64 / secs
    );
}
