//! Cross-node fan-out of committed events.
//!
//! The store hands every committed batch to its `store::Publisher` (a bus) in log order; the
//! bus brings it to the `EventSink` (the hub) of every node. `local` is the in-process bus of
//! one embedded node: publishing *is* delivering to this node's hub. `relay` carries events
//! between nodes over a `pubsub` transport, in log order, filling holes from the log. The bus
//! reads storage only through `store::EventLog`, and never the hub's insides: it hands events
//! to an `EventSink`. `pubsub` is the live-event transport of the
//! cluster bus (partitioned pub/sub on a single Redis or a Redis Cluster). `presence` shares
//! who is viewing or typing where between nodes over the same transport (state in expiring
//! Redis hashes, never the log).

pub mod local;
pub mod presence;
pub mod pubsub;
pub mod relay;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{domain::TenantId, event::Event, presence::Place};

/// Other nodes' presence in a tenant: each node with its sessions' places (by session key).
pub type Elsewhere = Vec<(String, Vec<(u64, Place)>)>;

// `publish` lives in `store::Publisher`, which the buses that carry committed events implement.

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

    /// What the other nodes last told of their presence in `tenant` (`bus::presence`), for
    /// `GET /api/v1/presence`; the hub adds this node's own. Empty where there is no other
    /// node (the in-process bus, a single node's loopback).
    async fn presence_elsewhere(&self, _tenant: &TenantId) -> Result<Elsewhere, String> {
        Ok(Vec::new())
    }
}
