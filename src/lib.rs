//! Switchboard: a realtime notification hub for the Message Center.
//!
//! Customers text a company; the staff who should know see it at once. The ingestion
//! service posts inbound messages over HTTP, the main application upserts the directory,
//! and client apps hold a websocket for live pop-ups, the unread badge, read state and
//! assignments.
//!
//! # Layout
//! - [`rules`]: the Message Center's rules (audience, auto-assignment, read state, unread
//!   counts, who receives an event), pure functions, and [`rules::plan`]: one pure plan per mutating call (the new state and the events it
//!   emits), built from the rules; every store reads facts, plans, and applies.
//! - [`domain`]: parsed ids and phone numbers, and the contract's JSON shapes.
//! - [`store`]: the `Store` trait (durable state and the event log), on embedded SQLite or on
//!   PostgreSQL.
//! - [`bus`]: the `Bus` trait (committed events to every node): in-process, or Redis pub/sub
//!   with catch-up from the log.
//! - [`hub`]: this node's sessions and the fan-out of events to their bounded queues.
//! - [`presence`]: who is viewing or typing in which thread (state, never logged), pure;
//!   the hub keeps it for this node, `bus::presence` shares it between nodes.
//! - [`protocol`]: the websocket protocol as types: client frames, server frames, close codes.
//! - [`session`]: one websocket connection's protocol (hello, resume, follow, heartbeat).
//! - [`routes`]: the HTTP API, one file per area; [`error`] maps failures to problem+json;
//!   `routes::origin` decides which host the hub answers as, `routes::edge` what every
//!   response carries (problem+json errors, protective headers).
//! - [`auth`]: JWT verification and the caller's identity; [`limits`]: per-token rate limits.
//! - [`cursor`]: the paged lists' cursors, signed with the deployment's key.
//! - [`event`]: events, their routes and frames.
//! - [`config`], [`startup`], [`telemetry`], [`metrics`]: running it; [`memo`]: a bounded memo
//!   of a dear function's answers (phone numbers, tokens).

pub mod auth;
pub mod bus;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod error;
pub mod event;
pub mod hub;
pub mod limits;
pub mod memo;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod routes;
pub mod rules;
pub mod session;
pub mod startup;
pub mod store;
pub mod telemetry;
