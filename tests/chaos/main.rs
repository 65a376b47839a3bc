//! The chaos test: three node processes on PostgreSQL + the relay bus on Redis, seeded random
//! faults for a bounded time under steady ingestion and reconnecting clients, then a checker
//! over the whole history.
//!
//! - `rng`: the seeded random numbers every actor draws from (one stream per actor).
//! - `rig`: the private PostgreSQL and redis-server, and the node processes (start, signal,
//!   restart on a new port) with the list of nodes a client may pick from.
//! - `traffic`: steady ingestion with retries (the same `external_id`, so idempotent) and a
//!   reader marking threads read and unread.
//! - `clients`: websocket clients that reconnect to any live node and resume from the last
//!   event id they saw (reloading over REST on `resync`), recording every frame.
//! - `faults`: the monkey: SIGKILL, SIGTERM, SIGSTOP/SIGCONT of nodes, Redis and PostgreSQL
//!   restarts, dropped client connections, one at a time.
//! - `checker`: convergence, the history's rules, and the figures.
//! - `startup`: a regression the chaos found (the phone metadata loaded by the first inbound
//!   message, freezing a worker).
//!
//! `SWITCHBOARD_CHAOS_SEED` (a number; random when unset, always printed) and
//! `SWITCHBOARD_CHAOS_SECS` (the faults' duration, 45 by default) choose the run. A seed
//! fixes every random choice (which fault, which node, how long, which customer, which
//! node a call goes to), not the timing: the same seed replays the same sequence of faults,
//! each one where the previous one's healing ended. `SWITCHBOARD_CHAOS_LOG` sets the nodes'
//! log filter (`warn` by default) and keeps their logs.

#[path = "../api/helpers/mod.rs"]
mod helpers;

/// The contract helpers are only used for their servers and tokens here.
pub const BACKEND: helpers::Backend = helpers::Backend::Postgres;

mod checker;
mod clients;
mod faults;
mod rig;
mod rng;
mod startup;
mod traffic;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    clients::{Client, Sessions},
    faults::Monkey,
    rig::Rig,
    rng::Rng,
    traffic::{Ingestion, Reader},
};

/// The run's seed and how long faults are injected.
fn run_parameters() -> (u64, Duration) {
    let seed = std::env::var("SWITCHBOARD_CHAOS_SEED")
        .ok()
        .map(|s| s.trim().parse::<u64>().expect("SWITCHBOARD_CHAOS_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    let secs = std::env::var("SWITCHBOARD_CHAOS_SECS")
        .ok()
        .map(|s| s.trim().parse::<u64>().expect("SWITCHBOARD_CHAOS_SECS is a number"))
        .unwrap_or(45);
    (seed, Duration::from_secs(secs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_under_seeded_faults_deliver_every_acknowledged_message_once_and_counts_converge() {
    let (seed, chaos_for) = run_parameters();
    eprintln!("chaos: seed {seed}, faults for {chaos_for:?} (rerun with SWITCHBOARD_CHAOS_SEED={seed})");
    let started = Instant::now();
    let rig = Arc::new(Rig::start().await);
    rig.seed_directory().await;

    let sessions = Sessions::new(rig.clone(), seed).await;
    let (stop_tx, stop) = watch::channel(false);
    let ingestion = Ingestion::start(rig.clone(), Rng::new(seed, "ingestion"), stop.clone());
    let reader = Reader::start(rig.clone(), Rng::new(seed, "reader"), stop, ingestion.threads.clone());

    let monkey = Monkey::new(rig.clone(), Rng::new(seed, "faults"), sessions.droppers());
    let faults = monkey.run_for(chaos_for).await;
    // Every node, Redis and PostgreSQL are up again: the traffic stops (a message in flight
    // retries until acknowledged) and the clients stay on until the cluster has converged.
    rig.wait_all_ready().await;
    stop_tx.send(true).unwrap();
    let posted = ingestion.finish().await;
    let reads = reader.finish().await;

    let converged = checker::converge(&rig, &sessions, &posted).await;
    let clients: Vec<Client> = sessions.finish().await;
    let report = checker::check(&posted, &clients, converged);
    checker::print_figures(seed, &posted, reads, &faults, &clients, &report, started.elapsed());
    report.assert_clean();
    // The nodes' logs are kept when the run failed or asked for them.
    if std::env::var_os("SWITCHBOARD_CHAOS_LOG").is_none() {
        let _ = std::fs::remove_dir_all(&rig.logs);
    }
}
