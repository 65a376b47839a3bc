//! Presence across nodes on PostgreSQL + Redis (`bus::presence`): a session on one node is
//! seen, with its name, by the sessions of the others; `GET /api/v1/presence` on a node that
//! holds no session of the tenant has the whole picture; a node that stops telling its
//! picture (it died, or a node process is SIGKILLed) is gone from every thread within
//! `presence::NODE_TTL` and a second, well within 15 s.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::{
    bus::{
        presence::State,
        pubsub::{channel, partition_of},
    },
    domain::{Id, TenantId},
    presence::{Activity, NODE_TTL, Place, Present},
};

use crate::cluster::{Cluster, Deployment, Node, Redis};
use crate::helpers::{TENANT, TestApp, Ws, http::thread_id, redis as redis_server, token, ws::*};

crate::on_both_buses!(a_session_on_one_node_is_seen_on_the_others_and_listed_by_a_node_with_no_session);

fn pair(user: &str, state: &str) -> (String, String) {
    (user.to_owned(), state.to_owned())
}

/// Polls `ws` with pings (nothing else reaches it meanwhile) until a presence frame of
/// `thread` says nobody is there; fails once `deadline` has passed. Returns when it came.
async fn until_nobody(ws: &mut Ws, thread: &str, deadline: Instant, what: &str) -> Instant {
    loop {
        let frames = ws.drain().await;
        let last = frames
            .iter()
            .rev()
            .find(|f| f["type"] == "presence" && f["data"]["thread_id"] == thread);
        if let Some(f) = last {
            assert!(users_of(&f["data"]["users"]).is_empty(), "{f}");
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `GET /api/v1/presence` on `app`: the users of `thread`, if anyone is there.
async fn listed(app: &TestApp, token: &str, thread: &str) -> Vec<(String, String)> {
    let list = expect_status(app.get("/api/v1/presence", token).await, 200, "GET /presence").await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["thread_id"] == thread)
        .map(|t| users_of(&t["users"]))
        .unwrap_or_default()
}

async fn a_session_on_one_node_is_seen_on_the_others_and_listed_by_a_node_with_no_session(bus: Redis) {
    let cluster = Cluster::on(bus).await;
    let n = &cluster.nodes;
    n[0].seed().await;
    n[0].location("L2", &["+15550002222"]).await;
    n[0].user("dana", "Dana Dispatch").await;
    let t = thread_id(&inbound_ok(&n[0], "SM1", F1_PHONE).await);
    let (mut dana_a, _) = open(&n[0], &token("dana", &["user"], &["L1"])).await;
    let (mut olga_b, _) = open(&n[1], &member("olga")).await;
    let (mut lee_b, _) = open(&n[1], &token("lee", &["user"], &["L2"])).await;

    dana_a.send_json(say(&t, "typing")).await;
    let seen = loop {
        let v = olga_b.next_json().await;
        if v["type"] == "presence" {
            break v;
        }
    };
    assert_eq!(
        seen["data"],
        json!({"thread_id": t, "users": [{"user_id": "dana", "name": "Dana Dispatch", "state": "typing"}]}),
        "on another node, with the directory's name"
    );
    // Node C holds no session of the tenant: it reads the picture from Redis.
    assert_eq!(listed(&n[2], &member("olga"), &t).await, [pair("dana", "typing")]);
    assert!(
        listed(&n[2], &token("lee", &["user"], &["L2"]), &t).await.is_empty(),
        "not at lee's locations"
    );
    let lee_frames = lee_b.drain().await;
    assert!(
        !lee_frames.iter().any(|f| f["type"] == "presence"),
        "lee (L2 only) sees nothing: {lee_frames:#?}"
    );

    dana_a.send_json(say(&t, "idle")).await;
    assert!(
        next_presence(&mut olga_b, &t).await.is_empty(),
        "idle on A ends it on B"
    );
    assert!(listed(&n[2], &member("olga"), &t).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_stops_telling_its_picture_is_gone_from_every_thread_within_its_ttl() {
    let deployment = Deployment::new(Redis::single());
    let prefix = deployment.prefix.clone();
    let cluster = Cluster::start_on(deployment).await;
    let n = &cluster.nodes;
    n[0].seed().await;
    let t = thread_id(&inbound_ok(&n[0], "SM1", F1_PHONE).await);
    let (mut olga_b, _) = open(&n[1], &member("olga")).await;

    // A node that told its picture once, then died (a node process would be killed here;
    // what the others see of it is this message and then silence).
    let tenant = TenantId::parse(TENANT).unwrap();
    let ghost = State {
        tenant: tenant.clone(),
        node: "ghost".into(),
        places: vec![(
            1,
            Place {
                thread: Id::parse(&t).unwrap(),
                location: Id::parse("L1").unwrap(),
                present: Present {
                    user: Id::parse("gus").unwrap(),
                    name: Some("Gus".into()),
                    activity: Activity::Viewing,
                },
            },
        )],
        until: None,
    };
    let client = redis::Client::open(redis_server::shared().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel(&prefix, partition_of(&tenant)))
        .arg(serde_json::to_vec(&ghost).unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
    let told = Instant::now();
    assert_eq!(next_presence(&mut olga_b, &t).await, [pair("gus", "viewing")]);

    // Silence: B forgets it.
    let deadline = told + NODE_TTL + Duration::from_secs(3);
    let gone_after = until_nobody(&mut olga_b, &t, deadline, "the dead node's session is still shown")
        .await
        .duration_since(told);
    assert!(
        gone_after >= NODE_TTL - Duration::from_secs(1),
        "not before its TTL: {gone_after:?}"
    );
    assert!(gone_after <= Duration::from_secs(15), "within 15 s: {gone_after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_of_a_killed_node_process_leave_every_thread_within_15_s() {
    let deployment = Deployment::new(Redis::single());
    let mut doomed = Node::start(&deployment).await;
    let watcher = Node::start(&deployment).await;
    doomed.seed().await;
    let (status, posted) = doomed.inbound("SM1").await;
    assert_eq!(status, 201, "{posted}");
    let t = thread_id(&posted);
    let (mut dana, _) = doomed.ws(&member("dana")).await;
    let (mut olga, _) = watcher.ws(&member("olga")).await;
    dana.send_json(say(&t, "viewing")).await;
    assert_eq!(next_presence(&mut olga, &t).await, [pair("dana", "viewing")]);

    doomed.sigkill().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    until_nobody(&mut olga, &t, deadline, "the killed node's session is still shown").await;
    drop(dana);
}
