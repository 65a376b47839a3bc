//! The transport on a single Redis (`redis.url`): SUBSCRIBE on one RESP3 subscription
//! connection (the engine's only link), PUBLISH on a `ConnectionManager` of its own.
//!
//! The subscription connection is not redis-rs's `ConnectionManager` with automatic
//! resubscription: that one replays what it saw confirmed but cannot say when it is done, so
//! no gap could be reported at the right moment. The engine makes a new connection after a
//! disconnect, SUBSCRIBEs every wanted partition again one by one, and reports
//! `Gap::Resubscribed` once they are confirmed. Publishing goes through a separate
//! `ConnectionManager`, which reconnects by itself; a publish while Redis is away fails.

use std::sync::Arc;

use async_trait::async_trait;
use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{
    PubSub, PubSubError, Receiver, Tuning, check_partition, check_prefix, connection_info,
    engine::{Flavor, Handle, Source},
    partition,
    topology::{NodeAddr, Topology},
    within,
};

/// Pub/sub on one Redis server. See the module docs of [`super`] for the guarantees.
pub struct SinglePubSub {
    engine: Handle,
    publisher: ConnectionManager,
    prefix: String,
    tuning: Tuning,
}

impl SinglePubSub {
    /// Connects to the Redis at `url` (its publishing connection must come up, or this
    /// fails); channels are named under `prefix`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        receiver: Arc<dyn Receiver>,
        tuning: Tuning,
    ) -> Result<SinglePubSub, PubSubError> {
        check_prefix(prefix).map_err(PubSubError::Config)?;
        let info = connection_info(url, "redis.url")?;
        let node = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) | redis::ConnectionAddr::TcpTls { host, port, .. } => NodeAddr {
                host: host.clone(),
                port: *port,
            },
            // A Unix socket: the address is only a name here.
            other => NodeAddr {
                host: other.to_string(),
                port: 0,
            },
        };
        let client = Client::open(info.clone()).map_err(|e| PubSubError::Config(format!("redis.url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(tuning.command_timeout))
            .set_response_timeout(Some(tuning.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(tuning.max_backoff);
        // Lazy: a node starts while Redis is away (its events then come from the log, see
        // `bus::relay`); the first publish connects.
        let publisher = ConnectionManager::new_lazy_with_config(client, config)?;
        let engine = Handle::start(
            Source::Single { info },
            Topology::single(node),
            prefix,
            Flavor::Plain,
            receiver,
            tuning.clone(),
        );
        Ok(SinglePubSub {
            engine,
            publisher,
            prefix: prefix.to_owned(),
            tuning,
        })
    }
}

#[async_trait]
impl PubSub for SinglePubSub {
    async fn subscribe(&self, partition: u16) -> Result<(), PubSubError> {
        self.engine.subscribe(partition).await
    }

    async fn unsubscribe(&self, partition: u16) -> Result<(), PubSubError> {
        self.engine.unsubscribe(partition).await
    }

    async fn publish(&self, partition: u16, payload: &[u8]) -> Result<(), PubSubError> {
        check_partition(partition)?;
        let mut conn = self.publisher.clone();
        let cmd = redis::cmd("PUBLISH")
            .arg(partition::channel(&self.prefix, partition))
            .arg(payload)
            .clone();
        within(self.tuning.command_timeout, cmd.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    async fn run(&self, _key: &str, pipe: &redis::Pipeline) -> Result<redis::Value, PubSubError> {
        let mut conn = self.publisher.clone();
        within(self.tuning.command_timeout, pipe.query_async::<redis::Value>(&mut conn)).await
    }

    async fn ping(&self) -> Result<(), PubSubError> {
        let mut conn = self.publisher.clone();
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
