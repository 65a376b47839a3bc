//! Redis key and channel names. Every name of a tenant carries the tenant as its hash tag
//! (`{acme}`), so one tenant's keys live on one Redis Cluster shard and a script may touch
//! all of them; the event channel carries the same tag, so sharded pub/sub (SPUBLISH) stays
//! on that shard too.

use crate::domain::TenantId;

/// `<prefix>:{<tenant>}:<rest>`.
pub fn key(prefix: &str, tenant: &TenantId, rest: &str) -> String {
    format!("{prefix}:{{{tenant}}}:{rest}")
}

/// The tenant's event sequence: its value is the newest event id (the log's head).
pub fn seq(prefix: &str, tenant: &TenantId) -> String {
    key(prefix, tenant, "seq")
}

/// The tenant's retained event log: a sorted set, score = event id, member = `Event::to_wire`.
pub fn log(prefix: &str, tenant: &TenantId) -> String {
    key(prefix, tenant, "log")
}

/// The channel the tenant's events are published on, as `Event::to_wire` text, in id order.
pub fn channel(prefix: &str, tenant: &TenantId) -> String {
    key(prefix, tenant, "events")
}

/// The tenant a channel name belongs to, if it is one of ours.
pub fn tenant_of_channel(prefix: &str, channel: &str) -> Option<TenantId> {
    use crate::domain::Id;
    let rest = channel.strip_prefix(prefix)?.strip_prefix(":{")?;
    let tenant = rest.strip_suffix("}:events")?;
    TenantId::parse(tenant).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;

    #[test]
    fn names_carry_the_tenant_as_hash_tag_and_channels_parse_back() {
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(log("sb", &t), "sb:{acme}:log");
        assert_eq!(tenant_of_channel("sb", &channel("sb", &t)), Some(t));
        assert_eq!(tenant_of_channel("sb", "other:{acme}:events"), None);
    }
}
