//! Cluster mode: several nodes on one real Redis (started by the tests on a free port).
//!
//! - `bus`: the Redis bus alone, against a stand-in store that only reads the log: which
//!   channels a node holds, delivery order, gaps filled from the log, reconnects, a trimmed log.
//! - `nodes`: three `Application`s in this process on Redis storage and the Redis bus: events,
//!   read state, subscriptions and preferences cross nodes; resume on another node.
//! - `faults`: Redis stopped and started under three nodes; the built binary as node
//!   processes, drained with SIGTERM and killed with SIGKILL mid-stream.
//! - `pubsub`: the bus's live-event transport (`bus::pubsub`) on a real single Redis and a real
//!   Redis Cluster (3 primaries, 3 replicas): order, unsubscribe, a restart, a failover, a
//!   slot migration.
//! - `presence`: presence across three nodes on PostgreSQL + Redis, and a node gone quiet.
//! - `nginx`: Debian's nginx with `config/nginx.conf` in front of three nodes: the directory,
//!   a websocket and an inbound message through nginx only; round-robin; no token in its log.

#[path = "../api/helpers/mod.rs"]
mod helpers;

/// The contract helpers start every app on Redis storage and the Redis bus.
pub const BACKEND: helpers::Backend = helpers::Backend::Redis;

mod bus;
mod cluster;
mod faults;
mod nginx;
mod nodes;
mod presence;
mod pubsub;
