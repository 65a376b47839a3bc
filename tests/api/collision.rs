//! The collision guard on replies: `after_message_id` names the newest message the replier
//! saw; a thread that holds a newer one (the customer wrote again, someone answered first)
//! refuses the reply with 409 `thread-changed` and the newer messages, storing nothing;
//! `force` sends anyway.

use serde_json::{Value, json};

use crate::helpers::http::*;
use crate::helpers::*;

fn sam() -> String {
    user_token("sam", &["L1"])
}

fn replies(t: &str) -> String {
    format!("/api/v1/threads/{t}/replies")
}

async fn bodies(app: &TestApp, t: &str) -> Vec<String> {
    all_messages(app, &format!("/api/v1/threads/{t}/messages"), &sam())
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_reply_after_the_newest_message_is_sent() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    let t = thread_id(&first);
    let reply = post_expect(
        &app,
        &replies(&t),
        &sam(),
        json!({"body": "On our way", "after_message_id": message_id(&first)}),
        201,
    )
    .await;
    assert_eq!(reply["body"], "On our way");
    assert_eq!(bodies(&app, &t).await, ["text SM1", "On our way"]);
}

#[tokio::test]
async fn a_reply_after_the_customer_wrote_again_is_409_with_the_newer_messages_and_stores_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    let t = thread_id(&first);
    let second = ingest(&app, "SM2", CUSTOMER).await;
    let third = ingest(&app, "SM3", CUSTOMER).await;
    let before = get_ok(&app, &format!("/api/v1/threads/{t}"), &sam()).await;

    let (status, problem) = post(
        &app,
        &replies(&t),
        &sam(),
        json!({"body": "Tuesday at 9", "after_message_id": message_id(&first)}),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["type"].as_str().unwrap().ends_with("/thread-changed"),
        "{problem}"
    );
    assert_eq!(
        problem["newer"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].clone())
            .collect::<Vec<Value>>(),
        [second["message"]["id"].clone(), third["message"]["id"].clone()],
        "the newer messages, oldest first"
    );
    assert_eq!(problem["newer"][1], third["message"], "whole messages");
    assert_eq!(
        bodies(&app, &t).await,
        ["text SM1", "text SM2", "text SM3"],
        "nothing stored"
    );
    assert_eq!(
        get_ok(&app, &format!("/api/v1/threads/{t}"), &sam()).await,
        before,
        "the thread is as it was (still unread)"
    );

    let sent = post_expect(
        &app,
        &replies(&t),
        &sam(),
        json!({"body": "Tuesday at 9", "after_message_id": message_id(&first), "force": true}),
        201,
    )
    .await;
    assert_eq!(sent["body"], "Tuesday at 9", "force sends anyway");
    assert_eq!(bodies(&app, &t).await.last().unwrap(), "Tuesday at 9");
}

#[tokio::test]
async fn a_reply_after_a_colleague_answered_first_is_409() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    let t = thread_id(&first);
    let sue = post_expect(
        &app,
        &replies(&t),
        &user_token("sue", &["L1"]),
        json!({"body": "Sue here", "after_message_id": message_id(&first)}),
        201,
    )
    .await;
    let (status, problem) = post(
        &app,
        &replies(&t),
        &sam(),
        json!({"body": "Sam here", "after_message_id": message_id(&first)}),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["newer"], json!([sue]));
    assert_eq!(bodies(&app, &t).await, ["text SM1", "Sue here"]);
}

#[tokio::test]
async fn after_message_id_must_name_a_message_of_the_thread_and_force_must_be_a_boolean() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    let t = thread_id(&first);
    let elsewhere = ingest(&app, "SM2", "+15559990000").await;
    assert_ne!(thread_id(&elsewhere), t);
    for (body, field) in [
        (
            json!({"body": "x", "after_message_id": message_id(&elsewhere)}),
            "after_message_id",
        ),
        (
            json!({"body": "x", "after_message_id": "no such id"}),
            "after_message_id",
        ),
        (json!({"body": "x", "after_message_id": 5}), "after_message_id"),
        (
            json!({"body": "x", "after_message_id": message_id(&first), "force": "yes"}),
            "force",
        ),
    ] {
        let (status, problem) = post(&app, &replies(&t), &sam(), body.clone()).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (422, Some(field)),
            "{body}: {problem}"
        );
    }
    assert_eq!(bodies(&app, &t).await, ["text SM1"], "nothing stored");
}
