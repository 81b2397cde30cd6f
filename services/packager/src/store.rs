//! What the packager serves: per room, one rendition per video layer (the root one
//! without simulcast), each with its init segment, the parts and segments of a rolling
//! window and its LL-HLS playlist — plus a version counter that wakes blocking playlist
//! and part requests the moment something new lands. With a DVR window the playlist
//! reaches back that far; segments behind the live edge are then on disk (`dvr`).

use crate::dvr::{self, RoomDir};
use crate::segmenter::{SegOutput, StreamInfo};
use bytes::Bytes;
use skylark_media::hls::{MediaPlaylist, Part, RenditionReport, Segment, Variant};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Segments kept behind the live edge: the whole window without DVR; with it, the
/// newest ones, whose bytes (and parts) stay in memory.
pub const WINDOW_SEGMENTS: usize = 8;

/// What a recorder takes of one batch of segmenter output, in order: the inits, and
/// each segment the store completed, with the very bytes it serves (shared, not copied).
#[derive(Clone)]
pub enum Finished {
    Init {
        bytes: Bytes,
        info: StreamInfo,
    },
    Segment {
        msn: u64,
        bytes: Bytes,
        duration: f64,
        /// It follows a discontinuity (a new publisher, new parameters).
        discontinuity: bool,
    },
}

/// Where a segment's bytes are.
pub enum SegmentSource {
    Memory(Bytes),
    /// A DVR file (it may be gone by the time it is read: the window slid).
    File(std::path::PathBuf),
}

/// A complete segment's bytes: in memory near the live edge, on disk behind it.
struct Stored {
    bytes: Option<Bytes>,
    len: u64,
    on_disk: bool,
    /// Queued to the DVR writer.
    pending: bool,
}

/// The URL path prefix of rendition `name` under `/hls/{room}/`: empty (the root)
/// without simulcast, `{layer}/` with it. (A recording stores the root rendition under
/// `main/`: [`crate::recording::rendition_dir`].)
pub fn rendition_url_prefix(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!("{name}/")
    }
}

/// One media playlist and what it lists.
pub struct Rendition {
    /// Its layer's RID, empty for the root rendition.
    name: String,
    pub playlist: MediaPlaylist,
    /// The newest init segment (also served as `init.mp4`).
    pub init: Option<Bytes>,
    /// Init segments by version (`init{n}.mp4`): one per change, kept while a segment
    /// in the window uses it, so a URI never names two different inits.
    inits: BTreeMap<u32, Bytes>,
    init_version: u32,
    /// `init_version` is announced (the next segment's `EXT-X-MAP`) but not written yet.
    init_pending: bool,
    pub info: StreamInfo,
    parts: HashMap<(u64, u64), Bytes>,
    segments: HashMap<u64, Stored>,
    /// Bytes of its DVR files.
    disk_bytes: u64,
    /// The current publisher sends this layer: listed in the multivariant playlist.
    pub active: bool,
    /// Its latest still (`fmp4::still`).
    pub still: Option<Bytes>,
}

impl Rendition {
    fn new(name: &str, segment_target: Duration, part_target: Duration, dvr: bool) -> Self {
        let mut playlist =
            MediaPlaylist::new(segment_target.as_secs_f64(), part_target.as_secs_f64());
        // A long window is a long playlist: players then reload only its end.
        playlist.delta_updates = dvr;
        Self {
            name: name.to_string(),
            playlist,
            init: None,
            inits: BTreeMap::new(),
            init_version: 0,
            init_pending: false,
            info: StreamInfo::default(),
            parts: HashMap::new(),
            segments: HashMap::new(),
            disk_bytes: 0,
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

    /// Slides the window: without DVR ([`WINDOW_SEGMENTS`] segments), with it as long as
    /// `window` seconds (never fewer segments), within [`dvr::MAX_BYTES_PER_RENDITION`]
    /// on disk, and never reaching back past a segment that could not be spilled. The
    /// newest segments keep their bytes and parts in memory; older ones only on disk.
    fn slide(&mut self, window: f64, dvr: Option<&tokio::sync::mpsc::UnboundedSender<dvr::Op>>) {
        let name = self.name.clone();
        let first = self.playlist.media_sequence;
        let n = self.playlist.segments.len();
        let behind = n.saturating_sub(WINDOW_SEGMENTS);
        // Behind the live edge: on disk, on its way, or lost (then cut there).
        let mut lost = None;
        for i in 0..behind {
            let msn = first + i as u64;
            let Some(st) = self.segments.get_mut(&msn) else {
                continue;
            };
            if st.on_disk {
                st.bytes = None;
                // Its parts too (bytes and the playlist's list): only the edge lists them.
                let parts = std::mem::take(&mut self.playlist.segments[i].parts);
                for p in 0..parts.len() as u64 {
                    self.parts.remove(&(msn, p));
                }
            } else if !st.pending {
                lost = Some(i);
            }
        }
        let mut cut = lost.map_or(0, |i| i + 1);
        let mut total: f64 = self.playlist.segments.iter().map(|s| s.duration).sum();
        let mut disk = self.disk_bytes;
        for (i, seg) in self.playlist.segments.iter().enumerate().take(behind) {
            if i < cut {
                total -= seg.duration;
                continue;
            }
            let too_long = dvr.is_none() || total - seg.duration >= window;
            if !too_long && disk <= dvr::MAX_BYTES_PER_RENDITION {
                break;
            }
            total -= seg.duration;
            if let Some(st) = self.segments.get(&(first + i as u64)) {
                if st.on_disk {
                    disk = disk.saturating_sub(st.len);
                }
            }
            cut = i + 1;
        }
        for _ in 0..cut {
            self.remove_oldest(&name, dvr);
        }
    }

    fn remove_oldest(
        &mut self,
        name: &str,
        dvr: Option<&tokio::sync::mpsc::UnboundedSender<dvr::Op>>,
    ) {
        let old = self.playlist.media_sequence;
        let Some(removed) = self.playlist.remove_oldest() else {
            return;
        };
        if let Some(st) = self.segments.remove(&old) {
            if st.on_disk {
                self.disk_bytes = self.disk_bytes.saturating_sub(st.len);
            }
            if st.on_disk || st.pending {
                if let Some(ops) = dvr {
                    let _ = ops.send(dvr::Op::Remove {
                        rendition: name.to_string(),
                        msn: old,
                    });
                }
            }
        }
        for p in 0..removed.parts.len() as u64 {
            self.parts.remove(&(old, p));
        }
        let current = self.init_version;
        let in_use: Vec<String> = self
            .playlist
            .segments
            .iter()
            .filter_map(|seg| seg.map_uri.clone())
            .collect();
        self.inits
            .retain(|v, _| *v == current || in_use.contains(&format!("init{v}.mp4")));
    }

    /// Init segment `version` is announced and on its way (a request for it waits).
    pub fn init_due(&self, version: Option<u32>) -> bool {
        self.init_pending && version == Some(self.init_version)
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
    /// The DVR window's directory and writer, if the packager keeps one.
    dvr: Option<RoomDir>,
}

impl State {
    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.get(name)
    }

    fn rendition_mut(&mut self, name: &str) -> &mut Rendition {
        let (seg, part, dvr) = (self.segment_target, self.part_target, self.dvr.is_some());
        self.renditions
            .entry(name.to_string())
            .or_insert_with(|| Rendition::new(name, seg, part, dvr))
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
                uri: format!("{}media.m3u8", rendition_url_prefix(name)),
                bandwidth: r.info.bandwidth.max(100_000),
                codecs: r.info.codecs.clone(),
                resolution: r.info.resolution,
                frame_rate: None,
            })
            .collect()
    }

    fn set_init(&mut self, rendition: &str, init: Bytes, info: StreamInfo, discontinuity: bool) {
        let s = self;
        let r = s.rendition_mut(rendition);
        if !std::mem::take(&mut r.init_pending) {
            r.init_version += 1;
        }
        r.inits.insert(r.init_version, init.clone());
        r.playlist
            .next_init(format!("init{}.mp4", r.init_version), discontinuity);
        r.init = Some(init);
        r.info.codecs = info.codecs;
        r.info.resolution = info.resolution;
        s.refresh_reports();
    }

    /// Announces the next segment's new init (see [`SegOutput::NextInit`]) under the URI
    /// it will have, after a discontinuity, ahead of the hint of its first part.
    fn announce_init(&mut self, rendition: &str) {
        let r = self.rendition_mut(rendition);
        if r.init_pending || r.init.is_none() {
            return;
        }
        r.init_version += 1;
        r.init_pending = true;
        r.playlist
            .next_init(format!("init{}.mp4", r.init_version), true);
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
            s.playlist.open_segment(Segment {
                uri: format!("seg{msn}.m4s"),
                duration: 0.0,
                program_date_time_ms: pdt_ms,
                discontinuity,
                independent,
                parts: Vec::new(),
                complete: false,
                map_uri: None,
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

    /// Closes segment `msn`: its bytes are the concatenation of its parts (CMAF),
    /// returned (shared) with whether it follows a discontinuity.
    fn finish_segment(&mut self, rendition: &str, msn: u64) -> Option<(Bytes, bool)> {
        let st = self;
        let s = st.rendition_mut(rendition);
        let idx = msn.checked_sub(s.playlist.media_sequence)?;
        let seg = s.playlist.segments.get(idx as usize)?;
        let n = seg.parts.len() as u64;
        let (duration, discontinuity) = (seg.duration, seg.discontinuity);
        let parts: Vec<&Bytes> = (0..n).filter_map(|p| s.parts.get(&(msn, p))).collect();
        let mut all = bytes::BytesMut::with_capacity(parts.iter().map(|b| b.len()).sum());
        for b in parts {
            all.extend_from_slice(b);
        }
        let bits = (all.len() as f64 * 8.0 / duration.max(0.1)) as u64;
        s.info.bandwidth = s.info.bandwidth.max(bits);
        s.playlist.note_segment(duration);
        let bytes = all.freeze();
        let mut stored = Stored {
            len: bytes.len() as u64,
            bytes: Some(bytes.clone()),
            on_disk: false,
            pending: false,
        };
        if let Some(seg) = s.playlist.segments.get_mut(idx as usize) {
            seg.complete = true;
        }
        s.playlist.preload_hint = Some(format!("seg{}.0.m4s", msn + 1));
        // Spill it to the DVR directory (in the background) while it is still live.
        if let Some(d) = st.dvr.as_mut() {
            if d.pending_writes < dvr::MAX_PENDING_WRITES
                && d.ops
                    .send(dvr::Op::Write {
                        rendition: rendition.to_string(),
                        msn,
                        bytes: bytes.clone(),
                    })
                    .is_ok()
            {
                d.pending_writes += 1;
                stored.pending = true;
            } else {
                metrics::counter!("skylark_hls_dvr_segments_not_spilled_total").increment(1);
            }
        }
        let (window, dvr) = match st.dvr.as_ref() {
            Some(d) => (d.window, Some(&d.ops)),
            None => (0.0, None),
        };
        let s = st.renditions.get_mut(rendition)?;
        s.segments.insert(msn, stored);
        s.slide(window, dvr);
        Some((bytes, discontinuity))
    }

    /// The DVR window's length, and how much of it the room has now (its longest
    /// rendition's listed media), in seconds; `None` without DVR.
    pub fn dvr_seconds(&self) -> Option<(f64, f64)> {
        let d = self.dvr.as_ref()?;
        let have = self
            .renditions
            .values()
            .filter(|r| r.listed())
            .map(|r| r.playlist.segments.iter().map(|s| s.duration).sum::<f64>())
            .fold(0.0, f64::max);
        Some((d.window, have))
    }

    /// The DVR writer finished with segment `msn` (`ok`: it is on disk). Its bytes
    /// leave memory once it is behind the live edge.
    fn spilled(&mut self, rendition: &str, msn: u64, ok: bool) {
        let Some(d) = self.dvr.as_mut() else {
            return;
        };
        d.pending_writes = d.pending_writes.saturating_sub(1);
        let Some(r) = self.renditions.get_mut(rendition) else {
            return;
        };
        let Some(st) = r.segments.get_mut(&msn) else {
            return; // slid out while being written; its removal is queued after the write
        };
        st.pending = false;
        st.on_disk = ok;
        if ok {
            r.disk_bytes += st.len;
        }
        let edge = r.playlist.media_sequence
            + r.playlist.segments.len().saturating_sub(WINDOW_SEGMENTS) as u64;
        if ok && msn < edge {
            st.bytes = None;
            if let Some(seg) = r
                .playlist
                .segments
                .get_mut((msn - r.playlist.media_sequence) as usize)
            {
                for p in 0..std::mem::take(&mut seg.parts).len() as u64 {
                    r.parts.remove(&(msn, p));
                }
            }
        }
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
                    uri: format!("{up}{}media.m3u8", rendition_url_prefix(other)),
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
    /// A room whose playlists keep the live edge only ([`WINDOW_SEGMENTS`]).
    #[cfg(test)]
    pub fn new(segment_target: Duration, part_target: Duration) -> Arc<Self> {
        Self::with_dvr(segment_target, part_target, None, "")
    }

    /// A room with a DVR window when `dvr` is given (its directory is made for `room`;
    /// needs a Tokio runtime for the writer task).
    pub fn with_dvr(
        segment_target: Duration,
        part_target: Duration,
        dvr: Option<&dvr::Settings>,
        room: &str,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| {
            let (version, _) = watch::channel(0);
            Self {
                state: Mutex::new(State {
                    renditions: BTreeMap::new(),
                    segment_target,
                    part_target,
                    ended_at: None,
                    dvr: dvr
                        .filter(|d| !d.window.is_zero())
                        .map(|d| RoomDir::start(d, room, me.clone())),
                }),
                version,
                flv: Arc::default(),
                audience: Default::default(),
            }
        })
    }

    /// Ends the DVR window: the writer finishes what is queued, removes the room's
    /// directory, and the returned task ends. Playlists keep the live edge from then on.
    pub fn close_dvr(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.write(|s| {
            let mut d = s.dvr.take()?;
            for r in s.renditions.values_mut() {
                r.playlist.delta_updates = false;
                // Segments only on disk are gone with the directory.
                let first = r.playlist.media_sequence;
                let on_disk_only = r
                    .playlist
                    .segments
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        r.segments
                            .get(&(first + *i as u64))
                            .is_some_and(|st| st.bytes.is_none())
                    })
                    .count();
                for _ in 0..on_disk_only {
                    r.remove_oldest("", None);
                }
            }
            d.writer.take()
        })
    }

    /// The DVR writer's report on segment `msn` (see [`State::spilled`]).
    pub(crate) fn spilled(&self, rendition: &str, msn: u64, ok: bool) {
        // No playlist changes: nobody blocked on it needs waking.
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spilled(rendition, msn, ok);
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
    ///
    /// Returns what a recorder takes of it ([`Finished`]): the inits and the segments
    /// completed, whose bytes are the ones served here (one assembly per segment).
    pub fn apply(&self, out: Vec<(String, SegOutput)>) -> Vec<(String, Finished)> {
        let mut finished = Vec::new();
        // Most frames change nothing: waking every blocked request for them costs CPU.
        if out
            .iter()
            .all(|(_, o)| matches!(o, SegOutput::RequestKeyframe))
        {
            return finished;
        }
        self.write(|s| {
            for (r, o) in out {
                match o {
                    SegOutput::Init {
                        bytes,
                        info,
                        discontinuity,
                    } => {
                        finished.push((
                            r.clone(),
                            Finished::Init {
                                bytes: bytes.clone(),
                                info: info.clone(),
                            },
                        ));
                        s.set_init(&r, bytes, info, discontinuity)
                    }
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
                        if let Some((bytes, discontinuity)) = s.finish_segment(&r, msn) {
                            finished.push((
                                r,
                                Finished::Segment {
                                    msn,
                                    bytes,
                                    duration,
                                    discontinuity,
                                },
                            ));
                        }
                    }
                    SegOutput::NextInit => s.announce_init(&r),
                    SegOutput::Inactive => s.set_active(&r, false),
                    SegOutput::Still(b) => s.rendition_mut(&r).still = Some(b),
                    SegOutput::RequestKeyframe => {}
                }
            }
        });
        finished
    }

    #[cfg(test)]
    pub fn set_init(&self, rendition: &str, init: Bytes, info: StreamInfo, discontinuity: bool) {
        self.write(|s| s.set_init(rendition, init, info, discontinuity));
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

    /// Segment `msn` if its bytes are in memory.
    #[cfg(test)]
    pub fn segment(&self, rendition: &str, msn: u64) -> Option<Bytes> {
        self.read_rendition(rendition, |r| r.segments.get(&msn)?.bytes.clone())
            .flatten()
    }

    /// Where segment `msn`'s bytes are: memory near the live edge, a DVR file behind it.
    pub fn segment_source(&self, rendition: &str, msn: u64) -> Option<SegmentSource> {
        self.read(|s| {
            let st = s.renditions.get(rendition)?.segments.get(&msn)?;
            match (&st.bytes, &s.dvr) {
                (Some(b), _) => Some(SegmentSource::Memory(b.clone())),
                (None, Some(d)) if st.on_disk => Some(SegmentSource::File(dvr::segment_path(
                    &d.dir, rendition, msn,
                ))),
                _ => None,
            }
        })
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
        r.set_init("", Bytes::from_static(b"first"), info.clone(), false);
        for msn in 0..2 {
            r.push_part("", msn, Bytes::from_static(b"x"), 0.5, true, 0, false);
            r.finish_segment("", msn);
        }
        r.set_init("", Bytes::from_static(b"second"), info, true);
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

    /// Pushes segments `msns` of 1 s (two 0.5 s parts, bytes `[msn, part]`).
    fn one_second_segments(r: &RoomHls, msns: std::ops::Range<u64>) {
        for msn in msns {
            for p in 0..2u8 {
                r.push_part(
                    "",
                    msn,
                    Bytes::from(vec![msn as u8, p]),
                    0.5,
                    p == 0,
                    1000 * msn as i64,
                    false,
                );
            }
            r.finish_segment("", msn);
        }
    }

    async fn settled(r: &RoomHls) {
        for _ in 0..500 {
            if r.read(|s| s.dvr.as_ref().is_none_or(|d| d.pending_writes == 0)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("DVR writes never finished");
    }

    /// The window reaches back `SKYLARK_DVR_WINDOW_S`; behind the live edge segments are
    /// files (served from there), their parts gone from memory and the playlist; what
    /// slides out is deleted, and the directory goes with the room.
    #[tokio::test(flavor = "current_thread")]
    async fn dvr_window_is_on_disk_behind_the_live_edge() {
        let root = tempfile::tempdir().unwrap();
        let settings = dvr::Settings {
            window: Duration::from_secs(20),
            root: root.path().to_path_buf(),
        };
        let r = RoomHls::with_dvr(
            Duration::from_secs(1),
            Duration::from_millis(500),
            Some(&settings),
            "room1",
        );
        one_second_segments(&r, 0..40);
        settled(&r).await;
        // Once more, so the slide sees every write done.
        one_second_segments(&r, 40..41);
        settled(&r).await;
        let (first, n, text) = r
            .read_rendition("", |s| {
                (
                    s.playlist.media_sequence,
                    s.playlist.segments.len(),
                    s.playlist.render(),
                )
            })
            .unwrap();
        assert_eq!((first, n), (21, 20), "20 s of 1 s segments:\n{text}");
        assert!(text.contains("CAN-SKIP-UNTIL=6.000,"), "{text}");
        let dir = r.read(|s| s.dvr.as_ref().unwrap().dir.clone());
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort_by_key(|f| f[2..f.len() - 4].parse::<u64>().unwrap());
        let want: Vec<String> = (21..41).map(|m| format!("r.{m}.m4s")).collect();
        assert_eq!(
            files, want,
            "the window's segments, the slid-out ones deleted"
        );
        // Behind the edge: a file, no parts in memory; at the edge: memory.
        match r.segment_source("", 22) {
            Some(SegmentSource::File(p)) => {
                assert_eq!(dvr::read(&p).await.unwrap().as_ref(), &[22, 0, 22, 1]);
            }
            _ => panic!("segment 22 should be a DVR file"),
        }
        assert!(r.part("", 22, 0).is_none());
        let parts_kept = r
            .read_rendition("", |s| {
                s.playlist
                    .segments
                    .iter()
                    .filter(|s| !s.parts.is_empty())
                    .count()
            })
            .unwrap();
        assert_eq!(
            parts_kept, WINDOW_SEGMENTS,
            "part lists kept for the live edge only"
        );
        assert!(matches!(
            r.segment_source("", 40),
            Some(SegmentSource::Memory(_))
        ));
        assert!(r.segment_source("", 20).is_none(), "slid out");
        assert!(!text.contains("seg30.0.m4s"), "parts near the edge only");
        let (window, have) = r.read(|s| s.dvr_seconds()).unwrap();
        assert_eq!(window, 20.0);
        assert_eq!(have, 0.0, "no listed rendition (no init) in this test");

        r.close_dvr().unwrap().await.unwrap();
        assert!(!dir.exists(), "the room's DVR directory is removed with it");
        let n = r.read_rendition("", |s| s.playlist.segments.len()).unwrap();
        assert_eq!(n, WINDOW_SEGMENTS, "back to the live edge");
    }

    /// A segment that could not be written (here: no directory) is never listed once
    /// it is behind the live edge: the window stays at the edge instead of naming 404s.
    #[tokio::test(flavor = "current_thread")]
    async fn a_segment_not_on_disk_cuts_the_window() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("file");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let settings = dvr::Settings {
            window: Duration::from_secs(60),
            root: blocker,
        };
        let r = RoomHls::with_dvr(
            Duration::from_secs(1),
            Duration::from_millis(500),
            Some(&settings),
            "room2",
        );
        for msn in 0..20 {
            one_second_segments(&r, msn..msn + 1);
            settled(&r).await;
        }
        let n = r.read_rendition("", |s| s.playlist.segments.len()).unwrap();
        assert_eq!(n, WINDOW_SEGMENTS);
        for msn in 12..20 {
            assert!(matches!(
                r.segment_source("", msn),
                Some(SegmentSource::Memory(_))
            ));
        }
    }

    #[test]
    fn renditions_are_listed_best_first_and_report_each_other() {
        let r = RoomHls::new(Duration::from_secs(2), Duration::from_millis(500));
        let info = |w, h| StreamInfo {
            codecs: "avc1.42c01f,opus".into(),
            resolution: Some((w, h)),
            bandwidth: 0,
        };
        r.set_init("l", Bytes::from_static(b"init-l"), info(320, 180), false);
        r.set_init("h", Bytes::from_static(b"init-h"), info(1280, 720), false);
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
