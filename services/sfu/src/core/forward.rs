//! Per-subscriber forwarding state: which layer it follows, whether it waits for a
//! keyframe, and the timestamp offset that keeps its timeline continuous when the
//! room's publisher changes (reconnect), so the player never sees time jump back.

use super::quality::Step;
use std::time::{Duration, Instant};
use str0m::media::Rid;

/// One media kind's outgoing timeline for one subscriber.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    /// Publisher epoch the offset belongs to.
    epoch: u64,
    offset: i64,
    last_out: Option<u64>,
    /// The next frame comes from another simulcast layer.
    rebase: bool,
}

impl Timeline {
    /// Maps a publisher timestamp to this subscriber's timeline. On a new epoch or
    /// layer the first frame lands `step` after the last one sent, whatever the new
    /// clock says.
    pub fn map(&mut self, epoch: u64, time: u64, step: u64) -> u64 {
        if self.epoch != epoch || std::mem::take(&mut self.rebase) {
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

    /// The next frame is from another simulcast layer: a browser starts each layer's
    /// RTP timestamps at its own random value (Chromium's were hours apart), so the
    /// timeline is anchored again as for a new publisher.
    pub fn rebase(&mut self) {
        self.rebase = true;
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

/// A keyframe's picture: the size its SPS declares (0×0 without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// What layers are ordered by: width × height, or the keyframe's byte length
    /// without an SPS (a larger picture makes a larger keyframe).
    pub pixels: u64,
}

impl Picture {
    pub fn sized(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: u64::from(width) * u64::from(height),
        }
    }
}

/// One layer as seen lately.
#[derive(Debug, Clone, Copy)]
struct Seen {
    rid: Rid,
    /// Its latest keyframe's picture (pixels 0: none seen yet).
    picture: Picture,
    last: Instant,
}

/// A room's simulcast layers as seen lately: the picture size of each one's latest
/// keyframe and when it last sent a frame. A viewer with no layer yet starts on the top
/// layer still sending, not on whichever keyframe comes first: the layers' keyframes
/// arrive one after another, and a viewer connecting between them stayed on a lower
/// layer for good.
#[derive(Debug, Default)]
pub struct Layers {
    seen: Vec<Seen>,
}

impl Layers {
    /// A frame of layer `rid`; its picture if it is a keyframe.
    pub fn saw(&mut self, rid: Rid, keyframe: Option<Picture>, now: Instant) {
        match self.seen.iter_mut().find(|s| s.rid == rid) {
            Some(s) => {
                s.last = now;
                if let Some(p) = keyframe {
                    s.picture = p;
                }
            }
            None => self.seen.push(Seen {
                rid,
                picture: keyframe.unwrap_or_default(),
                last: now,
            }),
        }
    }

    fn is_sending(s: &Seen, now: Instant) -> bool {
        now.saturating_duration_since(s.last) <= LAYER_STALE
    }

    /// The layers still sending with a keyframe seen, largest first.
    pub fn sending(&self, now: Instant) -> Vec<(Rid, Picture)> {
        let mut out: Vec<(Rid, Picture)> = self
            .seen
            .iter()
            .filter(|s| s.picture.pixels > 0 && Self::is_sending(s, now))
            .map(|s| (s.rid, s.picture))
            .collect();
        out.sort_by_key(|(_, p)| std::cmp::Reverse(p.pixels));
        out
    }

    /// The layers with a keyframe seen that sent a frame within `within`, largest first.
    pub fn sent_within(&self, within: Duration, now: Instant) -> Vec<Rid> {
        let mut out: Vec<&Seen> = self
            .seen
            .iter()
            .filter(|s| s.picture.pixels > 0 && now.saturating_duration_since(s.last) <= within)
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.picture.pixels));
        out.into_iter().map(|s| s.rid).collect()
    }

    /// The layer still sending whose picture is next smaller (`Down`) or larger (`Up`)
    /// than `rid`'s; `None` at the bottom or the top.
    pub fn step(&self, rid: Rid, step: Step, now: Instant) -> Option<Rid> {
        let mine = self.seen.iter().find(|s| s.rid == rid)?.picture.pixels;
        let others = self.sending(now).into_iter().filter(|(r, _)| *r != rid);
        match step {
            Step::Down => others
                .filter(|(_, p)| p.pixels < mine)
                .max_by_key(|(_, p)| p.pixels),
            Step::Up => others
                .filter(|(_, p)| p.pixels > mine)
                .min_by_key(|(_, p)| p.pixels),
        }
        .map(|(r, _)| r)
    }

    /// Whether a viewer with no layer yet may start on `rid`: no other layer still
    /// sending has a larger picture.
    pub fn is_top(&self, rid: Rid, now: Instant) -> bool {
        let Some(mine) = self.seen.iter().find(|s| s.rid == rid) else {
            return true;
        };
        self.seen.iter().all(|s| {
            s.rid == rid || s.picture.pixels <= mine.picture.pixels || !Self::is_sending(s, now)
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
    /// The layer to move to at its next keyframe; `layer` keeps playing until then, so
    /// a switch never leaves the viewer without pictures.
    pub next: Option<Rid>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            wants_keyframe: true,
            layer: None,
            next: None,
        }
    }
}

impl Gate {
    /// Whether a video frame of layer `rid` passes. Without simulcast `rid` is `None`.
    pub fn pass_video(&mut self, rid: Option<Rid>, keyframe: bool) -> bool {
        if rid.is_some() && rid == self.next {
            if !keyframe {
                return false;
            }
            // The switch (or a chosen first layer): this keyframe starts it cleanly.
            self.layer = rid;
            self.next = None;
            self.wants_keyframe = false;
            return true;
        }
        if self.next.is_some() && self.layer.is_none() {
            // A layer chosen before the first picture: only that one starts the viewer.
            return false;
        }
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

/// The picture a keyframe's SPS declares; without one, sized by its byte length.
pub fn keyframe_picture(annexb: &[u8]) -> Picture {
    use skylark_media::h264::{annexb_nalus, nal_type, Sps, NAL_SPS};
    annexb_nalus(annexb)
        .find(|n| nal_type(n) == Some(NAL_SPS))
        .and_then(|n| Sps::parse(n).ok())
        .map_or(
            Picture {
                pixels: annexb.len() as u64,
                ..Picture::default()
            },
            |s| Picture::sized(s.width, s.height),
        )
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
        layers.saw(h, Some(Picture::sized(320, 240)), t0);
        layers.saw(m, Some(Picture::sized(160, 120)), t0);
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

        // A switch to l: h plays until l's keyframe, then only l.
        g.next = Some(l);
        assert!(!g.pass_video(Some(l), false));
        assert!(
            g.pass_video(Some(h), false),
            "the old layer until the switch"
        );
        assert!(g.pass_video(Some(l), true));
        assert_eq!((g.layer, g.next), (Some(l), None));
        assert!(!g.pass_video(Some(h), true));
        assert!(g.pass_video(Some(l), false));

        // A layer chosen before the first picture: only its keyframe starts the viewer.
        let mut g = Gate {
            next: Some(l),
            ..Gate::default()
        };
        assert!(!g.pass_video(Some(h), true));
        assert!(g.pass_video(Some(l), true));
        assert_eq!(g.layer, Some(l));
    }

    #[test]
    fn steps_go_to_the_next_sending_layer_by_picture_size() {
        let t0 = Instant::now();
        let (h, m, l) = (Rid::from("h"), Rid::from("m"), Rid::from("l"));
        let mut layers = Layers::default();
        layers.saw(l, Some(Picture::sized(80, 60)), t0);
        layers.saw(h, Some(Picture::sized(320, 240)), t0);
        layers.saw(m, Some(Picture::sized(160, 120)), t0);
        assert_eq!(layers.step(h, Step::Down, t0), Some(m));
        assert_eq!(layers.step(m, Step::Down, t0), Some(l));
        assert_eq!(layers.step(l, Step::Down, t0), None);
        assert_eq!(layers.step(l, Step::Up, t0), Some(m));
        assert_eq!(layers.step(h, Step::Up, t0), None);
        // m stops sending: h steps down to l.
        let t1 = t0 + LAYER_STALE + Duration::from_millis(1);
        layers.saw(h, None, t1);
        layers.saw(l, None, t1);
        assert_eq!(layers.step(h, Step::Down, t1), Some(l));
    }

    #[test]
    fn keyframe_detection() {
        assert!(h264_is_keyframe(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 9]));
        assert!(!h264_is_keyframe(&[0, 0, 0, 1, 0x41, 1, 2, 3]));
        assert!(!h264_is_keyframe(&[]));
        assert!(!h264_is_keyframe(&[0, 0, 1]));
    }
}
