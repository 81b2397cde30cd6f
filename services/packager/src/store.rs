//! What the packager serves: per room, the init segment, the parts and segments of a
//! rolling window, and the LL-HLS playlist — plus a version counter that wakes
//! blocking playlist and part requests the moment something new lands.

use bytes::Bytes;
use skylark_media::hls::{MediaPlaylist, Part, Segment};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Segments kept behind the live edge.
pub const WINDOW_SEGMENTS: usize = 8;

/// The codec and picture facts the multivariant playlist advertises.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamInfo {
    /// RFC 6381 codecs, e.g. `avc1.42e01f,opus`.
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    /// Peak bits per second seen in a segment.
    pub bandwidth: u64,
}

pub struct State {
    pub playlist: MediaPlaylist,
    pub init: Option<Bytes>,
    pub info: StreamInfo,
    parts: HashMap<(u64, u64), Bytes>,
    segments: HashMap<u64, Bytes>,
    /// When the stream ended; the room is dropped a grace period later.
    pub ended_at: Option<Instant>,
}

/// One room's HLS output.
pub struct RoomHls {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    /// The same room as live FLV (HTTP-FLV / WS-FLV viewers).
    pub flv: Arc<crate::flv::FlvFeed>,
}

impl RoomHls {
    pub fn new(segment_target: Duration, part_target: Duration) -> Arc<Self> {
        let (version, _) = watch::channel(0);
        Arc::new(Self {
            state: Mutex::new(State {
                playlist: MediaPlaylist::new(
                    segment_target.as_secs_f64(),
                    part_target.as_secs_f64(),
                ),
                init: None,
                info: StreamInfo::default(),
                parts: HashMap::new(),
                segments: HashMap::new(),
                ended_at: None,
            }),
            version,
            flv: Arc::default(),
        })
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Runs `f` on the state (never across an await).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn set_init(&self, init: Bytes, info: StreamInfo) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.init = Some(init);
            s.info.codecs = info.codecs;
            s.info.resolution = info.resolution;
        }
        self.bump();
    }

    /// Appends a part to segment `msn` (opening it if new) and updates the preload hint.
    #[allow(clippy::too_many_arguments)]
    pub fn push_part(
        &self,
        msn: u64,
        bytes: Bytes,
        duration: f64,
        independent: bool,
        pdt_ms: i64,
        discontinuity: bool,
    ) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
        }
        self.bump();
    }

    /// Closes segment `msn`: its bytes are the concatenation of its parts (CMAF).
    pub fn finish_segment(&self, msn: u64) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
        }
        self.bump();
    }

    /// Marks the stream ended: `EXT-X-ENDLIST`, and blocked requests return at once.
    pub fn end(&self) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.playlist.ended = true;
            s.ended_at = Some(Instant::now());
        }
        self.bump();
    }

    pub fn part(&self, msn: u64, part: u64) -> Option<Bytes> {
        self.read(|s| s.parts.get(&(msn, part)).cloned())
    }

    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.read(|s| s.segments.get(&msn).cloned())
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

    #[test]
    fn window_slides_and_segments_concatenate_parts() {
        let r = RoomHls::new(Duration::from_secs(2), Duration::from_millis(500));
        for msn in 0..12u64 {
            for p in 0..4 {
                r.push_part(
                    msn,
                    Bytes::from(vec![msn as u8, p as u8]),
                    0.5,
                    p == 0,
                    1000 * msn as i64,
                    false,
                );
            }
            r.finish_segment(msn);
        }
        r.read(|s| {
            assert_eq!(s.playlist.segments.len(), WINDOW_SEGMENTS);
            assert_eq!(s.playlist.media_sequence, 12 - WINDOW_SEGMENTS as u64);
            assert_eq!(s.playlist.preload_hint.as_deref(), Some("seg12.0.m4s"));
        });
        assert_eq!(
            r.segment(11).unwrap().as_ref(),
            &[11, 0, 11, 1, 11, 2, 11, 3]
        );
        assert!(r.segment(0).is_none(), "slid out");
        assert!(r.part(0, 0).is_none());
        assert_eq!(r.part(11, 3).unwrap().as_ref(), &[11, 3]);
    }
}
