//! The latest group of pictures of a stream: its last keyframe and every item after it,
//! so a consumer that joins mid-GOP can start at once instead of waiting for the
//! encoder's next keyframe (RTMP sources can't be asked for one). Bounded in items,
//! bytes and time span: a GOP past any bound is dropped whole until the next keyframe,
//! and the consumer waits as it would without a cache.
//!
//! ```
//! use skylark_media::gop::{GopCache, GopLimits};
//! let mut gop = GopCache::new(GopLimits::default());
//! gop.push("delta before any keyframe", 10, 0, false); // not kept: no keyframe yet
//! gop.push("key", 5_000, 1_000, true);
//! gop.push("delta", 800, 1_033, false);
//! assert_eq!(gop.items(), &["key", "delta"]);
//! gop.push("next key", 5_000, 3_000, true); // a new GOP replaces the old one
//! assert_eq!(gop.items(), &["next key"]);
//! ```

/// Bounds of one cached GOP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopLimits {
    /// Items (frames, tags) kept at most.
    pub max_items: usize,
    /// Bytes (as the caller counts them) kept at most.
    pub max_bytes: usize,
    /// Time from the keyframe to the newest item, in the caller's milliseconds.
    pub max_span_ms: u64,
}

impl Default for GopLimits {
    /// 10 s, 600 items (10 s of 30 fps video with audio), 4 MiB: more than a sane
    /// encoder's GOP at streaming bitrates, little enough to hold per room.
    fn default() -> Self {
        Self {
            max_items: 600,
            max_bytes: 4 << 20,
            max_span_ms: 10_000,
        }
    }
}

/// The items since the stream's last keyframe (see the module doc).
#[derive(Debug, Clone)]
pub struct GopCache<T> {
    limits: GopLimits,
    items: Vec<T>,
    bytes: usize,
    start_ms: u64,
    /// The current GOP went past a bound: keep nothing until the next keyframe.
    overflowed: bool,
}

impl<T> GopCache<T> {
    /// An empty cache.
    pub fn new(limits: GopLimits) -> Self {
        Self {
            limits,
            items: Vec::new(),
            bytes: 0,
            start_ms: 0,
            overflowed: false,
        }
    }

    /// Adds an item of `bytes` at `ts_ms`; a keyframe starts a new GOP.
    pub fn push(&mut self, item: T, bytes: usize, ts_ms: u64, keyframe: bool) {
        if keyframe {
            self.clear();
            self.start_ms = ts_ms;
        } else if self.items.is_empty() || self.overflowed {
            return;
        }
        let over = self.items.len() >= self.limits.max_items
            || self.bytes.saturating_add(bytes) > self.limits.max_bytes
            || ts_ms.saturating_sub(self.start_ms) > self.limits.max_span_ms;
        if over {
            // A partial GOP would still start at the keyframe, but a consumer given it
            // would stall at its end until the next one: drop it, nobody waits longer.
            self.clear();
            self.overflowed = true;
            return;
        }
        self.bytes += bytes;
        self.items.push(item);
    }

    /// The cached GOP, keyframe first; empty when there is none.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets the GOP (a new publisher, a gap in the stream).
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
        self.overflowed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GopLimits {
        GopLimits {
            max_items: 4,
            max_bytes: 100,
            max_span_ms: 1_000,
        }
    }

    #[test]
    fn starts_at_a_keyframe_and_restarts_at_the_next() {
        let mut g = GopCache::new(small());
        g.push(1, 10, 0, false);
        assert!(g.items().is_empty(), "no keyframe yet");
        g.push(2, 10, 10, true);
        g.push(3, 10, 20, false);
        assert_eq!(g.items(), &[2, 3]);
        assert_eq!(g.bytes(), 20);
        g.push(4, 10, 30, true);
        assert_eq!(g.items(), &[4]);
        assert_eq!(g.bytes(), 10);
    }

    #[test]
    fn a_gop_past_a_bound_is_dropped_until_the_next_keyframe() {
        for (bytes, step_ms) in [(10, 10), (60, 10), (10, 600)] {
            let mut g = GopCache::new(small());
            g.push(0, bytes, 0, true);
            for i in 1..6 {
                g.push(i, bytes, i as u64 * step_ms, false);
            }
            assert!(g.items().is_empty(), "{bytes} B every {step_ms} ms");
            assert_eq!(g.bytes(), 0);
            g.push(9, 10, 10_000, true);
            assert_eq!(g.items(), &[9], "the next keyframe starts over");
        }
    }

    #[test]
    fn clear_forgets_the_gop() {
        let mut g = GopCache::new(small());
        g.push(1, 10, 0, true);
        g.clear();
        g.push(2, 10, 10, false);
        assert!(g.items().is_empty());
    }
}
