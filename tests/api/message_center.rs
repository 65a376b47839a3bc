//! Message Center (roles `user`, `admin`): who sees which thread, read state, replies,
//! assignment, folder search, the Communications tab and linked photos.

use serde_json::{Value, json};

use crate::helpers::http::*;
use crate::helpers::*;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

const STRANGER: &str = "+15559990000";

fn sam() -> String {
    user_token("sam", &["L1"])
}
fn sue() -> String {
    user_token("sue", &["L1"])
}
fn olga() -> String {
    user_token("olga", &["L1"])
}

async fn read(app: &TestApp, t: &str, tok: &str) -> Value {
    post_expect(app, &format!("/api/v1/threads/{t}/read"), tok, json!({}), 200).await
}

async fn unread(app: &TestApp, t: &str, tok: &str) -> Value {
    post_expect(app, &format!("/api/v1/threads/{t}/unread"), tok, json!({}), 200).await
}

async fn assign(app: &TestApp, t: &str, folder: &str, tok: &str) -> Value {
    post_expect(
        app,
        &format!("/api/v1/threads/{t}/assign"),
        tok,
        json!({"folder_id": folder}),
        200,
    )
    .await
}

async fn folder_ids(app: &TestApp, query: &str, tok: &str) -> Vec<String> {
    let list = get_ok(app, &format!("/api/v1/folders{query}"), tok).await;
    let arr = list
        .as_array()
        .unwrap_or_else(|| panic!("folder search answers an array: {list}"));
    arr.iter().for_each(assert_folder_shape);
    sorted(ids(arr))
}

fn image_attachments() -> Value {
    json!([
        {"url": "https://media.example/a.jpg", "content_type": "image/jpeg"},
        {"url": "https://media.example/b.pdf", "content_type": "application/pdf"},
        {"url": "https://media.example/c.png", "content_type": "image/png"}
    ])
}

/// Ingests a message with one jpeg, one pdf and one png from `from`.
async fn ingest_photos(app: &TestApp, ext: &str, from: &str) -> Value {
    ingest_json(
        app,
        json!({"external_id": ext, "from": from, "to": L1_SMS, "body": "photos", "attachments": image_attachments()}),
    )
    .await
}

fn unread_state(t: &Value) -> (Value, Value) {
    (t["unread"].clone(), t["unread_count"].clone())
}

// ---------------------------------------------------------------------------------------
// /me and the mine view

#[tokio::test]
async fn me_describes_the_caller() {
    let app = spawn_app().await;
    app.seed().await;
    let me = me(&app, &user_token("sam", &["L1", "L2"])).await;
    assert_eq!(
        keys(&me),
        set(&[
            "user_id",
            "tenant",
            "name",
            "locations",
            "subscribe_all",
            "unread_count"
        ]),
        "{me}"
    );
    assert_eq!(me["user_id"], "sam");
    assert_eq!(me["tenant"], TENANT);
    assert_eq!(sorted(strs(&me["locations"])), vec!["L1", "L2"]);
    assert_eq!(me["subscribe_all"], false, "subscribe_all is off by default");
    assert_eq!(me["unread_count"], 0);
    assert!(me["name"].is_string() || me["name"].is_null(), "{me}");
}

#[tokio::test]
async fn the_sales_and_the_service_resource_see_the_thread_under_mine() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    for tok in [sam(), sue()] {
        let list = mine(&app, &tok).await;
        assert_eq!(ids(&list), vec![t.clone()]);
        assert_thread_shape(&list[0]);
        assert_eq!(unread_of(&app, &tok).await, 1);
    }
}

#[tokio::test]
async fn mine_is_the_default_view() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    assert_eq!(ids(&threads(&app, "", &sam()).await), vec![t]);
    assert!(threads(&app, "", &olga()).await.is_empty());
}

#[tokio::test]
async fn an_operator_who_is_no_resource_sees_no_threads_by_default() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    ingest(&app, "SM2", STRANGER).await;
    assert!(mine(&app, &olga()).await.is_empty());
    assert_eq!(unread_of(&app, &olga()).await, 0);
    assert_eq!(mine_ids(&app, &sam()).await, vec![t], "the resource does see it");
}

#[tokio::test]
async fn a_thread_without_a_folder_is_seen_only_by_subscribers() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", STRANGER).await);
    assert!(mine(&app, &sam()).await.is_empty());
    assert!(mine(&app, &sue()).await.is_empty());
    subscribe(&app, &olga(), true).await;
    assert_eq!(mine_ids(&app, &olga()).await, vec![t]);
}

#[tokio::test]
async fn subscribing_to_all_answers_me_and_changes_the_mine_view_at_once() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    let t1 = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let t2 = thread_id(&ingest(&app, "SM2", STRANGER).await);
    let (status, elsewhere) = app.inbound("SM3", STRANGER, "+15550002222", "other branch").await;
    assert_eq!(status, 201, "{elsewhere}");

    let on = subscribe(&app, &olga(), true).await;
    assert_eq!(on["user_id"], "olga");
    assert_eq!(on["subscribe_all"], true);
    assert_eq!(on["unread_count"], 2, "every thread of L1, none of L2: {on}");
    assert_eq!(me(&app, &olga()).await, on);
    assert_eq!(sorted(mine_ids(&app, &olga()).await), sorted(vec![t1, t2]));

    let off = subscribe(&app, &olga(), false).await;
    assert_eq!(off["subscribe_all"], false);
    assert_eq!(off["unread_count"], 0);
    assert!(mine(&app, &olga()).await.is_empty());
}

#[tokio::test]
async fn turning_off_notify_sales_resource_removes_the_sales_resource_from_mine_and_from_the_resource_view() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    set_preferences(
        &app,
        json!({"notify_sales_resource": false, "notify_service_resource": true}),
    )
    .await;

    assert!(mine(&app, &sam()).await.is_empty());
    assert_eq!(unread_of(&app, &sam()).await, 0);
    assert!(resource_view(&app, "sam", &olga()).await.is_empty());
    assert_eq!(mine_ids(&app, &sue()).await, vec![t.clone()]);
    assert_eq!(resource_view(&app, "sue", &olga()).await, vec![t.clone()]);

    subscribe(&app, &sam(), true).await;
    assert_eq!(
        mine_ids(&app, &sam()).await,
        vec![t.clone()],
        "a subscriber sees it whatever the preference"
    );
    subscribe(&app, &sam(), false).await;

    set_preferences(&app, json!({"notify_sales_resource": true})).await;
    assert_eq!(mine_ids(&app, &sam()).await, vec![t.clone()]);
    assert_eq!(resource_view(&app, "sam", &olga()).await, vec![t]);
}

#[tokio::test]
async fn turning_off_notify_service_resource_removes_the_service_resource_from_mine_and_from_the_resource_view() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    set_preferences(
        &app,
        json!({"notify_sales_resource": true, "notify_service_resource": false}),
    )
    .await;

    assert!(mine(&app, &sue()).await.is_empty());
    assert_eq!(unread_of(&app, &sue()).await, 0);
    assert!(resource_view(&app, "sue", &olga()).await.is_empty());
    assert_eq!(mine_ids(&app, &sam()).await, vec![t.clone()]);
    assert_eq!(resource_view(&app, "sam", &olga()).await, vec![t.clone()]);

    set_preferences(&app, json!({"notify_service_resource": true})).await;
    assert_eq!(mine_ids(&app, &sue()).await, vec![t.clone()]);
    assert_eq!(resource_view(&app, "sue", &olga()).await, vec![t]);
}

#[tokio::test]
async fn a_user_not_granted_the_threads_location_never_sees_it_even_as_its_resource_or_a_subscriber() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    assert_eq!(mine_ids(&app, &sam()).await, vec![t.clone()], "granted L1, sam sees it");
    let sam_elsewhere = user_token("sam", &["L2"]);
    assert!(mine(&app, &sam_elsewhere).await.is_empty());
    assert_eq!(unread_of(&app, &sam_elsewhere).await, 0);
    subscribe(&app, &sam_elsewhere, true).await;
    assert!(mine(&app, &sam_elsewhere).await.is_empty());
    assert_eq!(unread_of(&app, &sam_elsewhere).await, 0);
    assert!(resource_view(&app, "sam", &sam_elsewhere).await.is_empty());
    problem(app.get(&format!("/api/v1/threads/{t}"), &sam_elsewhere).await, 403).await;
    problem(
        app.get(&format!("/api/v1/threads/{t}/messages"), &sam_elsewhere).await,
        403,
    )
    .await;
}

#[tokio::test]
async fn me_unread_count_is_the_sum_over_the_mine_view() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15552220000"], Some("sam"), None).await;
    ingest(&app, "SM1", CUSTOMER).await;
    ingest(&app, "SM2", CUSTOMER).await;
    let t2 = thread_id(&ingest(&app, "SM3", "+15552220000").await);
    ingest(&app, "SM4", STRANGER).await;

    let list = mine(&app, &sam()).await;
    assert_eq!(list.len(), 2);
    let sum: u64 = list.iter().map(|t| t["unread_count"].as_u64().unwrap()).sum();
    assert_eq!(sum, 3);
    assert_eq!(unread_of(&app, &sam()).await, 3);
    assert_eq!(unread_of(&app, &sue()).await, 2);

    read(&app, &t2, &sam()).await;
    assert_eq!(unread_of(&app, &sam()).await, 2);

    subscribe(&app, &sam(), true).await;
    assert_eq!(unread_of(&app, &sam()).await, 3, "the unassigned thread joins the sum");
}

// ---------------------------------------------------------------------------------------
// Resources and the resource view

#[tokio::test]
async fn resources_lists_the_resources_of_folders_in_the_callers_locations_with_their_names() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.user("zed", "Zed Zone").await;
    app.folder("F2", "L2", &["+15552220000"], Some("zed"), None).await;
    app.folder("F3", "L1", &["+15553330000"], Some("sam"), Some("newbie"))
        .await;

    let mut list = get_ok(&app, "/api/v1/resources", &olga())
        .await
        .as_array()
        .expect("an array")
        .clone();
    list.sort_by_key(|r| r["user_id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        list,
        vec![
            json!({"user_id": "newbie", "name": null}),
            json!({"user_id": "sam", "name": "Sam Sales"}),
            json!({"user_id": "sue", "name": "Sue Service"}),
        ],
        "each resource once, names from the directory, none from L2"
    );

    let both = get_ok(&app, "/api/v1/resources", &user_token("olga", &["L1", "L2"])).await;
    assert!(
        both.as_array()
            .unwrap()
            .contains(&json!({"user_id": "zed", "name": "Zed Zone"})),
        "{both}"
    );
    let l2 = get_ok(&app, "/api/v1/resources", &user_token("olga", &["L2"])).await;
    assert_eq!(l2, json!([{"user_id": "zed", "name": "Zed Zone"}]));
}

#[tokio::test]
async fn the_resource_view_lists_threads_on_folders_where_the_user_is_a_resource() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15552220000"], Some("sue"), None).await;
    let t1 = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let t2 = thread_id(&ingest(&app, "SM2", "+15552220000").await);
    ingest(&app, "SM3", STRANGER).await;

    assert_eq!(resource_view(&app, "sam", &olga()).await, vec![t1.clone()]);
    assert_eq!(sorted(resource_view(&app, "sue", &olga()).await), sorted(vec![t1, t2]));
    assert!(resource_view(&app, "olga", &olga()).await.is_empty());
    let page = get_ok(&app, "/api/v1/threads?view=resource&resource_id=sam", &olga()).await;
    assert_eq!(keys(&page), set(&["next", "threads"]));
    assert_thread_shape(&page["threads"][0]);
}

#[tokio::test]
async fn the_resource_view_is_limited_to_the_callers_locations() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.folder("F2", "L2", &["+15552220000"], Some("sam"), None).await;
    let t1 = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let (status, b) = app.inbound("SM2", "+15552220000", "+15550002222", "hi").await;
    assert_eq!(status, 201, "{b}");
    let t2 = thread_id(&b);

    assert_eq!(resource_view(&app, "sam", &olga()).await, vec![t1.clone()]);
    assert_eq!(
        resource_view(&app, "sam", &user_token("olga", &["L2"])).await,
        vec![t2.clone()]
    );
    assert_eq!(
        sorted(resource_view(&app, "sam", &user_token("olga", &["L1", "L2"])).await),
        sorted(vec![t1, t2])
    );
}

#[tokio::test]
async fn view_must_be_mine_or_resource_and_the_resource_view_needs_a_resource_id() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, body) = get(&app, "/api/v1/threads?view=everything", &olga()).await;
    assert_invalid(status, &body, "view");
    let (status, body) = get(&app, "/api/v1/threads?view=resource", &olga()).await;
    assert_invalid(status, &body, "resource_id");
}

// ---------------------------------------------------------------------------------------
// Filters and paging

#[tokio::test]
async fn unread_only_lists_only_unread_threads() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15552220000"], Some("sam"), None).await;
    let t1 = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let t2 = thread_id(&ingest(&app, "SM2", "+15552220000").await);
    read(&app, &t1, &sam()).await;

    assert_eq!(
        ids(&threads(&app, "?view=mine&unread_only=true", &sam()).await),
        vec![t2.clone()]
    );
    assert_eq!(
        sorted(ids(&threads(&app, "?view=mine&unread_only=false", &sam()).await)),
        sorted(vec![t1.clone(), t2.clone()])
    );
    assert_eq!(
        ids(&threads(&app, "?view=resource&resource_id=sam&unread_only=true", &olga()).await),
        vec![t2]
    );
    assert_eq!(
        ids(&threads(&app, "?view=resource&resource_id=sue&unread_only=true", &olga()).await),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn threads_are_listed_newest_first_in_pages_of_limit() {
    let app = spawn_app().await;
    app.seed().await;
    subscribe(&app, &olga(), true).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let b = ingest_at(
            &app,
            &format!("SM{i}"),
            &format!("+1555100000{i}"),
            &format!("2024-01-01T10:0{i}:00Z"),
        )
        .await;
        created.push(thread_id(&b));
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut url = "/api/v1/threads?view=mine&limit=2".to_owned();
    let mut sizes = Vec::new();
    loop {
        let page = get_ok(&app, &url, &olga()).await;
        let list = page["threads"].as_array().expect("threads").clone();
        sizes.push(list.len());
        seen.extend(ids(&list));
        match page["next"].as_str() {
            Some(c) => url = format!("/api/v1/threads?view=mine&limit=2&before={}", encode(c)),
            None => {
                assert!(page["next"].is_null(), "{page}");
                break;
            }
        }
        assert!(sizes.len() < 10, "paging ends");
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(seen, newest_first);

    // A new message moves its thread to the top.
    ingest_at(&app, "SM-late", "+15551000000", "2024-01-01T11:00:00Z").await;
    let first = threads(&app, "?view=mine&limit=2", &olga()).await;
    assert_eq!(ids(&first), vec![created[0].clone(), created[4].clone()]);
}

// ---------------------------------------------------------------------------------------
// A thread and its messages

#[tokio::test]
async fn a_thread_and_its_messages_oldest_first_are_open_to_any_user_granted_its_location() {
    let app = spawn_app().await;
    app.seed().await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(ingest_at(&app, &format!("SM{i}"), CUSTOMER, &format!("2024-01-01T10:0{i}:00Z")).await);
    }
    let t = thread_id(&sent[0]);

    // olga is neither a resource nor subscribed.
    let got = thread(&app, &t, &olga()).await;
    assert_thread_shape(&got);
    assert_eq!(got, thread(&app, &t, &sam()).await);
    assert_eq!(got["id"], t.as_str());
    assert_eq!(got["unread_count"], 3);
    assert_eq!(got["last_message"], sent[2]["message"]);

    let page = get_ok(&app, &format!("/api/v1/threads/{t}/messages"), &olga()).await;
    assert_eq!(keys(&page), set(&["messages", "next"]));
    assert_eq!(page["next"], json!(null));
    let messages = page["messages"].as_array().unwrap().clone();
    messages.iter().for_each(assert_message_shape);
    assert_eq!(messages, sent.iter().map(|s| s["message"].clone()).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_unknown_thread_is_not_found() {
    let app = spawn_app().await;
    app.seed().await;
    problem(app.get("/api/v1/threads/t_nope", &olga()).await, 404).await;
    problem(app.get("/api/v1/threads/t_nope/messages", &olga()).await, 404).await;
    problem(app.post("/api/v1/threads/t_nope/read", &olga(), json!({})).await, 404).await;
}

#[tokio::test]
async fn a_threads_messages_page_through_without_gaps_or_repeats() {
    let app = spawn_app().await;
    app.seed().await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(message_id(
            &ingest_at(&app, &format!("SM{i}"), CUSTOMER, &format!("2024-01-01T10:0{i}:00Z")).await,
        ));
    }
    let t = {
        let list = mine(&app, &sam()).await;
        ids(&list)[0].clone()
    };
    let first = get_ok(&app, &format!("/api/v1/threads/{t}/messages?limit=2"), &sam()).await;
    let page = first["messages"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert!(
        instant(&page[0]["created_at"]) < instant(&page[1]["created_at"]),
        "oldest first within a page"
    );
    assert!(first["next"].is_string(), "{first}");

    let all = all_messages(&app, &format!("/api/v1/threads/{t}/messages?limit=2"), &sam()).await;
    assert_eq!(sorted(ids(&all)), sorted(sent));
}

// ---------------------------------------------------------------------------------------
// Read / unread

#[tokio::test]
async fn marking_a_thread_read_is_shared_by_everyone_and_idempotent() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    ingest(&app, "SM2", CUSTOMER).await;

    let r = read(&app, &t, &sam()).await;
    assert_thread_shape(&r);
    assert_eq!(unread_state(&r), (json!(false), json!(0)));
    assert_eq!(unread_state(&thread(&app, &t, &sue()).await), (json!(false), json!(0)));
    assert_eq!(unread_of(&app, &sue()).await, 0);
    assert_eq!(unread_of(&app, &sam()).await, 0);

    let again = read(&app, &t, &sue()).await;
    assert_eq!(unread_state(&again), (json!(false), json!(0)));
    assert_eq!(again["last_message"], r["last_message"]);
}

#[tokio::test]
async fn marking_a_read_thread_unread_makes_one_message_unread_again_for_everyone() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    ingest(&app, "SM2", CUSTOMER).await;
    read(&app, &t, &sam()).await;

    let u = unread(&app, &t, &sue()).await;
    assert_thread_shape(&u);
    assert_eq!(unread_state(&u), (json!(true), json!(1)));
    assert_eq!(unread_state(&thread(&app, &t, &sam()).await), (json!(true), json!(1)));
    assert_eq!(unread_of(&app, &sam()).await, 1);

    let again = unread(&app, &t, &sam()).await;
    assert_eq!(unread_state(&again), (json!(true), json!(1)), "idempotent");
}

#[tokio::test]
async fn marking_an_unread_thread_unread_keeps_its_count() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    ingest(&app, "SM2", CUSTOMER).await;
    ingest(&app, "SM3", CUSTOMER).await;
    let u = unread(&app, &t, &sam()).await;
    assert_eq!(unread_state(&u), (json!(true), json!(3)));
}

// ---------------------------------------------------------------------------------------
// Replies

#[tokio::test]
async fn a_reply_is_an_outbound_message_by_the_caller_and_marks_the_thread_read() {
    let app = spawn_app().await;
    app.seed().await;
    let first = ingest(&app, "SM1", CUSTOMER).await;
    let second = ingest(&app, "SM2", CUSTOMER).await;
    let t = thread_id(&first);

    let reply = post_expect(
        &app,
        &format!("/api/v1/threads/{t}/replies"),
        &sam(),
        json!({"body": "On our way"}),
        201,
    )
    .await;
    assert_message_shape(&reply);
    assert_eq!(reply["direction"], "outbound");
    assert_eq!(reply["author_id"], "sam");
    assert_eq!(reply["external_id"], json!(null));
    assert_eq!(reply["thread_id"], t.as_str());
    assert_eq!(reply["body"], "On our way");
    assert_eq!(reply["attachments"], json!([]));

    let now = thread(&app, &t, &sue()).await;
    assert_eq!(unread_state(&now), (json!(false), json!(0)));
    assert_eq!(now["last_message"], reply);
    assert_eq!(unread_of(&app, &sue()).await, 0);

    let messages = all_messages(&app, &format!("/api/v1/threads/{t}/messages"), &olga()).await;
    assert_eq!(
        messages,
        vec![first["message"].clone(), second["message"].clone(), reply]
    );

    let next = ingest(&app, "SM3", CUSTOMER).await;
    assert_eq!(
        unread_state(&next["thread"]),
        (json!(true), json!(1)),
        "counting restarts after the reply"
    );
}

#[tokio::test]
async fn a_reply_by_an_admin_carries_the_admins_id() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let reply = post_expect(
        &app,
        &format!("/api/v1/threads/{t}/replies"),
        &admin_token("ada", &["L1"]),
        json!({"body": "Hi"}),
        201,
    )
    .await;
    assert_eq!(reply["author_id"], "ada");
    assert_eq!(reply["direction"], "outbound");
}

// ---------------------------------------------------------------------------------------
// What never changes read state

#[tokio::test]
async fn assigning_linking_images_and_directory_changes_leave_an_unread_thread_unread() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15558880000"], Some("sam"), None).await;
    let first = ingest_photos(&app, "SM1", STRANGER).await;
    ingest(&app, "SM2", STRANGER).await;
    let t = thread_id(&first);
    let expected = (json!(true), json!(2));

    assert_eq!(unread_state(&assign(&app, &t, "F1", &olga()).await), expected, "assign");
    post_expect(
        &app,
        &format!("/api/v1/messages/{}/link-images", message_id(&first)),
        &olga(),
        json!({}),
        200,
    )
    .await;
    assert_eq!(unread_state(&thread(&app, &t, &olga()).await), expected, "link-images");
    app.put_ok(
        "/api/v1/folders/F1",
        json!({"name": "Renamed", "location_id": "L1", "phone_numbers": [CUSTOMER], "sales_resource_id": "sam", "service_resource_id": "sue"}),
    )
    .await;
    app.user("sam", "Sam Renamed").await;
    app.put_ok(
        "/api/v1/locations/L1",
        json!({"name": "Renamed", "sms_numbers": [L1_SMS]}),
    )
    .await;
    set_preferences(&app, json!({"notify_sales_resource": false})).await;
    assert_eq!(
        unread_state(&thread(&app, &t, &olga()).await),
        expected,
        "directory changes"
    );
    assert_eq!(
        unread_state(&assign(&app, &t, "F2", &olga()).await),
        expected,
        "re-assign"
    );
}

#[tokio::test]
async fn assigning_linking_images_and_directory_changes_leave_a_read_thread_read() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15558880000"], Some("sam"), None).await;
    let first = ingest_photos(&app, "SM1", STRANGER).await;
    let t = thread_id(&first);
    read(&app, &t, &olga()).await;
    let expected = (json!(false), json!(0));

    assert_eq!(unread_state(&assign(&app, &t, "F1", &olga()).await), expected, "assign");
    post_expect(
        &app,
        &format!("/api/v1/messages/{}/link-images", message_id(&first)),
        &olga(),
        json!({}),
        200,
    )
    .await;
    assert_eq!(unread_state(&thread(&app, &t, &olga()).await), expected, "link-images");
    app.folder("F1", "L1", &[CUSTOMER, STRANGER], Some("sue"), Some("sam"))
        .await;
    app.user("sue", "Sue Renamed").await;
    set_preferences(&app, json!({"notify_service_resource": false})).await;
    assert_eq!(
        unread_state(&thread(&app, &t, &olga()).await),
        expected,
        "directory changes"
    );
    assert_eq!(
        unread_state(&assign(&app, &t, "F2", &olga()).await),
        expected,
        "re-assign"
    );
}

// ---------------------------------------------------------------------------------------
// Assigning

#[tokio::test]
async fn assigning_a_thread_answers_it_with_its_new_folder_and_moves_its_audience() {
    let app = spawn_app().await;
    app.seed().await;
    app.user("sid", "Sid Sales").await;
    app.folder("F2", "L1", &["+15558880000"], Some("sid"), None).await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);

    let assigned = assign(&app, &t, "F2", &olga()).await;
    assert_thread_shape(&assigned);
    assert_eq!(assigned["id"], t.as_str());
    assert_eq!(assigned["folder_id"], "F2");
    assert_eq!(thread(&app, &t, &olga()).await["folder_id"], "F2");

    let sid = user_token("sid", &["L1"]);
    assert_eq!(mine_ids(&app, &sid).await, vec![t.clone()]);
    assert_eq!(unread_of(&app, &sid).await, 1);
    assert!(mine(&app, &sam()).await.is_empty());
    assert_eq!(unread_of(&app, &sam()).await, 0);

    let again = assign(&app, &t, "F2", &olga()).await;
    assert_eq!(again["folder_id"], "F2", "assigning to the same folder is a no-op");
}

#[tokio::test]
async fn assigning_an_unassigned_thread_brings_it_to_the_folders_resources() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", STRANGER).await);
    assert!(mine(&app, &sam()).await.is_empty());
    assign(&app, &t, "F1", &olga()).await;
    assert_eq!(mine_ids(&app, &sam()).await, vec![t]);
    assert_eq!(unread_of(&app, &sam()).await, 1);
}

#[tokio::test]
async fn assigning_to_a_folder_in_a_location_the_caller_lacks_is_forbidden() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.folder("F9", "L2", &["+15558880000"], None, None).await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);

    let r = app
        .post(
            &format!("/api/v1/threads/{t}/assign"),
            &olga(),
            json!({"folder_id": "F9"}),
        )
        .await;
    problem(r, 403).await;
    assert_eq!(thread(&app, &t, &olga()).await["folder_id"], "F1", "nothing changed");

    // Granted both: the folder is visible, but at another location than the thread's.
    let both = user_token("olga", &["L1", "L2"]);
    let r = app
        .post(
            &format!("/api/v1/threads/{t}/assign"),
            &both,
            json!({"folder_id": "F9"}),
        )
        .await;
    assert_invalid(422, &problem(r, 422).await, "folder_id");
    assert_eq!(thread(&app, &t, &olga()).await["folder_id"], "F1", "nothing changed");
}

#[tokio::test]
async fn assigning_to_an_unknown_folder_is_not_found() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let r = app
        .post(
            &format!("/api/v1/threads/{t}/assign"),
            &olga(),
            json!({"folder_id": "F404"}),
        )
        .await;
    problem(r, 404).await;
    assert_eq!(thread(&app, &t, &olga()).await["folder_id"], "F1");
}

#[tokio::test]
async fn acting_on_a_thread_needs_its_location() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.folder("F2", "L2", &["+15558880000"], None, None).await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let outsider = user_token("sam", &["L2"]);
    for (path, body) in [
        ("read", json!({})),
        ("unread", json!({})),
        ("replies", json!({"body": "hi"})),
        ("assign", json!({"folder_id": "F2"})),
    ] {
        let r = app.post(&format!("/api/v1/threads/{t}/{path}"), &outsider, body).await;
        problem(r, 403).await;
    }
    let now = thread(&app, &t, &sam()).await;
    assert_eq!(unread_state(&now), (json!(true), json!(1)));
    assert_eq!(now["folder_id"], "F1");
    assert_eq!(
        all_messages(&app, &format!("/api/v1/threads/{t}/messages"), &sam())
            .await
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------
// Folder search

#[tokio::test]
async fn folder_search_by_phone_finds_folders_listing_the_number_in_the_callers_locations() {
    let app = spawn_app().await;
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.folder("F2", "L2", &[CUSTOMER], None, None).await;
    app.folder("F3", "L1", &["+15550009999"], None, None).await;

    assert_eq!(
        folder_ids(&app, &format!("?phone={}", encode(CUSTOMER)), &olga()).await,
        vec!["F1"]
    );
    assert_eq!(folder_ids(&app, "?phone=1234567", &olga()).await, vec!["F1"]);
    assert_eq!(
        folder_ids(&app, &format!("?phone={}", encode("(555) 123-4567")), &olga()).await,
        vec!["F1"]
    );
    assert_eq!(folder_ids(&app, "?phone=0009999", &olga()).await, vec!["F3"]);
    assert!(
        folder_ids(&app, &format!("?phone={}", encode("+15557777777")), &olga())
            .await
            .is_empty()
    );
    assert_eq!(folder_ids(&app, "", &olga()).await, vec!["F1", "F3"]);
    assert_eq!(
        folder_ids(
            &app,
            &format!("?phone={}", encode(CUSTOMER)),
            &user_token("olga", &["L1", "L2"])
        )
        .await,
        vec!["F1", "F2"]
    );
}

#[tokio::test]
async fn folder_search_by_name_is_a_case_insensitive_substring_within_the_callers_locations() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    app.location("L2", &["+15550002222"]).await;
    for (id, name, loc) in [
        ("F1", "Smith Kitchen", "L1"),
        ("F2", "Jones basement", "L1"),
        ("F3", "smithson roof", "L2"),
    ] {
        app.put_ok(
            &format!("/api/v1/folders/{id}"),
            json!({"name": name, "location_id": loc, "phone_numbers": [], "sales_resource_id": null, "service_resource_id": null}),
        )
        .await;
    }
    assert_eq!(folder_ids(&app, "?q=SMITH", &olga()).await, vec!["F1"]);
    assert_eq!(folder_ids(&app, "?q=kitch", &olga()).await, vec!["F1"]);
    assert_eq!(folder_ids(&app, "?q=BASE", &olga()).await, vec!["F2"]);
    assert!(folder_ids(&app, "?q=attic", &olga()).await.is_empty());
    assert_eq!(
        folder_ids(&app, "?q=smith", &user_token("olga", &["L1", "L2"])).await,
        vec!["F1", "F3"]
    );
}

// ---------------------------------------------------------------------------------------
// A folder and its Communications tab

#[tokio::test]
async fn a_folder_and_its_communications_tab_are_open_to_any_user_granted_its_location() {
    let app = spawn_app().await;
    app.seed().await;
    let folder = app
        .folder("F1", "L1", &[CUSTOMER, "+15557654321"], Some("sam"), Some("sue"))
        .await;
    let a1 = ingest_at(&app, "SM1", CUSTOMER, "2024-01-01T10:00:00Z").await;
    let b1 = ingest_at(&app, "SM2", "+15557654321", "2024-01-01T10:01:00Z").await;
    let a2 = ingest_at(&app, "SM3", CUSTOMER, "2024-01-01T10:02:00Z").await;
    let c1 = ingest_at(&app, "SM4", STRANGER, "2024-01-01T10:03:00Z").await;
    assert_eq!(c1["thread"]["folder_id"], json!(null));
    let reply = post_expect(
        &app,
        &format!("/api/v1/threads/{}/replies", thread_id(&a1)),
        &sam(),
        json!({"body": "ok"}),
        201,
    )
    .await;

    // olga is neither a resource nor subscribed.
    assert_eq!(get_ok(&app, "/api/v1/folders/F1", &olga()).await, folder);
    let tab = all_messages(&app, "/api/v1/folders/F1/messages", &olga()).await;
    tab.iter().for_each(assert_message_shape);
    assert_eq!(
        ids(&tab),
        vec![
            message_id(&a1),
            message_id(&b1),
            message_id(&a2),
            reply["id"].as_str().unwrap().to_owned()
        ]
    );

    assign(&app, &thread_id(&c1), "F1", &olga()).await;
    let tab = all_messages(&app, "/api/v1/folders/F1/messages", &olga()).await;
    assert_eq!(
        ids(&tab),
        vec![
            message_id(&a1),
            message_id(&b1),
            message_id(&a2),
            message_id(&c1),
            reply["id"].as_str().unwrap().to_owned()
        ],
        "a newly assigned thread's messages join the tab in time order"
    );
}

#[tokio::test]
async fn a_folder_of_a_location_the_caller_lacks_is_forbidden_and_an_unknown_one_is_not_found() {
    let app = spawn_app().await;
    app.seed().await;
    let outsider = user_token("olga", &["L2"]);
    for path in [
        "/api/v1/folders/F1",
        "/api/v1/folders/F1/messages",
        "/api/v1/folders/F1/photos",
    ] {
        problem(app.get(path, &outsider).await, 403).await;
    }
    for path in [
        "/api/v1/folders/F404",
        "/api/v1/folders/F404/messages",
        "/api/v1/folders/F404/photos",
    ] {
        problem(app.get(path, &olga()).await, 404).await;
    }
    assert!(folder_ids(&app, "", &outsider).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Linking images

#[tokio::test]
async fn linking_images_links_only_the_image_attachments_to_the_threads_folder() {
    let app = spawn_app().await;
    app.seed().await;
    let ingested = ingest_photos(&app, "SM1", CUSTOMER).await;
    let m = message_id(&ingested);
    let atts = ingested["message"]["attachments"].as_array().unwrap().clone();
    let images: Vec<&Value> = atts
        .iter()
        .filter(|a| a["content_type"].as_str().unwrap().starts_with("image/"))
        .collect();
    assert_eq!(images.len(), 2);

    let linked = post_expect(
        &app,
        &format!("/api/v1/messages/{m}/link-images"),
        &olga(),
        json!({}),
        200,
    )
    .await;
    assert_eq!(keys(&linked), set(&["folder_id", "linked", "photos"]));
    assert_eq!(linked["folder_id"], "F1");
    assert_eq!(linked["linked"], 2);
    let mut photos = linked["photos"].as_array().unwrap().clone();
    photos.sort_by_key(|p| p["attachment_id"].as_str().unwrap_or_default().to_owned());
    let mut expected: Vec<(String, String)> = images
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(photos.len(), 2, "{linked}");
    for (p, (att, url)) in photos.iter().zip(&expected) {
        assert_photo_shape(p);
        assert_eq!(p["attachment_id"], att.as_str());
        assert_eq!(p["url"], url.as_str());
        assert_eq!(p["message_id"], m.as_str());
        assert_eq!(p["linked_by"], "olga");
    }

    let mut stored = get_ok(&app, "/api/v1/folders/F1/photos", &sue())
        .await
        .as_array()
        .expect("an array")
        .clone();
    stored.sort_by_key(|p| p["attachment_id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(stored, photos);
}

#[tokio::test]
async fn linking_images_twice_adds_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    let m = message_id(&ingest_photos(&app, "SM1", CUSTOMER).await);
    post_expect(
        &app,
        &format!("/api/v1/messages/{m}/link-images"),
        &olga(),
        json!({}),
        200,
    )
    .await;
    let before = get_ok(&app, "/api/v1/folders/F1/photos", &olga()).await;

    let again = post_expect(
        &app,
        &format!("/api/v1/messages/{m}/link-images"),
        &sam(),
        json!({}),
        200,
    )
    .await;
    assert_eq!(again["folder_id"], "F1");
    assert_eq!(again["linked"], 0);
    let after = get_ok(&app, "/api/v1/folders/F1/photos", &olga()).await;
    assert_eq!(after.as_array().unwrap().len(), 2);
    assert_eq!(after, before, "no duplicate photos and the first linker is kept");
}

#[tokio::test]
async fn a_message_without_images_links_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    let m = message_id(&ingest(&app, "SM1", CUSTOMER).await);
    let linked = post_expect(
        &app,
        &format!("/api/v1/messages/{m}/link-images"),
        &olga(),
        json!({}),
        200,
    )
    .await;
    assert_eq!(linked["linked"], 0);
    assert_eq!(linked["photos"], json!([]));
    assert_eq!(get_ok(&app, "/api/v1/folders/F1/photos", &olga()).await, json!([]));
}

#[tokio::test]
async fn linking_images_of_a_thread_without_a_folder_is_a_conflict_until_it_is_assigned() {
    let app = spawn_app().await;
    app.seed().await;
    let ingested = ingest_photos(&app, "SM1", STRANGER).await;
    let m = message_id(&ingested);
    problem(
        app.post(&format!("/api/v1/messages/{m}/link-images"), &olga(), json!({}))
            .await,
        409,
    )
    .await;

    assign(&app, &thread_id(&ingested), "F1", &olga()).await;
    let linked = post_expect(
        &app,
        &format!("/api/v1/messages/{m}/link-images"),
        &olga(),
        json!({}),
        200,
    )
    .await;
    assert_eq!(linked["folder_id"], "F1");
    assert_eq!(linked["linked"], 2);
}

#[tokio::test]
async fn linking_images_of_an_unknown_message_is_not_found_and_of_another_location_forbidden() {
    let app = spawn_app().await;
    app.seed().await;
    problem(
        app.post("/api/v1/messages/m_nope/link-images", &olga(), json!({}))
            .await,
        404,
    )
    .await;
    let m = message_id(&ingest_photos(&app, "SM1", CUSTOMER).await);
    problem(
        app.post(
            &format!("/api/v1/messages/{m}/link-images"),
            &user_token("olga", &["L2"]),
            json!({}),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(get_ok(&app, "/api/v1/folders/F1/photos", &olga()).await, json!([]));
}

// ---------------------------------------------------------------------------------------
// A thread and its folder share one location

/// The usual cast, plus location L2 with lee as its user and folder F2 there, whose numbers
/// also hold the customer's.
async fn two_locations(app: &TestApp) {
    app.seed().await;
    app.location("L2", &["+15550002222"]).await;
    app.user("lee", "Lee Elsewhere").await;
    app.folder("F2", "L2", &[CUSTOMER, STRANGER], Some("lee"), None).await;
}

fn lee() -> String {
    user_token("lee", &["L2"])
}

#[tokio::test]
async fn a_customer_listed_by_folders_at_two_locations_is_assigned_the_one_at_the_location_texted() {
    let app = spawn_app().await;
    two_locations(&app).await;
    let body = ingest(&app, "SM1", CUSTOMER).await;
    assert_eq!(body["thread"]["folder_id"], "F1", "F2 is at L2: {body}");
}

#[tokio::test]
async fn a_folder_at_another_location_never_takes_a_thread_nor_shows_its_messages_or_photos() {
    let app = spawn_app().await;
    two_locations(&app).await;
    // Only F2 (at L2) lists the stranger, who texts L1.
    let ingested = ingest_photos(&app, "SM1", STRANGER).await;
    assert_eq!(ingested["thread"]["folder_id"], json!(null), "{ingested}");
    let t = thread_id(&ingested);

    problem(app.get(&format!("/api/v1/threads/{t}"), &lee()).await, 403).await;
    assert!(
        all_messages(&app, "/api/v1/folders/F2/messages", &lee())
            .await
            .is_empty()
    );
    assert_eq!(get_ok(&app, "/api/v1/folders/F2/photos", &lee()).await, json!([]));
    assert!(
        mine(&app, &lee()).await.is_empty(),
        "lee is F2's resource, not the thread's"
    );
}

#[tokio::test]
async fn folder_messages_and_photos_leave_out_threads_at_locations_the_caller_lacks_whatever_the_data_says() {
    let app = spawn_app().await;
    two_locations(&app).await;
    let ingested = ingest_photos(&app, "SM1", CUSTOMER).await;
    let (t, m) = (thread_id(&ingested), message_id(&ingested));
    let attachment = ingested["message"]["attachments"][0]["id"].as_str().unwrap().to_owned();
    // Data no API call makes: the L1 thread on L2's folder, and its photo linked there.
    plant::thread_on_folder(&app, &t, "F2").await;
    plant::photo(&app, "F2", &m, &attachment, "https://media.example/a.jpg").await;

    assert!(
        all_messages(&app, "/api/v1/folders/F2/messages", &lee())
            .await
            .is_empty(),
        "lee is granted L2 only"
    );
    assert_eq!(get_ok(&app, "/api/v1/folders/F2/photos", &lee()).await, json!([]));

    // Someone granted the thread's location too sees what the data holds: the filter is the
    // caller's locations, not a query that lost the planted rows.
    let both = user_token("olga", &["L1", "L2"]);
    let messages = all_messages(&app, "/api/v1/folders/F2/messages", &both).await;
    assert_eq!(ids(&messages), vec![m.clone()]);
    let photos = get_ok(&app, "/api/v1/folders/F2/photos", &both).await;
    assert_eq!(photos.as_array().map(Vec::len), Some(1), "{photos}");
    assert_eq!(photos[0]["message_id"], json!(m));
}
