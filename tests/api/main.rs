//! Black-box tests of the v1 contract: each test starts the hub on port 0 with its own data
//! directory and talks to it over real HTTP and real websockets.

mod helpers;

/// This binary runs the contract suite on the embedded default.
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

mod auth;
mod collision;
mod counts;
mod cursors;
mod directory;
mod edge;
mod errors;
mod ingestion;
mod message_center;
mod operations;
mod presence;
mod process;
mod resume;
mod websocket;
