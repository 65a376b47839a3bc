//! The websocket `/ws`: handshake, `hello`, who receives which event, client frames and the
//! closing codes of the v1 contract.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::auth::{TokenSpec, mint_hs256, now_secs};
use tokio_tungstenite::{connect_async, tungstenite::Message as WsMessage};

use crate::helpers::ws::*;
use crate::helpers::*;

fn assert_hello(hello: &Value, user: &str, unread: &Value) {
    assert_eq!(hello["type"], "hello", "{hello}");
    assert!(
        hello["session_id"].as_str().is_some_and(|s| !s.is_empty()),
        "session_id: {hello}"
    );
    assert_eq!(hello["user_id"], user, "{hello}");
    assert!(
        hello["unread_count"].is_i64() || hello["unread_count"].is_u64(),
        "unread_count: {hello}"
    );
    assert_eq!(
        &hello["unread_count"], unread,
        "hello.unread_count is the user's count: {hello}"
    );
    assert!(
        hello["last_event_id"].as_str().is_some_and(|s| !s.is_empty()),
        "last_event_id: {hello}"
    );
}

fn assert_problem(r: &Refusal, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.content_type.starts_with("application/problem+json"), "{r:?}");
    assert_eq!(r.body["status"], status, "{r:?}");
}

async fn send_binary(ws: &mut Ws, bytes: &[u8]) {
    ws.stream
        .send(WsMessage::Binary(bytes.to_vec().into()))
        .await
        .expect("frame sent");
}

// ---------------------------------------------------------------------------------------
// Handshake and hello

#[tokio::test]
async fn a_token_in_the_authorization_header_opens_a_session_that_starts_with_hello() {
    let app = spawn_app().await;
    app.seed().await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    let sam = member("sam");
    let me = me(&app, &sam).await;
    assert_eq!(me["unread_count"], 1, "{me}");

    let (_ws, hello) = open(&app, &sam).await;

    assert_hello(&hello, "sam", &me["unread_count"]);
}

#[tokio::test]
async fn a_token_in_the_access_token_query_parameter_opens_a_session_that_starts_with_hello() {
    let app = spawn_app().await;
    app.seed().await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    let sue = member("sue");
    let me = me(&app, &sue).await;

    let (_a, first) = app.ws_hello(&sue).await;
    let (_b, second) = app.ws_hello(&sue).await;

    assert_hello(&first, "sue", &me["unread_count"]);
    assert_hello(&second, "sue", &me["unread_count"]);
    assert_ne!(first["session_id"], second["session_id"], "each session has its own id");
}

#[tokio::test]
async fn a_handshake_without_a_token_is_refused_with_401_before_the_upgrade() {
    let app = spawn_app().await;

    let r = refused(request(&app.ws_url(), None, None)).await;

    assert_problem(&r, 401);
}

#[tokio::test]
async fn a_handshake_with_a_badly_signed_or_malformed_token_is_refused_with_401() {
    let app = spawn_app().await;
    let forged = mint_hs256("not-the-secret", &TokenSpec::new("sam", TENANT, &["user"], &["L1"]));

    for bad in [forged.as_str(), "not-a-jwt"] {
        assert_problem(&refused(request(&app.ws_url(), Some(bad), None)).await, 401);
        assert_problem(&refused(request(&query_url(&app.ws_url(), bad), None, None)).await, 401);
    }
}

#[tokio::test]
async fn a_handshake_with_an_expired_token_is_refused_with_401() {
    let app = spawn_app().await;
    let expired = token_expiring("sam", &["user"], &["L1"], now_secs() - 3600);

    assert_problem(&refused(request(&app.ws_url(), Some(&expired), None)).await, 401);
    assert_problem(
        &refused(request(&query_url(&app.ws_url(), &expired), None, None)).await,
        401,
    );
}

#[tokio::test]
async fn a_handshake_from_a_foreign_origin_is_refused_with_403() {
    let app = spawn_app().await;

    let r = refused(request(
        &app.ws_url(),
        Some(&member("sam")),
        Some("https://evil.example.com"),
    ))
    .await;

    assert_eq!(r.status, 403, "{r:?}");
}

#[tokio::test]
async fn a_handshake_from_the_hubs_own_origin_is_accepted() {
    let app = spawn_app().await;
    let own = format!("http://127.0.0.1:{}", app.port);

    let opened = try_open(request(&app.ws_url(), Some(&member("sam")), Some(&own))).await;

    let (_ws, hello) = opened.expect("the hub's own origin is allowed");
    assert_eq!(hello["user_id"], "sam");
}

#[tokio::test]
async fn a_handshake_from_a_configured_origin_is_accepted_and_other_origins_still_refused() {
    let app = spawn_app_with(|s| s.server.allowed_origins = vec!["https://app.example.com".into()]).await;
    let sam = member("sam");

    let opened = try_open(request(&app.ws_url(), Some(&sam), Some("https://app.example.com"))).await;
    assert!(opened.is_ok(), "a configured origin is allowed: {:?}", opened.err());

    let r = refused(request(&app.ws_url(), Some(&sam), Some("https://other.example.com"))).await;
    assert_eq!(r.status, 403, "{r:?}");
}

#[tokio::test]
async fn a_handshake_beyond_max_sessions_is_refused_with_503_until_a_session_closes() {
    let app = spawn_app_with(|s| s.server.max_sessions = 1).await;
    let (mut first, _) = open(&app, &member("sam")).await;

    let r = refused(request(&app.ws_url(), Some(&member("sue")), None)).await;
    assert_eq!(r.status, 503, "{r:?}");

    // The hub drops the session before it answers the client's Close.
    first.stream.close(None).await.expect("close sent");
    first.expect_close().await;
    try_open(request(&app.ws_url(), Some(&member("sue")), None))
        .await
        .expect("a closed session frees its place");
}

#[tokio::test]
async fn a_user_beyond_the_session_cap_is_refused_with_429_until_one_of_theirs_closes() {
    let app = spawn_app_with(|s| s.ws.max_sessions_per_user = 3).await;
    let mut sams = Vec::new();
    for _ in 0..3 {
        sams.push(open(&app, &member("sam")).await.0);
    }

    let r = refused(request(&app.ws_url(), Some(&member("sam")), None)).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.content_type, "application/problem+json");
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_sessions_per_user")),
        "the refusal says which limit: {r:?}"
    );
    let (_sue, _) = open(&app, &member("sue")).await;

    let mut first = sams.remove(0);
    first.stream.close(None).await.expect("close sent");
    first.expect_close().await;
    try_open(request(&app.ws_url(), Some(&member("sam")), None))
        .await
        .expect("a closed session frees the user's place");
}

// ---------------------------------------------------------------------------------------
// Who receives which event

#[tokio::test]
async fn message_new_reaches_the_sales_and_service_resources_but_not_an_operator() {
    let app = spawn_app().await;
    app.seed().await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;
    let (mut olga, _) = open(&app, &member("olga")).await;

    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;

    let mut event_ids = Vec::new();
    for (who, ws) in [("sam", &mut sam), ("sue", &mut sue)] {
        let frames = ws.drain().await;
        let new = one(&frames, "message.new");
        assert_eq!(new["data"]["message"]["id"], posted["message"]["id"], "{who}: {new}");
        assert_eq!(new["data"]["message"]["body"], "body of SM1", "{who}: {new}");
        assert_eq!(new["data"]["message"]["direction"], "inbound", "{who}: {new}");
        assert_eq!(new["data"]["thread"]["id"], posted["thread"]["id"], "{who}: {new}");
        assert_eq!(new["data"]["thread"]["folder_id"], "F1", "{who}: {new}");
        assert_eq!(
            new["data"]["thread"]["unread_count"], posted["thread"]["unread_count"],
            "{who}: {new}"
        );
        event_ids.push(new["id"].clone());
    }
    assert_eq!(event_ids[0], event_ids[1], "one event, one id, whoever receives it");
    olga.expect_quiet().await;
}

#[tokio::test]
async fn message_new_reaches_subscribe_all_users_and_is_all_an_unassigned_thread_notifies() {
    let app = spawn_app().await;
    app.seed().await;
    let olga_token = member("olga");
    subscribe_all(&app, &olga_token, true).await;
    let (mut olga, _) = open(&app, &olga_token).await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;

    let stray = inbound_ok(&app, "SM1", "+15553334444").await;
    assert!(
        stray["thread"]["folder_id"].is_null(),
        "no folder lists the number: {stray}"
    );

    let frames = olga.drain().await;
    assert_eq!(
        one(&frames, "message.new")["data"]["message"]["id"],
        stray["message"]["id"]
    );
    sam.expect_quiet().await;
    sue.expect_quiet().await;

    let assigned = inbound_ok(&app, "SM2", F1_PHONE).await;
    let frames = olga.drain().await;
    assert_eq!(
        one(&frames, "message.new")["data"]["message"]["id"],
        assigned["message"]["id"]
    );
}

#[tokio::test]
async fn message_new_never_reaches_a_session_whose_token_lacks_the_location() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    let lara_token = token("lara", &["user"], &["L2"]);
    subscribe_all(&app, &lara_token, true).await;
    let (mut sam_here, _) = open(&app, &member("sam")).await;
    let (mut sam_elsewhere, _) = open(&app, &token("sam", &["user"], &["L2"])).await;
    let (mut lara, _) = open(&app, &lara_token).await;
    let (mut sam_other_tenant, _) = open(&app, &token_in("other", "sam", &["user"], &["L1"])).await;

    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;

    let frames = sam_here.drain().await;
    assert_eq!(
        one(&frames, "message.new")["data"]["message"]["id"],
        posted["message"]["id"]
    );
    none_of(
        &sam_elsewhere.drain().await,
        "message.new",
        "sam with a token for L2 only",
    );
    lara.expect_quiet().await;
    sam_other_tenant.expect_quiet().await;
}

#[tokio::test]
async fn message_sent_reaches_the_audience_and_the_tenants_service_sessions() {
    let app = spawn_app().await;
    app.seed().await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    let (mut service, service_hello) = open(&app, &service_token()).await;
    let (mut other_service, _) = open(&app, &token_in("other", "ingest", &["service"], &[])).await;
    assert_eq!(
        service_hello["unread_count"], 0,
        "a service session counts nothing: {service_hello}"
    );

    let sent = reply(&app, &member("sue"), &posted["thread"]["id"], "On our way").await;
    assert_eq!(sent["direction"], "outbound", "{sent}");
    assert_eq!(sent["author_id"], "sue", "{sent}");

    for (who, ws) in [("sam", &mut sam), ("sue", &mut sue), ("service", &mut service)] {
        let frames = ws.drain().await;
        let s = one(&frames, "message.sent");
        assert_eq!(s["data"]["message"]["id"], sent["id"], "{who}: {s}");
        assert_eq!(s["data"]["message"]["body"], "On our way", "{who}: {s}");
        assert_eq!(s["data"]["message"]["author_id"], "sue", "{who}: {s}");
        assert_eq!(s["data"]["thread"]["id"], posted["thread"]["id"], "{who}: {s}");
    }
    none_of(
        &olga.drain().await,
        "message.sent",
        "olga (no resource, no subscription)",
    );
    other_service.expect_quiet().await;
}

#[tokio::test]
async fn a_service_session_receives_message_sent_but_not_message_new() {
    let app = spawn_app().await;
    app.seed().await;
    let (mut service, _) = open(&app, &service_token()).await;

    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    none_of(&service.drain().await, "message.new", "a service session");

    let sent = reply(&app, &member("sam"), &posted["thread"]["id"], "Thanks").await;
    let frames = service.drain().await;
    assert_eq!(one(&frames, "message.sent")["data"]["message"]["id"], sent["id"]);
}

#[tokio::test]
async fn a_reply_to_an_unread_thread_emits_message_sent_then_thread_read_and_to_a_read_one_only_message_sent() {
    let app = spawn_app().await;
    app.seed().await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let thread = &posted["thread"]["id"];
    let (mut sue, _) = open(&app, &member("sue")).await;

    reply(&app, &member("sam"), thread, "first").await;
    let frames = sue.drain().await;
    let kinds: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] != "unread.count")
        .map(|f| f["type"].clone())
        .collect();
    assert_eq!(kinds, vec![json!("message.sent"), json!("thread.read")], "{frames:#?}");
    let read = one(&frames, "thread.read");
    assert_eq!(read["data"], json!({"thread_id": thread, "by": "sam"}));

    reply(&app, &member("sam"), thread, "second").await;
    let frames = sue.drain().await;
    one(&frames, "message.sent");
    none_of(&frames, "thread.read", "sue after a reply to a read thread");
}

#[tokio::test]
async fn thread_read_and_thread_unread_reach_the_audience_with_thread_id_and_by() {
    let app = spawn_app().await;
    app.seed().await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let thread = &posted["thread"]["id"];
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;
    let (mut olga, _) = open(&app, &member("olga")).await;

    mark(&app, &member("sam"), thread, "read").await;
    for (who, ws) in [("sam", &mut sam), ("sue", &mut sue)] {
        let frames = ws.drain().await;
        assert_eq!(
            one(&frames, "thread.read")["data"],
            json!({"thread_id": thread, "by": "sam"}),
            "{who}"
        );
    }
    olga.expect_quiet().await;

    mark(&app, &member("sue"), thread, "unread").await;
    for (who, ws) in [("sam", &mut sam), ("sue", &mut sue)] {
        let frames = ws.drain().await;
        assert_eq!(
            one(&frames, "thread.unread")["data"],
            json!({"thread_id": thread, "by": "sue"}),
            "{who}"
        );
    }
    olga.expect_quiet().await;
}

#[tokio::test]
async fn marking_read_a_thread_that_is_already_read_emits_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let thread = &posted["thread"]["id"];
    let (mut sue, _) = open(&app, &member("sue")).await;
    mark(&app, &member("sam"), thread, "read").await;
    one(&sue.drain().await, "thread.read");

    mark(&app, &member("sam"), thread, "read").await;

    sue.expect_quiet().await;
}

#[tokio::test]
async fn thread_assigned_reaches_the_old_and_the_new_audience_and_moves_their_counts() {
    let app = spawn_app().await;
    app.seed().await;
    app.user("ned", "Ned New").await;
    app.user("bob", "Bob Bystander").await;
    app.folder("F2", "L1", &["+15557770000"], Some("ned"), None).await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let thread = &posted["thread"]["id"];
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;
    let (mut ned, _) = open(&app, &member("ned")).await;
    let (mut bob, _) = open(&app, &member("bob")).await;

    let moved = assign(&app, &member("olga"), thread, "F2").await;
    assert_eq!(moved["folder_id"], "F2", "{moved}");

    for (who, ws) in [("sam", &mut sam), ("sue", &mut sue), ("ned", &mut ned)] {
        let frames = ws.drain().await;
        let a = one(&frames, "thread.assigned");
        assert_eq!(a["data"]["thread"]["id"], *thread, "{who}: {a}");
        assert_eq!(a["data"]["thread"]["folder_id"], "F2", "{who}: {a}");
        assert_eq!(a["data"]["previous_folder_id"], "F1", "{who}: {a}");
        assert_eq!(a["data"]["by"], "olga", "{who}: {a}");
        let expected = me(&app, &member(who)).await["unread_count"].as_i64().unwrap();
        assert_eq!(
            counts(&frames),
            vec![expected],
            "{who}'s count follows the move: {frames:#?}"
        );
    }
    assert_eq!(me(&app, &member("sam")).await["unread_count"], 0);
    assert_eq!(me(&app, &member("ned")).await["unread_count"], 1);
    bob.expect_quiet().await;
}

#[tokio::test]
async fn assigning_an_unassigned_thread_tells_the_new_audience_with_a_null_previous_folder() {
    let app = spawn_app().await;
    app.seed().await;
    let posted = inbound_ok(&app, "SM1", "+15553334444").await;
    let (mut sam, _) = open(&app, &member("sam")).await;

    assign(&app, &member("olga"), &posted["thread"]["id"], "F1").await;

    let frames = sam.drain().await;
    let a = one(&frames, "thread.assigned");
    assert!(a["data"]["previous_folder_id"].is_null(), "{a}");
    assert_eq!(a["data"]["thread"]["folder_id"], "F1", "{a}");
    assert_eq!(counts(&frames), vec![1], "the unread thread now counts for sam");
}

#[tokio::test]
async fn assigning_a_thread_to_the_folder_it_already_has_emits_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let (mut sam, _) = open(&app, &member("sam")).await;

    assign(&app, &member("olga"), &posted["thread"]["id"], "F1").await;

    sam.expect_quiet().await;
}

#[tokio::test]
async fn unread_count_reaches_a_user_whenever_their_count_changes_with_the_right_number() {
    let app = spawn_app().await;
    app.seed().await;
    let sam_token = member("sam");
    let (mut sam, hello) = open(&app, &sam_token).await;
    assert_eq!(hello["unread_count"], 0);

    // Each step: what changes sam's count, and the count the contract's rules give.
    let first = inbound_ok(&app, "SM1", F1_PHONE).await;
    let thread = first["thread"]["id"].clone();
    let mut steps: Vec<(&str, i64)> = vec![("first inbound", 1)];
    let mut observed = vec![counts(&sam.drain().await)];
    let mut truth = vec![me(&app, &sam_token).await["unread_count"].as_i64().unwrap()];

    inbound_ok(&app, "SM2", F1_PHONE).await;
    steps.push(("second inbound", 2));
    observed.push(counts(&sam.drain().await));
    truth.push(me(&app, &sam_token).await["unread_count"].as_i64().unwrap());

    mark(&app, &member("sue"), &thread, "read").await;
    steps.push(("read by sue", 0));
    observed.push(counts(&sam.drain().await));
    truth.push(me(&app, &sam_token).await["unread_count"].as_i64().unwrap());

    mark(&app, &sam_token, &thread, "unread").await;
    steps.push(("unread", 1));
    observed.push(counts(&sam.drain().await));
    truth.push(me(&app, &sam_token).await["unread_count"].as_i64().unwrap());

    reply(&app, &sam_token, &thread, "hello").await;
    steps.push(("reply", 0));
    observed.push(counts(&sam.drain().await));
    truth.push(me(&app, &sam_token).await["unread_count"].as_i64().unwrap());

    for (i, (step, rule)) in steps.iter().enumerate() {
        assert_eq!(truth[i], *rule, "/me after {step}");
        assert_eq!(observed[i], vec![truth[i]], "unread.count after {step}");
    }

    // Nothing that leaves the count alone sends one.
    mark(&app, &sam_token, &thread, "read").await;
    inbound_ok(&app, "SM3", "+15553334444").await;
    sam.expect_quiet().await;
}

#[tokio::test]
async fn images_linked_reaches_the_audience_with_message_folder_and_count() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, posted) = app
        .inbound_json(json!({
            "external_id": "MM1", "from": F1_PHONE, "to": L1_SMS, "body": "",
            "attachments": [
                {"url": "https://media.example.com/1.jpg", "content_type": "image/jpeg"},
                {"url": "https://media.example.com/2.png", "content_type": "image/png"},
                {"url": "https://media.example.com/quote.pdf", "content_type": "application/pdf"},
            ]
        }))
        .await;
    assert_eq!(status, 201, "{posted}");
    let message = &posted["message"]["id"];
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;
    let (mut olga, _) = open(&app, &member("olga")).await;

    let linked = link_images(&app, &member("sue"), message).await;
    assert_eq!(linked["folder_id"], "F1", "{linked}");
    assert_eq!(linked["linked"], 2, "the two images, not the PDF: {linked}");

    for (who, ws) in [("sam", &mut sam), ("sue", &mut sue)] {
        let frames = ws.drain().await;
        let e = one(&frames, "images.linked");
        assert_eq!(
            e["data"],
            json!({"message_id": message, "folder_id": "F1", "count": linked["linked"]}),
            "{who}"
        );
        assert!(
            counts(&frames).is_empty(),
            "linking leaves read state alone: {frames:#?}"
        );
    }
    olga.expect_quiet().await;

    let again = link_images(&app, &member("sue"), message).await;
    assert_eq!(again["linked"], 0, "linking twice adds nothing: {again}");
    sam.expect_quiet().await;
}

#[tokio::test]
async fn event_frames_are_type_id_and_data_with_distinct_ids_shared_by_every_recipient() {
    let app = spawn_app().await;
    app.seed().await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;

    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    let thread = &posted["thread"]["id"];
    mark(&app, &member("sam"), thread, "read").await;
    mark(&app, &member("sam"), thread, "unread").await;
    reply(&app, &member("sue"), thread, "ok").await;
    inbound_ok(&app, "SM2", F1_PHONE).await;

    let sam_frames = sam.drain().await;
    let sue_frames = sue.drain().await;
    for f in sam_frames.iter().chain(&sue_frames) {
        assert!(
            f["type"].as_str().is_some_and(|t| t.contains('.')),
            "an event type: {f}"
        );
        assert!(
            f["id"].as_str().is_some_and(|i| !i.is_empty()),
            "an opaque string id: {f}"
        );
        assert!(f["data"].is_object(), "data is an object: {f}");
    }
    let sam_ids = ids(&sam_frames);
    let mut distinct = sam_ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), sam_ids.len(), "ids are unique: {sam_ids:?}");
    assert!(
        sam_frames.len() >= 5,
        "every action above notifies sam: {sam_frames:#?}"
    );

    // The events both are in the audience of carry the same ids, in the same order.
    let shared = |fs: &[Value]| {
        events_only(fs)
            .into_iter()
            .filter(|f| f["type"] != "unread.count")
            .collect::<Vec<_>>()
    };
    assert_same_events(&shared(&sam_frames), &shared(&sue_frames), "sam and sue");
}

#[tokio::test]
async fn every_session_of_a_user_gets_every_event() {
    let app = spawn_app().await;
    app.seed().await;
    let sam_token = member("sam");
    let (mut tab, _) = open(&app, &sam_token).await;
    let (mut other_tab, _) = open(&app, &sam_token).await;
    let (mut phone, _) = app.ws_hello(&sam_token).await;

    let posted = inbound_ok(&app, "SM1", F1_PHONE).await;
    mark(&app, &member("sue"), &posted["thread"]["id"], "read").await;
    reply(&app, &member("sue"), &posted["thread"]["id"], "done").await;

    let first = tab.drain().await;
    for t in ["message.new", "thread.read", "message.sent", "unread.count"] {
        assert!(!of_type(&first, t).is_empty(), "sam gets {t}: {first:#?}");
    }
    assert_same_events(&other_tab.drain().await, &first, "second tab");
    assert_same_events(&phone.drain().await, &first, "query-token session");
}

#[tokio::test]
async fn subscribe_all_takes_effect_on_an_open_session_at_once_and_turning_it_off_stops_it() {
    let app = spawn_app().await;
    app.seed().await;
    let olga_token = member("olga");
    let (mut olga, _) = open(&app, &olga_token).await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    olga.expect_quiet().await;

    subscribe_all(&app, &olga_token, true).await;
    assert_eq!(
        counts(&olga.drain().await),
        vec![1],
        "the unread thread now counts for olga"
    );
    let posted = inbound_ok(&app, "SM2", F1_PHONE).await;
    let frames = olga.drain().await;
    assert_eq!(
        one(&frames, "message.new")["data"]["message"]["id"],
        posted["message"]["id"]
    );
    assert_eq!(counts(&frames), vec![2]);

    let off = subscribe_all(&app, &olga_token, false).await;
    assert_eq!(off["unread_count"], 0, "{off}");
    assert_eq!(counts(&olga.drain().await), vec![0]);
    inbound_ok(&app, "SM3", F1_PHONE).await;
    olga.expect_quiet().await;
}

#[tokio::test]
async fn with_notify_sales_resource_off_the_sales_resource_gets_no_live_events() {
    let app = spawn_app().await;
    app.seed().await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    sam.drain().await;
    sue.drain().await;

    preferences(
        &app,
        json!({"notify_sales_resource": false, "notify_service_resource": true}),
    )
    .await;
    assert_eq!(
        counts(&sam.drain().await),
        vec![0],
        "sam's count drops with the preference"
    );
    assert!(counts(&sue.drain().await).is_empty(), "sue's count does not change");

    let posted = inbound_ok(&app, "SM2", F1_PHONE).await;
    sam.expect_quiet().await;
    assert_eq!(
        one(&sue.drain().await, "message.new")["data"]["message"]["id"],
        posted["message"]["id"]
    );

    preferences(&app, json!({"notify_sales_resource": true})).await;
    let back = me(&app, &member("sam")).await["unread_count"].as_i64().unwrap();
    assert_eq!(back, 2, "both unread messages count again");
    assert_eq!(counts(&sam.drain().await), vec![back]);
    inbound_ok(&app, "SM3", F1_PHONE).await;
    one(&sam.drain().await, "message.new");
}

#[tokio::test]
async fn a_folder_upsert_changing_resources_changes_who_gets_the_next_event_live() {
    let app = spawn_app().await;
    app.seed().await;
    app.user("ned", "Ned New").await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = open(&app, &member("sue")).await;
    let (mut ned, _) = open(&app, &member("ned")).await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    sam.drain().await;
    sue.drain().await;
    ned.expect_quiet().await;

    app.folder("F1", "L1", &[F1_PHONE], Some("ned"), Some("sue")).await;
    assert_eq!(counts(&sam.drain().await), vec![0], "sam no longer counts the thread");
    assert_eq!(counts(&ned.drain().await), vec![1], "ned now counts it");
    sue.expect_quiet().await;

    let posted = inbound_ok(&app, "SM2", F1_PHONE).await;
    sam.expect_quiet().await;
    for (who, ws) in [("ned", &mut ned), ("sue", &mut sue)] {
        let frames = ws.drain().await;
        assert_eq!(
            one(&frames, "message.new")["data"]["message"]["id"],
            posted["message"]["id"],
            "{who}"
        );
    }
}

#[tokio::test]
async fn following_a_resource_delivers_their_threads_within_the_callers_locations_until_null() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.folder("F2", "L2", &["+15557654321"], Some("sam"), None).await;
    let (mut olga, _) = open(&app, &member("olga")).await;
    let (mut sam_everywhere, _) = open(&app, &token("sam", &["user"], &["L1", "L2"])).await;

    olga.send_json(json!({"type": "follow", "resource_id": "sam"})).await;
    olga.expect_quiet().await;

    let here = inbound_ok(&app, "SM1", F1_PHONE).await;
    assert_eq!(
        one(&olga.drain().await, "message.new")["data"]["message"]["id"],
        here["message"]["id"]
    );

    let (status, there) = app.inbound("SM2", "+15557654321", "+15550002222", "at L2").await;
    assert_eq!(status, 201, "{there}");
    let frames = sam_everywhere.drain().await;
    assert_eq!(of_type(&frames, "message.new").len(), 2, "sam gets both: {frames:#?}");
    none_of(&olga.drain().await, "message.new", "olga (token without L2)");

    olga.send_json(json!({"type": "follow", "resource_id": null})).await;
    olga.expect_quiet().await;
    inbound_ok(&app, "SM3", F1_PHONE).await;
    none_of(&olga.drain().await, "message.new", "olga after follow null");
}

#[tokio::test]
async fn following_a_resource_who_is_not_notified_delivers_nothing_of_theirs() {
    let app = spawn_app().await;
    app.seed().await;
    preferences(
        &app,
        json!({"notify_sales_resource": false, "notify_service_resource": true}),
    )
    .await;
    let (mut follows_sam, _) = open(&app, &member("olga")).await;
    let (mut follows_sue, _) = open(&app, &member("olga")).await;
    follows_sam
        .send_json(json!({"type": "follow", "resource_id": "sam"}))
        .await;
    follows_sue
        .send_json(json!({"type": "follow", "resource_id": "sue"}))
        .await;
    follows_sam.expect_quiet().await;
    follows_sue.expect_quiet().await;

    inbound_ok(&app, "SM1", F1_PHONE).await;

    none_of(
        &follows_sam.drain().await,
        "message.new",
        "a session following sam (sales, not notified)",
    );
    one(&follows_sue.drain().await, "message.new");
}

#[tokio::test]
async fn a_service_session_may_not_follow() {
    let app = spawn_app().await;
    let (mut service, _) = open(&app, &service_token()).await;

    service.send_json(json!({"type": "follow", "resource_id": "sam"})).await;

    let e = service.next_json().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "forbidden", "{e}");
    service.expect_quiet().await;
}

// ---------------------------------------------------------------------------------------
// Client frames

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let app = spawn_app().await;
    let (mut ws, _) = open(&app, &member("sam")).await;

    ws.send_json(json!({"type": "ping"})).await;

    assert_eq!(ws.next_json().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn malformed_frames_get_an_error_frame_and_the_session_stays_usable() {
    let app = spawn_app().await;
    app.seed().await;
    let (mut ws, _) = open(&app, &member("sam")).await;
    let bad_texts = [
        "this is not json",
        "[1, 2, 3]",
        r#"{"hello": "no type"}"#,
        r#"{"type": "dance"}"#,
        r#"{"type": "resume"}"#,
        r#"{"type": "resume", "last_event_id": 17}"#,
        r#"{"type": "refresh"}"#,
    ];

    for text in bad_texts {
        ws.send_text(text).await;
        let e = ws.next_json().await;
        assert_eq!(e["type"], "error", "answer to {text}: {e}");
        assert_eq!(e["code"], "bad_frame", "answer to {text}: {e}");
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "answer to {text}: {e}"
        );
        ws.expect_quiet().await;
    }
    send_binary(&mut ws, &[0, 1, 2, 3]).await;
    let e = ws.next_json().await;
    assert_eq!(e["type"], "error", "answer to a binary frame: {e}");
    assert_eq!(e["code"], "bad_frame", "{e}");
    assert!(e["message"].is_string(), "{e}");
    ws.expect_quiet().await;

    inbound_ok(&app, "SM1", F1_PHONE).await;
    one(&ws.drain().await, "message.new");
}

#[tokio::test]
async fn refresh_with_a_fresh_token_for_the_same_user_keeps_the_session_past_the_old_expiry() {
    let app = spawn_app_with(|s| s.auth.leeway_secs = 0).await;
    app.seed().await;
    let now = now_secs();
    let (mut refreshed, _) = open(&app, &token_expiring("sam", &["user"], &["L1"], now + 2)).await;
    refreshed
        .send_json(json!({"type": "refresh", "token": member("sam")}))
        .await;
    refreshed.expect_quiet().await;

    // A control session that expires a second after the refreshed one would have: once it is
    // closed, the refreshed session has outlived its first token.
    let (mut control, _) = open(&app, &token_expiring("sam", &["user"], &["L1"], now + 3)).await;
    assert_eq!(control.expect_close().await, Some(4001));

    refreshed.expect_quiet().await;
    inbound_ok(&app, "SM1", F1_PHONE).await;
    one(&refreshed.drain().await, "message.new");
}

#[tokio::test]
async fn refresh_with_another_users_or_an_invalid_token_gets_an_error_frame_and_changes_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15557770000"], None, Some("sue")).await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let attempts = [
        (member("sue"), "forbidden"),
        (token_in("other", "sam", &["user"], &["L1"]), "forbidden"),
        ("not-a-jwt".to_owned(), "unauthorized"),
        (
            token_expiring("sam", &["user"], &["L1"], now_secs() - 3600),
            "unauthorized",
        ),
        (
            mint_hs256("not-the-secret", &TokenSpec::new("sam", TENANT, &["user"], &["L1"])),
            "unauthorized",
        ),
    ];

    for (tok, code) in &attempts {
        sam.send_json(json!({"type": "refresh", "token": tok})).await;
        let e = sam.next_json().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], *code, "{e}");
        assert!(e["message"].is_string(), "{e}");
    }

    // Still sam's session: sue's folder stays silent, sam's folder notifies.
    inbound_ok(&app, "SM1", "+15557770000").await;
    sam.expect_quiet().await;
    inbound_ok(&app, "SM2", F1_PHONE).await;
    one(&sam.drain().await, "message.new");
}

// ---------------------------------------------------------------------------------------
// Closing

#[tokio::test]
async fn a_session_is_closed_with_4001_when_its_token_expires() {
    let app = spawn_app_with(|s| s.auth.leeway_secs = 0).await;
    let (mut ws, _) = open(&app, &token_expiring("sam", &["user"], &["L1"], now_secs() + 2)).await;
    ws.expect_quiet().await;

    assert_eq!(ws.expect_close().await, Some(4001));
}

#[tokio::test]
async fn a_frame_over_max_frame_bytes_closes_the_session_with_4009() {
    let app = spawn_app_with(|s| s.ws.max_frame_bytes = 1024).await;
    let (mut ws, _) = open(&app, &member("sam")).await;

    // JSON allows trailing whitespace: a ping of 900 bytes is still a ping.
    ws.send_text(&format!(r#"{{"type":"ping"}}{}"#, " ".repeat(885))).await;
    assert_eq!(
        ws.next_json().await["type"],
        "pong",
        "a frame under the limit is served"
    );

    ws.send_text(&format!(r#"{{"type":"ping"}}{}"#, " ".repeat(4096))).await;
    assert_eq!(ws.expect_close().await, Some(4009));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4008_when_its_queue_overflows() {
    let app = spawn_app_with(|s| s.ws.queue_capacity = 2).await;
    app.seed().await;
    let (mut slow, _) = open(&app, &member("sam")).await;
    let big = "x".repeat(100_000);

    let mut posted = 0;
    for i in 0..400 {
        // A slow session must never hold up ingestion.
        let (status, body) = tokio::time::timeout(PATIENCE, app.inbound(&format!("BIG{i}"), F1_PHONE, L1_SMS, &big))
            .await
            .expect("ingestion answers while a session is stuck");
        assert_eq!(status, 201, "{body}");
        posted += 1;
        if i % 10 == 9 && metric_total(&app, "overflow").await > 0.0 {
            break;
        }
    }

    // Read what was queued before the hub gave up; the close comes after it.
    let mut frames = 0;
    let code = loop {
        match slow.next().await {
            Next::Json(_) => frames += 1,
            Next::Closed(code) => break code,
        }
        assert!(
            frames <= 2 * posted + 10,
            "the session stayed open through {posted} posts"
        );
    };
    assert_eq!(code, Some(4008), "closed after {frames} frames of {posted} posts");
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_after_the_client_timeout() {
    let app = spawn_app_with(|s| {
        s.ws.heartbeat_interval_ms = 100;
        s.ws.client_timeout_ms = 500;
    })
    .await;
    let (mut silent, _) = open(&app, &member("sam")).await;

    // Not reading is what is under test: a reader would answer the pings.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match silent.stream.next().await {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the silent session is still open after three times the timeout"
    );
}

#[tokio::test]
async fn a_client_that_keeps_reading_stays_open_past_the_client_timeout() {
    let app = spawn_app_with(|s| {
        s.ws.heartbeat_interval_ms = 100;
        s.ws.client_timeout_ms = 500;
    })
    .await;
    let (mut ws, _) = open(&app, &member("sam")).await;

    // Reading answers the hub's pings (tungstenite replies with pongs).
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(next) = tokio::time::timeout_at(deadline, ws.stream.next()).await {
        match next {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(WsMessage::Close(frame))) => panic!("closed while answering pings: {frame:?}"),
            Some(Err(e)) => panic!("connection lost: {e}"),
            None => panic!("connection ended"),
            Some(Ok(_)) => {}
        }
    }

    assert!(pings >= 2, "the hub pings every heartbeat interval (saw {pings})");
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
}

#[tokio::test]
async fn a_graceful_shutdown_closes_every_session_with_1001() {
    let app = spawn_app().await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    let (mut sue, _) = app.ws_hello(&member("sue")).await;

    let (stopped, sam_code, sue_code) = tokio::join!(
        tokio::time::timeout(PATIENCE, app.stopper.stop()),
        sam.expect_close(),
        sue.expect_close()
    );

    assert!(stopped.is_ok(), "the stop finishes");
    assert_eq!(sam_code, Some(1001));
    assert_eq!(sue_code, Some(1001));
    let after = tokio::time::timeout(PATIENCE, connect_async(app.ws_url()))
        .await
        .expect("answered in time");
    assert!(after.is_err(), "a stopped hub accepts no new session");
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_echoing_its_code() {
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    let app = spawn_app().await;
    for (sent, echoed) in [(1000, 1000), (4321, 4321), (1001, 1001)] {
        let (mut ws, _) = open(&app, &member("sam")).await;
        ws.stream
            .send(WsMessage::Close(Some(CloseFrame {
                code: CloseCode::from(sent),
                reason: "bye".into(),
            })))
            .await
            .unwrap();
        let answer = tokio::time::timeout(PATIENCE, ws.stream.next())
            .await
            .expect("the hub answers in time");
        match answer {
            Some(Ok(WsMessage::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), echoed, "the close sent with {sent}")
            }
            other => panic!("expected the hub's Close echoing {sent}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let app = spawn_app().await;
    let (mut ws, _) = open(&app, &member("sam")).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.stream.send(WsMessage::Frame(bad)).await.unwrap();
    assert_eq!(ws.expect_close().await, Some(1007));
}

// ---------------------------------------------------------------------------------------
// The budget of a session's client frames

/// Reads `n` answers to client frames (any frame but an event), in order.
async fn answers(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = ws.next_json().await;
        if v.get("id").is_none() {
            out.push(v);
        }
    }
    out
}

#[tokio::test]
async fn frames_beyond_the_budget_are_dropped_with_a_rate_limited_error_and_the_session_lives_on() {
    let app = spawn_app_with(|s| {
        s.ws.frame_rate = 1;
        s.ws.frame_burst = 5;
    })
    .await;
    app.seed().await;
    let (mut sam, _) = open(&app, &member("sam")).await;
    for _ in 0..20 {
        sam.send_json(json!({"type": "ping"})).await;
    }
    let got = answers(&mut sam, 20).await;
    let pongs = got.iter().filter(|v| v["type"] == "pong").count();
    let limited: Vec<&Value> = got
        .iter()
        .filter(|v| v["type"] == "error" && v["code"] == "rate_limited")
        .collect();
    assert_eq!(pongs + limited.len(), 20, "one answer per frame: {got:#?}");
    // The burst, and what a second at most of the flood earned back.
    assert!((5..=6).contains(&pongs), "{pongs} pongs");
    assert_eq!(got[0]["type"], "pong", "the burst is paid first");
    assert!(
        limited[0]["message"].as_str().is_some_and(|m| m.contains("dropped")),
        "{}",
        limited[0]
    );

    inbound_ok(&app, "SM1", F1_PHONE).await;
    assert_eq!(
        sam.next_of_type("message.new").await["data"]["message"]["external_id"],
        "SM1",
        "live events still arrive"
    );
}

#[tokio::test]
async fn a_resume_flood_replays_only_what_the_budget_pays_for() {
    // 400 events in the log; each resume from 0 costs 1 + 4 units of a burst of 10.
    let app = spawn_app_with(|s| {
        s.ws.frame_rate = 1;
        s.ws.frame_burst = 10;
    })
    .await;
    app.seed().await;
    for i in 0..200 {
        inbound_ok(&app, &format!("SM{i}"), "+15559990000").await;
    }
    let (mut mallory, hello) = open(&app, &token("mallory", &["user"], &["L9"])).await;
    assert_eq!(hello["last_event_id"], "400");
    for _ in 0..200 {
        mallory.send_json(json!({"type": "resume", "last_event_id": "0"})).await;
    }
    let got = answers(&mut mallory, 200).await;
    let resumed = got.iter().filter(|v| v["type"] == "resumed").count();
    let limited = got
        .iter()
        .filter(|v| v["type"] == "error" && v["code"] == "rate_limited")
        .count();
    assert_eq!(resumed + limited, 200, "one answer per frame: {got:#?}");
    // Two resumes from the burst; at most one more from what the flood's duration earned.
    assert!((2..=3).contains(&resumed), "{resumed} resumes replayed");
    assert!(
        got.iter().all(|v| v["type"] != "resumed" || v["replayed"] == 0),
        "mallory is in no audience"
    );
}
