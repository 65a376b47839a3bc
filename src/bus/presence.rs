//! Presence between nodes (cluster mode): each node tells the others where its sessions are,
//! through Redis only (never the database: presence is state, not history).
//!
//! # What it owns
//! - **Telling** (`PresenceRelay`, the hub's `Announcer`): whenever this node's picture of a
//!   tenant changes, the relay publishes the node's *whole* picture of that tenant (`State`:
//!   its sessions there and where each is) on the tenant's partition channel, beside the
//!   tenant's events, and writes it into the tenant's presence hash (field: the node) with
//!   the time it holds until. Every `REFRESH` it does both again for every tenant where it
//!   has someone. A whole picture rather than a change, so that any one message is enough,
//!   a lost publish is mended by the next, and the order of two nodes' messages does not
//!   matter. Changes that come while a write is under way join the next one, so a burst
//!   costs Redis one publish and one hash write per round trip, not one per change.
//! - **Hearing** (`Router` hands it `State`s): another node's picture replaces what this node
//!   knew of it (`PresenceSink::heard`, the hub's `Board::replace_node`); every `EXPIRE_CHECK`
//!   the sink forgets the nodes it has not heard for `presence::NODE_TTL` (a node that died).
//! - **Reading** (`PresenceRelay::elsewhere`): the other nodes' pictures of a tenant from its
//!   hash, for `GET /api/v1/presence` on a node that may hold no session of the tenant (so
//!   hears nothing of it). Fields whose time has passed are skipped and removed.
//!
//! # What it costs Redis
//! Per change of a node's picture of a tenant (coalesced as above): one PUBLISH of the
//! picture on the tenant's partition, and one pipeline of HSET and PEXPIRE on the tenant's
//! hash (its key hash-tagged like the tenant's channel, so one primary serves both on a
//! cluster). Per `REFRESH`, the same for each tenant where the node has someone present.
//! Redis holds one hash per tenant with someone present, one field per node, expiring when
//! no node refreshes it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::debug;

use super::pubsub::{PubSub, partition_of};
use crate::{
    domain::TenantId,
    presence::{NODE_TTL, Place},
};

/// How often a node tells its whole picture again (a third of the TTL: two may be lost).
pub const REFRESH: Duration = Duration::from_secs(NODE_TTL.as_secs() / 3);
/// How often the nodes not heard for the TTL are looked for.
pub const EXPIRE_CHECK: Duration = Duration::from_secs(1);

/// What the hub offers the relay (implemented by `hub::Hub`).
pub trait PresenceSink: Send + Sync + 'static {
    /// This node's name (`presence::Origin::node`).
    fn node(&self) -> &str;
    /// Where this node's sessions of `tenant` are, by session key.
    fn here(&self, tenant: &TenantId) -> Vec<(u64, Place)>;
    /// The tenants where this node has a session in a thread.
    fn tenants_here(&self) -> Vec<TenantId>;
    /// `node`'s whole picture of `tenant` (ignored when it is this node's own).
    fn heard(self: Arc<Self>, tenant: &TenantId, node: &str, places: Vec<(u64, Place)>);
    /// Forgets the nodes not heard for `NODE_TTL`.
    fn expire(self: Arc<Self>);
}

/// What the hub calls when its own picture of a tenant changed (implemented here).
pub trait Announcer: Send + Sync + 'static {
    fn changed(&self, tenant: &TenantId);
}

/// One node's whole picture of one tenant, as published and as kept in the hash.
#[derive(Serialize, Deserialize)]
pub struct State {
    #[serde(rename = "t")]
    pub tenant: TenantId,
    #[serde(rename = "n")]
    pub node: String,
    /// Session key and place of each of the node's sessions in a thread of the tenant.
    #[serde(rename = "p")]
    pub places: Vec<(u64, Place)>,
    /// Until when it holds (milliseconds since the epoch; kept in the hash only).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl State {
    /// A presence message, or `None` for any other payload.
    pub fn decode(payload: &[u8]) -> Option<State> {
        serde_json::from_slice(payload).ok()
    }
}

/// The tenant's presence hash, hash-tagged by tenant (one slot holds it on a cluster).
fn key(prefix: &str, tenant: &TenantId) -> String {
    format!("{prefix}presence:{{{}}}", tenant.as_str())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct PresenceRelay {
    sink: Arc<dyn PresenceSink>,
    transport: Arc<dyn PubSub>,
    prefix: String,
    /// Tenants whose picture changed since the last write.
    dirty: Mutex<HashSet<TenantId>>,
    wake: Notify,
    /// The tenants where this node last told a non-empty picture (told empty when they
    /// empty, then dropped).
    told: Mutex<HashSet<TenantId>>,
    tasks: OnceLock<Vec<tokio::task::JoinHandle<()>>>,
}

impl PresenceRelay {
    /// Starts telling and expiring; messages heard come through `heard`.
    pub fn start(sink: Arc<dyn PresenceSink>, transport: Arc<dyn PubSub>, prefix: &str) -> Arc<PresenceRelay> {
        let relay = Arc::new(PresenceRelay {
            sink,
            transport,
            prefix: prefix.to_owned(),
            dirty: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            told: Mutex::new(HashSet::new()),
            tasks: OnceLock::new(),
        });
        let _ = relay.tasks.set(vec![
            tokio::spawn(tell(Arc::downgrade(&relay))),
            tokio::spawn(expire(relay.sink.clone())),
        ]);
        relay
    }

    /// A `State` a node published (this node's own are ignored by the sink).
    pub fn heard(&self, state: State) {
        self.sink.clone().heard(&state.tenant, &state.node, state.places);
    }

    /// The other nodes' pictures of `tenant`, from its hash: live fields only.
    pub async fn elsewhere(&self, tenant: &TenantId) -> Result<Vec<(String, Vec<(u64, Place)>)>, String> {
        let key = key(&self.prefix, tenant);
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(&key);
        let value = self.transport.run(&key, &pipe).await.map_err(|e| e.to_string())?;
        let fields: Vec<std::collections::HashMap<String, String>> =
            redis::from_redis_value(value).map_err(|e| e.to_string())?;
        let now = now_ms();
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (node, text) in fields.into_iter().flatten() {
            match serde_json::from_str::<State>(&text) {
                Ok(s) if s.until.is_some_and(|u| u > now) => {
                    if node != self.sink.node() {
                        out.push((node, s.places));
                    }
                }
                _ => stale.push(node),
            }
        }
        if !stale.is_empty() {
            let mut pipe = redis::pipe();
            pipe.cmd("HDEL").arg(&key).arg(&stale).ignore();
            // Best effort: a reader after this one skips them too.
            let _ = self.transport.run(&key, &pipe).await;
        }
        Ok(out)
    }

    /// Tells `tenant`'s picture now: publishes it and writes it to the hash.
    async fn tell_one(&self, tenant: &TenantId) {
        let places = self.sink.here(tenant);
        let empty = places.is_empty();
        {
            // unwrap: the lock is only held for short, non-panicking sections.
            let mut told = self.told.lock().unwrap();
            if empty && !told.remove(tenant) {
                return; // nothing told before, nothing to take back
            }
            if !empty {
                told.insert(tenant.clone());
            }
        }
        let until = now_ms() + NODE_TTL.as_millis() as u64;
        let state = State {
            tenant: tenant.clone(),
            node: self.sink.node().to_owned(),
            places,
            until: None,
        };
        // The hash first: whoever sees the publish and then reads the hash finds it there.
        let key = key(&self.prefix, tenant);
        let mut pipe = redis::pipe();
        if empty {
            pipe.cmd("HDEL").arg(&key).arg(&state.node).ignore();
        } else {
            let kept = State {
                until: Some(until),
                tenant: state.tenant.clone(),
                node: state.node.clone(),
                places: state.places.clone(),
            };
            // unwrap: plain data.
            let text = serde_json::to_string(&kept).unwrap();
            pipe.cmd("HSET").arg(&key).arg(&kept.node).arg(text).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(NODE_TTL.as_millis() as u64).ignore();
        }
        if let Err(e) = self.transport.run(&key, &pipe).await {
            debug!(%tenant, error = %e, "presence not written: the next refresh writes it");
        }
        // unwrap: plain data.
        let message = serde_json::to_vec(&state).unwrap();
        if let Err(e) = self.transport.publish(partition_of(tenant), &message).await {
            debug!(%tenant, error = %e, "presence not published: the next refresh tells it");
        }
    }
}

impl Announcer for PresenceRelay {
    fn changed(&self, tenant: &TenantId) {
        // unwrap: the lock is only held for short, non-panicking sections.
        self.dirty.lock().unwrap().insert(tenant.clone());
        self.wake.notify_one();
    }
}

impl Drop for PresenceRelay {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.get() {
            tasks.iter().for_each(|t| t.abort());
        }
    }
}

/// Tells the changed tenants as they change, and every tenant with someone every `REFRESH`.
async fn tell(relay: std::sync::Weak<PresenceRelay>) {
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(r) = relay.upgrade() else { return };
        let all = tokio::select! {
            _ = r.wake.notified() => false,
            _ = refresh.tick() => true,
        };
        // unwrap: the lock is only held for short, non-panicking sections.
        let mut tenants: HashSet<TenantId> = std::mem::take(&mut *r.dirty.lock().unwrap());
        if all {
            tenants.extend(r.sink.tenants_here());
        }
        for tenant in tenants {
            r.tell_one(&tenant).await;
        }
    }
}

/// Forgets the nodes gone quiet, every `EXPIRE_CHECK`.
async fn expire(sink: Arc<dyn PresenceSink>) {
    let mut tick = tokio::time::interval(EXPIRE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sink.clone().expire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;
    use crate::presence::{Activity, Present};

    #[test]
    fn a_state_round_trips_and_an_event_batch_is_not_one() {
        let state = State {
            tenant: TenantId::parse("acme").unwrap(),
            node: "n1".into(),
            places: vec![(
                7,
                Place {
                    thread: Id::parse("t1").unwrap(),
                    location: Id::parse("L1").unwrap(),
                    present: Present {
                        user: Id::parse("dana").unwrap(),
                        name: Some("Dana".into()),
                        activity: Activity::Typing,
                    },
                },
            )],
            until: None,
        };
        let bytes = serde_json::to_vec(&state).unwrap();
        let back = State::decode(&bytes).unwrap();
        assert_eq!((back.node.as_str(), back.places.len()), ("n1", 1));
        assert!(State::decode(br#"{"t":"acme","e":[]}"#).is_none());
        assert_eq!(key("sb:", &state.tenant), "sb:presence:{acme}");
    }
}
