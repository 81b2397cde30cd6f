//! Putting RTP packets back in sequence-number order, with bounded waiting.

use std::collections::{BTreeMap, VecDeque};

use super::SeqUnwrapper;

/// After this many late packets in a row the sender is assumed to have jumped
/// its sequence numbers backwards (a restart), and the buffer resynchronizes
/// instead of dropping the stream forever.
const LATE_RESYNC: u32 = 64;

/// How a pushed packet was taken, see [`ReorderBuffer::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The expected packet: it (and any buffered successors) can be popped.
    InOrder,
    /// Ahead of a gap: held until the gap fills or the window overflows.
    Buffered,
    /// Older than what was already released, or a duplicate: dropped.
    Late,
    /// A duplicate of a packet still held: dropped.
    Duplicate,
}

/// What comes out of a [`ReorderBuffer`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ordered<T> {
    /// The next packet, with its unwrapped sequence number.
    Packet {
        /// Unwrapped (64-bit) sequence number.
        seq: u64,
        /// What was pushed with it.
        item: T,
    },
    /// `count` packets starting at `first` were given up as lost.
    Lost {
        /// Unwrapped sequence number of the first missing packet.
        first: u64,
        /// How many are missing.
        count: u64,
    },
    /// The sequence numbers jumped backwards for good (sender restart); what
    /// follows does not continue what came before.
    Reset,
}

/// A sans-IO reorder buffer keyed by RTP sequence number.
///
/// Packets after a gap are held until the gap is filled, or until more than
/// `window` packets wait, at which point the gap is declared lost. A window of 0
/// never waits: every gap is a loss at once. Callers that also want a time limit
/// call [`ReorderBuffer::flush`] from their own timer.
///
/// ```
/// use skylark_media::rtp::{Ordered, ReorderBuffer};
///
/// let mut buf = ReorderBuffer::new(4);
/// buf.push(10, "a");
/// buf.push(12, "c"); // held: 11 is missing
/// buf.push(11, "b");
/// let seqs: Vec<_> = std::iter::from_fn(|| buf.pop()).collect();
/// assert_eq!(seqs, [
///     Ordered::Packet { seq: 10, item: "a" },
///     Ordered::Packet { seq: 11, item: "b" },
///     Ordered::Packet { seq: 12, item: "c" },
/// ]);
/// ```
#[derive(Debug, Clone)]
pub struct ReorderBuffer<T> {
    unwrapper: SeqUnwrapper,
    /// The next sequence number to release.
    next: Option<u64>,
    pending: BTreeMap<u64, T>,
    window: usize,
    late_in_a_row: u32,
    out: VecDeque<Ordered<T>>,
}

impl<T> ReorderBuffer<T> {
    /// A buffer that holds at most `window` packets behind a gap.
    pub fn new(window: usize) -> Self {
        Self {
            unwrapper: SeqUnwrapper::new(),
            next: None,
            pending: BTreeMap::new(),
            window,
            late_in_a_row: 0,
            out: VecDeque::new(),
        }
    }

    /// Takes one packet. Pop the results with [`ReorderBuffer::pop`] after each push.
    pub fn push(&mut self, seq: u16, item: T) -> Arrival {
        let ext = self.unwrapper.unwrap(seq);
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            self.late_in_a_row += 1;
            if self.late_in_a_row < LATE_RESYNC {
                return Arrival::Late;
            }
            self.late_in_a_row = 0;
            self.flush();
            self.out.push_back(Ordered::Reset);
            self.next = Some(ext);
            return self.push_in_order(ext, item);
        }
        self.late_in_a_row = 0;
        if ext == next {
            return self.push_in_order(ext, item);
        }
        if self.pending.contains_key(&ext) {
            return Arrival::Duplicate;
        }
        self.pending.insert(ext, item);
        if self.pending.len() > self.window {
            self.skip_gap();
        }
        Arrival::Buffered
    }

    /// The next packet or loss report, in sequence order.
    pub fn pop(&mut self) -> Option<Ordered<T>> {
        self.out.pop_front()
    }

    /// Gives up on every gap now and releases all held packets.
    pub fn flush(&mut self) {
        while !self.pending.is_empty() {
            self.skip_gap();
        }
    }

    /// Number of packets held behind a gap.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The unwrapped sequence number expected next, once a packet has been seen.
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    fn push_in_order(&mut self, ext: u64, item: T) -> Arrival {
        self.out.push_back(Ordered::Packet { seq: ext, item });
        self.next = Some(ext + 1);
        self.drain_ready();
        Arrival::InOrder
    }

    /// Declares the first gap lost and releases what follows it.
    fn skip_gap(&mut self) {
        let Some((&first_held, _)) = self.pending.first_key_value() else {
            return;
        };
        let next = self.next.unwrap_or(first_held);
        if first_held > next {
            self.out.push_back(Ordered::Lost {
                first: next,
                count: first_held - next,
            });
        }
        self.next = Some(first_held);
        self.drain_ready();
    }

    fn drain_ready(&mut self) {
        while let Some(next) = self.next {
            let Some(item) = self.pending.remove(&next) else {
                break;
            };
            self.out.push_back(Ordered::Packet { seq: next, item });
            self.next = Some(next + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<T>(buf: &mut ReorderBuffer<T>) -> Vec<Ordered<T>> {
        std::iter::from_fn(|| buf.pop()).collect()
    }

    fn pkt(seq: u64) -> Ordered<u64> {
        Ordered::Packet { seq, item: seq }
    }

    #[test]
    fn in_order_passes_straight_through() {
        let mut buf = ReorderBuffer::new(4);
        for s in 0..5u16 {
            assert_eq!(buf.push(s, u64::from(s)), Arrival::InOrder);
        }
        assert_eq!(drain(&mut buf), (0..5).map(pkt).collect::<Vec<_>>());
    }

    #[test]
    fn swapped_pair_is_restored_across_the_wrap() {
        let mut buf = ReorderBuffer::new(4);
        buf.push(65534, 65534);
        assert_eq!(buf.push(0, 65536), Arrival::Buffered);
        assert_eq!(buf.push(65535, 65535), Arrival::InOrder);
        assert_eq!(drain(&mut buf), vec![pkt(65534), pkt(65535), pkt(65536)]);
    }

    #[test]
    fn gap_is_lost_when_the_window_overflows() {
        let mut buf = ReorderBuffer::new(2);
        buf.push(1, 1);
        buf.push(3, 3);
        buf.push(4, 4);
        assert_eq!(drain(&mut buf), vec![pkt(1)]);
        buf.push(5, 5);
        assert_eq!(
            drain(&mut buf),
            vec![Ordered::Lost { first: 2, count: 1 }, pkt(3), pkt(4), pkt(5)]
        );
        // The lost packet arriving afterwards is late.
        assert_eq!(buf.push(2, 2), Arrival::Late);
    }

    #[test]
    fn window_zero_reports_loss_at_once() {
        let mut buf = ReorderBuffer::new(0);
        buf.push(1, 1);
        buf.push(4, 4);
        assert_eq!(
            drain(&mut buf),
            vec![pkt(1), Ordered::Lost { first: 2, count: 2 }, pkt(4)]
        );
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut buf = ReorderBuffer::new(4);
        buf.push(1, 1);
        buf.push(3, 3);
        assert_eq!(buf.push(3, 3), Arrival::Duplicate);
        assert_eq!(buf.push(1, 1), Arrival::Late);
        buf.push(2, 2);
        assert_eq!(drain(&mut buf), vec![pkt(1), pkt(2), pkt(3)]);
    }

    #[test]
    fn flush_releases_everything() {
        let mut buf = ReorderBuffer::new(10);
        buf.push(1, 1);
        buf.push(3, 3);
        buf.push(6, 6);
        buf.flush();
        assert_eq!(
            drain(&mut buf),
            vec![
                pkt(1),
                Ordered::Lost { first: 2, count: 1 },
                pkt(3),
                Ordered::Lost { first: 4, count: 2 },
                pkt(6)
            ]
        );
        assert_eq!(buf.pending(), 0);
    }

    #[test]
    fn a_backwards_jump_resynchronizes() {
        let mut buf = ReorderBuffer::new(0);
        for s in 20_000..20_010u16 {
            buf.push(s, 0u8);
        }
        drain(&mut buf);
        // The sender restarts 10 000 packets back and keeps going from there.
        let mut arrivals = Vec::new();
        for s in 10_000..10_000 + LATE_RESYNC as u16 + 2 {
            arrivals.push(buf.push(s, 1u8));
        }
        assert!(arrivals[..LATE_RESYNC as usize - 1]
            .iter()
            .all(|a| *a == Arrival::Late));
        assert_eq!(arrivals[LATE_RESYNC as usize - 1], Arrival::InOrder);
        let out = drain(&mut buf);
        assert_eq!(out[0], Ordered::Reset);
        assert_eq!(out.len(), 4);
    }
}
