//! Presence: a session says it is viewing or typing in a thread, or idle; every session that
//! may read the thread sees who is there, live, at most twice a second per thread; `GET
//! /api/v1/presence` gives the current picture.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{http::thread_id, ws::*, *};

/// The usual cast, plus L2 (with lee) and a thread at L1 (from F1's customer).
async fn setup(app: &TestApp) -> String {
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.user("dana", "Dana Dispatch").await;
    thread_id(&inbound_ok(app, "SM1", F1_PHONE).await)
}

/// No presence frame of `thread` is pending (the `ping` barrier: everything queued before
/// the ping comes before the pong).
async fn no_presence(ws: &mut Ws, thread: &str, who: &str) {
    let frames = ws.drain().await;
    assert!(
        !frames
            .iter()
            .any(|f| f["type"] == "presence" && f["data"]["thread_id"] == thread),
        "{who} must not see presence in {thread}: {frames:#?}"
    );
}

#[tokio::test]
async fn viewing_and_typing_are_seen_by_every_session_granted_the_threads_location_with_names() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let (mut dana, _) = open(&app, &token("dana", &["user"], &["L1"])).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    let (mut lee, _) = open(&app, &token("lee", &["user"], &["L2"])).await;
    let (mut other, _) = open(&app, &token_in("globex", "olga", &["user"], &["L1"])).await;

    dana.send_json(say(&t, "viewing")).await;
    let seen = loop {
        let v = olga.next_json().await;
        if v["type"] == "presence" {
            break v;
        }
    };
    assert_eq!(
        seen["data"],
        json!({"thread_id": t, "users": [{"user_id": "dana", "name": "Dana Dispatch", "state": "viewing"}]}),
        "with the directory's name"
    );
    assert!(seen.get("id").is_none(), "presence is not an event");
    assert_eq!(
        next_presence(&mut dana, &t).await,
        [("dana".to_owned(), "viewing".to_owned())]
    );
    no_presence(&mut lee, &t, "lee (L2 only)").await;
    no_presence(&mut other, &t, "another tenant").await;

    dana.send_json(say(&t, "typing")).await;
    assert_eq!(
        next_presence(&mut olga, &t).await,
        [("dana".to_owned(), "typing".to_owned())]
    );
    dana.send_json(say(&t, "idle")).await;
    assert!(next_presence(&mut olga, &t).await.is_empty(), "nobody is there");
}

#[tokio::test]
async fn a_user_in_several_tabs_appears_once_with_the_most_active_state_and_leaves_with_the_last() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let dana = token("dana", &["user"], &["L1"]);
    let (mut tab1, _) = open(&app, &dana).await;
    let (mut tab2, _) = open(&app, &dana).await;
    let (mut olga, _) = open(&app, &member("olga")).await;

    tab1.send_json(say(&t, "viewing")).await;
    assert_eq!(
        next_presence(&mut olga, &t).await,
        [("dana".to_owned(), "viewing".to_owned())]
    );
    tab2.send_json(say(&t, "typing")).await;
    assert_eq!(
        next_presence(&mut olga, &t).await,
        [("dana".to_owned(), "typing".to_owned())]
    );
    hang_up(tab2).await;
    assert_eq!(
        next_presence(&mut olga, &t).await,
        [("dana".to_owned(), "viewing".to_owned())],
        "the other tab is still viewing"
    );
    hang_up(tab1).await;
    assert!(
        next_presence(&mut olga, &t).await.is_empty(),
        "closing the last tab ends it"
    );
}

#[tokio::test]
async fn moving_to_another_thread_leaves_the_first() {
    let app = spawn_app().await;
    let t1 = setup(&app).await;
    let t2 = thread_id(&inbound_ok(&app, "SM2", "+15559990000").await);
    let (mut dana, _) = open(&app, &token("dana", &["user"], &["L1"])).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    dana.send_json(say(&t1, "viewing")).await;
    next_presence(&mut olga, &t1).await;
    dana.send_json(say(&t2, "viewing")).await;
    let mut left = false;
    let mut entered = false;
    while !(left && entered) {
        let v = olga.next_json().await;
        if v["type"] != "presence" {
            continue;
        }
        if v["data"]["thread_id"] == t1 {
            assert!(users_of(&v["data"]["users"]).is_empty());
            left = true;
        }
        if v["data"]["thread_id"] == t2 {
            assert_eq!(
                users_of(&v["data"]["users"]),
                [("dana".to_owned(), "viewing".to_owned())]
            );
            entered = true;
        }
    }
}

#[tokio::test]
async fn a_burst_of_changes_gives_at_most_two_frames_a_second_and_the_last_state_wins() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let (mut dana, _) = open(&app, &token("dana", &["user"], &["L1"])).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    dana.send_json(say(&t, "viewing")).await;
    next_presence(&mut olga, &t).await;

    // 20 changes back to back, ending on typing.
    for i in 0..20 {
        dana.send_json(say(&t, if i % 2 == 0 { "viewing" } else { "typing" }))
            .await;
    }
    let mut frames: Vec<(tokio::time::Instant, Vec<(String, String)>)> = Vec::new();
    loop {
        let users = next_presence(&mut olga, &t).await;
        frames.push((tokio::time::Instant::now(), users.clone()));
        if users == [("dana".to_owned(), "typing".to_owned())] {
            break;
        }
        assert!(frames.len() <= 3, "a burst of 20 became {frames:?}");
    }
    assert!(frames.len() <= 2, "{frames:?}");
    for pair in frames.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(450),
            "two frames closer than half a second: {frames:?}"
        );
    }
}

#[tokio::test]
async fn a_thread_the_caller_may_not_read_is_forbidden_and_shows_nothing() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let (mut lee, _) = open(&app, &token("lee", &["user"], &["L2"])).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    for thread in [t.as_str(), "t_nope"] {
        lee.send_json(say(thread, "viewing")).await;
        let v = lee.next_of_type("error").await;
        assert_eq!(v["code"], "forbidden", "{thread}: {v}");
    }
    no_presence(&mut olga, &t, "olga").await;
    lee.send_json(say("not an id!", "viewing")).await;
    assert_eq!(lee.next_of_type("error").await["code"], "bad_frame");
}

#[tokio::test]
async fn a_refresh_that_narrows_the_locations_ends_presence_there_at_once() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let (mut dana, _) = open(&app, &token("dana", &["user"], &["L1"])).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    dana.send_json(say(&t, "viewing")).await;
    next_presence(&mut olga, &t).await;
    next_presence(&mut dana, &t).await;

    dana.send_json(json!({"type": "refresh", "token": token("dana", &["user"], &["L2"])}))
        .await;
    assert!(
        next_presence(&mut olga, &t).await.is_empty(),
        "dana may no longer be there"
    );
    // Nor does she see L1's presence any more.
    olga.send_json(say(&t, "viewing")).await;
    next_presence(&mut olga, &t).await;
    no_presence(&mut dana, &t, "dana (now L2 only)").await;
}

#[tokio::test]
async fn get_presence_lists_the_threads_where_someone_is_at_the_callers_locations() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let (mut dana, _) = open(&app, &token("dana", &["user"], &["L1"])).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    dana.send_json(say(&t, "typing")).await;
    next_presence(&mut olga, &t).await;

    let got = expect_status(app.get("/api/v1/presence", &member("olga")).await, 200, "GET /presence").await;
    assert_eq!(
        got,
        json!([{"thread_id": t, "users": [{"user_id": "dana", "name": "Dana Dispatch", "state": "typing"}]}])
    );
    let elsewhere = expect_status(
        app.get("/api/v1/presence", &token("lee", &["user"], &["L2"])).await,
        200,
        "lee",
    )
    .await;
    assert_eq!(elsewhere, json!([]), "not lee's location");
    let r = app.get("/api/v1/presence", &service_token()).await;
    assert_eq!(r.status(), 403, "members only");
}

/// A client that goes with frames it never read (its kernel answers with a reset, not a
/// close) is gone at once: its presence ends long before the heartbeat would notice.
#[tokio::test]
async fn a_client_gone_with_frames_unread_leaves_at_once() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    let (mut dana, _) = open(&app, &token("dana", &["user"], &["L1"])).await;
    dana.send_json(say(&t, "viewing")).await;
    // Dana's copy of this frame went out with Olga's; Dana never reads it.
    assert_eq!(
        next_presence(&mut olga, &t).await,
        [("dana".to_owned(), "viewing".to_owned())]
    );
    drop(dana);
    assert!(
        next_presence(&mut olga, &t).await.is_empty(),
        "the session ended when its connection did"
    );
}
