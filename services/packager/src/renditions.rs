//! One HLS rendition per simulcast layer: relay tracks and frames in, each video layer
//! to a [`Segmenter`] of its own, outputs tagged with the rendition they belong to.
//!
//! Every rendition muxes the room's audio next to its video rather than sharing one
//! audio-only rendition (`EXT-X-MEDIA TYPE=AUDIO`): each variant is then one playlist to
//! block on and one fMP4 stream per SourceBuffer pair, which hls.js (low-latency mode)
//! and Safari both play with no alternate-audio syncing, and a layer switch needs no
//! second playlist. The cost is the audio bytes once per layer (~3 % of a 600 kbit/s
//! layer for 20 kbit/s Opus).
//!
//! Layers share one timeline: each rendition starts its decode times at the wall-clock
//! offset of its first keyframe from the room's start, so a player switching layers
//! finds the same media time at the same moment (RTP clocks of simulcast layers have
//! unrelated offsets).
//!
//! A layer the publisher pauses (Chromium pauses its upper layers whenever its bandwidth
//! estimate drops; a studio turning simulcast off pauses two) would leave its rendition
//! without pictures and its players stalled, and players keep a rendition chosen by hand.
//! So a paused layer's rendition carries the pictures of the sending layer nearest in
//! size (after a discontinuity, from its keyframe) until its own layer's next keyframe.

use crate::segmenter::{SegOutput, Segmenter};
use skylark_media::h264;
use skylark_proto::sfu::v1 as pb;
use std::time::Duration;

/// Longest rendition name taken from a RID as is; longer or odd RIDs get a generated one.
const MAX_NAME: usize = 32;
/// A layer silent this long has paused (frames come every 33–100 ms while it sends).
const PAUSED_AFTER_MS: i64 = 700;
/// A layer whose last frame is this recent is sending: it may stand in for another.
const SENDING_WITHIN_MS: i64 = 300;

struct Layer {
    /// The rendition's name (`""` without simulcast, else from the RID): its URL directory.
    name: String,
    rid: String,
    segmenter: Segmenter,
    /// The current publisher sends this layer.
    fed: bool,
    /// This layer's video track from the current publisher.
    track: Option<String>,
    /// Wall clock (ms) of this layer's newest frame.
    last_frame_ms: Option<i64>,
    /// Picture width of this layer's own pictures.
    width: Option<u16>,
    /// The layer whose pictures this rendition carries while its own is paused.
    stand_in: Option<usize>,
}

/// One room's renditions: a [`Segmenter`] per video layer (one without simulcast), the
/// publisher's tracks, and the timeline the layers share.
pub struct Renditions {
    segment_target: Duration,
    part_target: Duration,
    layers: Vec<Layer>,
    /// This publisher's tracks, replayed to a layer that appears after them (audio).
    tracks: Vec<pb::TrackInfo>,
    /// Wall clock (ms) of decode time zero, shared by every rendition.
    timeline_zero_ms: Option<i64>,
    /// After a publisher change: unlist layers it does not send, once its first part is out.
    check_layers: bool,
}

impl Renditions {
    pub fn new(segment_target: Duration, part_target: Duration) -> Self {
        Self {
            segment_target,
            part_target,
            layers: Vec::new(),
            tracks: Vec::new(),
            timeline_zero_ms: None,
            check_layers: false,
        }
    }

    /// The rendition name for a RID: the RID itself when it is a safe URL segment.
    fn name_for(&self, rid: &str) -> String {
        let safe = rid.len() <= MAX_NAME
            && rid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if safe {
            rid.to_string()
        } else {
            format!("layer{}", self.layers.len())
        }
    }

    /// Registers a relay track: a video layer gets its rendition (new or the one it had
    /// before a publisher change), audio goes to every rendition.
    pub fn add_track(&mut self, t: &pb::TrackInfo) {
        if self.tracks.iter().any(|k| k.track_id == t.track_id) {
            return;
        }
        self.tracks.push(t.clone());
        let video = t.kind == pb::TrackKind::Video as i32;
        if !video {
            for l in &mut self.layers {
                l.segmenter.add_track(t);
            }
            return;
        }
        if !t.codec.eq_ignore_ascii_case("H264") {
            return;
        }
        let idx = match self.layers.iter().position(|l| l.rid == t.rid) {
            Some(i) => i,
            None => {
                let mut segmenter = Segmenter::new(self.segment_target, self.part_target);
                segmenter.set_timeline_zero(self.timeline_zero_ms);
                // Audio announced before this layer.
                for a in self
                    .tracks
                    .iter()
                    .filter(|k| k.kind != pb::TrackKind::Video as i32)
                {
                    segmenter.add_track(a);
                }
                self.layers.push(Layer {
                    name: self.name_for(&t.rid),
                    rid: t.rid.clone(),
                    segmenter,
                    fed: false,
                    track: None,
                    last_frame_ms: None,
                    width: None,
                    stand_in: None,
                });
                self.layers.len() - 1
            }
        };
        let layer = &mut self.layers[idx];
        if !layer.fed {
            layer.fed = true;
            layer.track = Some(t.track_id.clone());
            layer.segmenter.add_track(t);
        }
    }

    /// A new publisher: every rendition closes what is open and continues with a
    /// discontinuity once its layer's first keyframe arrives.
    pub fn publisher_changed(&mut self, out: &mut Vec<(String, SegOutput)>) {
        for l in &mut self.layers {
            let mut o = Vec::new();
            l.segmenter.publisher_changed(&mut o);
            out.extend(o.into_iter().map(|x| (l.name.clone(), x)));
            l.fed = false;
            l.track = None;
            l.last_frame_ms = None;
            l.stand_in = None;
        }
        self.tracks.clear();
        self.check_layers = true;
    }

    /// Closes every rendition's open part and segment.
    pub fn flush(&mut self, out: &mut Vec<(String, SegOutput)>) {
        for l in &mut self.layers {
            let mut o = Vec::new();
            l.segmenter.flush(&mut o);
            out.extend(o.into_iter().map(|x| (l.name.clone(), x)));
        }
    }

    /// One relay frame; `now_ms` is the wall clock.
    pub fn push(&mut self, f: &pb::Frame, now_ms: i64, out: &mut Vec<(String, SegOutput)>) {
        if self.timeline_zero_ms.is_none() {
            self.timeline_zero_ms = Some(now_ms);
            for l in &mut self.layers {
                l.segmenter.set_timeline_zero(Some(now_ms));
            }
        }
        let mut o = Vec::new();
        if let Some(l) = self
            .layers
            .iter_mut()
            .find(|l| l.track.as_deref() == Some(f.track_id.as_str()))
        {
            l.last_frame_ms = Some(now_ms);
            // Back to its own pictures from their keyframe (a resumed layer starts with one).
            if l.stand_in.is_some() && is_keyframe(f) {
                l.stand_in = None;
                l.segmenter.switch_video(&f.track_id, &mut o);
                out.extend(o.drain(..).map(|x| (l.name.clone(), x)));
            }
        }
        let mut first_part = false;
        for l in &mut self.layers {
            l.segmenter.push(f, now_ms, &mut o);
            first_part |= o.iter().any(|x| matches!(x, SegOutput::Part { .. }));
            out.extend(o.drain(..).map(|x| (l.name.clone(), x)));
            if l.stand_in.is_none() {
                l.width = l.segmenter.width().or(l.width);
            }
        }
        self.stand_in_for_paused(now_ms, out);
        // By the first part (≥ one part target in), every layer the new publisher sends
        // has announced itself: the others leave the multivariant playlist.
        if first_part && std::mem::take(&mut self.check_layers) {
            for l in self.layers.iter().filter(|l| !l.fed) {
                out.push((l.name.clone(), SegOutput::Inactive));
            }
        }
    }

    /// Gives each rendition whose pictures stopped (its layer paused, or the layer
    /// standing in for it did) the sending layer nearest its own size, smaller first.
    fn stand_in_for_paused(&mut self, now_ms: i64, out: &mut Vec<(String, SegOutput)>) {
        let within = |l: &Layer, ms: i64| l.last_frame_ms.is_some_and(|t| now_ms - t < ms);
        for j in 0..self.layers.len() {
            let current = self.layers[j].stand_in.unwrap_or(j);
            if self.layers[j].last_frame_ms.is_none()
                || within(&self.layers[current], PAUSED_AFTER_MS)
            {
                continue;
            }
            let own = self.layers[j].width;
            let pick = self
                .layers
                .iter()
                .enumerate()
                .filter(|&(k, c)| k != current && c.track.is_some() && within(c, SENDING_WITHIN_MS))
                .min_by_key(|(_, c)| match (own, c.width) {
                    (Some(w), Some(cw)) if cw <= w => (0, w - cw),
                    (Some(w), Some(cw)) => (1, cw - w),
                    _ => (2, 0),
                })
                .map(|(k, _)| k);
            let Some(k) = pick else { continue };
            let Some(track) = self.layers[k].track.clone() else {
                continue;
            };
            let l = &mut self.layers[j];
            l.stand_in = (k != j).then_some(k);
            tracing::debug!(rendition = %l.name, stand_in = ?l.stand_in, "rendition's pictures from another layer");
            let mut o = Vec::new();
            l.segmenter.switch_video(&track, &mut o);
            out.extend(o.into_iter().map(|x| (l.name.clone(), x)));
        }
    }
}

fn is_keyframe(f: &pb::Frame) -> bool {
    f.keyframe || h264::is_keyframe(&h264::annexb_nalus(&f.data).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylark_loadgen::source::{OpusSource, VideoConfig, VideoSource};

    fn track(id: &str, kind: pb::TrackKind, codec: &str, rid: &str) -> pb::TrackInfo {
        pb::TrackInfo {
            track_id: id.into(),
            kind: kind as i32,
            codec: codec.into(),
            clock_rate: 90_000,
            fmtp: String::new(),
            rid: rid.into(),
        }
    }

    /// Two layers (RIDs `h`, `l`, unrelated RTP offsets) and Opus for `secs`.
    fn feed(r: &mut Renditions, secs: u64, rids: &[&str], out: &mut Vec<(String, SegOutput)>) {
        feed_where(r, secs, rids, |_, _| true, out);
    }

    /// [`feed`], each layer's frame at `ms` sent only where `sends(rid, ms)`.
    fn feed_where(
        r: &mut Renditions,
        secs: u64,
        rids: &[&str],
        sends: impl Fn(&str, i64) -> bool,
        out: &mut Vec<(String, SegOutput)>,
    ) {
        let mut v = VideoSource::new(VideoConfig::default());
        let mut a = OpusSource::default();
        for (n, rid) in rids.iter().enumerate() {
            r.add_track(&track(
                &format!("1:{rid}"),
                pb::TrackKind::Video,
                "H264",
                rid,
            ));
            if n == 0 {
                r.add_track(&track("2", pb::TrackKind::Audio, "opus", ""));
            }
        }
        let mut next_audio = 0;
        for i in 0..secs * 30 {
            let ms = (i * 1000 / 30) as i64;
            while next_audio <= ms {
                let p = a.next_packet();
                let f = pb::Frame {
                    track_id: "2".into(),
                    rtp_time: p.rtp_time,
                    data: p.data.to_vec(),
                    ..Default::default()
                };
                r.push(&f, 1_000_000 + next_audio, out);
                next_audio += 20;
            }
            let fr = v.next_frame(0);
            for (n, rid) in rids.iter().enumerate().filter(|(_, rid)| sends(rid, ms)) {
                let f = pb::Frame {
                    track_id: format!("1:{rid}"),
                    rtp_time: fr.rtp_time + 1_000_000 * (n as u64 + 1),
                    keyframe: fr.keyframe,
                    data: fr.data.clone(),
                    ..Default::default()
                };
                r.push(&f, 1_000_000 + ms, out);
            }
        }
    }

    #[test]
    fn each_layer_is_a_rendition_with_the_audio_on_one_timeline() {
        let mut r = Renditions::new(Duration::from_secs(2), Duration::from_millis(200));
        let mut out = Vec::new();
        feed(&mut r, 5, &["h", "l"], &mut out);
        for name in ["h", "l"] {
            let init = out.iter().find_map(|(n, o)| match o {
                SegOutput::Init { info, .. } if n == name => Some(info.clone()),
                _ => None,
            });
            let info = init.unwrap_or_else(|| panic!("no init for {name}"));
            assert!(info.codecs.ends_with(",opus"), "audio muxed in {name}");
            let parts = out
                .iter()
                .filter(|(n, o)| n == name && matches!(o, SegOutput::Part { .. }))
                .count();
            assert!(parts >= 20, "{name}: {parts} parts");
        }
        // The same frame has the same decode time in both renditions, whatever the RTP
        // offsets: each part's fragment starts at the same tfdt.
        let tfdt = |name: &str| -> Vec<u64> {
            out.iter()
                .filter_map(|(n, o)| match o {
                    SegOutput::Part { bytes, .. } if n == name => {
                        let at = bytes.windows(4).position(|w| w == b"tfdt")?;
                        Some(u64::from_be_bytes(bytes[at + 8..at + 16].try_into().ok()?))
                    }
                    _ => None,
                })
                .collect()
        };
        assert_eq!(tfdt("h"), tfdt("l"));
        assert!(!out.iter().any(|(_, o)| matches!(o, SegOutput::Inactive)));
    }

    #[test]
    fn odd_rids_get_safe_names_and_a_publisher_without_a_layer_unlists_it() {
        let mut r = Renditions::new(Duration::from_secs(2), Duration::from_millis(200));
        let mut out = Vec::new();
        feed(&mut r, 2, &["h", "../x"], &mut out);
        let names: std::collections::BTreeSet<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["h", "layer1"]);
        out.clear();
        r.publisher_changed(&mut out);
        feed(&mut r, 2, &["h"], &mut out);
        let inactive: Vec<&str> = out
            .iter()
            .filter(|(_, o)| matches!(o, SegOutput::Inactive))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(inactive, ["layer1"]);
    }

    #[test]
    fn a_paused_layers_rendition_carries_a_sending_layers_pictures_until_its_own_keyframe() {
        let mut r = Renditions::new(Duration::from_secs(2), Duration::from_millis(200));
        let mut out = Vec::new();
        // `l` pauses from 3 s to 5.5 s and resumes between keyframes (every 2 s).
        let paused = |rid: &str, ms: i64| rid == "l" && (3000..5500).contains(&ms);
        feed_where(&mut r, 8, &["h", "l"], |rid, ms| !paused(rid, ms), &mut out);
        let parts = |name: &str, from_ms: i64, to_ms: i64| {
            out.iter()
                .filter(|(n, o)| n == name && matches!(o, SegOutput::Part { pdt_ms, .. } if (1_000_000 + from_ms..1_000_000 + to_ms).contains(pdt_ms)))
                .count()
        };
        let discontinuities = |name: &str| -> Vec<i64> {
            out.iter()
                .filter_map(|(n, o)| match o {
                    SegOutput::Part {
                        discontinuity: true,
                        pdt_ms,
                        ..
                    } if n == name => Some(pdt_ms - 1_000_000),
                    _ => None,
                })
                .collect()
        };
        // Paused at 3 s, noticed 0.7 s later: h's pictures from its next keyframe (4 s);
        // l's own again from its own keyframe (6 s), not from its first frame back.
        let l = discontinuities("l");
        assert_eq!(l.len(), 2, "l's discontinuities at {l:?}");
        assert!(
            (4000..4100).contains(&l[0]) && (6000..6100).contains(&l[1]),
            "l's discontinuities at {l:?}"
        );
        assert!(
            parts("l", 4000, 6000) >= 8,
            "l's rendition goes on while paused: {} parts",
            parts("l", 4000, 6000)
        );
        assert_eq!(
            discontinuities("h"),
            Vec::<i64>::new(),
            "the layer standing in is untouched"
        );
        let on = r
            .layers
            .iter()
            .find(|l| l.name == "l")
            .and_then(|l| l.segmenter.video_track());
        assert_eq!(on, Some("1:l"), "l back on its own pictures");
    }
}
