//! `unread.count` frames carry the exact running count: after each change, every session
//! whose count it moved gets exactly one frame, with the number `GET /me` gives for the same
//! token; sessions whose count it left alone get none. Sessions add inbound messages to the
//! count they hold, so these tests cover what must make them read it again instead: a token
//! refresh with other locations, `subscribe_all`, reads, and an inbound message that assigns
//! an unread thread to a folder.

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::ws::*;
use crate::helpers::*;

/// L2's SMS number, and the number of its folder F2 (sam's).
const L2_SMS: &str = "+15550002222";
const F2_PHONE: &str = "+15557654321";
/// Numbers no folder lists: their threads reach subscribers only.
const STRANGER: &str = "+15553334444";
const OTHER_STRANGER: &str = "+15553335555";

/// Expects exactly one `unread.count` in what `ws` has pending, with the count `/me` gives
/// `token` now.
async fn expect_count(app: &TestApp, ws: &mut Ws, token: &str, what: &str) -> i64 {
    let frames = ws.drain().await;
    let want = me(app, token).await["unread_count"].as_i64().unwrap();
    assert_eq!(counts(&frames), vec![want], "{what}: {frames:#?}");
    want
}

async fn inbound_to(app: &TestApp, external_id: &str, from: &str, to: &str) -> serde_json::Value {
    let (status, body) = app.inbound(external_id, from, to, "hello").await;
    assert_eq!(status, 201, "inbound {external_id}: {body}");
    body
}

async fn refresh(ws: &mut Ws, token: &str) {
    ws.send_json(json!({"type": "refresh", "token": token})).await;
    // No acknowledgement: the pong after it says it was read.
    ws.expect_quiet().await;
}

#[tokio::test]
async fn every_count_frame_is_the_running_count_through_inbounds_reads_subscriptions_and_refreshes() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &[L2_SMS]).await;
    app.folder("F2", "L2", &[F2_PHONE], Some("sam"), None).await;
    let sam_l1 = member("sam");
    let sam_both = token("sam", &["user"], &["L1", "L2"]);
    let olga = member("olga");
    let (mut sam, _) = open(&app, &sam_l1).await;
    let (mut olga_ws, _) = open(&app, &olga).await;

    let first = inbound_ok(&app, "A0", F1_PHONE).await;
    let thread = first["thread"]["id"].clone();
    assert_eq!(expect_count(&app, &mut sam, &sam_l1, "A0").await, 1);
    for i in 1..6 {
        inbound_ok(&app, &format!("A{i}"), F1_PHONE).await;
        assert_eq!(expect_count(&app, &mut sam, &sam_l1, &format!("A{i}")).await, i + 1);
        olga_ws.expect_quiet().await;
    }

    // L2 is not in sam's token: nothing for this session.
    inbound_to(&app, "B0", F2_PHONE, L2_SMS).await;
    sam.expect_quiet().await;

    // A refresh granting L2 too: the next count covers both locations.
    refresh(&mut sam, &sam_both).await;
    inbound_ok(&app, "A6", F1_PHONE).await;
    assert_eq!(
        expect_count(&app, &mut sam, &sam_both, "first inbound after the refresh to L1+L2").await,
        8
    );
    inbound_to(&app, "B1", F2_PHONE, L2_SMS).await;
    assert_eq!(expect_count(&app, &mut sam, &sam_both, "B1 at L2").await, 9);

    mark(&app, &member("sue"), &thread, "read").await;
    assert_eq!(expect_count(&app, &mut sam, &sam_both, "L1 read by sue").await, 2);

    // And back to L1 only.
    refresh(&mut sam, &sam_l1).await;
    inbound_ok(&app, "A7", F1_PHONE).await;
    assert_eq!(
        expect_count(&app, &mut sam, &sam_l1, "first inbound after the refresh to L1").await,
        1
    );
    // A refresh with the same locations changes nothing.
    refresh(&mut sam, &member("sam")).await;
    inbound_ok(&app, "A8", F1_PHONE).await;
    assert_eq!(expect_count(&app, &mut sam, &sam_l1, "A8").await, 2);

    // Olga subscribes to everything: her count covers every thread of L1.
    inbound_to(&app, "C0", STRANGER, L1_SMS).await;
    sam.expect_quiet().await;
    olga_ws.expect_quiet().await;
    subscribe_all(&app, &olga, true).await;
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "subscribe_all on").await, 3);
    let (mut olga_late, hello) = open(&app, &olga).await;
    assert_eq!(hello["unread_count"], 3);
    for (i, from) in [F1_PHONE, STRANGER, F1_PHONE].into_iter().enumerate() {
        inbound_to(&app, &format!("D{i}"), from, L1_SMS).await;
        let want = 4 + i as i64;
        assert_eq!(expect_count(&app, &mut olga_ws, &olga, "olga").await, want);
        assert_eq!(
            expect_count(&app, &mut olga_late, &olga, "olga's later tab").await,
            want
        );
        if from == F1_PHONE {
            expect_count(&app, &mut sam, &sam_l1, "sam").await;
        } else {
            sam.expect_quiet().await;
        }
    }
    mark(&app, &olga, &thread, "read").await;
    assert_eq!(
        expect_count(&app, &mut olga_ws, &olga, "olga read sam's thread").await,
        2
    );
    assert_eq!(expect_count(&app, &mut olga_late, &olga, "the other tab").await, 2);
    assert_eq!(expect_count(&app, &mut sam, &sam_l1, "sam's thread read").await, 0);
    mark(&app, &olga, &thread, "unread").await;
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "marked unread").await, 3);
    assert_eq!(expect_count(&app, &mut olga_late, &olga, "the other tab").await, 3);
    assert_eq!(expect_count(&app, &mut sam, &sam_l1, "sam: marked unread").await, 1);

    subscribe_all(&app, &olga, false).await;
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "subscribe_all off").await, 0);
    assert_eq!(expect_count(&app, &mut olga_late, &olga, "the other tab").await, 0);
    inbound_to(&app, "C1", STRANGER, L1_SMS).await;
    olga_ws.expect_quiet().await;
    olga_late.expect_quiet().await;
    subscribe_all(&app, &olga, true).await;
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "on again").await, 4);
    assert_eq!(expect_count(&app, &mut olga_late, &olga, "the other tab").await, 4);
    inbound_ok(&app, "A9", F1_PHONE).await;
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "A9").await, 5);
    assert_eq!(expect_count(&app, &mut olga_late, &olga, "the other tab").await, 5);
    assert_eq!(expect_count(&app, &mut sam, &sam_l1, "A9").await, 2);

    // A reconnecting tab replays its counts: each is the count now.
    let (mut back, _) = open(&app, &olga).await;
    let replayed = replay(&mut back, hello["last_event_id"].as_str().unwrap()).await;
    let now = me(&app, &olga).await["unread_count"].as_i64().unwrap();
    let replayed_counts = counts(&replayed);
    assert!(!replayed_counts.is_empty());
    assert!(
        replayed_counts.iter().all(|c| *c == now),
        "{replayed_counts:?} vs {now}"
    );
}

#[tokio::test]
async fn an_inbound_message_that_assigns_an_unread_thread_counts_all_its_messages_for_the_new_resources() {
    let app = spawn_app().await;
    app.seed().await;
    app.user("ned", "Ned New").await;
    let olga = member("olga");
    let ned = member("ned");
    subscribe_all(&app, &olga, true).await;
    let (mut olga_ws, _) = open(&app, &olga).await;
    let (mut ned_ws, _) = open(&app, &ned).await;
    inbound_to(&app, "S1", STRANGER, L1_SMS).await;
    inbound_to(&app, "S2", STRANGER, L1_SMS).await;
    olga_ws.drain().await;
    ned_ws.expect_quiet().await;

    // A new folder listing the number: the thread keeps no folder until its next message.
    app.folder("F9", "L1", &[STRANGER], Some("ned"), None).await;
    ned_ws.expect_quiet().await;
    assert_eq!(me(&app, &ned).await["unread_count"], 0);

    let third = inbound_to(&app, "S3", STRANGER, L1_SMS).await;
    assert_eq!(third["thread"]["folder_id"], "F9", "{third}");
    assert_eq!(
        expect_count(&app, &mut ned_ws, &ned, "ned joined an unread thread").await,
        3,
        "all three unread messages count for ned now"
    );
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "olga had it already").await, 3);

    inbound_to(&app, "S4", STRANGER, L1_SMS).await;
    assert_eq!(expect_count(&app, &mut ned_ws, &ned, "S4").await, 4);
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "S4").await, 4);

    // A new thread assigned on its first message: one more for both.
    app.folder("F8", "L1", &[OTHER_STRANGER], Some("ned"), None).await;
    let read_first = inbound_to(&app, "T1", OTHER_STRANGER, L1_SMS).await;
    assert_eq!(read_first["thread"]["folder_id"], "F8");
    assert_eq!(expect_count(&app, &mut ned_ws, &ned, "T1, a new thread").await, 5);
    assert_eq!(expect_count(&app, &mut olga_ws, &olga, "T1").await, 5);
}

#[tokio::test]
async fn racing_inbound_messages_give_each_recipient_one_frame_each_counting_up_by_one() {
    let app = spawn_app().await;
    app.seed().await;
    let olga = member("olga");
    subscribe_all(&app, &olga, true).await;
    let mut tabs = Vec::new();
    for _ in 0..4 {
        tabs.push(open(&app, &olga).await.0);
    }
    let (mut sam, _) = open(&app, &member("sam")).await;

    let numbers = [F1_PHONE, STRANGER, OTHER_STRANGER];
    let n = 30;
    let posted = join_all((0..n).map(|i| {
        let app = &app;
        async move { inbound_to(app, &format!("R{i}"), numbers[i % numbers.len()], L1_SMS).await }
    }))
    .await;
    assert_eq!(posted.len(), n);

    for (i, tab) in tabs.iter_mut().enumerate() {
        let frames = tab.drain().await;
        assert_eq!(
            counts(&frames),
            (1..=n as i64).collect::<Vec<_>>(),
            "olga's tab {i}: one count per message, each one more"
        );
    }
    let sams = n.div_ceil(numbers.len()) as i64;
    assert_eq!(counts(&sam.drain().await), (1..=sams).collect::<Vec<_>>(), "sam");
    assert_eq!(me(&app, &olga).await["unread_count"], n);
}
