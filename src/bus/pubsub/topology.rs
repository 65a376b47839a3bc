//! Which primary owns which slot of a Redis Cluster, read from `CLUSTER SHARDS` (Redis 7+,
//! which sharded pub/sub needs anyway): pure parsing, no I/O.
//!
//! A node's view may be stale (a failover or a migration it has not heard of yet); the cluster
//! transport refreshes it on every sign of a change and lets a MOVED answer override it for
//! one partition, so a stale view only costs a retry.

use std::fmt;

use redis::Value;

use super::partition::SLOTS;

/// A node's address as the cluster announces it (its `endpoint`, else its `ip`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The owner of every slot, and every node (primaries and replicas) to ask next time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Slot ranges (first, last, inclusive) and their primary, sorted by first slot.
    ranges: Vec<(u16, u16, NodeAddr)>,
    /// Every node listed, primaries first.
    nodes: Vec<NodeAddr>,
}

impl Topology {
    /// A topology of one node owning every slot (also the single-Redis transport's).
    pub fn single(node: NodeAddr) -> Topology {
        Topology {
            ranges: vec![(0, SLOTS - 1, node.clone())],
            nodes: vec![node],
        }
    }

    /// The primary serving `slot`, if any does.
    pub fn owner(&self, slot: u16) -> Option<&NodeAddr> {
        let i = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (first, last, node) = self.ranges.get(i.checked_sub(1)?)?;
        (*first..=*last).contains(&slot).then_some(node)
    }

    /// Every node listed (primaries first): where to ask for the topology next.
    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    /// Parses a `CLUSTER SHARDS` reply (RESP2 arrays of alternating names and values, or
    /// RESP3 maps). A shard's owner is its primary whose health is not `fail`, else its
    /// primary whatever its health (nothing better is known). Shards without slots (a primary
    /// being added, an old primary back as an empty one) own nothing.
    pub fn from_shards(reply: &Value) -> Result<Topology, String> {
        let (Value::Array(shards) | Value::Set(shards)) = reply else {
            return Err(format!("CLUSTER SHARDS: not an array: {reply:?}"));
        };
        let mut ranges = Vec::new();
        let mut primaries = Vec::new();
        let mut replicas = Vec::new();
        for shard in shards {
            let fields = pairs(shard).ok_or("CLUSTER SHARDS: a shard is not a map")?;
            let slots = field(&fields, "slots").ok_or("CLUSTER SHARDS: a shard without slots")?;
            let nodes = field(&fields, "nodes").ok_or("CLUSTER SHARDS: a shard without nodes")?;
            let Value::Array(slots) = slots else {
                return Err("CLUSTER SHARDS: slots is not an array".into());
            };
            let Value::Array(nodes) = nodes else {
                return Err("CLUSTER SHARDS: nodes is not an array".into());
            };
            let mut owner: Option<(NodeAddr, bool)> = None;
            for node in nodes {
                let fields = pairs(node).ok_or("CLUSTER SHARDS: a node is not a map")?;
                let Some(addr) = node_addr(&fields) else {
                    // A node without an address (`endpoint` "?" while it is unknown): skip.
                    continue;
                };
                let role = field(&fields, "role").and_then(text);
                let healthy = field(&fields, "health").and_then(text).as_deref() != Some("fail");
                if role.as_deref() == Some("master") {
                    if owner.as_ref().is_none_or(|(_, h)| !h && healthy) {
                        owner = Some((addr.clone(), healthy));
                    }
                    primaries.push(addr);
                } else {
                    replicas.push(addr);
                }
            }
            let Some((owner, _)) = owner else { continue };
            for pair in slots.chunks(2) {
                let [first, last] = pair else {
                    return Err("CLUSTER SHARDS: an odd number of slot bounds".into());
                };
                let (Some(first), Some(last)) = (int(first), int(last)) else {
                    return Err("CLUSTER SHARDS: a slot bound is not a number".into());
                };
                let (Ok(first), Ok(last)) = (u16::try_from(first), u16::try_from(last)) else {
                    return Err("CLUSTER SHARDS: a slot out of range".into());
                };
                if first > last || last >= SLOTS {
                    return Err(format!("CLUSTER SHARDS: bad slot range {first}-{last}"));
                }
                ranges.push((first, last, owner.clone()));
            }
        }
        if ranges.is_empty() {
            return Err("CLUSTER SHARDS: no slot is served".into());
        }
        ranges.sort();
        if ranges.windows(2).any(|w| w[0].1 >= w[1].0) {
            return Err("CLUSTER SHARDS: overlapping slot ranges".into());
        }
        let mut nodes = primaries;
        for r in replicas {
            if !nodes.contains(&r) {
                nodes.push(r);
            }
        }
        Ok(Topology { ranges, nodes })
    }
}

/// The name/value pairs of a RESP3 map or a RESP2 array of alternating names and values.
fn pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    match v {
        Value::Map(entries) => entries.iter().map(|(k, v)| Some((text(k)?, v))).collect(),
        Value::Array(items) if items.len() % 2 == 0 => {
            items.chunks(2).map(|kv| Some((text(&kv[0])?, &kv[1]))).collect()
        }
        _ => None,
    }
}

fn field<'a>(fields: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn node_addr(fields: &[(String, &Value)]) -> Option<NodeAddr> {
    let host = ["endpoint", "ip"]
        .iter()
        .filter_map(|k| field(fields, k).and_then(text))
        .find(|h| !h.is_empty() && h != "?")?;
    let port = u16::try_from(int(field(fields, "port")?)?).ok()?;
    Some(NodeAddr { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::BulkString(x.as_bytes().to_vec())
    }

    /// A node as RESP2 `CLUSTER SHARDS` lists it.
    fn node(port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            s("id"),
            s(&format!("{port:040}")),
            s("port"),
            Value::Int(port),
            s("ip"),
            s("127.0.0.1"),
            s("endpoint"),
            s("127.0.0.1"),
            s("role"),
            s(role),
            s("replication-offset"),
            Value::Int(42),
            s("health"),
            s(health),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            s("slots"),
            Value::Array(slots.iter().map(|n| Value::Int(*n)).collect()),
            s("nodes"),
            Value::Array(nodes),
        ])
    }

    fn addr(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn every_slot_has_the_primary_of_its_shard() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460],
                vec![node(7000, "master", "online"), node(7003, "replica", "online")],
            ),
            shard(
                &[10923, 16383, 5461, 10922],
                vec![node(7004, "replica", "online"), node(7001, "master", "online")],
            ),
        ]);
        let t = Topology::from_shards(&reply).unwrap();
        assert_eq!(t.owner(0), Some(&addr(7000)));
        assert_eq!(t.owner(5460), Some(&addr(7000)));
        assert_eq!(t.owner(5461), Some(&addr(7001)));
        assert_eq!(t.owner(16383), Some(&addr(7001)));
        assert_eq!(t.nodes(), &[addr(7000), addr(7001), addr(7003), addr(7004)]);
    }

    #[test]
    fn a_failed_primary_gives_way_to_a_healthy_one_and_unserved_slots_have_no_owner() {
        // Mid-failover: the old primary is failed, its promoted replica already a primary.
        let reply = Value::Array(vec![shard(
            &[100, 200],
            vec![node(7000, "master", "fail"), node(7003, "master", "online")],
        )]);
        let t = Topology::from_shards(&reply).unwrap();
        assert_eq!(t.owner(150), Some(&addr(7003)));
        assert_eq!(t.owner(99), None);
        assert_eq!(t.owner(201), None);
        // Before the promotion, the failed primary is all there is.
        let reply = Value::Array(vec![shard(
            &[0, 16383],
            vec![node(7000, "master", "fail"), node(7003, "replica", "online")],
        )]);
        assert_eq!(Topology::from_shards(&reply).unwrap().owner(5), Some(&addr(7000)));
    }

    #[test]
    fn resp3_maps_read_the_same() {
        let map = |v: Value| match v {
            Value::Array(items) => Value::Map(items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()),
            other => other,
        };
        let shard3 = Value::Map(vec![
            (s("slots"), Value::Array(vec![Value::Int(0), Value::Int(16383)])),
            (s("nodes"), Value::Array(vec![map(node(7000, "master", "online"))])),
        ]);
        let t = Topology::from_shards(&Value::Array(vec![shard3])).unwrap();
        assert_eq!(t.owner(8000), Some(&addr(7000)));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(Topology::from_shards(&Value::Nil).is_err());
        assert!(Topology::from_shards(&Value::Array(vec![])).is_err(), "no slot served");
        let overlapping = Value::Array(vec![
            shard(&[0, 100], vec![node(7000, "master", "online")]),
            shard(&[100, 200], vec![node(7001, "master", "online")]),
        ]);
        assert!(Topology::from_shards(&overlapping).is_err());
        let odd = Value::Array(vec![shard(&[0], vec![node(7000, "master", "online")])]);
        assert!(Topology::from_shards(&odd).is_err());
        let out_of_range = Value::Array(vec![shard(&[0, 16384], vec![node(7000, "master", "online")])]);
        assert!(Topology::from_shards(&out_of_range).is_err());
    }

    #[test]
    fn a_single_node_owns_everything() {
        let t = Topology::single(addr(6379));
        assert_eq!(t.owner(0), Some(&addr(6379)));
        assert_eq!(t.owner(16383), Some(&addr(6379)));
    }
}
