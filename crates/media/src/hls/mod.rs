//! HLS playlists written by hand: the multivariant playlist, and LL-HLS media playlists
//! with partial segments, preload hints, blocking-reload server control and rendition
//! reports (RFC 8216bis / Apple's LL-HLS spec).
//!
//! ```
//! use skylark_media::hls::{MediaPlaylist, Part, Segment};
//! let mut pl = MediaPlaylist::new(2.0, 0.333);
//! pl.segments.push(Segment {
//!     uri: "seg0.m4s".into(),
//!     duration: 2.0,
//!     program_date_time_ms: 0,
//!     discontinuity: false,
//!     independent: true,
//!     parts: vec![Part { uri: "seg0.0.m4s".into(), duration: 0.333, independent: true }],
//!     complete: true,
//!     map_uri: None,
//! });
//! let text = pl.render();
//! assert!(text.starts_with("#EXTM3U"));
//! assert!(text.contains("#EXT-X-PART:DURATION=0.33300,URI=\"seg0.0.m4s\",INDEPENDENT=YES"));
//! ```

pub mod check;

use std::fmt::Write;

use crate::fmp4::{Codec, Track};

/// One partial segment (an LL-HLS part).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// URI relative to the playlist.
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// One media segment, complete or still growing (its parts so far).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// URI of the whole segment (valid once `complete`).
    pub uri: String,
    /// Seconds (of the parts so far while incomplete).
    pub duration: f64,
    /// Wall clock of the segment's first sample, ms since the UNIX epoch.
    pub program_date_time_ms: i64,
    /// Timestamps restart here (a publisher reconnected).
    pub discontinuity: bool,
    /// Starts with a keyframe.
    pub independent: bool,
    /// Its parts, in order.
    pub parts: Vec<Part>,
    /// All parts are in; the segment URI can be fetched.
    pub complete: bool,
    /// This segment's init segment (`EXT-X-MAP`), when not the playlist's
    /// [`map_uri`](MediaPlaylist::map_uri): a new publisher's init gets a new URI, so
    /// players (and caches) never mix up two inits under one name.
    pub map_uri: Option<String>,
}

/// Where a player can find another rendition's newest part (`EXT-X-RENDITION-REPORT`).
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    /// The other rendition's playlist URI.
    pub uri: String,
    /// Its last media sequence number.
    pub last_msn: u64,
    /// Its last part index in that segment.
    pub last_part: u64,
}

/// An LL-HLS media playlist: a rolling window of segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// Target segment duration, seconds. [`note_segment`](Self::note_segment) raises it
    /// (never lowers it) when a longer segment is emitted.
    pub target_duration: f64,
    /// Target part duration, seconds.
    pub part_target: f64,
    /// Media sequence number of the first segment in `segments`.
    pub media_sequence: u64,
    /// Discontinuity sequence of the first segment.
    pub discontinuity_sequence: u64,
    /// Init segment URI (`EXT-X-MAP`) of segments that name none of their own, and of
    /// the next segment (see [`next_init`](Self::next_init)).
    pub map_uri: String,
    /// The window, oldest first; the last may be incomplete.
    pub segments: Vec<Segment>,
    /// The part the server will publish next (`EXT-X-PRELOAD-HINT`).
    pub preload_hint: Option<String>,
    /// The next segment follows a discontinuity, known before its first part: set by
    /// [`next_init`](Self::next_init), taken by [`open_segment`](Self::open_segment).
    pub next_discontinuity: bool,
    /// Other renditions' positions.
    pub rendition_reports: Vec<RenditionReport>,
    /// The stream ended (`EXT-X-ENDLIST`).
    pub ended: bool,
    /// Offer playlist delta updates (`CAN-SKIP-UNTIL`, answered by
    /// [`render_delta`](Self::render_delta)): worth it for a long (DVR) window.
    pub delta_updates: bool,
}

impl MediaPlaylist {
    /// An empty live playlist.
    pub fn new(target_duration: f64, part_target: f64) -> Self {
        Self {
            target_duration,
            part_target,
            media_sequence: 0,
            discontinuity_sequence: 0,
            map_uri: "init.mp4".into(),
            segments: Vec::new(),
            preload_hint: None,
            next_discontinuity: false,
            rendition_reports: Vec::new(),
            ended: false,
            delta_updates: false,
        }
    }

    /// A new init segment (`EXT-X-MAP`) for the segments from the next one on, after a
    /// discontinuity if `discontinuity` (the stream's first init follows none).
    ///
    /// Until the next segment's first part is in, the playlist lists that segment's
    /// `EXT-X-DISCONTINUITY` and `EXT-X-MAP` ahead of the preload hint: the hinted part
    /// belongs to the new init (RFC 8216bis §4.4.4.9: they come before the segment's first
    /// part). Listed only with the part, after the hint, Shaka Player 5.2 appended the
    /// prefetched part under the old init (decode error 3016) and hls.js and video.js
    /// stalled; with no hint meanwhile, hls.js 1.7 failed ("discontinuity sequence
    /// mismatch").
    pub fn next_init(&mut self, map_uri: String, discontinuity: bool) {
        self.map_uri = map_uri;
        self.next_discontinuity |= discontinuity && !self.segments.is_empty();
    }

    /// Appends `segment`, the next one, with the discontinuity and init announced for it
    /// by [`next_init`](Self::next_init) (an announced tag is never withdrawn).
    pub fn open_segment(&mut self, mut segment: Segment) {
        segment.discontinuity |= std::mem::take(&mut self.next_discontinuity);
        segment.map_uri.get_or_insert_with(|| self.map_uri.clone());
        self.segments.push(segment);
    }

    /// Slides the window by one segment: `EXT-X-MEDIA-SEQUENCE` counts it, and
    /// `EXT-X-DISCONTINUITY-SEQUENCE` counts the discontinuity of the segment now first,
    /// whose tag is no longer written (RFC 8216 §6.2.2), so every segment keeps its
    /// discontinuity sequence number across reloads.
    pub fn remove_oldest(&mut self) -> Option<Segment> {
        if self.segments.is_empty() {
            return None;
        }
        let removed = self.segments.remove(0);
        self.media_sequence += 1;
        if self.segments.first().is_some_and(|s| s.discontinuity) {
            self.discontinuity_sequence += 1;
        }
        Some(removed)
    }

    /// Media sequence number and part index of the newest published part, if any.
    pub fn last_part(&self) -> Option<(u64, u64)> {
        let (i, seg) = self
            .segments
            .iter()
            .enumerate()
            .rev()
            .find(|(_, s)| !s.parts.is_empty())?;
        Some((self.media_sequence + i as u64, seg.parts.len() as u64 - 1))
    }

    /// Whether the playlist already holds segment `msn` (and, with `part`, that part of
    /// it): the condition a blocking reload (`_HLS_msn`, `_HLS_part`) waits for.
    pub fn has(&self, msn: u64, part: Option<u64>) -> bool {
        if self.ended {
            return true;
        }
        let Some(i) = msn.checked_sub(self.media_sequence) else {
            return true; // already slid out of the window
        };
        let Some(seg) = self.segments.get(i as usize) else {
            return false;
        };
        match part {
            None => seg.complete,
            Some(p) => seg.complete || (p as usize) < seg.parts.len(),
        }
    }

    /// Records an emitted segment's duration: `EXT-X-TARGETDURATION` must cover every
    /// segment's `EXTINF` rounded to the nearest integer (RFC 8216 §4.3.3.1), and a
    /// target that went up stays up, so players never see it shrink.
    pub fn note_segment(&mut self, duration: f64) {
        if duration.is_finite() {
            self.target_duration = self.target_duration.max(duration.round());
        }
    }

    /// The `EXT-X-TARGETDURATION` value: the target rounded up, or more if a segment in
    /// the window needs it (so the invariant holds even without [`note_segment`](Self::note_segment)).
    pub fn target_duration_secs(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .filter(|s| s.complete && s.duration.is_finite())
            .map(|s| s.duration.round())
            .fold(0.0, f64::max);
        self.target_duration.ceil().max(longest).max(1.0) as u64
    }

    /// `PART-HOLD-BACK`: three part targets, the spec's minimum.
    pub fn part_hold_back(&self) -> f64 {
        3.0 * self.part_target
    }

    /// `CAN-SKIP-UNTIL`, the Skip Boundary: six target durations, the spec's minimum
    /// (a player may ask for a delta update while its playlist is younger than half of it).
    pub fn skip_boundary(&self) -> Option<f64> {
        self.delta_updates
            .then(|| 6.0 * self.target_duration_secs() as f64)
    }

    /// How many leading segments a delta update replaces with `EXT-X-SKIP`: those whose
    /// end lies at least the Skip Boundary before the playlist's end (RFC 8216bis
    /// §6.2.5.1: nothing nearer the end is skipped).
    pub fn skippable(&self) -> usize {
        let Some(boundary) = self.skip_boundary() else {
            return 0;
        };
        let mut tail = 0.0;
        for (i, s) in self.segments.iter().enumerate().rev() {
            tail += s.duration;
            if tail >= boundary {
                return i;
            }
        }
        0
    }

    /// Whether segment `i` of the window lists its parts: only those starting within
    /// three target durations of the playlist's end (RFC 8216bis §4.4.4.9), so a long
    /// window stays short where players reload it most.
    fn lists_parts(&self, i: usize) -> bool {
        let reach = 3.0 * self.target_duration_secs() as f64;
        let from_start: f64 = self.segments[i..].iter().map(|s| s.duration).sum();
        i + 1 == self.segments.len() || from_start <= reach + 1e-9
    }

    /// The playlist text.
    pub fn render(&self) -> String {
        self.render_skipping(0)
    }

    /// A Playlist Delta Update (`_HLS_skip=YES`): the [`skippable`](Self::skippable)
    /// segments become one `EXT-X-SKIP`; the full playlist when there are none.
    pub fn render_delta(&self) -> String {
        self.render_skipping(self.skippable())
    }

    fn render_skipping(&self, skip: usize) -> String {
        let mut o = String::with_capacity(
            256 + (self.segments.len() - skip.min(self.segments.len())) * 128,
        );
        let target = self.target_duration_secs();
        let _ = writeln!(o, "#EXTM3U");
        let _ = writeln!(o, "#EXT-X-VERSION:9");
        let _ = writeln!(o, "#EXT-X-TARGETDURATION:{target}");
        let _ = write!(o, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES");
        if let Some(b) = self.skip_boundary() {
            let _ = write!(o, ",CAN-SKIP-UNTIL={b:.3}");
        }
        let _ = writeln!(
            o,
            ",PART-HOLD-BACK={:.3},HOLD-BACK={:.3}",
            self.part_hold_back(),
            3.0 * target as f64
        );
        let _ = writeln!(o, "#EXT-X-PART-INF:PART-TARGET={:.5}", self.part_target);
        let _ = writeln!(o, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                o,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        // No EXT-X-INDEPENDENT-SEGMENTS: see [`render_multivariant`].
        if self.segments.is_empty() {
            let _ = writeln!(o, "#EXT-X-MAP:URI=\"{}\"", self.map_uri);
        }
        if skip > 0 {
            let _ = writeln!(o, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skip}");
        }
        let mut map: Option<&str> = None;
        for (i, s) in self.segments.iter().enumerate().skip(skip) {
            if s.discontinuity && i > 0 {
                let _ = writeln!(o, "#EXT-X-DISCONTINUITY");
            }
            // Again wherever the init changes (allowed from version 6), and on the first
            // segment listed.
            let seg_map = s.map_uri.as_deref().unwrap_or(&self.map_uri);
            if map != Some(seg_map) {
                let _ = writeln!(o, "#EXT-X-MAP:URI=\"{seg_map}\"");
                map = Some(seg_map);
            }
            let _ = writeln!(
                o,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                format_pdt(s.program_date_time_ms)
            );
            if self.lists_parts(i) {
                for p in &s.parts {
                    let _ = write!(
                        o,
                        "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
                        p.duration, p.uri
                    );
                    if p.independent {
                        let _ = write!(o, ",INDEPENDENT=YES");
                    }
                    let _ = writeln!(o);
                }
            }
            if s.complete {
                let _ = writeln!(o, "#EXTINF:{:.5},", s.duration);
                let _ = writeln!(o, "{}", s.uri);
            }
        }
        if let Some(h) = &self.preload_hint {
            if !self.ended {
                // The hint opens the next segment: its tags first (see `next_init`).
                if self.segments.last().is_some_and(|s| s.complete) {
                    if self.next_discontinuity {
                        let _ = writeln!(o, "#EXT-X-DISCONTINUITY");
                    }
                    if map != Some(self.map_uri.as_str()) {
                        let _ = writeln!(o, "#EXT-X-MAP:URI=\"{}\"", self.map_uri);
                    }
                }
                let _ = writeln!(o, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{h}\"");
            }
        }
        for r in &self.rendition_reports {
            let _ = writeln!(
                o,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
                r.uri, r.last_msn, r.last_part
            );
        }
        if self.ended {
            let _ = writeln!(o, "#EXT-X-ENDLIST");
        }
        o
    }
}

/// One rendition in the multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Media playlist URI.
    pub uri: String,
    /// Peak bits per second.
    pub bandwidth: u64,
    /// RFC 6381 codecs, e.g. `avc1.42e01f,opus`.
    pub codecs: String,
    /// Width and height, for video renditions.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second, if known.
    pub frame_rate: Option<f64>,
}

impl Variant {
    /// A rendition's entry from the tracks of its init segment: `CODECS` lists every
    /// track's RFC 6381 codec in track order (so a video-only rendition advertises no
    /// audio), `RESOLUTION` is the video track's picture size from its SPS.
    ///
    /// ```
    /// use skylark_media::fmp4::Track;
    /// use skylark_media::h264::AvcDecoderConfigurationRecord;
    /// use skylark_media::hls::Variant;
    /// let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35];
    /// let pps = [0x68, 0xce, 0x38, 0x80];
    /// let video = Track::avc(1, AvcDecoderConfigurationRecord::from_parameter_sets(&sps, &pps)?)?;
    /// let v = Variant::from_tracks("media.m3u8", 900_000, &[video, Track::opus(2, 2)]);
    /// assert_eq!((v.codecs.as_str(), v.resolution), ("avc1.42c01f,opus", Some((1280, 720))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_tracks(uri: impl Into<String>, bandwidth: u64, tracks: &[Track]) -> Self {
        let codecs: Vec<String> = tracks.iter().map(Track::codec_string).collect();
        let resolution = tracks.iter().find_map(|t| match t.codec {
            Codec::Avc { width, height, .. } => Some((u32::from(width), u32::from(height))),
            _ => None,
        });
        Self {
            uri: uri.into(),
            bandwidth,
            codecs: codecs.join(","),
            resolution,
            frame_rate: None,
        }
    }
}

/// The multivariant ("master") playlist: one entry per rendition.
///
/// Every entry says `CLOSED-CAPTIONS=NONE` (RFC 8216 §4.3.4.2): the video carries no
/// CEA-608/708. Without it Shaka Player probes segments for captions, and at a young
/// stream's live edge it picked a segment that has only parts (no URI yet) and failed
/// to load.
///
/// Neither it nor a live media playlist says `EXT-X-INDEPENDENT-SEGMENTS`, though every
/// segment starts with a keyframe: video.js (VHS ≤ 3.17) reads the tag as a promise that
/// every *part* is independent and then starts playback at the part holding its start
/// time, mid-GOP, instead of stepping back to the `INDEPENDENT=YES` part before it; in
/// Chromium that start left holes after the next keyframes and stalled playback (README
/// "Design notes"). The parts' `INDEPENDENT=YES` says where a player may start.
pub fn render_multivariant(variants: &[Variant]) -> String {
    let mut o = String::from("#EXTM3U\n#EXT-X-VERSION:9\n");
    for v in variants {
        let _ = write!(
            o,
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"",
            v.bandwidth, v.codecs
        );
        if let Some((w, h)) = v.resolution {
            let _ = write!(o, ",RESOLUTION={w}x{h}");
        }
        if let Some(f) = v.frame_rate {
            let _ = write!(o, ",FRAME-RATE={f:.3}");
        }
        let _ = writeln!(o, ",CLOSED-CAPTIONS=NONE\n{}", v.uri);
    }
    o
}

/// One complete segment of a recording's playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSegment {
    /// The segment's URI, relative to the playlist.
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    /// Its init segment (`EXT-X-MAP`, written when it changes).
    pub map_uri: String,
    /// Timestamps restart here (a new publisher, or another packager took over).
    pub discontinuity: bool,
}

/// A recording's media playlist: `EXT-X-PLAYLIST-TYPE:EVENT` while it grows (each
/// rewrite valid up to its last complete segment), `VOD` with `EXT-X-ENDLIST` once
/// `ended`. No parts: a recording is never played at a live edge.
///
/// ```
/// use skylark_media::hls::{render_recording, RecordedSegment};
/// let seg = |n: u32, disc| RecordedSegment {
///     uri: format!("seg{n}.m4s"), duration: 2.0, map_uri: "init1.mp4".into(), discontinuity: disc,
/// };
/// let text = render_recording(&[seg(0, false), seg(1, true)], true);
/// assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
/// assert!(text.contains("seg0.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:2.00000,\nseg1.m4s\n"));
/// assert!(text.ends_with("#EXT-X-ENDLIST\n"));
/// ```
pub fn render_recording(segments: &[RecordedSegment], ended: bool) -> String {
    let target = segments
        .iter()
        .map(|s| s.duration.ceil() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let kind = if ended { "VOD" } else { "EVENT" };
    let mut o = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:{kind}\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    let mut map: Option<&str> = None;
    for (i, s) in segments.iter().enumerate() {
        if s.discontinuity && i > 0 {
            o.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if map != Some(s.map_uri.as_str()) {
            let _ = writeln!(o, "#EXT-X-MAP:URI=\"{}\"", s.map_uri);
            map = Some(&s.map_uri);
        }
        let _ = writeln!(o, "#EXTINF:{:.5},\n{}", s.duration, s.uri);
    }
    if ended {
        o.push_str("#EXT-X-ENDLIST\n");
    }
    o
}

/// `2026-11-24T15:04:05.123Z` from epoch milliseconds (proleptic Gregorian, UTC).
pub fn format_pdt(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Epoch milliseconds from `2026-11-24T15:04:05.123Z` (what [`format_pdt`] writes; the
/// fraction may have 0–3 digits), or `None`.
pub fn parse_pdt(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    if frac.is_empty() || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
    if !(0..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&min)
        || !(0..=60).contains(&sec)
    {
        return None;
    }
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of `format_pdt`'s.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 + sec) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdt_parses_what_it_formats() {
        for ms in [0, 951_782_400_123, 1_795_533_260_757, -86_400_001] {
            assert_eq!(parse_pdt(&format_pdt(ms)), Some(ms), "{}", format_pdt(ms));
        }
        assert_eq!(parse_pdt("2026-11-24T15:14:20.7Z"), Some(1_795_533_260_700));
        assert_eq!(parse_pdt("2026-11-24T15:14:20Z"), Some(1_795_533_260_000));
        for bad in [
            "",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-11-24T15:14:20.1234Z",
            "x-y-zTa:b:cZ",
        ] {
            assert_eq!(parse_pdt(bad), None, "{bad}");
        }
    }

    fn seg(n: u64, parts: usize, complete: bool) -> Segment {
        Segment {
            uri: format!("seg{n}.m4s"),
            duration: parts as f64 * 0.5,
            program_date_time_ms: 1_795_533_260_000 + n as i64 * 2000,
            discontinuity: false,
            independent: true,
            parts: (0..parts)
                .map(|p| Part {
                    uri: format!("seg{n}.{p}.m4s"),
                    duration: 0.5,
                    independent: p == 0,
                })
                .collect(),
            complete,
            map_uri: None,
        }
    }

    #[test]
    fn pdt_formats_utc() {
        assert_eq!(format_pdt(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_pdt(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_pdt(1_795_533_260_757), "2026-11-24T15:14:20.757Z");
    }

    #[test]
    fn golden_live_playlist() {
        let mut pl = MediaPlaylist::new(2.0, 0.5);
        pl.media_sequence = 5;
        pl.segments = vec![seg(5, 4, true), seg(6, 2, false)];
        pl.preload_hint = Some("seg6.2.m4s".into());
        pl.rendition_reports.push(RenditionReport {
            uri: "../l/index.m3u8".into(),
            last_msn: 6,
            last_part: 1,
        });
        let expected = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=0.50000
#EXT-X-MEDIA-SEQUENCE:5
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-24T15:14:30.000Z
#EXT-X-PART:DURATION=0.50000,URI=\"seg5.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI=\"seg5.1.m4s\"
#EXT-X-PART:DURATION=0.50000,URI=\"seg5.2.m4s\"
#EXT-X-PART:DURATION=0.50000,URI=\"seg5.3.m4s\"
#EXTINF:2.00000,
seg5.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-24T15:14:32.000Z
#EXT-X-PART:DURATION=0.50000,URI=\"seg6.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI=\"seg6.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg6.2.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../l/index.m3u8\",LAST-MSN=6,LAST-PART=1
";
        assert_eq!(pl.render(), expected);
        assert_eq!(pl.last_part(), Some((6, 1)));
    }

    /// What delta updates save on a 30-minute window (docs/benchmarks.md): 900 segments
    /// of 2 s with 200 ms parts; a blocking reload answered with a delta update lists
    /// the last 12 s only.
    #[test]
    fn a_thirty_minute_window_reloads_small() {
        let mut pl = MediaPlaylist::new(2.0, 0.2);
        pl.delta_updates = true;
        pl.media_sequence = 10_000;
        pl.segments = (10_000..10_900)
            .map(|n| {
                let mut s = seg(n, 10, true);
                s.parts.iter_mut().for_each(|p| p.duration = 0.2);
                s.duration = 2.0;
                s
            })
            .collect();
        pl.segments.last_mut().unwrap().complete = false;
        pl.preload_hint = Some("seg10899.10.m4s".into());
        let (full, delta) = (pl.render(), pl.render_delta());
        println!(
            "30 min window: full playlist {} bytes, delta update {} bytes ({} segments skipped)",
            full.len(),
            delta.len(),
            pl.skippable()
        );
        assert_eq!(pl.skippable(), 894);
        assert!(
            delta.len() * 30 < full.len(),
            "{} vs {}",
            delta.len(),
            full.len()
        );
    }

    /// A new publisher's init has its own URI: `EXT-X-MAP` again after the discontinuity.
    #[test]
    fn init_changes_are_mapped_where_they_happen() {
        let mut pl = MediaPlaylist::new(2.0, 0.5);
        pl.segments = (0..4).map(|n| seg(n, 4, true)).collect();
        for (n, s) in pl.segments.iter_mut().enumerate() {
            s.map_uri = Some(if n < 2 { "init1.mp4" } else { "init2.mp4" }.into());
        }
        pl.segments[2].discontinuity = true;
        let t = pl.render();
        let maps: Vec<&str> = t.lines().filter(|l| l.starts_with("#EXT-X-MAP")).collect();
        assert_eq!(
            maps,
            [
                "#EXT-X-MAP:URI=\"init1.mp4\"",
                "#EXT-X-MAP:URI=\"init2.mp4\""
            ]
        );
        assert!(
            t.contains("seg1.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n"),
            "{t}"
        );
        assert!(!t.contains("init.mp4"), "{t}");
    }

    /// The tags of a segment whose init changes are listed ahead of the preload hint of
    /// its first part, and stay with it once the part is in; blocking reloads still wait
    /// for the part itself.
    #[test]
    fn a_new_init_is_listed_ahead_of_the_hint_of_its_first_part() {
        let mut pl = MediaPlaylist::new(2.0, 0.5);
        pl.next_init("init1.mp4".into(), false);
        pl.media_sequence = 5;
        for n in 5..7 {
            pl.open_segment(seg(n, 4, true));
        }
        pl.preload_hint = Some("seg7.0.m4s".into());
        pl.next_init("init2.mp4".into(), true);
        let before = pl.render();
        assert!(
            before.ends_with(
                "seg6.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg7.0.m4s\"\n"
            ),
            "{before}"
        );
        assert!(!pl.has(7, Some(0)), "a blocking reload waits for the part");
        pl.open_segment(seg(7, 1, false));
        pl.preload_hint = Some("seg7.1.m4s".into());
        assert!(pl.has(7, Some(0)));
        let after = pl.render();
        assert!(
            after.contains(
                "seg6.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n\
                 #EXT-X-PROGRAM-DATE-TIME:2026-11-24T15:14:34.000Z\n\
                 #EXT-X-PART:DURATION=0.50000,URI=\"seg7.0.m4s\",INDEPENDENT=YES\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg7.1.m4s\"\n"
            ),
            "{after}"
        );
        assert_eq!(after.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        use check::{check_media, check_reload, parse_media};
        let (before, after) = (parse_media(&before).unwrap(), parse_media(&after).unwrap());
        assert_eq!(check_media(&before), vec![]);
        assert_eq!(check_reload(&before, &after), vec![]);
        // Listed only with its part, after the hint, the new init broke the players.
        let mut late = before.clone();
        late.next_segment = None;
        let found = check_reload(&late, &after);
        assert_eq!(
            found.iter().map(|v| v.rule).collect::<Vec<_>>(),
            ["hint-tags"],
            "{found:?}"
        );
        // The window slides past the discontinuity: segment 7 keeps its discontinuity
        // sequence number.
        let open = &mut pl.segments[2];
        open.parts.push(Part {
            uri: "seg7.1.m4s".into(),
            duration: 0.5,
            independent: false,
        });
        open.duration = 1.0;
        open.complete = true;
        pl.preload_hint = Some("seg8.0.m4s".into());
        while pl.segments.len() > 1 {
            pl.remove_oldest();
        }
        assert_eq!((pl.media_sequence, pl.discontinuity_sequence), (7, 1));
        let slid = parse_media(&pl.render()).unwrap();
        assert_eq!(check_reload(&after, &slid), vec![]);
    }

    #[test]
    fn blocking_reload_condition() {
        let mut pl = MediaPlaylist::new(2.0, 0.5);
        pl.media_sequence = 10;
        pl.segments = vec![seg(10, 4, true), seg(11, 1, false)];
        assert!(pl.has(9, None), "slid out of the window: answer at once");
        assert!(pl.has(10, None));
        assert!(pl.has(11, Some(0)));
        assert!(!pl.has(11, Some(1)));
        assert!(!pl.has(11, None));
        assert!(!pl.has(12, Some(0)));
        pl.ended = true;
        assert!(pl.has(99, Some(3)), "an ended stream never blocks");
        assert!(pl.render().ends_with("#EXT-X-ENDLIST\n"));
        assert!(!pl.render().contains("PRELOAD-HINT"));
    }

    #[test]
    fn discontinuity_and_old_segments_without_parts() {
        let mut pl = MediaPlaylist::new(2.0, 0.5);
        pl.segments = (0..5).map(|n| seg(n, 4, true)).collect();
        pl.segments[4].discontinuity = true;
        pl.discontinuity_sequence = 2;
        let t = pl.render();
        assert!(t.contains("#EXT-X-DISCONTINUITY-SEQUENCE:2\n"));
        assert_eq!(t.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(
            !t.contains("seg0.0.m4s"),
            "parts only for the newest segments"
        );
        assert!(t.contains("seg4.3.m4s"));
        assert_eq!(t.matches("#EXTINF").count(), 5);
    }

    /// RFC 8216 §4.3.3.1: every `EXTINF` rounded to the nearest integer ≤ the target;
    /// `HOLD-BACK` follows the target, the part figures don't.
    #[test]
    fn target_duration_covers_the_longest_segment_and_never_shrinks() {
        let mut pl = MediaPlaylist::new(2.0, 0.2);
        pl.segments = vec![seg(0, 4, true), seg(1, 4, true)];
        pl.segments[0].duration = 2.49;
        pl.note_segment(2.49);
        assert!(
            pl.render().contains("#EXT-X-TARGETDURATION:2\n"),
            "2.49 rounds to 2"
        );
        pl.segments[1].duration = 3.2;
        let t = pl.render();
        assert!(
            t.contains("#EXT-X-TARGETDURATION:3\n"),
            "covered from the window alone:\n{t}"
        );
        pl.note_segment(3.2);
        pl.segments.remove(0);
        pl.segments.remove(0);
        pl.segments.push(seg(2, 4, true));
        let t = pl.render();
        assert!(
            t.contains("#EXT-X-TARGETDURATION:3\n"),
            "never shrinks:\n{t}"
        );
        assert!(t.contains("PART-HOLD-BACK=0.600,HOLD-BACK=9.000"), "{t}");
        assert!(t.contains("#EXT-X-PART-INF:PART-TARGET=0.20000\n"), "{t}");
        pl.note_segment(2.5);
        assert_eq!(pl.target_duration_secs(), 3, "2.5 rounds up to 3");
        pl.note_segment(f64::NAN);
        assert_eq!(pl.target_duration_secs(), 3);
    }

    /// What the packager lists for a three-layer simulcast publisher: entries built from
    /// each layer's init tracks (x264 SPSs of three sizes), best first.
    #[test]
    fn golden_multivariant_from_simulcast_layers() {
        use crate::fmp4::Track;
        use crate::h264::AvcDecoderConfigurationRecord;
        const PPS: [u8; 4] = [0x68, 0xce, 0x38, 0x80];
        const SPS_1280X720: &[u8] = &[
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35,
        ];
        const SPS_640X360: &[u8] = &[
            0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
            0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
        ];
        const SPS_320X180: &[u8] = &[
            0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
        ];
        let layer = |sps: &[u8]| {
            let rec = AvcDecoderConfigurationRecord::from_parameter_sets(sps, &PPS).unwrap();
            vec![Track::avc(1, rec).unwrap(), Track::opus(2, 2)]
        };
        let t = render_multivariant(&[
            Variant::from_tracks("f/media.m3u8", 2_480_000, &layer(SPS_1280X720)),
            Variant::from_tracks("h/media.m3u8", 720_000, &layer(SPS_640X360)),
            Variant::from_tracks("q/media.m3u8", 210_000, &layer(SPS_320X180)[..1]),
        ]);
        assert_eq!(
            t,
            "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-STREAM-INF:BANDWIDTH=2480000,CODECS=\"avc1.42c01f,opus\",RESOLUTION=1280x720,CLOSED-CAPTIONS=NONE
f/media.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=720000,CODECS=\"avc1.42c01e,opus\",RESOLUTION=640x360,CLOSED-CAPTIONS=NONE
h/media.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=210000,CODECS=\"avc1.42c00d\",RESOLUTION=320x180,CLOSED-CAPTIONS=NONE
q/media.m3u8
"
        );
    }

    #[test]
    fn golden_multivariant() {
        let t = render_multivariant(&[
            Variant {
                uri: "h/index.m3u8".into(),
                bandwidth: 2_500_000,
                codecs: "avc1.42e01f,opus".into(),
                resolution: Some((1280, 720)),
                frame_rate: Some(30.0),
            },
            Variant {
                uri: "l/index.m3u8".into(),
                bandwidth: 400_000,
                codecs: "avc1.42e01f,opus".into(),
                resolution: Some((320, 180)),
                frame_rate: None,
            },
        ]);
        assert_eq!(
            t,
            "#EXTM3U\n#EXT-X-VERSION:9\n\
#EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS=\"avc1.42e01f,opus\",RESOLUTION=1280x720,FRAME-RATE=30.000,CLOSED-CAPTIONS=NONE\nh/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=400000,CODECS=\"avc1.42e01f,opus\",RESOLUTION=320x180,CLOSED-CAPTIONS=NONE\nl/index.m3u8\n"
        );
    }
}
