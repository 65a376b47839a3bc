//! What a suite run produces: one `Run` per (system, workload, repeat), serialised to
//! `target/bench/results.json` and read back by `report` to write BENCHMARKS.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The systems measured, in the order tables list them.
pub const SYSTEMS: &[&str] = &[
    "switchboard",
    "switchboard-redis-cluster",
    "socketioxide",
    "socketio",
    "bare-actix",
    "bare-tungstenite",
];

/// The workloads, in order.
pub const WORKLOADS: &[&str] = &["W1", "W2", "W3", "W4"];

/// Metric names (keys of `Run::metrics`). Each workload fills the ones it measures.
pub mod metric {
    /// Sessions open at the measurement (W1–W4).
    pub const SESSIONS: &str = "sessions";
    /// Handshakes (and authentication, where the system has it) completed per second, wall clock.
    pub const CONNECT_PER_S: &str = "connect_per_s";
    /// Server resident memory growth per open session, bytes (W1).
    pub const RSS_PER_SESSION: &str = "rss_bytes_per_session";
    /// W1's second reading: sessions open at the most one process may hold, and memory per
    /// session there.
    pub const SESSIONS_MAX: &str = "sessions_max";
    pub const RSS_PER_SESSION_MAX: &str = "rss_bytes_per_session_max";
    /// Server resident memory with every session open, MiB (W1).
    pub const RSS_MIB: &str = "rss_mib";
    /// Server CPU (utime+stime) per delivered frame, microseconds (W2, W3, W4).
    pub const CPU_US_PER_DELIVERY: &str = "cpu_us_per_delivery";
    /// Server CPU per inbound message (ingest + route + deliver to all), microseconds (W2, W4).
    pub const CPU_US_PER_MESSAGE: &str = "cpu_us_per_message";
    /// Deliveries per second, wall clock.
    pub const DELIVERIES_PER_S: &str = "deliveries_per_s";
    /// Inbound messages per second accepted, wall clock (W2, W4).
    pub const MESSAGES_PER_S: &str = "messages_per_s";
    /// Highest sustained message rate found with p99 under the bound (W2), messages/s.
    pub const MAX_RATE: &str = "max_rate_msgs_per_s";
    /// Latency percentiles, milliseconds (POST sent to frame received).
    pub const P50_MS: &str = "p50_ms";
    pub const P99_MS: &str = "p99_ms";
    pub const P999_MS: &str = "p999_ms";
    pub const MAX_MS: &str = "max_ms";
    /// Broadcast: time until the last session has the event, milliseconds (W3; median and
    /// worst over the events of the latency phase).
    pub const LAST_DELIVERY_P50_MS: &str = "last_delivery_p50_ms";
    pub const LAST_DELIVERY_MAX_MS: &str = "last_delivery_max_ms";
    /// Load tool CPU share over the send phase (1.0 = its core was busy all the time).
    pub const CLIENT_CPU_SHARE: &str = "client_cpu_share";
    /// Server CPU share over the send phase.
    pub const SERVER_CPU_SHARE: &str = "server_cpu_share";
    /// W4: Redis CPU per inbound message (every Redis process), microseconds.
    pub const REDIS_CPU_US_PER_MESSAGE: &str = "redis_cpu_us_per_message";
    /// W4: PostgreSQL CPU per inbound message (what `Postgres::counted` says), microseconds.
    pub const POSTGRES_CPU_US_PER_MESSAGE: &str = "postgres_cpu_us_per_message";
    /// W4: nodes + Redis + PostgreSQL CPU per inbound message, microseconds.
    pub const TOTAL_CPU_US_PER_MESSAGE: &str = "total_cpu_us_per_message";
    /// W4: Redis `used_memory` after the send phase minus before it, bytes (all nodes).
    pub const REDIS_MEMORY_GROWTH: &str = "redis_memory_growth_bytes";
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub date: String,
    pub open_files_limit: u64,
}

/// Where, when and by which command one run was measured. Suites are merged run by run
/// (`--merge`), so each run keeps its own: two workloads of one report may come from different
/// machines, and the report says so in each workload's section.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Measured {
    /// The command line of the suite that measured it.
    pub command: String,
    /// That suite's scale: "tiny", "quick" or "full".
    pub scale: String,
    pub machine: Machine,
}

/// A whole suite: every run, each with how it was measured (`Run::measured`: suites are merged
/// run by run, so nothing of one command holds for the whole file).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Suite {
    pub runs: Vec<Run>,
}

/// One measurement of one system on one workload.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Run {
    /// One of `SYSTEMS`.
    pub system: String,
    /// One of `WORKLOADS`.
    pub workload: String,
    /// 1-based repeat number.
    pub repeat: u32,
    /// The workload's parameters as printed (sessions, events, rate, ...).
    pub params: BTreeMap<String, String>,
    /// Figures by `metric` name.
    pub metrics: BTreeMap<String, f64>,
    /// Latency distribution for plots: (latency ms, quantile in 0..=1), ascending.
    pub cdf: Vec<(f64, f64)>,
    /// True when the load tool's core, not the server, was the limit.
    pub client_limited: bool,
    /// Anything a reader of the table should know (errors, caps hit).
    pub notes: Vec<String>,
    /// Where and how it was measured.
    #[serde(default)]
    pub measured: Measured,
}
