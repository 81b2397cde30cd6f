//! Which worker of the node a core is. A node runs one core per worker behind one
//! UDP port (`SO_REUSEPORT`): the kernel picks the socket by the sender's address, not
//! by session, so a datagram may reach a worker that does not hold its session. Every
//! session id and every ICE ufrag a core hands out carries its worker's index, so any
//! worker can tell whose a STUN check, a PATCH or a DELETE is without shared state.

/// This core's place among the node's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    pub index: u8,
    pub count: u8,
}

/// Most workers a node runs: one ufrag character names the worker.
pub const MAX_WORKERS: usize = UFRAG_CHARS.len();

/// ICE ufrag characters (RFC 8839 `ice-char`), one per worker index.
const UFRAG_CHARS: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/";

/// Bits of a session key above the per-core counter: the worker index.
const KEY_SHIFT: u32 = 56;

impl Default for WorkerSlot {
    /// A node's only worker.
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl WorkerSlot {
    /// The first session key of this worker; ids print it first, in hex.
    pub(super) fn first_key(self) -> u64 {
        (u64::from(self.index) << KEY_SHIFT) + 1
    }

    /// `ufrag` with its first character naming this worker.
    pub(super) fn stamp_ufrag(self, ufrag: &str) -> String {
        let mark = char::from(UFRAG_CHARS[usize::from(self.index) % MAX_WORKERS]);
        let mut out = String::with_capacity(ufrag.len().max(4));
        out.push(mark);
        out.extend(ufrag.chars().skip(1));
        while out.len() < 4 {
            out.push('0');
        }
        out
    }

    pub fn is_alone(self) -> bool {
        self.count <= 1
    }
}

/// The worker whose ufrag this is, if it names one of `count` workers.
pub(super) fn ufrag_worker(ufrag: &str, count: u8) -> Option<u8> {
    let first = *ufrag.as_bytes().first()?;
    let index = UFRAG_CHARS.iter().position(|c| *c == first)?;
    u8::try_from(index).ok().filter(|i| *i < count)
}

/// The worker whose session a STUN Binding request names (by the ufrag in its
/// USERNAME), if it is one and names one of `count` workers: how an ICE-TCP connection
/// finds its worker from its first frame.
pub fn stun_worker(d: &[u8], count: u8) -> Option<u8> {
    match super::stun::classify(d) {
        super::stun::Kind::Request { local_ufrag } => ufrag_worker(local_ufrag, count),
        _ => None,
    }
}

/// The worker holding session `id` (as printed by the core: key in 16 hex digits
/// first), if the id is well formed.
pub fn session_worker(id: &str) -> Option<u8> {
    let key = u64::from_str_radix(id.get(..16)?, 16).ok()?;
    u8::try_from(key >> KEY_SHIFT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufrags_and_session_keys_name_their_worker() {
        for index in [0u8, 1, 9, 10, 35, 63] {
            let slot = WorkerSlot { index, count: 64 };
            let ufrag = slot.stamp_ufrag("Xy7Qabcdefghijkl");
            assert_eq!(ufrag.len(), 16);
            assert_eq!(ufrag[1..], "Xy7Qabcdefghijkl"[1..]);
            assert_eq!(ufrag_worker(&ufrag, 64), Some(index));
            let id = format!("{:016x}{:016x}", slot.first_key() + 41, 7u64);
            assert_eq!(session_worker(&id), Some(index));
        }
    }

    #[test]
    fn strangers_name_no_worker() {
        assert_eq!(ufrag_worker("", 2), None);
        assert_eq!(ufrag_worker("5abc", 2), None, "index past the worker count");
        assert_eq!(ufrag_worker("-abc", 64), None);
        assert_eq!(session_worker("zz"), None);
        assert_eq!(session_worker("not-hex-at-all-xxxxxxxx"), None);
        assert_eq!(WorkerSlot::default().stamp_ufrag("ab"), "0b00");
    }
}
