//! The hub's hot paths, in-process: who receives an event (the rules), encoding an event
//! frame, fanning one event out to N local sessions through the hub, and parsing an inbound
//! message's phone numbers and verifying its token (never seen, and seen before).
//!
//! `cargo bench --bench hot_paths` (CI builds it: `cargo bench --no-run`).

use std::{hint::black_box, sync::Arc, time::Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchboard::{
    auth::{TokenSpec, Verifier, mint_hs256},
    bus::EventSink,
    config::Settings,
    domain::{Id, LocationId, PhoneParser, TenantId, UserId},
    event::{Event, EventKind, Route},
    hub::{Hub, QueueBounds},
    metrics::Metrics,
    protocol,
    rules::{self, Recipient, Resources, Viewer},
};

fn id<T: Id>(s: &str) -> T {
    T::parse(s).expect("valid id")
}

/// A `message.new` data member of a realistic size (~600 bytes).
fn message_data() -> String {
    let message = r#"{"id":"m_01a20a744a2976bdaf6b2b70002e6a89","thread_id":"t_01a20a744a2976bdaf6b2b6f6d3b920d","direction":"inbound","body":"The water is back, can someone come by this afternoon?","attachments":[],"created_at":"2026-11-23T22:08:43.049707Z","author_id":null,"external_id":"SM123"}"#;
    format!(
        r#"{{"thread":{{"id":"t_01a20a744a2976bdaf6b2b6f6d3b920d","location_id":"L1","customer_number":"+15551234567","folder_id":"F1","unread":true,"unread_count":1,"last_message":{message},"last_message_at":"2026-11-23T22:08:43.049707Z"}},"message":{message}}}"#
    )
}

fn audience(c: &mut Criterion) {
    let resources = Resources {
        sales: Some(id("sam")),
        service: Some(id("sue")),
    };
    let prefs = Default::default();
    let location: LocationId = id("L1");
    let locations: Vec<LocationId> = (0..5).map(|i| id(&format!("L{i}"))).collect();
    let (olga, sam): (UserId, UserId) = (id("olga"), id("sam"));
    c.bench_function("audience/route_of_a_thread", |b| {
        b.iter(|| rules::thread_route(black_box(&location), &rules::notified(black_box(&resources), prefs)))
    });
    let route = rules::thread_route(&location, &rules::notified(&resources, prefs));
    c.bench_function("audience/receives_subscriber", |b| {
        let r = Recipient {
            viewer: Viewer {
                user: &olga,
                locations: &locations,
                subscribe_all: true,
            },
            is_service: false,
            follow: Some(&sam),
        };
        b.iter(|| rules::receives(black_box(&r), black_box(&route)))
    });
}

fn encoding(c: &mut Criterion) {
    let event = Event {
        tenant: id("acme"),
        id: 123_456,
        kind: EventKind::MessageNew,
        route: Route::default(),
        data: message_data(),
    };
    c.bench_function("encode/message_new_frame", |b| {
        b.iter(|| {
            let e = black_box(&event);
            protocol::event_frame(e.kind, e.id, &e.data)
        })
    });
    c.bench_function("encode/wire", |b| b.iter(|| black_box(&event).to_wire()));
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    for n in [100usize, 1_000, 10_000] {
        let hub = Hub::new(Arc::new(Metrics::new()));
        let tenant: TenantId = id("acme");
        let location: LocationId = id("L1");
        let locations: Arc<[LocationId]> = Arc::from(vec![location.clone()]);
        // n subscribe-all sessions at one location: a broadcast (W3's shape).
        let mut queues = Vec::with_capacity(n);
        for i in 0..n {
            let (h, rx, wire) = hub
                .register(
                    tenant.clone(),
                    id(&format!("u{i}")),
                    false,
                    locations.clone(),
                    QueueBounds {
                        items: 1024,
                        bytes: 1 << 20,
                    },
                    usize::MAX,
                )
                .unwrap();
            hub.set_subscribe_all(&h, true, 1);
            // Open, as after `hello`: live events go straight to the wire queue.
            h.try_direct(&rx);
            queues.push((h, rx, wire));
        }
        let route = rules::thread_route(&location, &[]);
        let mut next_id = 2u64;
        group.bench_with_input(BenchmarkId::new("broadcast_to_sessions", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let event = Arc::new(Event {
                        tenant: tenant.clone(),
                        id: next_id,
                        kind: EventKind::MessageNew,
                        route: route.clone(),
                        data: message_data(),
                    });
                    next_id += 1;
                    let started = Instant::now();
                    hub.deliver(std::slice::from_ref(&event));
                    spent += started.elapsed();
                    // Drain outside the timing, as each session's response body would.
                    for (h, rx, wire) in queues.iter_mut() {
                        while let Ok(out) = rx.try_recv() {
                            h.room.give(out.bytes());
                        }
                        while let Ok(frame) = wire.try_recv() {
                            h.room.give(frame.bytes());
                        }
                    }
                }
                spent
            })
        });
    }
    group.finish();
}

fn phones(c: &mut Criterion) {
    let mut group = c.benchmark_group("phone");
    let parser = PhoneParser::new("US").expect("US is a country");
    let mut n = 0u32;
    // A new number every time (the memo cleared as it fills): what every parse cost before
    // the parser remembered numbers.
    group.bench_function("parse_a_new_number", |b| {
        b.iter(|| {
            n = (n + 1) % 10_000_000;
            black_box(parser.parse(&format!("+1 (555) {:03}-{:04}", n / 10_000 % 800 + 200, n % 10_000)))
        })
    });
    group.bench_function("parse_a_known_number", |b| {
        b.iter(|| black_box(parser.parse(black_box("+1 (555) 123-4567"))))
    });
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth");
    let mut settings = Settings::defaults().auth;
    settings.hs256_secret = "bench-secret".into();
    // A new verifier each time, which has never seen the token: what every request paid before.
    let token = mint_hs256("bench-secret", &TokenSpec::new("ingest", "acme", &["service"], &[]));
    group.bench_function("verify_a_new_token_hs256", |b| {
        b.iter_batched(
            || Verifier::from_settings(&settings).expect("a secret is set"),
            |v| black_box(v.verify(&token).is_ok()),
            criterion::BatchSize::SmallInput,
        )
    });
    let verifier = Verifier::from_settings(&settings).expect("a secret is set");
    group.bench_function("verify_a_known_token_hs256", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&token)).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, audience, encoding, fan_out, phones, tokens);
criterion_main!(benches);
