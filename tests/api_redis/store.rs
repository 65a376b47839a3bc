//! The Redis store's own concerns, beyond the contract suite: atomicity (a refused or failed
//! call leaves Redis exactly as it was), optimistic concurrency (racing calls all land, once
//! each), the log's trimming, and outages (503, then recovery without a restart).

use std::{collections::BTreeMap, sync::Arc};

use ::redis::AsyncCommands;
use futures_util::future::join_all;
use serde_json::json;
use switchboard::{
    config::RedisSettings,
    domain::{Id, LocationId, MessageId, PhoneNumber, PhoneParser, TenantId, ThreadId, UserId},
    event::EventKind,
    store::{EventLog, InboundInput, LocationInput, Paging, Replay, Scope, Store, StoreError, redis::RedisStore},
};

use crate::helpers::{
    http::{CUSTOMER, L1_SMS, ingest, subscribe},
    redis::{RedisServer, shared, unique_prefix},
    *,
};

fn phone(s: &str) -> PhoneNumber {
    PhoneParser::new("US").unwrap().parse(s).unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        key_prefix: unique_prefix(),
        cluster_nodes: Vec::new(),
    }
}

async fn store_on(settings: &RedisSettings, retention: u64) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(settings, retention)
            .await
            .expect("the store connects"),
    )
}

fn inbound(external_id: &str, body: &str) -> InboundInput {
    InboundInput {
        external_id: external_id.into(),
        from: phone("+15551234567"),
        to: phone("+15550001111"),
        body: body.into(),
        attachments: Vec::new(),
        received_at: None,
    }
}

async fn seed_location(store: &RedisStore) {
    store
        .upsert_location(
            &tenant(),
            &LocationId::parse("L1").unwrap(),
            LocationInput {
                name: "Downtown".into(),
                sms_numbers: vec![phone("+15550001111")],
            },
        )
        .await
        .unwrap();
}

async fn raw(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key under `prefix` with a dump of its value: equal snapshots, equal state.
async fn snapshot(url: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut conn = raw(url).await;
    let keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let dump: Vec<u8> = ::redis::cmd("DUMP").arg(&k).query_async(&mut conn).await.unwrap();
        out.insert(k, dump);
    }
    out
}

async fn log_len(url: &str, prefix: &str) -> usize {
    let mut conn = raw(url).await;
    conn.zcard(format!("{prefix}:{{acme}}:log")).await.unwrap()
}

#[tokio::test]
async fn racing_posts_of_one_external_id_store_one_message_and_answer_201_once() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let prefix = settings.redis.key_prefix.clone();
    let app = start(settings, dir).await;
    app.seed().await;
    let body = json!({"external_id": "SM-race", "from": CUSTOMER, "to": L1_SMS, "body": "hello"});
    let answers = join_all((0..8).map(|_| app.inbound_json(body.clone()))).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let repeated = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, repeated), (1, 7), "{answers:?}");
    let ids: std::collections::BTreeSet<_> = answers.iter().map(|(_, b)| b["message"]["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "every answer names the same message");
    let thread = answers[0].1["thread"]["id"].as_str().unwrap().to_owned();
    let sam = token("sam", &["user"], &["L1"]);
    let page = app.get(&format!("/api/v1/threads/{thread}/messages"), &sam).await;
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(
        log_len(&shared().url(), &prefix).await,
        2,
        "one message.new and one unread.count"
    );
}

#[tokio::test]
async fn racing_inbound_messages_on_one_thread_all_land_with_their_events_in_pairs() {
    let settings = settings(shared().url());
    let store = store_on(&settings, 1000).await;
    seed_location(&store).await;
    let n = 20;
    let results = join_all((0..n).map(|i| {
        let store = store.clone();
        async move {
            store
                .ingest(&tenant(), inbound(&format!("SM{i}"), &format!("m{i}")))
                .await
        }
    }))
    .await;
    let threads: std::collections::BTreeSet<ThreadId> = results
        .into_iter()
        .map(|r| {
            let r = r.expect("every racing call lands");
            assert!(r.created);
            r.thread.id
        })
        .collect();
    assert_eq!(threads.len(), 1, "one thread for one customer at one location");
    let id = threads.into_iter().next().unwrap();
    let thread = store.thread(&tenant(), &id).await.unwrap();
    assert_eq!(thread.unread_count, n);
    let page = store
        .thread_messages(
            &Scope {
                tenant: tenant(),
                user: UserId::parse("sam").unwrap(),
                locations: vec![LocationId::parse("L1").unwrap()].into(),
            },
            &id,
            Paging {
                limit: 200,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.messages.len(), n as usize);
    let Replay::Events(events) = store.events_after(&tenant(), 0, 1000).await.unwrap() else {
        panic!("the whole log is retained");
    };
    assert_eq!(events.len(), 2 * n as usize);
    for (i, pair) in events.chunks(2).enumerate() {
        assert_eq!(pair[0].id, 2 * i as u64 + 1, "ids are consecutive");
        assert_eq!(pair[1].id, 2 * i as u64 + 2);
        assert_eq!(pair[0].kind, EventKind::MessageNew, "each call's events stay together");
        assert_eq!(pair[1].kind, EventKind::UnreadCount);
    }
}

#[tokio::test]
async fn refused_calls_leave_redis_exactly_as_it_was() {
    let settings = settings(shared().url());
    let store = store_on(&settings, 1000).await;
    seed_location(&store).await;
    store.ingest(&tenant(), inbound("SM1", "hi")).await.unwrap();
    let message = store.ingest(&tenant(), inbound("SM2", "again")).await.unwrap().message;
    let before = snapshot(&shared().url(), &settings.key_prefix).await;

    let taken = store
        .upsert_location(
            &tenant(),
            &LocationId::parse("L2").unwrap(),
            LocationInput {
                name: "Uptown".into(),
                sms_numbers: vec![phone("+15550002222"), phone("+15550001111")],
            },
        )
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let unknown_to = InboundInput {
        to: phone("+15559999999"),
        ..inbound("SM3", "lost")
    };
    let refused = store.ingest(&tenant(), unknown_to).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid { field: "to", .. })),
        "{refused:?}"
    );
    let no_folder = store
        .link_images(&tenant(), &message.id, &UserId::parse("sam").unwrap())
        .await;
    assert!(matches!(no_folder, Err(StoreError::Conflict(_))), "{no_folder:?}");
    let missing = store
        .mark_read(
            &tenant(),
            &ThreadId::parse("t_nope").unwrap(),
            &UserId::parse("sam").unwrap(),
        )
        .await;
    assert_eq!(missing.err(), Some(StoreError::NotFound("thread")));
    let gone = store.message(&tenant(), &MessageId::parse("m_nope").unwrap()).await;
    assert_eq!(gone.err(), Some(StoreError::NotFound("message")));

    assert_eq!(snapshot(&shared().url(), &settings.key_prefix).await, before);
}

#[tokio::test]
async fn the_log_keeps_the_newest_events_up_to_the_retention() {
    let settings = settings(shared().url());
    let store = store_on(&settings, 3).await;
    seed_location(&store).await;
    for i in 0..3 {
        store.ingest(&tenant(), inbound(&format!("SM{i}"), "x")).await.unwrap();
    }
    // Six events, three kept: 4, 5 and 6.
    assert_eq!(log_len(&shared().url(), &settings.key_prefix).await, 3);
    assert_eq!(store.events_after(&tenant(), 2, 100).await.unwrap(), Replay::TooOld);
    let Replay::Events(events) = store.events_after(&tenant(), 3, 100).await.unwrap() else {
        panic!("the log reaches back to 4");
    };
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(
        store.events_after(&tenant(), 6, 100).await.unwrap(),
        Replay::Events(vec![])
    );
    assert_eq!(
        store.events_after(&tenant(), 7, 100).await.unwrap(),
        Replay::TooOld,
        "beyond the head"
    );
    assert_eq!(
        store.events_after(&tenant(), 3, 2).await.unwrap(),
        Replay::TooOld,
        "over the limit"
    );
}

#[tokio::test]
async fn an_outage_is_unavailable_and_the_store_recovers_when_redis_returns() {
    let mut server = RedisServer::start();
    let settings = settings(server.url());
    let store = store_on(&settings, 1000).await;
    seed_location(&store).await;
    store.ingest(&tenant(), inbound("SM1", "before")).await.unwrap();

    server.stop();
    let down = store.ingest(&tenant(), inbound("SM2", "during")).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));

    server.restart();
    // The data died with the server (no persistence in tests): the location is re-seeded
    // once the store answers again, without reconnecting by hand.
    let deadline = std::time::Instant::now() + PATIENCE;
    while store.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the store reconnects");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    seed_location(&store).await;
    let after = store.ingest(&tenant(), inbound("SM2", "after")).await.unwrap();
    assert!(after.created);
}

/// Scripts Redis ran (`EVALSHA`/`EVAL`): every commit, and every consistent read — a thread
/// list, `/me`, a session's snapshot or unread count.
async fn scripts_run(url: &str) -> u64 {
    let mut conn = raw(url).await;
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_eval"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn an_inbound_message_to_many_subscribe_all_sessions_reads_no_count_per_session() {
    // A server of its own: nothing else runs scripts on it.
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.redis.url = server.url();
    let n = 40;
    // One user's sessions, as many as the test needs.
    settings.ws.max_sessions_per_user = n;
    let app = start(settings, dir).await;
    app.seed().await;
    let olga = token("olga", &["user"], &["L1"]);
    subscribe(&app, &olga, true).await;
    let mut sessions = Vec::new();
    for _ in 0..n {
        sessions.push(app.ws(&olga).await);
    }
    for ws in sessions.iter_mut() {
        assert!(ws.drain().await.is_empty());
    }

    let before = scripts_run(&server.url()).await;
    for i in 0..3 {
        ingest(&app, &format!("SM{i}"), CUSTOMER).await;
        for ws in sessions.iter_mut() {
            let frames = ws.drain().await;
            assert_eq!(ws::counts(&frames), vec![i + 1], "{frames:#?}");
        }
    }
    let ran = scripts_run(&server.url()).await - before;
    assert!(
        ran < 3 * 5,
        "three commits and no count read per session: {ran} scripts for 3 messages to {n} sessions"
    );
}

#[tokio::test]
async fn stores_racing_for_the_cursor_key_all_read_the_one_that_was_set_first() {
    let s = settings(shared().url());
    let stores = join_all((0..4).map(|_| store_on(&s, 1000))).await;
    let keys = join_all(stores.iter().map(|store| store.cursor_key())).await;
    let first = keys[0].clone().expect("a key");
    for k in &keys {
        assert_eq!(k.as_ref(), Ok(&first), "every store reads one key");
    }
    assert_eq!(store_on(&s, 1000).await.cursor_key().await, Ok(first), "and keeps it");
    let elsewhere = store_on(&settings(shared().url()), 1000).await.cursor_key().await;
    assert_ne!(elsewhere, Ok(first), "another deployment (prefix) has its own key");
}
