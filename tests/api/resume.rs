//! `resume`: a client that reconnects gets exactly the events it missed, in order, or
//! `resync` when the hub can no longer tell.
//!
//! A "witness" is a session of the same user with the same token that stays connected
//! throughout: what it received live is what the user should have received.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::ws::*;
use crate::helpers::*;

/// Posts an inbound message with another tenant's service token.
async fn inbound_in_other_tenant(app: &TestApp, external_id: &str, from: &str, to: &str) {
    let svc = token_in("other", "ingest", &["service"], &[]);
    let r = app
        .call(
            Method::POST,
            "/api/v1/messages/inbound",
            Some(&svc),
            Some(json!({
                "external_id": external_id, "from": from, "to": to, "body": "elsewhere"
            })),
        )
        .await;
    expect_status(r, 201, "inbound in tenant other").await;
}

async fn put_in_other_tenant(app: &TestApp, path: &str, body: Value) {
    let svc = token_in("other", "ingest", &["service"], &[]);
    expect_status(app.put(path, &svc, body).await, 200, path).await;
}

/// The id of the last event frame among `frames`.
fn last_id(frames: &[Value]) -> String {
    let events = events_only(frames);
    events.last().expect("at least one event")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_client_that_missed_events_gets_exactly_those_in_order_then_resumed() {
    let app = spawn_app().await;
    app.seed().await;
    let sam_token = member("sam");
    let (mut witness, _) = open(&app, &sam_token).await;
    let (mut first, _) = open(&app, &sam_token).await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    let seen = first.drain().await;
    let last_seen = last_id(&seen);
    assert_same_events(
        &events_only(&witness.drain().await),
        &events_only(&seen),
        "before the disconnect",
    );
    hang_up(first).await;

    // What happens while sam is away.
    let second = inbound_ok(&app, "SM2", F1_PHONE).await;
    let thread = second["thread"]["id"].clone();
    mark(&app, &member("sue"), &thread, "read").await;
    mark(&app, &member("sue"), &thread, "unread").await;
    let sent = reply(&app, &member("sue"), &thread, "on it").await;
    let third = inbound_ok(&app, "SM3", F1_PHONE).await;
    let missed = events_only(&witness.drain().await);

    let (mut again, _) = open(&app, &sam_token).await;
    let replayed = replay(&mut again, &last_seen).await;

    assert_same_events(&replayed, &missed, "the replay");
    let new_ids: Vec<_> = of_type(&replayed, "message.new")
        .iter()
        .map(|f| f["data"]["message"]["id"].clone())
        .collect();
    assert_eq!(
        new_ids,
        vec![second["message"]["id"].clone(), third["message"]["id"].clone()]
    );
    assert_eq!(one(&replayed, "message.sent")["data"]["message"]["id"], sent["id"]);
    one(&replayed, "thread.unread");
    again.expect_quiet().await;
}

#[tokio::test]
async fn resuming_from_the_hello_last_event_id_replays_what_came_after_the_hello() {
    let app = spawn_app().await;
    app.seed().await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    let sam_token = member("sam");
    let (mut witness, _) = open(&app, &sam_token).await;
    let (never_read, hello) = open(&app, &sam_token).await;
    hang_up(never_read).await;

    let posted = inbound_ok(&app, "SM2", F1_PHONE).await;
    let missed = events_only(&witness.drain().await);

    let (mut again, _) = open(&app, &sam_token).await;
    let replayed = replay(&mut again, hello["last_event_id"].as_str().unwrap()).await;

    assert_same_events(&replayed, &missed, "the replay");
    assert_eq!(
        one(&replayed, "message.new")["data"]["message"]["id"],
        posted["message"]["id"]
    );
}

#[tokio::test]
async fn resuming_from_the_hello_last_event_id_right_away_replays_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    mark(&app, &member("sue"), &posted["thread"]["id"], "read").await;
    let (mut sam, hello) = open(&app, &member("sam")).await;

    match resume(&mut sam, hello["last_event_id"].as_str().unwrap()).await {
        Resumed::Replayed { events, replayed } => {
            assert!(events.is_empty(), "{events:#?}");
            assert_eq!(replayed, 0);
        }
        Resumed::Resync => panic!("the log reaches back to the hello"),
    }
}

#[tokio::test]
async fn resuming_from_any_received_id_replays_exactly_the_later_events_in_order() {
    let app = spawn_app().await;
    app.seed().await;
    let sam_token = member("sam");
    let (mut witness, _) = open(&app, &sam_token).await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let thread = posted["thread"]["id"].clone();
    mark(&app, &sam_token, &thread, "read").await;
    inbound_ok(&app, "SM2", F1_PHONE).await;
    reply(&app, &member("sue"), &thread, "done").await;
    mark(&app, &sam_token, &thread, "unread").await;
    let all = events_only(&witness.drain().await);
    assert!(all.len() >= 5, "{all:#?}");

    for k in 0..all.len() {
        let (mut ws, _) = open(&app, &sam_token).await;
        let replayed = replay(&mut ws, all[k]["id"].as_str().unwrap()).await;
        assert_same_events(&replayed, &all[k + 1..], &format!("resume from event #{k}"));
        hang_up(ws).await;
    }
}

#[tokio::test]
async fn events_arriving_live_during_and_after_a_resume_are_delivered_once_in_order() {
    let app = spawn_app().await;
    app.seed().await;
    let sam_token = member("sam");
    let (mut witness, _) = open(&app, &sam_token).await;
    let (away, hello) = open(&app, &sam_token).await;
    hang_up(away).await;
    for i in 0..3 {
        inbound_ok(&app, &format!("MISSED{i}"), F1_PHONE).await;
    }

    let (mut back, _) = open(&app, &sam_token).await;
    back.send_json(json!({"type": "resume", "last_event_id": hello["last_event_id"]}))
        .await;
    let posting = async {
        for i in 0..5 {
            inbound_ok(&app, &format!("LIVE{i}"), F1_PHONE).await;
        }
    };
    let (resumed, ()) = tokio::join!(resume_answer(&mut back), posting);
    let replayed = match resumed {
        Resumed::Replayed { events, replayed } => {
            assert_eq!(replayed as usize, events.len(), "{events:#?}");
            events
        }
        Resumed::Resync => panic!("the log reaches back to the hello"),
    };
    let after = back.drain().await;
    assert!(of_type(&after, "resumed").is_empty(), "one resumed only: {after:#?}");

    let got: Vec<Value> = replayed.into_iter().chain(after).collect();
    let want = events_only(&witness.drain().await);
    assert_eq!(of_type(&want, "message.new").len(), 8, "{want:#?}");
    assert_same_events(&got, &want, "replay then live");
}

#[tokio::test]
async fn events_the_user_should_not_have_had_are_not_replayed() {
    let app = spawn_app().await;
    app.seed().await;
    app.user("ned", "Ned").await;
    app.location("L2", &["+15550002222"]).await;
    app.folder("F2", "L2", &["+15557654321"], Some("sam"), None).await;
    app.folder("F3", "L1", &["+15559990000"], Some("ned"), None).await;
    put_in_other_tenant(
        &app,
        "/api/v1/locations/L1",
        json!({"name": "Theirs", "sms_numbers": [L1_SMS]}),
    )
    .await;
    put_in_other_tenant(
        &app,
        "/api/v1/folders/F1",
        json!({"name": "Theirs", "location_id": "L1", "phone_numbers": [F1_PHONE],
               "sales_resource_id": "sam", "service_resource_id": null}),
    )
    .await;
    subscribe_all(&app, &member("olga"), true).await;
    let sam_token = member("sam");
    let (mut witness, _) = open(&app, &sam_token).await;
    let (away, hello) = open(&app, &sam_token).await;
    hang_up(away).await;

    let (status, body) = app.inbound("SM1", "+15557654321", "+15550002222", "at L2").await;
    assert_eq!(status, 201, "sam's folder at a location his token lacks: {body}");
    inbound_ok(&app, "SM2", "+15559990000").await; // ned's folder
    inbound_ok(&app, "SM3", "+15553334444").await; // no folder: subscribers only
    inbound_in_other_tenant(&app, "SM4", F1_PHONE, L1_SMS).await; // sam's folder, other tenant
    let mine = inbound_ok(&app, "SM5", F1_PHONE).await;
    let live = events_only(&witness.drain().await);

    let (mut again, _) = open(&app, &sam_token).await;
    let replayed = replay(&mut again, hello["last_event_id"].as_str().unwrap()).await;

    assert_eq!(
        one(&replayed, "message.new")["data"]["message"]["id"],
        mine["message"]["id"]
    );
    for f in &replayed {
        let thread = f["data"]["thread"]["id"].as_str().or(f["data"]["thread_id"].as_str());
        if let Some(t) = thread {
            assert_eq!(t, mine["thread"]["id"], "only sam's thread: {f}");
        }
    }
    assert_same_events(&replayed, &live, "replay and live agree");
}

#[tokio::test]
async fn resuming_from_an_id_trimmed_from_the_log_gives_resync() {
    let app = spawn_app_with(|s| s.events.retention = 5).await;
    app.seed().await;
    let sam_token = member("sam");
    let (mut witness, _) = open(&app, &sam_token).await;
    let (mut early, _) = open(&app, &sam_token).await;
    inbound_ok(&app, "SM0", F1_PHONE).await;
    let oldest = last_id(&early.drain().await);
    hang_up(early).await;
    for i in 1..=15 {
        inbound_ok(&app, &format!("SM{i}"), F1_PHONE).await;
    }
    let all = events_only(&witness.drain().await);

    let (mut late, _) = open(&app, &sam_token).await;
    match resume(&mut late, &oldest).await {
        Resumed::Resync => {}
        other => panic!("the log was trimmed past {oldest}, expected resync: {other:?}"),
    }

    // The newest events are still there, and the resynced session keeps working.
    let (mut recent, _) = open(&app, &sam_token).await;
    let replayed = replay(&mut recent, all[all.len() - 2]["id"].as_str().unwrap()).await;
    assert_same_events(&replayed, &all[all.len() - 1..], "resume within retention");
    let posted = inbound_ok(&app, "SM16", F1_PHONE).await;
    assert_eq!(
        one(&late.drain().await, "message.new")["data"]["message"]["id"],
        posted["message"]["id"]
    );
}

#[tokio::test]
async fn resuming_from_an_id_that_is_not_an_event_id_gives_resync() {
    let app = spawn_app().await;
    app.seed().await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    let (mut sam, _) = open(&app, &member("sam")).await;

    for garbage in ["garbage", "-1", "not:an.event-id"] {
        match resume(&mut sam, garbage).await {
            Resumed::Resync => {}
            other => panic!("resume from {garbage:?}: {other:?}"),
        }
    }
    sam.expect_quiet().await;
}

#[tokio::test]
async fn resuming_past_the_replay_limit_gives_resync() {
    let app = spawn_app_with(|s| s.ws.replay_limit = 3).await;
    app.seed().await;
    let sam_token = member("sam");
    let (mut witness, _) = open(&app, &sam_token).await;
    let (mut early, _) = open(&app, &sam_token).await;
    inbound_ok(&app, "SM0", F1_PHONE).await;
    let before = last_id(&early.drain().await);
    hang_up(early).await;
    for i in 1..=5 {
        inbound_ok(&app, &format!("SM{i}"), F1_PHONE).await;
    }
    let all = events_only(&witness.drain().await);
    assert!(of_type(&all, "message.new").len() > 3);

    let (mut far, _) = open(&app, &sam_token).await;
    match resume(&mut far, &before).await {
        Resumed::Resync => {}
        other => panic!("more than replay_limit events to replay, expected resync: {other:?}"),
    }

    let (mut near, _) = open(&app, &sam_token).await;
    let replayed = replay(&mut near, all[all.len() - 2]["id"].as_str().unwrap()).await;
    assert_same_events(&replayed, &all[all.len() - 1..], "a replay within the limit");
}

#[tokio::test]
async fn a_resume_does_not_repeat_events_the_session_already_had_live() {
    let app = spawn_app().await;
    app.seed().await;
    let sam = member("sam");
    let (mut first, hello) = open(&app, &sam).await;
    let before = hello["last_event_id"].as_str().unwrap().to_owned();
    inbound_ok(&app, "SM1", F1_PHONE).await;
    let missed = events_only(&first.drain().await);
    hang_up(first).await;

    // The client reconnects; a new event reaches the new session live before it resumes.
    let (mut ws, _) = open(&app, &sam).await;
    inbound_ok(&app, "SM2", F1_PHONE).await;
    let live = events_only(&ws.drain().await);
    assert!(!live.is_empty(), "the new session got SM2 live");
    let replayed = replay(&mut ws, &before).await;
    assert_same_events(&replayed, &missed, "only what the new session had not had");
}

#[tokio::test]
async fn resuming_in_the_handshake_replays_before_any_live_event() {
    let app = spawn_app().await;
    app.seed().await;
    let sam = member("sam");
    let (mut witness, hello) = open(&app, &sam).await;
    let before = hello["last_event_id"].as_str().unwrap().to_owned();
    inbound_ok(&app, "SM1", F1_PHONE).await;
    inbound_ok(&app, "SM2", F1_PHONE).await;
    let missed = events_only(&witness.drain().await);

    let url = format!("{}&last_event_id={before}", query_url(&app.ws_url(), &sam));
    let (mut ws, hello) = try_open(request(&url, None, None))
        .await
        .expect("the handshake is accepted");
    assert_eq!(hello["type"], "hello");
    inbound_ok(&app, "SM3", F1_PHONE).await;
    let Resumed::Replayed { events, replayed } = resume_answer(&mut ws).await else {
        panic!("expected a replay, got resync")
    };
    assert_eq!(replayed as usize, events.len());
    assert_same_events(&events, &missed, "the replay, before anything live");
    let live = events_only(&ws.drain().await);
    let witnessed = events_only(&witness.drain().await);
    assert_same_events(&live, &witnessed, "then the live events, once each");
}

/// The event ids among `frames`, as numbers (ids are opaque to clients; the test knows they
/// are decimal).
fn numeric_ids(frames: &[Value]) -> Vec<u64> {
    ids(&events_only(frames))
        .iter()
        .map(|id| id.parse().expect("a decimal event id"))
        .collect()
}

#[tokio::test]
async fn handshakes_that_resume_under_steady_ingestion_receive_strictly_increasing_ids() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.seed().await;
    let olga = member("olga");
    subscribe_all(&app, &olga, true).await;
    inbound_ok(&app, "SM0", F1_PHONE).await;

    // Steady ingestion until the handshakes are done (bounded: at most 2,000 messages).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ingest = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !*stopped.borrow() && n < 2_000 {
                n += 1;
                inbound_ok(&app, &format!("SM-steady-{n}"), F1_PHONE).await;
            }
            n
        })
    };

    // Handshakes that resume a few events behind the head, two at a time.
    let sessions = (0..2).map(|_| {
        let (app, olga) = (app.clone(), olga.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                let (probe, hello) = open(&app, &olga).await;
                hang_up(probe).await;
                let head: u64 = hello["last_event_id"].as_str().unwrap().parse().unwrap();
                let from = head.saturating_sub(4);
                let url = format!("{}&last_event_id={from}", query_url(&app.ws_url(), &olga));
                let (mut ws, _) = try_open(request(&url, None, None))
                    .await
                    .expect("the handshake is accepted");
                let Resumed::Replayed { mut events, .. } = resume_answer(&mut ws).await else {
                    panic!("a resume a few events behind the head replays")
                };
                events.extend(ws.drain().await);
                let got = numeric_ids(&events);
                assert!(
                    got.first().is_some_and(|first| *first > from),
                    "the replay starts after {from}: {got:?}"
                );
                assert!(
                    got.windows(2).all(|w| w[0] < w[1]),
                    "ids strictly increase on every session (resumed from {from}): {got:?}"
                );
                hang_up(ws).await;
            }
        })
    });
    for s in sessions.collect::<Vec<_>>() {
        s.await.expect("the handshakes hold");
    }
    stop.send_replace(true);
    let ingested = ingest.await.unwrap();
    assert!(ingested > 0, "ingestion ran alongside");
}
