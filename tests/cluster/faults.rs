//! Failures under three nodes on PostgreSQL + the Redis bus: Redis stopped and started
//! (writes go on, sessions get their events from PostgreSQL), PostgreSQL stopped and started
//! on a private server (503s, sessions stay open and catch up), node processes drained with
//! SIGTERM, killed with SIGKILL while events stream, and aborted between a commit and its
//! publish (the `abort-before-publish` failpoint of `bus::relay`). The SIGTERM and SIGKILL
//! scenarios run on a single Redis and on a Redis Cluster.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::cluster::{Cluster, Deployment, Node, Redis, eventually, until_message};
use crate::helpers::{PATIENCE, TestApp, Ws, pg_server::PgServer, redis::RedisServer, service_token, ws::*};

crate::on_both_buses!(
    a_node_process_stopped_with_sigterm_closes_its_sessions_with_1001_exits_0_and_the_client_resumes_elsewhere,
    a_client_whose_node_is_killed_mid_stream_resumes_on_another_with_every_event_exactly_once,
);

/// How soon an event must reach a session when its publish never comes (Redis is down, or
/// the writer died before publishing): the bus's head check reads PostgreSQL about every
/// 300 ms and catches up a tenant whose head stayed ahead (docs/cluster.md: "within a
/// second").
const FROM_THE_LOG: Duration = Duration::from_secs(1);

/// `/readyz` of `app`: its status and JSON report.
async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = app
        .client
        .get(app.url("/readyz"))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("GET /readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
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
            other => panic!("inbound while PostgreSQL comes back: {other} {body}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event_ids(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| f["id"].as_str())
        .map(|id| id.parse().expect("this hub's event ids are numbers"))
        .collect()
}

fn external_ids(frames: &[Value]) -> Vec<String> {
    of_type(frames, "message.new")
        .iter()
        .map(|f| f["data"]["message"]["external_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads `ws` until the `message.new` of `external_id`; returns every frame up to it and how
/// long that took.
async fn timed_until(ws: &mut Ws, external_id: &str) -> (Vec<Value>, Duration) {
    let started = Instant::now();
    let (frame, mut before) = until_message(ws, external_id).await;
    let took = started.elapsed();
    before.push(frame);
    (before, took)
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_down_writes_commit_and_sessions_get_events_from_postgres_and_once_back_nothing_is_lost_or_repeated()
 {
    let mut redis = RedisServer::start();
    let cluster = Cluster::on(Redis::Single(redis.url())).await;
    cluster.a().seed().await;
    let (mut sam_b, _) = open(cluster.b(), &member("sam")).await;
    let (mut sue_c, _) = open(cluster.c(), &member("sue")).await;
    inbound_ok(cluster.a(), "BEFORE", F1_PHONE).await;
    let mut frames_b = vec![until_message(&mut sam_b, "BEFORE").await.0];
    let mut frames_c = vec![until_message(&mut sue_c, "BEFORE").await.0];
    let mut posted = vec!["BEFORE".to_owned()];

    redis.stop();

    for node in &cluster.nodes {
        eventually("/readyz reports the bus down and stays 200", || async {
            let (status, report) = readyz(node).await;
            assert_eq!(status, 200, "PostgreSQL answers: ready: {report}");
            report["bus"] == "unavailable"
        })
        .await;
        let (_, report) = readyz(node).await;
        assert_eq!(report["storage"], "ok", "{report}");
        assert_eq!(report["live_events"], "from the log, within a second", "{report}");
    }
    let mut slowest = Duration::ZERO;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let id = format!("DURING{i}");
        // Every node takes writes: they commit to PostgreSQL.
        inbound_ok(node, &id, F1_PHONE).await;
        let (frames, took) = timed_until(&mut sam_b, &id).await;
        frames_b.extend(frames);
        let (frames, took_c) = timed_until(&mut sue_c, &id).await;
        frames_c.extend(frames);
        slowest = slowest.max(took).max(took_c);
        posted.push(id);
    }
    eprintln!("faults: with Redis down, the slowest delivery from PostgreSQL took {slowest:?}");
    assert!(
        slowest < FROM_THE_LOG,
        "events come from PostgreSQL within a second: {slowest:?}"
    );

    // Back: writes go on while the nodes reconnect, so some commits straddle it.
    redis.restart();
    let mut i = 0;
    let mut live_since = None;
    while live_since.is_none_or(|n| i < n + 3) {
        let node = &cluster.nodes[i % 3];
        let id = format!("AFTER{i}");
        inbound_ok(node, &id, F1_PHONE).await;
        posted.push(id);
        i += 1;
        if live_since.is_none() {
            let mut all = true;
            for node in &cluster.nodes {
                all &= readyz(node).await.1["bus"] == "ok";
            }
            if all {
                live_since = Some(i);
            }
        }
        assert!(i < 500, "the nodes did not reconnect to Redis");
    }
    let newest = posted.last().unwrap().clone();
    frames_b.extend(timed_until(&mut sam_b, &newest).await.0);
    frames_c.extend(timed_until(&mut sue_c, &newest).await.0);
    // Anything that would come twice would come before a pong.
    frames_b.extend(sam_b.drain().await);
    frames_c.extend(sue_c.drain().await);

    for (who, frames) in [("sam on B", &frames_b), ("sue on C", &frames_c)] {
        assert_eq!(external_ids(frames), posted, "{who}: every message once, in order");
        let ids = event_ids(frames);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{who}: ids increase: {ids:?}");
    }
    for node in &cluster.nodes {
        let (status, report) = readyz(node).await;
        assert_eq!((status, &report["live_events"]), (200, &json!("live")), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn while_postgres_is_down_writes_and_readyz_answer_503_sessions_stay_open_and_catch_up_once_it_is_back() {
    let mut postgres = PgServer::start();
    let deployment = Deployment::on(postgres.create_database("switchboard"), Redis::single());
    let cluster = Cluster::start_adjusted(deployment, |s| {
        s.postgres.timeout_ms = 1000;
        s.postgres.connect_timeout_ms = 500;
    })
    .await;
    cluster.a().seed().await;
    let (mut sam_b, _) = open(cluster.b(), &member("sam")).await;
    let (mut sue_c, _) = open(cluster.c(), &member("sue")).await;
    inbound_ok(cluster.a(), "BEFORE", F1_PHONE).await;
    let (before, _) = until_message(&mut sam_b, "BEFORE").await;
    until_message(&mut sue_c, "BEFORE").await;

    postgres.stop();

    for node in &cluster.nodes {
        eventually("/readyz answers 503", || async { readyz(node).await.0 == 503 }).await;
        let (_, report) = readyz(node).await;
        assert_eq!(report["storage"], "unavailable", "{report}");
    }
    let (status, body) = cluster.a().inbound("DURING", F1_PHONE, L1_SMS, "during").await;
    assert_eq!(status, 503, "ingestion while PostgreSQL is down: {body}");
    assert_eq!(body["status"], 503, "problem+json: {body}");
    // The sessions are open and answer (the pong comes once the bus gives up on its barrier).
    assert!(of_type(&sam_b.drain().await, "message.new").is_empty());
    assert!(of_type(&sue_c.drain().await, "message.new").is_empty());

    postgres.restart();
    let posted = inbound_once_back(cluster.c(), "AFTER").await;
    for node in &cluster.nodes {
        eventually("/readyz answers 200", || async { readyz(node).await.0 == 200 }).await;
    }

    // The same sessions get what was committed once it was back, and nothing else.
    let (after, between) = until_message(&mut sam_b, "AFTER").await;
    assert_eq!(after["data"]["message"]["id"], posted["message"]["id"]);
    assert!(external_ids(&between).is_empty(), "{between:#?}");
    let mut ids = event_ids(std::slice::from_ref(&before));
    ids.extend(event_ids(&between));
    ids.extend(event_ids(std::slice::from_ref(&after)));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    until_message(&mut sue_c, "AFTER").await;
    // And a client resuming elsewhere from before the outage gets exactly that message.
    let (mut back, _) = open(cluster.a(), &member("sam")).await;
    let replayed = replay(&mut back, before["id"].as_str().unwrap()).await;
    assert_eq!(external_ids(&replayed), vec!["AFTER"], "{replayed:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_aborted_after_a_commit_and_before_its_publish_still_gets_the_event_to_the_other_nodes_within_a_second()
{
    let deployment = Deployment::new(Redis::single());
    let a = Node::start(&deployment).await;
    let mut doomed = Node::start_with(&deployment, &[("SWITCHBOARD_FAILPOINT", "abort-before-publish")]).await;
    let c = Node::start(&deployment).await;
    a.seed().await;
    let (mut sam_a, _) = a.ws(&member("sam")).await;
    let (mut sue_c, _) = c.ws(&member("sue")).await;
    let (status, body) = a.inbound("SM1").await;
    assert_eq!(status, 201, "{body}");
    until_message(&mut sam_a, "SM1").await;
    until_message(&mut sue_c, "SM1").await;

    // The doomed node commits SM2, then dies before publishing it: no answer comes.
    let sent = Instant::now();
    let answer = doomed
        .client
        .post(format!("{}/api/v1/messages/inbound", doomed.base))
        .bearer_auth(service_token())
        .json(&json!({"external_id": "SM2", "from": F1_PHONE, "to": L1_SMS, "body": "lost publish"}))
        .send()
        .await;
    let died = Instant::now();
    assert!(answer.is_err(), "the node answered: {answer:?}");
    let status = doomed.exited().await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(Signal::SIGABRT as i32),
        "{status}"
    );

    let (on_a, _) = until_message(&mut sam_a, "SM2").await;
    let took_a = died.elapsed();
    let (on_c, _) = until_message(&mut sue_c, "SM2").await;
    let took_c = died.elapsed();
    eprintln!(
        "faults: the unpublished event reached the other nodes {took_a:?} and {took_c:?} after the writer died ({:?} after the request was sent)",
        sent.elapsed()
    );
    assert!(took_c < FROM_THE_LOG, "within a second: {took_a:?}, {took_c:?}");
    assert_eq!(on_a["id"], on_c["id"], "one event id on every node");
    // It was committed exactly once: stored, and counted.
    assert_eq!(on_a["data"]["thread"]["unread_count"], 2, "{on_a}");
}

async fn a_node_process_stopped_with_sigterm_closes_its_sessions_with_1001_exits_0_and_the_client_resumes_elsewhere(
    bus: Redis,
) {
    let deployment = Deployment::new(bus);
    let a = Node::start(&deployment).await;
    let mut b = Node::start(&deployment).await;
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

async fn a_client_whose_node_is_killed_mid_stream_resumes_on_another_with_every_event_exactly_once(bus: Redis) {
    const MESSAGES: usize = 40;
    let deployment = Deployment::new(bus);
    let a = Node::start(&deployment).await;
    let mut b = Node::start(&deployment).await;
    let c = Node::start(&deployment).await;
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
