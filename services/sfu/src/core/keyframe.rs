//! Keyframe policy: a room's publisher is asked for a keyframe when a subscriber joins
//! or needs one, or a relay consumer asks — at most once per interval, with later asks
//! coalesced into one sent when the interval has passed.

use super::peer::PeerRole;
use super::Core;
use skylark_proto::sfu::v1 as pb;
use std::time::{Duration, Instant};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};

/// Keyframe requests to a publisher are coalesced to at most one per this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);

/// When a room's keyframe requests go out.
#[derive(Debug, Default, Clone)]
pub(super) struct KeyframeThrottle {
    last: Option<Instant>,
    /// An ask arrived within the interval; it goes out at the next timeout after it.
    pending: bool,
}

impl KeyframeThrottle {
    /// Whether a request goes out now; if not, it is held as pending.
    pub fn ask(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            if now.duration_since(last) < KEYFRAME_REQUEST_INTERVAL {
                self.pending = true;
                return false;
            }
        }
        self.last = Some(now);
        self.pending = false;
        true
    }

    /// Nobody to ask (no publisher): drop what is pending.
    pub fn cancel(&mut self) {
        self.pending = false;
    }

    /// A new publisher may be asked at once.
    pub fn new_publisher(&mut self) {
        self.last = None;
    }

    pub fn pending(&self) -> bool {
        self.pending
    }
}

impl Core {
    /// A keyframe request from a relay consumer.
    pub fn relay_keyframe_request(&mut self, room: &str, now: Instant) {
        self.request_keyframe(room, now);
    }

    /// Asks the room's publisher for a keyframe on every video layer, as the room's
    /// throttle allows.
    pub(super) fn request_keyframe(&mut self, room_id: &str, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(pk) = room.publisher else {
            room.keyframes.cancel();
            return;
        };
        if !room.keyframes.ask(now) {
            return;
        }
        let rids: Vec<Option<Rid>> = room
            .tracks
            .iter()
            .filter(|t| t.kind == pb::TrackKind::Video as i32)
            .map(|t| (!t.rid.is_empty()).then(|| Rid::from(t.rid.as_str())))
            .collect();
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        if !p.connected {
            return;
        }
        let PeerRole::Publisher { tracks } = &p.role else {
            return;
        };
        let mids: Vec<Mid> = tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .map(|t| t.mid)
            .collect();
        for mid in mids {
            let layers = if rids.is_empty() {
                vec![None]
            } else {
                rids.clone()
            };
            for rid in layers {
                if let Some(mut w) = p.rtc.writer(mid) {
                    if w.is_request_keyframe_possible(KeyframeRequestKind::Pli)
                        && w.request_keyframe(rid, KeyframeRequestKind::Pli).is_ok()
                    {
                        self.counters.keyframe_requests += 1;
                    }
                }
            }
        }
        self.drain(pk, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval_and_the_rest_coalesced() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0));
        assert!(!k.ask(t0 + ms(100)));
        assert!(!k.ask(t0 + ms(200)));
        assert!(k.pending(), "held for later");
        assert!(k.ask(t0 + ms(300)));
        assert!(!k.pending());
    }

    #[test]
    fn a_new_publisher_is_asked_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0));
        k.new_publisher();
        assert!(k.ask(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn cancel_drops_the_pending_ask() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0));
        assert!(!k.ask(t0));
        k.cancel();
        assert!(!k.pending());
    }
}
