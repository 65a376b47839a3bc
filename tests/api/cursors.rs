//! List cursors: the `next` a list hands out walks it exactly once, on every list and
//! across a restart; a `before` this hub did not hand out for that very list is a 422
//! naming `before`.

use serde_json::Value;

use crate::helpers::http::*;
use crate::helpers::*;

/// The forged cursors of the hardening issue: the old `at~seq` text, any value of it.
const FORGED: [&str; 4] = ["1~x", "9999999999999999~zzz", "-5~' OR '1'='1", "1~1"];

fn olga() -> String {
    user_token("olga", &["L1"])
}

/// `path` with `before=cursor` (percent-encoded) added to its query.
fn with_before(path: &str, cursor: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}before={}", encode(cursor))
}

/// The `next` of the first page of `path`.
async fn first_next(app: &TestApp, path: &str, token: &str) -> String {
    let page = get_ok(app, path, token).await;
    page["next"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} has a next page: {page}"))
        .to_owned()
}

/// Every item of a list (`key` is `threads` or `messages`), following `next` page by page;
/// also the size of each page.
async fn walk(app: &TestApp, path: &str, key: &str, token: &str) -> (Vec<String>, Vec<usize>) {
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    let mut url = path.to_owned();
    loop {
        let page = get_ok(app, &url, token).await;
        let items = page[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is an array: {page}"))
            .clone();
        sizes.push(items.len());
        seen.extend(ids(&items));
        match &page["next"] {
            Value::String(c) => url = with_before(path, c),
            Value::Null => return (seen, sizes),
            other => panic!("next is a string or null: {other}"),
        }
        assert!(sizes.len() < 50, "{path} kept answering a next cursor");
    }
}

/// Seven threads at L1, newest last: three share one instant (ties are broken by id).
async fn seven_threads(app: &TestApp) -> Vec<(String, String)> {
    let mut made = Vec::new();
    for i in 0..7 {
        let minute = [0, 1, 2, 2, 2, 3, 4][i];
        let b = ingest_at(
            app,
            &format!("SM{i}"),
            &format!("+1555200000{i}"),
            &format!("2024-01-01T10:0{minute}:00Z"),
        )
        .await;
        made.push((format!("2024-01-01T10:0{minute}:00Z"), thread_id(&b)));
    }
    made
}

// ---------------------------------------------------------------------------------------
// Forged and misplaced cursors

#[tokio::test]
async fn forged_cursors_on_the_thread_list_are_422_naming_before() {
    let app = spawn_app().await;
    app.seed().await;
    subscribe(&app, &olga(), true).await;
    seven_threads(&app).await;
    for forged in FORGED {
        for path in ["/api/v1/threads", "/api/v1/threads?view=mine&unread_only=true&limit=2"] {
            let (status, body) = get(&app, &with_before(path, forged), &olga()).await;
            assert_invalid(status, &body, "before");
        }
    }
}

#[tokio::test]
async fn forged_cursors_on_thread_and_folder_messages_are_422_naming_before() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    ingest(&app, "SM2", CUSTOMER).await;
    for forged in FORGED {
        for path in [
            format!("/api/v1/threads/{t}/messages"),
            "/api/v1/folders/F1/messages".to_owned(),
        ] {
            let (status, body) = get(&app, &with_before(&path, forged), &olga()).await;
            assert_invalid(status, &body, "before");
        }
    }
}

#[tokio::test]
async fn a_cursor_altered_by_one_character_is_422_naming_before() {
    let app = spawn_app().await;
    app.seed().await;
    subscribe(&app, &olga(), true).await;
    seven_threads(&app).await;
    let next = first_next(&app, "/api/v1/threads?limit=2", &olga()).await;
    for i in [0, next.len() / 2, next.len() - 1] {
        let mut altered = next.clone().into_bytes();
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let (status, body) = get(&app, &with_before("/api/v1/threads?limit=2", &altered), &olga()).await;
        assert_invalid(status, &body, "before");
    }
    let (status, body) = get(&app, &with_before("/api/v1/threads?limit=2", &next), &olga()).await;
    assert_eq!(status, 200, "the cursor as handed out is good: {body}");
}

#[tokio::test]
async fn a_cursor_of_one_threads_messages_is_422_on_another_threads_messages() {
    let app = spawn_app().await;
    app.seed().await;
    let a = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    ingest(&app, "SM2", CUSTOMER).await;
    let b = thread_id(&ingest(&app, "SN1", "+15557654321").await);
    ingest(&app, "SN2", "+15557654321").await;
    let next = first_next(&app, &format!("/api/v1/threads/{a}/messages?limit=1"), &olga()).await;
    let (status, body) = get(
        &app,
        &with_before(&format!("/api/v1/threads/{b}/messages?limit=1"), &next),
        &olga(),
    )
    .await;
    assert_invalid(status, &body, "before");
    // Nor is it a cursor of the folder the thread is assigned to, or of the thread list.
    let (status, body) = get(&app, &with_before("/api/v1/folders/F1/messages", &next), &olga()).await;
    assert_invalid(status, &body, "before");
    let (status, body) = get(&app, &with_before("/api/v1/threads", &next), &olga()).await;
    assert_invalid(status, &body, "before");
}

#[tokio::test]
async fn a_cursor_of_one_folders_messages_is_422_on_another_folders_messages() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F2", "L1", &["+15557654321"], None, None).await;
    ingest(&app, "SM1", CUSTOMER).await;
    ingest(&app, "SM2", CUSTOMER).await;
    ingest(&app, "SN1", "+15557654321").await;
    let next = first_next(&app, "/api/v1/folders/F1/messages?limit=1", &olga()).await;
    let (status, body) = get(&app, &with_before("/api/v1/folders/F2/messages", &next), &olga()).await;
    assert_invalid(status, &body, "before");
}

#[tokio::test]
async fn a_thread_list_cursor_of_another_tenant_is_422_naming_before() {
    let app = spawn_app().await;
    app.seed().await;
    subscribe(&app, &olga(), true).await;
    seven_threads(&app).await;
    let next = first_next(&app, "/api/v1/threads?limit=2", &olga()).await;
    // Same user and location ids in another company.
    let other = token_in("globex", "olga", &["user"], &["L1"]);
    let (status, body) = get(&app, &with_before("/api/v1/threads?limit=2", &next), &other).await;
    assert_invalid(status, &body, "before");
}

// ---------------------------------------------------------------------------------------
// Real cursors walk every item exactly once

#[tokio::test]
async fn real_cursors_walk_the_thread_list_exactly_once_newest_first_through_equal_times() {
    let app = spawn_app().await;
    app.seed().await;
    subscribe(&app, &olga(), true).await;
    let made = seven_threads(&app).await;
    let mut newest_first = made.clone();
    // Newest first, ties by id, highest first.
    newest_first.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = newest_first.into_iter().map(|(_, id)| id).collect();
    for limit in [1, 2, 3, 7] {
        let (seen, sizes) = walk(&app, &format!("/api/v1/threads?limit={limit}"), "threads", &olga()).await;
        assert_eq!(seen, want, "limit {limit}");
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        assert!(sizes.iter().all(|n| *n <= limit), "{sizes:?}");
    }
    // The unread filter pages the same way (every thread here is unread).
    let (seen, _) = walk(&app, "/api/v1/threads?unread_only=true&limit=2", "threads", &olga()).await;
    assert_eq!(seen, want);
}

#[tokio::test]
async fn real_cursors_walk_a_threads_messages_exactly_once_oldest_first_through_equal_times() {
    let app = spawn_app().await;
    app.seed().await;
    let mut sent = Vec::new();
    for (i, minute) in [0, 1, 1, 1, 2, 3, 3].into_iter().enumerate() {
        let b = ingest_at(
            &app,
            &format!("SM{i}"),
            CUSTOMER,
            &format!("2024-01-01T10:0{minute}:00Z"),
        )
        .await;
        sent.push(message_id(&b));
    }
    let last = ingest_at(&app, "SM7", CUSTOMER, "2024-01-01T10:04:00Z").await;
    sent.push(message_id(&last));
    let t = thread_id(&last);
    for limit in [1, 2, 3, 8] {
        let pages = walk_pages(&app, &format!("/api/v1/threads/{t}/messages?limit={limit}"), &olga()).await;
        // Pages go back in time; within a page, oldest first.
        let seen: Vec<String> = pages.into_iter().rev().flatten().collect();
        assert_eq!(seen, sent, "limit {limit}");
    }
}

#[tokio::test]
async fn real_cursors_walk_a_folders_messages_exactly_once_across_its_threads() {
    let app = spawn_app().await;
    app.seed().await;
    app.folder("F1", "L1", &[CUSTOMER, "+15557654321"], Some("sam"), Some("sue"))
        .await;
    let mut sent = Vec::new();
    for (i, (from, minute)) in [
        (CUSTOMER, 0),
        ("+15557654321", 1),
        (CUSTOMER, 1),
        ("+15557654321", 2),
        (CUSTOMER, 3),
        ("+15557654321", 3),
        (CUSTOMER, 4),
    ]
    .into_iter()
    .enumerate()
    {
        let b = ingest_at(&app, &format!("SM{i}"), from, &format!("2024-01-01T10:0{minute}:00Z")).await;
        assert_eq!(b["thread"]["folder_id"], "F1");
        sent.push(message_id(&b));
    }
    for limit in [1, 2, 3, 7] {
        let pages = walk_pages(&app, &format!("/api/v1/folders/F1/messages?limit={limit}"), &olga()).await;
        let seen: Vec<String> = pages.into_iter().rev().flatten().collect();
        assert_eq!(seen, sent, "limit {limit}");
    }
}

/// The pages of a message list, in the order served (each oldest first).
async fn walk_pages(app: &TestApp, path: &str, token: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = path.to_owned();
    loop {
        let page = get_ok(app, &url, token).await;
        pages.push(ids(page["messages"].as_array().expect("messages")));
        match &page["next"] {
            Value::String(c) => url = with_before(path, c),
            Value::Null => return pages,
            other => panic!("next is a string or null: {other}"),
        }
        assert!(pages.len() < 50, "{path} kept answering a next cursor");
    }
}

// ---------------------------------------------------------------------------------------
// Restarts

#[tokio::test]
async fn a_cursor_handed_out_before_a_restart_still_pages_after_it() {
    let app = spawn_app().await;
    app.seed().await;
    subscribe(&app, &olga(), true).await;
    seven_threads(&app).await;
    let t = thread_id(&ingest(&app, "SM-a", CUSTOMER).await);
    ingest(&app, "SM-b", CUSTOMER).await;
    let threads_path = "/api/v1/threads?limit=3";
    let messages_path = format!("/api/v1/threads/{t}/messages?limit=1");
    let folder_path = "/api/v1/folders/F1/messages?limit=1";
    let cursors = [
        (threads_path.to_owned(), first_next(&app, threads_path, &olga()).await),
        (messages_path.clone(), first_next(&app, &messages_path, &olga()).await),
        (folder_path.to_owned(), first_next(&app, folder_path, &olga()).await),
    ];
    let mut before_restart = Vec::new();
    for (path, cursor) in &cursors {
        before_restart.push(get_ok(&app, &with_before(path, cursor), &olga()).await);
    }

    let app = app.restart().await;

    for ((path, cursor), was) in cursors.iter().zip(before_restart) {
        let now = get_ok(&app, &with_before(path, cursor), &olga()).await;
        assert_eq!(now, was, "{path} after a restart");
    }
    // And the cursors the restarted hub hands out are the same ones.
    assert_eq!(first_next(&app, threads_path, &olga()).await, cursors[0].1);
}
