//! The packager's in-memory maps keyed by what peers ask for (rooms, recordings,
//! players) are bounded; each caller says what may go when one is full.

use std::collections::HashMap;
use std::hash::Hash;

/// Makes room for one more entry in `map` (at most `max`): drops the entries `stale`
/// picks once the map is full, and says whether there is room now. What to do when
/// there isn't is the caller's: a cache empties itself, a count refuses the newcomer.
pub fn make_room<K: Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    mut stale: impl FnMut(&V) -> bool,
) -> bool {
    if map.len() >= max {
        map.retain(|_, v| !stale(v));
    }
    map.len() < max
}

/// Inserts into a cache of at most `max` entries, emptied when full of fresh ones
/// (entries are cheap to learn again).
pub fn cache_insert<K: Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    stale: impl FnMut(&V) -> bool,
    key: K,
    v: V,
) {
    if !map.contains_key(&key) && !make_room(map, max, stale) {
        map.clear();
    }
    map.insert(key, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_drops_its_stale_entries_first() {
        let mut m: HashMap<u32, u32> = (0..4).map(|k| (k, k)).collect();
        assert!(make_room(&mut m, 4, |v| *v < 2));
        assert_eq!(m.len(), 2);
        assert!(!make_room(&mut m, 2, |_| false), "nothing stale: no room");
        assert_eq!(m.len(), 2);
        assert!(
            make_room(&mut m, 3, |_| true),
            "below the bound: nothing dropped"
        );
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_cache_full_of_fresh_entries_starts_over() {
        let mut m: HashMap<u32, u32> = (0..4).map(|k| (k, k)).collect();
        cache_insert(&mut m, 4, |_| false, 9, 9);
        assert_eq!(m, HashMap::from([(9, 9)]));
        // Replacing a known key never evicts.
        let mut m: HashMap<u32, u32> = (0..4).map(|k| (k, k)).collect();
        cache_insert(&mut m, 4, |_| false, 3, 30);
        assert_eq!(m.len(), 4);
        assert_eq!(m[&3], 30);
        // Stale entries go first.
        cache_insert(&mut m, 4, |v| *v == 0, 7, 7);
        assert_eq!(m.len(), 4);
        assert!(!m.contains_key(&0));
    }
}
