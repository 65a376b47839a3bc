//! The live-event transport under the cluster bus: Redis pub/sub on a fixed set of partition
//! channels, on a single Redis (`single`) or a Redis Cluster with sharded pub/sub (`cluster`),
//! behind one trait, [`PubSub`], with the resubscription owned here.
//!
//! # What it owns
//! Tenants map to [`PARTITIONS`] partitions ([`partition_of`]); a partition is one channel
//! ([`channel`]) whose hash tag puts it on one cluster slot, the slots of the 128 partitions
//! spread evenly. The transport subscribes the partitions its owner asks for, hands every
//! message on them to the owner's [`Receiver`], and keeps them subscribed through disconnects,
//! Redis restarts, failovers and slot migrations, telling the owner when messages may have
//! been lost ([`Receiver::gap`]). It publishes a payload on a partition. It knows nothing of
//! tenants' events: payloads are bytes, and the log (PostgreSQL) is the record.
//!
//! # The guarantees
//! - **At most once**: a published message reaches each subscriber at most once, and may be
//!   lost. It is never lost *silently* on a subscribed partition: every way this transport
//!   can miss messages (a dropped connection, a restarted or failed-over server, a slot moved
//!   to another primary, a subscription that could not be confirmed in time) ends in a
//!   [`Gap::Resubscribed`] report for exactly the partitions concerned, once they are
//!   subscribed again, and in a [`Gap::Interrupted`] report first if that takes longer than
//!   [`Tuning::interrupted_after`]. A message published after the `Resubscribed` report
//!   arrives (until the next gap).
//! - **Order**: messages of one partition published over one connection arrive in the order
//!   they were published (Redis keeps a channel's order per publishing connection); messages
//!   from different publishers (nodes) interleave arbitrarily. The owner orders by its own
//!   ids and fills holes from its log.
//! - **Bounded**: at most [`PARTITIONS`] channels; one subscription connection per Redis
//!   primary (one in all on a single Redis); at most one command in flight per partition.
//!
//! # Layout
//! - `partition`: tenant → partition → channel → slot, pure and stable.
//! - `topology`: a cluster's slot owners from `CLUSTER SHARDS`, pure.
//! - `engine`: the subscription state machine both transports share: one task that owns every
//!   partition's state and one subscription connection per node, resubscribes partition by
//!   partition and reports gaps.
//! - `single`, `cluster`: the two transports (connections, publishing, topology source).
//! - `loopback`: one node's transport, with nothing between publishing and receiving.
//!
//! # For the bus
//! ```no_run
//! # use std::sync::Arc;
//! # use switchboard::bus::pubsub::{self, Gap, Receiver, PubSub};
//! # use switchboard::domain::{Id, TenantId};
//! struct Inbox;
//! impl Receiver for Inbox {
//!     fn message(&self, partition: u16, payload: Vec<u8>) {
//!         // Decode, route to the tenant's task; never block or await here.
//!     }
//!     fn gap(&self, partitions: &[u16], gap: Gap) {
//!         // Resubscribed: catch up from the log for the tenants of these partitions.
//!     }
//! }
//! # async fn example(settings: &switchboard::config::RedisSettings) -> Result<(), pubsub::PubSubError> {
//! let transport = pubsub::connect(settings, Arc::new(Inbox)).await?;
//! let p = pubsub::partition_of(&TenantId::parse("acme").unwrap());
//! transport.subscribe(p).await?; // confirmed by Redis: read the log's head after this
//! transport.publish(p, b"event bytes").await?;
//! # Ok(()) }
//! ```

mod cluster;
mod engine;
mod loopback;
mod partition;
mod single;
mod topology;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{ConnectionInfo, IntoConnectionInfo};

pub use cluster::ClusterPubSub;
pub use loopback::Loopback;
pub use partition::{
    PARTITIONS, channel, check_prefix, key_slot, partition_of, partition_of_channel, slot_of_partition,
};
pub use single::SinglePubSub;
pub use topology::NodeAddr;

use crate::config::RedisSettings;

/// What a [`Receiver::gap`] report means for the partitions it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The partitions are subscribed again (confirmed by the server that owns them now):
    /// messages published from now on arrive; those published since the last message received
    /// may have been lost. Catch up from the log.
    Resubscribed,
    /// The transport lost these partitions' subscription [`Tuning::interrupted_after`] ago
    /// and has not got it back: messages are being lost now. It keeps trying, and reports
    /// `Resubscribed` for them when it succeeds.
    Interrupted,
}

/// The owner of the subscriptions: what the transport hands messages and gaps to.
pub trait Receiver: Send + Sync + 'static {
    /// A message on `partition`. Called from a connection's reading task, in the order the
    /// connection received them: it must not block or await (hand the payload on to a task).
    fn message(&self, partition: u16, payload: Vec<u8>);

    /// Messages on `partitions` may have been lost (see [`Gap`]). Called from the transport's
    /// task: it must not block or await either.
    fn gap(&self, partitions: &[u16], gap: Gap);
}

/// What the transport's calls fail with.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    /// The settings cannot work (a prefix with braces, an unreadable URL).
    #[error("pub/sub configuration: {0}")]
    Config(String),
    /// No partition of that number.
    #[error("partition {0} out of range (there are {PARTITIONS})")]
    NoSuchPartition(u16),
    /// Redis did not answer (or confirm) within the deadline.
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis answered with an error, or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No node of the cluster told its topology.
    #[error("Redis Cluster: {0}")]
    Cluster(String),
    /// The transport was dropped (or the partition given up by `unsubscribe` meanwhile).
    #[error("the pub/sub transport stopped")]
    Stopped,
}

/// The transport: the same contract on a single Redis and on a cluster.
#[async_trait]
pub trait PubSub: Send + Sync {
    /// Subscribes `partition`; resolves once the server that owns its channel confirmed it.
    /// From then on every message published on it reaches the [`Receiver`] until a
    /// [`Receiver::gap`] names it. Idempotent and not counted: subscribing a subscribed
    /// partition resolves at once; one `unsubscribe` undoes any number of them (the caller
    /// counts its users). Fails with `Timeout` after [`Tuning::subscribe_timeout`]: the
    /// partition then stays wanted, the transport keeps trying, and a
    /// `Gap::Resubscribed` for it follows if it succeeds later (`unsubscribe` to give it up).
    async fn subscribe(&self, partition: u16) -> Result<(), PubSubError>;

    /// Unsubscribes `partition`: no message of it reaches the receiver once this resolves,
    /// which is when Redis confirmed or the connection that held the subscription is gone.
    /// A `subscribe` of it still waiting fails with `Stopped`. A no-op for a partition not
    /// subscribed.
    async fn unsubscribe(&self, partition: u16) -> Result<(), PubSubError>;

    /// Publishes `payload` on `partition` (PUBLISH; on a cluster SPUBLISH on the primary that
    /// owns the channel's slot). At most once: an `Ok` means the server took it, not that any
    /// subscriber got it; an error means it may or may not have been delivered.
    async fn publish(&self, partition: u16, payload: &[u8]) -> Result<(), PubSubError>;

    /// Runs `pipe`, whose commands all name `key` (or keys of its hash tag), on the server
    /// that owns `key`: the expiring state kept beside the channels (`bus::presence`). Fails
    /// with `Config` on a transport without Redis (`Loopback`).
    async fn run(&self, key: &str, pipe: &redis::Pipeline) -> Result<redis::Value, PubSubError>;

    /// Whether Redis answers (on a cluster: every primary), within [`Tuning::command_timeout`].
    async fn ping(&self) -> Result<(), PubSubError>;

    /// Cheap (an atomic load): whether every partition asked for is subscribed on a live
    /// connection (none lost and awaiting resubscription) and, while any is asked for, no
    /// node is unreachable. False from a disconnect until every affected partition is
    /// resubscribed; true with nothing subscribed. For `/readyz`'s body and a metric; `ping`
    /// says whether the server answers.
    fn connected(&self) -> bool;
}

/// Deadlines and intervals of a transport. `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Longest one Redis command (SUBSCRIBE, PUBLISH, PING, CLUSTER SHARDS) may take; a
    /// subscription connection that does not answer in time is replaced.
    pub command_timeout: Duration,
    /// Longest `subscribe` waits for the confirmation.
    pub subscribe_timeout: Duration,
    /// How long a lost subscription may stay lost before [`Gap::Interrupted`] is reported.
    pub interrupted_after: Duration,
    /// How often the cluster topology is read when nothing suggests it changed.
    pub refresh_interval: Duration,
    /// How often each subscription connection is PINGed (a silent dead peer is found).
    pub health_interval: Duration,
    /// Longest wait between two attempts to reach a node (the backoff's ceiling).
    pub max_backoff: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            command_timeout: Duration::from_secs(2),
            subscribe_timeout: Duration::from_secs(5),
            interrupted_after: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(30),
            health_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// The transport `settings` describe: the cluster of `redis.cluster_nodes` when set, else the
/// single Redis at `redis.url`. Fails on a prefix with braces or unreadable URLs, and when no
/// node answers at all.
pub async fn connect(settings: &RedisSettings, receiver: Arc<dyn Receiver>) -> Result<Arc<dyn PubSub>, PubSubError> {
    let tuning = Tuning::default();
    Ok(if settings.cluster_nodes.is_empty() {
        Arc::new(SinglePubSub::connect(&settings.url, &settings.key_prefix, receiver, tuning).await?)
    } else {
        Arc::new(ClusterPubSub::connect(&settings.cluster_nodes, &settings.key_prefix, receiver, tuning).await?)
    })
}

/// The connection to Redis that `url` (the value of the setting `setting`) names, with
/// Nagle's algorithm off (`TCP_NODELAY`), as every connection to Redis is made: redis-rs
/// leaves it on, and then a publish written while an earlier one is unanswered waits in the
/// kernel for that answer (and a subscription's command for an acknowledgement the server may
/// delay). Redis turns it off on its side of each connection for the same reason.
fn connection_info(url: &str, setting: &str) -> Result<ConnectionInfo, PubSubError> {
    let info = url
        .into_connection_info()
        .map_err(|e| PubSubError::Config(format!("{setting}: {e}")))?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

fn check_partition(partition: u16) -> Result<(), PubSubError> {
    if partition < PARTITIONS {
        Ok(())
    } else {
        Err(PubSubError::NoSuchPartition(partition))
    }
}

/// Runs a Redis command with a deadline of its own.
async fn within<T>(
    limit: Duration,
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, PubSubError> {
    match tokio::time::timeout(limit, command).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(PubSubError::Redis(e)),
        Err(_) => Err(PubSubError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_to_redis_send_without_delay_and_a_bad_url_names_its_setting() {
        // redis-rs's default, which `connection_info` must change.
        let default = "redis://127.0.0.1:6379".into_connection_info().unwrap();
        assert!(!default.tcp_settings().nodelay());
        let info = connection_info("redis://127.0.0.1:6379/2", "redis.url").unwrap();
        assert!(info.tcp_settings().nodelay());
        assert_eq!(info.addr().to_string(), "127.0.0.1:6379");
        assert_eq!(info.redis_settings().db(), 2);
        match connection_info("http://127.0.0.1", "redis.cluster_nodes") {
            Err(PubSubError::Config(message)) => assert!(message.starts_with("redis.cluster_nodes: "), "{message}"),
            other => panic!("expected a configuration error, got {:?}", other.map(|_| ())),
        }
    }
}
