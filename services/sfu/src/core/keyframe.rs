//! Keyframe policy: a room's publisher is asked for a keyframe when a subscriber joins
//! or needs one, or a relay consumer asks — per video track (simulcast layer), at most
//! once per interval, with later asks coalesced into one sent when the interval has
//! passed. On an edge the ask goes to the parent node, coalesced the same way at each
//! hop, so many edges' joins cost the publisher one keyframe.

use super::peer::PeerRole;
use super::{Core, Output};
use skylark_proto::sfu::v1 as pb;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};

/// Keyframe requests to a publisher are coalesced to at most one per this interval.
pub(super) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);

/// The interval while the worker is near its busy threshold: each keyframe costs a
/// burst as large as ~0.16 s of a stream to every viewer, and at ~95 % busy its fan-out
/// is what delays the viewers' frames, so a ramp of joins must not ask for one every
/// 300 ms. Viewers waiting for their first picture wait up to this much longer.
pub(super) const KEYFRAME_REQUEST_INTERVAL_OVERLOADED: Duration = Duration::from_secs(1);

/// When a room's keyframe requests go out.
#[derive(Debug, Default, Clone)]
pub(super) struct KeyframeThrottle {
    last: Option<Instant>,
    /// An ask arrived within the interval; it goes out at the next timeout after it.
    pending: bool,
}

impl KeyframeThrottle {
    /// Whether a request goes out now, at most one per `interval`; if not, it is held
    /// as pending.
    pub fn ask(&mut self, now: Instant, interval: Duration) -> bool {
        if let Some(last) = self.last {
            if now.duration_since(last) < interval {
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

/// One [`KeyframeThrottle`] per video track (simulcast layer) of a room, so a layer's
/// request never holds back another's. Key `""`: the publisher's tracks are not known
/// yet (no frame so far), ask every layer.
#[derive(Debug, Default, Clone)]
pub(super) struct TrackThrottles(HashMap<String, KeyframeThrottle>);

impl TrackThrottles {
    pub fn ask(&mut self, track: &str, now: Instant, interval: Duration) -> bool {
        self.0
            .entry(track.to_string())
            .or_default()
            .ask(now, interval)
    }

    pub fn cancel(&mut self) {
        self.0.values_mut().for_each(KeyframeThrottle::cancel);
    }

    pub fn new_publisher(&mut self) {
        self.0
            .values_mut()
            .for_each(KeyframeThrottle::new_publisher);
    }

    /// Tracks with a request held for later.
    pub fn pending(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, t)| t.pending())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Which of a room's video tracks need a keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Want {
    /// Every layer (a viewer that follows none yet, a relay consumer asking for all).
    All,
    /// One simulcast layer (a viewer following it).
    Layer(Rid),
    /// One track by id (a relay consumer's request).
    Track(String),
}

impl Want {
    /// The smallest want covering both.
    pub fn merge(self, other: Want) -> Want {
        if self == other {
            self
        } else {
            Want::All
        }
    }
}

impl Core {
    /// While `spaced` (the worker near its busy threshold), a room's keyframe requests
    /// go out at most once per [`KEYFRAME_REQUEST_INTERVAL_OVERLOADED`].
    pub fn space_keyframes(&mut self, spaced: bool) {
        self.keyframes_spaced = spaced;
    }

    /// A keyframe request from a relay consumer for `track_id` (empty: every track).
    pub fn relay_keyframe_request(&mut self, room: &str, track_id: &str, now: Instant) {
        let want = if track_id.is_empty() {
            Want::All
        } else {
            Want::Track(track_id.to_string())
        };
        self.request_keyframe(room, want, now);
    }

    /// Asks the room's publisher for a keyframe on the wanted video layers, as each
    /// layer's throttle allows: a WebRTC publisher gets a PLI, an edge pull's publisher
    /// an [`Output::UpstreamKeyframe`] for its parent node.
    pub(super) fn request_keyframe(&mut self, room_id: &str, want: Want, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(pk) = room.publisher else {
            room.keyframes.cancel();
            return;
        };
        let mut targets: Vec<(String, Option<Rid>)> = room
            .tracks
            .iter()
            .filter(|t| t.kind == pb::TrackKind::Video as i32)
            .filter(|t| match &want {
                Want::All => true,
                Want::Layer(r) => t.rid == r.to_string(),
                Want::Track(id) => &t.track_id == id,
            })
            .map(|t| {
                let rid = (!t.rid.is_empty()).then(|| Rid::from(t.rid.as_str()));
                (t.track_id.clone(), rid)
            })
            .collect();
        if targets.is_empty()
            && !room
                .tracks
                .iter()
                .any(|t| t.kind == pb::TrackKind::Video as i32)
        {
            targets.push((String::new(), None));
        }
        let interval = if self.keyframes_spaced {
            KEYFRAME_REQUEST_INTERVAL_OVERLOADED
        } else {
            KEYFRAME_REQUEST_INTERVAL
        };
        targets.retain(|(track, _)| room.keyframes.ask(track, now, interval));
        if targets.is_empty() {
            return;
        }
        if let Some(local) = self.locals.get(&pk) {
            if local.relayed {
                for (track_id, _) in targets {
                    self.counters.keyframe_requests += 1;
                    self.out.push_back(Output::UpstreamKeyframe {
                        session: local.session.clone(),
                        track_id,
                    });
                }
            }
            return;
        }
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
            for (_, rid) in &targets {
                if let Some(mut w) = p.rtc.writer(mid) {
                    if w.is_request_keyframe_possible(KeyframeRequestKind::Pli)
                        && w.request_keyframe(*rid, KeyframeRequestKind::Pli).is_ok()
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
        let i = KEYFRAME_REQUEST_INTERVAL;
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0, i));
        assert!(!k.ask(t0 + ms(100), i));
        assert!(!k.ask(t0 + ms(200), i));
        assert!(k.pending(), "held for later");
        assert!(k.ask(t0 + ms(300), i));
        assert!(!k.pending());
    }

    #[test]
    fn an_overloaded_interval_holds_asks_longer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let i = KEYFRAME_REQUEST_INTERVAL_OVERLOADED;
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0, i));
        assert!(
            !k.ask(t0 + ms(300), i),
            "300 ms is not enough when overloaded"
        );
        assert!(!k.ask(t0 + ms(900), i));
        assert!(k.pending());
        assert!(k.ask(t0 + ms(1000), i));
    }

    #[test]
    fn a_new_publisher_is_asked_at_once() {
        let t0 = Instant::now();
        let i = KEYFRAME_REQUEST_INTERVAL;
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0, i));
        k.new_publisher();
        assert!(k.ask(t0 + Duration::from_millis(1), i));
    }

    #[test]
    fn cancel_drops_the_pending_ask() {
        let t0 = Instant::now();
        let i = KEYFRAME_REQUEST_INTERVAL;
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0, i));
        assert!(!k.ask(t0, i));
        k.cancel();
        assert!(!k.pending());
    }
}
