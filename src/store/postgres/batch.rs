//! Group commit of inbound messages: the ingests of one tenant that arrive while one of its
//! transactions is running on this node wait for it to end, then go in together, in one
//! transaction, with one append of their events, one COMMIT (one WAL flush) and one publish.
//!
//! # Why
//! A tenant's writes already pass one at a time through its log head (`log`): each holds the
//! head's lock from its append to its COMMIT. Under load they queued there, each paying a
//! transaction of its own: BEGIN, the preferences' lock, the append, the COMMIT and its
//! flush, and a publish that wakes Redis and every node. Batching what queued anyway shares
//! all of that, and adds no wait: a message that finds no transaction of its tenant running
//! starts one at once, alone. The batch grows with the load, and only then.
//!
//! # How
//! Per tenant, at most one transaction of ingests runs on this node: the first ingest starts a
//! drainer task; later ones queue (at most `MAX_WAITING`) and are taken, up to `MAX_BATCH` at a
//! time, when the running transaction ends. In the transaction each message gets the same facts
//! and the same plan as alone (`ops::ingest_reads_all`, then `ops::ingest_with`, its plan in
//! `crate::plan`). The messages
//! are taken in the order of their thread's key (`to`, then `from`, arrival order within), so
//! two batches on two nodes lock common threads in one order (the one cycle left, two numbers
//! of one location reaching one customer in opposite orders, is broken by PostgreSQL's
//! deadlock detection, and the batch runs again message by message), and cut into *waves*
//! (`waves`): runs of messages of which no two have the same
//! customer or `external_id`, so none can see another's rows. A wave is one round trip: the
//! rows the wave before staged (`Tx::take_writes`), then the reads of all its messages, three
//! statements for the whole wave (`ops::ingest_reads_all`: its threads locked in the wave's
//! order); then each message's plan in turn. So a second message of a new thread (a later
//! wave) finds the thread the first made, and a batch of different customers is two round trips: its reads,
//! then its rows with the append and the COMMIT.
//!
//! # Answers
//! A message refused by its plan (no location has its `to`) gets its refusal; the others go
//! on. If the transaction fails and surely did not commit (a collision with another node's
//! write, a statement's error), each message is run again alone (`transact!`), so one bad
//! message never fails the others. If the COMMIT's outcome is unknown (the connection went
//! away, the deadline passed), every message of the batch gets the 503 a write alone would.
//! Each message keeps its own deadline (`postgres.timeout_ms`): one whose deadline passed
//! while it waited is answered 503 and not written; a transaction runs until the earliest
//! deadline of its messages.
//!
//! # Waiting for company
//! With `postgres.ingest_linger_us` set, a drainer whose transaction just ended waits until
//! that long after its end before taking the next batch (unless a full batch already
//! waits), and only then ends if nothing came. So under a steady load messages are written
//! a few at a time instead of one by one, at the cost of up to that wait each; a message that
//! finds its tenant idle (no drainer running) still starts its transaction at once. Off (0)
//! by default. The wait is tokio's `sleep_until`, which counts whole milliseconds and rounds
//! the deadline up to its next tick: on the benchmark machine a wait set to 100 or 250 µs took
//! 1.1 ms at the median (up to 2.2), one of 1,000 µs 2.1 ms. A wait kept to the microsecond (a
//! thread of its own sleeping on the kernel's timers, within about 0.1 ms) was tried: at 250
//! and 500 µs it saved nothing measurable in W4, so the coarse timer stays.
//!
//! Each committed transaction's count of messages goes to `switchboard_ingest_batch_messages`
//! (`PgStore::report_to`): how much the batching is doing, for an operator.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use tokio::{sync::oneshot, time::Instant};

use super::{Fail, Finished, Inner, MAX_ATTEMPTS, Tx, ops, unavailable};
use crate::{
    domain::{TenantId, model::Ingested},
    store::{InboundInput, StoreError, StoreResult},
};

/// The most messages one transaction writes.
pub(super) const MAX_BATCH: usize = 32;
/// The most messages of one tenant waiting on this node; beyond, an ingest answers 503.
pub(super) const MAX_WAITING: usize = 4_096;

/// Per tenant with a drainer running, the messages waiting for it (`Inner::batches`). A
/// tenant is in the map exactly while its drainer runs.
#[derive(Default)]
pub(super) struct Waiting {
    tenants: Mutex<HashMap<TenantId, VecDeque<Pending>>>,
}

/// One message waiting, and where its answer goes.
struct Pending {
    input: InboundInput,
    deadline: Instant,
    answer: oneshot::Sender<StoreResult<Ingested>>,
}

/// Writes one inbound message, with whatever else of its tenant waits (see the module's doc).
pub(super) async fn ingest(inner: &Arc<Inner>, tenant: &TenantId, input: InboundInput) -> StoreResult<Ingested> {
    let (answer, answered) = oneshot::channel();
    let pending = Pending {
        input,
        deadline: Instant::now() + inner.timeout,
        answer,
    };
    let start = {
        let mut tenants = inner.batches.lock();
        match tenants.get_mut(tenant) {
            Some(queue) if queue.len() >= MAX_WAITING => {
                return Err(unavailable(format!(
                    "{MAX_WAITING} inbound messages of this tenant are already waiting to be written"
                )));
            }
            Some(queue) => {
                queue.push_back(pending);
                false
            }
            None => {
                tenants.insert(tenant.clone(), VecDeque::from([pending]));
                true
            }
        }
    };
    if start {
        let drainer = Drainer {
            inner: inner.clone(),
            tenant: tenant.clone(),
            done: false,
        };
        inner.runtime.spawn(drainer.run());
    }
    answered
        .await
        .unwrap_or_else(|_| Err(unavailable("the write's task ended without an answer")))
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, VecDeque<Pending>>> {
        // The lock is only held for short, non-panicking sections.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes a tenant's waiting messages, a batch at a time, until none waits, then takes the
/// tenant out of the map under the lock that found its queue empty. Dropped before that (a
/// panic), it takes the tenant out all the same: the messages still waiting are answered 503
/// (their senders dropped), and the next ingest starts a new drainer.
struct Drainer {
    inner: Arc<Inner>,
    tenant: TenantId,
    /// The tenant is out of the map already (`run` took it out).
    done: bool,
}

impl Drop for Drainer {
    fn drop(&mut self) {
        if !self.done {
            self.inner.batches.lock().remove(&self.tenant);
        }
    }
}

impl Drainer {
    async fn run(mut self) {
        // When this drainer's last transaction ended: from then on the tenant is busy, and
        // the next transaction may wait for company (`postgres.ingest_linger_us`).
        let mut ended: Option<Instant> = None;
        loop {
            if let (Some(ended), Some(linger)) = (ended, self.inner.linger)
                && self.waiting() < MAX_BATCH
            {
                tokio::time::sleep_until(ended + linger).await;
            }
            let batch: Vec<Pending> = {
                let mut tenants = self.inner.batches.lock();
                if tenants.get(&self.tenant).is_none_or(VecDeque::is_empty) {
                    tenants.remove(&self.tenant);
                    self.done = true;
                    return;
                }
                // unwrap: just found.
                let queue = tenants.get_mut(&self.tenant).unwrap();
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            let now = Instant::now();
            let (mut live, late): (Vec<Pending>, Vec<Pending>) = batch.into_iter().partition(|p| p.deadline > now);
            for p in late {
                let _ = p.answer.send(Err(timed_out(&self.inner)));
            }
            // By thread key, arrival order kept within one (see the module's doc).
            live.sort_by(|a, b| (&a.input.to, &a.input.from).cmp(&(&b.input.to, &b.input.from)));
            match live.len() {
                0 => {}
                1 => {
                    let p = live.remove(0);
                    let answer = alone(&self.inner, &self.tenant, p.input, p.deadline).await;
                    let _ = p.answer.send(answer);
                }
                _ => self.together(live).await,
            }
            ended = Some(Instant::now());
        }
    }

    /// How many messages of the tenant wait now.
    fn waiting(&self) -> usize {
        self.inner.batches.lock().get(&self.tenant).map_or(0, VecDeque::len)
    }

    /// One transaction for the batch; each message alone if it surely did not commit.
    async fn together(&self, batch: Vec<Pending>) {
        let (inner, tenant) = (&self.inner, &self.tenant);
        // unwrap: the batch is not empty.
        let deadline = batch.iter().map(|p| p.deadline).min().unwrap();
        let inputs: Vec<InboundInput> = batch.iter().map(|p| p.input.clone()).collect();
        let finished = tokio::time::timeout_at(deadline, attempt(inner, tenant, inputs)).await;
        match finished {
            Ok(Finished::Done(Ok(answers))) => {
                committed(inner, answers.iter().filter(|a| a.is_ok()).count());
                for (p, answer) in batch.into_iter().zip(answers) {
                    let _ = p.answer.send(answer);
                }
            }
            Ok(Finished::Done(Err(e))) => {
                for p in batch {
                    let _ = p.answer.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for p in batch {
                    let _ = p.answer.send(Err(timed_out(inner)));
                }
            }
            Ok(Finished::Retry | Finished::RolledBack(_)) => {
                for p in batch {
                    let answer = alone(inner, tenant, p.input, p.deadline).await;
                    let _ = p.answer.send(answer);
                }
            }
        }
    }
}

/// How a batch's transaction begins. Its wave reads (`ops::WAVE_*`) take arrays whose length
/// varies from call to call, so PostgreSQL, left to choose, plans them again on every
/// execution, and that cost it more than running them (W4: about 0.8 ms of planning a wave
/// against 0.4 of execution, `pg_stat_statements` with `track_planning`). They find their rows
/// by key whatever the arrays hold: one generic plan each serves every call. A message alone
/// keeps the plain BEGIN: its statements settle on generic plans by themselves, and the SET
/// would be a cost of its own.
const BEGIN_BATCH: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// One attempt at writing the batch in one transaction: each message's answer, in order.
async fn attempt(inner: &Inner, tenant: &TenantId, inputs: Vec<InboundInput>) -> Finished<Vec<StoreResult<Ingested>>> {
    let mut tx = match inner.begin_with(BEGIN_BATCH).await {
        Ok(tx) => tx,
        Err(e) => return Finished::Done(Err(e)),
    };
    let mut answers = Vec::with_capacity(inputs.len());
    for wave in waves(inputs) {
        if let Err(fail) = write_wave(&mut tx, tenant, wave, &mut answers).await {
            return inner.finish(tenant, tx, Err(fail)).await;
        }
    }
    inner.finish(tenant, tx, Ok(answers)).await
}

/// Splits the batch, in order, into waves of messages that cannot see each other's rows: no
/// two of a wave have the same customer (`from`: their thread may be one) or `external_id`.
fn waves(inputs: Vec<InboundInput>) -> Vec<Vec<InboundInput>> {
    let mut waves: Vec<Vec<InboundInput>> = Vec::new();
    for input in inputs {
        let joins_last = waves.last().is_some_and(|wave| {
            wave.iter()
                .all(|other| other.from != input.from && other.external_id != input.external_id)
        });
        match waves.last_mut() {
            Some(wave) if joins_last => wave.push(input),
            _ => waves.push(vec![input]),
        }
    }
    waves
}

/// One wave in one round trip: the rows the wave before staged, then every message's reads;
/// then each message's plan in turn, its rows and events staged. A message its plan refuses
/// gets its refusal (nothing of it stays staged); any other failure fails the transaction.
async fn write_wave(
    tx: &mut Tx,
    tenant: &TenantId,
    wave: Vec<InboundInput>,
    answers: &mut Vec<StoreResult<Ingested>>,
) -> Result<(), Fail> {
    let facts = ops::ingest_reads_all(tx, tenant, &wave).await?;
    for (input, facts) in wave.into_iter().zip(facts) {
        let mark = tx.mark();
        match ops::ingest_with(tx, tenant, input, facts).await {
            Ok(ingested) => answers.push(Ok(ingested)),
            Err(Fail::Store(refused)) => {
                tx.back_to(mark);
                answers.push(Err(refused));
            }
            Err(fail) => return Err(fail),
        }
    }
    Ok(())
}

/// One message in a transaction of its own, run again on a collision, under its deadline.
async fn alone(inner: &Inner, tenant: &TenantId, input: InboundInput, deadline: Instant) -> StoreResult<Ingested> {
    let write = async { transact!(inner, tenant, |tx| ops::ingest(&mut tx, tenant, input.clone()).await) };
    let answer = tokio::time::timeout_at(deadline, write)
        .await
        .unwrap_or_else(|_| Err(timed_out(inner)));
    if answer.is_ok() {
        committed(inner, 1);
    }
    answer
}

/// Counts a committed ingestion transaction of `messages` messages (`PgStore::report_to`).
/// Messages answered from an earlier write (a repeated `external_id`) count: they were
/// answered by the transaction, as the others.
fn committed(inner: &Inner, messages: usize) {
    if let (Some(metrics), 1..) = (inner.metrics.get(), messages) {
        metrics.ingest_batch_messages.observe(messages as f64);
    }
}

fn timed_out(inner: &Inner) -> StoreError {
    unavailable(format!("no answer within {:?}", inner.timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneParser;

    fn input(external_id: &str, from: &str) -> InboundInput {
        let phone = |s: &str| PhoneParser::new("US").unwrap().parse(s).unwrap();
        InboundInput {
            external_id: external_id.into(),
            from: phone(from),
            to: phone("+15550001111"),
            body: String::new(),
            attachments: Vec::new(),
            received_at: None,
        }
    }

    #[test]
    fn a_wave_ends_before_a_message_that_could_see_one_of_its_rows() {
        let (a, b, c) = ("+15551110001", "+15551110002", "+15551110003");
        // (external id, customer) of each message, in order; the external ids of each wave.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a [&'a str]]);
        let cases: [Case; 5] = [
            (&[("m1", a)], &[&["m1"]]),
            (&[("m1", a), ("m2", b), ("m3", c)], &[&["m1", "m2", "m3"]]),
            // The same customer: the second reads the thread the first wrote.
            (&[("m1", a), ("m2", a), ("m3", b)], &[&["m1"], &["m2", "m3"]]),
            // The same external id: the second is answered with the first's message.
            (&[("m1", a), ("m1", b)], &[&["m1"], &["m1"]]),
            (
                &[("m1", a), ("m2", b), ("m3", a), ("m4", c)],
                &[&["m1", "m2"], &["m3", "m4"]],
            ),
        ];
        for (inputs, expected) in cases {
            let got: Vec<Vec<String>> = waves(inputs.iter().map(|(id, from)| input(id, from)).collect())
                .into_iter()
                .map(|wave| wave.into_iter().map(|i| i.external_id).collect())
                .collect();
            assert_eq!(
                got,
                expected.iter().map(|w| w.to_vec()).collect::<Vec<_>>(),
                "{inputs:?}"
            );
        }
    }
}
