//! H.264: RTP depacketizing and packetizing (RFC 6184, packetization-mode 1),
//! Annex-B/AVCC conversion, SPS/PPS parsing and the `avcC` record.
//!
//! The WebRTC path gives RTP packets to an [`H264Depacketizer`], which yields
//! [`AccessUnit`]s (one picture's NAL units) for the fMP4 muxer; the RTMP ingest
//! goes the other way with an [`H264Packetizer`].
//!
//! ```
//! use bytes::Bytes;
//! use skylark_media::h264::{H264Depacketizer, H264Packetizer};
//!
//! let nalus = [
//!     Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8]), // SPS
//!     Bytes::from_static(&[0x68, 0xce, 0x38, 0x80]),                               // PPS
//!     Bytes::from(vec![0x65; 3000]),                                               // IDR slice
//! ];
//! let payloads = H264Packetizer::new(1200)?.packetize(&nalus)?;
//! assert_eq!(payloads.len(), 4); // STAP-A(SPS, PPS) + 3 FU-A fragments
//!
//! let mut depacketizer = H264Depacketizer::new();
//! let last = payloads.len() - 1;
//! for (i, payload) in payloads.into_iter().enumerate() {
//!     depacketizer.push(payload, 100 + i as u16, 90_000, i == last)?;
//! }
//! let au = depacketizer.pop().expect("a complete access unit");
//! assert!(au.keyframe);
//! assert_eq!(au.timestamp, 90_000);
//! assert_eq!(au.nalus, nalus);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod annexb;
mod bits;
mod decoder_config;
mod depacketizer;
mod packetizer;
mod sps;

pub use annexb::{
    add_emulation_prevention, annexb_nalus, annexb_to_avcc, avcc_nalus, avcc_to_annexb,
    nalus_to_avcc, remove_emulation_prevention, AnnexBNalus, AvccNalus,
};
pub use decoder_config::{AvcConfigExtension, AvcDecoderConfigurationRecord};
pub use depacketizer::{
    AccessUnit, DepacketizeError, DepacketizerConfig, DepacketizerStats, H264Depacketizer,
};
pub use packetizer::{H264Packetizer, PacketizeError};
pub use sps::{FrameCropping, Pps, Sps};

/// Coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// Coded slice of an IDR picture: decoding can start here.
pub const NAL_IDR: u8 = 5;
/// Supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// Picture parameter set.
pub const NAL_PPS: u8 = 8;
/// Access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// Filler data (0xFF bytes): pads a stream up to a bitrate.
pub const NAL_FILLER: u8 = 12;
/// RTP single-time aggregation packet (RFC 6184 §5.7.1).
pub const NAL_STAP_A: u8 = 24;
/// RTP fragmentation unit (RFC 6184 §5.8).
pub const NAL_FU_A: u8 = 28;

/// `nal_unit_type` of a NAL unit (the low 5 bits of its first byte).
///
/// ```
/// assert_eq!(skylark_media::h264::nal_type(&[0x65, 0x88]), Some(5));
/// assert_eq!(skylark_media::h264::nal_type(&[]), None);
/// ```
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Whether `nal` is a coded slice of an IDR picture.
pub fn is_idr(nal: &[u8]) -> bool {
    nal_type(nal) == Some(NAL_IDR)
}

/// Whether an access unit's NAL units contain an IDR slice, so that a decoder
/// (given the parameter sets) can start there.
pub fn is_keyframe<N: AsRef<[u8]>>(nalus: &[N]) -> bool {
    nalus.iter().any(|n| is_idr(n.as_ref()))
}

/// The first SPS and the first PPS among an access unit's NAL units, if it has both.
pub fn parameter_sets<'a>(nalus: &[&'a [u8]]) -> Option<(&'a [u8], &'a [u8])> {
    let find = |ty| nalus.iter().copied().find(|n| nal_type(n) == Some(ty));
    Some((find(NAL_SPS)?, find(NAL_PPS)?))
}

/// Whether a NAL unit belongs in an MP4 or FLV sample: not a parameter set (those
/// travel in `avcC`) nor an access unit delimiter (MP4 forbids them in samples).
pub fn is_sample_nal(nal: &[u8]) -> bool {
    !matches!(nal_type(nal), Some(NAL_SPS | NAL_PPS | NAL_AUD))
}

/// Why an H.264 bitstream structure could not be parsed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    /// An empty NAL unit or an empty list where one was needed.
    #[error("empty NAL unit")]
    Empty,
    /// The data ends before the structure does.
    #[error("H.264 {what} truncated: needs {needed} bytes, has {available}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// An Exp-Golomb code with more than 31 leading zeros.
    #[error("Exp-Golomb code longer than 32 bits")]
    ExpGolombOverflow,
    /// A syntax element outside its allowed range.
    #[error("H.264 {field} = {value} is out of range")]
    OutOfRange {
        /// The syntax element.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A NAL unit of the wrong type, e.g. a PPS given as SPS.
    #[error("expected NAL unit type {expected}, found {found}")]
    UnexpectedNalType {
        /// The type wanted.
        expected: u8,
        /// The type found.
        found: u8,
    },
    /// Cropping removes the whole picture.
    #[error("SPS frame cropping is larger than the picture")]
    BadCropping,
    /// An AVCC length prefix size other than 1, 2 or 4.
    #[error("NAL length size {0} is not 1, 2 or 4")]
    LengthSize(usize),
    /// `configurationVersion` is not 1.
    #[error("AVC decoder configuration version {0}, expected 1")]
    ConfigVersion(u8),
    /// More parameter sets than the record's count field holds.
    #[error("{0} parameter sets do not fit an AVC decoder configuration record")]
    TooManyParameterSets(usize),
    /// A parameter set longer than its 16-bit length field.
    #[error("parameter set of {0} bytes is longer than 65535")]
    ParameterSetTooLong(usize),
}

#[cfg(test)]
mod tests;
