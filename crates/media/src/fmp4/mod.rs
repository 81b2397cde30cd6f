//! Fragmented MP4 (CMAF) writing for HLS: the init segment (`ftyp` + `moov`)
//! and fragments (`moof` + `mdat`) for an H.264 (`avc1`) track and an Opus or AAC
//! (`mp4a`) track.
//!
//! Boxes are written by hand with a small box writer, and [`read`] reads back the
//! timing they carry; nothing here reads files or keeps time. The packager decides where fragments and segments are cut and
//! passes the samples in.
//!
//! ```
//! use bytes::Bytes;
//! use skylark_media::fmp4::{fragment, init_segment, Sample, Track, TrackFragment};
//!
//! let init = init_segment(&[Track::opus(1, 2)])?;
//! let samples: Vec<Sample> = (0..50)
//!     .map(|_| Sample { duration: 960, data: Bytes::from_static(&[0xfc, 0, 0]), keyframe: true, composition_offset: 0 })
//!     .collect();
//! let part = fragment(1, &[TrackFragment { track_id: 1, base_media_decode_time: 0, samples: &samples }])?;
//! assert!(init.len() > 100 && part.len() > 150);
//! # Ok::<(), skylark_media::fmp4::Fmp4Error>(())
//! ```

mod boxes;
mod fragment;
mod init;
pub mod read;

pub use fragment::{fragment, segment_type, Sample, TrackFragment};
pub use init::init_segment;

use crate::aac::{AacError, AudioSpecificConfig};
use crate::h264::{AvcDecoderConfigurationRecord, H264Error};
use bytes::Bytes;

/// H.264 media timescale: the RTP clock, so timestamps need no conversion.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Opus media timescale: always 48 kHz.
pub const OPUS_TIMESCALE: u32 = 48_000;

/// One track of the presentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Track ID, non-zero and unique.
    pub id: u32,
    /// Ticks per second of sample durations and decode times.
    pub timescale: u32,
    /// What the track holds.
    pub codec: Codec,
}

/// A track's codec and its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// H.264 in `avc1` sample entries.
    Avc {
        /// Picture width in pixels.
        width: u16,
        /// Picture height in pixels.
        height: u16,
        /// SPS, PPS and profile for the `avcC` box.
        config: AvcDecoderConfigurationRecord,
    },
    /// Opus in `Opus` sample entries.
    Opus(OpusConfig),
    /// AAC in `mp4a` sample entries, its `AudioSpecificConfig` in the `esds` box
    /// (ISO/IEC 14496-14 §3.1).
    Aac(AudioSpecificConfig),
}

/// The fields of the `dOps` box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusConfig {
    /// Output channels: 1 or 2 (channel mapping family 0).
    pub channels: u8,
    /// Samples (at 48 kHz) to drop from the decoder output at the start.
    pub pre_skip: u16,
    /// The encoder's input sample rate, informational.
    pub input_sample_rate: u32,
    /// Gain in Q7.8 dB to apply to the output.
    pub output_gain: i16,
}

impl Track {
    /// An H.264 track at 90 kHz; width and height come from the record's SPS.
    pub fn avc(id: u32, config: AvcDecoderConfigurationRecord) -> Result<Self, Fmp4Error> {
        let sps = config.parse_sps()?;
        let dimension = |v: u32| u16::try_from(v).map_err(|_| Fmp4Error::PictureTooLarge(v));
        Ok(Self {
            id,
            timescale: VIDEO_TIMESCALE,
            codec: Codec::Avc {
                width: dimension(sps.width)?,
                height: dimension(sps.height)?,
                config,
            },
        })
    }

    /// An Opus track at 48 kHz with `channels` (1 or 2) and no pre-skip: a live
    /// stream joined mid-way has no encoder start to skip.
    pub fn opus(id: u32, channels: u8) -> Self {
        Self {
            id,
            timescale: OPUS_TIMESCALE,
            codec: Codec::Opus(OpusConfig {
                channels,
                pre_skip: 0,
                input_sample_rate: 48_000,
                output_gain: 0,
            }),
        }
    }

    /// An AAC track timed in its output sampling rate (the SBR rate for HE-AAC), so
    /// every raw frame lasts [`AudioSpecificConfig::samples_per_frame`] ticks.
    ///
    /// ```
    /// use skylark_media::aac::AudioSpecificConfig;
    /// use skylark_media::fmp4::Track;
    /// let t = Track::aac(2, AudioSpecificConfig::parse(&[0x12, 0x10])?)?;
    /// assert_eq!((t.timescale, t.codec_string().as_str()), (44_100, "mp4a.40.2"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn aac(id: u32, config: AudioSpecificConfig) -> Result<Self, Fmp4Error> {
        // The esds box carries the config re-serialized: it must serialize.
        config.to_bytes()?;
        Ok(Self {
            id,
            timescale: config.output_sampling_frequency(),
            codec: Codec::Aac(config),
        })
    }

    /// The RFC 6381 `codecs` value for playlists: `avc1.PPCCLL`, `opus` or `mp4a.40.N`.
    pub fn codec_string(&self) -> String {
        match &self.codec {
            Codec::Avc { config, .. } => config.codec_string(),
            Codec::Opus(_) => "opus".to_owned(),
            Codec::Aac(config) => config.codec_string(),
        }
    }
}

/// Checks what the init segment writer relies on.
fn validate_tracks(tracks: &[Track]) -> Result<(), Fmp4Error> {
    if tracks.is_empty() {
        return Err(Fmp4Error::NoTracks);
    }
    for (i, track) in tracks.iter().enumerate() {
        if track.id == 0 || tracks[..i].iter().any(|t| t.id == track.id) {
            return Err(Fmp4Error::TrackId(track.id));
        }
        if track.timescale == 0 {
            return Err(Fmp4Error::Timescale);
        }
        if let Codec::Opus(opus) = &track.codec {
            if !(1..=2).contains(&opus.channels) {
                return Err(Fmp4Error::OpusChannels(opus.channels));
            }
        }
    }
    Ok(())
}

/// Why an init segment or fragment could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// At least one track is needed.
    #[error("no tracks")]
    NoTracks,
    /// Track IDs must be non-zero and unique.
    #[error("track ID {0} is zero or used twice")]
    TrackId(u32),
    /// A timescale of zero.
    #[error("track timescale must not be zero")]
    Timescale,
    /// Only mono and stereo Opus (mapping family 0) are written.
    #[error("{0} Opus channels; only 1 or 2 are supported")]
    OpusChannels(u8),
    /// Width or height above 65535.
    #[error("picture dimension {0} does not fit the sample entry")]
    PictureTooLarge(u32),
    /// The `avcC` record or its SPS is invalid.
    #[error("invalid H.264 configuration: {0}")]
    Avc(#[from] H264Error),
    /// The AAC `AudioSpecificConfig` cannot be written.
    #[error("invalid AAC configuration: {0}")]
    Aac(#[from] AacError),
    /// More samples than one fragment may hold.
    #[error("{0} samples in one fragment; split it")]
    TooManySamples(usize),
    /// A sample of 4 GiB or more.
    #[error("sample of {0} bytes is too large")]
    SampleTooLarge(usize),
    /// Track data offsets beyond 2 GiB.
    #[error("fragment too large for 32-bit data offsets; split it")]
    FragmentTooLarge,
}

/// A one-picture MP4 of a keyframe: an init segment with `video` alone and one
/// fragment holding the picture (AVCC NAL units, as in segments). A browser's `<video>`
/// shows it as a still, decoded by the browser's own H.264 decoder: live thumbnails
/// without a video decoder on the server.
pub fn still(video: &Track, keyframe_avcc: Bytes) -> Result<Bytes, Fmp4Error> {
    let init = init_segment(std::slice::from_ref(video))?;
    let sample = Sample {
        // One frame at 30 fps: the picture's length matters to no one.
        duration: video.timescale / 30,
        data: keyframe_avcc,
        keyframe: true,
        composition_offset: 0,
    };
    let frag = fragment(
        1,
        &[TrackFragment {
            track_id: video.id,
            base_media_decode_time: 0,
            samples: std::slice::from_ref(&sample),
        }],
    )?;
    let mut out = Vec::with_capacity(init.len() + frag.len());
    out.extend_from_slice(&init);
    out.extend_from_slice(&frag);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests;
