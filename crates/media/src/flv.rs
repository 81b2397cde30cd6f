//! FLV: tag bodies as RTMP carries them, and the FLV file format HTTP-FLV
//! serves (FLV 10.1 spec, Annex E; Enhanced RTMP v2 for FourCC codecs).
//!
//! Parsing: [`VideoTag::parse`] and [`AudioTag::parse`] read the bodies of
//! RTMP video and audio messages. H.264 (legacy codec id 7 or enhanced
//! `avc1`), AAC (legacy sound format 10 or enhanced `mp4a`) and enhanced
//! Opus are understood; other codecs are reported as unsupported, by FourCC
//! where the stream uses one.
//!
//! Writing: [`file_header`], [`write_tag`] and the body builders
//! ([`avc_sequence_header`], [`avc_nalus`], [`aac_sequence_header`],
//! [`aac_raw`], [`opus_sequence_header`], [`opus_frame`], [`on_metadata`]).
//!
//! ```
//! use skylark_media::flv::{self, AudioTag, FlvTag, VideoPacket, VideoTag};
//! use skylark_media::aac::AudioSpecificConfig;
//! use skylark_media::h264::AvcDecoderConfigurationRecord;
//!
//! let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35];
//! let avcc = AvcDecoderConfigurationRecord::from_parameter_sets(&sps, &[0x68, 0xce, 0x38, 0x80])?;
//! let asc = AudioSpecificConfig::lc(48_000, 2)?;
//!
//! let mut file = flv::file_header(true, true).to_vec();
//! flv::write_tag(&mut file, flv::TAG_VIDEO, 0, &flv::avc_sequence_header(&avcc)?)?;
//! flv::write_tag(&mut file, flv::TAG_AUDIO, 0, &flv::aac_sequence_header(&asc)?)?;
//! flv::write_tag(&mut file, flv::TAG_VIDEO, 0, &flv::avc_nalus(true, 0, &[0, 0, 0, 2, 0x65, 0x88])?)?;
//!
//! let (header, mut pos) = flv::parse_file_header(&file)?;
//! assert!(header.has_audio && header.has_video);
//! let (tag, used) = FlvTag::parse(&file[pos..])?;
//! pos += used;
//! match VideoTag::parse(tag.body)?.packet {
//!     VideoPacket::AvcSequenceHeader(record) => assert_eq!(record.parse_sps()?.width, 1280),
//!     other => panic!("{other:?}"),
//! }
//! let (tag, _) = FlvTag::parse(&file[pos..])?;
//! assert_eq!(AudioTag::parse(tag.body)?, AudioTag::AacSequenceHeader(asc));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::aac::{AacError, AudioSpecificConfig};
use crate::h264::{avcc_nalus, AvcDecoderConfigurationRecord, H264Error};
use crate::rtmp::amf0::{self, Amf0Error, Amf0Value};

/// Tag type of audio tags.
pub const TAG_AUDIO: u8 = 8;
/// Tag type of video tags.
pub const TAG_VIDEO: u8 = 9;
/// Tag type of script data tags (`onMetaData`).
pub const TAG_SCRIPT: u8 = 18;
/// Length of a tag header.
pub const TAG_HEADER_LEN: usize = 11;
/// Largest tag body (the 24-bit size field).
pub const MAX_TAG_BODY: usize = 0x00ff_ffff;

/// Legacy video codec id of H.264.
pub const CODEC_ID_AVC: u8 = 7;
/// Legacy sound format of AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;
/// Sound format that signals the enhanced (FourCC) audio header.
pub const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// A codec FourCC of Enhanced RTMP (`avc1`, `hvc1`, `Opus`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    /// H.264.
    pub const AVC1: FourCc = FourCc(*b"avc1");
    /// HEVC.
    pub const HVC1: FourCc = FourCc(*b"hvc1");
    /// AV1.
    pub const AV01: FourCc = FourCc(*b"av01");
    /// VP9.
    pub const VP09: FourCc = FourCc(*b"vp09");
    /// VP8.
    pub const VP08: FourCc = FourCc(*b"vp08");
    /// Opus.
    pub const OPUS: FourCc = FourCc(*b"Opus");
    /// AAC.
    pub const MP4A: FourCc = FourCc(*b"mp4a");
    /// FLAC.
    pub const FLAC: FourCc = FourCc(*b"fLaC");

    /// The FourCC as the big-endian number `onMetaData` uses for
    /// `videocodecid`/`audiocodecid`.
    pub fn as_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc('{self}')")
    }
}

/// Why an FLV structure could not be parsed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The data ends before the structure does.
    #[error("FLV {0} truncated")]
    Truncated(&'static str),
    /// Not an FLV file (no `FLV` signature, or version other than 1).
    #[error("not an FLV file header")]
    BadSignature,
    /// An Enhanced RTMP codec other than H.264 video, or AAC and Opus audio.
    #[error(
        "codec '{0}' (Enhanced RTMP FourCC) is not supported: Skylark ingests H.264 ('avc1') \
         video with AAC or Opus audio; set the encoder's video codec to H.264"
    )]
    UnsupportedCodec(FourCc),
    /// A legacy video codec id other than 7 (H.264).
    #[error("FLV video codec id {0} is not supported: Skylark ingests H.264 (codec id 7) video")]
    UnsupportedVideoCodec(u8),
    /// A legacy sound format other than 10 (AAC).
    #[error("FLV sound format {0} is not supported: Skylark ingests AAC (sound format 10) audio")]
    UnsupportedAudioFormat(u8),
    /// An Enhanced RTMP feature this parser does not handle (multitrack,
    /// MPEG-2 TS sequence start).
    #[error("Enhanced RTMP {0} is not supported")]
    UnsupportedFeature(&'static str),
    /// A packet type outside the defined values.
    #[error("unknown FLV {kind} packet type {value}")]
    UnknownPacketType {
        /// `AVC`, `AAC`, `video` or `audio`.
        kind: &'static str,
        /// The value.
        value: u8,
    },
    /// An `OpusHead` that does not follow RFC 7845 §5.1.
    #[error("bad OpusHead: {0}")]
    BadOpusHead(&'static str),
    /// A body over the 24-bit tag size.
    #[error("FLV tag body of {0} bytes exceeds 16 MiB")]
    TagTooLarge(usize),
    /// A composition time outside the signed 24-bit range.
    #[error("composition time {0} ms does not fit 24 bits")]
    CompositionTime(i32),
    /// The AVC decoder configuration record is bad.
    #[error(transparent)]
    H264(#[from] H264Error),
    /// The AudioSpecificConfig is bad.
    #[error(transparent)]
    Aac(#[from] AacError),
    /// The script data is bad.
    #[error(transparent)]
    Amf0(#[from] Amf0Error),
}

/// `VideoFrameType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// 1: a keyframe (for AVC, a seekable frame).
    Key,
    /// 2: an inter frame.
    Inter,
    /// 3: a disposable inter frame (H.263 only).
    DisposableInter,
    /// 4: a generated keyframe (server use only).
    GeneratedKey,
    /// 5: a video info / command frame.
    Command,
    /// 0, 6, 7: reserved.
    Reserved(u8),
}

impl FrameType {
    /// The frame type of a 3-bit value.
    pub fn from_bits(v: u8) -> Self {
        match v {
            1 => Self::Key,
            2 => Self::Inter,
            3 => Self::DisposableInter,
            4 => Self::GeneratedKey,
            5 => Self::Command,
            other => Self::Reserved(other),
        }
    }

    /// The 3-bit value.
    pub fn value(self) -> u8 {
        match self {
            Self::Key => 1,
            Self::Inter => 2,
            Self::DisposableInter => 3,
            Self::GeneratedKey => 4,
            Self::Command => 5,
            Self::Reserved(v) => v & 0x07,
        }
    }
}

/// What a video tag carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPacket<'a> {
    /// The AVC sequence header: an `AVCDecoderConfigurationRecord`.
    AvcSequenceHeader(AvcDecoderConfigurationRecord),
    /// One access unit in AVCC form (length-prefixed NAL units; the prefix
    /// size is the config's `length_size`), and its composition time offset
    /// in ms (PTS − DTS).
    AvcNalus {
        /// PTS minus DTS, in milliseconds.
        composition_time: i32,
        /// AVCC data.
        data: &'a [u8],
    },
    /// End of the AVC sequence.
    AvcEndOfSequence,
    /// A video info / command frame (frame type 5) with its command byte.
    Command(u8),
    /// Enhanced RTMP video metadata (AMF-encoded, e.g. `colorInfo`).
    Metadata(&'a [u8]),
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTag<'a> {
    /// The frame type.
    pub frame_type: FrameType,
    /// Whether the Enhanced RTMP header (FourCC) was used.
    pub enhanced: bool,
    /// The payload.
    pub packet: VideoPacket<'a>,
}

impl<'a> VideoTag<'a> {
    /// Parses the body of an FLV video tag / RTMP video message.
    ///
    /// ```
    /// use skylark_media::flv::{FlvError, FourCc, VideoTag};
    ///
    /// // OBS with HEVC over Enhanced RTMP: IsExHeader, keyframe, SequenceStart, 'hvc1'.
    /// let err = VideoTag::parse(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3]).unwrap_err();
    /// assert_eq!(err, FlvError::UnsupportedCodec(FourCc::HVC1));
    /// assert!(err.to_string().contains("'hvc1'"));
    /// ```
    pub fn parse(body: &'a [u8]) -> Result<Self, FlvError> {
        let mut r = Reader::new(body);
        let b0 = r.u8("video tag header")?;
        let frame_type = FrameType::from_bits((b0 >> 4) & 0x07);
        if b0 & 0x80 == 0 {
            let codec = b0 & 0x0f;
            if frame_type == FrameType::Command {
                return Ok(Self {
                    frame_type,
                    enhanced: false,
                    packet: VideoPacket::Command(r.u8("video command")?),
                });
            }
            if codec != CODEC_ID_AVC {
                return Err(FlvError::UnsupportedVideoCodec(codec));
            }
            let packet_type = r.u8("AVC packet type")?;
            let composition_time = r.si24("composition time")?;
            let packet = match packet_type {
                0 => {
                    VideoPacket::AvcSequenceHeader(AvcDecoderConfigurationRecord::parse(r.rest())?)
                }
                1 => VideoPacket::AvcNalus {
                    composition_time,
                    data: r.rest(),
                },
                2 => VideoPacket::AvcEndOfSequence,
                value => return Err(FlvError::UnknownPacketType { kind: "AVC", value }),
            };
            return Ok(Self {
                frame_type,
                enhanced: false,
                packet,
            });
        }
        // Enhanced RTMP: the low nibble is the VideoPacketType.
        let mut packet_type = b0 & 0x0f;
        while packet_type == 7 {
            packet_type = r.mod_ex()?;
        }
        if packet_type != 4 && frame_type == FrameType::Command {
            return Ok(Self {
                frame_type,
                enhanced: true,
                packet: VideoPacket::Command(r.u8("video command")?),
            });
        }
        if packet_type == 6 {
            return Err(FlvError::UnsupportedFeature("multitrack video"));
        }
        let fourcc = r.fourcc()?;
        if fourcc != FourCc::AVC1 {
            return Err(FlvError::UnsupportedCodec(fourcc));
        }
        let packet = match packet_type {
            0 => VideoPacket::AvcSequenceHeader(AvcDecoderConfigurationRecord::parse(r.rest())?),
            1 => VideoPacket::AvcNalus {
                composition_time: r.si24("composition time")?,
                data: r.rest(),
            },
            2 => VideoPacket::AvcEndOfSequence,
            3 => VideoPacket::AvcNalus {
                composition_time: 0,
                data: r.rest(),
            },
            4 => VideoPacket::Metadata(r.rest()),
            5 => return Err(FlvError::UnsupportedFeature("MPEG-2 TS sequence start")),
            value => {
                return Err(FlvError::UnknownPacketType {
                    kind: "video",
                    value,
                })
            }
        };
        Ok(Self {
            frame_type,
            enhanced: true,
            packet,
        })
    }

    /// Whether this is a keyframe carrying coded video.
    pub fn is_keyframe(&self) -> bool {
        self.frame_type == FrameType::Key && matches!(self.packet, VideoPacket::AvcNalus { .. })
    }
}

/// Splits AVCC data into NAL units, checking every length prefix.
///
/// ```
/// let nalus = skylark_media::flv::split_avcc(&[0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06], 4)?;
/// assert_eq!(nalus, [&[0x65, 0x88][..], &[0x06]]);
/// # Ok::<(), skylark_media::flv::FlvError>(())
/// ```
pub fn split_avcc(data: &[u8], length_size: u8) -> Result<Vec<&[u8]>, FlvError> {
    Ok(avcc_nalus(data, usize::from(length_size)).collect::<Result<_, _>>()?)
}

/// An Opus identification header (RFC 7845 §5.1), the Opus sequence start of
/// Enhanced RTMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channel count, 1–255.
    pub channels: u8,
    /// Samples (at 48 kHz) to discard from the decoder output at the start.
    pub pre_skip: u16,
    /// The input sample rate, informational.
    pub input_sample_rate: u32,
    /// Output gain in Q7.8 dB.
    pub output_gain: i16,
    /// Channel mapping family (0 = mono/stereo).
    pub mapping_family: u8,
    /// For families other than 0: stream count, coupled count, and the
    /// channel mapping table.
    pub mapping: Option<(u8, u8, Vec<u8>)>,
}

impl OpusHead {
    /// A family-0 header for 1 or 2 channels at 48 kHz.
    pub fn new(channels: u8, pre_skip: u16) -> Self {
        Self {
            channels,
            pre_skip,
            input_sample_rate: 48_000,
            output_gain: 0,
            mapping_family: 0,
            mapping: None,
        }
    }

    /// Parses an `OpusHead` packet.
    pub fn parse(data: &[u8]) -> Result<Self, FlvError> {
        let mut r = Reader::new(data);
        if r.take(8, "OpusHead")? != b"OpusHead" {
            return Err(FlvError::BadOpusHead("no OpusHead magic"));
        }
        let version = r.u8("OpusHead")?;
        if version >> 4 != 0 {
            return Err(FlvError::BadOpusHead("unsupported major version"));
        }
        let channels = r.u8("OpusHead")?;
        if channels == 0 {
            return Err(FlvError::BadOpusHead("zero channels"));
        }
        let pre_skip = u16::from_le_bytes([r.u8("OpusHead")?, r.u8("OpusHead")?]);
        let rate = r.take(4, "OpusHead")?;
        let input_sample_rate = u32::from_le_bytes([rate[0], rate[1], rate[2], rate[3]]);
        let output_gain = i16::from_le_bytes([r.u8("OpusHead")?, r.u8("OpusHead")?]);
        let mapping_family = r.u8("OpusHead")?;
        let mapping = if mapping_family == 0 {
            if channels > 2 {
                return Err(FlvError::BadOpusHead("family 0 with more than 2 channels"));
            }
            None
        } else {
            let streams = r.u8("OpusHead mapping")?;
            let coupled = r.u8("OpusHead mapping")?;
            if streams == 0 || coupled > streams {
                return Err(FlvError::BadOpusHead("bad stream counts"));
            }
            let table = r.take(usize::from(channels), "OpusHead mapping")?.to_vec();
            Some((streams, coupled, table))
        };
        Ok(Self {
            channels,
            pre_skip,
            input_sample_rate,
            output_gain,
            mapping_family,
            mapping,
        })
    }

    /// Serializes the header (version 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + usize::from(self.channels));
        out.extend_from_slice(b"OpusHead");
        out.push(1);
        out.push(self.channels);
        out.extend_from_slice(&self.pre_skip.to_le_bytes());
        out.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        out.extend_from_slice(&self.output_gain.to_le_bytes());
        out.push(self.mapping_family);
        if let Some((streams, coupled, table)) = &self.mapping {
            out.push(*streams);
            out.push(*coupled);
            out.extend_from_slice(table);
        }
        out
    }
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// The AAC sequence header (AudioSpecificConfig).
    AacSequenceHeader(AudioSpecificConfig),
    /// One raw AAC frame (no ADTS header).
    AacRaw(&'a [u8]),
    /// The Opus sequence start; `None` when its payload is empty (the
    /// Enhanced RTMP spec then means a default mono/stereo setup).
    OpusSequenceHeader(Option<OpusHead>),
    /// One Opus packet.
    OpusFrame(&'a [u8]),
    /// Enhanced RTMP multichannel configuration: channel count.
    MultichannelConfig {
        /// The channel count.
        channels: u8,
    },
    /// End of an Enhanced RTMP audio sequence.
    SequenceEnd,
}

impl<'a> AudioTag<'a> {
    /// Parses the body of an FLV audio tag / RTMP audio message.
    ///
    /// ```
    /// use skylark_media::flv::{AudioTag, FlvError};
    ///
    /// assert_eq!(AudioTag::parse(&[0xaf, 0x01, 0x21, 0x10])?, AudioTag::AacRaw(&[0x21, 0x10]));
    /// // MP3 (sound format 2).
    /// assert_eq!(AudioTag::parse(&[0x2f, 0xff]), Err(FlvError::UnsupportedAudioFormat(2)));
    /// # Ok::<(), FlvError>(())
    /// ```
    pub fn parse(body: &'a [u8]) -> Result<Self, FlvError> {
        let mut r = Reader::new(body);
        let b0 = r.u8("audio tag header")?;
        let format = b0 >> 4;
        if format == SOUND_FORMAT_AAC {
            return match r.u8("AAC packet type")? {
                0 => Ok(Self::AacSequenceHeader(AudioSpecificConfig::parse(
                    r.rest(),
                )?)),
                1 => Ok(Self::AacRaw(r.rest())),
                value => Err(FlvError::UnknownPacketType { kind: "AAC", value }),
            };
        }
        if format != SOUND_FORMAT_EX_HEADER {
            return Err(FlvError::UnsupportedAudioFormat(format));
        }
        let mut packet_type = b0 & 0x0f;
        while packet_type == 7 {
            packet_type = r.mod_ex()?;
        }
        if packet_type == 5 {
            return Err(FlvError::UnsupportedFeature("multitrack audio"));
        }
        let fourcc = r.fourcc()?;
        if fourcc != FourCc::OPUS && fourcc != FourCc::MP4A {
            return Err(FlvError::UnsupportedCodec(fourcc));
        }
        let opus = fourcc == FourCc::OPUS;
        Ok(match packet_type {
            0 if opus => {
                let rest = r.rest();
                Self::OpusSequenceHeader(if rest.is_empty() {
                    None
                } else {
                    Some(OpusHead::parse(rest)?)
                })
            }
            0 => Self::AacSequenceHeader(AudioSpecificConfig::parse(r.rest())?),
            1 if opus => Self::OpusFrame(r.rest()),
            1 => Self::AacRaw(r.rest()),
            2 => Self::SequenceEnd,
            4 => {
                let _order = r.u8("multichannel config")?;
                Self::MultichannelConfig {
                    channels: r.u8("multichannel config")?,
                }
            }
            value => {
                return Err(FlvError::UnknownPacketType {
                    kind: "audio",
                    value,
                })
            }
        })
    }
}

/// The flags of an FLV file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvFileHeader {
    /// `TypeFlagsAudio`.
    pub has_audio: bool,
    /// `TypeFlagsVideo`.
    pub has_video: bool,
}

/// The 9-byte FLV file header followed by `PreviousTagSize0` (0): what an
/// HTTP-FLV response starts with.
///
/// ```
/// assert_eq!(skylark_media::flv::file_header(true, true), *b"FLV\x01\x05\0\0\0\x09\0\0\0\0");
/// ```
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Parses an FLV file header; returns it and the offset of the first tag
/// (after `PreviousTagSize0`).
pub fn parse_file_header(data: &[u8]) -> Result<(FlvFileHeader, usize), FlvError> {
    let h = data.get(..9).ok_or(FlvError::Truncated("file header"))?;
    if &h[..3] != b"FLV" || h[3] != 1 {
        return Err(FlvError::BadSignature);
    }
    let offset = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    if offset < 9 {
        return Err(FlvError::BadSignature);
    }
    let first_tag = offset + 4;
    if data.len() < first_tag {
        return Err(FlvError::Truncated("file header"));
    }
    Ok((
        FlvFileHeader {
            has_audio: h[4] & 0x04 != 0,
            has_video: h[4] & 0x01 != 0,
        },
        first_tag,
    ))
}

/// Appends one tag: its 11-byte header, the body, and the `PreviousTagSize`
/// that follows every tag. The timestamp is in ms (32 bits: 24 plus the
/// extension byte); the stream id is 0.
pub fn write_tag(
    out: &mut Vec<u8>,
    tag_type: u8,
    timestamp: u32,
    body: &[u8],
) -> Result<(), FlvError> {
    if body.len() > MAX_TAG_BODY {
        return Err(FlvError::TagTooLarge(body.len()));
    }
    let size = body.len() as u32;
    let ts = timestamp.to_be_bytes();
    out.reserve(TAG_HEADER_LEN + body.len() + 4);
    out.push(tag_type & 0x1f);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&[ts[1], ts[2], ts[3], ts[0]]);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(size + TAG_HEADER_LEN as u32).to_be_bytes());
    Ok(())
}

/// One tag of an FLV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvTag<'a> {
    /// [`TAG_AUDIO`], [`TAG_VIDEO`] or [`TAG_SCRIPT`] (others are possible).
    pub tag_type: u8,
    /// Milliseconds, 32 bits.
    pub timestamp: u32,
    /// The tag body.
    pub body: &'a [u8],
}

impl<'a> FlvTag<'a> {
    /// Parses the tag at the start of `data` and its `PreviousTagSize`;
    /// returns it and the bytes used. The `PreviousTagSize` is not checked
    /// (some muxers write wrong values).
    pub fn parse(data: &'a [u8]) -> Result<(Self, usize), FlvError> {
        let h = data
            .get(..TAG_HEADER_LEN)
            .ok_or(FlvError::Truncated("tag header"))?;
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let end = TAG_HEADER_LEN + size;
        let body = data
            .get(TAG_HEADER_LEN..end)
            .ok_or(FlvError::Truncated("tag body"))?;
        if data.len() < end + 4 {
            return Err(FlvError::Truncated("previous tag size"));
        }
        Ok((
            Self {
                tag_type: h[0] & 0x1f,
                timestamp,
                body,
            },
            end + 4,
        ))
    }
}

/// The body of an AVC sequence header tag (keyframe, packet type 0).
pub fn avc_sequence_header(record: &AvcDecoderConfigurationRecord) -> Result<Vec<u8>, FlvError> {
    let bytes = record.to_bytes()?;
    let mut out = Vec::with_capacity(5 + bytes.len());
    out.extend_from_slice(&[0x10 | CODEC_ID_AVC, 0, 0, 0, 0]);
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// The body of an AVC NALU tag: one access unit in AVCC form, with its
/// composition time offset (PTS − DTS) in ms.
pub fn avc_nalus(keyframe: bool, composition_time: i32, avcc: &[u8]) -> Result<Vec<u8>, FlvError> {
    if !(-(1 << 23)..(1 << 23)).contains(&composition_time) {
        return Err(FlvError::CompositionTime(composition_time));
    }
    let frame = if keyframe { 0x10 } else { 0x20 };
    let ct = composition_time.to_be_bytes();
    let mut out = Vec::with_capacity(5 + avcc.len());
    out.extend_from_slice(&[frame | CODEC_ID_AVC, 1, ct[1], ct[2], ct[3]]);
    out.extend_from_slice(avcc);
    Ok(out)
}

/// The body of an AVC end-of-sequence tag.
pub fn avc_end_of_sequence() -> [u8; 5] {
    [0x10 | CODEC_ID_AVC, 2, 0, 0, 0]
}

/// The first byte of AAC audio tags: AAC, and the 44 kHz / 16-bit / stereo
/// flags the FLV spec requires for AAC whatever the real format.
const AAC_FLAGS: u8 = (SOUND_FORMAT_AAC << 4) | 0x0f;

/// The body of an AAC sequence header tag.
pub fn aac_sequence_header(asc: &AudioSpecificConfig) -> Result<Vec<u8>, FlvError> {
    let mut out = vec![AAC_FLAGS, 0];
    out.extend(asc.to_bytes()?);
    Ok(out)
}

/// The body of an AAC raw frame tag.
pub fn aac_raw(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + frame.len());
    out.extend_from_slice(&[AAC_FLAGS, 1]);
    out.extend_from_slice(frame);
    out
}

fn enhanced_audio(packet_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push((SOUND_FORMAT_EX_HEADER << 4) | packet_type);
    out.extend_from_slice(&FourCc::OPUS.0);
    out.extend_from_slice(payload);
    out
}

/// The body of an Enhanced RTMP v2 Opus sequence start tag: `ExHeader` sound
/// format, `SequenceStart`, FourCC `Opus`, then the `OpusHead` (RFC 7845
/// §5.1), as FFmpeg 7.1+ writes it.
pub fn opus_sequence_header(head: &OpusHead) -> Vec<u8> {
    enhanced_audio(0, &head.to_bytes())
}

/// The body of an Enhanced RTMP v2 Opus coded frame tag (`CodedFrames`,
/// FourCC `Opus`, one Opus packet).
pub fn opus_frame(packet: &[u8]) -> Vec<u8> {
    enhanced_audio(1, packet)
}

/// The body of an `onMetaData` script tag: the string `onMetaData` and an
/// ECMA array of the properties.
///
/// ```
/// use skylark_media::flv::{on_metadata, FourCc};
/// use skylark_media::rtmp::amf0::{self, Amf0Value};
///
/// let body = on_metadata([
///     ("width", Amf0Value::Number(1280.0)),
///     ("videocodecid", Amf0Value::Number(7.0)),
///     ("audiocodecid", Amf0Value::Number(f64::from(FourCc::OPUS.as_u32()))),
/// ])?;
/// let values = amf0::decode_all(&body)?;
/// assert_eq!(values[0].as_str(), Some("onMetaData"));
/// assert_eq!(values[1].get("width").and_then(Amf0Value::as_f64), Some(1280.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn on_metadata<K: Into<String>>(
    properties: impl IntoIterator<Item = (K, Amf0Value)>,
) -> Result<Vec<u8>, FlvError> {
    Ok(amf0::encode_all(&[
        Amf0Value::from("onMetaData"),
        Amf0Value::ecma_array(properties),
    ])?)
}

/// A bounds-checked byte cursor.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FlvError> {
        let end = self.pos.checked_add(n).ok_or(FlvError::Truncated(what))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or(FlvError::Truncated(what))?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FlvError> {
        Ok(self.take(1, what)?[0])
    }

    fn si24(&mut self, what: &'static str) -> Result<i32, FlvError> {
        let b = self.take(3, what)?;
        // Sign-extend from 24 bits.
        Ok(i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
    }

    fn fourcc(&mut self) -> Result<FourCc, FlvError> {
        let b = self.take(4, "FourCC")?;
        Ok(FourCc([b[0], b[1], b[2], b[3]]))
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.data[self.pos..];
        self.pos = self.data.len();
        rest
    }

    /// Skips one Enhanced RTMP `ModEx` block; returns the next packet type.
    fn mod_ex(&mut self) -> Result<u8, FlvError> {
        let mut size = usize::from(self.u8("ModEx size")?) + 1;
        if size == 256 {
            let b = self.take(2, "ModEx size")?;
            size = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
        }
        self.take(size, "ModEx data")?;
        // High nibble: the ModEx type (only TimestampOffsetNano is defined,
        // a sub-millisecond offset that is ignored here); low nibble: the
        // next packet type.
        Ok(self.u8("ModEx type")? & 0x0f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: [u8; 13] = [
        0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35,
    ];
    const PPS: [u8; 4] = [0x68, 0xce, 0x38, 0x80];

    fn record() -> AvcDecoderConfigurationRecord {
        AvcDecoderConfigurationRecord::from_parameter_sets(&SPS, &PPS).unwrap()
    }

    #[test]
    fn legacy_avc_tags() {
        let header = avc_sequence_header(&record()).unwrap();
        assert_eq!(header[..5], [0x17, 0, 0, 0, 0]);
        let tag = VideoTag::parse(&header).unwrap();
        assert_eq!(tag.frame_type, FrameType::Key);
        assert!(!tag.enhanced && !tag.is_keyframe());
        assert_eq!(tag.packet, VideoPacket::AvcSequenceHeader(record()));

        let avcc = [0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06];
        let body = avc_nalus(false, -66, &avcc).unwrap();
        assert_eq!(body[..5], [0x27, 1, 0xff, 0xff, 0xbe]);
        let tag = VideoTag::parse(&body).unwrap();
        assert_eq!(tag.frame_type, FrameType::Inter);
        assert_eq!(
            tag.packet,
            VideoPacket::AvcNalus {
                composition_time: -66,
                data: &avcc
            }
        );
        assert_eq!(
            split_avcc(&avcc, record().length_size).unwrap(),
            [&[0x65, 0x88][..], &[0x06]]
        );
        assert!(split_avcc(&avcc[..8], 4).is_err());

        let key = avc_nalus(true, 80, &avcc).unwrap();
        assert!(VideoTag::parse(&key).unwrap().is_keyframe());
        assert_eq!(
            VideoTag::parse(&avc_end_of_sequence()).unwrap().packet,
            VideoPacket::AvcEndOfSequence
        );
        assert_eq!(
            avc_nalus(true, 1 << 23, &[]),
            Err(FlvError::CompositionTime(1 << 23))
        );
    }

    #[test]
    fn video_errors_and_commands() {
        assert_eq!(
            VideoTag::parse(&[]),
            Err(FlvError::Truncated("video tag header"))
        );
        // VP6 (codec id 4).
        assert_eq!(
            VideoTag::parse(&[0x14, 0]),
            Err(FlvError::UnsupportedVideoCodec(4))
        );
        // Legacy-style HEVC id 12 used by some Chinese encoders.
        assert_eq!(
            VideoTag::parse(&[0x1c, 0, 0, 0, 0]),
            Err(FlvError::UnsupportedVideoCodec(12))
        );
        assert_eq!(
            VideoTag::parse(&[0x17, 1, 0]),
            Err(FlvError::Truncated("composition time"))
        );
        assert_eq!(
            VideoTag::parse(&[0x17, 3, 0, 0, 0]),
            Err(FlvError::UnknownPacketType {
                kind: "AVC",
                value: 3
            })
        );
        assert!(matches!(
            VideoTag::parse(&[0x17, 0, 0, 0, 0, 2]),
            Err(FlvError::H264(H264Error::ConfigVersion(2)))
        ));
        // Command frames, legacy and enhanced.
        assert_eq!(
            VideoTag::parse(&[0x57, 1]).unwrap().packet,
            VideoPacket::Command(1)
        );
        assert_eq!(
            VideoTag::parse(&[0xd1, 0]).unwrap().packet,
            VideoPacket::Command(0)
        );
    }

    #[test]
    fn enhanced_video() {
        let avcc = [0, 0, 0, 1, 0x65];
        // SequenceStart avc1.
        let mut seq = vec![0x90];
        seq.extend_from_slice(b"avc1");
        seq.extend(record().to_bytes().unwrap());
        let tag = VideoTag::parse(&seq).unwrap();
        assert!(tag.enhanced);
        assert_eq!(tag.packet, VideoPacket::AvcSequenceHeader(record()));
        // CodedFrames with a composition time, CodedFramesX without.
        let mut coded = vec![0x91];
        coded.extend_from_slice(b"avc1");
        coded.extend_from_slice(&[0, 0, 40]);
        coded.extend_from_slice(&avcc);
        assert_eq!(
            VideoTag::parse(&coded).unwrap().packet,
            VideoPacket::AvcNalus {
                composition_time: 40,
                data: &avcc
            }
        );
        let mut coded_x = vec![0xa3];
        coded_x.extend_from_slice(b"avc1");
        coded_x.extend_from_slice(&avcc);
        let tag = VideoTag::parse(&coded_x).unwrap();
        assert_eq!(tag.frame_type, FrameType::Inter);
        assert_eq!(
            tag.packet,
            VideoPacket::AvcNalus {
                composition_time: 0,
                data: &avcc
            }
        );
        // ModEx (a 3-byte nano offset) before CodedFramesX.
        let mut modex = vec![0x97, 2, 0, 1, 2, 0x03];
        modex.extend_from_slice(b"avc1");
        modex.extend_from_slice(&avcc);
        assert!(VideoTag::parse(&modex).unwrap().is_keyframe());
        // Other codecs, with the FourCC in the error.
        for fourcc in [FourCc::HVC1, FourCc::AV01, FourCc::VP09, FourCc::VP08] {
            let mut body = vec![0x90];
            body.extend_from_slice(&fourcc.0);
            let err = VideoTag::parse(&body).unwrap_err();
            assert_eq!(err, FlvError::UnsupportedCodec(fourcc));
            let message = err.to_string();
            assert!(message.contains(&format!("'{fourcc}'")), "{message}");
            assert!(message.contains("H.264"), "{message}");
        }
        assert_eq!(
            VideoTag::parse(&[0x96, 0, b'a']),
            Err(FlvError::UnsupportedFeature("multitrack video"))
        );
        assert_eq!(
            VideoTag::parse(&[0x91, b'a']),
            Err(FlvError::Truncated("FourCC"))
        );
        assert_eq!(
            VideoTag::parse(&[0x97, 0xff, 0xff]),
            Err(FlvError::Truncated("ModEx size"))
        );
        assert_eq!(format!("{:?}", FourCc(*b"a\0c1")), "FourCc('a\\x00c1')");
    }

    #[test]
    fn aac_tags() {
        let asc = AudioSpecificConfig::lc(44_100, 2).unwrap();
        let seq = aac_sequence_header(&asc).unwrap();
        assert_eq!(seq, [0xaf, 0, 0x12, 0x10]);
        assert_eq!(
            AudioTag::parse(&seq).unwrap(),
            AudioTag::AacSequenceHeader(asc)
        );
        assert_eq!(
            AudioTag::parse(&aac_raw(&[1, 2])).unwrap(),
            AudioTag::AacRaw(&[1, 2])
        );
        // A mono AAC tag with other flag bits still parses.
        assert_eq!(
            AudioTag::parse(&[0xa2, 1, 9]).unwrap(),
            AudioTag::AacRaw(&[9])
        );
        assert_eq!(
            AudioTag::parse(&[0xaf, 2]),
            Err(FlvError::UnknownPacketType {
                kind: "AAC",
                value: 2
            })
        );
        assert_eq!(
            AudioTag::parse(&[]),
            Err(FlvError::Truncated("audio tag header"))
        );
        assert_eq!(
            AudioTag::parse(&[0xaf]),
            Err(FlvError::Truncated("AAC packet type"))
        );
        // Enhanced mp4a.
        let mut ex = vec![0x90];
        ex.extend_from_slice(b"mp4a");
        ex.extend_from_slice(&[0x12, 0x10]);
        assert!(matches!(
            AudioTag::parse(&ex).unwrap(),
            AudioTag::AacSequenceHeader(_)
        ));
    }

    #[test]
    fn opus_tags_match_ffmpeg() {
        // The first audio tags FFmpeg 9 writes for `-c:a libopus -ac 2 -f flv`.
        let head = OpusHead::new(2, 312);
        let seq = opus_sequence_header(&head);
        assert_eq!(
            seq,
            [
                0x90, b'O', b'p', b'u', b's', b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2,
                0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            AudioTag::parse(&seq).unwrap(),
            AudioTag::OpusSequenceHeader(Some(head))
        );
        let frame = opus_frame(&[0xfc, 1, 2]);
        assert_eq!(frame[..5], [0x91, b'O', b'p', b'u', b's']);
        assert_eq!(
            AudioTag::parse(&frame).unwrap(),
            AudioTag::OpusFrame(&[0xfc, 1, 2])
        );
        // FFmpeg's multichannel config tag: Native order, 2 channels, FL|FR.
        assert_eq!(
            AudioTag::parse(&[0x94, b'O', b'p', b'u', b's', 1, 2, 0, 0, 0, 3]).unwrap(),
            AudioTag::MultichannelConfig { channels: 2 }
        );
        assert_eq!(
            AudioTag::parse(&[0x90, b'O', b'p', b'u', b's']).unwrap(),
            AudioTag::OpusSequenceHeader(None)
        );
        assert_eq!(
            AudioTag::parse(&[0x92, b'O', b'p', b'u', b's']).unwrap(),
            AudioTag::SequenceEnd
        );
        assert_eq!(
            AudioTag::parse(&[0x91, b'f', b'L', b'a', b'C']),
            Err(FlvError::UnsupportedCodec(FourCc::FLAC))
        );
        assert_eq!(
            AudioTag::parse(&[0x95, 0]),
            Err(FlvError::UnsupportedFeature("multitrack audio"))
        );
    }

    #[test]
    fn opus_head_variants() {
        let multi = OpusHead {
            channels: 6,
            pre_skip: 312,
            input_sample_rate: 44_100,
            output_gain: -256,
            mapping_family: 1,
            mapping: Some((4, 2, vec![0, 4, 1, 2, 3, 5])),
        };
        assert_eq!(OpusHead::parse(&multi.to_bytes()).unwrap(), multi);
        let mut bad = OpusHead::new(2, 0).to_bytes();
        bad[0] = b'X';
        assert_eq!(
            OpusHead::parse(&bad),
            Err(FlvError::BadOpusHead("no OpusHead magic"))
        );
        let mut three = OpusHead::new(3, 0).to_bytes();
        three[9] = 3;
        assert!(OpusHead::parse(&three).is_err());
        assert_eq!(
            OpusHead::parse(b"OpusHead\x01"),
            Err(FlvError::Truncated("OpusHead"))
        );
    }

    #[test]
    fn file_and_tags() {
        let mut file = file_header(true, false).to_vec();
        write_tag(
            &mut file,
            TAG_SCRIPT,
            0,
            &on_metadata([("duration", Amf0Value::Number(0.0))]).unwrap(),
        )
        .unwrap();
        write_tag(&mut file, TAG_AUDIO, 0x1234_5678, &[0xaf, 1, 5]).unwrap();
        let (header, mut pos) = parse_file_header(&file).unwrap();
        assert_eq!(
            header,
            FlvFileHeader {
                has_audio: true,
                has_video: false
            }
        );
        assert_eq!(pos, 13);
        let (script, used) = FlvTag::parse(&file[pos..]).unwrap();
        assert_eq!(script.tag_type, TAG_SCRIPT);
        pos += used;
        let (audio, used) = FlvTag::parse(&file[pos..]).unwrap();
        assert_eq!(
            audio,
            FlvTag {
                tag_type: TAG_AUDIO,
                timestamp: 0x1234_5678,
                body: &[0xaf, 1, 5]
            }
        );
        // Timestamp bytes: 24 low bits then the extension byte.
        assert_eq!(file[pos + 4..pos + 8], [0x34, 0x56, 0x78, 0x12]);
        // PreviousTagSize = 11 + 3.
        assert_eq!(file[pos + used - 4..pos + used], [0, 0, 0, 14]);
        assert_eq!(pos + used, file.len());

        assert_eq!(
            parse_file_header(b"FLV"),
            Err(FlvError::Truncated("file header"))
        );
        assert_eq!(
            parse_file_header(b"FLX\x01\x05\0\0\0\x09\0\0\0\0"),
            Err(FlvError::BadSignature)
        );
        assert_eq!(
            FlvTag::parse(&[9, 0, 0]),
            Err(FlvError::Truncated("tag header"))
        );
        assert_eq!(
            FlvTag::parse(&file[13..file.len() - 30]).unwrap_err(),
            FlvError::Truncated("tag body")
        );
        assert!(write_tag(&mut Vec::new(), TAG_VIDEO, 0, &vec![0; MAX_TAG_BODY + 1]).is_err());
    }
}
