//! The black-box contract suite of `tests/api`, run on the Redis store and bus: each test
//! starts a hub on port 0 against the shared test redis-server (started by the helpers on a
//! free port) under a key prefix of its own. Left out: `process` and `operations`, which are
//! about the embedded single binary. Tests of the store's own concerns (atomicity,
//! concurrency) are in `store`.

#[path = "../api/helpers/mod.rs"]
mod helpers;

/// This binary runs the contract suite on Redis.
pub const BACKEND: helpers::Backend = helpers::Backend::Redis;

#[path = "../api/auth.rs"]
mod auth;
#[path = "../api/counts.rs"]
mod counts;
#[path = "../api/cursors.rs"]
mod cursors;
#[path = "../api/directory.rs"]
mod directory;
#[path = "../api/errors.rs"]
mod errors;
#[path = "../api/ingestion.rs"]
mod ingestion;
#[path = "../api/message_center.rs"]
mod message_center;
#[path = "../api/presence.rs"]
mod presence;
#[path = "../api/resume.rs"]
mod resume;
#[path = "../api/websocket.rs"]
mod websocket;

mod store;
