//! Checking LL-HLS output against the rules players rely on: RFC 8216bis
//! (draft-pantos-hls-rfc8216bis-16, "HLS" below), Apple's HLS Authoring
//! Specification, and the media timing read back from the fMP4
//! ([`fmp4::read`](crate::fmp4::read)). Each rule has an id and its source in
//! [`RULES`]; a check returns every [`Violation`] it finds, never panics.
//!
//! It parses playlists as text, independently of the writer in this module, so it
//! judges what players receive. Used by the packager's tests and by the end-to-end
//! checker of real publishes (`tests/hls_rules.rs`).
//!
//! ```
//! use skylark_media::hls::check::{check_media, parse_media};
//! let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
//!     #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.660,HOLD-BACK=6.000\n\
//!     #EXT-X-PART-INF:PART-TARGET=0.22\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-MAP:URI=\"init1.mp4\"\n\
//!     #EXT-X-PROGRAM-DATE-TIME:2026-11-24T15:14:18.000Z\n#EXTINF:2.0,\nseg3.m4s\n\
//!     #EXT-X-PROGRAM-DATE-TIME:2026-11-24T15:14:20.000Z\n\
//!     #EXT-X-PART:DURATION=0.2,URI=\"seg4.0.m4s\",INDEPENDENT=YES\n\
//!     #EXT-X-PART:DURATION=0.1,URI=\"seg4.1.m4s\"\n\
//!     #EXT-X-PART:DURATION=0.2,URI=\"seg4.2.m4s\"\n\
//!     #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg4.3.m4s\"\n";
//! let pl = parse_media(text)?;
//! let found = check_media(&pl);
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].rule, "part-min");
//! # Ok::<(), String>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use super::parse_pdt;
use crate::fmp4::read::{TrackInfo, TrackRun};

/// A rule a check enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Short id, as in [`Violation::rule`].
    pub id: &'static str,
    /// Where it comes from.
    pub source: &'static str,
    /// What it says.
    pub text: &'static str,
}

/// Every rule checked here (README "Design notes" lists the Apple ones too).
pub const RULES: &[Rule] = &[
    Rule { id: "parse", source: "HLS §4.1, §4.2", text: "starts with #EXTM3U; tags and attribute lists parse; a URI line follows each EXTINF" },
    Rule { id: "version", source: "HLS §4.4.1.2, §7", text: "EXT-X-VERSION present, ≥ 6 with EXT-X-MAP" },
    Rule { id: "extinf-target", source: "HLS §4.4.3.1", text: "every EXTINF rounded to the nearest integer ≤ EXT-X-TARGETDURATION" },
    Rule { id: "part-inf", source: "HLS §4.4.3.7", text: "EXT-X-PART-INF with PART-TARGET when the playlist has EXT-X-PART" },
    Rule { id: "part-max", source: "HLS §4.4.4.9", text: "every part's DURATION ≤ PART-TARGET" },
    Rule { id: "part-min", source: "HLS §4.4.4.9", text: "every part ≥ 85 % of PART-TARGET, except INDEPENDENT=YES parts and a segment's last part" },
    Rule { id: "part-tag-order", source: "HLS §4.4.4.9", text: "a segment's EXT-X-PROGRAM-DATE-TIME, EXT-X-MAP and EXT-X-DISCONTINUITY come before its first EXT-X-PART" },
    Rule { id: "complete-segment", source: "players: Shaka Player 5.2, hls.js", text: "a live media playlist lists at least one complete segment, not the open segment's parts alone (Shaka 5.2 failed to load such a playlist, hls.js reports levelEmptyError)" },
    Rule { id: "parts-sum", source: "HLS §4.4.4.9", text: "a segment's parts add up to its EXTINF" },
    Rule { id: "independent-first-part", source: "HLS §4.4.4.9", text: "each segment's first part is INDEPENDENT=YES" },
    Rule { id: "parts-not-independent-segments", source: "players: video.js (VHS 3.17)", text: "a playlist with parts has no EXT-X-INDEPENDENT-SEGMENTS: VHS then takes every part as independent and starts playback mid-GOP (holes in Chromium's buffer, stalls)" },
    Rule { id: "server-control", source: "HLS §4.4.3.8, §6.2.5.2; Apple LL-HLS", text: "parts need CAN-BLOCK-RELOAD=YES and PART-HOLD-BACK ≥ 3 × PART-TARGET (MUST ≥ 2, SHOULD ≥ 3); HOLD-BACK ≥ 3 × TARGETDURATION" },
    Rule { id: "parts-edge", source: "HLS §4.4.4.9", text: "EXT-X-PART only on segments starting within three target durations of the playlist's end (the open segment aside): a long (DVR) window lists its older segments whole" },
    Rule { id: "skip", source: "HLS §4.4.3.8, §4.4.5.2, §6.2.5.1", text: "CAN-SKIP-UNTIL ≥ 6 × TARGETDURATION; EXT-X-SKIP only where the server offers CAN-SKIP-UNTIL, with version ≥ 9, before the first segment; the segments after it last at least CAN-SKIP-UNTIL (nothing nearer the end is skipped); a delta update applied to the playlist before it gives the full playlist" },
    Rule { id: "preload-hint", source: "HLS §4.4.5.3; Apple LL-HLS", text: "a live playlist with parts names the next part in one EXT-X-PRELOAD-HINT:TYPE=PART; across a reload, a hinted part of a segment now complete is one of its parts (Shaka Player prefetches the hint)" },
    Rule { id: "pdt-steps", source: "HLS §4.4.4.6; Apple authoring (PDT in live playlists)", text: "EXT-X-PROGRAM-DATE-TIME on every segment; without a discontinuity consecutive ones differ by the EXTINF before (±1 ms)" },
    Rule { id: "reload", source: "HLS §6.2.1, §6.2.2; players: hls.js 1.7", text: "across reloads MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE never decrease; a segment's URI, EXTINF and parts never change; a complete segment stays complete; a segment's discontinuity sequence number (DISCONTINUITY-SEQUENCE plus the EXT-X-DISCONTINUITY tags up to it) never changes as the window slides (hls.js fails: \"discontinuity sequence mismatch\")" },
    Rule { id: "hint-tags", source: "HLS §4.4.4.9, §4.4.5.3; players: Shaka Player 5.2, hls.js 1.7, video.js 8", text: "a segment's first part, once listed, has the EXT-X-DISCONTINUITY and EXT-X-MAP that the playlist hinting it listed ahead of its EXT-X-PRELOAD-HINT (none there: no discontinuity, the init in effect), so a player that prefetches the hint knows its init (Shaka appended it under the old init: decode error 3016); no such tags after the last segment of an ended playlist" },
    Rule { id: "rendition-report", source: "HLS §4.4.5.4, §6.2.5.1; Apple LL-HLS", text: "each media playlist reports every other rendition, and the part it names exists" },
    Rule { id: "stream-inf", source: "HLS §4.4.6.2; Apple authoring", text: "each variant has BANDWIDTH, CODECS, RESOLUTION (video) and CLOSED-CAPTIONS=NONE when it has no captions" },
    Rule { id: "media-duration", source: "HLS §4.4.4.1, §4.4.4.9", text: "each part's and segment's video samples (tfdt + trun durations) last its DURATION / EXTINF; a segment is its parts' bytes" },
    Rule { id: "media-contiguous", source: "HLS §6.2.1; CMAF", text: "each track's next fragment starts where the previous one ended (tfdt), bar discontinuities" },
    Rule { id: "media-av-aligned", source: "muxed CMAF; MSE buffered ranges", text: "a part's audio starts and ends within one audio frame of its video" },
    Rule { id: "media-independent", source: "HLS §4.4.2.1, §4.4.4.9", text: "INDEPENDENT=YES exactly when the part's first video sample is a sync sample; segments start with one" },
    Rule { id: "media-pdt", source: "HLS §4.4.4.6", text: "EXT-X-PROGRAM-DATE-TIME minus the segment's media start time is constant (±1.5 ms) between discontinuities" },
];

/// One broken rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The [`Rule::id`].
    pub rule: &'static str,
    /// What was found, with the values.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

fn violation(rule: &'static str, detail: String) -> Violation {
    Violation { rule, detail }
}

/// A part as a playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartEntry {
    /// `URI`.
    pub uri: String,
    /// `DURATION`, seconds.
    pub duration: f64,
    /// `INDEPENDENT=YES`.
    pub independent: bool,
}

/// A media segment as a playlist lists it: complete (with `EXTINF` and a URI) or the
/// open one at the live edge (parts only).
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEntry {
    /// Media sequence number.
    pub msn: u64,
    /// The segment URI; `None` while open.
    pub uri: Option<String>,
    /// `EXTINF`, seconds; `None` while open.
    pub duration: Option<f64>,
    /// Its parts, if listed.
    pub parts: Vec<PartEntry>,
    /// `EXT-X-PROGRAM-DATE-TIME`, epoch ms.
    pub pdt_ms: Option<i64>,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// Its discontinuity sequence number, as players count it: `EXT-X-DISCONTINUITY-SEQUENCE`
    /// plus the `EXT-X-DISCONTINUITY` tags up to and including its own (in a delta update
    /// as parsed, bar the skipped segments' tags: [`merge_delta`] counts them).
    pub discontinuity_sequence: u64,
    /// The `EXT-X-MAP` URI in effect.
    pub map_uri: Option<String>,
}

/// The tags of the segment after the last one listed, which has no part yet: what a
/// live playlist lists ahead of the preload hint of its first part.
#[derive(Debug, Clone, PartialEq)]
pub struct NextSegmentEntry {
    /// Its media sequence number.
    pub msn: u64,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// The `EXT-X-MAP` URI in effect for it.
    pub map_uri: Option<String>,
}

/// `EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEntry {
    /// `URI` of the other rendition's playlist, as written.
    pub uri: String,
    /// `LAST-MSN`.
    pub last_msn: u64,
    /// `LAST-PART`.
    pub last_part: Option<u64>,
}

/// A media playlist as its text says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylistText {
    /// `EXT-X-VERSION`.
    pub version: Option<u32>,
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: Option<u64>,
    /// `EXT-X-PART-INF:PART-TARGET`.
    pub part_target: Option<f64>,
    /// `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`.
    pub can_block_reload: bool,
    /// `PART-HOLD-BACK`.
    pub part_hold_back: Option<f64>,
    /// `HOLD-BACK`.
    pub hold_back: Option<f64>,
    /// `CAN-SKIP-UNTIL` (the Skip Boundary), seconds.
    pub can_skip_until: Option<f64>,
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS` of a delta update (0 in a full playlist): the
    /// first listed segment is `media_sequence + skipped`.
    pub skipped: u64,
    /// `EXT-X-MEDIA-SEQUENCE` (0 when absent).
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (0 when absent).
    pub discontinuity_sequence: u64,
    /// `EXT-X-INDEPENDENT-SEGMENTS`.
    pub independent_segments: bool,
    /// The segments, oldest first.
    pub segments: Vec<SegmentEntry>,
    /// Tags after the last segment, of the next one (`EXT-X-DISCONTINUITY`, `EXT-X-MAP`,
    /// `EXT-X-PROGRAM-DATE-TIME`), if any.
    pub next_segment: Option<NextSegmentEntry>,
    /// `EXT-X-PRELOAD-HINT` URIs of `TYPE=PART`.
    pub preload_parts: Vec<String>,
    /// `EXT-X-RENDITION-REPORT`s.
    pub reports: Vec<ReportEntry>,
    /// `EXT-X-ENDLIST`.
    pub ended: bool,
    /// Tag-order problems met while parsing (rule `part-tag-order`).
    pub order_problems: Vec<String>,
    /// `EXT-X-SKIP` came after a segment's tags (rule `skip`).
    pub skip_misplaced: bool,
}

/// `NAME=value` pairs of an attribute list, quotes removed.
fn attributes(list: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("attribute without '=' in {list:?}"))?;
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q
                .find('"')
                .ok_or_else(|| format!("unterminated quote in {list:?}"))?;
            (
                &q[..end],
                q[end + 1..].strip_prefix(',').unwrap_or(&q[end + 1..]),
            )
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.insert(name.trim().to_string(), value.to_string());
        rest = next;
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{what}: not a number: {v:?}"))
}

fn attr_f64(a: &HashMap<String, String>, name: &str, tag: &str) -> Result<Option<f64>, String> {
    a.get(name)
        .map(|v| number::<f64>(v, &format!("{tag} {name}")))
        .transpose()
}

/// Parses a media playlist; `Err` names the first line it could not read.
pub fn parse_media(text: &str) -> Result<MediaPlaylistText, String> {
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("#EXTM3U") {
        return Err("does not start with #EXTM3U".into());
    }
    let mut pl = MediaPlaylistText::default();
    // Tags of the segment being read.
    let mut pdt = None;
    let mut disc = false;
    let mut map: Option<String> = None;
    // An EXT-X-MAP since the last segment.
    let mut map_listed = false;
    let mut parts: Vec<PartEntry> = Vec::new();
    let mut extinf: Option<f64> = None;
    let mut next_msn = None;
    // EXT-X-DISCONTINUITY tags so far.
    let mut discontinuities: u64 = 0;
    for line in lines.map(str::trim_end).filter(|l| !l.is_empty()) {
        let msn = *next_msn.get_or_insert(pl.media_sequence);
        let (tag, value) = line.split_once(':').unwrap_or((line, ""));
        let after_parts = |what: &str, pl: &mut MediaPlaylistText| {
            pl.order_problems.push(format!(
                "{what} after the first EXT-X-PART of segment {msn}"
            ));
        };
        match tag {
            "#EXT-X-VERSION" => pl.version = Some(number(value, tag)?),
            "#EXT-X-TARGETDURATION" => pl.target_duration = Some(number(value, tag)?),
            "#EXT-X-MEDIA-SEQUENCE" => {
                pl.media_sequence = number(value, tag)?;
                next_msn = Some(pl.media_sequence);
            }
            "#EXT-X-DISCONTINUITY-SEQUENCE" => pl.discontinuity_sequence = number(value, tag)?,
            "#EXT-X-INDEPENDENT-SEGMENTS" => pl.independent_segments = true,
            "#EXT-X-ENDLIST" => pl.ended = true,
            "#EXT-X-SERVER-CONTROL" => {
                let a = attributes(value)?;
                pl.can_block_reload = a.get("CAN-BLOCK-RELOAD").map(String::as_str) == Some("YES");
                pl.part_hold_back = attr_f64(&a, "PART-HOLD-BACK", tag)?;
                pl.hold_back = attr_f64(&a, "HOLD-BACK", tag)?;
                pl.can_skip_until = attr_f64(&a, "CAN-SKIP-UNTIL", tag)?;
            }
            "#EXT-X-SKIP" => {
                if !pl.segments.is_empty() || !parts.is_empty() || extinf.is_some() {
                    pl.skip_misplaced = true;
                }
                let a = attributes(value)?;
                pl.skipped = number(
                    a.get("SKIPPED-SEGMENTS").map_or("", String::as_str),
                    "SKIPPED-SEGMENTS",
                )?;
                next_msn = Some(pl.media_sequence.saturating_add(pl.skipped));
            }
            "#EXT-X-PART-INF" => {
                pl.part_target = attr_f64(&attributes(value)?, "PART-TARGET", tag)?
            }
            "#EXT-X-MAP" => {
                if !parts.is_empty() {
                    after_parts("EXT-X-MAP", &mut pl);
                }
                map = Some(
                    attributes(value)?
                        .remove("URI")
                        .ok_or("EXT-X-MAP without URI")?,
                );
                map_listed = true;
            }
            "#EXT-X-PROGRAM-DATE-TIME" => {
                if !parts.is_empty() {
                    after_parts("EXT-X-PROGRAM-DATE-TIME", &mut pl);
                }
                pdt = Some(parse_pdt(value).ok_or_else(|| format!("bad date {value:?}"))?);
            }
            "#EXT-X-DISCONTINUITY" => {
                if !parts.is_empty() {
                    after_parts("EXT-X-DISCONTINUITY", &mut pl);
                }
                if !disc {
                    discontinuities = discontinuities.saturating_add(1);
                }
                disc = true;
            }
            "#EXT-X-PART" => {
                let mut a = attributes(value)?;
                parts.push(PartEntry {
                    uri: a.remove("URI").ok_or("EXT-X-PART without URI")?,
                    duration: attr_f64(&a, "DURATION", tag)?
                        .ok_or("EXT-X-PART without DURATION")?,
                    independent: a.get("INDEPENDENT").map(String::as_str) == Some("YES"),
                });
            }
            "#EXTINF" => {
                let d = value.split(',').next().unwrap_or_default();
                extinf = Some(number(d, tag)?);
            }
            "#EXT-X-PRELOAD-HINT" => {
                let mut a = attributes(value)?;
                if a.get("TYPE").map(String::as_str) == Some("PART") {
                    pl.preload_parts
                        .push(a.remove("URI").ok_or("EXT-X-PRELOAD-HINT without URI")?);
                }
            }
            "#EXT-X-RENDITION-REPORT" => {
                let a = attributes(value)?;
                pl.reports.push(ReportEntry {
                    uri: a
                        .get("URI")
                        .cloned()
                        .ok_or("EXT-X-RENDITION-REPORT without URI")?,
                    last_msn: number(a.get("LAST-MSN").map_or("", String::as_str), "LAST-MSN")?,
                    last_part: a
                        .get("LAST-PART")
                        .map(|v| number(v, "LAST-PART"))
                        .transpose()?,
                });
            }
            t if t.starts_with('#') => {} // other tags and comments
            uri => {
                let duration = extinf
                    .take()
                    .ok_or_else(|| format!("URI line {uri:?} without EXTINF"))?;
                pl.segments.push(SegmentEntry {
                    msn,
                    uri: Some(uri.to_string()),
                    duration: Some(duration),
                    parts: std::mem::take(&mut parts),
                    pdt_ms: pdt.take(),
                    discontinuity: std::mem::take(&mut disc),
                    discontinuity_sequence: pl
                        .discontinuity_sequence
                        .saturating_add(discontinuities),
                    map_uri: map.clone(),
                });
                map_listed = false;
                next_msn = Some(msn.saturating_add(1));
            }
        }
    }
    if extinf.is_some() {
        return Err("EXTINF without a URI line".into());
    }
    let msn = next_msn.unwrap_or(pl.media_sequence);
    if !parts.is_empty() {
        pl.segments.push(SegmentEntry {
            msn,
            uri: None,
            duration: None,
            parts,
            pdt_ms: pdt,
            discontinuity: disc,
            discontinuity_sequence: pl.discontinuity_sequence.saturating_add(discontinuities),
            map_uri: map,
        });
    } else if disc || map_listed || pdt.is_some() {
        pl.next_segment = Some(NextSegmentEntry {
            msn,
            discontinuity: disc,
            map_uri: map,
        });
    }
    Ok(pl)
}

/// Rounding of a 5-decimal duration, per value summed.
const ROUNDING: f64 = 5.1e-6;

/// Checks one media playlist on its own (see [`RULES`]).
pub fn check_media(pl: &MediaPlaylistText) -> Vec<Violation> {
    let mut v = Vec::new();
    let has_map = pl.segments.iter().any(|s| s.map_uri.is_some());
    match pl.version {
        None => v.push(violation("version", "no EXT-X-VERSION".into())),
        Some(n) if has_map && n < 6 => v.push(violation(
            "version",
            format!("EXT-X-MAP needs version 6, says {n}"),
        )),
        _ => {}
    }
    if pl.independent_segments && pl.segments.iter().any(|s| !s.parts.is_empty()) {
        v.push(violation(
            "parts-not-independent-segments",
            "EXT-X-INDEPENDENT-SEGMENTS in a playlist with parts".into(),
        ));
    }
    for p in &pl.order_problems {
        v.push(violation("part-tag-order", p.clone()));
    }
    let target = pl.target_duration;
    if target.is_none() {
        v.push(violation("extinf-target", "no EXT-X-TARGETDURATION".into()));
    }
    if !pl.segments.iter().any(|s| s.uri.is_some()) {
        v.push(violation(
            "complete-segment",
            "no complete segment (EXTINF), only parts of the open one".into(),
        ));
    }
    let has_parts = pl.segments.iter().any(|s| !s.parts.is_empty());
    let part_target = pl.part_target;
    if has_parts && part_target.is_none() {
        v.push(violation(
            "part-inf",
            "EXT-X-PART without EXT-X-PART-INF:PART-TARGET".into(),
        ));
    }
    let mut prev: Option<&SegmentEntry> = None;
    for s in &pl.segments {
        if let (Some(d), Some(t)) = (s.duration, target) {
            if d.round() as u64 > t {
                v.push(violation(
                    "extinf-target",
                    format!(
                        "segment {} EXTINF {d} rounds above TARGETDURATION {t}",
                        s.msn
                    ),
                ));
            }
        }
        if let Some(pt) = part_target {
            for (i, p) in s.parts.iter().enumerate() {
                if p.duration > pt + ROUNDING {
                    v.push(violation(
                        "part-max",
                        format!("{} lasts {} > PART-TARGET {pt}", p.uri, p.duration),
                    ));
                }
                // The open segment's newest part may turn out to be its last.
                let last = i + 1 == s.parts.len();
                if !p.independent && !last && p.duration < 0.85 * pt - ROUNDING {
                    v.push(violation(
                        "part-min",
                        format!(
                            "{} lasts {} < 85 % of PART-TARGET {pt} and is neither independent nor its segment's last",
                            p.uri, p.duration
                        ),
                    ));
                }
            }
        }
        if let (Some(d), false) = (s.duration, s.parts.is_empty()) {
            let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
            if (sum - d).abs() > ROUNDING * (s.parts.len() + 1) as f64 {
                v.push(violation(
                    "parts-sum",
                    format!(
                        "segment {} EXTINF {d} but its parts add up to {sum:.5}",
                        s.msn
                    ),
                ));
            }
        }
        if s.parts.first().is_some_and(|p| !p.independent) {
            v.push(violation(
                "independent-first-part",
                format!("segment {}'s first part is not INDEPENDENT=YES", s.msn),
            ));
        }
        match (prev, s.pdt_ms) {
            (_, None) => v.push(violation(
                "pdt-steps",
                format!("segment {} has no EXT-X-PROGRAM-DATE-TIME", s.msn),
            )),
            (Some(p), Some(t)) if !s.discontinuity => {
                if let (Some(pt), Some(pd)) = (p.pdt_ms, p.duration) {
                    let step = (t - pt) as f64 / 1000.0;
                    if (step - pd).abs() > 0.001 + ROUNDING {
                        v.push(violation(
                            "pdt-steps",
                            format!(
                                "segment {} starts {step:.3} s after segment {}, whose EXTINF is {pd}",
                                s.msn, p.msn
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        prev = Some(s);
    }
    check_skip(&mut v, pl);
    // How far each segment starts from the playlist's end (an open one: its parts).
    let length = |s: &SegmentEntry| {
        s.duration
            .unwrap_or_else(|| s.parts.iter().map(|p| p.duration).sum())
    };
    if let Some(t) = target {
        let mut from_end = 0.0;
        for (i, s) in pl.segments.iter().enumerate().rev() {
            from_end += length(s);
            let reach = 3.0 * t as f64 + ROUNDING * (pl.segments.len() - i) as f64;
            if i + 1 < pl.segments.len() && !s.parts.is_empty() && from_end > reach {
                v.push(violation(
                    "parts-edge",
                    format!(
                        "segment {} lists parts but starts {from_end:.3} s from the end (> 3 × TARGETDURATION {t})",
                        s.msn
                    ),
                ));
            }
        }
    }
    if has_parts {
        let pt = part_target.unwrap_or(0.0);
        if !pl.can_block_reload {
            v.push(violation(
                "server-control",
                "parts without CAN-BLOCK-RELOAD=YES".into(),
            ));
        }
        match pl.part_hold_back {
            Some(h) if h + 1e-9 >= 3.0 * pt => {}
            h => v.push(violation(
                "server-control",
                format!("PART-HOLD-BACK {h:?} < 3 × PART-TARGET {pt}"),
            )),
        }
        if !pl.ended && pl.preload_parts.len() != 1 {
            v.push(violation(
                "preload-hint",
                format!(
                    "{} EXT-X-PRELOAD-HINT:TYPE=PART in a live playlist",
                    pl.preload_parts.len()
                ),
            ));
        }
    }
    if pl.ended && !pl.segments.is_empty() {
        if let Some(n) = &pl.next_segment {
            v.push(violation(
                "hint-tags",
                format!(
                    "tags of segment {} after the last segment of an ended playlist",
                    n.msn
                ),
            ));
        }
    }
    if let (Some(t), Some(h)) = (target, pl.hold_back) {
        if h + 1e-9 < 3.0 * t as f64 {
            v.push(violation(
                "server-control",
                format!("HOLD-BACK {h} < 3 × TARGETDURATION {t}"),
            ));
        }
    }
    v
}

/// Rule `skip` on one playlist: the Skip Boundary offered, and a delta update's skip.
fn check_skip(v: &mut Vec<Violation>, pl: &MediaPlaylistText) {
    if let (Some(b), Some(t)) = (pl.can_skip_until, pl.target_duration) {
        if b + 1e-9 < 6.0 * t as f64 {
            v.push(violation(
                "skip",
                format!("CAN-SKIP-UNTIL {b} < 6 × TARGETDURATION {t}"),
            ));
        }
    }
    if pl.skip_misplaced {
        v.push(violation(
            "skip",
            "EXT-X-SKIP after a segment's tags".into(),
        ));
    }
    if pl.skipped == 0 {
        return;
    }
    let Some(b) = pl.can_skip_until else {
        v.push(violation(
            "skip",
            "EXT-X-SKIP in a playlist without CAN-SKIP-UNTIL".into(),
        ));
        return;
    };
    if pl.version.is_some_and(|n| n < 9) {
        v.push(violation("skip", "EXT-X-SKIP needs version 9".into()));
    }
    let listed: f64 = pl
        .segments
        .iter()
        .map(|s| {
            s.duration
                .unwrap_or_else(|| s.parts.iter().map(|p| p.duration).sum())
        })
        .sum();
    if listed + ROUNDING * ((pl.segments.len() + 1) as f64) < b {
        v.push(violation(
            "skip",
            format!(
                "{} segments skipped, but those listed last {listed:.3} s < CAN-SKIP-UNTIL {b}: a segment within the Skip Boundary was skipped",
                pl.skipped
            ),
        ));
    }
}

/// The full playlist a player rebuilds from a delta update (`_HLS_skip=YES`): the
/// skipped segments taken from `prev`, the playlist it had. `Err` says which skipped
/// segment `prev` lacks (a player could not apply the update).
pub fn merge_delta(
    prev: &MediaPlaylistText,
    delta: &MediaPlaylistText,
) -> Result<MediaPlaylistText, String> {
    let mut full = delta.clone();
    if delta.skipped == 0 {
        return Ok(full);
    }
    let mut segments = Vec::with_capacity(delta.segments.len() + delta.skipped as usize);
    for msn in delta.media_sequence..delta.media_sequence + delta.skipped {
        let s = prev
            .segments
            .iter()
            .find(|s| s.msn == msn && s.uri.is_some())
            .ok_or_else(|| {
                format!("the delta update skips segment {msn}, which the playlist before it does not list complete")
            })?;
        segments.push(s.clone());
    }
    // The listed segments' discontinuity sequence numbers go on from the skipped ones'.
    let mut dsn = segments.last().map_or(0, |s| s.discontinuity_sequence);
    segments.extend(delta.segments.iter().map(|s| {
        dsn = dsn.saturating_add(u64::from(s.discontinuity));
        SegmentEntry {
            discontinuity_sequence: dsn,
            ..s.clone()
        }
    }));
    full.segments = segments;
    full.skipped = 0;
    Ok(full)
}

/// Rule `skip` across a reload: `delta`, a delta update asked for after `prev`, applies
/// to it, and what it lists agrees with `prev` where both list a segment (init
/// segment and discontinuities included). Also checks the merged playlist as a reload.
pub fn check_delta(prev: &MediaPlaylistText, delta: &MediaPlaylistText) -> Vec<Violation> {
    let merged = match merge_delta(prev, delta) {
        Ok(m) => m,
        Err(e) => return vec![violation("skip", e)],
    };
    let mut v = check_reload(prev, &merged);
    for b in &delta.segments {
        let Some(a) = prev.segments.iter().find(|a| a.msn == b.msn) else {
            continue;
        };
        // A playlist's first segment carries no EXT-X-DISCONTINUITY of its own.
        let first = a.msn == prev.media_sequence || b.msn == delta.media_sequence;
        if a.map_uri != b.map_uri || (a.discontinuity != b.discontinuity && !first) {
            v.push(violation(
                "skip",
                format!(
                    "segment {} after EXT-X-SKIP: EXT-X-MAP {:?}, discontinuity {} where the full playlist had {:?}, {}",
                    b.msn, b.map_uri, b.discontinuity, a.map_uri, a.discontinuity
                ),
            ));
        }
    }
    v
}

/// Checks that `next` is a valid reload of `prev` (rule `reload`).
pub fn check_reload(prev: &MediaPlaylistText, next: &MediaPlaylistText) -> Vec<Violation> {
    let mut v = Vec::new();
    if next.media_sequence < prev.media_sequence {
        v.push(violation(
            "reload",
            format!(
                "MEDIA-SEQUENCE went back from {} to {}",
                prev.media_sequence, next.media_sequence
            ),
        ));
    }
    if next.discontinuity_sequence < prev.discontinuity_sequence {
        v.push(violation(
            "reload",
            "DISCONTINUITY-SEQUENCE went back".into(),
        ));
    }
    // A hint is for the next part; once its segment is complete it must be one of them.
    if let Some((msn, part)) = prev.preload_parts.first().and_then(|u| part_of_uri(u)) {
        let closed = next
            .segments
            .iter()
            .find(|s| s.msn == msn && s.uri.is_some());
        if closed.is_some_and(|s| !s.parts.is_empty() && part >= s.parts.len() as u64) {
            v.push(violation(
                "preload-hint",
                format!("hinted part {msn}.{part}, but segment {msn} completed without it"),
            ));
        }
    }
    check_hinted_segment(&mut v, prev, next);
    for a in &prev.segments {
        let Some(b) = next.segments.iter().find(|b| b.msn == a.msn) else {
            continue;
        };
        // Where both are full playlists (a delta update: `check_delta` merges it first).
        if prev.skipped == 0
            && next.skipped == 0
            && a.discontinuity_sequence != b.discontinuity_sequence
        {
            v.push(violation(
                "reload",
                format!(
                    "segment {}'s discontinuity sequence number went from {} to {}",
                    a.msn, a.discontinuity_sequence, b.discontinuity_sequence
                ),
            ));
        }
        if a.uri.is_some() && (b.uri != a.uri || b.duration != a.duration) {
            v.push(violation(
                "reload",
                format!(
                    "segment {} changed: {:?} {:?} → {:?} {:?}",
                    a.msn, a.uri, a.duration, b.uri, b.duration
                ),
            ));
        }
        // Parts are listed only near the live edge; where both list them, they agree.
        if !b.parts.is_empty() && !b.parts.starts_with(&a.parts) {
            v.push(violation(
                "reload",
                format!("segment {}'s parts changed", a.msn),
            ));
        }
        if a.pdt_ms != b.pdt_ms {
            v.push(violation(
                "reload",
                format!("segment {}'s PROGRAM-DATE-TIME changed", a.msn),
            ));
        }
    }
    v
}

/// Rule `hint-tags` across a reload: the segment whose first part `prev` hinted, once
/// `next` lists it, starts with the discontinuity and init `prev` gave it ahead of the
/// hint (or none, and the init then in effect).
fn check_hinted_segment(
    v: &mut Vec<Violation>,
    prev: &MediaPlaylistText,
    next: &MediaPlaylistText,
) {
    let Some((msn, 0)) = prev.preload_parts.first().and_then(|u| part_of_uri(u)) else {
        return;
    };
    if prev.segments.iter().any(|s| s.msn == msn) {
        return;
    }
    let (discontinuity, map_uri) = match &prev.next_segment {
        Some(n) if n.msn == msn => (n.discontinuity, n.map_uri.clone()),
        _ => (false, prev.segments.last().and_then(|s| s.map_uri.clone())),
    };
    let Some(s) = next.segments.iter().find(|s| s.msn == msn) else {
        return;
    };
    // The first segment of a playlist carries no EXT-X-DISCONTINUITY tag of its own.
    let first = s.msn == next.media_sequence.saturating_add(next.skipped);
    if s.map_uri != map_uri || (s.discontinuity != discontinuity && !first) {
        v.push(violation(
            "hint-tags",
            format!(
                "segment {msn} starts with EXT-X-MAP {:?}, discontinuity {}, but the playlist hinting its first part gave it {map_uri:?}, {discontinuity}",
                s.map_uri, s.discontinuity
            ),
        ));
    }
}

/// (msn, part) of a part URI written as `…seg{msn}.{part}.m4s`, the packager's naming.
fn part_of_uri(uri: &str) -> Option<(u64, u64)> {
    let name = uri.rsplit('/').next()?.split('?').next()?;
    let (m, p) = name
        .strip_prefix("seg")?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some((m.parse().ok()?, p.parse().ok()?))
}

/// The newest part a playlist lists: (media sequence number, part index).
pub fn last_part(pl: &MediaPlaylistText) -> Option<(u64, u64)> {
    let s = pl.segments.iter().rev().find(|s| !s.parts.is_empty())?;
    Some((s.msn, s.parts.len() as u64 - 1))
}

/// Rule `rendition-report`: `pl` reports each rendition in `others` (the report URI as
/// `pl` would write it, and that rendition's playlist fetched after `pl`), and no
/// report names a part its rendition does not have.
pub fn check_rendition_reports(
    pl: &MediaPlaylistText,
    others: &[(&str, &MediaPlaylistText)],
) -> Vec<Violation> {
    let mut v = Vec::new();
    for (uri, other) in others {
        let Some(r) = pl.reports.iter().find(|r| r.uri == *uri) else {
            v.push(violation(
                "rendition-report",
                format!("no EXT-X-RENDITION-REPORT for {uri}"),
            ));
            continue;
        };
        let named = (r.last_msn, r.last_part.unwrap_or(0));
        match last_part(other) {
            Some(have) if named <= have => {}
            have => v.push(violation(
                "rendition-report",
                format!("report for {uri} names part {named:?}, the playlist fetched after it ends at {have:?}"),
            )),
        }
    }
    v
}

/// One `EXT-X-STREAM-INF` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantEntry {
    /// The media playlist URI.
    pub uri: String,
    /// Its attributes.
    pub attributes: Vec<(String, String)>,
}

/// The variants of a multivariant playlist.
pub fn parse_multivariant(text: &str) -> Result<Vec<VariantEntry>, String> {
    let mut lines = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err("does not start with #EXTM3U".into());
    }
    let mut out = Vec::new();
    while let Some(l) = lines.next() {
        if let Some(attrs) = l.strip_prefix("#EXT-X-STREAM-INF:") {
            let uri = lines.next().ok_or("EXT-X-STREAM-INF without a URI line")?;
            let mut attributes: Vec<(String, String)> = attributes(attrs)?.into_iter().collect();
            attributes.sort();
            out.push(VariantEntry {
                uri: uri.to_string(),
                attributes,
            });
        }
    }
    Ok(out)
}

/// Rule `stream-inf` on each variant.
pub fn check_multivariant(variants: &[VariantEntry]) -> Vec<Violation> {
    let mut v = Vec::new();
    if variants.is_empty() {
        v.push(violation("stream-inf", "no EXT-X-STREAM-INF".into()));
    }
    for var in variants {
        let get = |k: &str| {
            var.attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, x)| x.as_str())
        };
        if get("BANDWIDTH")
            .and_then(|b| b.parse::<u64>().ok())
            .is_none()
        {
            v.push(violation(
                "stream-inf",
                format!("{}: no BANDWIDTH", var.uri),
            ));
        }
        let codecs = get("CODECS").unwrap_or_default();
        if codecs.is_empty() {
            v.push(violation("stream-inf", format!("{}: no CODECS", var.uri)));
        }
        if codecs.contains("avc1.") && get("RESOLUTION").is_none() {
            v.push(violation(
                "stream-inf",
                format!("{}: video without RESOLUTION", var.uri),
            ));
        }
        if get("CLOSED-CAPTIONS") != Some("NONE") {
            v.push(violation(
                "stream-inf",
                format!(
                    "{}: no CLOSED-CAPTIONS=NONE (players then probe the video for CEA-608)",
                    var.uri
                ),
            ));
        }
    }
    v
}

/// The fragments of a playlist's media, read back: `runs(uri)` gives the track runs of
/// a part or segment URI, `None` if it could not be fetched or parsed.
pub fn check_media_timing(
    pl: &MediaPlaylistText,
    tracks: &[TrackInfo],
    runs: &dyn Fn(&str) -> Option<Vec<TrackRun>>,
) -> Vec<Violation> {
    let mut v = Vec::new();
    let video = tracks.iter().find(|t| &t.handler == b"vide");
    let audio = tracks.iter().find(|t| &t.handler == b"soun");
    let Some(video) = video else {
        v.push(violation(
            "media-duration",
            "init segment has no video track".into(),
        ));
        return v;
    };
    let secs = |t: &TrackInfo, ticks: u64| ticks as f64 / f64::from(t.timescale);
    let run_of = |rs: &[TrackRun], t: &TrackInfo| -> Option<TrackRun> {
        let mut mine = rs.iter().filter(|r| r.track_id == t.track_id);
        let first = mine.next()?.clone();
        Some(mine.fold(first, |mut acc, r| {
            acc.durations.extend(&r.durations);
            acc.sync.extend(&r.sync);
            acc
        }))
    };
    // Where each track's previous fragment ended, per discontinuity.
    let mut ends: HashMap<u32, u64> = HashMap::new();
    let mut pdt_offset: Option<(u64, f64)> = None;
    for s in &pl.segments {
        if s.discontinuity {
            ends.clear();
            pdt_offset = None;
        }
        let mut seg_runs: Vec<TrackRun> = Vec::new();
        for p in &s.parts {
            let Some(rs) = runs(&p.uri) else {
                v.push(violation(
                    "media-duration",
                    format!("{}: could not be read", p.uri),
                ));
                continue;
            };
            let Some(vr) = run_of(&rs, video) else {
                v.push(violation(
                    "media-duration",
                    format!("{}: no video samples", p.uri),
                ));
                continue;
            };
            let media = secs(video, vr.end() - vr.start);
            if (media - p.duration).abs() > ROUNDING + 1.0 / f64::from(video.timescale) {
                v.push(violation(
                    "media-duration",
                    format!(
                        "{}: DURATION {} but its video lasts {media:.6} s",
                        p.uri, p.duration
                    ),
                ));
            }
            let sync = vr.sync.first().copied().unwrap_or(false);
            if p.independent != sync {
                v.push(violation(
                    "media-independent",
                    format!(
                        "{}: INDEPENDENT={} but its first video sample is {}a sync sample",
                        p.uri,
                        p.independent,
                        if sync { "" } else { "not " }
                    ),
                ));
            }
            if let Some(ar) = audio.and_then(|a| run_of(&rs, a).map(|r| (a, r))) {
                let (a, ar) = ar;
                let frame = secs(
                    a,
                    u64::from(ar.durations.iter().copied().max().unwrap_or(0)),
                );
                let (vs, ve) = (secs(video, vr.start), secs(video, vr.end()));
                let (as_, ae) = (secs(a, ar.start), secs(a, ar.end()));
                if (as_ - vs).abs() >= frame || (ae - ve).abs() >= frame {
                    v.push(violation(
                        "media-av-aligned",
                        format!("{}: video {vs:.4}–{ve:.4} s, audio {as_:.4}–{ae:.4} s (audio frame {frame:.4} s)", p.uri),
                    ));
                }
            }
            contiguous(&mut v, &mut ends, &p.uri, &rs);
            seg_runs.extend(rs);
        }
        let Some(uri) = &s.uri else { continue };
        let Some(rs) = runs(uri) else {
            v.push(violation(
                "media-duration",
                format!("{uri}: could not be read"),
            ));
            continue;
        };
        if !s.parts.is_empty() && rs != seg_runs {
            v.push(violation(
                "media-duration",
                format!("{uri} is not the concatenation of its parts"),
            ));
        }
        if s.parts.is_empty() {
            contiguous(&mut v, &mut ends, uri, &rs);
        }
        let Some(vr) = run_of(&rs, video) else {
            v.push(violation(
                "media-duration",
                format!("{uri}: no video samples"),
            ));
            continue;
        };
        let media = secs(video, vr.end() - vr.start);
        if let Some(d) = s.duration {
            if (media - d).abs() > ROUNDING + 1.0 / f64::from(video.timescale) {
                v.push(violation(
                    "media-duration",
                    format!("{uri}: EXTINF {d} but its video lasts {media:.6} s"),
                ));
            }
        }
        if vr.sync.first() != Some(&true) {
            v.push(violation(
                "media-independent",
                format!("{uri} does not start with a sync sample"),
            ));
        }
        if let Some(pdt) = s.pdt_ms {
            let offset = pdt as f64 / 1000.0 - secs(video, vr.start);
            match pdt_offset {
                None => pdt_offset = Some((s.msn, offset)),
                Some((first, o)) if (offset - o).abs() > 0.0015 => v.push(violation(
                    "media-pdt",
                    format!("segment {}: PROGRAM-DATE-TIME − media time moved {:.4} s since segment {first}", s.msn, offset - o),
                )),
                _ => {}
            }
        }
    }
    v
}

/// Rule `media-contiguous` for one fragment's runs.
fn contiguous(v: &mut Vec<Violation>, ends: &mut HashMap<u32, u64>, uri: &str, runs: &[TrackRun]) {
    for r in runs {
        if let Some(&end) = ends.get(&r.track_id) {
            if r.start != end {
                v.push(violation(
                    "media-contiguous",
                    format!(
                        "{uri}: track {} starts at {} but the previous fragment ended at {end}",
                        r.track_id, r.start
                    ),
                ));
            }
        }
        ends.insert(r.track_id, r.end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::{MediaPlaylist, Part, RenditionReport, Segment, Variant};

    fn written(durations: &[&[f64]], open: &[f64], part_target: f64) -> String {
        let mut pl = MediaPlaylist::new(2.0, part_target);
        pl.media_sequence = 3;
        let mut pdt = 1_795_533_260_000;
        let seg = |n: usize, parts: &[f64], complete: bool, pdt: i64| Segment {
            uri: format!("seg{n}.m4s"),
            duration: parts.iter().sum(),
            program_date_time_ms: pdt,
            discontinuity: false,
            independent: true,
            parts: parts
                .iter()
                .enumerate()
                .map(|(i, d)| Part {
                    uri: format!("seg{n}.{i}.m4s"),
                    duration: *d,
                    independent: i == 0,
                })
                .collect(),
            complete,
            map_uri: None,
        };
        for (i, d) in durations.iter().enumerate() {
            pl.segments.push(seg(i + 3, d, true, pdt));
            pdt += (d.iter().sum::<f64>() * 1000.0).round() as i64;
        }
        pl.segments.push(seg(durations.len() + 3, open, false, pdt));
        pl.preload_hint = Some("next.m4s".into());
        pl.rendition_reports.push(RenditionReport {
            uri: "../l/media.m3u8".into(),
            last_msn: 4,
            last_part: 1,
        });
        pl.render()
    }

    fn rules(found: &[Violation]) -> Vec<&'static str> {
        found.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn the_writers_output_parses_back() {
        let text = written(&[&[0.2; 10], &[0.2, 0.2, 0.1]], &[0.2, 0.2], 0.22);
        let pl = parse_media(&text).unwrap();
        assert_eq!(pl.media_sequence, 3);
        assert_eq!(pl.segments.len(), 3);
        assert_eq!(pl.segments[1].duration, Some(0.5));
        assert_eq!(pl.segments[2].uri, None);
        assert_eq!(pl.segments[2].msn, 5);
        assert_eq!(last_part(&pl), Some((5, 1)));
        assert_eq!(pl.reports[0].last_part, Some(1));
        assert!(!pl.independent_segments && pl.can_block_reload);
        assert_eq!(check_media(&pl), vec![], "{text}");
    }

    #[test]
    fn part_durations_follow_section_4_4_4_9() {
        // 167 ms in a 200 ms target: five 30 fps frames where six did not fit.
        let text = written(&[&[0.2, 0.167, 0.2, 0.033]], &[0.2], 0.2);
        let found = check_media(&parse_media(&text).unwrap());
        assert_eq!(rules(&found), ["part-min"], "{found:?}");
        assert!(found[0].detail.contains("seg3.1.m4s"), "{found:?}");
        let text = written(&[&[0.2, 0.21]], &[0.2], 0.2);
        assert_eq!(
            rules(&check_media(&parse_media(&text).unwrap())),
            ["part-max"]
        );
    }

    #[test]
    fn program_date_times_must_follow_extinf() {
        let text = written(&[&[0.2; 10], &[0.2; 10]], &[0.2], 0.22)
            .replace("2026-11-24T15:14:22.000Z", "2026-11-24T15:14:22.050Z");
        let found = check_media(&parse_media(&text).unwrap());
        assert_eq!(
            rules(&found),
            ["pdt-steps", "pdt-steps"],
            "both steps around it: {found:?}"
        );
    }

    #[test]
    fn a_playlist_of_parts_alone_is_no_start() {
        let text = written(&[], &[0.2, 0.2], 0.22);
        let found = check_media(&parse_media(&text).unwrap());
        assert_eq!(rules(&found), ["complete-segment"], "{text}");
    }

    #[test]
    fn parts_take_no_independent_segments_tag() {
        let text = written(&[&[0.2; 10]], &[0.2, 0.2], 0.22).replace(
            "#EXT-X-MEDIA-SEQUENCE:",
            "#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MEDIA-SEQUENCE:",
        );
        let found = check_media(&parse_media(&text).unwrap());
        assert_eq!(rules(&found), ["parts-not-independent-segments"], "{text}");
    }

    #[test]
    fn tag_order_and_reloads() {
        let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-PART:DURATION=0.2,URI=\"a.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-11-24T15:14:22.000Z\n#EXTINF:0.2,\nseg7.m4s\n";
        let pl = parse_media(text).unwrap();
        assert!(rules(&check_media(&pl)).contains(&"part-tag-order"));
        let mut later = pl.clone();
        later.media_sequence = 6;
        later.segments[0].duration = Some(0.3);
        assert_eq!(rules(&check_reload(&pl, &later)), ["reload", "reload"]);
        // The hint seg7.1 of a segment that then completed with one part.
        let hinted = parse_media(&format!(
            "{text}#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg7.1.m4s\"\n"
        ))
        .unwrap();
        assert_eq!(rules(&check_reload(&hinted, &pl)), ["preload-hint"]);
        assert!(parse_media("#EXTM3U\n#EXTINF:1,\n").is_err());
        assert!(parse_media("#EXT-X-VERSION:3\n").is_err());
        assert!(parse_media("#EXTM3U\n#EXT-X-PART:DURATION=x,URI=\"a\"\n").is_err());
    }

    #[test]
    fn multivariant_entries_and_reports() {
        let t = crate::hls::render_multivariant(&[Variant {
            uri: "media.m3u8".into(),
            bandwidth: 1,
            codecs: "avc1.42e01f,opus".into(),
            resolution: Some((640, 480)),
            frame_rate: None,
        }]);
        let vs = parse_multivariant(&t).unwrap();
        assert_eq!(check_multivariant(&vs), vec![]);
        let bare = parse_multivariant(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.42e01f\"\nm.m3u8\n",
        )
        .unwrap();
        assert_eq!(
            rules(&check_multivariant(&bare)),
            ["stream-inf", "stream-inf"]
        );

        let text = written(&[&[0.2; 10]], &[0.2, 0.2], 0.22);
        let pl = parse_media(&text).unwrap();
        let other = parse_media(&written(&[&[0.2; 10]], &[0.2, 0.2, 0.2], 0.22)).unwrap();
        assert_eq!(
            check_rendition_reports(&pl, &[("../l/media.m3u8", &other)]),
            vec![]
        );
        let behind = parse_media(&written(&[], &[0.2], 0.22)).unwrap();
        assert_eq!(
            rules(&check_rendition_reports(
                &pl,
                &[("../l/media.m3u8", &behind), ("../m/media.m3u8", &other)]
            )),
            ["rendition-report", "rendition-report"]
        );
    }

    /// A DVR window: 40 segments of 2 s, delta updates offered.
    fn long_window() -> MediaPlaylist {
        let mut pl = MediaPlaylist::new(2.0, 0.22);
        pl.delta_updates = true;
        pl.media_sequence = 100;
        let mut pdt = 1_795_533_260_000;
        for n in 100..141u64 {
            let open = n == 140;
            let parts: Vec<Part> = (0..if open { 3 } else { 10 })
                .map(|i| Part {
                    uri: format!("seg{n}.{i}.m4s"),
                    duration: 0.2,
                    independent: i == 0,
                })
                .collect();
            pl.segments.push(Segment {
                uri: format!("seg{n}.m4s"),
                duration: parts.iter().map(|p| p.duration).sum(),
                program_date_time_ms: pdt,
                discontinuity: n == 120,
                independent: true,
                parts,
                complete: !open,
                map_uri: Some(if n < 120 { "init1.mp4" } else { "init2.mp4" }.into()),
            });
            pdt += 2000;
        }
        pl.preload_hint = Some("seg140.3.m4s".into());
        pl
    }

    #[test]
    fn a_long_window_lists_parts_near_the_edge_only() {
        let text = long_window().render();
        let pl = parse_media(&text).unwrap();
        assert_eq!(check_media(&pl), vec![], "{text}");
        let with_parts: Vec<u64> = pl
            .segments
            .iter()
            .filter(|s| !s.parts.is_empty())
            .map(|s| s.msn)
            .collect();
        assert_eq!(with_parts, [138, 139, 140], "{text}");
        // Parts on an older segment break the rule.
        let old = text.replace(
            "#EXTINF:2.00000,\nseg130.m4s",
            "#EXT-X-PART:DURATION=0.2,URI=\"seg130.0.m4s\",INDEPENDENT=YES\n#EXTINF:2.00000,\nseg130.m4s",
        );
        assert!(rules(&check_media(&parse_media(&old).unwrap())).contains(&"parts-edge"));
    }

    #[test]
    fn delta_updates_follow_section_6_2_5_1() {
        let pl = long_window();
        let (full_text, delta_text) = (pl.render(), pl.render_delta());
        assert!(full_text.contains("CAN-SKIP-UNTIL=12.000,"), "{full_text}");
        let full = parse_media(&full_text).unwrap();
        let delta = parse_media(&delta_text).unwrap();
        assert_eq!(check_media(&delta), vec![], "{delta_text}");
        // 12 s of the newest segments stay: 6 complete ones and the open one.
        assert_eq!(delta.skipped, 34, "{delta_text}");
        assert_eq!(delta.segments[0].msn, 134);
        assert_eq!(check_delta(&full, &delta), vec![]);
        let merged = merge_delta(&full, &delta).unwrap();
        assert_eq!(merged.segments.len(), full.segments.len());
        assert_eq!(merged.segments, full.segments);

        // A skip reaching into the boundary, a skip the player cannot apply, a skip
        // without the offer.
        let greedy = delta_text.replace("CAN-SKIP-UNTIL=12.000", "CAN-SKIP-UNTIL=30.000");
        assert_eq!(
            rules(&check_media(&parse_media(&greedy).unwrap())),
            ["skip"]
        );
        let mut older = full.clone();
        older.segments.retain(|s| s.msn != 110);
        assert_eq!(rules(&check_delta(&older, &delta)), ["skip"]);
        let unoffered = delta_text.replace("CAN-SKIP-UNTIL=12.000,", "");
        assert_eq!(
            rules(&check_media(&parse_media(&unoffered).unwrap())),
            ["skip"]
        );
        // A delta whose first segment lost its EXT-X-MAP.
        let mapless = delta_text.replacen("#EXT-X-MAP:URI=\"init2.mp4\"\n", "", 1);
        assert!(rules(&check_delta(&full, &parse_media(&mapless).unwrap())).contains(&"skip"));
        // Nothing to skip in a short playlist: the full one.
        let mut short = long_window();
        short.segments.drain(..35);
        assert_eq!(short.render_delta(), short.render());
    }

    #[test]
    fn every_rule_id_used_is_documented() {
        let src = include_str!("check.rs");
        for id in src
            .split("violation(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
        {
            assert!(
                RULES.iter().any(|r| r.id == id),
                "rule {id} missing from RULES"
            );
        }
    }
}
