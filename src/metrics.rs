//! Prometheus metrics of one application instance (its own registry, so tests that run
//! several hubs in one process do not mix their figures).

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// Open websocket sessions on this node.
    pub sessions: IntGauge,
    /// Websocket handshakes accepted.
    pub handshakes: IntCounter,
    /// Events received from the bus, by type.
    pub events: IntCounterVec,
    /// Frames queued for sessions (one per event per recipient session).
    pub deliveries: IntCounter,
    /// Sessions closed with 4008 because their queue was full.
    pub queue_overflows: IntCounter,
    /// Inbound messages stored (201s).
    pub ingested: IntCounter,
    /// Time to store an inbound message durably and publish its events.
    pub ingest_seconds: Histogram,
    /// Inbound messages per committed ingestion transaction (the PostgreSQL store's group
    /// commit: 1 when a message found no transaction of its tenant running).
    pub ingest_batch_messages: Histogram,
    /// HTTP responses, by status class.
    pub http_responses: IntCounterVec,
    /// Batches of events this node failed to publish to the other nodes (they read them from
    /// the log instead).
    pub publish_failures: IntCounter,
    /// Reads of the event log to fill a hole in live delivery, by what found the hole.
    pub catch_ups: IntCounterVec,
    /// 1 while the bus's transport is connected (every partition live), 0 during an outage
    /// (events then come from the log).
    pub bus_up: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("switchboard".into()), None).expect("valid prefix");
        let sessions = IntGauge::new("sessions", "Open websocket sessions on this node").unwrap();
        let handshakes = IntCounter::new("handshakes_total", "Websocket handshakes accepted").unwrap();
        let events = IntCounterVec::new(Opts::new("events_total", "Events received from the bus"), &["type"]).unwrap();
        let deliveries = IntCounter::new("deliveries_total", "Frames queued for sessions").unwrap();
        let queue_overflows =
            IntCounter::new("queue_overflows_total", "Sessions closed with 4008 (queue full)").unwrap();
        let ingested = IntCounter::new("ingested_total", "Inbound messages stored").unwrap();
        let ingest_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ingest_seconds",
                "Time to store an inbound message and publish its events",
            )
            .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]),
        )
        .unwrap();
        let ingest_batch_messages = Histogram::with_opts(
            HistogramOpts::new(
                "ingest_batch_messages",
                "Inbound messages per committed ingestion transaction (PostgreSQL group commit)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
        )
        .unwrap();
        let http_responses =
            IntCounterVec::new(Opts::new("http_responses_total", "HTTP responses"), &["class"]).unwrap();
        let publish_failures = IntCounter::new(
            "publish_failures_total",
            "Batches of events not published to the other nodes (they catch up from the log)",
        )
        .unwrap();
        let catch_ups = IntCounterVec::new(
            Opts::new(
                "catch_ups_total",
                "Reads of the event log filling a hole in live delivery",
            ),
            &["reason"],
        )
        .unwrap();
        let bus_up = IntGauge::new("bus_up", "1 while the bus's transport is connected, 0 during an outage").unwrap();
        bus_up.set(1);
        // unwrap: the names above are valid and registered once on a fresh registry.
        registry.register(Box::new(sessions.clone())).unwrap();
        registry.register(Box::new(handshakes.clone())).unwrap();
        registry.register(Box::new(events.clone())).unwrap();
        registry.register(Box::new(deliveries.clone())).unwrap();
        registry.register(Box::new(queue_overflows.clone())).unwrap();
        registry.register(Box::new(ingested.clone())).unwrap();
        registry.register(Box::new(ingest_seconds.clone())).unwrap();
        registry.register(Box::new(ingest_batch_messages.clone())).unwrap();
        registry.register(Box::new(http_responses.clone())).unwrap();
        registry.register(Box::new(publish_failures.clone())).unwrap();
        registry.register(Box::new(catch_ups.clone())).unwrap();
        registry.register(Box::new(bus_up.clone())).unwrap();
        Metrics {
            registry,
            sessions,
            handshakes,
            events,
            deliveries,
            queue_overflows,
            ingested,
            ingest_seconds,
            ingest_batch_messages,
            http_responses,
            publish_failures,
            catch_ups,
            bus_up,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // unwrap: encoding into a Vec cannot fail for well-formed metrics.
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
