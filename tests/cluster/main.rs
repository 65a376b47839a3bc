//! Cluster mode: several nodes on one PostgreSQL database (a new one on the machine's server
//! per test, or on a private server the test starts) with the relay bus on a real Redis or
//! Redis Cluster that the tests start on free ports (`cluster::Deployment`).
//!
//! - `nodes`: three `Application`s in this process: events, read state, subscriptions and
//!   preferences cross nodes; resume on another node; on a single Redis and on a Redis Cluster.
//! - `faults`: Redis stopped and started, PostgreSQL stopped and started, under three nodes;
//!   the built binary as node processes, drained with SIGTERM, killed with SIGKILL mid-stream
//!   (on a single Redis and on a Redis Cluster), and aborted between a commit and its publish.
//! - `pubsub`: the bus's live-event transport (`bus::pubsub`) on a real single Redis and a real
//!   Redis Cluster (3 primaries, 3 replicas): order, unsubscribe, a restart, a failover, a
//!   slot migration.
//! - `presence`: presence across three nodes on PostgreSQL + Redis, and a node gone quiet.
//! - `nginx`: Debian's nginx with `config/nginx.conf` in front of three nodes: the directory,
//!   a websocket and an inbound message through nginx only; round-robin; no token in its log.

#[path = "../api/helpers/mod.rs"]
mod helpers;

/// What `helpers::test_settings` would use; the nodes here take their settings from
/// `cluster::Deployment` instead, which shares one database between a test's nodes.
pub const BACKEND: helpers::Backend = helpers::Backend::Postgres;

mod cluster;
mod faults;
mod nginx;
mod nodes;
mod presence;
mod pubsub;
