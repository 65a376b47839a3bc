//! Failures: Redis stopped and started under three nodes; node processes drained with
//! SIGTERM and killed with SIGKILL while events stream.

use std::{collections::HashSet, time::Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::cluster::{Cluster, Node, eventually, readyz, until_message};
use crate::helpers::{
    PATIENCE, TestApp,
    redis::{self as redis_server, RedisServer},
    ws::*,
};

/// Asks the test's Redis to write its data to disk, so that a restart finds it again.
async fn save(server: &RedisServer) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SAVE").query_async::<()>(&mut conn).await.unwrap();
}

/// Posts inbound messages (the same `external_id`, so idempotent) until one is taken with
/// 201; answers in between must be 503.
async fn inbound_once_back(app: &TestApp, external_id: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = app.inbound(external_id, F1_PHONE, L1_SMS, "after").await;
        match status {
            201 => return body,
            503 => assert!(Instant::now() < deadline, "ingestion still 503 after {PATIENCE:?}"),
            other => panic!("inbound while Redis comes back: {other} {body}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn event_ids(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| f["id"].as_str())
        .map(|id| id.parse().expect("this hub's event ids are numbers"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_down_every_node_answers_503_and_once_it_is_back_delivery_resumes() {
    let mut server = RedisServer::start();
    let cluster = Cluster::start_on(&server.url()).await;
    cluster.a().seed().await;
    let (mut sam_b, _) = open(cluster.b(), &member("sam")).await;
    inbound_ok(cluster.a(), "BEFORE", F1_PHONE).await;
    let (before, _) = until_message(&mut sam_b, "BEFORE").await;

    save(&server).await;
    server.stop();

    for node in &cluster.nodes {
        eventually("/readyz answers 503", || async { readyz(node).await == 503 }).await;
    }
    let (status, body) = cluster.a().inbound("DURING", F1_PHONE, L1_SMS, "during").await;
    assert_eq!(status, 503, "ingestion while Redis is down: {body}");
    assert_eq!(body["status"], 503, "problem+json: {body}");

    server.restart();
    let back = Instant::now();
    let posted = inbound_once_back(cluster.a(), "AFTER").await;
    let taken = back.elapsed();
    let (after, between) = until_message(&mut sam_b, "AFTER").await;
    eprintln!(
        "nodes: after Redis answered again, ingestion took a message after {taken:?} and it was delivered on another node after {:?}",
        back.elapsed()
    );
    // The session stayed open through the outage, missed nothing and got nothing twice.
    assert_eq!(after["data"]["message"]["id"], posted["message"]["id"]);
    let mut ids = event_ids(std::slice::from_ref(&before));
    ids.extend(event_ids(&between));
    ids.extend(event_ids(&[after]));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert!(
        of_type(&between, "message.new").is_empty(),
        "nothing was stored during the outage: {between:#?}"
    );
    for node in &cluster.nodes {
        eventually("/readyz answers 200", || async { readyz(node).await == 200 }).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restarted_without_its_data_closes_sessions_with_4008_and_resume_answers_resync() {
    let mut server = RedisServer::start();
    let cluster = Cluster::start_on(&server.url()).await;
    cluster.a().seed().await;
    let (mut sam_b, _) = open(cluster.b(), &member("sam")).await;
    inbound_ok(cluster.a(), "BEFORE", F1_PHONE).await;
    let (before, _) = until_message(&mut sam_b, "BEFORE").await;

    server.stop();
    server.restart();

    // The log this node delivered from is gone: the session cannot be made whole live.
    assert_eq!(sam_b.expect_close().await, Some(4008));
    eventually("/readyz answers 200", || async { readyz(cluster.c()).await == 200 }).await;
    let (mut back, _) = open(cluster.c(), &member("sam")).await;
    match resume(&mut back, before["id"].as_str().unwrap()).await {
        Resumed::Resync => {}
        Resumed::Replayed { events, .. } => panic!("the log was lost, yet it replayed {events:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_process_stopped_with_sigterm_closes_its_sessions_with_1001_exits_0_and_the_client_resumes_elsewhere() {
    let (url, prefix) = (redis_server::shared().url(), redis_server::unique_prefix());
    let a = Node::start(&url, &prefix).await;
    let mut b = Node::start(&url, &prefix).await;
    a.seed().await;
    let sam = member("sam");
    let (mut ws, _) = b.ws(&sam).await;
    let (status, body) = a.inbound("SM1").await;
    assert_eq!(status, 201, "{body}");
    let (seen, _) = until_message(&mut ws, "SM1").await;

    b.signal(Signal::SIGTERM);

    assert_eq!(ws.expect_close().await, Some(1001));
    let status = b.exited().await;
    assert_eq!(status.code(), Some(0), "{status}");
    let (status, body) = a.inbound("SM2").await;
    assert_eq!(status, 201, "{body}");
    let (mut back, _) = a.ws(&sam).await;
    let replayed = replay(&mut back, seen["id"].as_str().unwrap()).await;
    let missed: Vec<&Value> = of_type(&replayed, "message.new")
        .into_iter()
        .map(|f| &f["data"]["message"]["external_id"])
        .collect();
    assert_eq!(missed, vec!["SM2"], "{replayed:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_whose_node_is_killed_mid_stream_resumes_on_another_with_every_event_exactly_once() {
    const MESSAGES: usize = 40;
    let (url, prefix) = (redis_server::shared().url(), redis_server::unique_prefix());
    let a = Node::start(&url, &prefix).await;
    let mut b = Node::start(&url, &prefix).await;
    let c = Node::start(&url, &prefix).await;
    a.seed().await;
    let sam = member("sam");
    let (mut witness, _) = c.ws(&sam).await;
    let (mut ws, _) = b.ws(&sam).await;

    let ingest = async {
        for i in 0..MESSAGES {
            let (status, body) = a.inbound(&format!("SM{i}")).await;
            assert_eq!(status, 201, "{body}");
        }
    };
    let client = async {
        // The client reconnects to another node resuming in the handshake from the newest id it
        // processed: the replay precedes every live event, so nothing may come twice or late.
        let mut got: Vec<Value> = Vec::new();
        let mut seen = HashSet::new();
        let (mut duplicates, mut reordered, mut newest_id) = (0, 0, 0u64);
        let mut take = |f: Value, got: &mut Vec<Value>| {
            if let Some(id) = f["id"].as_str() {
                if !seen.insert(id.to_owned()) {
                    duplicates += 1;
                    return;
                }
                let n = event_ids(std::slice::from_ref(&f))[0];
                if n < newest_id {
                    reordered += 1;
                }
                newest_id = newest_id.max(n);
                got.push(f);
            }
        };
        while of_type(&got, "message.new").len() < 10 {
            let f = ws.next_json().await;
            take(f, &mut got);
        }
        b.sigkill().await;
        let last = got.last().unwrap()["id"].as_str().unwrap().to_owned();
        assert!(
            of_type(&got, "message.new").len() < MESSAGES,
            "the node was killed mid-stream"
        );

        let url = format!("{}&last_event_id={last}", query_url(&c.ws_url, &sam));
        let (mut back, _) = try_open(request(&url, None, None))
            .await
            .expect("the handshake is accepted");
        match resume_answer(&mut back).await {
            Resumed::Replayed { events, .. } => {
                for f in events {
                    take(f, &mut got);
                }
            }
            Resumed::Resync => panic!("the log reaches back to {last}"),
        }
        let newest = format!("SM{}", MESSAGES - 1);
        while !of_type(&got, "message.new")
            .iter()
            .any(|f| f["data"]["message"]["external_id"] == newest.as_str())
        {
            let f = back.next_json().await;
            take(f, &mut got);
        }
        (got, duplicates, reordered)
    };
    let ((), (mut got, duplicates, reordered)) = tokio::join!(ingest, client);
    assert_eq!(
        (duplicates, reordered),
        (0, 0),
        "no event twice, none after a newer one"
    );
    got.sort_by_key(|f| event_ids(std::slice::from_ref(f))[0]);

    let external: Vec<String> = of_type(&got, "message.new")
        .iter()
        .map(|f| f["data"]["message"]["external_id"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..MESSAGES).map(|i| format!("SM{i}")).collect();
    assert_eq!(external, want, "every message once, in order");
    // And every other event too: the same as a session that never moved.
    let first = got[0]["id"].clone();
    let newest = got.last().unwrap()["id"].clone();
    let mut reference = Vec::new();
    for _ in 0..10_000 {
        let f = witness.next_json().await;
        if f["id"] == first || !reference.is_empty() {
            reference.push(f.clone());
        }
        if f["id"] == newest {
            break;
        }
    }
    assert_same_events(&got, &reference, "after failover, against a session that never moved");
}
