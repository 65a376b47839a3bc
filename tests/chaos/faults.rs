//! The monkey: seeded random faults, one at a time, each healed before the next, for a
//! bounded time. Kinds: a node SIGKILLed (restarted after a pause), SIGTERMed (drained, exits,
//! restarted), SIGSTOPped for a while then SIGCONTed; Redis stopped and started; PostgreSQL
//! stopped and started (fast shutdown, so every session is cut); clients' connections dropped.
//!
//! Every fault is logged with its offset from the start, so that a slow window in the figures
//! can be read against what happened just before it.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use tokio::sync::Notify;

use crate::{rig::Rig, rng::Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Sigkill,
    Sigterm,
    Sigstop,
    RedisRestart,
    PostgresRestart,
    DropClients,
}

const KINDS: [Kind; 6] = [
    Kind::Sigkill,
    Kind::Sigterm,
    Kind::Sigstop,
    Kind::RedisRestart,
    Kind::PostgresRestart,
    Kind::DropClients,
];

/// One injected fault: when (from the chaos's start), what, and how long until healed.
pub struct Fault {
    pub at: Duration,
    pub kind: Kind,
    pub what: String,
    pub healed_after: Duration,
}

pub struct Faults {
    pub log: Vec<Fault>,
    pub started: Instant,
}

impl Faults {
    pub fn by_kind(&self) -> BTreeMap<Kind, usize> {
        let mut out = BTreeMap::new();
        for f in &self.log {
            *out.entry(f.kind).or_default() += 1;
        }
        out
    }
}

pub struct Monkey {
    rig: Arc<Rig>,
    rng: Rng,
    droppers: Vec<Arc<Notify>>,
}

impl Monkey {
    pub fn new(rig: Arc<Rig>, rng: Rng, droppers: Vec<Arc<Notify>>) -> Monkey {
        Monkey { rig, rng, droppers }
    }

    /// Injects faults until `duration` has passed, then returns with everything healed.
    pub async fn run_for(mut self, duration: Duration) -> Faults {
        let started = Instant::now();
        let mut log = Vec::new();
        // A calm second first, so that the first acknowledgements come before any fault.
        tokio::time::sleep(Duration::from_secs(1)).await;
        while started.elapsed() < duration {
            let kind = self.rng.pick(&KINDS);
            let at = started.elapsed();
            let what = self.inject(kind).await;
            let fault = Fault {
                at,
                kind,
                what,
                healed_after: started.elapsed() - at,
            };
            eprintln!(
                "chaos: {:>6.1}s {:?}: {} (healed after {:.1}s)",
                fault.at.as_secs_f64(),
                fault.kind,
                fault.what,
                fault.healed_after.as_secs_f64()
            );
            log.push(fault);
            tokio::time::sleep(self.rng.millis(300, 1500)).await;
        }
        Faults { log, started }
    }

    /// Injects one fault and heals it; returns what it did.
    async fn inject(&mut self, kind: Kind) -> String {
        let rig = self.rig.clone();
        let node = self.rng.below(rig.nodes());
        match kind {
            Kind::Sigkill => {
                rig.signal(node, Signal::SIGKILL);
                rig.exited(node).await;
                let down = self.rng.millis(200, 2000);
                tokio::time::sleep(down).await;
                rig.start_node(node).await;
                format!("node {node} killed, down {down:?}")
            }
            Kind::Sigterm => {
                rig.signal(node, Signal::SIGTERM);
                let (took, code) = rig.exited(node).await;
                assert_eq!(code, Some(0), "a node exits 0 after SIGTERM");
                rig.start_node(node).await;
                format!("node {node} drained in {took:.1?}")
            }
            Kind::Sigstop => {
                rig.signal(node, Signal::SIGSTOP);
                let frozen = self.rng.millis(1000, 5000);
                tokio::time::sleep(frozen).await;
                rig.signal(node, Signal::SIGCONT);
                format!("node {node} frozen {frozen:?}")
            }
            Kind::RedisRestart => {
                let down = self.rng.millis(200, 3000);
                let r = rig.clone();
                tokio::task::spawn_blocking(move || r.redis.lock().unwrap().stop())
                    .await
                    .unwrap();
                tokio::time::sleep(down).await;
                let r = rig.clone();
                tokio::task::spawn_blocking(move || r.redis.lock().unwrap().restart())
                    .await
                    .unwrap();
                format!("Redis down {down:?}")
            }
            Kind::PostgresRestart => {
                let down = self.rng.millis(200, 3000);
                let r = rig.clone();
                tokio::task::spawn_blocking(move || r.pg.lock().unwrap().stop())
                    .await
                    .unwrap();
                tokio::time::sleep(down).await;
                let r = rig.clone();
                tokio::task::spawn_blocking(move || r.pg.lock().unwrap().restart())
                    .await
                    .unwrap();
                format!("PostgreSQL down {down:?}")
            }
            Kind::DropClients => {
                let mut dropped = Vec::new();
                for (i, d) in self.droppers.iter().enumerate() {
                    if self.rng.chance(0.5) {
                        d.notify_one();
                        dropped.push(i);
                    }
                }
                format!("client connections {dropped:?} dropped")
            }
        }
    }
}
