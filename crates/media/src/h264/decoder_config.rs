//! `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §5.3.3.1): the `avcC` box
//! payload in MP4 and the "AVC sequence header" in FLV/RTMP.

use bytes::{BufMut, Bytes, BytesMut};

use super::sps::{codec_string, Sps};
use super::{nal_type, H264Error, NAL_PPS, NAL_SPS};

/// Profiles for which the record carries the chroma/bit-depth extension.
const EXTENDED_PROFILES: [u8; 4] = [100, 110, 122, 144];

/// Chroma format and bit depths, present for High profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfigExtension {
    /// `chroma_format`, 0–3.
    pub chroma_format: u8,
    /// `bit_depth_luma_minus8`, 0–7.
    pub bit_depth_luma_minus8: u8,
    /// `bit_depth_chroma_minus8`, 0–7.
    pub bit_depth_chroma_minus8: u8,
    /// SPS extension NAL units.
    pub sps_ext: Vec<Bytes>,
}

/// An `AVCDecoderConfigurationRecord`.
///
/// ```
/// use skylark_media::h264::AvcDecoderConfigurationRecord;
///
/// let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35];
/// let pps = [0x68, 0xce, 0x38, 0x80];
/// let record = AvcDecoderConfigurationRecord::from_parameter_sets(&sps, &pps)?;
/// let avcc = record.to_bytes()?;
/// assert_eq!(&avcc[..6], [1, 0x42, 0xc0, 0x1f, 0xff, 0xe1]);
/// assert_eq!(AvcDecoderConfigurationRecord::parse(&avcc)?, record);
/// # Ok::<(), skylark_media::h264::H264Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfigurationRecord {
    /// `AVCProfileIndication` (the SPS `profile_idc`).
    pub profile_idc: u8,
    /// `profile_compatibility` (the SPS constraint flags byte).
    pub profile_compatibility: u8,
    /// `AVCLevelIndication` (the SPS `level_idc`).
    pub level_idc: u8,
    /// Bytes in each NAL unit length prefix of the samples: 1, 2 or 4.
    pub length_size: u8,
    /// Sequence parameter sets, header byte included.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets, header byte included.
    pub pps: Vec<Bytes>,
    /// The High-profile extension, when present.
    pub extension: Option<AvcConfigExtension>,
}

impl AvcDecoderConfigurationRecord {
    /// Builds a record for 4-byte length prefixes from one SPS and one PPS.
    ///
    /// The SPS is parsed to fill in profile, level and, for High profiles,
    /// chroma format and bit depths.
    pub fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Result<Self, H264Error> {
        let parsed = Sps::parse(sps)?;
        match nal_type(pps) {
            Some(NAL_PPS) => {}
            Some(found) => {
                return Err(H264Error::UnexpectedNalType {
                    expected: NAL_PPS,
                    found,
                })
            }
            None => return Err(H264Error::Empty),
        }
        let extension =
            EXTENDED_PROFILES
                .contains(&parsed.profile_idc)
                .then(|| AvcConfigExtension {
                    // Bounded by the SPS parser: chroma <= 3, depths <= 14.
                    chroma_format: parsed.chroma_format_idc as u8,
                    bit_depth_luma_minus8: parsed.bit_depth_luma - 8,
                    bit_depth_chroma_minus8: parsed.bit_depth_chroma - 8,
                    sps_ext: Vec::new(),
                });
        Ok(Self {
            profile_idc: parsed.profile_idc,
            profile_compatibility: parsed.constraint_flags,
            level_idc: parsed.level_idc,
            length_size: 4,
            sps: vec![Bytes::copy_from_slice(sps)],
            pps: vec![Bytes::copy_from_slice(pps)],
            extension,
        })
    }

    /// Parses a record, e.g. an `avcC` box payload or an RTMP AVC sequence header.
    ///
    /// A High-profile record without the extension bytes is accepted, as
    /// many encoders omit them.
    pub fn parse(data: &[u8]) -> Result<Self, H264Error> {
        let mut r = Reader { data, pos: 0 };
        let version = r.u8()?;
        if version != 1 {
            return Err(H264Error::ConfigVersion(version));
        }
        let profile_idc = r.u8()?;
        let profile_compatibility = r.u8()?;
        let level_idc = r.u8()?;
        let length_size = (r.u8()? & 0x03) + 1;
        if length_size == 3 {
            return Err(H264Error::LengthSize(3));
        }
        let num_sps = r.u8()? & 0x1f;
        let sps = r.nal_list(num_sps, Some(NAL_SPS))?;
        let num_pps = r.u8()?;
        let pps = r.nal_list(num_pps, Some(NAL_PPS))?;
        let extension = if EXTENDED_PROFILES.contains(&profile_idc) && r.remaining() >= 4 {
            let chroma_format = r.u8()? & 0x03;
            let bit_depth_luma_minus8 = r.u8()? & 0x07;
            let bit_depth_chroma_minus8 = r.u8()? & 0x07;
            let count = r.u8()?;
            Some(AvcConfigExtension {
                chroma_format,
                bit_depth_luma_minus8,
                bit_depth_chroma_minus8,
                sps_ext: r.nal_list(count, None)?,
            })
        } else {
            None
        };
        Ok(Self {
            profile_idc,
            profile_compatibility,
            level_idc,
            length_size,
            sps,
            pps,
            extension,
        })
    }

    /// Serializes the record.
    ///
    /// Fails if there are more than 31 SPS or 255 PPS, a parameter set is
    /// longer than 65535 bytes, or the length size is not 1, 2 or 4.
    pub fn to_bytes(&self) -> Result<Bytes, H264Error> {
        if !matches!(self.length_size, 1 | 2 | 4) {
            return Err(H264Error::LengthSize(usize::from(self.length_size)));
        }
        let mut out = BytesMut::new();
        out.put_u8(1);
        out.put_u8(self.profile_idc);
        out.put_u8(self.profile_compatibility);
        out.put_u8(self.level_idc);
        out.put_u8(0xfc | (self.length_size - 1));
        put_nal_list(&mut out, &self.sps, 31, 0xe0)?;
        put_nal_list(&mut out, &self.pps, 255, 0)?;
        if let Some(ext) = &self.extension {
            out.put_u8(0xfc | (ext.chroma_format & 0x03));
            out.put_u8(0xf8 | (ext.bit_depth_luma_minus8 & 0x07));
            out.put_u8(0xf8 | (ext.bit_depth_chroma_minus8 & 0x07));
            put_nal_list(&mut out, &ext.sps_ext, 255, 0)?;
        }
        Ok(out.freeze())
    }

    /// The RFC 6381 `codecs` value, e.g. `avc1.42c01f`.
    pub fn codec_string(&self) -> String {
        codec_string(self.profile_idc, self.profile_compatibility, self.level_idc)
    }

    /// Parses the first SPS, for picture size and the like.
    pub fn parse_sps(&self) -> Result<Sps, H264Error> {
        Sps::parse(self.sps.first().ok_or(H264Error::Empty)?)
    }
}

fn put_nal_list(
    out: &mut BytesMut,
    list: &[Bytes],
    max: usize,
    reserved_bits: u8,
) -> Result<(), H264Error> {
    if list.len() > max {
        return Err(H264Error::TooManyParameterSets(list.len()));
    }
    out.put_u8(reserved_bits | list.len() as u8);
    for nal in list {
        let len =
            u16::try_from(nal.len()).map_err(|_| H264Error::ParameterSetTooLong(nal.len()))?;
        out.put_u16(len);
        out.put_slice(nal);
    }
    Ok(())
}

/// A bounds-checked byte cursor.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], H264Error> {
        let bytes = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or(H264Error::Truncated {
                what,
                needed: self.pos + n,
                available: self.data.len(),
            })?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, H264Error> {
        Ok(self.take(1, "decoder configuration record")?[0])
    }

    /// Reads `count` length-prefixed NAL units, checking their type if given.
    fn nal_list(&mut self, count: u8, expected: Option<u8>) -> Result<Vec<Bytes>, H264Error> {
        // `count` is at most 255, so this allocation is bounded.
        let mut list = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = self.take(2, "parameter set length")?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let nal = self.take(len, "parameter set")?;
            if let Some(expected) = expected {
                let found = nal_type(nal).ok_or(H264Error::Empty)?;
                if found != expected {
                    return Err(H264Error::UnexpectedNalType { expected, found });
                }
            }
            list.push(Bytes::copy_from_slice(nal));
        }
        Ok(list)
    }
}
