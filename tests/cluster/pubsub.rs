//! The live-event transport (`bus::pubsub`) on real servers: a single `redis-server` and a
//! Redis Cluster of 3 primaries and 3 replicas (`helpers::redis_cluster`), each test with its
//! own. Two transports stand for two nodes; a recording receiver stands for the bus.
//!
//! Payloads are `"{partition}:{n}"` with `n` counting up per partition, so order and loss are
//! visible; what a gap is reported for is compared with the partitions the topology put on
//! the node that failed or the slot that moved.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use switchboard::bus::pubsub::{
    ClusterPubSub, Gap, PARTITIONS, PubSub, PubSubError, Receiver, SinglePubSub, Tuning, slot_of_partition,
};
use tokio::sync::mpsc;

use crate::helpers::{
    PATIENCE,
    redis::{self as redis_server, RedisServer},
    redis_cluster::RedisCluster,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Message(u16, u64),
    Gap(Vec<u16>, Gap),
}

struct Recorder(mpsc::UnboundedSender<Got>);

impl Receiver for Recorder {
    fn message(&self, partition: u16, payload: Vec<u8>) {
        let text = String::from_utf8(payload).expect("the tests publish text");
        let (p, n) = text.split_once(':').expect("payloads are partition:n");
        assert_eq!(p.parse::<u16>().unwrap(), partition, "a message on the wrong partition");
        let _ = self.0.send(Got::Message(partition, n.parse().unwrap()));
    }

    fn gap(&self, partitions: &[u16], gap: Gap) {
        let _ = self.0.send(Got::Gap(partitions.to_vec(), gap));
    }
}

/// A transport and what it handed its receiver.
struct Node {
    pubsub: Box<dyn PubSub>,
    got: mpsc::UnboundedReceiver<Got>,
}

fn payload(p: u16, n: u64) -> Vec<u8> {
    format!("{p}:{n}").into_bytes()
}

/// Short enough that the tests see the periodic paths, long enough not to matter otherwise.
fn tuning() -> Tuning {
    Tuning {
        interrupted_after: Duration::from_secs(8),
        ..Tuning::default()
    }
}

impl Node {
    async fn single(url: &str, prefix: &str) -> Node {
        Node::single_with(url, prefix, tuning()).await
    }

    async fn single_with(url: &str, prefix: &str, tuning: Tuning) -> Node {
        let (tx, got) = mpsc::unbounded_channel();
        let pubsub = SinglePubSub::connect(url, prefix, Arc::new(Recorder(tx)), tuning)
            .await
            .expect("the transport connects");
        Node {
            pubsub: Box::new(pubsub),
            got,
        }
    }

    async fn cluster(urls: &[String], prefix: &str) -> Node {
        let (tx, got) = mpsc::unbounded_channel();
        let pubsub = ClusterPubSub::connect(urls, prefix, Arc::new(Recorder(tx)), tuning())
            .await
            .expect("the transport connects");
        Node {
            pubsub: Box::new(pubsub),
            got,
        }
    }

    async fn subscribe_all(&self, partitions: impl IntoIterator<Item = u16>) {
        for p in partitions {
            self.pubsub.subscribe(p).await.expect("subscribed");
        }
    }

    async fn next(&mut self) -> Got {
        tokio::time::timeout(PATIENCE, self.got.recv())
            .await
            .expect("the receiver is handed something in time")
            .expect("the transport runs")
    }

    /// Receives exactly `want` (per partition, in this order), nothing else in between.
    async fn expect(&mut self, want: &BTreeMap<u16, Vec<u64>>) {
        let mut left: BTreeMap<u16, std::collections::VecDeque<u64>> =
            want.iter().map(|(p, ns)| (*p, ns.iter().copied().collect())).collect();
        left.retain(|_, ns| !ns.is_empty());
        while !left.is_empty() {
            match self.next().await {
                Got::Message(p, n) => {
                    let Some(ns) = left.get_mut(&p) else {
                        panic!("an unexpected message {p}:{n}");
                    };
                    assert_eq!(ns.pop_front(), Some(n), "partition {p} out of order or lost");
                    if ns.is_empty() {
                        left.remove(&p);
                    }
                }
                gap => panic!("unexpected {gap:?} while waiting for messages {left:?}"),
            }
        }
    }

    /// Nothing more arrives for a moment (used only after a fence proved the order).
    fn nothing_pending(&mut self) {
        if let Ok(got) = self.got.try_recv() {
            panic!("unexpected {got:?}");
        }
    }
}

/// Publishes `n` messages on each partition, interleaved: round r publishes r on every one.
async fn publish_rounds(publisher: &dyn PubSub, partitions: &[u16], rounds: std::ops::Range<u64>) {
    for r in rounds {
        for p in partitions {
            publisher.publish(*p, &payload(*p, r)).await.expect("published");
        }
    }
}

fn rounds_of(partitions: &[u16], rounds: std::ops::Range<u64>) -> BTreeMap<u16, Vec<u64>> {
    partitions.iter().map(|p| (*p, rounds.clone().collect())).collect()
}

/// Publishes until the server takes it (the publishing connection may be reconnecting).
async fn publish_when_back(publisher: &dyn PubSub, p: u16, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match publisher.publish(p, &payload(p, n)).await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "cannot publish again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) for `check` to hold; for states nothing announces.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- a single Redis ----

#[tokio::test]
async fn on_a_single_redis_messages_reach_every_subscribed_node_in_order_until_it_unsubscribes() {
    let url = redis_server::shared().url();
    let prefix = redis_server::unique_prefix();
    let (mut a, mut b) = (Node::single(&url, &prefix).await, Node::single(&url, &prefix).await);
    let partitions = [0, 5, 77, 127];
    a.subscribe_all(partitions).await;
    b.subscribe_all(partitions).await;
    assert!(a.pubsub.connected() && b.pubsub.connected());
    a.pubsub.ping().await.unwrap();

    publish_rounds(&*a.pubsub, &partitions, 0..20).await;
    a.expect(&rounds_of(&partitions, 0..20)).await;
    b.expect(&rounds_of(&partitions, 0..20)).await;

    // Unsubscribed on a only: a message on 5, then one on 0 as a fence (one publishing
    // connection, one subscription connection: Redis keeps their order).
    a.pubsub.unsubscribe(5).await.unwrap();
    a.pubsub.publish(5, &payload(5, 20)).await.unwrap();
    a.pubsub.publish(0, &payload(0, 20)).await.unwrap();
    a.expect(&BTreeMap::from([(0, vec![20])])).await;
    a.nothing_pending();
    b.expect(&BTreeMap::from([(5, vec![20]), (0, vec![20])])).await;

    // Subscribing again brings it back; subscribing twice is one subscription.
    a.pubsub.subscribe(5).await.unwrap();
    a.pubsub.subscribe(5).await.unwrap();
    a.pubsub.publish(5, &payload(5, 21)).await.unwrap();
    a.expect(&BTreeMap::from([(5, vec![21])])).await;
    b.expect(&BTreeMap::from([(5, vec![21])])).await;
    a.nothing_pending();
    assert!(matches!(
        a.pubsub.subscribe(PARTITIONS).await,
        Err(PubSubError::NoSuchPartition(128))
    ));
}

#[tokio::test]
async fn a_key_prefix_with_braces_is_refused() {
    let (tx, _got) = mpsc::unbounded_channel();
    let refused = SinglePubSub::connect(&redis_server::shared().url(), "sb{1}", Arc::new(Recorder(tx)), tuning()).await;
    assert!(matches!(refused, Err(PubSubError::Config(_))));
}

#[tokio::test]
async fn after_a_redis_restart_the_partitions_are_resubscribed_then_reported_and_later_messages_arrive() {
    let mut server = RedisServer::start();
    let prefix = redis_server::unique_prefix();
    let mut node = Node::single(&server.url(), &prefix).await;
    let partitions = [3, 64, 100];
    node.subscribe_all(partitions).await;
    publish_rounds(&*node.pubsub, &partitions, 0..3).await;
    node.expect(&rounds_of(&partitions, 0..3)).await;

    server.stop();
    until("the transport notices", || !node.pubsub.connected()).await;
    server.restart();

    // The gap comes once the three are subscribed again: what is published now arrives.
    assert_eq!(node.next().await, Got::Gap(partitions.to_vec(), Gap::Resubscribed));
    assert!(node.pubsub.connected());
    for p in partitions {
        publish_when_back(&*node.pubsub, p, 3).await;
    }
    node.expect(&rounds_of(&partitions, 3..4)).await;
}

#[tokio::test]
async fn a_redis_away_for_long_is_reported_interrupted_and_what_was_asked_meanwhile_comes_good_with_the_rest() {
    let mut server = RedisServer::start();
    let quick = Tuning {
        interrupted_after: Duration::from_millis(300),
        subscribe_timeout: Duration::from_millis(300),
        ..Tuning::default()
    };
    let mut node = Node::single_with(&server.url(), &redis_server::unique_prefix(), quick).await;
    node.subscribe_all([1, 2]).await;

    server.stop();
    assert_eq!(node.next().await, Got::Gap(vec![1, 2], Gap::Interrupted));
    assert!(!node.pubsub.connected());
    assert!(matches!(node.pubsub.subscribe(9).await, Err(PubSubError::Timeout)));
    assert!(node.pubsub.ping().await.is_err());

    server.restart();
    // The partition whose subscribe failed is reported with the others once it holds.
    assert_eq!(node.next().await, Got::Gap(vec![1, 2, 9], Gap::Resubscribed));
    assert!(node.pubsub.connected());
    publish_when_back(&*node.pubsub, 9, 0).await;
    node.expect(&BTreeMap::from([(9, vec![0])])).await;
}

// ---- a Redis Cluster ----

/// Partitions grouped by the primary (port) that serves them now.
fn by_owner(cluster: &RedisCluster, partitions: impl IntoIterator<Item = u16>) -> BTreeMap<u16, Vec<u16>> {
    let mut owners = BTreeMap::<u16, Vec<u16>>::new();
    for p in partitions {
        owners
            .entry(cluster.owner_of(slot_of_partition(p)))
            .or_default()
            .push(p);
    }
    owners
}

/// `INFO commandstats` of one node: calls and rejected calls of `command`.
fn command_stats(cluster: &RedisCluster, port: u16, command: &str) -> (u64, u64) {
    let info: String = cluster.cmd(port, &["INFO", "commandstats"]).unwrap();
    let Some(line) = info.lines().find(|l| l.starts_with(&format!("cmdstat_{command}:"))) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line.split([':', ','])
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map_or(0, |v| v.parse().unwrap())
    };
    (field("calls"), field("rejected_calls"))
}

/// Connections of a node that hold sharded subscriptions (`ssub` > 0 in `CLIENT LIST`).
fn shard_subscribers(cluster: &RedisCluster, port: u16) -> usize {
    let list: String = cluster.cmd(port, &["CLIENT", "LIST"]).unwrap();
    list.lines()
        .filter(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("ssub="))
                .is_some_and(|n| n != "0")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_partition_reaches_both_nodes_in_order_over_one_connection_per_primary() {
    let cluster = RedisCluster::start();
    let prefix = redis_server::unique_prefix();
    let (mut a, mut b) = (
        Node::cluster(&cluster.urls(), &prefix).await,
        Node::cluster(&cluster.urls()[..1], &prefix).await,
    );
    let all: Vec<u16> = (0..PARTITIONS).collect();
    let owners = by_owner(&cluster, all.iter().copied());
    assert_eq!(owners.len(), 3, "the partitions span every primary");
    a.subscribe_all(all.iter().copied()).await;
    b.subscribe_all(all.iter().copied()).await;
    assert!(a.pubsub.connected());
    a.pubsub.ping().await.unwrap();
    for primary in owners.keys() {
        // One connection of a, one of b: not one per partition.
        assert_eq!(shard_subscribers(&cluster, *primary), 2, "on {primary}");
    }

    for primary in owners.keys() {
        let _: () = cluster.cmd(*primary, &["CONFIG", "RESETSTAT"]).unwrap();
    }
    publish_rounds(&*a.pubsub, &all, 0..5).await;
    a.expect(&rounds_of(&all, 0..5)).await;
    b.expect(&rounds_of(&all, 0..5)).await;
    // redis-rs sent each SPUBLISH straight to the primary that serves its slot: each primary
    // ran exactly its partitions' messages, none was redirected.
    for (primary, ps) in &owners {
        assert_eq!(
            command_stats(&cluster, *primary, "spublish"),
            (5 * ps.len() as u64, 0),
            "SPUBLISH calls and rejections on {primary}"
        );
    }

    // a lets every other partition go; a message on each of those, then one on each kept
    // partition (each primary serves some of both, so these fence the others).
    let (dropped, kept): (Vec<u16>, Vec<u16>) = all.iter().partition(|p| *p % 2 == 1);
    for p in &dropped {
        a.pubsub.unsubscribe(*p).await.unwrap();
    }
    publish_rounds(&*b.pubsub, &dropped, 5..6).await;
    publish_rounds(&*b.pubsub, &kept, 5..6).await;
    a.expect(&rounds_of(&kept, 5..6)).await;
    a.nothing_pending();
    b.expect(&rounds_of(&all, 5..6)).await;
    for primary in owners.keys() {
        assert_eq!(
            shard_subscribers(&cluster, *primary),
            2,
            "still one connection each on {primary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_primary_dies_its_partitions_alone_are_resubscribed_on_the_promoted_replica_and_reported() {
    let mut cluster = RedisCluster::start();
    let prefix = redis_server::unique_prefix();
    let mut node = Node::cluster(&cluster.urls(), &prefix).await;
    let all: Vec<u16> = (0..PARTITIONS).collect();
    node.subscribe_all(all.iter().copied()).await;
    let owners = by_owner(&cluster, all.iter().copied());
    let (victim, lost) = owners.iter().next().map(|(p, ps)| (*p, ps.clone())).unwrap();
    // A few partitions of each other primary carry a steady stream through the failover.
    let others: Vec<u16> = owners
        .iter()
        .filter(|(primary, _)| **primary != victim)
        .flat_map(|(_, ps)| ps[..4].to_vec())
        .collect();

    // The other partitions keep flowing while the primary dies and its replica takes over:
    // a publisher sends round after round on them until told to stop.
    // Another node publishes; what it receives itself is not looked at.
    let publisher = Arc::new(
        ClusterPubSub::connect(
            &cluster.urls(),
            &prefix,
            Arc::new(Recorder(mpsc::unbounded_channel().0)),
            tuning(),
        )
        .await
        .unwrap(),
    );
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let flowing = {
        let publisher = publisher.clone();
        let others = others.clone();
        tokio::spawn(async move {
            let mut round = 0u64;
            loop {
                for p in &others {
                    publisher
                        .publish(*p, &payload(*p, round))
                        .await
                        .expect("the other primaries take publishes");
                }
                round += 1;
                if stop.try_recv().is_ok() {
                    return round;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let killed_at = Instant::now();
    cluster.kill(victim);
    let promoted = cluster.wait_for_new_owner(slot_of_partition(lost[0]), victim);

    // Collect until the gap for the lost partitions is reported.
    let mut next_of: BTreeMap<u16, u64> = others.iter().map(|p| (*p, 0)).collect();
    let mut during = 0;
    let gap = loop {
        match node.next().await {
            Got::Message(p, n) => {
                let expected = next_of
                    .get_mut(&p)
                    .unwrap_or_else(|| panic!("a message on lost partition {p}"));
                assert_eq!(
                    n, *expected,
                    "partition {p} lost or reordered a message during the failover"
                );
                *expected += 1;
                during += 1;
            }
            Got::Gap(ps, Gap::Interrupted) => {
                assert_eq!(ps, lost, "only the dead primary's partitions are interrupted");
            }
            Got::Gap(ps, Gap::Resubscribed) => break ps,
        }
    };
    assert_eq!(
        gap, lost,
        "the gap names exactly the partitions the dead primary served"
    );
    assert!(during > 0, "the other partitions flowed during the failover");
    let _ = stop_tx.send(());
    let rounds = flowing.await.unwrap();
    // Everything the other partitions were sent arrives, in order, none lost.
    let rest: BTreeMap<u16, Vec<u64>> = next_of
        .iter()
        .map(|(p, from)| (*p, (*from..rounds).collect()))
        .collect();
    node.expect(&rest).await;

    // The lost partitions are served by the promoted replica, and what follows arrives.
    assert!(by_owner(&cluster, lost.iter().copied()).keys().eq([&promoted]));
    for p in &lost {
        publish_when_back(&*node.pubsub, *p, 1000).await;
    }
    node.expect(&lost.iter().map(|p| (*p, vec![1000])).collect()).await;
    until("the transport says it is connected", || node.pubsub.connected()).await;
    eprintln!("failover: gap reported {:?} after the kill", killed_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_partitions_slot_moves_to_another_primary_it_is_resubscribed_there_and_reported() {
    let cluster = RedisCluster::start();
    let prefix = redis_server::unique_prefix();
    let mut node = Node::cluster(&cluster.urls(), &prefix).await;
    let all: Vec<u16> = (0..PARTITIONS).collect();
    let owners = by_owner(&cluster, all.iter().copied());
    let mut primaries = owners.keys().copied();
    let (from, to) = (primaries.next().unwrap(), primaries.next().unwrap());
    let moving = owners[&from][0];
    let (stay_same, stay_other) = (owners[&from][1], owners[&to][0]);
    let watched = [moving, stay_same, stay_other];
    node.subscribe_all(watched).await;
    publish_rounds(&*node.pubsub, &watched, 0..2).await;
    node.expect(&rounds_of(&watched, 0..2)).await;

    cluster.move_slot(slot_of_partition(moving), to);

    // The old owner unsubscribed the channel (SUNSUBSCRIBE): the transport moves it.
    assert_eq!(node.next().await, Got::Gap(vec![moving], Gap::Resubscribed));
    publish_when_back(&*node.pubsub, moving, 2).await;
    publish_rounds(&*node.pubsub, &[stay_same, stay_other], 2..3).await;
    node.expect(&rounds_of(&watched, 2..3)).await;
    // One connection per primary still: the moved partition joined the link to `to`.
    assert_eq!(shard_subscribers(&cluster, from), 1);
    assert_eq!(shard_subscribers(&cluster, to), 1);
    let numsub: Vec<redis::Value> = cluster
        .cmd(
            to,
            &[
                "PUBSUB",
                "SHARDNUMSUB",
                &switchboard::bus::pubsub::channel(&prefix, moving),
            ],
        )
        .unwrap();
    assert_eq!(numsub.get(1), Some(&redis::Value::Int(1)));
    node.nothing_pending();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_partitions_stay_quiet_through_a_restart_of_their_primary() {
    // A partition given up before a failover is not resubscribed nor reported.
    let mut cluster = RedisCluster::start();
    let prefix = redis_server::unique_prefix();
    let mut node = Node::cluster(&cluster.urls(), &prefix).await;
    let owners = by_owner(&cluster, 0..PARTITIONS);
    let (victim, ps) = owners.iter().next().map(|(p, ps)| (*p, ps.clone())).unwrap();
    let (kept, given_up) = (ps[0], ps[1]);
    node.subscribe_all([kept, given_up]).await;
    node.pubsub.unsubscribe(given_up).await.unwrap();
    cluster.kill(victim);
    cluster.wait_for_new_owner(slot_of_partition(kept), victim);
    let reports: BTreeSet<u16> = loop {
        match node.next().await {
            Got::Gap(ps, Gap::Resubscribed) => break ps.into_iter().collect(),
            Got::Gap(_, Gap::Interrupted) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reports, BTreeSet::from([kept]));
    // The old primary comes back as a replica; nothing changes for the transport.
    cluster.restart(victim);
    publish_when_back(&*node.pubsub, given_up, 0).await;
    publish_when_back(&*node.pubsub, kept, 0).await;
    node.expect(&BTreeMap::from([(kept, vec![0])])).await;
    node.nothing_pending();
}

/// What redis-rs's own cluster resubscription does, on a real cluster: why the transport
/// resubscribes partition by partition itself (`bus::pubsub::cluster`). After a node's
/// connection drops, redis-rs 1.8 replays that node's sharded channels in ONE `SSUBSCRIBE`:
/// fine for one channel, refused with CROSSSLOT for channels of two slots, which are then
/// silently gone. Should redis-rs fix this, this test fails: update the module docs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_cluster_resubscription_loses_a_nodes_channels_once_they_span_two_slots() {
    let cluster = RedisCluster::start();
    let owners = by_owner(&cluster, 0..PARTITIONS);
    let (primary, ps) = owners.iter().next().map(|(p, ps)| (*p, ps.clone())).unwrap();
    let (one, two) = (redis_server::unique_prefix(), redis_server::unique_prefix());
    let ch = |prefix: &str, p: u16| switchboard::bus::pubsub::channel(prefix, p);
    let client = |urls: Vec<String>| async move {
        let nodes: Vec<redis::ConnectionInfo> = urls
            .iter()
            .map(|u| redis::IntoConnectionInfo::into_connection_info(u.as_str()).unwrap())
            .collect();
        redis::cluster::ClusterClientBuilder::new(nodes)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(mpsc::unbounded_channel::<redis::PushInfo>().0)
            .build()
            .unwrap()
            .get_async_connection()
            .await
            .unwrap()
    };
    // One channel on the primary for the first connection, two slots' for the second.
    let mut first = client(cluster.urls()).await;
    first.ssubscribe(ch(&one, ps[0])).await.unwrap();
    let mut second = client(cluster.urls()).await;
    second.ssubscribe(ch(&two, ps[0])).await.unwrap();
    second.ssubscribe(ch(&two, ps[1])).await.unwrap();
    let numsub = |channel: String| -> i64 {
        let reply: Vec<redis::Value> = cluster.cmd(primary, &["PUBSUB", "SHARDNUMSUB", &channel]).unwrap();
        match reply.get(1) {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("SHARDNUMSUB: {other:?}"),
        }
    };
    assert_eq!(
        (
            numsub(ch(&one, ps[0])),
            numsub(ch(&two, ps[0])),
            numsub(ch(&two, ps[1]))
        ),
        (1, 1, 1)
    );

    // Both connections to the primary drop (as on a network blip).
    let list: String = cluster.cmd(primary, &["CLIENT", "LIST"]).unwrap();
    for line in list.lines().filter(|l| !l.contains(" ssub=0 ")) {
        let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
        let _: redis::RedisResult<()> = cluster.cmd(primary, &["CLIENT", "KILL", "ID", id]);
    }
    // redis-rs reconnects both and replays: the first one's channel comes back…
    until("the single channel is resubscribed", || numsub(ch(&one, ps[0])) == 1).await;
    // …the second one's replay is refused by the server…
    until("the primary refused a resubscription with CROSSSLOT", || {
        let stats: String = cluster.cmd(primary, &["INFO", "errorstats"]).unwrap();
        stats.contains("errorstat_CROSSSLOT:count=")
    })
    .await;
    // …and its two channels are gone, with nothing to tell its owner.
    assert_eq!((numsub(ch(&two, ps[0])), numsub(ch(&two, ps[1]))), (0, 0));
    drop((first, second));
}
