//! The PostgreSQL store's own concerns, beyond the contract suite: writes of one tenant racing
//! on the pool (one thread, one message, ids gap-free and published in order), the lock
//! discipline that orders a write after a concurrent change of its facts, atomicity (a refused
//! call changes nothing), the log's trimming, schema migrations from several nodes starting at
//! once, and outages (a stopped or hung server: 503 within the deadline, then recovery without
//! a restart) on a private server (`helpers::pg_server`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use switchboard::{
    config::{PostgresSettings, Settings},
    domain::{
        FolderId, Id, LocationId, MessageId, PhoneNumber, PhoneParser, TenantId, ThreadId, UserId,
        model::{Ingested, Thread},
    },
    event::{Event, EventKind},
    metrics::Metrics,
    store::{
        EventLog, FolderInput, InboundInput, LocationInput, Paging, PreferencesPatch, Publisher, Replay, Scope, Store,
        StoreError,
        postgres::{MIGRATIONS_TABLE, PgStore},
    },
};
use tokio_postgres::types::ToSql;

use crate::helpers::{
    PATIENCE,
    pg_server::PgServer,
    postgres::{TestDatabase, connect, fresh_database},
};

fn phone(s: &str) -> PhoneNumber {
    PhoneParser::new("US").unwrap().parse(s).unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: url.to_owned(),
        pool_size: 8,
        ..Settings::defaults().postgres
    }
}

/// A bus that records what the store published, in order, and how many batches (one per
/// commit) it came in.
#[derive(Default)]
struct Recorder {
    published: Mutex<Vec<Event>>,
    batches: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.published.lock().unwrap().clone()
    }

    fn batches(&self) -> usize {
        self.batches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Publisher for Recorder {
    fn publish(&self, events: Vec<Event>) {
        self.batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.published.lock().unwrap().extend(events);
    }
}

/// A store on a fresh database of its own (kept alive with it).
struct Fixture {
    store: Arc<PgStore>,
    bus: Arc<Recorder>,
    db: TestDatabase,
}

async fn fixture(retention: u64) -> Fixture {
    let db = fresh_database();
    let bus = Arc::new(Recorder::default());
    let store = PgStore::connect(&settings(&db.url), bus.clone(), retention)
        .await
        .expect("the store connects");
    Fixture {
        store: Arc::new(store),
        bus,
        db,
    }
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

async fn seed_location(store: &PgStore) {
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

/// L1, and folder F1 at L1 listing the customer with sam (sales) and sue (service).
async fn seed_folder(store: &PgStore) {
    seed_location(store).await;
    store
        .upsert_folder(
            &tenant(),
            &FolderId::parse("F1").unwrap(),
            FolderInput {
                name: "Smith kitchen".into(),
                location_id: LocationId::parse("L1").unwrap(),
                phone_numbers: vec![phone("+15551234567")],
                sales_resource_id: Some(user("sam")),
                service_resource_id: Some(user("sue")),
            },
        )
        .await
        .unwrap();
}

fn scope(who: &str) -> Scope {
    Scope {
        tenant: tenant(),
        user: user(who),
        locations: vec![LocationId::parse("L1").unwrap()].into(),
    }
}

/// Every row of every table of the schema, as text: equal dumps, equal state.
async fn dump(url: &str) -> Vec<String> {
    let c = connect(url).await;
    let tables: Vec<String> = c
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let rows = c
            .query(&format!("SELECT t::text FROM {t} t ORDER BY t::text"), &[])
            .await
            .unwrap();
        out.extend(rows.iter().map(|r| format!("{t}: {}", r.get::<_, String>(0))));
    }
    out
}

/// Waits until some session of database `db` waits for a lock (a write blocked behind a
/// transaction of the test's).
async fn until_a_write_waits_for_a_lock(url: &str, db: &str) {
    let c = connect(url).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no write waited for the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks that racing first messages of one customer were each created, all in one thread
/// that counts them all unread; that thread.
async fn one_unread_thread_of(f: &Fixture, answers: Vec<Result<Ingested, StoreError>>) -> ThreadId {
    let n = answers.len();
    let threads: std::collections::BTreeSet<ThreadId> = answers
        .into_iter()
        .map(|a| {
            let a = a.expect("every racing call lands");
            assert!(a.created);
            a.thread.id
        })
        .collect();
    assert_eq!(threads.len(), 1, "one thread for one customer at one location");
    let id = threads.into_iter().next().unwrap();
    assert_eq!(f.store.thread(&tenant(), &id).await.unwrap().unread_count as usize, n);
    id
}

#[tokio::test]
async fn racing_first_messages_from_a_new_customer_make_one_thread_and_publish_every_event_in_order() {
    let f = fixture(1000).await;
    seed_location(&f.store).await;
    let n = 20;
    let results = join_all((0..n).map(|i| {
        let store = f.store.clone();
        async move {
            store
                .ingest(&tenant(), inbound(&format!("SM{i}"), &format!("m{i}")))
                .await
        }
    }))
    .await;
    let id = one_unread_thread_of(&f, results).await;
    let page = f
        .store
        .thread_messages(
            &scope("sam"),
            &id,
            Paging {
                limit: 200,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.messages.len(), n as usize);

    let Replay::Events(logged) = f.store.events_after(&tenant(), 0, 1000).await.unwrap() else {
        panic!("the whole log is retained");
    };
    assert_eq!(logged.len(), 2 * n as usize);
    for (i, pair) in logged.chunks(2).enumerate() {
        assert_eq!(pair[0].id, 2 * i as u64 + 1, "ids are gap-free");
        assert_eq!(pair[1].id, 2 * i as u64 + 2);
        assert_eq!(pair[0].kind, EventKind::MessageNew, "each call's events stay together");
        assert_eq!(pair[1].kind, EventKind::UnreadCount);
    }
    let published: Vec<u64> = f.bus.events().iter().map(|e| e.id).collect();
    assert_eq!(
        published,
        (1..=2 * n as u64).collect::<Vec<_>>(),
        "published once each, in id order"
    );
}

/// The log as it is, checked gap-free from 1 with each inbound message's two events together.
async fn log_of_messages(f: &Fixture, messages: usize) -> Vec<Event> {
    let Replay::Events(logged) = f.store.events_after(&tenant(), 0, 1000).await.unwrap() else {
        panic!("the whole log is retained");
    };
    assert_eq!(logged.len(), 2 * messages);
    for (i, pair) in logged.chunks(2).enumerate() {
        assert_eq!(
            (pair[0].id, pair[1].id),
            (2 * i as u64 + 1, 2 * i as u64 + 2),
            "gap-free"
        );
        assert_eq!(
            (pair[0].kind, pair[1].kind),
            (EventKind::MessageNew, EventKind::UnreadCount)
        );
    }
    logged
}

// The tests below run on tokio's default single-threaded test runtime, where the store's
// tasks run only when the test awaits: every ingest of a `join_all` is queued before the
// tenant's writer takes its first batch, so the batches are known.

#[tokio::test]
async fn inbound_messages_waiting_for_their_tenant_are_written_in_one_transaction_each_with_its_answer() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let metrics = Arc::new(Metrics::new());
    f.store.report_to(metrics.clone());
    let before = f.bus.batches();
    let other_customer = |id: &str| InboundInput {
        from: phone("+15557654321"),
        ..inbound(id, "other")
    };
    let inputs = vec![
        inbound("SM1", "one"),
        other_customer("SM2"),
        inbound("SM3", "three"),
        inbound("SM1", "one"),
    ];
    let answers = join_all(inputs.into_iter().map(|input| {
        let store = f.store.clone();
        async move { store.ingest(&tenant(), input).await.expect("every message lands") }
    }))
    .await;
    assert_eq!(f.bus.batches() - before, 1, "one commit, one publish");
    let batch = &metrics.ingest_batch_messages;
    assert_eq!(
        (batch.get_sample_count(), batch.get_sample_sum()),
        (1, 4.0),
        "the metric counts one transaction of four messages"
    );
    assert_eq!(
        answers.iter().map(|a| a.created).collect::<Vec<_>>(),
        [true, true, true, false],
        "the repeated external id is answered as stored by the message before it"
    );
    assert_eq!(answers[3].message.id, answers[0].message.id);
    assert_eq!(
        answers[0].thread.id, answers[2].thread.id,
        "the second message found the thread the first made"
    );
    assert_ne!(answers[0].thread.id, answers[1].thread.id);
    assert_eq!(answers[2].message.body, "three");
    assert_eq!(answers[2].thread.unread_count, 2);
    assert_eq!(
        f.store
            .thread(&tenant(), &answers[0].thread.id)
            .await
            .unwrap()
            .unread_count,
        2
    );
    let logged = log_of_messages(&f, 3).await;
    let ids: Vec<u64> = f.bus.events().iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=6).collect::<Vec<_>>(), "published once each, in id order");
    assert_eq!(logged.len(), 6);
}

/// Four customers of L1: A (listed by F1, which has a thread already), B (listed by F2, with
/// a thread in F2), C (a thread in no folder) and D (listed by F2, no thread yet).
const WAVE_CUSTOMERS: [&str; 4] = ["+15551234567", "+15557654321", "+15553334444", "+15559990000"];

/// F1 (`seed_folder`), F2 listing B and D with sal (sales) only, and a first message from
/// each of A, B and C, one at a time.
async fn seed_wave(store: &PgStore) {
    seed_folder(store).await;
    store
        .upsert_folder(
            &tenant(),
            &FolderId::parse("F2").unwrap(),
            FolderInput {
                name: "Jones roof".into(),
                location_id: LocationId::parse("L1").unwrap(),
                phone_numbers: vec![phone(WAVE_CUSTOMERS[1]), phone(WAVE_CUSTOMERS[3])],
                sales_resource_id: Some(user("sal")),
                service_resource_id: None,
            },
        )
        .await
        .unwrap();
    for (i, from) in WAVE_CUSTOMERS[..3].iter().enumerate() {
        let first = InboundInput {
            from: phone(from),
            ..inbound(&format!("first{i}"), "hello")
        };
        store.ingest(&tenant(), first).await.unwrap();
    }
}

/// What a run of the wave's messages left: each customer's thread (folder, unread count) and
/// the events it published after the seeding, as (kind, route), in the order published.
async fn after_the_wave(
    f: &Fixture,
    answers: &[Ingested],
    seeded: usize,
) -> (Vec<(Option<String>, u32)>, Vec<(String, String)>) {
    let mut threads = Vec::new();
    for answer in answers {
        let thread = f.store.thread(&tenant(), &answer.thread.id).await.unwrap();
        threads.push((thread.folder_id.map(|id| id.as_str().to_owned()), thread.unread_count));
    }
    let events = f.bus.events()[seeded..]
        .iter()
        .map(|e| (e.kind.as_str().to_owned(), serde_json::to_string(&e.route).unwrap()))
        .collect();
    (threads, events)
}

#[tokio::test]
async fn a_wave_of_customers_read_together_decides_what_each_message_alone_would() {
    let messages = || {
        WAVE_CUSTOMERS
            .iter()
            .enumerate()
            .map(|(i, from)| InboundInput {
                from: phone(from),
                ..inbound(&format!("wave{i}"), "again")
            })
            .collect::<Vec<_>>()
    };
    // The four at once: one transaction, one wave (four customers), three reads in all.
    let together = fixture(1000).await;
    seed_wave(&together.store).await;
    let metrics = Arc::new(Metrics::new());
    together.store.report_to(metrics.clone());
    let seeded = together.bus.events().len();
    let answers = join_all(messages().into_iter().map(|input| {
        let store = together.store.clone();
        async move { store.ingest(&tenant(), input).await.expect("every message lands") }
    }))
    .await;
    let batch = &metrics.ingest_batch_messages;
    assert_eq!(
        (batch.get_sample_count(), batch.get_sample_sum()),
        (1, 4.0),
        "one transaction of the four"
    );
    assert!(answers.iter().all(|a| a.created));
    // The same four one by one, on a store of their own.
    let alone = fixture(1000).await;
    seed_wave(&alone.store).await;
    let alone_seeded = alone.bus.events().len();
    let mut alone_answers = Vec::new();
    for input in messages() {
        alone_answers.push(alone.store.ingest(&tenant(), input).await.unwrap());
    }
    let (threads, events) = after_the_wave(&together, &answers, seeded).await;
    assert_eq!(
        threads,
        [
            (Some("F1".to_owned()), 2),
            (Some("F2".to_owned()), 2),
            (None, 2),
            (Some("F2".to_owned()), 1)
        ],
        "each message found its own thread and folders: D was assigned to F2 as it lists D"
    );
    let (alone_threads, alone_events) = after_the_wave(&alone, &alone_answers, alone_seeded).await;
    assert_eq!(threads, alone_threads);
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(events),
        sorted(alone_events),
        "the same events to the same people"
    );
}

#[tokio::test]
async fn with_a_linger_messages_that_arrive_just_after_a_commit_wait_for_company_and_go_in_together() {
    const LINGER: Duration = Duration::from_millis(100);
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let lingering = Arc::new(
        PgStore::connect(
            &PostgresSettings {
                ingest_linger_us: LINGER.as_micros() as u64,
                ..settings(&f.db.url)
            },
            f.bus.clone(),
            1000,
        )
        .await
        .expect("the store connects"),
    );
    let metrics = Arc::new(Metrics::new());
    lingering.report_to(metrics.clone());
    let started = Instant::now();
    let first = lingering.ingest(&tenant(), inbound("SM1", "one")).await.unwrap();
    assert!(first.created, "a message to an idle tenant goes in at once, alone");
    // Sent after the first one committed: they wait for the linger, and go in together.
    let later = join_all(["SM2", "SM3"].map(|id| {
        let store = lingering.clone();
        async move { store.ingest(&tenant(), inbound(id, id)).await.unwrap() }
    }))
    .await;
    assert!(
        started.elapsed() >= LINGER,
        "answered no sooner than the linger after the first commit"
    );
    assert!(later.iter().all(|m| m.created));
    let batch = &metrics.ingest_batch_messages;
    assert_eq!(
        (batch.get_sample_count(), batch.get_sample_sum()),
        (2, 3.0),
        "one transaction of one, then one of two"
    );
    assert_eq!(later[1].thread.unread_count, 3);
}

#[tokio::test]
async fn a_node_on_postgres_reports_the_messages_of_each_ingestion_transaction_in_its_metrics() {
    use crate::helpers::{http, ws::metric_total};
    let app = crate::helpers::spawn_app().await;
    app.seed().await;
    http::ingest(&app, "SM1", http::CUSTOMER).await;
    let batches = (
        metric_total(&app, "switchboard_ingest_batch_messages_count").await,
        metric_total(&app, "switchboard_ingest_batch_messages_sum").await,
    );
    assert_eq!(batches, (1.0, 1.0), "one transaction of one message");
}

#[tokio::test]
async fn a_message_its_plan_refuses_gets_its_refusal_and_the_others_of_its_transaction_land() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let before = f.bus.batches();
    let unknown_to = InboundInput {
        to: phone("+15559999999"),
        ..inbound("SM2", "lost")
    };
    let inputs = vec![inbound("SM1", "one"), unknown_to, inbound("SM3", "three")];
    let answers = join_all(inputs.into_iter().map(|input| {
        let store = f.store.clone();
        async move { store.ingest(&tenant(), input).await }
    }))
    .await;
    assert!(
        matches!(&answers[1], Err(StoreError::Invalid { field: "to", .. })),
        "{:?}",
        answers[1]
    );
    assert!(answers[0].as_ref().unwrap().created && answers[2].as_ref().unwrap().created);
    assert_eq!(f.bus.batches() - before, 1, "the two others in one commit");
    log_of_messages(&f, 2).await;
}

#[tokio::test]
async fn a_statement_that_fails_in_a_shared_transaction_fails_only_its_own_message() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let metrics = Arc::new(Metrics::new());
    f.store.report_to(metrics.clone());
    let before = f.bus.batches();
    // PostgreSQL's text holds no NUL: the message's INSERT fails, and with it the transaction
    // the three share; each is then written alone. (The HTTP edge refuses a NUL with a 422
    // before it reaches a store; the store is called directly here to make a statement fail.)
    let inputs = vec![inbound("SM1", "one"), inbound("SM2", "a\0b"), inbound("SM3", "three")];
    let answers = join_all(inputs.into_iter().map(|input| {
        let store = f.store.clone();
        async move { store.ingest(&tenant(), input).await }
    }))
    .await;
    assert!(
        matches!(&answers[1], Err(StoreError::Unavailable(_))),
        "{:?}",
        answers[1]
    );
    let (one, three) = (answers[0].as_ref().unwrap(), answers[2].as_ref().unwrap());
    assert!(one.created && three.created);
    assert_eq!(
        f.bus.batches() - before,
        2,
        "the two that can land, each in a commit of its own"
    );
    let batch = &metrics.ingest_batch_messages;
    assert_eq!(
        (batch.get_sample_count(), batch.get_sample_sum()),
        (2, 2.0),
        "two transactions of one message each; the one that failed counts nowhere"
    );
    assert_eq!(f.store.thread(&tenant(), &one.thread.id).await.unwrap().unread_count, 2);
    log_of_messages(&f, 2).await;
}

#[tokio::test]
async fn messages_whose_deadline_passes_while_they_wait_for_their_tenant_answer_503_and_are_not_written() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let short = Arc::new(
        PgStore::connect(
            &PostgresSettings {
                timeout_ms: 1000,
                ..settings(&f.db.url)
            },
            f.bus.clone(),
            1000,
        )
        .await
        .expect("the store connects"),
    );
    // The preferences row held FOR UPDATE (as a change of the preferences holds it): the first
    // message waits for it past its deadline, the other two wait for the first.
    let mut raw = connect(&f.db.url).await;
    let hold = raw.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM preferences WHERE tenant = 'acme' FOR UPDATE", &[])
        .await
        .unwrap();
    let answers = join_all((1..=3).map(|i| {
        let store = short.clone();
        async move { store.ingest(&tenant(), inbound(&format!("SM{i}"), "late")).await }
    }))
    .await;
    for answer in &answers {
        assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
    }
    hold.rollback().await.unwrap();

    let again = short.ingest(&tenant(), inbound("SM1", "again")).await.unwrap();
    assert!(again.created, "SM1 was not written by the call that answered 503");
    assert_eq!(again.thread.unread_count, 1, "nor were SM2 and SM3");
    assert_eq!(f.store.head(&tenant()).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_first_messages_of_a_new_customer_make_one_thread_with_a_gap_free_log() {
    let f = fixture(1000).await;
    seed_location(&f.store).await;
    let other = Arc::new(
        PgStore::connect(&settings(&f.db.url), f.bus.clone(), 1000)
            .await
            .expect("the second node connects"),
    );
    let n = 24;
    let answers = join_all((0..n).map(|i| {
        let store = if i % 2 == 0 { f.store.clone() } else { other.clone() };
        tokio::spawn(async move { store.ingest(&tenant(), inbound(&format!("SM{i}"), "hi")).await })
    }))
    .await;
    one_unread_thread_of(&f, answers.into_iter().map(|a| a.unwrap()).collect()).await;
    log_of_messages(&f, n).await;
}

#[tokio::test]
async fn one_external_id_posted_eight_times_at_once_stores_one_message_and_creates_once() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let answers = join_all((0..8).map(|_| {
        let store = f.store.clone();
        async move { store.ingest(&tenant(), inbound("SM-race", "hello")).await }
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("every call answers")).collect();
    assert_eq!(answers.iter().filter(|a| a.created).count(), 1, "201 once, 200 after");
    let ids: std::collections::BTreeSet<&MessageId> = answers.iter().map(|a| &a.message.id).collect();
    assert_eq!(ids.len(), 1, "every answer names the same message");
    let thread = &answers[0].thread.id;
    let page = f
        .store
        .thread_messages(
            &scope("sam"),
            thread,
            Paging {
                limit: 200,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(f.store.thread(&tenant(), thread).await.unwrap().unread_count, 1);
    assert_eq!(
        f.store.head(&tenant()).await.unwrap(),
        2,
        "one message.new, one unread.count"
    );
}

#[tokio::test]
async fn an_inbound_message_waits_for_a_folder_change_in_flight_and_routes_by_its_outcome() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    f.store.ingest(&tenant(), inbound("SM1", "first")).await.unwrap();

    // A change of F1's sales resource, half done: its row is locked, as upsert_folder holds it.
    let mut raw = connect(&f.db.url).await;
    let change = raw.transaction().await.unwrap();
    change
        .execute(
            "SELECT 1 FROM folders WHERE tenant = 'acme' AND id = 'F1' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    change
        .execute(
            "UPDATE folders SET sales_resource_id = 'sal' WHERE tenant = 'acme' AND id = 'F1'",
            &[],
        )
        .await
        .unwrap();
    let store = f.store.clone();
    let second = tokio::spawn(async move { store.ingest(&tenant(), inbound("SM2", "second")).await });
    until_a_write_waits_for_a_lock(&crate::helpers::postgres::maintenance_url(), &f.db.name).await;
    change.commit().await.unwrap();
    second
        .await
        .unwrap()
        .expect("the message lands once the change committed");

    let events = f.bus.events();
    let new = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::MessageNew)
        .expect("message.new");
    assert_eq!(
        new.route.users,
        vec![user("sal"), user("sue")],
        "routed to the folder's resources as changed, not as they were"
    );
}

/// A write of the thread half done on a side connection: its row locked, a newer message
/// stored and made the thread's last. Returns the transaction, to commit.
async fn move_the_thread_on<'a>(
    raw: &'a mut tokio_postgres::Client,
    thread: &ThreadId,
    message: &str,
    at: i64,
) -> tokio_postgres::Transaction<'a> {
    let change = raw.transaction().await.unwrap();
    change
        .execute(
            "SELECT 1 FROM threads WHERE tenant = 'acme' AND id = $1 FOR UPDATE",
            &[&thread.as_str()],
        )
        .await
        .unwrap();
    change
        .execute(
            "INSERT INTO messages (tenant, id, thread_id, direction, body, attachments, created_at)
             VALUES ('acme', $1, $2, 'inbound', 'moved on', '[]', $3)",
            &[&message, &thread.as_str(), &at],
        )
        .await
        .unwrap();
    change
        .execute(
            "UPDATE threads SET last_message_id = $2, last_message_at = $3 WHERE tenant = 'acme' AND id = $1",
            &[&thread.as_str(), &message, &at],
        )
        .await
        .unwrap();
    change
}

#[tokio::test]
async fn a_write_that_waited_for_the_thread_sees_the_last_message_the_other_write_left() {
    // The statement that locks a thread joins its last message; when the lock waits for a
    // write that moves the thread on, the message must be the one that write left.
    let f = fixture(1000).await;
    seed_location(&f.store).await;
    let first = f.store.ingest(&tenant(), inbound("SM1", "first")).await.unwrap();
    let thread = first.thread.id.clone();
    let newest = first.message.created_at.micros() + 60_000_000;
    let maintenance = crate::helpers::postgres::maintenance_url();
    let mut raw = connect(&f.db.url).await;

    // Ingest: a message received before the newest one leaves that one last.
    let change = move_the_thread_on(&mut raw, &thread, "M2", newest).await;
    let store = f.store.clone();
    let earlier = InboundInput {
        received_at: Some(first.message.created_at),
        ..inbound("SM2", "received earlier")
    };
    let ingest = tokio::spawn(async move { store.ingest(&tenant(), earlier).await });
    until_a_write_waits_for_a_lock(&maintenance, &f.db.name).await;
    change.commit().await.unwrap();
    let ingested = ingest
        .await
        .unwrap()
        .expect("the message lands once the change committed");
    assert_eq!(ingested.thread.id, thread);
    assert_eq!(
        ingested.thread.last_message.id.as_str(),
        "M2",
        "the thread's last message as the change left it"
    );
    assert_eq!(ingested.thread.last_message.body, "moved on");

    // Every other write locks the thread by id: marking it read, say.
    let change = move_the_thread_on(&mut raw, &thread, "M3", newest + 1).await;
    let store = f.store.clone();
    let id = thread.clone();
    let read = tokio::spawn(async move { store.mark_read(&tenant(), &id, &user("sam")).await });
    until_a_write_waits_for_a_lock(&maintenance, &f.db.name).await;
    change.commit().await.unwrap();
    let marked = read.await.unwrap().expect("marked read once the change committed");
    assert_eq!(marked.last_message.id.as_str(), "M3");
    assert_eq!(marked.unread_count, 0);

    // Without a concurrent change the joined message is the answer, and it is the same.
    let again = f.store.mark_unread(&tenant(), &thread, &user("sam")).await.unwrap();
    assert_eq!(again.last_message.id.as_str(), "M3");
}

async fn locate(store: &PgStore, id: &str, numbers: &[&str]) {
    store
        .upsert_location(
            &tenant(),
            &LocationId::parse(id).unwrap(),
            LocationInput {
                name: id.into(),
                sms_numbers: numbers.iter().map(|n| phone(n)).collect(),
            },
        )
        .await
        .unwrap();
}

/// The customer's message with this id to `number`.
fn inbound_to(number: &str, id: &str) -> InboundInput {
    InboundInput {
        to: phone(number),
        ..inbound(id, "hello")
    }
}

/// Posts the customer's message SM3 to +15550001111 (L1's) while a transaction of the test
/// holds a row lock (`lock`, a `SELECT … FOR UPDATE`) that one of the message's reads waits
/// for; meanwhile the number moves to L2 (which has +15550002222), then the lock is let go.
/// The message's answer.
async fn ingest_while_the_number_moves(f: &Fixture, lock: &str, params: &[&(dyn ToSql + Sync)]) -> Ingested {
    let mut raw = connect(&f.db.url).await;
    let hold = raw.transaction().await.unwrap();
    hold.execute(lock, params).await.unwrap();
    let store = f.store.clone();
    let ingest = tokio::spawn(async move { store.ingest(&tenant(), inbound_to("+15550001111", "SM3")).await });
    until_a_write_waits_for_a_lock(&crate::helpers::postgres::maintenance_url(), &f.db.name).await;
    locate(&f.store, "L1", &["+15550003333"]).await;
    locate(&f.store, "L2", &["+15550002222", "+15550001111"]).await;
    hold.commit().await.unwrap();
    ingest.await.unwrap().expect("the message lands")
}

/// L1 (+15550001111) and L2 (+15550002222), the folders (id, location, sales resource) that
/// list the customer, then the customer's thread at each location: (L1's, L2's).
async fn the_customer_at_two_locations(f: &Fixture, folders: &[(&str, &str, &str)]) -> (Thread, Thread) {
    locate(&f.store, "L1", &["+15550001111"]).await;
    locate(&f.store, "L2", &["+15550002222"]).await;
    for (folder, location, sales) in folders {
        f.store
            .upsert_folder(
                &tenant(),
                &FolderId::parse(folder).unwrap(),
                FolderInput {
                    name: folder.to_string(),
                    location_id: LocationId::parse(location).unwrap(),
                    phone_numbers: vec![phone("+15551234567")],
                    sales_resource_id: Some(user(sales)),
                    service_resource_id: None,
                },
            )
            .await
            .unwrap();
    }
    let mut threads = Vec::new();
    for (number, id) in [("+15550001111", "SM1"), ("+15550002222", "SM2")] {
        threads.push(f.store.ingest(&tenant(), inbound_to(number, id)).await.unwrap().thread);
    }
    let at_l2 = threads.pop().unwrap();
    (threads.pop().unwrap(), at_l2)
}

#[tokio::test]
async fn a_number_that_moves_to_another_location_while_a_message_to_it_is_read_does_not_mix_the_two() {
    // An inbound message's reads go out together, each in a snapshot of its own: the first
    // finds the location of `to`, the next the customer's thread there. A number moved in
    // between must not give a thread of one location a folder of the other: a folder of L1
    // lists the customer, and L2's thread has no folder.
    let f = fixture(1000).await;
    let (_, at_l2) = the_customer_at_two_locations(&f, &[("F1", "L1", "sam")]).await;
    assert_eq!(at_l2.folder_id, None);

    // The message's first statement reads L1 as the location of the number, then waits for
    // the preferences.
    let ingested =
        ingest_while_the_number_moves(&f, "SELECT 1 FROM preferences WHERE tenant = 'acme' FOR UPDATE", &[]).await;
    assert_eq!(
        ingested.thread.id, at_l2.id,
        "the customer's thread at the number's new location"
    );
    assert_eq!(ingested.thread.location_id.as_str(), "L2");
    assert_eq!(ingested.thread.folder_id, None, "no folder of L1 for a thread of L2");
}

#[tokio::test]
async fn a_number_that_moves_while_a_message_waits_for_its_thread_does_not_route_by_another_threads_folder() {
    // The same, one statement later: the thread is locked at the old location, then the
    // folders' statement would find the customer's thread at the new one.
    let f = fixture(1000).await;
    let (at_l1, at_l2) = the_customer_at_two_locations(&f, &[("F1", "L1", "sam"), ("F2", "L2", "sal")]).await;
    assert_eq!(at_l1.folder_id.as_ref().map(|f| f.as_str()), Some("F1"));
    assert_eq!(at_l2.folder_id.as_ref().map(|f| f.as_str()), Some("F2"));

    // The message finds L1 and waits for L1's thread.
    let ingested = ingest_while_the_number_moves(
        &f,
        "SELECT 1 FROM threads WHERE tenant = 'acme' AND id = $1 FOR UPDATE",
        &[&at_l1.id.as_str()],
    )
    .await;
    assert_eq!(
        ingested.thread.id, at_l2.id,
        "run again from its first read: the number is L2's now"
    );
    let new = f
        .bus
        .events()
        .into_iter()
        .rev()
        .find(|e| e.kind == EventKind::MessageNew)
        .expect("message.new");
    assert_eq!(
        new.route.users,
        vec![user("sal")],
        "routed by the folder of the thread it landed in"
    );
}

#[tokio::test]
async fn a_thread_write_waits_for_a_preference_change_in_flight_and_routes_by_its_outcome() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let thread = f.store.ingest(&tenant(), inbound("SM1", "first")).await.unwrap().thread;
    f.store.mark_read(&tenant(), &thread.id, &user("sam")).await.unwrap();

    // A preference change half done: the row locked as set_preferences holds it, sales
    // resources no longer notified.
    let mut raw = connect(&f.db.url).await;
    let change = raw.transaction().await.unwrap();
    change
        .execute("SELECT 1 FROM preferences WHERE tenant = 'acme' FOR UPDATE", &[])
        .await
        .unwrap();
    change
        .execute("UPDATE preferences SET notify_sales = false WHERE tenant = 'acme'", &[])
        .await
        .unwrap();
    let (store, id) = (f.store.clone(), thread.id.clone());
    let unread = tokio::spawn(async move { store.mark_unread(&tenant(), &id, &user("olga")).await });
    until_a_write_waits_for_a_lock(&crate::helpers::postgres::maintenance_url(), &f.db.name).await;
    change.commit().await.unwrap();
    unread.await.unwrap().expect("the mark lands once the change committed");

    let events = f.bus.events();
    let marked = events.last().expect("an event");
    assert_eq!(marked.kind, EventKind::UnreadCount);
    assert_eq!(
        marked.route.users,
        vec![user("sue")],
        "routed by the preferences as changed: sam is no longer notified"
    );
}

#[tokio::test]
async fn a_preference_change_waits_for_a_thread_write_in_flight_and_moves_the_counts_it_made() {
    let f = fixture(1000).await;
    seed_folder(&f.store).await;
    let thread = f.store.ingest(&tenant(), inbound("SM1", "first")).await.unwrap().thread;
    f.store.mark_read(&tenant(), &thread.id, &user("sam")).await.unwrap();

    // A thread write half done: it holds the preferences FOR SHARE, as every thread write
    // does, and has made F1's thread unread.
    let mut raw = connect(&f.db.url).await;
    let write = raw.transaction().await.unwrap();
    write
        .execute("SELECT 1 FROM preferences WHERE tenant = 'acme' FOR SHARE", &[])
        .await
        .unwrap();
    write
        .execute(
            "UPDATE threads SET unread_count = 1 WHERE tenant = 'acme' AND id = $1",
            &[&thread.id.as_str()],
        )
        .await
        .unwrap();
    let store = f.store.clone();
    let change = tokio::spawn(async move {
        store
            .set_preferences(
                &tenant(),
                PreferencesPatch {
                    notify_sales_resource: Some(false),
                    notify_service_resource: None,
                },
            )
            .await
    });
    until_a_write_waits_for_a_lock(&crate::helpers::postgres::maintenance_url(), &f.db.name).await;
    write.commit().await.unwrap();
    change.await.unwrap().expect("the change lands");

    let last = f.bus.events().pop().expect("an event");
    assert_eq!(last.kind, EventKind::UnreadCount);
    assert_eq!(
        last.route.users,
        vec![user("sam")],
        "sam's count moved: the change saw the thread unread"
    );
}

#[tokio::test]
async fn refused_calls_leave_the_database_exactly_as_it_was() {
    let f = fixture(1000).await;
    seed_location(&f.store).await;
    f.store.ingest(&tenant(), inbound("SM1", "hi")).await.unwrap();
    let message = f
        .store
        .ingest(&tenant(), inbound("SM2", "again"))
        .await
        .unwrap()
        .message;
    let before = dump(&f.db.url).await;

    let taken = f
        .store
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
    let refused = f.store.ingest(&tenant(), unknown_to).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid { field: "to", .. })),
        "{refused:?}"
    );
    let no_folder = f.store.link_images(&tenant(), &message.id, &user("sam")).await;
    assert!(matches!(no_folder, Err(StoreError::Conflict(_))), "{no_folder:?}");
    let missing = f
        .store
        .mark_read(&tenant(), &ThreadId::parse("t_nope").unwrap(), &user("sam"))
        .await;
    assert_eq!(missing.err(), Some(StoreError::NotFound("thread")));
    let elsewhere = f
        .store
        .upsert_folder(
            &tenant(),
            &FolderId::parse("F9").unwrap(),
            FolderInput {
                name: "Nowhere".into(),
                location_id: LocationId::parse("L9").unwrap(),
                phone_numbers: vec![],
                sales_resource_id: None,
                service_resource_id: None,
            },
        )
        .await;
    assert!(
        matches!(
            elsewhere,
            Err(StoreError::Invalid {
                field: "location_id",
                ..
            })
        ),
        "{elsewhere:?}"
    );

    assert_eq!(dump(&f.db.url).await, before);
    assert_eq!(f.bus.events().len(), 4, "nothing published for the refused calls");
}

#[tokio::test]
async fn the_log_keeps_the_newest_events_up_to_the_retention() {
    let f = fixture(3).await;
    seed_location(&f.store).await;
    for i in 0..3 {
        f.store
            .ingest(&tenant(), inbound(&format!("SM{i}"), "x"))
            .await
            .unwrap();
    }
    // Six events, three kept: 4, 5 and 6.
    let c = connect(&f.db.url).await;
    let kept: i64 = c.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(kept, 3);
    assert_eq!(f.store.events_after(&tenant(), 2, 100).await.unwrap(), Replay::TooOld);
    let Replay::Events(events) = f.store.events_after(&tenant(), 3, 100).await.unwrap() else {
        panic!("the log reaches back to 4");
    };
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(
        f.store.events_after(&tenant(), 6, 100).await.unwrap(),
        Replay::Events(vec![])
    );
    assert_eq!(
        f.store.events_after(&tenant(), 7, 100).await.unwrap(),
        Replay::TooOld,
        "beyond the head"
    );
    assert_eq!(
        f.store.events_after(&tenant(), 3, 2).await.unwrap(),
        Replay::TooOld,
        "over the limit"
    );
    let other = TenantId::parse("other").unwrap();
    assert_eq!(
        f.store.heads(&[other.clone(), tenant(), other]).await.unwrap(),
        [0, 6, 0],
        "heads in the order asked, 0 for a tenant without events"
    );
}

#[tokio::test]
async fn stores_connecting_at_once_to_a_fresh_database_apply_the_schema_once() {
    let db = fresh_database();
    let bus: Arc<dyn Publisher> = Arc::new(Recorder::default());
    let s = settings(&db.url);
    let stores = join_all((0..6).map(|_| PgStore::connect(&s, bus.clone(), 1000))).await;
    let stores: Vec<PgStore> = stores.into_iter().map(|s| s.expect("every node starts")).collect();
    let c = connect(&db.url).await;
    let applied: Vec<(i32, String)> = c
        .query(
            &format!("SELECT version, name FROM {MIGRATIONS_TABLE} ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(applied, [(1, "schema".to_string())], "each migration applied once");
    // And every node works on it.
    seed_location(&stores[0]).await;
    stores[5].ingest(&tenant(), inbound("SM1", "hi")).await.unwrap();
    // A later start finds nothing to do.
    PgStore::connect(&settings(&db.url), bus, 1000)
        .await
        .expect("a restart on the current schema");
}

#[tokio::test]
async fn stores_racing_for_the_cursor_key_all_read_the_one_that_was_set_first() {
    let db = fresh_database();
    let bus: Arc<dyn Publisher> = Arc::new(Recorder::default());
    let store = PgStore::connect(&settings(&db.url), bus.clone(), 1000).await.unwrap();
    let s = settings(&db.url);
    let stores: Vec<PgStore> = join_all((0..4).map(|_| PgStore::connect(&s, bus.clone(), 1000)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let keys = join_all(stores.iter().map(|s| s.cursor_key())).await;
    let first = keys[0].clone().expect("a key");
    for k in &keys {
        assert_eq!(k.as_ref(), Ok(&first), "every store reads one key");
    }
    assert_eq!(store.cursor_key().await, Ok(first), "and keeps it");
    let elsewhere = fixture(1000).await;
    assert_ne!(
        elsewhere.store.cursor_key().await,
        Ok(first),
        "another deployment (database) has its own key"
    );
}

/// A store on a private server, with a short deadline.
async fn store_on(server: &PgServer) -> PgStore {
    let url = server.create_database("switchboard");
    let settings = PostgresSettings {
        timeout_ms: 1000,
        connect_timeout_ms: 500,
        ..settings(&url)
    };
    PgStore::connect(&settings, Arc::new(Recorder::default()), 1000)
        .await
        .expect("the store connects")
}

/// Polls `ping` until it succeeds, within PATIENCE.
async fn until_it_answers(store: &PgStore) {
    let deadline = Instant::now() + PATIENCE;
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store reconnects");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_outage_answers_503_at_once_and_the_store_recovers_when_postgres_returns() {
    let mut server = PgServer::start();
    let store = store_on(&server).await;
    seed_location(&store).await;
    store.ingest(&tenant(), inbound("SM1", "before")).await.unwrap();

    server.stop();
    let started = Instant::now();
    let down = store.ingest(&tenant(), inbound("SM2", "during")).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    let read = store.me(&scope("sam")).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within the deadline: {:?}",
        started.elapsed()
    );

    server.restart();
    until_it_answers(&store).await;
    let after = store.ingest(&tenant(), inbound("SM2", "after")).await.unwrap();
    assert!(after.created, "the write refused during the outage lands now, once");
    assert_eq!(after.thread.unread_count, 2);
}

#[tokio::test]
async fn a_server_that_hangs_answers_503_within_the_deadline_and_the_store_recovers() {
    let server = PgServer::start();
    let store = store_on(&server).await;
    seed_location(&store).await;
    store.ingest(&tenant(), inbound("SM1", "before")).await.unwrap();

    server.freeze();
    let started = Instant::now();
    let hung = store.ingest(&tenant(), inbound("SM2", "during")).await;
    let read = store.head(&tenant()).await;
    let elapsed = started.elapsed();
    server.thaw();
    assert!(matches!(hung, Err(StoreError::Unavailable(_))), "{hung:?}");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    assert!(
        elapsed < Duration::from_secs(4),
        "two calls, each cut at its 1 s deadline: {elapsed:?}"
    );

    until_it_answers(&store).await;
    let again = store.ingest(&tenant(), inbound("SM2", "after")).await.unwrap();
    assert!(again.created, "the write cut at its deadline was rolled back");
    assert_eq!(store.head(&tenant()).await.unwrap(), 4, "two messages, two events each");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_one_database_and_redis_deliver_what_either_commits_to_the_others_sessions() {
    use crate::helpers::{redis as redis_server, start, test_settings, ws::*};
    let redis = redis_server::RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = test_settings(dir_a.path());
    a.bus.backend = switchboard::config::BusBackend::Redis;
    a.redis.url = redis.url();
    a.redis.key_prefix = redis_server::unique_prefix();
    let mut b = a.clone();
    b.storage.path = dir_b.path().to_path_buf();
    let (a, b) = (start(a, dir_a).await, start(b, dir_b).await);
    a.seed().await;
    let (mut sam_b, _) = open(&b, &member("sam")).await;
    let posted = inbound_ok(&a, "SM1", F1_PHONE).await;
    let frame = sam_b.next_of_type("message.new").await;
    assert_eq!(frame["data"]["message"]["id"], posted["message"]["id"]);
    let (mut sue_a, _) = open(&a, &member("sue")).await;
    let again = inbound_ok(&b, "SM2", F1_PHONE).await;
    let frame = sue_a.next_of_type("message.new").await;
    assert_eq!(frame["data"]["message"]["id"], again["message"]["id"]);
}
