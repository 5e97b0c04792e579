//! Dictionary strings already read, by hash: decoding a term otherwise costs a RocksDB read of
//! `id2str` every time (query results, `ORDER BY` comparisons, a transaction's own reads).
//!
//! A string's hash determines its dictionary entry, and entries are never rewritten with another
//! value, so a cached entry can never be stale; the cache needs no invalidation. It is
//! direct-mapped (one slot per hash's low bits, a newer string evicts the older): bounded
//! memory, one uncontended lock per lookup.

use crate::storage::numeric_encoder::StrHash;
use std::sync::Mutex;

/// Slots of the cache (a power of two).
const SLOTS: usize = 1 << 17;

type Slot = Mutex<Option<(StrHash, Box<str>)>>;

pub struct StrCache {
    slots: Box<[Slot]>,
}

impl StrCache {
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, key: &StrHash) -> &Slot {
        // The low bits of the string's SipHash: uniform, so any slice of them spreads the slots.
        let hash = u128::from_be_bytes(key.to_be_bytes());
        &self.slots[(hash % SLOTS as u128) as usize]
    }

    /// The string of `key`, if cached (a poisoned slot is a miss).
    pub fn get(&self, key: &StrHash) -> Option<String> {
        let slot = self.slot(key).lock().ok()?;
        match &*slot {
            Some((k, v)) if k == key => Some(String::from(&**v)),
            _ => None,
        }
    }

    /// Remembers the string of `key`, evicting what its slot held.
    pub fn put(&self, key: StrHash, value: &str) {
        if let Ok(mut slot) = self.slot(&key).lock() {
            *slot = Some((key, value.into()));
        }
    }
}
