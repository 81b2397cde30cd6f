//! Totals for `/metrics` and `Stats`, and the read-only views the shell exports.

use super::datagram::DropReason;
use super::peer::PeerRole;
use super::Core;
use skylark_proto::sfu::v1 as pb;
use std::collections::HashMap;

/// Totals since start, for `/metrics` and `Stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams no session took, for any [`DropReason`].
    pub datagrams_unmatched: u64,
    /// Of those: not STUN, from an address no session has used.
    pub dropped_unknown_source: u64,
    /// STUN naming no session here.
    pub dropped_unknown_ufrag: u64,
    /// Refused by the session they map to.
    pub dropped_rejected: u64,
    /// Unparseable.
    pub dropped_malformed: u64,
    /// Sessions dropped because ICE/DTLS did not complete within the connect timeout.
    pub connect_timeouts: u64,
    /// Keyframe requests the SFU sent to publishers (coalesced).
    pub keyframe_requests: u64,
    /// RTP packets received from publishers / sent to subscribers (incl. resends).
    pub packets_in: u64,
    pub packets_out: u64,
    /// NACKs: sent to publishers for lost packets / received from subscribers.
    pub nacks_to_publishers: u64,
    pub nacks_from_subscribers: u64,
    /// PLIs received from subscribers (each may trigger one coalesced request upstream).
    pub plis_from_subscribers: u64,
    /// Datagrams handed to the worker holding their session (see `slot`).
    pub datagrams_steered: u64,
    /// Subscribers moved to another simulcast layer (their choice or their link's).
    pub layer_switches: u64,
}

impl std::ops::AddAssign for Counters {
    /// A node's totals are its workers' summed.
    fn add_assign(&mut self, o: Self) {
        let Counters {
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            datagrams_in,
            datagrams_out,
            datagrams_unmatched,
            dropped_unknown_source,
            dropped_unknown_ufrag,
            dropped_rejected,
            dropped_malformed,
            connect_timeouts,
            keyframe_requests,
            packets_in,
            packets_out,
            nacks_to_publishers,
            nacks_from_subscribers,
            plis_from_subscribers,
            layer_switches,
            datagrams_steered,
        } = o;
        self.frames_in += frames_in;
        self.frames_out += frames_out;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.datagrams_in += datagrams_in;
        self.datagrams_out += datagrams_out;
        self.datagrams_unmatched += datagrams_unmatched;
        self.dropped_unknown_source += dropped_unknown_source;
        self.dropped_unknown_ufrag += dropped_unknown_ufrag;
        self.dropped_rejected += dropped_rejected;
        self.dropped_malformed += dropped_malformed;
        self.connect_timeouts += connect_timeouts;
        self.keyframe_requests += keyframe_requests;
        self.packets_in += packets_in;
        self.packets_out += packets_out;
        self.nacks_to_publishers += nacks_to_publishers;
        self.nacks_from_subscribers += nacks_from_subscribers;
        self.plis_from_subscribers += plis_from_subscribers;
        self.layer_switches += layer_switches;
        self.datagrams_steered += datagrams_steered;
    }
}

impl Counters {
    pub(super) fn drop(&mut self, reason: DropReason) {
        self.datagrams_unmatched += 1;
        *match reason {
            DropReason::UnknownSource => &mut self.dropped_unknown_source,
            DropReason::UnknownUfrag => &mut self.dropped_unknown_ufrag,
            DropReason::Rejected => &mut self.dropped_rejected,
            DropReason::Malformed => &mut self.dropped_malformed,
        } += 1;
    }

    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::UnknownSource => self.dropped_unknown_source,
            DropReason::UnknownUfrag => self.dropped_unknown_ufrag,
            DropReason::Rejected => self.dropped_rejected,
            DropReason::Malformed => self.dropped_malformed,
        }
    }

    /// Growth of one incoming (publisher) stream.
    pub(super) fn add_ingress(&mut self, d: StreamTotals) {
        self.packets_in += d.packets;
        self.nacks_to_publishers += d.nacks;
    }

    /// Growth of one outgoing (subscriber) stream.
    pub(super) fn add_egress(&mut self, d: StreamTotals) {
        self.packets_out += d.packets;
        self.nacks_from_subscribers += d.nacks;
        self.plis_from_subscribers += d.plis;
    }
}

/// str0m reports running totals per stream; the last ones seen turn them into deltas.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamTotals {
    pub packets: u64,
    pub nacks: u64,
    pub plis: u64,
}

impl StreamTotals {
    /// Takes the latest totals; returns how much each grew since the previous ones.
    pub fn advance(&mut self, latest: StreamTotals) -> StreamTotals {
        let growth = StreamTotals {
            packets: latest.packets.saturating_sub(self.packets),
            nacks: latest.nacks.saturating_sub(self.nacks),
            plis: latest.plis.saturating_sub(self.plis),
        };
        *self = latest;
        growth
    }
}

impl Core {
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes received so far per (room, track) of live rooms.
    pub fn track_bytes(&self) -> &HashMap<(String, String), u64> {
        &self.track_bytes
    }

    /// Viewers that don't cost their share yet: still connecting, or waiting for the
    /// first keyframe of a room that has video. A worker's cost per viewer is measured
    /// over the viewers it forwards to (admission, `Meter::projected_busy`).
    pub fn waiting_viewers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| match &p.role {
                PeerRole::Subscriber(st) => {
                    !p.connected
                        || (st.video_mid.is_some()
                            && st.gate.wants_keyframe
                            && st.gate.layer.is_none()
                            && self.rooms.get(&p.room).is_some_and(|r| {
                                r.tracks
                                    .iter()
                                    .any(|t| t.kind == pb::TrackKind::Video as i32)
                            }))
                }
                _ => false,
            })
            .count()
    }

    /// Sessions by role (local publishers count as publishers).
    pub fn session_counts(&self) -> (usize, usize) {
        let publishers = self
            .peers
            .values()
            .filter(|p| matches!(p.role, PeerRole::Publisher { .. }))
            .count();
        // An edge pull is no client's session: not counted.
        let locals = self.locals.values().filter(|l| !l.relayed).count();
        (publishers + locals, self.peers.len() - publishers)
    }

    pub fn room_stats(&self) -> Vec<pb::RoomStats> {
        let mut v: Vec<_> = self
            .rooms
            .iter()
            .map(|(id, r)| pb::RoomStats {
                room_id: id.clone(),
                live: r.publisher.is_some(),
                subscribers: r.subscribers.len() as u32,
                tracks: r.tracks.len() as u32,
            })
            .collect();
        v.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        v
    }

    /// Mean receive loss over publishers (0–1), for the loss gauge.
    pub fn publisher_loss(&self) -> f32 {
        let losses: Vec<f32> = self
            .peers
            .values()
            .filter(|p| matches!(p.role, PeerRole::Publisher { .. }))
            .map(|p| p.loss)
            .collect();
        if losses.is_empty() {
            0.0
        } else {
            losses.iter().sum::<f32>() / losses.len() as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_totals_become_deltas() {
        let mut t = StreamTotals::default();
        let d = t.advance(StreamTotals {
            packets: 10,
            nacks: 2,
            plis: 1,
        });
        assert_eq!((d.packets, d.nacks, d.plis), (10, 2, 1));
        let d = t.advance(StreamTotals {
            packets: 15,
            nacks: 2,
            plis: 3,
        });
        assert_eq!((d.packets, d.nacks, d.plis), (5, 0, 2));
        // A stream that restarts its totals adds nothing rather than wrapping.
        let d = t.advance(StreamTotals::default());
        assert_eq!(d, StreamTotals::default());
    }

    #[test]
    fn ingress_and_egress_land_in_their_counters() {
        let mut c = Counters::default();
        let d = StreamTotals {
            packets: 3,
            nacks: 2,
            plis: 1,
        };
        c.add_ingress(d);
        c.add_egress(d);
        assert_eq!((c.packets_in, c.nacks_to_publishers), (3, 2));
        assert_eq!(
            (
                c.packets_out,
                c.nacks_from_subscribers,
                c.plis_from_subscribers
            ),
            (3, 2, 1)
        );
    }
}
