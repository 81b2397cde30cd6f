//! Maps keyed by the core's own session keys. They are numbers the core hands out
//! (`WorkerSlot::first_key` upwards), never a peer's input, so they need no
//! flood-resistant hash: one multiply replaces SipHash on the lookups every forwarded
//! frame makes (one per subscriber per frame and per drain).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hash map from session key to `V`.
pub(super) type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Fibonacci hashing of a `u64`, high half folded into the low one: the table takes
/// its bucket from the low bits and its tag from the high ones.
#[derive(Default, Clone, Copy)]
pub(super) struct KeyHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; bytes are folded in for completeness.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(K);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_over_buckets_and_tags() {
        let mut m: KeyMap<u64> = KeyMap::default();
        let base = 3u64 << 56;
        for k in 0..10_000 {
            m.insert(base + k, k);
        }
        assert!((0..10_000).all(|k| m.get(&(base + k)) == Some(&k)));
        // Low bits (bucket) of consecutive keys differ; so do the top 7 (tag).
        let h = |k: u64| {
            let mut s = KeyHasher::default();
            s.write_u64(k);
            s.finish()
        };
        let buckets: std::collections::HashSet<u64> =
            (0..1024).map(|k| h(base + k) & 1023).collect();
        assert!(buckets.len() > 600, "{}", buckets.len());
        let tags: std::collections::HashSet<u64> = (0..1024).map(|k| h(base + k) >> 57).collect();
        assert!(tags.len() > 100, "{}", tags.len());
    }
}
