//! The event log in PostgreSQL (`events`, `event_heads`) and the order events leave in.
//!
//! **Appending.** A write's events go in with one statement at the end of its transaction,
//! pipelined with its last writes and its COMMIT (`commit`): `event_heads.head` is raised by n for the tenant (`INSERT … ON CONFLICT DO
//! UPDATE SET head = head + n RETURNING head`), which takes the row's lock until COMMIT, so the
//! next write of the tenant gets its ids only after this one committed or rolled back: ids are
//! gap-free and in commit order per tenant, across every node. The same statement inserts the
//! events and, when the head crosses a multiple of `trim_every(retention)`, deletes what fell
//! out of retention: one write in every `trim_every` deletes a batch, the others pay nothing.
//! The log holds between `retention` and `retention + trim_every - 1` events per tenant.
//!
//! **Publishing.** A tenant's events should reach the bus in id order, yet two writes of one
//! tenant finish their COMMITs on different tasks. So a write takes the tenant's *turn*
//! (`Outbox::turn`) before it locks the head and publishes before giving it back: within this
//! process, the turn order is the head's lock order, which is the id order. What still arrives
//! out of order (another node's ids between ours, a COMMIT whose answer was lost and so never
//! published) is the bus's to mend: `bus::relay` orders what it receives, and reads the log
//! itself (`EventLog::heads`, `events_after`) for whatever was never published.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio_postgres::types::ToSql;

use super::{Conn, Fail, Result, Tx, unavailable};
use crate::{
    domain::TenantId,
    event::{Event, EventKind},
    store::{Publisher, Replay, StoreError},
};

/// How many events apart the trims of a tenant's log are: an eighth of the retention, at most
/// 256 (a trim then deletes at most that many rows, in the write that crosses the mark).
pub(super) fn trim_every(retention: u64) -> u64 {
    (retention / 8).clamp(1, 256)
}

const APPEND: &str = "
    WITH h AS (
        INSERT INTO event_heads AS h (tenant, head) VALUES ($1, $2::bigint)
        ON CONFLICT (tenant) DO UPDATE SET head = h.head + $2::bigint
        RETURNING head
    ), appended AS (
        INSERT INTO events (tenant, id, kind, route, data)
        SELECT $1, h.head - $2::bigint + e.n, e.kind, e.route, e.data
        FROM h, unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS e(kind, route, data, n)
    ), trimmed AS (
        DELETE FROM events d USING h
        WHERE d.tenant = $1 AND d.id <= h.head - $6::bigint
          AND h.head / $7::bigint <> (h.head - $2::bigint) / $7::bigint
    )
    SELECT head FROM h";

/// How appending and committing went (see `commit`).
pub(super) enum Appended {
    /// Committed: the events with their ids, to publish.
    Committed(Vec<Event>),
    /// The append failed before COMMIT was sent (the transaction is still open).
    NotSent(Fail),
    /// The append failed: the server rolled the transaction back (COMMIT of a failed
    /// transaction is a ROLLBACK).
    RolledBack(Fail),
    /// The COMMIT failed, or the connection went away: the outcome is unknown unless the
    /// error says otherwise.
    CommitFailed(Fail),
}

/// Ends a write's transaction in one round trip: its staged rows (`Tx::take_writes`), then
/// its events appended to the tenant's log, then COMMIT, all sent before any answer is read.
/// A statement that fails aborts the transaction, and the COMMIT behind it rolls back: the
/// first failure is the cause (the ones after it only say the transaction was aborted).
pub(super) async fn commit(tx: &mut Tx, tenant: &TenantId, retention: u64) -> Appended {
    let writes = match tx.take_writes(tenant).await {
        Ok(writes) => writes,
        Err(fail) => return Appended::NotSent(fail),
    };
    let events = std::mem::take(&mut tx.events);
    let n = events.len() as i64;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let routes = match events
        .iter()
        .map(|e| serde_json::to_string(&e.route))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(routes) => routes,
        Err(e) => return Appended::NotSent(Fail::Store(unavailable(e))),
    };
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    let (retention_i, every) = (retention as i64, trim_every(retention) as i64);
    let append: [&(dyn ToSql + Sync); 7] = [&tenant.as_str(), &n, &kinds, &routes, &data, &retention_i, &every];
    // Prepared before anything is sent, like the writes (`Tx::take_writes`).
    let appending = if events.is_empty() {
        None
    } else {
        match tx.prepare(APPEND, &append).await {
            Ok(st) => Some(st),
            Err(fail) => return Appended::NotSent(fail),
        }
    };
    let (written, appended, committed) = tokio::join!(
        biased;
        tx.send_writes(&writes),
        async {
            match &appending {
                Some(st) => tx.send(tx.client().query_one(st, &append)).await.map(Some),
                None => Ok(None),
            }
        },
        tx.control("COMMIT")
    );
    let failed = written.err();
    match (failed, appended, committed) {
        (None, Ok(row), Ok(())) => {
            let first = row.map_or(0, |row| row.get::<_, i64>(0) - n + 1) as u64;
            Appended::Committed(
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| Event {
                        tenant: tenant.clone(),
                        id: first + i as u64,
                        kind: e.kind,
                        route: e.route,
                        data: e.data,
                    })
                    .collect(),
            )
        }
        // The server answered a statement with an error: the COMMIT after it rolled back.
        (Some(fail), _, Ok(())) | (None, Err(fail), Ok(())) => Appended::RolledBack(fail),
        (_, _, Err(fail)) => Appended::CommitFailed(fail),
    }
}

pub(super) async fn head(c: &Conn, tenant: &TenantId) -> Result<u64> {
    let row = c
        .query_opt("SELECT head FROM event_heads WHERE tenant = $1", &[&tenant.as_str()])
        .await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// The heads of many tenants in one statement (one index probe each), in the order asked.
pub(super) async fn heads(c: &Conn, tenants: &[TenantId]) -> Result<Vec<u64>> {
    let names: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
    let rows = c
        .query(
            "SELECT COALESCE(h.head, 0) FROM unnest($1::text[]) WITH ORDINALITY AS t(tenant, n)
             LEFT JOIN event_heads h ON h.tenant = t.tenant ORDER BY t.n",
            &[&names],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}

/// The head and the events after `after` (at most `limit`, none when more follow) in one
/// statement, so in one snapshot.
const AFTER: &str = "
    SELECT h.head, e.id, e.kind, e.route, e.data
    FROM event_heads h
    LEFT JOIN LATERAL (
        SELECT id, kind, route, data FROM events
        WHERE tenant = h.tenant AND id > $2 AND id <= h.head AND h.head - $2 <= $3
        ORDER BY id
    ) e ON true
    WHERE h.tenant = $1";

pub(super) async fn events_after(c: &Conn, tenant: &TenantId, after: u64, limit: usize) -> Result<Replay> {
    let (after_i, limit_i) = (
        i64::try_from(after).unwrap_or(i64::MAX),
        i64::try_from(limit).unwrap_or(i64::MAX),
    );
    let rows = c.query(AFTER, &[&tenant.as_str(), &after_i, &limit_i]).await?;
    let head = rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64);
    if after > head || head - after > limit as u64 {
        return Ok(Replay::TooOld);
    }
    if after == head {
        return Ok(Replay::Events(Vec::new()));
    }
    let events = rows
        .iter()
        .filter(|r| r.get::<_, Option<i64>>(1).is_some())
        .map(|r| event_of(tenant, r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Fail::Store)?;
    // Every id from `after + 1` to the head, or the log no longer reaches back that far.
    if events.first().map(|e| e.id) != Some(after + 1) || events.len() as u64 != head - after {
        return Ok(Replay::TooOld);
    }
    Ok(Replay::Events(events))
}

fn event_of(tenant: &TenantId, r: &tokio_postgres::Row) -> Result<Event, StoreError> {
    let kind: &str = r.get(2);
    Ok(Event {
        tenant: tenant.clone(),
        id: r.get::<_, i64>(1) as u64,
        kind: EventKind::parse(kind).ok_or_else(|| unavailable(format!("unknown event kind {kind}")))?,
        route: serde_json::from_str(r.get(3)).map_err(unavailable)?,
        data: r.get::<_, String>(4),
    })
}

/// Hands committed events to the bus (the store's `Publisher`) in id order per tenant (see
/// the module's doc).
pub(super) struct Outbox {
    bus: Arc<dyn Publisher>,
    /// Per tenant: whose turn it is (one per tenant that wrote through this process).
    tenants: Mutex<HashMap<TenantId, Arc<AsyncMutex<()>>>>,
}

/// A tenant's turn to append and publish: held until the events are handed over.
pub(super) struct Turn {
    bus: Arc<dyn Publisher>,
    _held: OwnedMutexGuard<()>,
}

impl Outbox {
    pub(super) fn new(bus: Arc<dyn Publisher>) -> Outbox {
        Outbox {
            bus,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for the tenant's turn.
    pub(super) async fn turn(&self, tenant: &TenantId) -> Turn {
        let slot = {
            // The map's guard is dropped before the await below.
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            tenants.entry(tenant.clone()).or_default().clone()
        };
        Turn {
            bus: self.bus.clone(),
            _held: slot.lock_owned().await,
        }
    }
}

impl Turn {
    /// Publishes a committed batch.
    pub(super) fn publish(self, events: Vec<Event>) {
        self.bus.publish(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_trimmed_in_batches_of_an_eighth_of_the_retention_up_to_256() {
        for (retention, every) in [(1, 1), (5, 1), (8, 1), (16, 2), (2048, 256), (100_000, 256)] {
            assert_eq!(trim_every(retention), every, "{retention}");
        }
    }
}
