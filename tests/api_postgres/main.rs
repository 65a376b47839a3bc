//! The black-box contract suite of `tests/api`, run on the PostgreSQL store with the
//! in-process bus (one node): each test starts a hub on port 0 with a database of its own on
//! the machine's PostgreSQL (127.0.0.1:5432; `helpers::postgres`). Left out: `process` and
//! `operations`, which are about the embedded single binary. Tests of the store's own concerns
//! (racing writes, concurrent migrations, outages) are in `store`.

#[path = "../api/helpers/mod.rs"]
mod helpers;

/// This binary runs the contract suite on PostgreSQL.
pub const BACKEND: helpers::Backend = helpers::Backend::Postgres;

#[path = "../api/auth.rs"]
mod auth;
#[path = "../api/collision.rs"]
mod collision;
#[path = "../api/counts.rs"]
mod counts;
#[path = "../api/cursors.rs"]
mod cursors;
#[path = "../api/directory.rs"]
mod directory;
#[path = "../api/edge.rs"]
mod edge;
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
