//! What the packager serves: per room, one rendition per video layer (the root one
//! without simulcast), each with its init segment, the parts and segments of a rolling
//! window and its LL-HLS playlist — plus a version counter that wakes blocking playlist
//! and part requests the moment something new lands.

use crate::segmenter::{SegOutput, StreamInfo};
use bytes::Bytes;
use skylark_media::hls::{MediaPlaylist, Part, RenditionReport, Segment, Variant};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Segments kept behind the live edge.
pub const WINDOW_SEGMENTS: usize = 8;

/// Where rendition `name` lives under `/hls/{room}/`: the root without simulcast, a
/// directory named after the layer with it.
pub fn rendition_dir(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!("{name}/")
    }
}

/// One media playlist and what it lists.
pub struct Rendition {
    pub playlist: MediaPlaylist,
    /// The newest init segment (also served as `init.mp4`).
    pub init: Option<Bytes>,
    /// Init segments by version (`init{n}.mp4`): one per change, kept while a segment
    /// in the window uses it, so a URI never names two different inits.
    inits: BTreeMap<u32, Bytes>,
    init_version: u32,
    pub info: StreamInfo,
    parts: HashMap<(u64, u64), Bytes>,
    segments: HashMap<u64, Bytes>,
    /// The current publisher sends this layer: listed in the multivariant playlist.
    pub active: bool,
    /// Its latest still (`fmp4::still`).
    pub still: Option<Bytes>,
}

impl Rendition {
    fn new(segment_target: Duration, part_target: Duration) -> Self {
        Self {
            playlist: MediaPlaylist::new(segment_target.as_secs_f64(), part_target.as_secs_f64()),
            init: None,
            inits: BTreeMap::new(),
            init_version: 0,
            info: StreamInfo::default(),
            parts: HashMap::new(),
            segments: HashMap::new(),
            active: false,
            still: None,
        }
    }

    fn listed(&self) -> bool {
        self.active && self.init.is_some() && !self.info.codecs.is_empty()
    }

    /// Its playlist lists a complete segment (or the stream ended): something a player
    /// can start on.
    pub fn playable(&self) -> bool {
        self.playlist.ended || self.playlist.segments.iter().any(|s| s.complete)
    }

    /// Init segment `version`, or the newest for `None`.
    pub fn init_segment(&self, version: Option<u32>) -> Option<Bytes> {
        match version {
            None => self.init.clone(),
            Some(v) => self.inits.get(&v).cloned(),
        }
    }
}

pub struct State {
    renditions: BTreeMap<String, Rendition>,
    segment_target: Duration,
    part_target: Duration,
    /// When the stream ended; the room is dropped a grace period later.
    pub ended_at: Option<Instant>,
}

impl State {
    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.get(name)
    }

    fn rendition_mut(&mut self, name: &str) -> &mut Rendition {
        let (seg, part) = (self.segment_target, self.part_target);
        self.renditions
            .entry(name.to_string())
            .or_insert_with(|| Rendition::new(seg, part))
    }

    /// The multivariant playlist's entries: every listed rendition, largest picture first
    /// (players that start on the first entry start on the best one).
    /// The room's thumbnail: the latest still of its smallest listed rendition (the
    /// cheapest to fetch and decode for a tile).
    pub fn still(&self) -> Option<Bytes> {
        self.renditions
            .values()
            .filter(|r| r.listed() && r.still.is_some())
            .min_by_key(|r| {
                let (w, h) = r.info.resolution.unwrap_or_default();
                u64::from(w) * u64::from(h)
            })
            .and_then(|r| r.still.clone())
    }

    pub fn variants(&self) -> Vec<Variant> {
        let mut listed: Vec<(&String, &Rendition)> =
            self.renditions.iter().filter(|(_, r)| r.listed()).collect();
        listed.sort_by_key(|(name, r)| {
            let (w, h) = r.info.resolution.unwrap_or_default();
            (
                std::cmp::Reverse(u64::from(w) * u64::from(h)),
                (*name).clone(),
            )
        });
        listed
            .into_iter()
            .map(|(name, r)| Variant {
                uri: format!("{}media.m3u8", rendition_dir(name)),
                bandwidth: r.info.bandwidth.max(100_000),
                codecs: r.info.codecs.clone(),
                resolution: r.info.resolution,
                frame_rate: None,
            })
            .collect()
    }

    fn set_init(&mut self, rendition: &str, init: Bytes, info: StreamInfo) {
        let s = self;
        let r = s.rendition_mut(rendition);
        r.init_version += 1;
        r.inits.insert(r.init_version, init.clone());
        r.playlist.map_uri = format!("init{}.mp4", r.init_version);
        r.init = Some(init);
        r.info.codecs = info.codecs;
        r.info.resolution = info.resolution;
        s.refresh_reports();
    }

    fn set_active(&mut self, rendition: &str, active: bool) {
        let s = self;
        s.rendition_mut(rendition).active = active;
        s.refresh_reports();
    }

    #[allow(clippy::too_many_arguments)]
    fn push_part(
        &mut self,
        rendition: &str,
        msn: u64,
        bytes: Bytes,
        duration: f64,
        independent: bool,
        pdt_ms: i64,
        discontinuity: bool,
    ) {
        let st = self;
        let s = st.rendition_mut(rendition);
        s.active = true;
        let first_msn = s.playlist.media_sequence;
        if s.playlist.segments.is_empty() {
            s.playlist.media_sequence = msn;
        }
        let newest = s.playlist.media_sequence + s.playlist.segments.len() as u64;
        if msn < first_msn.min(newest) {
            return;
        }
        if msn == newest {
            s.playlist.segments.push(Segment {
                uri: format!("seg{msn}.m4s"),
                duration: 0.0,
                program_date_time_ms: pdt_ms,
                discontinuity,
                independent,
                parts: Vec::new(),
                complete: false,
                map_uri: Some(s.playlist.map_uri.clone()),
            });
        }
        let idx = (msn - s.playlist.media_sequence) as usize;
        let Some(seg) = s.playlist.segments.get_mut(idx) else {
            return;
        };
        let p = seg.parts.len() as u64;
        seg.parts.push(Part {
            uri: format!("seg{msn}.{p}.m4s"),
            duration,
            independent,
        });
        seg.duration += duration;
        s.parts.insert((msn, p), bytes);
        s.playlist.preload_hint = Some(format!("seg{msn}.{}.m4s", p + 1));
        st.refresh_reports();
    }

    fn finish_segment(&mut self, rendition: &str, msn: u64) {
        let st = self;
        let s = st.rendition_mut(rendition);
        let Some(idx) = msn.checked_sub(s.playlist.media_sequence) else {
            return;
        };
        let Some(seg) = s.playlist.segments.get(idx as usize) else {
            return;
        };
        let n = seg.parts.len() as u64;
        let duration = seg.duration;
        let mut all = Vec::new();
        for p in 0..n {
            if let Some(b) = s.parts.get(&(msn, p)) {
                all.extend_from_slice(b);
            }
        }
        let bits = (all.len() as f64 * 8.0 / duration.max(0.1)) as u64;
        s.info.bandwidth = s.info.bandwidth.max(bits);
        s.playlist.note_segment(duration);
        s.segments.insert(msn, Bytes::from(all));
        if let Some(seg) = s.playlist.segments.get_mut(idx as usize) {
            seg.complete = true;
        }
        s.playlist.preload_hint = Some(format!("seg{}.0.m4s", msn + 1));
        // Slide the window.
        while s.playlist.segments.len() > WINDOW_SEGMENTS {
            let old = s.playlist.media_sequence;
            let removed = s.playlist.segments.remove(0);
            s.playlist.media_sequence += 1;
            if let Some(next) = s.playlist.segments.first() {
                if next.discontinuity {
                    s.playlist.discontinuity_sequence += 1;
                }
            }
            s.segments.remove(&old);
            for p in 0..removed.parts.len() as u64 {
                s.parts.remove(&(old, p));
            }
        }
        let current = s.init_version;
        let in_use: Vec<String> = s
            .playlist
            .segments
            .iter()
            .filter_map(|seg| seg.map_uri.clone())
            .collect();
        s.inits
            .retain(|v, _| *v == current || in_use.contains(&format!("init{v}.mp4")));
    }

    /// Every listed rendition is [`Rendition::playable`], and there is one.
    pub fn playable(&self) -> bool {
        let mut listed = self.renditions.values().filter(|r| r.listed()).peekable();
        listed.peek().is_some() && listed.all(Rendition::playable)
    }

    /// LL-HLS rendition reports: each media playlist tells where every other listed
    /// rendition's newest part is, so a player switching layers can block on it at once.
    fn refresh_reports(&mut self) {
        let edges: Vec<(String, u64, u64)> = self
            .renditions
            .iter()
            .filter(|(_, r)| r.listed())
            .filter_map(|(n, r)| {
                let (msn, part) = r.playlist.last_part()?;
                Some((n.clone(), msn, part))
            })
            .collect();
        for (name, r) in self.renditions.iter_mut() {
            let up = if name.is_empty() { "" } else { "../" };
            r.playlist.rendition_reports = edges
                .iter()
                .filter(|(other, ..)| other != name)
                .map(|(other, msn, part)| RenditionReport {
                    uri: format!("{up}{}media.m3u8", rendition_dir(other)),
                    last_msn: *msn,
                    last_part: *part,
                })
                .collect();
        }
    }
}

/// One room's HLS output.
pub struct RoomHls {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    /// The same room as live FLV (HTTP-FLV / WS-FLV viewers).
    pub flv: Arc<crate::flv::FlvFeed>,
    /// Its HLS players.
    pub audience: crate::audience::HlsAudience,
}

impl RoomHls {
    pub fn new(segment_target: Duration, part_target: Duration) -> Arc<Self> {
        let (version, _) = watch::channel(0);
        Arc::new(Self {
            state: Mutex::new(State {
                renditions: BTreeMap::new(),
                segment_target,
                part_target,
                ended_at: None,
            }),
            version,
            flv: Arc::default(),
            audience: Default::default(),
        })
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.bump();
        out
    }

    /// Runs `f` on the state (never across an await).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` on rendition `name`'s state, if it exists.
    pub fn read_rendition<T>(&self, name: &str, f: impl FnOnce(&Rendition) -> T) -> Option<T> {
        self.read(|s| s.rendition(name).map(f))
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// One batch of segmenter output, seen by readers all at once. A segment's last
    /// part and its end come in one batch: applied one by one, a reader woken between
    /// them got a preload hint for a part that never comes (`seg{n}.{last + 1}`), and
    /// Shaka Player's prefetch of it ended in a 404.
    pub fn apply(&self, out: Vec<(String, SegOutput)>) {
        // Most frames change nothing: waking every blocked request for them costs CPU.
        if out
            .iter()
            .all(|(_, o)| matches!(o, SegOutput::RequestKeyframe))
        {
            return;
        }
        self.write(|s| {
            for (r, o) in out {
                match o {
                    SegOutput::Init { bytes, info } => s.set_init(&r, bytes, info),
                    SegOutput::Part {
                        msn,
                        bytes,
                        duration,
                        independent,
                        pdt_ms,
                        discontinuity,
                    } => {
                        metrics::histogram!("skylark_hls_part_duration_seconds").record(duration);
                        s.push_part(&r, msn, bytes, duration, independent, pdt_ms, discontinuity)
                    }
                    SegOutput::SegmentDone { msn, duration } => {
                        metrics::histogram!("skylark_hls_segment_duration_seconds")
                            .record(duration);
                        s.finish_segment(&r, msn)
                    }
                    SegOutput::Inactive => s.set_active(&r, false),
                    SegOutput::Still(b) => s.rendition_mut(&r).still = Some(b),
                    SegOutput::RequestKeyframe => {}
                }
            }
        });
    }

    #[cfg(test)]
    pub fn set_init(&self, rendition: &str, init: Bytes, info: StreamInfo) {
        self.write(|s| s.set_init(rendition, init, info));
    }

    /// Lists or unlists a rendition (its layer came or went with a publisher change).
    #[cfg(test)]
    pub fn set_active(&self, rendition: &str, active: bool) {
        self.write(|s| s.set_active(rendition, active));
    }

    /// Appends a part to segment `msn` (opening it if new) and updates the preload hint.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub fn push_part(
        &self,
        rendition: &str,
        msn: u64,
        bytes: Bytes,
        duration: f64,
        independent: bool,
        pdt_ms: i64,
        discontinuity: bool,
    ) {
        self.write(|s| {
            s.push_part(
                rendition,
                msn,
                bytes,
                duration,
                independent,
                pdt_ms,
                discontinuity,
            )
        });
    }

    /// Closes segment `msn`: its bytes are the concatenation of its parts (CMAF).
    #[cfg(test)]
    pub fn finish_segment(&self, rendition: &str, msn: u64) {
        self.write(|s| s.finish_segment(rendition, msn));
    }

    /// Marks the stream ended: `EXT-X-ENDLIST`, and blocked requests return at once.
    pub fn end(&self) {
        self.write(|s| {
            for r in s.renditions.values_mut() {
                r.playlist.ended = true;
            }
            s.ended_at = Some(Instant::now());
        });
    }

    /// The room is live again within the grace period: the same playlists carry on.
    /// Their media sequence keeps counting and the next part opens with
    /// `EXT-X-DISCONTINUITY` (the segmenter marks it), which hls.js and Safari follow;
    /// a fresh playlist would reuse segment URIs that caches hold as immutable. Players
    /// that saw `EXT-X-ENDLIST` stopped reloading; new ones get the live playlist.
    pub fn resume(&self) {
        self.write(|s| {
            for r in s.renditions.values_mut() {
                r.playlist.ended = false;
            }
            s.ended_at = None;
        });
    }

    pub fn part(&self, rendition: &str, msn: u64, part: u64) -> Option<Bytes> {
        self.read_rendition(rendition, |r| r.parts.get(&(msn, part)).cloned())
            .flatten()
    }

    pub fn segment(&self, rendition: &str, msn: u64) -> Option<Bytes> {
        self.read_rendition(rendition, |r| r.segments.get(&msn).cloned())
            .flatten()
    }
}

/// Every room this packager holds.
#[derive(Default, Clone)]
pub struct Rooms {
    inner: Arc<Mutex<HashMap<String, Arc<RoomHls>>>>,
}

impl Rooms {
    pub fn get(&self, room: &str) -> Option<Arc<RoomHls>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .cloned()
    }

    pub fn insert(&self, room: &str, hls: Arc<RoomHls>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(room.to_string(), hls);
    }

    pub fn remove(&self, room: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment's last part and its end reach readers in one change: between them a
    /// playlist would hint a part that never comes.
    #[test]
    fn a_batch_is_one_change() {
        let r = RoomHls::new(Duration::from_secs(2), Duration::from_millis(500));
        let rx = r.subscribe();
        let before = *rx.borrow();
        let part = |p: u64| SegOutput::Part {
            msn: 0,
            bytes: Bytes::from_static(b"x"),
            duration: 0.5,
            independent: p == 0,
            pdt_ms: 0,
            discontinuity: false,
        };
        let done = SegOutput::SegmentDone {
            msn: 0,
            duration: 1.0,
        };
        r.apply([part(0), part(1), done].map(|o| (String::new(), o)).into());
        assert_eq!(*rx.borrow() - before, 1);
        r.read_rendition("", |s| {
            assert_eq!(s.playlist.preload_hint.as_deref(), Some("seg1.0.m4s"));
            assert!(s.playlist.segments[0].complete);
        });
    }

    #[test]
    fn window_slides_and_segments_concatenate_parts() {
        let r = RoomHls::new(Duration::from_secs(2), Duration::from_millis(500));
        for msn in 0..12u64 {
            for p in 0..4 {
                r.push_part(
                    "",
                    msn,
                    Bytes::from(vec![msn as u8, p as u8]),
                    0.5,
                    p == 0,
                    1000 * msn as i64,
                    false,
                );
            }
            r.finish_segment("", msn);
        }
        r.read_rendition("", |s| {
            assert_eq!(s.playlist.segments.len(), WINDOW_SEGMENTS);
            assert_eq!(s.playlist.media_sequence, 12 - WINDOW_SEGMENTS as u64);
            assert_eq!(s.playlist.preload_hint.as_deref(), Some("seg12.0.m4s"));
        });
        assert_eq!(
            r.segment("", 11).unwrap().as_ref(),
            &[11, 0, 11, 1, 11, 2, 11, 3]
        );
        assert!(r.segment("", 0).is_none(), "slid out");
        assert!(r.part("", 0, 0).is_none());
        assert_eq!(r.part("", 11, 3).unwrap().as_ref(), &[11, 3]);
    }

    /// A new publisher's init gets a new URI; the old one is served while segments in
    /// the window use it.
    #[test]
    fn each_init_has_its_own_uri_while_in_use() {
        let r = RoomHls::new(Duration::from_secs(2), Duration::from_millis(500));
        let info = StreamInfo {
            codecs: "avc1.42c01f,opus".into(),
            resolution: Some((640, 360)),
            bandwidth: 0,
        };
        r.set_init("", Bytes::from_static(b"first"), info.clone());
        for msn in 0..2 {
            r.push_part("", msn, Bytes::from_static(b"x"), 0.5, true, 0, false);
            r.finish_segment("", msn);
        }
        r.set_init("", Bytes::from_static(b"second"), info);
        r.push_part("", 2, Bytes::from_static(b"y"), 0.5, true, 0, true);
        let text = r.read_rendition("", |s| s.playlist.render()).unwrap();
        assert!(text.contains("#EXT-X-MAP:URI=\"init1.mp4\"\n"), "{text}");
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n"),
            "{text}"
        );
        let init = |v| r.read_rendition("", |s| s.init_segment(v)).flatten();
        assert_eq!(init(Some(1)).as_deref(), Some(&b"first"[..]));
        assert_eq!(init(Some(2)).as_deref(), Some(&b"second"[..]));
        assert_eq!(
            init(None).as_deref(),
            Some(&b"second"[..]),
            "init.mp4: newest"
        );
        r.finish_segment("", 2);
        for msn in 3..3 + WINDOW_SEGMENTS as u64 {
            r.push_part("", msn, Bytes::from_static(b"z"), 0.5, true, 0, false);
            r.finish_segment("", msn);
        }
        assert_eq!(init(Some(1)), None, "slid out with its segments");
        assert!(init(Some(2)).is_some());
    }

    #[test]
    fn renditions_are_listed_best_first_and_report_each_other() {
        let r = RoomHls::new(Duration::from_secs(2), Duration::from_millis(500));
        let info = |w, h| StreamInfo {
            codecs: "avc1.42c01f,opus".into(),
            resolution: Some((w, h)),
            bandwidth: 0,
        };
        r.set_init("l", Bytes::from_static(b"init-l"), info(320, 180));
        r.set_init("h", Bytes::from_static(b"init-h"), info(1280, 720));
        for (name, parts) in [("l", 3u64), ("h", 2)] {
            for p in 0..parts {
                r.push_part(name, 4, Bytes::from_static(b"x"), 0.5, p == 0, 0, false);
            }
        }
        r.read(|s| {
            let v = s.variants();
            let uris: Vec<&str> = v.iter().map(|v| v.uri.as_str()).collect();
            assert_eq!(uris, ["h/media.m3u8", "l/media.m3u8"]);
            assert_eq!(v[0].resolution, Some((1280, 720)));
            let h = s.rendition("h").unwrap().playlist.render();
            assert!(
                h.contains(
                    "#EXT-X-RENDITION-REPORT:URI=\"../l/media.m3u8\",LAST-MSN=4,LAST-PART=2\n"
                ),
                "{h}"
            );
            assert!(!h.contains("../h/"), "no report on itself");
        });
        // A publisher change without the low layer: it leaves the list and the reports.
        r.set_active("l", false);
        r.read(|s| {
            assert_eq!(s.variants().len(), 1);
            let h = s.rendition("h").unwrap().playlist.render();
            assert!(!h.contains("RENDITION-REPORT"), "{h}");
        });
    }
}
