//! A bounded memo: what a pure and dear function of a short string (parsing a phone number,
//! verifying a token) said of the inputs it saw lately, so that an input seen again costs a
//! lookup. Bounded in entries and in key bytes: a longer key is never kept, and when full
//! the memo forgets everything and starts again, so a stream of inputs never seen costs no
//! more than without it, and never more memory than the bound.

use dashmap::DashMap;

/// Inputs lately seen and their values; shared by reference (`Arc`) where clones must agree.
#[derive(Debug)]
pub struct Memo<V> {
    entries: usize,
    key_bytes: usize,
    map: DashMap<Box<str>, V>,
}

impl<V: Clone> Memo<V> {
    /// Keeps at most `entries` keys of at most `key_bytes` bytes each.
    pub fn new(entries: usize, key_bytes: usize) -> Self {
        Memo {
            entries,
            key_bytes,
            map: DashMap::new(),
        }
    }

    /// The value kept for `key`, if any.
    pub fn get(&self, key: &str) -> Option<V> {
        self.map.get(key).map(|v| v.clone())
    }

    /// Keeps `value` for `key`, unless the key is too long; forgets everything first if full
    /// (and the key is new).
    pub fn remember(&self, key: &str, value: &V) {
        if key.len() > self.key_bytes {
            return;
        }
        if self.map.len() >= self.entries && !self.map.contains_key(key) {
            self.map.clear();
        }
        self.map.insert(key.into(), value.clone());
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_what_it_was_told_within_its_bounds() {
        let memo = Memo::new(3, 4);
        memo.remember("a", &1);
        memo.remember("long!", &2);
        assert_eq!(
            (memo.get("a"), memo.get("long!")),
            (Some(1), None),
            "a long key is not kept"
        );
        memo.remember("b", &2);
        memo.remember("c", &3);
        assert_eq!(memo.len(), 3);
        memo.remember("c", &3);
        assert_eq!(memo.len(), 3, "a key kept already does not empty a full memo");
        memo.remember("d", &4);
        assert_eq!(memo.len(), 1, "full: everything forgotten, then the new key kept");
        assert_eq!((memo.get("a"), memo.get("d")), (None, Some(4)));
        memo.remember("d", &5);
        assert_eq!(memo.get("d"), Some(5));
    }
}
