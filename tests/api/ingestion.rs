//! Ingestion: `POST /api/v1/messages/inbound` (role `service`).

use serde_json::{Value, json};

use crate::helpers::http::*;
use crate::helpers::*;

fn attachments(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"url": format!("https://media.example/{i}.jpg"), "content_type": "image/jpeg"}))
        .collect()
}

#[tokio::test]
async fn a_new_inbound_message_answers_201_with_the_message_and_its_thread_in_the_contract_shapes() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, body) = app
        .inbound_json(json!({
            "external_id": "SM123", "from": CUSTOMER, "to": L1_SMS, "body": "The water is back",
            "attachments": [{"url": "https://media.example/1.jpg", "content_type": "image/jpeg"}],
            "received_at": "2024-03-01T10:00:00Z"
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        keys(&body),
        ["message", "thread"]
            .iter()
            .map(|s| s.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    );

    let m = &body["message"];
    assert_message_shape(m);
    assert_eq!(m["direction"], "inbound");
    assert_eq!(m["body"], "The water is back");
    assert_eq!(m["author_id"], json!(null));
    assert_eq!(m["external_id"], "SM123");
    assert_eq!(m["attachments"][0]["url"], "https://media.example/1.jpg");
    assert_eq!(m["attachments"][0]["content_type"], "image/jpeg");
    assert_eq!(
        instant(&m["created_at"]),
        instant(&json!("2024-03-01T10:00:00Z")),
        "received_at becomes created_at"
    );

    let t = &body["thread"];
    assert_thread_shape(t);
    assert_eq!(m["thread_id"], t["id"]);
    assert_eq!(t["location_id"], "L1");
    assert_eq!(t["customer_number"], CUSTOMER);
    assert_eq!(t["folder_id"], "F1");
    assert_eq!(t["unread"], true);
    assert_eq!(t["unread_count"], 1);
    assert_eq!(&t["last_message"], m);
    assert_eq!(instant(&t["last_message_at"]), instant(&m["created_at"]));
}

#[tokio::test]
async fn without_received_at_the_message_is_dated_now() {
    let app = spawn_app().await;
    app.seed().await;
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let body = ingest(&app, "SM1", CUSTOMER).await;
    let after = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let at = instant(&body["message"]["created_at"]);
    assert!(
        before <= at && at <= after,
        "created_at {at} lies between {before} and {after}"
    );
}

#[tokio::test]
async fn numbers_in_national_format_are_normalised_before_the_thread_is_picked() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, body) = app.inbound("SM1", "(555) 123-4567", "555.000.1111", "hi").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["thread"]["customer_number"], CUSTOMER);
    assert_eq!(body["thread"]["location_id"], "L1");
    let again = ingest(&app, "SM2", CUSTOMER).await;
    assert_eq!(
        thread_id(&again),
        thread_id(&body),
        "both spellings are the same customer"
    );
}

#[tokio::test]
async fn each_inbound_message_joins_the_thread_and_adds_one_to_its_unread_count() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    let t = thread_id(&first);
    for (i, ext) in ["SM2", "SM3"].into_iter().enumerate() {
        let body = ingest(&app, ext, CUSTOMER).await;
        assert_eq!(thread_id(&body), t);
        assert_eq!(body["thread"]["unread"], true);
        assert_eq!(body["thread"]["unread_count"], json!(i + 2));
        assert_eq!(body["thread"]["last_message"]["id"], body["message"]["id"]);
    }
    let messages = all_messages(
        &app,
        &format!("/api/v1/threads/{t}/messages"),
        &user_token("sam", &["L1"]),
    )
    .await;
    assert_eq!(messages.len(), 3);
}

#[tokio::test]
async fn a_read_thread_becomes_unread_again_with_the_new_message() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    post_expect(
        &app,
        &format!("/api/v1/threads/{t}/read"),
        &user_token("sam", &["L1"]),
        json!({}),
        200,
    )
    .await;
    let body = ingest(&app, "SM2", CUSTOMER).await;
    assert_eq!(body["thread"]["unread"], true);
    assert_eq!(body["thread"]["unread_count"], 1);
}

#[tokio::test]
async fn one_customer_texting_two_locations_has_two_threads() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    let a = ingest(&app, "SM1", CUSTOMER).await;
    let (status, b) = app.inbound("SM2", CUSTOMER, "+15550002222", "hi").await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["thread"]["location_id"], "L2");
    assert_ne!(thread_id(&a), thread_id(&b));
    assert_eq!(b["thread"]["unread_count"], 1);
}

// ---------------------------------------------------------------------------------------
// Idempotency

#[tokio::test]
async fn repeating_an_external_id_answers_200_with_the_same_message_and_stores_nothing_new() {
    let app = spawn_app().await;
    app.seed().await;
    let req = json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "hello"});
    let first = ingest_json(&app, req.clone()).await;
    let sam = user_token("sam", &["L1"]);
    let mut ws = app.ws(&sam).await;
    ws.drain().await;

    let (status, second) = app.inbound_json(req).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["message"], first["message"]);
    assert_eq!(second["thread"]["id"], first["thread"]["id"]);
    assert_eq!(second["thread"]["unread_count"], 1);
    ws.expect_quiet().await;

    let t = thread_id(&first);
    let messages = all_messages(&app, &format!("/api/v1/threads/{t}/messages"), &sam).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(thread(&app, &t, &sam).await["unread_count"], 1);
    assert_eq!(unread_of(&app, &sam).await, 1);
}

#[tokio::test]
async fn a_repeated_external_id_answers_the_thread_as_it_is_now() {
    let app = spawn_app().await;
    app.seed().await;
    let req = json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "hello"});
    let first = ingest_json(&app, req.clone()).await;
    let t = thread_id(&first);
    post_expect(
        &app,
        &format!("/api/v1/threads/{t}/read"),
        &user_token("sam", &["L1"]),
        json!({}),
        200,
    )
    .await;
    let (status, again) = app.inbound_json(req).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["message"], first["message"]);
    assert_eq!(
        again["thread"]["unread"], false,
        "the repeat does not make the thread unread: {again}"
    );
    assert_eq!(again["thread"]["unread_count"], 0);
}

#[tokio::test]
async fn a_repeated_external_id_with_another_body_still_returns_the_original_message() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest_json(
        &app,
        json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "original"}),
    )
    .await;
    let (status, again) = app
        .inbound_json(json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "retry with other text"}))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["message"], first["message"]);
    assert_eq!(again["message"]["body"], "original");
}

// ---------------------------------------------------------------------------------------
// Validation

#[tokio::test]
async fn an_unknown_to_number_is_rejected_naming_to() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, body) = app.inbound("SM1", CUSTOMER, "+15550009999", "hi").await;
    assert_invalid(status, &body, "to");
}

#[tokio::test]
async fn a_malformed_from_number_is_rejected_naming_from() {
    let app = spawn_app().await;
    app.seed().await;
    for bad in ["not-a-phone", "+1555CALLNOW", "12", ""] {
        let (status, body) = app.inbound("SM1", bad, L1_SMS, "hi").await;
        assert_invalid(status, &body, "from");
    }
}

#[tokio::test]
async fn an_empty_body_without_attachments_is_rejected_naming_body() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, body) = app.inbound("SM1", CUSTOMER, L1_SMS, "").await;
    assert_invalid(status, &body, "body");
    let (status, body) = app
        .inbound_json(json!({"external_id": "SM2", "from": CUSTOMER, "to": L1_SMS, "body": "", "attachments": []}))
        .await;
    assert_invalid(status, &body, "body");
    assert!(
        mine_ids(&app, &user_token("sam", &["L1"])).await.is_empty(),
        "no thread was created"
    );
}

#[tokio::test]
async fn an_empty_body_with_attachments_is_accepted() {
    let app = spawn_app().await;
    app.seed().await;
    let body = ingest_json(
        &app,
        json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "", "attachments": attachments(1)}),
    )
    .await;
    assert_eq!(body["message"]["body"], "");
    assert_eq!(body["message"]["attachments"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn twenty_attachments_are_accepted_but_twenty_one_are_rejected() {
    let app = spawn_app().await;
    app.seed().await;
    let ok = ingest_json(
        &app,
        json!({"external_id": "SM20", "from": CUSTOMER, "to": L1_SMS, "body": "", "attachments": attachments(20)}),
    )
    .await;
    assert_eq!(ok["message"]["attachments"].as_array().unwrap().len(), 20);
    let (status, body) = app
        .inbound_json(
            json!({"external_id": "SM21", "from": CUSTOMER, "to": L1_SMS, "body": "", "attachments": attachments(21)}),
        )
        .await;
    assert_invalid(status, &body, "attachments");
    assert_eq!(
        thread(&app, &thread_id(&ok), &user_token("sam", &["L1"])).await["unread_count"],
        1,
        "the refused message was not added"
    );
}

#[tokio::test]
async fn attachments_keep_their_url_and_content_type_and_get_distinct_ids() {
    let app = spawn_app().await;
    app.seed().await;
    let sent = json!([
        {"url": "https://media.example/a.jpg", "content_type": "image/jpeg"},
        {"url": "https://media.example/b.pdf", "content_type": "application/pdf"},
        {"url": "https://media.example/c.png", "content_type": "image/png"}
    ]);
    let body = ingest_json(
        &app,
        json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "pics", "attachments": sent}),
    )
    .await;
    let got = body["message"]["attachments"].as_array().unwrap().clone();
    assert_eq!(got.len(), 3);
    let mut ids = std::collections::BTreeSet::new();
    for (g, s) in got.iter().zip(sent.as_array().unwrap()) {
        assert_eq!(g["url"], s["url"]);
        assert_eq!(g["content_type"], s["content_type"]);
        let id = g["id"].as_str().expect("attachment id");
        assert!(
            (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)),
            "attachment ids follow the id rules: {id}"
        );
        ids.insert(id.to_owned());
    }
    assert_eq!(ids.len(), 3, "attachment ids are distinct: {got:?}");
    // The stored message carries the same attachments.
    let t = thread_id(&body);
    let stored = all_messages(
        &app,
        &format!("/api/v1/threads/{t}/messages"),
        &user_token("sam", &["L1"]),
    )
    .await;
    assert_eq!(stored, vec![body["message"].clone()]);
}

/// Posts one message with `attachment` as its only attachment; returns (status, body).
async fn with_attachment(app: &TestApp, external_id: &str, attachment: Value) -> (u16, Value) {
    app.inbound_json(
        json!({"external_id": external_id, "from": CUSTOMER, "to": L1_SMS, "body": "", "attachments": [attachment]}),
    )
    .await
}

/// Asserts that nothing was stored for the refused messages: no thread, so no message.
async fn nothing_stored(app: &TestApp) {
    subscribe(app, &user_token("olga", &["L1"]), true).await;
    assert!(
        mine_ids(app, &user_token("olga", &["L1"])).await.is_empty(),
        "a refused message stores nothing"
    );
}

#[tokio::test]
async fn an_attachment_url_that_is_not_a_plain_http_url_is_rejected_naming_it() {
    let app = spawn_app().await;
    app.seed().await;
    for (i, bad) in [
        "http://media.example/a b.jpg",
        "http://media.example/a\nb.jpg",
        "http://media.example/a\r\nb.jpg",
        "http://media.example/a\tb.jpg",
        " https://media.example/a.jpg",
        "javascript:alert(1)",
        "ftp://media.example/1.jpg",
        "http://",
        "https:///1.jpg",
        "http:media.example/1.jpg",
        "data:image/png;base64,AAAA",
        "/relative/1.jpg",
        "",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = with_attachment(
            &app,
            &format!("SM{i}"),
            json!({"url": bad, "content_type": "image/jpeg"}),
        )
        .await;
        assert_invalid(status, &body, "attachments[0].url");
        assert_eq!(body["field"], "attachments[0].url", "{bad:?}: {body}");
    }
    let long = format!("https://media.example/{}", "a".repeat(2048));
    let (status, body) = with_attachment(&app, "SM-long", json!({"url": long, "content_type": "image/jpeg"})).await;
    assert_invalid(status, &body, "attachments[0].url");
    nothing_stored(&app).await;
}

#[tokio::test]
async fn an_attachment_content_type_that_is_not_a_media_type_is_rejected_naming_it() {
    let app = spawn_app().await;
    app.seed().await;
    for (i, bad) in [
        "image/png\r\nX-Injected: 1",
        "image/png\n",
        "image",
        "image/",
        "",
        "   ",
        "image png",
        "*/*",
        "image/png; charset",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = with_attachment(
            &app,
            &format!("SM{i}"),
            json!({"url": "https://media.example/1.png", "content_type": bad}),
        )
        .await;
        assert_invalid(status, &body, "attachments[0].content_type");
        assert_eq!(body["field"], "attachments[0].content_type", "{bad:?}: {body}");
    }
    nothing_stored(&app).await;
}

#[tokio::test]
async fn a_bad_attachment_after_good_ones_is_named_by_its_index_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, body) = app
        .inbound_json(
            json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "pics", "attachments": [
                {"url": "https://media.example/1.jpg", "content_type": "image/jpeg"},
                {"url": "https://media.example/2.jpg", "content_type": "image/jpeg"},
                {"url": "https://media.example/3.jpg", "content_type": "image/png\r\nX-Injected: 1"}
            ]}),
        )
        .await;
    assert_invalid(status, &body, "attachments[2].content_type");
    let (status, body) = app
        .inbound_json(
            json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "pics", "attachments": [
                {"url": "https://media.example/1.jpg", "content_type": "image/jpeg"},
                {"content_type": "image/jpeg"}
            ]}),
        )
        .await;
    assert_invalid(status, &body, "attachments[1].url");
    nothing_stored(&app).await;
    // The external id was not used up.
    ingest(&app, "SM1", CUSTOMER).await;
}

#[tokio::test]
async fn good_attachment_urls_and_content_types_are_stored_in_normal_form() {
    let app = spawn_app().await;
    app.seed().await;
    let cases = [
        // (url, content type, stored url, stored content type)
        (
            "https://media.example/a.jpg?size=large&sig=a%2Fb%3D#top",
            "image/jpeg",
            "https://media.example/a.jpg?size=large&sig=a%2Fb%3D#top",
            "image/jpeg",
        ),
        (
            "https://media.example/caf%C3%A9%20menu.jpg",
            "image/jpeg; charset=binary",
            "https://media.example/caf%C3%A9%20menu.jpg",
            "image/jpeg; charset=binary",
        ),
        (
            "HTTP://Media.Example:8080/x.png",
            "IMAGE/PNG",
            "http://media.example:8080/x.png",
            "image/png",
        ),
        (
            "https://media.example",
            "application/pdf;name=\"menu card.pdf\"",
            "https://media.example/",
            "application/pdf; name=\"menu card.pdf\"",
        ),
    ];
    let sent: Vec<Value> = cases
        .iter()
        .map(|(url, ct, _, _)| json!({"url": url, "content_type": ct}))
        .collect();
    let body = ingest_json(
        &app,
        json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "", "attachments": sent}),
    )
    .await;
    let stored = all_messages(
        &app,
        &format!("/api/v1/threads/{}/messages", thread_id(&body)),
        &user_token("sam", &["L1"]),
    )
    .await;
    assert_eq!(stored, vec![body["message"].clone()]);
    for (got, (_, _, url, ct)) in body["message"]["attachments"].as_array().unwrap().iter().zip(cases) {
        assert_eq!(got["url"], url, "{got}");
        assert_eq!(got["content_type"], ct, "{got}");
    }
}

#[tokio::test]
async fn a_received_at_more_than_five_minutes_ahead_is_rejected_naming_it() {
    let app = spawn_app().await;
    app.seed().await;
    let ahead = |d: time::Duration| {
        (time::OffsetDateTime::now_utc() + d)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for (i, at) in [
        "9999-12-31T23:59:59Z".to_owned(),
        ahead(time::Duration::hours(1)),
        ahead(time::Duration::minutes(6)),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = app
            .inbound_json(json!({"external_id": format!("SM{i}"), "from": CUSTOMER, "to": L1_SMS, "body": "hi", "received_at": at}))
            .await;
        assert_invalid(status, &body, "received_at");
    }
    nothing_stored(&app).await;
    // A sender's clock a little fast is fine.
    let body = ingest_at(&app, "SM-skew", CUSTOMER, &ahead(time::Duration::minutes(4))).await;
    assert_eq!(body["message"]["external_id"], "SM-skew");
}

#[tokio::test]
async fn a_received_at_before_1970_is_rejected_naming_it() {
    let app = spawn_app().await;
    app.seed().await;
    for (i, at) in [
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:30:00+01:00",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = app
            .inbound_json(json!({"external_id": format!("SM{i}"), "from": CUSTOMER, "to": L1_SMS, "body": "hi", "received_at": at}))
            .await;
        assert_invalid(status, &body, "received_at");
    }
    nothing_stored(&app).await;
    let body = ingest_at(&app, "SM-epoch", CUSTOMER, "1970-01-01T00:00:00Z").await;
    assert_eq!(
        instant(&body["message"]["created_at"]),
        time::OffsetDateTime::UNIX_EPOCH
    );
}

#[tokio::test]
async fn a_received_at_that_is_not_rfc_3339_is_rejected_naming_it() {
    let app = spawn_app().await;
    app.seed().await;
    for (i, at) in [json!("2024-03-01 10:00:00"), json!("yesterday"), json!(1709287200)]
        .into_iter()
        .enumerate()
    {
        let (status, body) = app
            .inbound_json(json!({"external_id": format!("SM{i}"), "from": CUSTOMER, "to": L1_SMS, "body": "hi", "received_at": at}))
            .await;
        assert_invalid(status, &body, "received_at");
    }
}

// ---------------------------------------------------------------------------------------
// Auto-assignment

#[tokio::test]
async fn a_thread_is_assigned_to_the_one_folder_that_lists_the_sender() {
    let app = spawn_app().await;
    app.seed().await;
    let body = ingest(&app, "SM1", CUSTOMER).await;
    assert_eq!(body["thread"]["folder_id"], "F1");
}

#[tokio::test]
async fn a_folder_listing_the_sender_in_national_format_still_matches() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["(555) 222-3333"], None, None).await;
    let body = ingest(&app, "SM1", "+15552223333").await;
    assert_eq!(body["thread"]["folder_id"], "F2");
}

#[tokio::test]
async fn a_thread_stays_unassigned_when_no_folder_lists_the_sender() {
    let app = spawn_app().await;
    app.seed().await;
    let body = ingest(&app, "SM1", "+15559990000").await;
    assert_eq!(body["thread"]["folder_id"], json!(null));
}

#[tokio::test]
async fn a_thread_stays_unassigned_when_two_folders_list_the_sender() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &[CUSTOMER], None, None).await;
    let body = ingest(&app, "SM1", CUSTOMER).await;
    assert_eq!(body["thread"]["folder_id"], json!(null));
}

#[tokio::test]
async fn only_folders_at_the_threads_location_count_when_matching_the_sender() {
    // v1.1: a folder at another location neither takes the thread nor makes it ambiguous.
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.folder("F2", "L2", &[CUSTOMER], None, None).await;
    let body = ingest(&app, "SM1", CUSTOMER).await;
    assert_eq!(body["thread"]["folder_id"], "F1");
    app.folder("F3", "L2", &["+15559990000"], None, None).await;
    let alone = ingest(&app, "SM2", "+15559990000").await;
    assert_eq!(alone["thread"]["folder_id"], json!(null), "F3 is at L2");
}

#[tokio::test]
async fn an_unassigned_thread_is_assigned_by_a_later_message_once_one_folder_lists_the_sender() {
    let app = spawn_app().await;
    app.seed().await;
    let stranger = "+15559990000";
    let first = ingest(&app, "SM1", stranger).await;
    assert_eq!(first["thread"]["folder_id"], json!(null));
    app.folder("F2", "L1", &[stranger], Some("sam"), None).await;
    let second = ingest(&app, "SM2", stranger).await;
    assert_eq!(thread_id(&second), thread_id(&first));
    assert_eq!(second["thread"]["folder_id"], "F2");
    assert_eq!(second["thread"]["unread_count"], 2);
}

#[tokio::test]
async fn an_assigned_thread_keeps_its_folder_when_another_folder_later_lists_the_sender() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    assert_eq!(first["thread"]["folder_id"], "F1");
    app.folder("F2", "L1", &[CUSTOMER], None, None).await;
    let second = ingest(&app, "SM2", CUSTOMER).await;
    assert_eq!(thread_id(&second), thread_id(&first));
    assert_eq!(second["thread"]["folder_id"], "F1");
}

#[tokio::test]
async fn an_assigned_thread_keeps_its_folder_when_another_folder_becomes_the_only_match() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    assert_eq!(first["thread"]["folder_id"], "F1");
    app.folder("F1", "L1", &["+15550007777"], Some("sam"), Some("sue"))
        .await;
    app.folder("F2", "L1", &[CUSTOMER], None, None).await;
    let second = ingest(&app, "SM2", CUSTOMER).await;
    assert_eq!(second["thread"]["folder_id"], "F1");
}

#[tokio::test]
async fn a_thread_assigned_by_hand_keeps_that_folder_on_the_next_message() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15558880000"], None, None).await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    post_expect(
        &app,
        &format!("/api/v1/threads/{t}/assign"),
        &user_token("olga", &["L1"]),
        json!({"folder_id": "F2"}),
        200,
    )
    .await;
    let next = ingest(&app, "SM2", CUSTOMER).await;
    assert_eq!(next["thread"]["folder_id"], "F2");
}
