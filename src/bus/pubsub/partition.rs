//! Tenants to partitions, partitions to channel names, channel names to cluster slots: pure
//! functions, the same on every node and every build.
//!
//! - A tenant's partition is FNV-1a (32 bits) over the bytes of its id, modulo [`PARTITIONS`].
//!   Changing it (or `PARTITIONS`) while nodes of the old build run splits the cluster's
//!   traffic: a rolling upgrade would have old and new nodes listen on different channels.
//! - Partition `p`'s channel is `{prefix}:pubsub:{TAG}:{p}`, where `{TAG}` is a hash tag
//!   chosen so that the channel's slot (CRC16 of the tag, modulo 16384) lies in the `p`-th
//!   128-slot stretch: the 128 partitions sit one per 128 slots, so any split of the slots into
//!   contiguous ranges (what `redis-cli --cluster create` and rebalancing make) gives each
//!   primary a share of partitions proportional to its share of slots. The tags are computed
//!   at compile time ([`TAGS`]): the smallest decimal number whose slot lands in the stretch.
//! - A prefix with `{` or `}` would put its own hash tag first: refused ([`check_prefix`]).

use crate::domain::TenantId;

/// The number of partitions tenants are spread over: the bound on the number of channels.
pub const PARTITIONS: u16 = 128;

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Slots per partition stretch.
const STRETCH: u16 = SLOTS / PARTITIONS;

/// The partition of `tenant`: FNV-1a (32 bits, offset basis 2166136261, prime 16777619) over
/// the UTF-8 bytes of its id, modulo [`PARTITIONS`]. Stable across nodes, builds and
/// platforms (no `std::hash`, whose output may change between Rust releases).
pub fn partition_of(tenant: &TenantId) -> u16 {
    let hash = fnv1a(tenant.as_str().as_bytes());
    // The remainder is below PARTITIONS, which fits u16.
    (hash % u32::from(PARTITIONS)) as u16
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The channel of `partition` under `prefix`: `{prefix}:pubsub:{TAG}:{partition}`.
///
/// # Panics
/// If `partition >= PARTITIONS` (a caller's bug: partitions come from [`partition_of`]).
pub fn channel(prefix: &str, partition: u16) -> String {
    let tag = TAGS[usize::from(partition)];
    format!("{prefix}:pubsub:{{{tag}}}:{partition}")
}

/// The partition whose channel (under `prefix`) is `channel`, if it is one.
pub fn partition_of_channel(prefix: &str, channel: &[u8]) -> Option<u16> {
    let rest = channel.strip_prefix(prefix.as_bytes())?.strip_prefix(b":pubsub:{")?;
    let close = rest.iter().position(|b| *b == b'}')?;
    let (tag, rest) = rest.split_at(close);
    let partition: u16 = std::str::from_utf8(rest.strip_prefix(b"}:")?).ok()?.parse().ok()?;
    let expected = TAGS.get(usize::from(partition))?;
    (std::str::from_utf8(tag).ok()?.parse::<u32>().ok()? == *expected).then_some(partition)
}

/// The cluster slot of `partition`'s channel (whatever the prefix: the tag decides).
pub fn slot_of_partition(partition: u16) -> u16 {
    SLOT_OF_TAG[usize::from(partition)]
}

/// Whether `prefix` can be put before a hash-tagged channel name.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(['{', '}']) {
        return Err(format!(
            "redis.key_prefix {prefix:?} contains a brace: it would take the place of the channels' hash tags"
        ));
    }
    Ok(())
}

/// The hash slot of `key` as Redis Cluster computes it: CRC16 (XMODEM) of the key, or of its
/// hash tag (what is between the first `{` and the next `}`, when not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|b| *b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|b| *b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses.
const fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    let mut i = 0;
    while i < bytes.len() {
        crc ^= (bytes[i] as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// The slot of the decimal text of `n` (a tag).
const fn slot_of_number(n: u32) -> u16 {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[9 - len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let (_, text) = digits.split_at(10 - len);
    crc16(text) % SLOTS
}

/// Partition `p`'s tag: the smallest number whose slot is in `[p * 128, (p + 1) * 128)`.
pub const TAGS: [u32; PARTITIONS as usize] = tags();

const SLOT_OF_TAG: [u16; PARTITIONS as usize] = {
    let mut slots = [0u16; PARTITIONS as usize];
    let mut p = 0;
    while p < PARTITIONS as usize {
        slots[p] = slot_of_number(TAGS[p]);
        p += 1;
    }
    slots
};

const fn tags() -> [u32; PARTITIONS as usize] {
    let mut tags = [u32::MAX; PARTITIONS as usize];
    let mut found = 0;
    let mut n: u32 = 0;
    // Bounded: CRC16 spreads consecutive numbers over every slot well within this many.
    while found < PARTITIONS as usize && n < 1_000_000 {
        let stretch = (slot_of_number(n) / STRETCH) as usize;
        if tags[stretch] == u32::MAX {
            tags[stretch] = n;
            found += 1;
        }
        n += 1;
    }
    assert!(found == PARTITIONS as usize, "a tag for every partition");
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn a_tenants_partition_is_fnv1a_of_its_id_and_never_changes() {
        // Fixed values: a change here moves tenants between channels across a rolling upgrade.
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
        assert_eq!(partition_of(&tenant("acme")), (fnv1a(b"acme") % 128) as u16);
        let pinned: Vec<u16> = ["acme", "globex", "initech", "t1", "t2", "umbrella"]
            .iter()
            .map(|t| partition_of(&tenant(t)))
            .collect();
        assert_eq!(pinned, PINNED_PARTITIONS);
    }

    const PINNED_PARTITIONS: [u16; 6] = [47, 14, 97, 86, 67, 101];

    #[test]
    fn tenants_spread_over_every_partition() {
        let mut seen = [0u32; PARTITIONS as usize];
        for i in 0..12_800 {
            seen[usize::from(partition_of(&tenant(&format!("tenant-{i}"))))] += 1;
        }
        // 100 expected per partition; FNV-1a is no worse than ±40% on such ids.
        assert!(seen.iter().all(|n| (60..=140).contains(n)), "{seen:?}");
    }

    #[test]
    fn crc16_and_key_slots_match_redis() {
        // Reference values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        for key in ["a", "switchboard:pubsub:{42}:7", "{x}y", "{}"] {
            // redis-rs's own slot computation, through the only door it leaves open.
            use redis::cluster_routing::{Route, SlotAddr};
            assert_eq!(
                Route::new(key_slot(key.as_bytes()), SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "{key}"
            );
        }
    }

    #[test]
    fn each_partition_owns_one_slot_of_its_own_stretch() {
        for p in 0..PARTITIONS {
            let name = channel("switchboard", p);
            let slot = key_slot(name.as_bytes());
            assert_eq!(slot, slot_of_partition(p), "{name}");
            assert_eq!(slot / STRETCH, p, "{name} is in slot {slot}");
            assert_eq!(
                slot,
                key_slot(channel("other:prefix", p).as_bytes()),
                "the prefix does not matter"
            );
        }
        assert_eq!(&TAGS[..4], &PINNED_TAGS);
        assert_eq!(channel("sb", 3), format!("sb:pubsub:{{{}}}:3", PINNED_TAGS[3]));
    }

    const PINNED_TAGS: [u32; 4] = [14, 10, 100, 18];

    /// The slot ranges `redis-cli --cluster create` gives `shards` primaries: `16384 / shards`
    /// slots each, rounded (clusterManagerCommandCreate in redis-cli.c).
    fn equal_ranges(shards: u32) -> Vec<(u32, u32)> {
        let per = f64::from(SLOTS) / f64::from(shards);
        let (mut first, mut cursor, mut ranges) = (0u32, 0f64, Vec::new());
        for i in 0..shards {
            let mut last = (cursor + per - 1.0).round() as u32;
            if last >= u32::from(SLOTS) || i == shards - 1 {
                last = u32::from(SLOTS) - 1;
            }
            ranges.push((first, last));
            first = last + 1;
            cursor += per;
        }
        ranges
    }

    /// Partitions per primary of `equal_ranges(shards)`.
    fn spread(shards: u32) -> Vec<u32> {
        let ranges = equal_ranges(shards);
        let mut per = vec![0; ranges.len()];
        for p in 0..PARTITIONS {
            let slot = u32::from(slot_of_partition(p));
            // unwrap: the ranges cover every slot.
            let shard = ranges.iter().position(|(a, b)| (*a..=*b).contains(&slot)).unwrap();
            per[shard] += 1;
        }
        per
    }

    #[test]
    fn partitions_spread_evenly_over_equal_shards() {
        for shards in [3, 6] {
            let per = spread(shards);
            let ideal = u32::from(PARTITIONS) / shards;
            assert!(per.iter().all(|n| n.abs_diff(ideal) <= 1), "{shards} shards: {per:?}");
        }
        assert_eq!(equal_ranges(3), vec![(0, 5460), (5461, 10922), (10923, 16383)]);
        assert_eq!(spread(3), vec![43, 42, 43]);
        assert_eq!(spread(6), vec![22, 21, 21, 21, 21, 22]);
    }

    #[test]
    fn channels_name_their_partition_and_nothing_else_does() {
        for p in [0, 1, 77, 127] {
            assert_eq!(partition_of_channel("sb", channel("sb", p).as_bytes()), Some(p));
            assert_eq!(partition_of_channel("other", channel("sb", p).as_bytes()), None);
        }
        assert_eq!(partition_of_channel("sb", b"sb:pubsub:{1}:128"), None);
        assert_eq!(partition_of_channel("sb", b"sb:pubsub:{999999}:3"), None, "wrong tag");
        assert_eq!(partition_of_channel("sb", b"sb:acme"), None);
        assert_eq!(partition_of_channel("sb", b"sb:pubsub:{"), None);
    }

    #[test]
    fn a_prefix_with_braces_is_refused() {
        assert!(check_prefix("switchboard").is_ok());
        assert!(check_prefix("team:a").is_ok());
        assert!(check_prefix("{team}").is_err());
        assert!(check_prefix("team}").is_err());
    }
}
