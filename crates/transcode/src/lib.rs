//! Audio transcoding for Skylark: AAC from RTMP publishers to Opus for WebRTC
//! viewers. Pure Rust, no I/O, no threads, no clocks.
//!
//! [`AacToOpus`] decodes AAC-LC raw frames (the FLV/RTMP payload, no ADTS)
//! with Symphonia's AAC decoder, resamples to 48 kHz with a windowed-sinc
//! filter (see [`resample`]), makes the audio stereo (mono is duplicated),
//! and encodes 20 ms Opus packets with `ropus`, a pure-Rust port of the
//! reference libopus (no C compiler, no CMake, no system library).
//!
//! Timestamps are in 48 kHz units throughout. The first packet starts at the
//! first frame's `pts_48k`; later packets follow the decoded sample count, so
//! millisecond rounding in RTMP timestamps causes no jitter. A frame that
//! starts up to [`RESYNC_THRESHOLD`] (100 ms) after where the audio so far
//! ends (lost or undecodable frames before it) has the gap filled with
//! silence. A larger jump either way (a long gap, or a publisher restarting
//! its clock) starts a new timeline at that frame: the partial packet is
//! completed with silence and sent, and the resampler starts over.
//!
//! The Opus encoder delays its input by its lookahead ([`AacToOpus::pre_skip`],
//! 312 samples = 6.5 ms), and WebRTC receivers play a packet's audio at its
//! RTP time (RTP has no pre-skip): so each timeline drops its first
//! lookahead's worth of input, and a sound comes out at its input timestamp,
//! which is what lip sync with the video's timestamps needs.
//!
//! ```
//! use skylark_media::aac::AudioSpecificConfig;
//! use skylark_transcode::AacToOpus;
//!
//! let asc = AudioSpecificConfig::lc(44_100, 2)?;
//! let mut transcoder = AacToOpus::new(&asc)?;
//! assert_eq!(transcoder.input_sample_rate(), 44_100);
//! // An empty frame is skipped; real frames come from `flv::AudioTag::AacRaw`.
//! assert!(transcoder.push(&[], 0)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod resample;

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use skylark_media::aac::{AacError, AudioSpecificConfig, AOT_AAC_LC};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

use resample::Resampler;

/// Opus's sample rate, and the unit of every timestamp here.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms Opus packet.
pub const FRAME_SAMPLES: usize = 960;
/// A frame whose timestamp is further than this from where the audio so far
/// ends (in 48 kHz samples, 100 ms) starts a new timeline.
pub const RESYNC_THRESHOLD: u64 = 4_800;
/// A frame that starts later than where the audio so far ends by more than
/// this (10 ms in 48 kHz samples; RTMP's millisecond rounding is far less,
/// one AAC frame is at least 21 ms) but no more than [`RESYNC_THRESHOLD`]
/// follows lost frames: the gap is filled with silence.
pub const GAP_TOLERANCE: u64 = 480;
/// The largest raw AAC frame accepted (an AAC-LC stereo frame is at most
/// 2 × 768 bytes; fill elements add some).
pub const MAX_FRAME_SIZE: usize = 8 << 10;
/// Default Opus bitrate: transparent for stereo music at 20 ms frames.
pub const DEFAULT_BITRATE: u32 = 96_000;

/// Why the transcoder could not be set up or could not process a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The AudioSpecificConfig does not parse.
    #[error("bad AAC config: {0}")]
    Config(#[from] AacError),
    /// Not AAC-LC mono or stereo at a standard sampling frequency.
    #[error("unsupported AAC stream ({0}); Skylark transcodes AAC-LC mono or stereo")]
    Unsupported(String),
    /// A frame the AAC decoder rejected; the next frame may decode.
    #[error("AAC frame does not decode: {0}")]
    Decode(String),
    /// A frame over [`MAX_FRAME_SIZE`].
    #[error("AAC frame of {0} bytes is too large")]
    FrameTooLarge(usize),
    /// The Opus encoder failed (a bug: its input is always well-formed).
    /// The packets of that call are lost; later calls go on.
    #[error("Opus encoder: {0}")]
    Encode(String),
}

/// One encoded Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// The Opus packet (RFC 6716), one 20 ms frame.
    pub data: Bytes,
    /// The timestamp of its first sample, in 48 kHz units.
    pub pts_48k: u64,
    /// Its duration in 48 kHz samples (960).
    pub duration: u32,
}

/// Settings of an [`AacToOpus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscodeConfig {
    /// Opus bitrate in bits per second (500 to 512000).
    pub bitrate: u32,
    /// Opus encoder complexity, 0–10: CPU against quality.
    pub complexity: u8,
}

impl Default for TranscodeConfig {
    /// 96 kb/s, complexity 9 (the libopus default is 10; 9 costs less CPU for
    /// no audible difference).
    fn default() -> Self {
        Self {
            bitrate: DEFAULT_BITRATE,
            complexity: 9,
        }
    }
}

/// Counters of an [`AacToOpus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscodeStats {
    /// AAC frames decoded.
    pub frames_in: u64,
    /// AAC frames that failed to decode.
    pub decode_errors: u64,
    /// Opus packets produced.
    pub packets_out: u64,
    /// Times the timeline restarted (gaps or jumps).
    pub resyncs: u64,
}

/// AAC-LC → Opus (48 kHz stereo, 20 ms packets), one stream.
pub struct AacToOpus {
    config: TranscodeConfig,
    asc_bytes: Box<[u8]>,
    decoder: AacDecoder,
    input_rate: u32,
    channels: usize,
    /// One per channel; `None` at 48 kHz.
    resamplers: Option<[Resampler; 2]>,
    encoder: ropus::Encoder,
    /// Interleaved stereo at 48 kHz, not yet encoded.
    pending: Vec<f32>,
    /// Timestamp of `pending[0]`.
    pending_pts: u64,
    /// Where the input so far ends, in 48 kHz units (`None` before the
    /// first frame).
    input_end: Option<u64>,
    /// Input samples (per channel) of the current timeline, at the input
    /// rate, and the timestamp it started at.
    timeline_start: u64,
    timeline_samples: u64,
    /// 48 kHz samples still to drop at the timeline's start (the encoder's
    /// lookahead, so that output time = input time).
    skip: usize,
    stats: TranscodeStats,
    decoded: Vec<f32>,
}

impl std::fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToOpus")
            .field("input_rate", &self.input_rate)
            .field("channels", &self.channels)
            .field("pending_samples", &(self.pending.len() / 2))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AacToOpus {
    /// A transcoder for the stream `asc` describes, with default settings.
    pub fn new(asc: &AudioSpecificConfig) -> Result<Self, TranscodeError> {
        Self::with_config(asc, TranscodeConfig::default())
    }

    /// A transcoder from the raw AudioSpecificConfig bytes (the FLV AAC
    /// sequence header after its two-byte tag header).
    pub fn from_asc_bytes(asc: &[u8]) -> Result<Self, TranscodeError> {
        Self::new(&AudioSpecificConfig::parse(asc)?)
    }

    /// A transcoder with explicit settings.
    pub fn with_config(
        asc: &AudioSpecificConfig,
        config: TranscodeConfig,
    ) -> Result<Self, TranscodeError> {
        if asc.object_type != AOT_AAC_LC || asc.extension.is_some() {
            return Err(TranscodeError::Unsupported(asc.codec_string()));
        }
        if asc.frame_length_960 {
            return Err(TranscodeError::Unsupported("960-sample frames".into()));
        }
        let channels = match asc.channel_count() {
            Some(n @ 1..=2) => usize::from(n),
            _ => {
                return Err(TranscodeError::Unsupported(format!(
                    "channel configuration {}",
                    asc.channel_configuration
                )))
            }
        };
        let input_rate = asc.sampling_frequency;
        if asc.sampling_frequency_index > 12 {
            return Err(TranscodeError::Unsupported(format!(
                "explicit sampling frequency {input_rate} Hz"
            )));
        }
        let resamplers = if input_rate == SAMPLE_RATE {
            None
        } else {
            let make = || {
                Resampler::new(input_rate, SAMPLE_RATE).ok_or_else(|| {
                    TranscodeError::Unsupported(format!("sampling frequency {input_rate} Hz"))
                })
            };
            Some([make()?, make()?])
        };
        let asc_bytes = asc.to_bytes()?.into_boxed_slice();
        let decoder = new_decoder(&asc_bytes)?;
        let encoder = new_encoder(config)?;
        Ok(Self {
            config,
            asc_bytes,
            decoder,
            input_rate,
            channels,
            resamplers,
            encoder,
            pending: Vec::with_capacity(4 * FRAME_SAMPLES),
            pending_pts: 0,
            input_end: None,
            timeline_start: 0,
            timeline_samples: 0,
            skip: 0,
            stats: TranscodeStats::default(),
            decoded: Vec::new(),
        })
    }

    /// The AAC sampling frequency.
    pub fn input_sample_rate(&self) -> u32 {
        self.input_rate
    }

    /// The AAC channel count (1 or 2); the output is always stereo.
    pub fn input_channels(&self) -> usize {
        self.channels
    }

    /// The Opus encoder's lookahead in 48 kHz samples: the `pre_skip` of an
    /// `OpusHead` for these packets.
    pub fn pre_skip(&self) -> u16 {
        u16::try_from(self.encoder.lookahead()).unwrap_or(u16::MAX)
    }

    /// Counters.
    pub fn stats(&self) -> TranscodeStats {
        self.stats
    }

    /// Decodes one raw AAC frame whose first sample is at `pts_48k` (48 kHz
    /// units) and returns the Opus packets completed by it (usually one, at
    /// times zero or two).
    ///
    /// A frame that does not decode is an error for that frame only: the
    /// stream goes on with the next one, and the gap it leaves is filled
    /// with silence (see the crate docs).
    pub fn push(
        &mut self,
        aac_frame: &[u8],
        pts_48k: u64,
    ) -> Result<Vec<OpusPacket>, TranscodeError> {
        if aac_frame.is_empty() {
            return Ok(Vec::new());
        }
        if aac_frame.len() > MAX_FRAME_SIZE {
            return Err(TranscodeError::FrameTooLarge(aac_frame.len()));
        }
        self.decode(aac_frame)?;
        let mut out = Vec::new();

        match self.input_end {
            // A few missing frames (lost, or undecodable): bridge with
            // silence so that what follows keeps its timing.
            Some(end) if pts_48k > end + GAP_TOLERANCE && pts_48k - end <= RESYNC_THRESHOLD => {
                let missing = (pts_48k - end) * u64::from(self.input_rate) / u64::from(SAMPLE_RATE);
                let silence = vec![0.0; missing as usize * self.channels];
                self.feed_pcm(&silence);
            }
            Some(end) if end.abs_diff(pts_48k) <= RESYNC_THRESHOLD => {}
            Some(_) => {
                // A new timeline: finish the old one.
                self.stats.resyncs += 1;
                self.finish_timeline(&mut out)?;
                self.start_timeline(pts_48k);
            }
            None => self.start_timeline(pts_48k),
        }
        let decoded = std::mem::take(&mut self.decoded);
        self.feed_pcm(&decoded);
        self.decoded = decoded;
        self.encode_ready(&mut out)?;
        Ok(out)
    }

    /// Adds interleaved input-rate PCM to the current timeline: split
    /// channels (duplicating mono), resample, interleave as stereo.
    fn feed_pcm(&mut self, pcm: &[f32]) {
        self.timeline_samples += (pcm.len() / self.channels) as u64;
        self.input_end = Some(
            self.timeline_start
                + self.timeline_samples * u64::from(SAMPLE_RATE) / u64::from(self.input_rate),
        );
        let (left, right): (Vec<f32>, Vec<f32>) = if self.channels == 1 {
            (pcm.to_vec(), pcm.to_vec())
        } else {
            pcm.chunks_exact(2).map(|c| (c[0], c[1])).unzip()
        };
        let (left, right) = match &mut self.resamplers {
            Some([l, r]) => (l.process(&left), r.process(&right)),
            None => (left, right),
        };
        self.append(&left, &right);
    }

    /// Encodes what is left, padding the last packet with silence.
    pub fn flush(&mut self) -> Result<Vec<OpusPacket>, TranscodeError> {
        let mut out = Vec::new();
        self.finish_timeline(&mut out)?;
        self.input_end = None;
        Ok(out)
    }

    fn start_timeline(&mut self, pts: u64) {
        self.timeline_start = pts;
        self.timeline_samples = 0;
        self.pending_pts = pts;
        self.pending.clear();
        self.skip = self.encoder.lookahead() as usize;
    }

    /// Drains the resamplers, pads to a whole packet and encodes it all.
    fn finish_timeline(&mut self, out: &mut Vec<OpusPacket>) -> Result<(), TranscodeError> {
        if let Some([l, r]) = &mut self.resamplers {
            let (left, right) = (l.flush(), r.flush());
            self.append(&left, &right);
            // Fresh resamplers for the next timeline.
            if let (Some(a), Some(b)) = (
                Resampler::new(self.input_rate, SAMPLE_RATE),
                Resampler::new(self.input_rate, SAMPLE_RATE),
            ) {
                self.resamplers = Some([a, b]);
            }
        }
        let partial = self.pending.len() % (2 * FRAME_SAMPLES);
        if partial != 0 {
            self.pending
                .resize(self.pending.len() + 2 * FRAME_SAMPLES - partial, 0.0);
        }
        self.encode_ready(out)
    }

    fn append(&mut self, left: &[f32], right: &[f32]) {
        let skip = self.skip.min(left.len());
        self.skip -= skip;
        // The two resamplers see the same lengths, so they stay in step.
        for (l, r) in left[skip..].iter().zip(&right[skip..]) {
            self.pending.push(sanitize(*l));
            self.pending.push(sanitize(*r));
        }
    }

    /// Encodes every whole packet in `pending`. On an encoder failure the
    /// remaining whole packets are dropped (their time still passes, so the
    /// timestamps stay right) and the error is returned.
    fn encode_ready(&mut self, out: &mut Vec<OpusPacket>) -> Result<(), TranscodeError> {
        let mut buf = [0u8; 4000];
        let whole = self.pending.len() / (2 * FRAME_SAMPLES) * (2 * FRAME_SAMPLES);
        let mut result = Ok(());
        for frame in self.pending[..whole].chunks_exact(2 * FRAME_SAMPLES) {
            let pts = self.pending_pts;
            self.pending_pts += FRAME_SAMPLES as u64;
            if result.is_err() {
                continue;
            }
            // Like the decoder, the encoder sees publisher-shaped audio; a
            // panic in it must not take the server down.
            let encoder = &mut self.encoder;
            match catch_unwind(AssertUnwindSafe(|| encoder.encode_float(frame, &mut buf))) {
                Ok(Ok(n)) => {
                    out.push(OpusPacket {
                        data: Bytes::copy_from_slice(&buf[..n]),
                        pts_48k: pts,
                        duration: FRAME_SAMPLES as u32,
                    });
                    self.stats.packets_out += 1;
                }
                Ok(Err(e)) => result = Err(TranscodeError::Encode(format!("{e:?}"))),
                Err(_) => {
                    result = Err(TranscodeError::Encode("the Opus encoder panicked".into()));
                    match new_encoder(self.config) {
                        Ok(e) => self.encoder = e,
                        Err(e) => result = Err(e),
                    }
                }
            }
        }
        self.pending.drain(..whole);
        result
    }

    /// Decodes into `self.decoded` (interleaved, input channels).
    ///
    /// The decoder is third-party code fed with publisher data: a panic in
    /// it is caught, reported as a decode error, and the decoder is rebuilt
    /// so that the stream goes on (with a `panic = "abort"` profile this
    /// protection is gone; the workspace uses unwinding).
    fn decode(&mut self, frame: &[u8]) -> Result<(), TranscodeError> {
        let decoder = &mut self.decoder;
        let decoded = &mut self.decoded;
        let channels = self.channels;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let packet = PacketRef::new(0, Timestamp::new(0), Duration::new(1024), frame);
            match decoder.decode_ref(&packet) {
                Ok(buf) => {
                    if buf.spec().channels().count() != channels {
                        return Err("channel count changed".to_owned());
                    }
                    decoded.clear();
                    buf.copy_to_vec_interleaved(decoded);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }));
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                self.decoder = new_decoder(&self.asc_bytes)?;
                Err("the AAC decoder panicked".to_owned())
            }
        };
        match result {
            Ok(()) => {
                self.stats.frames_in += 1;
                Ok(())
            }
            Err(e) => {
                self.stats.decode_errors += 1;
                Err(TranscodeError::Decode(e))
            }
        }
    }
}

fn new_encoder(config: TranscodeConfig) -> Result<ropus::Encoder, TranscodeError> {
    let bitrate = ropus::Bitrate::try_bits(config.bitrate)
        .map_err(|e| TranscodeError::Encode(format!("bitrate {}", e.0)))?;
    ropus::Encoder::builder(
        SAMPLE_RATE,
        ropus::Channels::Stereo,
        ropus::Application::Audio,
    )
    .bitrate(bitrate)
    .complexity(config.complexity.min(10))
    .build()
    .map_err(|e| TranscodeError::Encode(format!("{e:?}")))
}

fn new_decoder(asc: &[u8]) -> Result<AacDecoder, TranscodeError> {
    let mut params = AudioCodecParameters::new();
    params
        .for_codec(CODEC_ID_AAC)
        .with_extra_data(asc.to_vec().into_boxed_slice());
    AacDecoder::try_new(&params, &AudioDecoderOptions::default())
        .map_err(|e| TranscodeError::Unsupported(e.to_string()))
}

/// NaN becomes silence and everything is clipped to [-1, 1].
fn sanitize(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_configs() {
        let he = AudioSpecificConfig {
            extension: Some(skylark_media::aac::SbrExtension {
                object_type: 5,
                sampling_frequency: 48_000,
            }),
            ..AudioSpecificConfig::lc(24_000, 2).unwrap()
        };
        assert!(matches!(
            AacToOpus::new(&he),
            Err(TranscodeError::Unsupported(_))
        ));
        let six = AudioSpecificConfig::lc(48_000, 6).unwrap();
        assert!(matches!(
            AacToOpus::new(&six),
            Err(TranscodeError::Unsupported(_))
        ));
        let odd = AudioSpecificConfig::lc(44_099, 2).unwrap();
        assert!(matches!(
            AacToOpus::new(&odd),
            Err(TranscodeError::Unsupported(_))
        ));
        assert!(matches!(
            AacToOpus::from_asc_bytes(&[0x12]),
            Err(TranscodeError::Config(_))
        ));
        assert!(AacToOpus::from_asc_bytes(&[0x12, 0x10]).is_ok());
        assert!(AacToOpus::from_asc_bytes(&[0x11, 0x88]).is_ok()); // 48 kHz mono
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        let mut t = AacToOpus::from_asc_bytes(&[0x12, 0x10]).unwrap();
        let mut seed = 1u32;
        let mut errors = 0;
        for len in 1..400 {
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            if t.push(&frame, len as u64 * 1024).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0);
        assert_eq!(t.stats().decode_errors, errors);
        assert!(matches!(
            t.push(&vec![0; MAX_FRAME_SIZE + 1], 0),
            Err(TranscodeError::FrameTooLarge(_))
        ));
    }

    #[test]
    fn sanitize_clips() {
        assert_eq!(sanitize(f32::NAN), 0.0);
        assert_eq!(sanitize(3.0), 1.0);
        assert_eq!(sanitize(-3.0), -1.0);
        assert_eq!(sanitize(0.25), 0.25);
    }
}
