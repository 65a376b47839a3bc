//! What the relay bus needs of a pub/sub transport, and the in-process one.
//!
//! Tenants are spread over `PARTITIONS` channels (`partition_of`), so a node subscribes a
//! bounded number of channels however many tenants it serves. A transport delivers at most
//! once: whatever it may have lost it reports as a `gap` of the partitions concerned, and the
//! bus fills the hole from the log.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::TenantId;

/// Channels tenants are spread over.
pub const PARTITIONS: u16 = 128;

/// The partition of `tenant`: FNV-1a (64-bit) over the id's bytes, modulo `PARTITIONS`. The
/// same on every node and every build (never `std`'s hasher, whose output may change).
pub fn partition_of(tenant: &TenantId) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.as_str().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(PARTITIONS)) as u16
}

/// What a transport tells the bus.
pub trait Receiver: Send + Sync + 'static {
    /// A message published on partition `partition`. Called from the transport's reading
    /// task: must not block or await.
    fn message(&self, partition: u16, payload: &str);

    /// Messages on these partitions may have been lost (a reconnect, a failover, a slot that
    /// moved); called once they are subscribed again, or once the transport gave up on them.
    fn gap(&self, partitions: &[u16]);
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the transport is unavailable: {0}")]
    Unavailable(String),
}

/// A pub/sub transport between nodes.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Resolves once messages published on `partition` reach this node's `Receiver` (until a
    /// `gap`).
    async fn subscribe(&self, partition: u16) -> Result<(), TransportError>;

    /// Stops them.
    async fn unsubscribe(&self, partition: u16) -> Result<(), TransportError>;

    /// Publishes `payload` on `partition`'s channel; one publisher's messages on one partition
    /// arrive in the order published, or not at all.
    async fn publish(&self, partition: u16, payload: String) -> Result<(), TransportError>;

    /// Whether the transport answers (for `/readyz`).
    async fn ping(&self) -> Result<(), TransportError>;

    /// Whether subscriptions are believed live now: false during an outage, when the bus
    /// delivers by reading the log instead.
    fn connected(&self) -> bool;
}

/// One node: a publish is a message to this node's receiver at once.
pub struct Loopback {
    receiver: Arc<dyn Receiver>,
}

impl Loopback {
    pub fn new(receiver: Arc<dyn Receiver>) -> Loopback {
        Loopback { receiver }
    }
}

#[async_trait]
impl Transport for Loopback {
    async fn subscribe(&self, _partition: u16) -> Result<(), TransportError> {
        Ok(())
    }

    async fn unsubscribe(&self, _partition: u16) -> Result<(), TransportError> {
        Ok(())
    }

    async fn publish(&self, partition: u16, payload: String) -> Result<(), TransportError> {
        self.receiver.message(partition, &payload);
        Ok(())
    }

    async fn ping(&self) -> Result<(), TransportError> {
        Ok(())
    }

    fn connected(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;

    const ACME: u16 = 15;
    const GLOBEX: u16 = 46;
    const INITECH: u16 = 65;

    #[test]
    fn a_tenants_partition_is_fixed_and_tenants_spread_over_all_of_them() {
        let p = |t: &str| partition_of(&TenantId::parse(t).unwrap());
        // Fixed values (FNV-1a 64 mod 128, computed independently): every node and every build
        // must agree.
        assert_eq!([p("acme"), p("globex"), p("initech")], [ACME, GLOBEX, INITECH]);
        let mut seen = [0u32; PARTITIONS as usize];
        for i in 0..12_800 {
            seen[usize::from(p(&format!("tenant{i}")))] += 1;
        }
        assert!(seen.iter().all(|n| (50..=150).contains(n)), "{seen:?}");
    }
}
