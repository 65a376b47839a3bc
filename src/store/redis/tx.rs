//! Optimistic transactions: read, decide in Rust, commit in one script.
//!
//! A `Tx` reads through the connection and remembers, as a *guard*, every value a decision
//! rests on (a record, an index's members, whether a counter member exists). `commit` sends
//! the guards, the writes and the events to `commit.lua`, which re-checks every guard and only
//! then applies the writes and appends and publishes the events — one script, so Redis runs it
//! whole or not at all and nothing else interleaves. When a guard no longer holds, someone
//! changed what we read: the caller starts over with a fresh `Tx` (see `RedisStore::transact`).
//! This is WATCH/MULTI/EXEC without holding a connection per transaction, and it works
//! unchanged on Redis Cluster because every key of a tenant shares its hash tag.

use std::collections::HashMap;

use redis::{AsyncCommands, Value, aio::ConnectionManager};

use super::{keys::TenantKeys, unavailable};
use crate::{
    domain::TenantId,
    event::{Event, NewEvent},
    store::{StoreError, StoreResult},
};

/// The start of every event's wire text before the script gives it its id.
const ID_ZERO: &str = r#"{"id":0"#;

/// How the script's guard compares a value read: `-` for absent, `=` and the value.
fn seen(v: &Option<String>) -> String {
    match v {
        None => "-".into(),
        Some(v) => format!("={v}"),
    }
}

pub struct Tx {
    pub conn: ConnectionManager,
    pub keys: TenantKeys,
    retention: u64,
    /// KEYS of the script; the first three are the event sequence, log and channel.
    script_keys: Vec<String>,
    key_index: HashMap<String, usize>,
    guards: Vec<[String; 4]>,
    writes: Vec<[String; 4]>,
    events: Vec<String>,
}

/// What a commit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// A value we read changed before the script ran: start over.
    Conflict,
}

impl Tx {
    pub fn new(conn: ConnectionManager, keys: TenantKeys, retention: u64) -> Tx {
        let script_keys = vec![keys.seq(), keys.log(), keys.channel()];
        let key_index = script_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i + 1))
            .collect();
        Tx {
            conn,
            keys,
            retention,
            script_keys,
            key_index,
            guards: Vec::new(),
            writes: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn tenant(&self) -> &TenantId {
        self.keys.tenant()
    }

    /// The script's 1-based KEYS index of `key`.
    fn index(&mut self, key: &str) -> String {
        if let Some(i) = self.key_index.get(key) {
            return i.to_string();
        }
        self.script_keys.push(key.to_owned());
        let i = self.script_keys.len();
        self.key_index.insert(key.to_owned(), i);
        i.to_string()
    }

    fn guard(&mut self, kind: &str, key: &str, a: &str, expected: String) {
        let i = self.index(key);
        self.guards.push([kind.into(), i, a.into(), expected]);
    }

    fn write(&mut self, op: &str, key: &str, a: &str, b: &str) {
        let i = self.index(key);
        self.writes.push([op.into(), i, a.into(), b.into()]);
    }

    // Guarded reads --------------------------------------------------------------------

    /// A hash field, which must be unchanged at commit.
    pub async fn hget(&mut self, key: &str, field: &str) -> StoreResult<Option<String>> {
        let v: Option<String> = self.conn.hget(key, field).await.map_err(unavailable)?;
        self.guard("h", key, field, seen(&v));
        Ok(v)
    }

    /// A string, which must be unchanged at commit.
    pub async fn get(&mut self, key: &str) -> StoreResult<Option<String>> {
        let v: Option<String> = self.conn.get(key).await.map_err(unavailable)?;
        self.guard("g", key, "", seen(&v));
        Ok(v)
    }

    /// A set's members (sorted), which must be the same set at commit.
    pub async fn smembers(&mut self, key: &str) -> StoreResult<Vec<String>> {
        let mut v: Vec<String> = self.conn.smembers(key).await.map_err(unavailable)?;
        v.sort();
        self.guard("s", key, "", v.join("\n"));
        Ok(v)
    }

    /// A sorted set's members (sorted by text), which must be the same at commit (scores may
    /// change).
    pub async fn zmembers(&mut self, key: &str) -> StoreResult<Vec<String>> {
        let mut v: Vec<String> = self.conn.zrange(key, 0, -1).await.map_err(unavailable)?;
        v.sort();
        self.guard("z", key, "", v.join("\n"));
        Ok(v)
    }

    /// Whether a sorted set holds `member`, which must still be so at commit.
    pub async fn zhas(&mut self, key: &str, member: &str) -> StoreResult<bool> {
        let score: Option<f64> = self.conn.zscore(key, member).await.map_err(unavailable)?;
        let has = score.is_some();
        self.guard("zm", key, member, if has { "=".into() } else { "-".into() });
        Ok(has)
    }

    // Writes, applied at commit ---------------------------------------------------------

    pub fn hset(&mut self, key: &str, field: &str, value: &str) {
        self.write("hset", key, field, value);
    }
    pub fn hdel(&mut self, key: &str, field: &str) {
        self.write("hdel", key, field, "");
    }
    pub fn set(&mut self, key: &str, value: &str) {
        self.write("set", key, value, "");
    }
    pub fn sadd(&mut self, key: &str, member: &str) {
        self.write("sadd", key, member, "");
    }
    pub fn srem(&mut self, key: &str, member: &str) {
        self.write("srem", key, member, "");
    }
    /// Adds `member` at score 0 (the time-ordered indexes sort by member text).
    pub fn zadd(&mut self, key: &str, member: &str) {
        self.write("zadd", key, member, "");
    }
    pub fn zrem(&mut self, key: &str, member: &str) {
        self.write("zrem", key, member, "");
    }
    /// Moves `member`'s counter by `delta`; the member disappears at zero.
    pub fn zincr(&mut self, key: &str, member: &str, delta: i64) {
        self.write("zincr", key, member, &delta.to_string());
    }

    /// Appends an event; the script gives it its id, logs and publishes it.
    pub fn emit(&mut self, e: NewEvent) {
        let wire = Event {
            tenant: self.tenant().clone(),
            id: 0,
            kind: e.kind,
            route: e.route,
            data: e.data,
        }
        .to_wire();
        // unwrap: `to_wire` writes the id first (its wire struct declares `id` first; the test
        // below pins it), so the script can put the real id in place of the 0.
        let suffix = wire.strip_prefix(ID_ZERO).unwrap().to_owned();
        self.events.push(suffix);
    }

    /// Whether this transaction would change anything.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty()
    }

    /// Checks the guards and applies everything, or nothing on a conflict.
    pub async fn commit(mut self) -> StoreResult<Commit> {
        if self.is_empty() {
            // Nothing to write: what we read is the answer, consistent as read.
            return Ok(Commit::Done);
        }
        let mut call = super::COMMIT.prepare_invoke();
        for k in &self.script_keys {
            call.key(k);
        }
        call.arg(self.retention)
            .arg(super::keys::PUBLISH_COMMAND)
            .arg(self.guards.len());
        for g in &self.guards {
            call.arg(&g[..]);
        }
        call.arg(self.writes.len());
        for w in &self.writes {
            call.arg(&w[..]);
        }
        call.arg(self.events.len());
        for e in &self.events {
            call.arg(e);
        }
        let answer: Value = call.invoke_async(&mut self.conn).await.map_err(unavailable)?;
        match answer {
            Value::Array(items) => match items.first() {
                Some(Value::BulkString(b)) if b == b"ok" => Ok(Commit::Done),
                Some(Value::BulkString(b)) if b == b"retry" => Ok(Commit::Conflict),
                _ => Err(StoreError::Unavailable(format!("unexpected commit answer {items:?}"))),
            },
            other => Err(StoreError::Unavailable(format!("unexpected commit answer {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::Id,
        event::{EventKind, Route},
    };

    #[test]
    fn the_wire_text_starts_with_the_id_so_the_script_can_fill_it_in() {
        let e = Event {
            tenant: TenantId::parse("acme").unwrap(),
            id: 0,
            kind: EventKind::ThreadRead,
            route: Route::default(),
            data: r#"{"thread_id":"t1","by":"u1"}"#.into(),
        };
        let wire = e.to_wire();
        let suffix = wire.strip_prefix(ID_ZERO).expect("the id comes first");
        let rebuilt = format!(r#"{{"id":42{suffix}"#);
        assert_eq!(Event::from_wire(&e.tenant, &rebuilt), Some(Event { id: 42, ..e }));
    }
}
