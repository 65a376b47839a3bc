//! The load during the chaos: steady ingestion with retries, and a user marking threads read
//! and unread (so that unread counts move both ways).
//!
//! Ingestion runs `LANES` lanes, each posting one message every `PACE`. A message is retried
//! on any running node (after a failure, a timeout, or a 5xx) with the same `external_id`
//! until it is acknowledged with a 2xx, so a retry of a message that was stored but whose
//! answer was lost is answered 200 with the same message. Once told to stop, a lane finishes
//! the message it holds (bounded by `FINISH_DEADLINE`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    rig::{CUSTOMERS, L1_SMS, Rig, member, retryable},
    rng::Rng,
};

const LANES: usize = 2;
const PACE: Duration = Duration::from_millis(60);
const FINISH_DEADLINE: Duration = Duration::from_secs(30);

/// One inbound message: what was posted and how it went.
pub struct Posted {
    pub external_id: String,
    pub customer: usize,
    pub first_try: Instant,
    pub acked: Option<Ack>,
    /// Tries that failed, by reason.
    pub failures: BTreeMap<String, u32>,
}

pub struct Ack {
    pub at: Instant,
    pub status: u16,
    pub message_id: String,
}

impl Posted {
    pub fn failed_tries(&self) -> u32 {
        self.failures.values().sum()
    }
}

/// The threads seen in acknowledgements, by customer (what the reader marks).
type Threads = Arc<Mutex<BTreeMap<usize, String>>>;

pub struct Ingestion {
    lanes: Vec<JoinHandle<Vec<Posted>>>,
    pub threads: Threads,
}

impl Ingestion {
    pub fn start(rig: Arc<Rig>, mut rng: Rng, stop: watch::Receiver<bool>) -> Ingestion {
        let threads: Threads = Arc::default();
        let lanes = (0..LANES)
            .map(|lane| {
                let lane_rng = Rng::new(rng.next_u64(), "lane");
                tokio::spawn(run_lane(lane, rig.clone(), lane_rng, stop.clone(), threads.clone()))
            })
            .collect();
        Ingestion { lanes, threads }
    }

    /// Every message posted, once the lanes have stopped.
    pub async fn finish(self) -> Vec<Posted> {
        let mut all = Vec::new();
        for lane in self.lanes {
            all.extend(lane.await.expect("an ingestion lane"));
        }
        all
    }
}

async fn run_lane(
    lane: usize,
    rig: Arc<Rig>,
    mut rng: Rng,
    stop: watch::Receiver<bool>,
    threads: Threads,
) -> Vec<Posted> {
    let mut posted = Vec::new();
    for n in 0.. {
        if *stop.borrow() {
            break;
        }
        let tick = Instant::now();
        let customer = rng.below(CUSTOMERS.len());
        let mut p = Posted {
            external_id: format!("L{lane}M{n}"),
            customer,
            first_try: Instant::now(),
            acked: None,
            failures: BTreeMap::new(),
        };
        let body = json!({"external_id": p.external_id, "from": CUSTOMERS[customer], "to": L1_SMS,
                          "body": format!("body of {}", p.external_id)});
        loop {
            if *stop.borrow() && p.first_try.elapsed() > FINISH_DEADLINE {
                break;
            }
            let ports = rig.live_ports();
            if ports.is_empty() {
                *p.failures.entry("no node".into()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let port = rng.pick(&ports);
            let answer = rig
                .call(Method::POST, port, "/api/v1/messages/inbound", None, Some(body.clone()))
                .await;
            match answer {
                Ok((status @ (200 | 201), answer)) => {
                    let message_id = answer["message"]["id"].as_str().expect("message.id").to_owned();
                    if let Some(thread) = answer["thread"]["id"].as_str() {
                        threads.lock().unwrap().insert(customer, thread.to_owned());
                    }
                    p.acked = Some(Ack {
                        at: Instant::now(),
                        status,
                        message_id,
                    });
                    break;
                }
                Ok((status, answer)) => {
                    assert!(
                        retryable(status),
                        "inbound {} answered {status}: {answer}",
                        p.external_id
                    );
                    *p.failures.entry(status.to_string()).or_default() += 1;
                }
                Err(e) => {
                    let why = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect"
                    } else {
                        "connection lost"
                    };
                    *p.failures.entry(why.into()).or_default() += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        posted.push(p);
        tokio::time::sleep(PACE.saturating_sub(tick.elapsed())).await;
    }
    posted
}

/// Sam marking a known thread read (mostly) or unread, every few hundred milliseconds, one try
/// each on any running node.
pub struct Reader {
    task: JoinHandle<(u32, u32)>,
}

impl Reader {
    pub fn start(rig: Arc<Rig>, mut rng: Rng, stop: watch::Receiver<bool>, threads: Threads) -> Reader {
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let token = member("sam");
            while !*stop.borrow() {
                tokio::time::sleep(rng.millis(200, 800)).await;
                let known: Vec<String> = threads.lock().unwrap().values().cloned().collect();
                let ports = rig.live_ports();
                if known.is_empty() || ports.is_empty() {
                    continue;
                }
                let thread = &known[rng.below(known.len())];
                let what = if rng.chance(0.7) { "read" } else { "unread" };
                let path = format!("/api/v1/threads/{thread}/{what}");
                match rig
                    .call(Method::POST, rng.pick(&ports), &path, Some(&token), None)
                    .await
                {
                    Ok((200, _)) => ok += 1,
                    Ok((status, body)) => {
                        assert!(retryable(status), "{path} answered {status}: {body}");
                        failed += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
        Reader { task }
    }

    /// (marks that succeeded, marks that failed).
    pub async fn finish(self) -> (u32, u32) {
        self.task.await.expect("the reader")
    }
}
