//! Cross-node fan-out of committed events.
//!
//! The store hands every committed batch to `Bus::publish` in log order; the bus brings it to
//! the `EventSink` (the hub) of every node. `local` is the in-process bus of a single node:
//! publishing *is* delivering to this node's hub. `pubsub` is the live-event transport of the
//! cluster bus (partitioned pub/sub on a single Redis or a Redis Cluster).

pub mod local;
pub mod pubsub;
pub mod redis;
pub mod relay;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{domain::TenantId, event::Event};

/// Receives committed events on one node (implemented by the hub). Must not block: it only
/// queues frames for sessions.
pub trait EventSink: Send + Sync + 'static {
    fn deliver(&self, events: &[Arc<Event>]);

    /// Events of `tenant` may have been missed on this node and the log cannot bring them back
    /// (trimmed, or unreadable): close that tenant's sessions here with a code that makes clients
    /// resume, so that none stays open and deaf.
    fn lost(&self, tenant: &TenantId);
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Delivers `events` (one committed batch, in log order) to every node. Called by the
    /// store right after the commit, before the callers are answered.
    fn publish(&self, events: Vec<Event>);

    /// Makes sure this node receives `tenant`'s events from now on (a session of that tenant
    /// is opening here). Resolves once that holds, so that a session which reads the log's
    /// head afterwards misses nothing between the head and its first live event.
    async fn join(&self, tenant: &TenantId) -> Result<(), String>;

    /// The matching release: a session of `tenant` closed here.
    fn leave(&self, tenant: &TenantId);

    /// Resolves once this node has delivered every event of `tenant` committed before the
    /// call (what a websocket `ping` waits for before its `pong`). The in-process bus delivers
    /// before the writer answers, so it holds already.
    async fn barrier(&self, _tenant: &TenantId) -> Result<(), String> {
        Ok(())
    }

    /// Whether the bus answers (for `/readyz`).
    async fn ping(&self) -> Result<(), String>;
}
