//! Redis key and channel names. Every name of a tenant carries the tenant as its hash tag
//! (`{acme}`), so one tenant's keys live on one Redis Cluster shard and a script may touch
//! all of them; the event channel carries the same tag, so sharded pub/sub (SPUBLISH) stays
//! on that shard too.
//!
//! # Layout
//! Every key is `<prefix>:{<tenant>}:<rest>`; `<rest>` is either a fixed name (no `:`) or a
//! family name, `:` and an id or number, so no two names collide.
//!
//! | rest | type | holds |
//! |---|---|---|
//! | `seq` | string | the newest event id (the log's head) |
//! | `log` | zset | retained events: score = id, member = `Event::to_wire` |
//! | `events` | channel | the same wire text, published in id order |
//! | `loc` | hash | location id → `LocationRecord` JSON |
//! | `locnum` | hash | SMS number → location id |
//! | `user` | hash | user id → name |
//! | `folder` | hash | folder id → `FolderRecord` JSON |
//! | `lfolders:<location>` | set | folder ids at a location (search, the drop-down) |
//! | `nfolders:<number>` | set | folder ids listing a customer number (auto-assignment) |
//! | `prefs` | string | `PrefsRecord` JSON (absent: both on) |
//! | `suball` | hash | user id → `1` for users with `subscribe_all` on |
//! | `thread` | hash | thread id → `ThreadRecord` JSON |
//! | `tkey` | hash | `<location>/<customer number>` → thread id |
//! | `lthreads:<location>` | zset | a location's threads, newest first by `recency_member` |
//! | `lunread:<location>` | zset | the unread ones among them, same members |
//! | `fthreads:<folder>` | set | thread ids assigned to a folder |
//! | `funread` | zset | folder id → how many of its threads are unread (only > 0) |
//! | `msg` | hash | message id → `MessageRecord` JSON |
//! | `extid` | hash | inbound `external_id` → message id (idempotent ingestion) |
//! | `msgseq` | string | the tenant's message counter (ties between equal timestamps) |
//! | `tmsgs:<thread>` | zset | a thread's messages by `message_member` |
//! | `photos:<folder>` | hash | attachment id → `PhotoRecord` JSON |
//!
//! One key belongs to no tenant: `<prefix>:cursor-key` (string), the deployment's 32-byte key
//! for signing list cursors (`Store::cursor_key`). Having no `{`, it cannot collide with a
//! tenant's names.
//!
//! The zsets ordered by time hold every member at score 0 and sort by the member text
//! (fixed-width timestamps first), so a cursor is an exclusive lexicographic bound and equal
//! timestamps still have one total order.

use crate::domain::{FolderId, LocationId, PhoneNumber, TenantId, ThreadId};

/// `<prefix>:{<tenant>}:<rest>`.
pub fn key(prefix: &str, tenant: &TenantId, rest: &str) -> String {
    format!("{prefix}:{{{tenant}}}:{rest}")
}

/// The deployment's cursor-signing key (not a tenant's: no hash tag).
pub fn cursor_key(prefix: &str) -> String {
    format!("{prefix}:cursor-key")
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

/// The command the store's commit script publishes with. Plain pub/sub: the bus subscribes
/// with `SUBSCRIBE`. (Sharded pub/sub would be `SPUBLISH`; the channel name already carries
/// the tenant's hash tag, so only this and the bus's subscribe command would change.)
pub const PUBLISH_COMMAND: &str = "PUBLISH";

/// The tenant a channel name belongs to, if it is one of ours.
pub fn tenant_of_channel(prefix: &str, channel: &str) -> Option<TenantId> {
    use crate::domain::Id;
    let rest = channel.strip_prefix(prefix)?.strip_prefix(":{")?;
    let tenant = rest.strip_suffix("}:events")?;
    TenantId::parse(tenant).ok()
}

/// Every name of one tenant (see the table above).
#[derive(Debug, Clone)]
pub struct TenantKeys {
    prefix: String,
    tenant: TenantId,
}

impl TenantKeys {
    pub fn new(prefix: &str, tenant: &TenantId) -> Self {
        TenantKeys {
            prefix: prefix.to_owned(),
            tenant: tenant.clone(),
        }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn k(&self, rest: &str) -> String {
        key(&self.prefix, &self.tenant, rest)
    }

    pub fn seq(&self) -> String {
        seq(&self.prefix, &self.tenant)
    }
    pub fn log(&self) -> String {
        log(&self.prefix, &self.tenant)
    }
    pub fn channel(&self) -> String {
        channel(&self.prefix, &self.tenant)
    }
    pub fn locations(&self) -> String {
        self.k("loc")
    }
    pub fn location_numbers(&self) -> String {
        self.k("locnum")
    }
    pub fn users(&self) -> String {
        self.k("user")
    }
    pub fn folders(&self) -> String {
        self.k("folder")
    }
    pub fn location_folders(&self, location: &LocationId) -> String {
        self.k(&format!("lfolders:{location}"))
    }
    pub fn number_folders(&self, number: &PhoneNumber) -> String {
        self.k(&format!("nfolders:{number}"))
    }
    pub fn preferences(&self) -> String {
        self.k("prefs")
    }
    pub fn subscribe_all(&self) -> String {
        self.k("suball")
    }
    pub fn threads(&self) -> String {
        self.k("thread")
    }
    pub fn thread_keys(&self) -> String {
        self.k("tkey")
    }
    pub fn location_threads(&self, location: &LocationId) -> String {
        self.k(&format!("lthreads:{location}"))
    }
    pub fn location_unread(&self, location: &LocationId) -> String {
        self.k(&format!("lunread:{location}"))
    }
    pub fn folder_threads(&self, folder: &FolderId) -> String {
        self.k(&format!("fthreads:{folder}"))
    }
    pub fn unread_folders(&self) -> String {
        self.k("funread")
    }
    pub fn messages(&self) -> String {
        self.k("msg")
    }
    pub fn external_ids(&self) -> String {
        self.k("extid")
    }
    pub fn message_seq(&self) -> String {
        self.k("msgseq")
    }
    pub fn thread_messages(&self, thread: &ThreadId) -> String {
        self.k(&format!("tmsgs:{thread}"))
    }
    pub fn photos(&self, folder: &FolderId) -> String {
        self.k(&format!("photos:{folder}"))
    }
}

/// The field of `tkey` for a thread's natural key (`/` occurs in neither part).
pub fn thread_key_field(location: &LocationId, customer: &PhoneNumber) -> String {
    format!("{location}/{customer}")
}

/// An i64 as 20 digits whose text order is the numbers' order (negative ones included).
pub fn sortable(n: i64) -> String {
    format!("{:020}", (n as u64) ^ (1 << 63))
}

/// The inverse of `sortable`.
pub fn unsortable(s: &str) -> Option<i64> {
    (s.len() == 20).then_some(())?;
    s.parse::<u64>().ok().map(|u| (u ^ (1 << 63)) as i64)
}

/// A thread's member in `lthreads`/`lunread`: newest `last_message_at` first, then id.
pub fn recency_member(last_message_at: i64, thread: &str) -> String {
    format!("{}:{thread}", sortable(last_message_at))
}

/// `(last_message_at, thread id)` of a `recency_member`.
pub fn parse_recency_member(m: &str) -> Option<(i64, &str)> {
    let (at, id) = m.split_once(':')?;
    Some((unsortable(at)?, id))
}

/// The exclusive bound of a message cursor `(created_at, seq)` in `tmsgs`: every message
/// member with a smaller pair sorts below it, and the message at the cursor itself above
/// (its member is longer).
pub fn message_bound(created_at: i64, seq: i64) -> String {
    format!("{}:{}", sortable(created_at), sortable(seq))
}

/// A message's member in `tmsgs`: oldest first by `created_at`, then the tenant's counter.
pub fn message_member(created_at: i64, seq: i64, message: &str) -> String {
    format!("{}:{message}", message_bound(created_at, seq))
}

/// `(created_at, seq, message id)` of a `message_member`.
pub fn parse_message_member(m: &str) -> Option<(i64, i64, &str)> {
    let mut parts = m.splitn(3, ':');
    let at = unsortable(parts.next()?)?;
    let seq = unsortable(parts.next()?)?;
    Some((at, seq, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;

    #[test]
    fn names_carry_the_tenant_as_hash_tag_and_channels_parse_back() {
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(log("sb", &t), "sb:{acme}:log");
        assert_eq!(tenant_of_channel("sb", &channel("sb", &t)), Some(t.clone()));
        assert_eq!(tenant_of_channel("sb", "other:{acme}:events"), None);
        let k = TenantKeys::new("sb", &t);
        assert_eq!(
            k.location_threads(&LocationId::parse("L1").unwrap()),
            "sb:{acme}:lthreads:L1"
        );
    }

    #[test]
    fn sortable_numbers_sort_as_text_like_the_numbers() {
        let ns = [i64::MIN, -5, -1, 0, 1, 9, 10, 1_700_000_000_000_000, i64::MAX];
        for w in ns.windows(2) {
            assert!(sortable(w[0]) < sortable(w[1]), "{w:?}");
        }
        for n in ns {
            assert_eq!(unsortable(&sortable(n)), Some(n));
        }
    }

    #[test]
    fn members_sort_by_time_then_tiebreak_and_parse_back() {
        assert!(recency_member(5, "t_b") < recency_member(6, "t_a"));
        assert!(recency_member(5, "t_a") < recency_member(5, "t_b"));
        assert_eq!(parse_recency_member(&recency_member(-3, "t:x")), Some((-3, "t:x")));
        let m = message_member(7, 2, "m_1");
        assert!(message_member(7, 1, "m_9") < m);
        assert!(message_bound(7, 2) < m, "the message at the cursor is not before it");
        assert!(m < message_bound(7, 3));
        assert_eq!(parse_message_member(&m), Some((7, 2, "m_1")));
    }
}
