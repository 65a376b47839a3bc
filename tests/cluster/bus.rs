//! The Redis bus on its own: a recording sink instead of the hub, and a stand-in store that
//! only reads the log, so the tests can write the log and the channel the way the store's
//! script does — or leave holes in them on purpose.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use switchboard::{
    bus::{Bus, EventSink, redis::RedisBus},
    config::RedisSettings,
    domain::{Id, TenantId},
    event::{Event, EventKind, Route},
    store::{EventLog, Replay, StoreError, StoreResult, redis::keys},
};
use tokio::sync::mpsc;

use crate::helpers::{PATIENCE, redis as redis_server};

/// What the bus handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sunk {
    Event(u64),
    Lost,
}

struct Recorder(mpsc::UnboundedSender<Sunk>);

impl EventSink for Recorder {
    fn deliver(&self, events: &[Arc<Event>]) {
        for e in events {
            let _ = self.0.send(Sunk::Event(e.id));
        }
    }

    fn lost(&self, _tenant: &TenantId) {
        let _ = self.0.send(Sunk::Lost);
    }
}

/// The log as the Redis store keeps it, written directly.
#[derive(Clone)]
struct Log {
    conn: ConnectionManager,
    prefix: String,
}

const APPEND: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('PUBLISH', KEYS[3], ARGV[2]) end
";

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn wire(t: &TenantId, id: u64) -> String {
    Event {
        tenant: t.clone(),
        id,
        kind: EventKind::ThreadRead,
        route: Route::default(),
        data: format!(r#"{{"thread_id":"t{id}","by":"u"}}"#),
    }
    .to_wire()
}

impl Log {
    async fn new(url: &str, prefix: &str) -> Log {
        let client = redis::Client::open(url).unwrap();
        Log {
            conn: ConnectionManager::new(client)
                .await
                .expect("the test connects to Redis"),
            prefix: prefix.to_owned(),
        }
    }

    /// Appends event `id` of `t` to the log and, when `publish`, publishes it: the store's
    /// commit script, or (without `publish`) one whose message was lost.
    async fn append(&self, t: &TenantId, id: u64, publish: bool) {
        let mut conn = self.conn.clone();
        redis::cmd("EVAL")
            .arg(APPEND)
            .arg(3)
            .arg(keys::seq(&self.prefix, t))
            .arg(keys::log(&self.prefix, t))
            .arg(keys::channel(&self.prefix, t))
            .arg(id)
            .arg(wire(t, id))
            .arg(if publish { "1" } else { "0" })
            .query_async::<()>(&mut conn)
            .await
            .expect("append");
    }

    async fn publish_all(&self, t: &TenantId, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.append(t, id, true).await;
        }
    }

    /// Drops the log's events up to `id`, as retention does.
    async fn trim_through(&self, t: &TenantId, id: u64) {
        let mut conn = self.conn.clone();
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(keys::log(&self.prefix, t))
            .arg("-inf")
            .arg(id)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }

    /// The channels of this prefix that some connection subscribes to.
    async fn channels(&self) -> Vec<String> {
        let mut conn = self.conn.clone();
        let mut got: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        got.sort();
        got
    }

    /// Waits (bounded) until the subscribed channels of this prefix are `want`. Nothing tells
    /// the outside when an UNSUBSCRIBE has gone out, so this polls.
    async fn until_channels(&self, want: &[String]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.channels().await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "subscribed channels: {got:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the connections that hold subscriptions (the bus's): a dropped connection.
    async fn kill_subscribers(&self) {
        let mut conn = self.conn.clone();
        let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
        let mut killed = 0;
        for line in list.lines() {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(&format!("{name}=")))
                    .unwrap_or_default()
                    .to_owned()
            };
            if field("sub") != "0" && !field("sub").is_empty() {
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(field("id"))
                    .query_async::<()>(&mut conn)
                    .await
                    .unwrap();
                killed += 1;
            }
        }
        assert!(killed > 0, "no subscribed connection to kill: {list}");
    }

    /// Waits (bounded) until the test's own connection reaches Redis again after a restart.
    async fn reachable(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut conn = self.conn.clone();
            if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the test could not reach Redis again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn save(&self) {
        let mut conn = self.conn.clone();
        redis::cmd("SAVE").query_async::<()>(&mut conn).await.unwrap();
    }
}

/// Reads the log like the Redis store: every event after `after`, or `TooOld` when the log
/// does not reach back that far (or `after` is past its head).
#[async_trait]
impl EventLog for Log {
    async fn head(&self, tenant: &TenantId) -> StoreResult<u64> {
        let mut conn = self.conn.clone();
        let head: Option<u64> = redis::cmd("GET")
            .arg(keys::seq(&self.prefix, tenant))
            .query_async(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(head.unwrap_or(0))
    }

    async fn events_after(&self, tenant: &TenantId, after: u64, limit: usize) -> StoreResult<Replay> {
        let unavailable = |e: redis::RedisError| StoreError::Unavailable(e.to_string());
        let mut conn = self.conn.clone();
        let head: Option<u64> = redis::cmd("GET")
            .arg(keys::seq(&self.prefix, tenant))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let head = head.unwrap_or(0);
        if after > head || head - after > limit as u64 {
            return Ok(Replay::TooOld);
        }
        if after == head {
            return Ok(Replay::Events(Vec::new()));
        }
        let oldest: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(keys::log(&self.prefix, tenant))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if oldest.first().is_none_or(|(_, id)| *id > after + 1) {
            return Ok(Replay::TooOld);
        }
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::log(&self.prefix, tenant))
            .arg(format!("({after}"))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Replay::Events(
            members.iter().filter_map(|m| Event::from_wire(tenant, m)).collect(),
        ))
    }
}

/// A bus on `url` under a fresh prefix, with what it delivers and a writer of its log.
struct Rig {
    bus: RedisBus,
    sunk: mpsc::UnboundedReceiver<Sunk>,
    log: Log,
}

impl Rig {
    async fn start(url: &str) -> Rig {
        let prefix = redis_server::unique_prefix();
        let log = Log::new(url, &prefix).await;
        let (tx, sunk) = mpsc::unbounded_channel();
        let settings = RedisSettings {
            url: url.to_owned(),
            key_prefix: prefix,
            cluster_nodes: Vec::new(),
        };
        let bus = RedisBus::start(&settings, Arc::new(Recorder(tx)), Arc::new(log.clone()))
            .await
            .expect("the bus starts");
        Rig { bus, sunk, log }
    }

    async fn next(&mut self) -> Sunk {
        tokio::time::timeout(PATIENCE, self.sunk.recv())
            .await
            .expect("the sink is handed something in time")
            .expect("the bus is running")
    }

    /// Expects exactly these events next, in this order.
    async fn expect(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            assert_eq!(self.next().await, Sunk::Event(id));
        }
    }

    fn channel(&self, t: &TenantId) -> String {
        keys::channel(&self.log.prefix, t)
    }
}

#[tokio::test]
async fn a_node_holds_a_tenant_channel_only_while_it_has_sessions_of_that_tenant() {
    let mut rig = Rig::start(&redis_server::shared().url()).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    assert!(rig.log.channels().await.is_empty());

    rig.bus.join(&acme).await.unwrap();
    rig.bus.join(&acme).await.unwrap();
    // join resolved: the subscription is confirmed, so what is published now arrives.
    assert_eq!(rig.log.channels().await, vec![rig.channel(&acme)]);
    rig.log.publish_all(&globex, 1..=3).await;
    rig.log.publish_all(&acme, 1..=2).await;
    // Nothing of globex, which has no session here; acme's in order.
    rig.expect(1..=2).await;

    rig.bus.leave(&acme);
    rig.log.publish_all(&acme, [3]).await;
    rig.expect([3]).await;
    assert_eq!(
        rig.log.channels().await,
        vec![rig.channel(&acme)],
        "one session is left"
    );

    rig.bus.leave(&acme);
    rig.log.until_channels(&[]).await;

    // Back again: delivery starts after the head read on joining.
    rig.log.publish_all(&acme, 4..=5).await;
    rig.bus.join(&acme).await.unwrap();
    rig.log.publish_all(&acme, [6]).await;
    rig.expect([6]).await;
}

#[tokio::test]
async fn events_reach_the_hub_in_id_order_from_the_moment_join_resolves() {
    let mut rig = Rig::start(&redis_server::shared().url()).await;
    let acme = tenant("acme");
    rig.log.publish_all(&acme, 1..=3).await;
    rig.bus.join(&acme).await.unwrap();
    rig.log.publish_all(&acme, 4..=300).await;
    rig.expect(4..=300).await;
}

#[tokio::test]
async fn a_message_after_a_gap_first_brings_the_missing_events_from_the_log() {
    let mut rig = Rig::start(&redis_server::shared().url()).await;
    let acme = tenant("acme");
    rig.bus.join(&acme).await.unwrap();
    rig.log.append(&acme, 1, true).await;
    rig.log.append(&acme, 2, false).await;
    rig.log.append(&acme, 3, false).await;
    rig.log.append(&acme, 4, true).await;
    rig.expect(1..=4).await;
    rig.log.append(&acme, 5, true).await;
    rig.expect([5]).await;
}

#[tokio::test]
async fn a_barrier_resolves_once_the_node_has_handed_over_every_event_committed_before_it() {
    let server = redis_server::RedisServer::start();
    let mut rig = Rig::start(&server.url()).await;
    let acme = tenant("acme");
    rig.bus.join(&acme).await.unwrap();
    rig.log.append(&acme, 1, true).await;
    rig.expect([1]).await;
    // Committed, but this node hears of them only by catching up after its reconnect.
    for id in 2..=50 {
        rig.log.append(&acme, id, false).await;
    }
    rig.log.kill_subscribers().await;

    rig.bus.barrier(&acme).await.unwrap();

    for id in 2..=50 {
        assert_eq!(
            rig.sunk.try_recv(),
            Ok(Sunk::Event(id)),
            "handed over before the barrier resolved"
        );
    }
}

#[tokio::test]
async fn after_its_connection_drops_the_bus_resubscribes_and_catches_up_from_the_log() {
    let server = redis_server::RedisServer::start();
    let mut rig = Rig::start(&server.url()).await;
    let acme = tenant("acme");
    rig.bus.join(&acme).await.unwrap();
    rig.log.append(&acme, 1, true).await;
    rig.expect([1]).await;
    // Committed while this node hears nothing of them: only the log has them.
    for id in 2..=5 {
        rig.log.append(&acme, id, false).await;
    }

    rig.log.kill_subscribers().await;

    // No further message: the reconnect alone brings them.
    rig.expect(2..=5).await;
    rig.log.until_channels(&[rig.channel(&acme)]).await;
    rig.log.append(&acme, 6, true).await;
    rig.expect([6]).await;
}

#[tokio::test]
async fn a_log_trimmed_past_a_gap_closes_the_tenant_sessions_to_resume() {
    let mut rig = Rig::start(&redis_server::shared().url()).await;
    let acme = tenant("acme");
    rig.bus.join(&acme).await.unwrap();
    rig.log.append(&acme, 1, true).await;
    rig.expect([1]).await;
    for id in 2..=5 {
        rig.log.append(&acme, id, false).await;
    }
    rig.log.trim_through(&acme, 3).await;
    rig.log.append(&acme, 6, true).await;

    assert_eq!(rig.next().await, Sunk::Lost);
    // Delivery goes on from the head read after the loss.
    rig.log.append(&acme, 7, true).await;
    rig.expect([7]).await;
}

#[tokio::test]
async fn while_redis_is_down_ping_and_join_fail_and_once_it_is_back_delivery_resumes() {
    let mut server = redis_server::RedisServer::start();
    let mut rig = Rig::start(&server.url()).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    rig.bus.join(&acme).await.unwrap();
    rig.log.publish_all(&acme, 1..=2).await;
    rig.expect(1..=2).await;
    assert!(rig.bus.ping().await.is_ok());

    // Written to disk so that the restarted server has the log again.
    rig.log.save().await;
    server.stop();
    assert!(rig.bus.ping().await.is_err(), "ping while Redis is down");
    assert!(rig.bus.join(&globex).await.is_err(), "join while Redis is down");

    server.restart();
    let back = Instant::now();
    // The test's own connection may need a moment too; the bus catches up either way.
    rig.log.reachable().await;
    rig.log.append(&acme, 3, true).await;
    rig.expect([3]).await;
    eprintln!("bus: delivery resumed {:?} after Redis answered again", back.elapsed());
    assert!(rig.bus.ping().await.is_ok());
    rig.bus.join(&globex).await.unwrap();
}

#[tokio::test]
async fn a_redis_restarted_empty_closes_the_tenant_sessions_and_delivery_goes_on_from_its_new_head() {
    let mut server = redis_server::RedisServer::start();
    let mut rig = Rig::start(&server.url()).await;
    let acme = tenant("acme");
    rig.bus.join(&acme).await.unwrap();
    rig.log.publish_all(&acme, 1..=3).await;
    rig.expect(1..=3).await;

    server.stop();
    server.restart();

    // The log's head (0) is behind what was delivered: it cannot be trusted to fill anything.
    assert_eq!(rig.next().await, Sunk::Lost);
    rig.log.reachable().await;
    rig.log.append(&acme, 1, true).await;
    rig.expect([1]).await;
}
