//! Synthetic H.264 video: a real x264 clip, looped, with a marker per frame and
//! filler data to reach a target bitrate.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use super::mark::{is_hashed, mark_nal, Fnv64};
use super::nal::{nal_type, split_access_units, NAL_FILLER, NAL_IDR, START_CODE};

/// Frames per second of the clip and of the source.
pub const FPS: u32 = 30;

/// RTP clock rate of H.264.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// `profile-level-id` the clip conforms to and the peers negotiate: constrained
/// baseline, level 3.1 (what browsers and the Skylark SFU offer first).
pub const PROFILE_LEVEL_ID: u32 = 0x42e01f;

/// Two seconds of `testsrc2`, 320x240 at 30 fps, encoded once with FFmpeg + libx264
/// (constrained baseline, no B-frames, one IDR with SPS/PPS at frame 0, x264's
/// SEI stripped). See `assets/README.md` for the command.
static CLIP: &[u8] = include_bytes!("../../assets/clip.h264");

/// The embedded clip, raw Annex B.
///
/// ```
/// let aus = skylark_loadgen::source::split_access_units(skylark_loadgen::source::clip());
/// assert_eq!(aus.len(), 60);
/// ```
pub fn clip() -> &'static [u8] {
    CLIP
}

/// One clip frame, prepared once: Annex B bytes with 4-byte start codes, and the
/// hash state after its hashed NAL units so only filler needs hashing per frame.
struct ClipFrame {
    annexb: Vec<u8>,
    hash: Fnv64,
    keyframe: bool,
}

fn clip_frames() -> &'static [ClipFrame] {
    static FRAMES: OnceLock<Vec<ClipFrame>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        split_access_units(CLIP)
            .into_iter()
            .map(|nals| {
                let mut annexb = Vec::new();
                let mut hash = Fnv64::new();
                let mut keyframe = false;
                for nal in nals {
                    annexb.extend_from_slice(&START_CODE);
                    annexb.extend_from_slice(nal);
                    if is_hashed(nal) {
                        hash.write_nal(nal);
                    }
                    keyframe |= nal_type(nal) == NAL_IDR;
                }
                ClipFrame {
                    annexb,
                    hash,
                    keyframe,
                }
            })
            .collect()
    })
}

/// How the synthetic video is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VideoConfig {
    /// Target bitrate of the access units (start codes and NAL units, no RTP), kbps.
    /// Frames are padded with filler data up to it; a target below the clip's own
    /// rate (~320 kbps) is not reached.
    pub bitrate_kbps: u32,
    /// Keyframe interval, rounded to whole frames (at least one).
    pub gop: Duration,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            bitrate_kbps: 600,
            gop: Duration::from_secs(2),
        }
    }
}

/// One access unit ready to hand to an RTP packetizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Frame sequence number, from 0.
    pub seq: u64,
    /// Whether the frame starts with SPS+PPS and holds an IDR slice.
    pub keyframe: bool,
    /// RTP timestamp in 90 kHz ticks from the first frame.
    pub rtp_time: u64,
    /// Annex B bytes: marker SEI, clip NAL units, optional filler.
    pub data: Vec<u8>,
}

/// Endless H.264 frames from the embedded clip.
///
/// The clip restarts at its IDR at every GOP boundary (or when a keyframe is forced);
/// a GOP longer than the clip continues with the clip's P-frames again, which a
/// decoder would show with artifacts but which this crate never decodes.
///
/// ```
/// use skylark_loadgen::source::{VideoConfig, VideoSource, FPS};
/// let mut video = VideoSource::new(VideoConfig { bitrate_kbps: 1000, ..Default::default() });
/// let frames: Vec<_> = (0..FPS).map(|_| video.next_frame(0)).collect();
/// assert!(frames[0].keyframe && !frames[1].keyframe);
/// assert_eq!(frames[1].rtp_time, 3000);
/// ```
#[derive(Debug, Clone)]
pub struct VideoSource {
    config: VideoConfig,
    gop_frames: u64,
    seq: u64,
    pos_in_gop: u64,
    bytes_out: u64,
    force_key: bool,
}

impl VideoSource {
    /// A source whose first frame is a keyframe.
    pub fn new(config: VideoConfig) -> Self {
        let frames = (config.gop.as_secs_f64() * f64::from(FPS)).round();
        VideoSource {
            config,
            gop_frames: (frames as u64).max(1),
            seq: 0,
            pos_in_gop: 0,
            bytes_out: 0,
            force_key: false,
        }
    }

    /// The configuration the source was made with.
    pub fn config(&self) -> VideoConfig {
        self.config
    }

    /// Sequence number of the next frame.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// When frame `seq` is due, counted from the first frame.
    pub fn frame_offset(seq: u64) -> Duration {
        Duration::from_micros(seq.saturating_mul(1_000_000) / u64::from(FPS))
    }

    /// Makes the next frame a keyframe (answering a PLI/FIR) and restarts the GOP.
    pub fn force_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Produces the next frame, stamped with `sent_at_us` (µs since the UNIX epoch).
    pub fn next_frame(&mut self, sent_at_us: u64) -> VideoFrame {
        let frames = clip_frames();
        if self.force_key {
            self.force_key = false;
            self.pos_in_gop = 0;
        }
        let index = match self.pos_in_gop {
            0 => 0,
            // After the clip's last frame, loop over its P-frames (index 1..).
            n => 1 + ((n - 1) % (frames.len().max(2) as u64 - 1)) as usize,
        };
        let Some(clip) = frames.get(index).or(frames.first()) else {
            // The embedded clip has frames (a unit test checks it); this keeps an
            // empty asset from panicking anyway.
            return VideoFrame {
                seq: self.seq,
                keyframe: false,
                rtp_time: 0,
                data: Vec::new(),
            };
        };

        // Filler to keep the running byte count on the target: a big keyframe is
        // followed by smaller padding until the average is back on target.
        const MARK_LEN: u64 = 4 + 1 + 2 + 40 + 1;
        const FILLER_OVERHEAD: u64 = 4 + 1 + 1;
        let target =
            (self.seq + 1) * u64::from(self.config.bitrate_kbps) * 1000 / (8 * u64::from(FPS));
        let natural = self.bytes_out + MARK_LEN + clip.annexb.len() as u64;
        let filler_len = target
            .checked_sub(natural + FILLER_OVERHEAD)
            .map(|pad| pad as usize);

        let mut hash = clip.hash;
        let filler = filler_len.map(|n| {
            let mut nal = Vec::with_capacity(n + 2);
            nal.push(NAL_FILLER);
            nal.resize(n + 1, 0xff);
            nal.push(0x80);
            hash.write_nal(&nal);
            nal
        });

        let mark = mark_nal(self.seq, sent_at_us, hash.finish());
        let mut data = Vec::with_capacity(
            4 + mark.len() + clip.annexb.len() + filler.as_ref().map_or(0, |f| f.len() + 4),
        );
        data.extend_from_slice(&START_CODE);
        data.extend_from_slice(&mark);
        data.extend_from_slice(&clip.annexb);
        if let Some(filler) = filler {
            data.extend_from_slice(&START_CODE);
            data.extend_from_slice(&filler);
        }

        let frame = VideoFrame {
            seq: self.seq,
            keyframe: clip.keyframe,
            rtp_time: self.seq * u64::from(VIDEO_CLOCK_RATE / FPS),
            data,
        };
        self.bytes_out += frame.data.len() as u64;
        self.seq += 1;
        self.pos_in_gop = (self.pos_in_gop + 1) % self.gop_frames;
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{inspect_frame, nal_units};

    #[test]
    fn clip_is_60_frames_with_a_keyframe_first() {
        let frames = clip_frames();
        assert_eq!(frames.len(), 60, "2 s at 30 fps");
        assert!(frames[0].keyframe);
        assert!(frames[1..].iter().all(|f| !f.keyframe));
        let first: Vec<u8> = nal_units(&frames[0].annexb).map(nal_type).collect();
        assert_eq!(first, [7, 8, 5], "SPS, PPS, IDR");
        assert!(CLIP.len() < 200 * 1024);
    }

    #[test]
    fn every_frame_verifies_and_gops_restart() {
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: 800,
            gop: Duration::from_secs(1),
        });
        for seq in 0..150u64 {
            let f = v.next_frame(seq * 33_333);
            let mark = inspect_frame(&f.data).expect("marked");
            assert_eq!(mark.seq, seq);
            assert_eq!(mark.sent_at_us, seq * 33_333);
            assert!(mark.hash_ok, "frame {seq}");
            assert_eq!(mark.keyframe, seq % 30 == 0, "frame {seq}");
            assert_eq!(f.keyframe, mark.keyframe);
        }
        v.force_keyframe();
        assert!(v.next_frame(0).keyframe);
        assert!(!v.next_frame(0).keyframe);
    }

    #[test]
    fn a_flipped_byte_fails_the_hash() {
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: 3000,
            gop: Duration::from_secs(2),
        });
        let _keyframe = v.next_frame(41);
        let f = v.next_frame(42);
        let mark_end = 4 + mark_nal(1, 42, 0).len();
        assert!(nal_units(&f.data).any(|n| nal_type(n) == NAL_FILLER));
        // Flip bytes across the slice data and the filler, after the mark.
        for at in [mark_end + 10, f.data.len() / 2, f.data.len() - 2] {
            let mut bad = f.data.clone();
            bad[at] ^= 0x01;
            let mark = inspect_frame(&bad).expect("mark intact");
            assert!(!mark.hash_ok, "flip at {at} of {}", f.data.len());
        }
        // A dropped NAL unit fails it too.
        let nals: Vec<&[u8]> = nal_units(&f.data).collect();
        let mut short = Vec::new();
        for nal in &nals[..nals.len() - 1] {
            short.extend_from_slice(&START_CODE);
            short.extend_from_slice(nal);
        }
        assert!(!inspect_frame(&short).expect("marked").hash_ok);
    }

    #[test]
    fn padding_reaches_the_target_bitrate() {
        for kbps in [500u32, 1000, 2500, 6000] {
            let mut v = VideoSource::new(VideoConfig {
                bitrate_kbps: kbps,
                gop: Duration::from_secs(2),
            });
            let bytes: usize = (0..2 * FPS).map(|_| v.next_frame(0).data.len()).sum();
            let got_kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
            let err = (got_kbps - f64::from(kbps)).abs() / f64::from(kbps);
            assert!(err < 0.10, "target {kbps} kbps, got {got_kbps:.0}");
        }
    }

    #[test]
    fn below_the_clip_rate_no_filler_is_added() {
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: 1,
            gop: Duration::from_secs(2),
        });
        for _ in 0..60 {
            let f = v.next_frame(0);
            assert!(nal_units(&f.data).all(|n| nal_type(n) != NAL_FILLER));
        }
    }
}
