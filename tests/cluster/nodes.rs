//! Three in-process nodes on one PostgreSQL database and one Redis bus: whatever happens on
//! one node reaches the sessions of the others. Each scenario runs on a single Redis and on a
//! Redis Cluster (`on_redis::…`, `on_redis_cluster::…`).

use serde_json::{Value, json};

use crate::cluster::{Cluster, Redis, until_message};
use crate::helpers::{Ws, ws::*};

crate::on_both_buses!(
    an_inbound_message_posted_on_one_node_reaches_sessions_on_the_other_two,
    a_thread_marked_read_on_one_node_is_seen_read_on_another,
    subscribe_all_switched_on_one_node_applies_to_the_sessions_on_every_node,
    a_preference_changed_on_one_node_applies_on_every_node,
    a_client_resumes_on_another_node_with_exactly_what_it_missed,
    nodes_started_together_share_one_cursor_key_so_a_cursor_pages_on_any_node,
);

/// Reads frames until `done` says the ones seen so far are enough (bounded).
async fn frames_until(ws: &mut Ws, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    for _ in 0..1_000 {
        seen.push(ws.next_json().await);
        if done(&seen) {
            return seen;
        }
    }
    panic!("{what}: not among {seen:#?}");
}

/// Asserts the frames a session had queued up to now hold no `message.new` for `external_id`.
/// Call it once another session of the same node has received that message: one node hands an
/// event to all its sessions at once, so by then this one has it queued or never will.
async fn never_got(ws: &mut Ws, external_id: &str, who: &str) {
    let frames = ws.drain().await;
    assert!(
        !frames
            .iter()
            .any(|f| f["type"] == "message.new" && f["data"]["message"]["external_id"] == external_id),
        "{who} must not receive {external_id}: {frames:#?}"
    );
}

async fn an_inbound_message_posted_on_one_node_reaches_sessions_on_the_other_two(bus: Redis) {
    let cluster = Cluster::on(bus).await;
    cluster.a().seed().await;
    let (mut sam_b, _) = open(cluster.b(), &member("sam")).await;
    let (mut sue_c, _) = open(cluster.c(), &member("sue")).await;

    let posted = inbound_ok(cluster.a(), "SM1", F1_PHONE).await;

    let (on_b, _) = until_message(&mut sam_b, "SM1").await;
    let (on_c, _) = until_message(&mut sue_c, "SM1").await;
    assert_eq!(on_b["data"]["message"]["id"], posted["message"]["id"], "{on_b}");
    assert_eq!(on_b["data"]["thread"]["unread_count"], 1, "{on_b}");
    assert_eq!(on_b["id"], on_c["id"], "one event id on every node");
    let count = sam_b.next_of_type("unread.count").await;
    assert_eq!(count["data"]["count"], 1, "{count}");
}

async fn a_thread_marked_read_on_one_node_is_seen_read_on_another(bus: Redis) {
    let cluster = Cluster::on(bus).await;
    cluster.a().seed().await;
    let (mut sue_c, _) = open(cluster.c(), &member("sue")).await;
    let posted = inbound_ok(cluster.a(), "SM1", F1_PHONE).await;
    let thread = posted["thread"]["id"].clone();
    until_message(&mut sue_c, "SM1").await;

    mark(cluster.b(), &member("sam"), &thread, "read").await;

    let frames = frames_until(&mut sue_c, "thread.read and a count of 0", |seen| {
        !of_type(seen, "thread.read").is_empty() && counts(seen).last() == Some(&0)
    })
    .await;
    let read = one(&frames, "thread.read");
    assert_eq!(read["data"], json!({"thread_id": thread, "by": "sam"}), "{read}");
    let on_c = expect_status(
        cluster
            .c()
            .get(&format!("/api/v1/threads/{}", thread.as_str().unwrap()), &member("sue"))
            .await,
        200,
        "GET thread on C",
    )
    .await;
    assert_eq!(on_c["unread"], false, "{on_c}");
}

async fn subscribe_all_switched_on_one_node_applies_to_the_sessions_on_every_node(bus: Redis) {
    let cluster = Cluster::on(bus).await;
    cluster.a().seed().await;
    cluster.a().user("olga", "Olga Operator").await;
    let olga = member("olga");
    let (mut olga_b, _) = open(cluster.b(), &olga).await;
    let (mut olga_c, _) = open(cluster.c(), &olga).await;
    let (mut sam_b, _) = open(cluster.b(), &member("sam")).await;
    let (mut sam_c, _) = open(cluster.c(), &member("sam")).await;

    subscribe_all(cluster.a(), &olga, true).await;
    inbound_ok(cluster.a(), "SM1", F1_PHONE).await;
    until_message(&mut olga_b, "SM1").await;
    until_message(&mut olga_c, "SM1").await;

    subscribe_all(cluster.c(), &olga, false).await;
    inbound_ok(cluster.a(), "SM2", F1_PHONE).await;
    until_message(&mut sam_b, "SM2").await;
    until_message(&mut sam_c, "SM2").await;
    never_got(&mut olga_b, "SM2", "olga on B, subscribed off").await;
    never_got(&mut olga_c, "SM2", "olga on C, subscribed off").await;
}

async fn a_preference_changed_on_one_node_applies_on_every_node(bus: Redis) {
    let cluster = Cluster::on(bus).await;
    cluster.a().seed().await;
    let (mut sam_b, _) = open(cluster.b(), &member("sam")).await;
    let (mut sue_b, _) = open(cluster.b(), &member("sue")).await;
    let (mut sam_c, _) = open(cluster.c(), &member("sam")).await;
    let (mut sue_c, _) = open(cluster.c(), &member("sue")).await;

    preferences(cluster.c(), json!({"notify_sales_resource": false})).await;
    inbound_ok(cluster.a(), "SM1", F1_PHONE).await;
    until_message(&mut sue_b, "SM1").await;
    until_message(&mut sue_c, "SM1").await;
    never_got(&mut sam_b, "SM1", "sam on B, sales notifications off").await;
    never_got(&mut sam_c, "SM1", "sam on C, sales notifications off").await;

    preferences(cluster.b(), json!({"notify_sales_resource": true})).await;
    inbound_ok(cluster.a(), "SM2", F1_PHONE).await;
    until_message(&mut sam_b, "SM2").await;
    until_message(&mut sam_c, "SM2").await;
}

async fn a_client_resumes_on_another_node_with_exactly_what_it_missed(bus: Redis) {
    let cluster = Cluster::on(bus).await;
    cluster.a().seed().await;
    let sam = member("sam");
    let (mut witness, _) = open(cluster.c(), &sam).await;
    let (mut away, _) = open(cluster.a(), &sam).await;
    inbound_ok(cluster.b(), "SM0", F1_PHONE).await;
    let (seen, _) = until_message(&mut away, "SM0").await;
    let last = seen["id"].as_str().unwrap().to_owned();
    hang_up(away).await;
    for i in 1..=3 {
        inbound_ok(cluster.b(), &format!("SM{i}"), F1_PHONE).await;
    }
    // Back on a node it was never on.
    let (mut back, _) = open(cluster.b(), &sam).await;

    let replayed = replay(&mut back, &last).await;

    let missed: Vec<&Value> = of_type(&replayed, "message.new");
    let external: Vec<&Value> = missed.iter().map(|f| &f["data"]["message"]["external_id"]).collect();
    assert_eq!(external, vec!["SM1", "SM2", "SM3"], "{replayed:#?}");
    let newest = replayed.last().unwrap()["id"].clone();
    let mut want = Vec::new();
    let mut started = false;
    for _ in 0..1_000 {
        let f = witness.next_json().await;
        if started {
            want.push(f.clone());
        }
        if f["id"] == last.as_str() {
            started = true;
        }
        if f["id"] == newest {
            break;
        }
    }
    assert_same_events(
        &replayed,
        &want,
        "the replay on B against a session that saw them live on C",
    );
}

async fn nodes_started_together_share_one_cursor_key_so_a_cursor_pages_on_any_node(bus: Redis) {
    // `Cluster` starts its nodes at once, so each node's first-start key creation races the
    // others'.
    let cluster = Cluster::on(bus).await;
    let nodes = &cluster.nodes;
    nodes[0].seed().await;
    for i in 0..4 {
        inbound_ok(&nodes[0], &format!("SM{i}"), &format!("+1555300000{i}")).await;
    }
    let olga = member("olga");
    subscribe_all(&nodes[1], &olga, true).await;
    let get = |node: usize, path: String| {
        let (app, olga) = (&nodes[node], olga.clone());
        async move { expect_status(app.get(&path, &olga).await, 200, &path).await }
    };
    let first = get(0, "/api/v1/threads?limit=2".into()).await;
    let next = first["next"].as_str().expect("a second page").to_owned();
    let second = get(0, format!("/api/v1/threads?limit=2&before={next}")).await;
    assert_eq!(second["threads"].as_array().unwrap().len(), 2, "{second}");
    for node in 1..3 {
        assert_eq!(
            get(node, "/api/v1/threads?limit=2".into()).await["next"],
            first["next"],
            "node {node} hands out the same cursor"
        );
        assert_eq!(
            get(node, format!("/api/v1/threads?limit=2&before={next}")).await,
            second,
            "node {node} opens node 0's cursor"
        );
    }
}
