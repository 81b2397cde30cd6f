//! Synthetic H.264 video: real x264 clips, looped, with a marker per frame and
//! filler data to reach a target bitrate; one clip per simulcast layer.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use super::mark::{is_hashed, mark_nal, Fnv64, MARK_PAYLOAD_LEN};
use skylark_media::h264::{annexb_nalus, is_idr, nal_type, Sps, NAL_FILLER, NAL_SPS};

use super::access_unit::{split_access_units, START_CODE};

/// Frames per second of the clips and of the source.
pub const FPS: u32 = 30;

/// RTP clock rate of H.264.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// `profile-level-id` the clips conform to and the peers negotiate: constrained
/// baseline, level 3.1 (what browsers and the Skylark SFU offer first).
pub const PROFILE_LEVEL_ID: u32 = 0x42e01f;

/// Two seconds of `testsrc2`, 320x240 at 30 fps, encoded once with FFmpeg + libx264
/// (constrained baseline, no B-frames, one IDR with SPS/PPS at frame 0, x264's
/// SEI stripped). See `assets/README.md` for the command.
static CLIP: &[u8] = include_bytes!("../../assets/clip.h264");
/// The same at 160x120 (~105 kbit/s).
static CLIP_HALF: &[u8] = include_bytes!("../../assets/clip-160x120.h264");
/// The same at 80x60 (~28 kbit/s; coded as 80x64 with 4 rows cropped in the SPS).
static CLIP_QUARTER: &[u8] = include_bytes!("../../assets/clip-80x60.h264");

/// The embedded full-size clip, raw Annex B.
///
/// ```
/// let aus = skylark_loadgen::source::split_access_units(skylark_loadgen::source::clip());
/// assert_eq!(aus.len(), 60);
/// ```
pub fn clip() -> &'static [u8] {
    CLIP
}

/// One layer of the synthetic video: a RID, a picture size (its own embedded clip,
/// whose SPS says that size) and a share of the publisher's video bitrate.
///
/// A single-layer publisher sends layer 0 (full size) without a RID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// Index in [`SIMULCAST_LAYERS`], carried in every frame's marker.
    pub index: u8,
    /// The RTP stream id the layer is sent with.
    pub rid: &'static str,
    /// Picture width in the layer's SPS, pixels.
    pub width: u32,
    /// Picture height in the layer's SPS, pixels.
    pub height: u32,
    /// The layer's bitrate is the top layer's divided by this.
    pub bitrate_divisor: u32,
}

/// The simulcast layers a publisher sends, largest first: full size, 1/2 and 1/4 of
/// the width and height (a browser's default `scaleResolutionDownBy` 1, 2, 4).
///
/// Bitrates are the top layer's, /3 and /8: a picture with a quarter of the pixels
/// needs more than a quarter of the bits (encoders spend relatively more per pixel on
/// small pictures); the usual rule of thumb, bitrate ∝ pixels^0.75, gives
/// 4^0.75 ≈ 2.8 and 16^0.75 = 8, and browsers' simulcast ladders sit around there.
/// At the default 600 kbit/s the layers are 600, 200 and 75 kbit/s; the two small
/// clips' own rates (~105 and ~28 kbit/s) stay under that, so every layer is padded
/// to its target.
///
/// ```
/// use skylark_loadgen::source::SIMULCAST_LAYERS;
/// let kbps: Vec<u32> = SIMULCAST_LAYERS.iter().map(|l| l.bitrate_kbps(600)).collect();
/// assert_eq!(kbps, [600, 200, 75]);
/// assert_eq!(SIMULCAST_LAYERS.map(|l| l.rid), ["h", "m", "l"]);
/// ```
pub const SIMULCAST_LAYERS: [Layer; 3] = [
    Layer {
        index: 0,
        rid: "h",
        width: 320,
        height: 240,
        bitrate_divisor: 1,
    },
    Layer {
        index: 1,
        rid: "m",
        width: 160,
        height: 120,
        bitrate_divisor: 3,
    },
    Layer {
        index: 2,
        rid: "l",
        width: 80,
        height: 60,
        bitrate_divisor: 8,
    },
];

impl Layer {
    /// The layer with this marker index, if there is one.
    pub fn by_index(index: u8) -> Option<Layer> {
        SIMULCAST_LAYERS.get(usize::from(index)).copied()
    }

    /// The layer's bitrate when the top layer gets `top_kbps` (at least 1).
    pub fn bitrate_kbps(&self, top_kbps: u32) -> u32 {
        (top_kbps / self.bitrate_divisor.max(1)).max(1)
    }

    /// The layer's embedded clip, raw Annex B.
    pub fn clip(&self) -> &'static [u8] {
        match self.index {
            1 => CLIP_HALF,
            2 => CLIP_QUARTER,
            _ => CLIP,
        }
    }
}

/// The picture size (width, height in pixels, after cropping) that the first SPS of
/// an access unit declares; `None` without a parseable SPS. Parsed by the media
/// crate's SPS parser, the one that gives HLS players a rendition's `RESOLUTION`.
///
/// ```
/// use skylark_loadgen::source::{picture_size, VideoConfig, VideoSource};
/// let mut v = VideoSource::new(VideoConfig::default());
/// assert_eq!(picture_size(&v.next_frame(0).data), Some((320, 240)));
/// assert_eq!(picture_size(&v.next_frame(0).data), None, "a P-frame has no SPS");
/// ```
pub fn picture_size(annexb: &[u8]) -> Option<(u32, u32)> {
    let sps = annexb_nalus(annexb).find(|n| nal_type(n) == Some(NAL_SPS))?;
    let sps = Sps::parse(sps).ok()?;
    Some((sps.width, sps.height))
}

/// One clip frame, prepared once: Annex B bytes with 4-byte start codes, and the
/// hash state after its hashed NAL units so only filler needs hashing per frame.
struct ClipFrame {
    annexb: Vec<u8>,
    hash: Fnv64,
    keyframe: bool,
}

fn clip_frames(layer: Layer) -> &'static [ClipFrame] {
    static FRAMES: [OnceLock<Vec<ClipFrame>>; SIMULCAST_LAYERS.len()] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let Some(cell) = FRAMES.get(usize::from(layer.index)) else {
        return &[];
    };
    cell.get_or_init(|| {
        split_access_units(layer.clip())
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
                    keyframe |= is_idr(nal);
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

/// Endless H.264 frames from one layer's embedded clip.
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
    layer: Layer,
    gop_frames: u64,
    seq: u64,
    pos_in_gop: u64,
    bytes_out: u64,
    force_key: bool,
}

impl VideoSource {
    /// A full-size source (layer 0) whose first frame is a keyframe.
    pub fn new(config: VideoConfig) -> Self {
        Self::with_layer(config, SIMULCAST_LAYERS[0])
    }

    /// A source of one simulcast layer: `top` is the top layer's configuration, whose
    /// bitrate is divided by the layer's [`Layer::bitrate_divisor`].
    ///
    /// Sources made together stay in step: frame `n` of every layer has sequence
    /// number `n` and the same RTP time, so a viewer moved from one layer to another
    /// sees no gap.
    ///
    /// ```
    /// use skylark_loadgen::source::{inspect_frame, VideoConfig, VideoSource, SIMULCAST_LAYERS};
    /// let top = VideoConfig { bitrate_kbps: 900, ..Default::default() };
    /// let mut low = VideoSource::for_layer(top, SIMULCAST_LAYERS[2]);
    /// assert_eq!(low.config().bitrate_kbps, 112);
    /// let mark = inspect_frame(&low.next_frame(0).data).unwrap();
    /// assert_eq!((mark.layer, mark.keyframe, mark.hash_ok), (2, true, true));
    /// ```
    pub fn for_layer(top: VideoConfig, layer: Layer) -> Self {
        Self::with_layer(
            VideoConfig {
                bitrate_kbps: layer.bitrate_kbps(top.bitrate_kbps),
                ..top
            },
            layer,
        )
    }

    fn with_layer(config: VideoConfig, layer: Layer) -> Self {
        let frames = (config.gop.as_secs_f64() * f64::from(FPS)).round();
        VideoSource {
            config,
            layer,
            gop_frames: (frames as u64).max(1),
            seq: 0,
            pos_in_gop: 0,
            bytes_out: 0,
            force_key: false,
        }
    }

    /// The configuration the source was made with (its own bitrate, for a layer).
    pub fn config(&self) -> VideoConfig {
        self.config
    }

    /// The layer this source makes.
    pub fn layer(&self) -> Layer {
        self.layer
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
        let frames = clip_frames(self.layer);
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
        const MARK_LEN: u64 = 4 + 1 + 2 + MARK_PAYLOAD_LEN as u64 + 1;
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

        let mark = mark_nal(self.seq, sent_at_us, hash.finish(), self.layer.index);
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
    use crate::source::inspect_frame;

    #[test]
    fn clips_are_60_frames_with_a_keyframe_first() {
        for layer in SIMULCAST_LAYERS {
            let frames = clip_frames(layer);
            assert_eq!(frames.len(), 60, "2 s at 30 fps ({})", layer.rid);
            assert!(frames[0].keyframe);
            assert!(frames[1..].iter().all(|f| !f.keyframe));
            let first: Vec<u8> = annexb_nalus(&frames[0].annexb)
                .filter_map(nal_type)
                .collect();
            assert_eq!(first, [7, 8, 5], "SPS, PPS, IDR ({})", layer.rid);
        }
        assert!(CLIP.len() + CLIP_HALF.len() + CLIP_QUARTER.len() < 200 * 1024);
    }

    #[test]
    fn each_layer_says_its_size_in_its_sps() {
        let top = VideoConfig::default();
        let mut sizes = Vec::new();
        for layer in SIMULCAST_LAYERS {
            let mut v = VideoSource::for_layer(top, layer);
            let key = v.next_frame(0);
            assert!(key.keyframe);
            let size = picture_size(&key.data).expect("an SPS in the keyframe");
            assert_eq!(size, (layer.width, layer.height), "layer {}", layer.rid);
            // Same profile and level as the negotiated one (constrained baseline 3.1).
            let sps = annexb_nalus(&key.data)
                .find(|n| nal_type(n) == Some(NAL_SPS))
                .expect("SPS");
            assert_eq!(&sps[1..4], &[0x42, 0xc0, 0x1f], "layer {}", layer.rid);
            sizes.push(size);
        }
        assert_eq!(sizes, [(320, 240), (160, 120), (80, 60)]);
    }

    #[test]
    fn layers_stay_in_step_and_each_frame_names_its_layer() {
        let top = VideoConfig {
            bitrate_kbps: 1200,
            gop: Duration::from_secs(1),
        };
        let mut layers: Vec<VideoSource> = SIMULCAST_LAYERS
            .iter()
            .map(|l| VideoSource::for_layer(top, *l))
            .collect();
        let mut bytes = [0usize; 3];
        for seq in 0..60u64 {
            for (i, v) in layers.iter_mut().enumerate() {
                let f = v.next_frame(seq);
                let mark = inspect_frame(&f.data).expect("marked");
                assert_eq!((mark.seq, mark.layer), (seq, i as u8));
                assert!(mark.hash_ok);
                assert_eq!(f.keyframe, seq % 30 == 0, "layer {i} frame {seq}");
                assert_eq!(f.rtp_time, seq * 3000);
                bytes[i] += f.data.len();
            }
        }
        // Two seconds: each layer near its own target (top / 1, 3, 8).
        for (i, layer) in SIMULCAST_LAYERS.iter().enumerate() {
            let kbps = bytes[i] as f64 * 8.0 / 2.0 / 1000.0;
            let want = f64::from(layer.bitrate_kbps(1200));
            assert!(
                (kbps - want).abs() / want < 0.10,
                "{}: {kbps:.0} of {want}",
                layer.rid
            );
        }
        // Frame 60 starts a GOP everywhere; then a keyframe request for one layer
        // restarts that layer's GOP only.
        assert!(layers.iter_mut().all(|v| v.next_frame(0).keyframe));
        layers[1].force_keyframe();
        let keys: Vec<bool> = layers
            .iter_mut()
            .map(|v| v.next_frame(0).keyframe)
            .collect();
        assert_eq!(keys, [false, true, false]);
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
        let mark_end = 4 + mark_nal(1, 42, 0, 0).len();
        assert!(annexb_nalus(&f.data).any(|n| nal_type(n) == Some(NAL_FILLER)));
        // Flip bytes across the slice data and the filler, after the mark.
        for at in [mark_end + 10, f.data.len() / 2, f.data.len() - 2] {
            let mut bad = f.data.clone();
            bad[at] ^= 0x01;
            let mark = inspect_frame(&bad).expect("mark intact");
            assert!(!mark.hash_ok, "flip at {at} of {}", f.data.len());
        }
        // A dropped NAL unit fails it too.
        let nals: Vec<&[u8]> = annexb_nalus(&f.data).collect();
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
            assert!(annexb_nalus(&f.data).all(|n| nal_type(n) != Some(NAL_FILLER)));
        }
    }
}
