//! The transport on a Redis Cluster (`redis.cluster_nodes`): sharded pub/sub, SSUBSCRIBE on
//! one RESP3 subscription connection per primary (the engine's links), SPUBLISH through
//! redis-rs's async cluster connection.
//!
//! # Topology
//! The engine reads `CLUSTER SHARDS` from a node it reaches (first those it holds a link to,
//! then every node it knows, then the configured ones): every `Tuning::refresh_interval`, and
//! at once when a link drops, a node cannot be reached, the server unsubscribes a channel
//! (`SUNSUBSCRIBE` push: its slot moved away), or a command is refused (MOVED, ASK,
//! CLUSTERDOWN). A MOVED answer to an SSUBSCRIBE names the new owner, tried at once for that
//! partition before the topology catches up. A partition subscribed on a node that a later
//! topology no longer makes its owner is moved too (should a SUNSUBSCRIBE never come).
//!
//! # Failover and migration
//! A primary's failover drops its links (the process died, or it became a replica and sent
//! SUNSUBSCRIBE for its channels); its partitions are lost, owed a gap, and resubscribed one by
//! one on the promoted replica once a topology names it, then reported `Resubscribed` in one
//! batch: exactly the partitions the failed primary held (the other links are untouched). A
//! slot migration ends with `CLUSTER SETSLOT <slot> NODE <new>` on the old owner, which then
//! SUNSUBSCRIBEs the slot's channels: that partition alone is resubscribed on the new owner
//! and reported.
//!
//! # Publishing, and what redis-rs does (verified on a real cluster by the tests)
//! SPUBLISH is routed by redis-rs by its first argument's slot (`RoutingInfo::for_routable`:
//! not in its list of keyless commands, so "first key"), to the slot's primary, following
//! MOVED/ASK and refreshing its slot map after a failover; `tests/cluster/pubsub.rs` checks on
//! a real cluster that only the owning primary executes it. Its cluster connection also tracks
//! SSUBSCRIBEs and replays them after a reconnect, but as one SSUBSCRIBE per node with every
//! channel of that node (CROSSSLOT once they span slots), and it forgets a channel the server
//! unsubscribed; so it is given no push sender and never subscribes anything here.

use std::sync::Arc;

use async_trait::async_trait;
use redis::{cluster::ClusterClientBuilder, cluster_async::ClusterConnection};

use super::{
    PubSub, PubSubError, Receiver, Tuning, check_partition, check_prefix, connection_info,
    engine::{self, Flavor, Handle, Source},
    partition,
    topology::NodeAddr,
    within,
};

/// Sharded pub/sub on a Redis Cluster. See the module docs of [`super`] for the guarantees.
pub struct ClusterPubSub {
    engine: Handle,
    publisher: ClusterConnection,
    prefix: String,
    tuning: Tuning,
}

impl ClusterPubSub {
    /// Connects to the cluster that `nodes` (`redis://` URLs of some of its nodes, with the
    /// credentials of all) belong to: one of them must answer `CLUSTER SHARDS`, or this fails.
    pub async fn connect(
        nodes: &[String],
        prefix: &str,
        receiver: Arc<dyn Receiver>,
        tuning: Tuning,
    ) -> Result<ClusterPubSub, PubSubError> {
        check_prefix(prefix).map_err(PubSubError::Config)?;
        let mut infos = Vec::new();
        let mut seeds = Vec::new();
        for url in nodes {
            let info = connection_info(url.as_str(), "redis.cluster_nodes")?;
            match info.addr() {
                redis::ConnectionAddr::Tcp(host, port) => seeds.push(NodeAddr {
                    host: host.clone(),
                    port: *port,
                }),
                other => {
                    return Err(PubSubError::Config(format!(
                        "redis.cluster_nodes: {other} is not a redis:// TCP address"
                    )));
                }
            }
            infos.push(info);
        }
        let Some(template) = infos.first().cloned() else {
            return Err(PubSubError::Config("redis.cluster_nodes is empty".into()));
        };
        let topology = engine::first_topology(&template, &seeds, tuning.command_timeout)
            .await
            .map_err(PubSubError::Cluster)?;
        let publisher = ClusterClientBuilder::new(infos)
            .tcp_settings(template.tcp_settings().clone())
            .connection_timeout(tuning.command_timeout)
            .response_timeout(tuning.command_timeout)
            .retries(3)
            .build()?
            .get_async_connection()
            .await?;
        let engine = Handle::start(
            Source::Cluster { template, seeds },
            topology,
            prefix,
            Flavor::Sharded,
            receiver,
            tuning.clone(),
        );
        Ok(ClusterPubSub {
            engine,
            publisher,
            prefix: prefix.to_owned(),
            tuning,
        })
    }
}

#[async_trait]
impl PubSub for ClusterPubSub {
    async fn subscribe(&self, partition: u16) -> Result<(), PubSubError> {
        self.engine.subscribe(partition).await
    }

    async fn unsubscribe(&self, partition: u16) -> Result<(), PubSubError> {
        self.engine.unsubscribe(partition).await
    }

    async fn publish(&self, partition: u16, payload: &[u8]) -> Result<(), PubSubError> {
        check_partition(partition)?;
        let mut conn = self.publisher.clone();
        let cmd = redis::cmd("SPUBLISH")
            .arg(partition::channel(&self.prefix, partition))
            .arg(payload)
            .clone();
        // redis-rs's retries (and a failover's wait) happen within this deadline too.
        within(self.tuning.command_timeout * 2, cmd.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    async fn run(&self, _key: &str, pipe: &redis::Pipeline) -> Result<redis::Value, PubSubError> {
        let mut conn = self.publisher.clone();
        // redis-rs routes a pipeline by its commands' keys (one slot here).
        within(
            self.tuning.command_timeout * 2,
            pipe.query_async::<redis::Value>(&mut conn),
        )
        .await
    }

    async fn ping(&self) -> Result<(), PubSubError> {
        let mut conn = self.publisher.clone();
        // Sent to every primary by redis-rs; fails unless all answer.
        within(
            self.tuning.command_timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await?;
        Ok(())
    }

    fn connected(&self) -> bool {
        self.engine.connected()
    }
}
