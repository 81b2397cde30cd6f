//! Per-subscriber forwarding state: which layer it follows, whether it waits for a
//! keyframe, and the timestamp offset that keeps its timeline continuous when the
//! room's publisher changes (reconnect), so the player never sees time jump back.

use std::time::{Duration, Instant};
use str0m::media::Rid;

/// One media kind's outgoing timeline for one subscriber.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    /// Publisher epoch the offset belongs to.
    epoch: u64,
    offset: i64,
    last_out: Option<u64>,
}

impl Timeline {
    /// Maps a publisher timestamp to this subscriber's timeline. On a new epoch the
    /// first frame lands `step` after the last one sent, whatever the new publisher's
    /// clock says.
    pub fn map(&mut self, epoch: u64, time: u64, step: u64) -> u64 {
        if self.epoch != epoch {
            self.offset = match self.last_out {
                Some(last) => (last + step) as i64 - time as i64,
                None => 0,
            };
            self.epoch = epoch;
        }
        let out = (time as i64 + self.offset).max(0) as u64;
        self.last_out = Some(out);
        out
    }
}

/// One of a subscriber's outgoing RTP streams: its timeline, the next sequence number
/// and the payload type it gets the current publisher's frames on. The SFU numbers the
/// packets itself, so layer switches and publisher changes leave no gap for the
/// player to read as loss.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub timeline: Timeline,
    next_seq: u64,
    /// The payload type for the publisher epoch it was found for.
    pub pt: Option<(u64, str0m::media::Pt)>,
}

impl Outgoing {
    /// Starts below 2^15 so the rollover counter stays 0 for the first half hour of a
    /// 20 packet/s stream at least (a receiver starts at ROC 0, RFC 3711 §3.3.1).
    pub fn new(first_seq: u16) -> Self {
        Self {
            timeline: Timeline::default(),
            next_seq: u64::from(first_seq & 0x7fff),
            pt: None,
        }
    }

    /// The next sequence number, extended (its high bits are the SRTP rollover counter).
    pub fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }
}

/// A layer that sent no frame for this long is not counted as the top one.
const LAYER_STALE: Duration = Duration::from_secs(1);

/// A room's simulcast layers as seen lately: the picture size of each one's latest
/// keyframe and when it last sent a frame. A viewer with no layer yet starts on the top
/// layer still sending, not on whichever keyframe comes first: the layers' keyframes
/// arrive one after another, and a viewer connecting between them stayed on a lower
/// layer for good.
#[derive(Debug, Default)]
pub struct Layers {
    /// Layer, pixels of its latest keyframe (0: none seen yet), its latest frame.
    seen: Vec<(Rid, u64, Instant)>,
}

impl Layers {
    /// A frame of layer `rid`; `keyframe_pixels` if it is a keyframe (its SPS's size).
    pub fn saw(&mut self, rid: Rid, keyframe_pixels: Option<u64>, now: Instant) {
        match self.seen.iter_mut().find(|(r, ..)| *r == rid) {
            Some((_, pixels, last)) => {
                *last = now;
                if let Some(p) = keyframe_pixels {
                    *pixels = p;
                }
            }
            None => self.seen.push((rid, keyframe_pixels.unwrap_or(0), now)),
        }
    }

    /// Whether a viewer with no layer yet may start on `rid`: no other layer still
    /// sending has a larger picture.
    pub fn is_top(&self, rid: Rid, now: Instant) -> bool {
        let Some(&(_, mine, _)) = self.seen.iter().find(|(r, ..)| *r == rid) else {
            return true;
        };
        self.seen.iter().all(|&(r, pixels, last)| {
            r == rid || pixels <= mine || now.saturating_duration_since(last) > LAYER_STALE
        })
    }
}

/// What a subscriber needs to decide whether a frame goes out.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Waiting for a keyframe before sending video (join, layer switch, reconnect).
    pub wants_keyframe: bool,
    /// The simulcast layer followed; `None` until the first keyframe of any layer.
    pub layer: Option<Rid>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            wants_keyframe: true,
            layer: None,
        }
    }
}

impl Gate {
    /// Whether a video frame of layer `rid` passes. Without simulcast `rid` is `None`.
    pub fn pass_video(&mut self, rid: Option<Rid>, keyframe: bool) -> bool {
        if rid.is_some() && self.layer.is_none() {
            if !keyframe {
                return false;
            }
            self.layer = rid;
        }
        if rid.is_some() && self.layer != rid {
            return false;
        }
        if self.wants_keyframe {
            if !keyframe {
                return false;
            }
            self.wants_keyframe = false;
        }
        true
    }
}

/// The picture size (pixels) a keyframe's SPS declares; its byte length without one.
pub fn keyframe_pixels(annexb: &[u8]) -> u64 {
    use skylark_media::h264::{annexb_nalus, nal_type, Sps, NAL_SPS};
    annexb_nalus(annexb)
        .find(|n| nal_type(n) == Some(NAL_SPS))
        .and_then(|n| Sps::parse(n).ok())
        .map_or(annexb.len() as u64, |s| {
            u64::from(s.width) * u64::from(s.height)
        })
}

/// Whether an H.264 access unit (Annex B, as str0m depacketizes it) holds an IDR slice.
pub fn h264_is_keyframe(annexb: &[u8]) -> bool {
    skylark_media::h264::annexb_nalus(annexb).any(skylark_media::h264::is_idr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_starts_on_the_largest_layer_still_sending() {
        let t0 = Instant::now();
        let (h, m, l) = (Rid::from("h"), Rid::from("m"), Rid::from("l"));
        let mut layers = Layers::default();
        assert!(layers.is_top(m, t0), "nothing known: any layer");
        layers.saw(h, Some(320 * 240), t0);
        layers.saw(m, Some(160 * 120), t0);
        assert!(layers.is_top(h, t0));
        assert!(!layers.is_top(m, t0), "h is larger and sending");
        // Delta frames keep a layer current without changing its size.
        let t1 = t0 + Duration::from_millis(900);
        layers.saw(h, None, t1);
        layers.saw(m, None, t1);
        assert!(!layers.is_top(m, t1));
        // The publisher stops sending h (its encoder dropped the layer): m is the top.
        let t2 = t1 + Duration::from_millis(1500);
        layers.saw(m, None, t2);
        assert!(layers.is_top(m, t2));
        // l's first frame is not a keyframe: its size is unknown, it outranks nothing.
        layers.saw(l, None, t2);
        assert!(!layers.is_top(l, t2));
        assert!(layers.is_top(m, t2));
    }

    #[test]
    fn timeline_continues_across_epochs() {
        let mut t = Timeline::default();
        assert_eq!(t.map(0, 1000, 3000), 1000);
        assert_eq!(t.map(0, 4000, 3000), 4000);
        // New publisher starts its clock elsewhere: output continues one step later.
        assert_eq!(t.map(1, 90, 3000), 7000);
        assert_eq!(t.map(1, 3090, 3000), 10000);
    }

    #[test]
    fn sequence_numbers_are_consecutive_from_below_the_half() {
        let mut o = Outgoing::new(0xffff);
        assert_eq!(o.take_seq(), 0x7fff);
        assert_eq!(o.take_seq(), 0x8000);
        assert_eq!(o.take_seq(), 0x8001);
    }

    #[test]
    fn gate_waits_for_keyframe_and_follows_one_layer() {
        let mut g = Gate::default();
        assert!(!g.pass_video(None, false));
        assert!(g.pass_video(None, true));
        assert!(g.pass_video(None, false));

        let mut g = Gate::default();
        let h: Rid = "h".into();
        let l: Rid = "l".into();
        assert!(!g.pass_video(Some(l), false));
        assert!(g.pass_video(Some(h), true));
        assert!(!g.pass_video(Some(l), true), "other layer");
        assert!(g.pass_video(Some(h), false));
    }

    #[test]
    fn keyframe_detection() {
        assert!(h264_is_keyframe(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 9]));
        assert!(!h264_is_keyframe(&[0, 0, 0, 1, 0x41, 1, 2, 3]));
        assert!(!h264_is_keyframe(&[]));
        assert!(!h264_is_keyframe(&[0, 0, 1]));
    }
}
