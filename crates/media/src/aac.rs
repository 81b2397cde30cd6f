//! AAC framing (ISO/IEC 14496-3): the `AudioSpecificConfig` that RTMP/FLV and
//! MP4 carry as the "AAC sequence header", and ADTS headers (§1.A.2), which
//! FFmpeg's `-f adts` output and MPEG-TS use.
//!
//! ```
//! use skylark_media::aac::{AdtsHeader, AudioSpecificConfig};
//!
//! // AAC-LC, 44.1 kHz, stereo: what OBS and FFmpeg send as the sequence header.
//! let asc = AudioSpecificConfig::parse(&[0x12, 0x10])?;
//! assert_eq!(asc.object_type, 2);
//! assert_eq!(asc.sampling_frequency, 44_100);
//! assert_eq!(asc.channel_configuration, 2);
//! assert_eq!(asc.to_bytes()?, [0x12, 0x10]);
//!
//! // Wrap a raw frame in ADTS, and read it back.
//! let header = AdtsHeader::for_frame(&asc, 300)?;
//! let bytes = header.to_bytes();
//! let (parsed, payload_offset) = AdtsHeader::parse(&bytes)?;
//! assert_eq!(parsed, header);
//! assert_eq!((payload_offset, parsed.frame_length), (7, 307));
//! assert_eq!(parsed.to_audio_specific_config()?, asc);
//! # Ok::<(), skylark_media::aac::AacError>(())
//! ```

/// Sampling frequencies by `samplingFrequencyIndex` (Table 1.18); 13 and 14
/// are reserved and 15 means "explicit, 24 bits follow".
pub const SAMPLING_FREQUENCIES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// `audioObjectType` of AAC Main.
pub const AOT_AAC_MAIN: u8 = 1;
/// `audioObjectType` of AAC-LC, the profile every RTMP encoder sends by default.
pub const AOT_AAC_LC: u8 = 2;
/// `audioObjectType` of SBR (HE-AAC v1) in explicit hierarchical signalling.
pub const AOT_SBR: u8 = 5;
/// `audioObjectType` of parametric stereo (HE-AAC v2).
pub const AOT_PS: u8 = 29;

/// Why AAC framing could not be parsed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AacError {
    /// The data ends before the structure does.
    #[error("AAC {0} truncated")]
    Truncated(&'static str),
    /// A reserved `samplingFrequencyIndex` (13 or 14).
    #[error("reserved AAC sampling frequency index {0}")]
    ReservedFrequencyIndex(u8),
    /// An explicit sampling frequency of 0 Hz.
    #[error("AAC sampling frequency of 0 Hz")]
    ZeroFrequency,
    /// `audioObjectType` 0 (null) or out of range.
    #[error("invalid AAC audio object type {0}")]
    ObjectType(u8),
    /// An ADTS header without the 0xFFF syncword.
    #[error("no ADTS syncword")]
    NoSync,
    /// An ADTS header with a layer other than 0.
    #[error("ADTS layer {0}, expected 0")]
    Layer(u8),
    /// An ADTS `frame_length` shorter than its header or longer than 8191.
    #[error("ADTS frame length {0} is invalid")]
    FrameLength(usize),
    /// The value cannot be written in this syntax (e.g. an object type ADTS's
    /// 2-bit profile cannot hold, or a channel configuration over 7).
    #[error("cannot write AAC {field} = {value}")]
    Unrepresentable {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
}

/// The SBR/PS extension of an HE-AAC `AudioSpecificConfig` (explicit
/// hierarchical or backward-compatible signalling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbrExtension {
    /// [`AOT_SBR`] or [`AOT_PS`].
    pub object_type: u8,
    /// The output (SBR) sampling frequency in Hz.
    pub sampling_frequency: u32,
}

/// An `AudioSpecificConfig` (ISO/IEC 14496-3 §1.6.2.1), as far as a
/// packager and a transcoder need it.
///
/// Only the General Audio fields are interpreted; a `channel_configuration`
/// of 0 (channels in a program config element) is kept but the element is not
/// parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// `audioObjectType` of the core coder (2 = AAC-LC), 1–95; for explicit
    /// SBR/PS signalling this is the underlying core type and
    /// [`extension`](Self::extension) says SBR/PS is present.
    pub object_type: u8,
    /// `samplingFrequencyIndex`, 0–12, or 15 for an explicit frequency.
    pub sampling_frequency_index: u8,
    /// The core sampling frequency in Hz.
    pub sampling_frequency: u32,
    /// `channelConfiguration`, 0–15 (1 mono, 2 stereo, … 7 = 7.1).
    pub channel_configuration: u8,
    /// `frameLengthFlag` of the GA config: frames of 960 instead of 1024 samples.
    pub frame_length_960: bool,
    /// SBR/PS, when signalled.
    pub extension: Option<SbrExtension>,
}

impl AudioSpecificConfig {
    /// A plain AAC-LC config for a standard sampling frequency and channel count.
    ///
    /// ```
    /// let asc = skylark_media::aac::AudioSpecificConfig::lc(48_000, 2)?;
    /// assert_eq!(asc.to_bytes()?, [0x11, 0x90]);
    /// # Ok::<(), skylark_media::aac::AacError>(())
    /// ```
    pub fn lc(sampling_frequency: u32, channels: u8) -> Result<Self, AacError> {
        let index = SAMPLING_FREQUENCIES
            .iter()
            .position(|&f| f == sampling_frequency)
            .map_or(15, |i| i as u8);
        if sampling_frequency == 0 {
            return Err(AacError::ZeroFrequency);
        }
        if channels > 7 {
            return Err(AacError::Unrepresentable {
                field: "channel count",
                value: u32::from(channels),
            });
        }
        Ok(Self {
            object_type: AOT_AAC_LC,
            sampling_frequency_index: index,
            sampling_frequency,
            channel_configuration: channels,
            frame_length_960: false,
            extension: None,
        })
    }

    /// Parses an `AudioSpecificConfig`. Trailing bytes after the parsed fields
    /// are ignored; a backward-compatible SBR sync extension (0x2b7) in them
    /// is recognised.
    pub fn parse(data: &[u8]) -> Result<Self, AacError> {
        let mut r = BitReader::new(data);
        let mut object_type = read_object_type(&mut r)?;
        let (sampling_frequency_index, sampling_frequency) = read_frequency(&mut r)?;
        let channel_configuration = r.bits(4, "channel configuration")? as u8;
        let mut extension = None;
        if object_type == AOT_SBR || object_type == AOT_PS {
            let (_, ext_freq) = read_frequency(&mut r)?;
            extension = Some(SbrExtension {
                object_type,
                sampling_frequency: ext_freq,
            });
            object_type = read_object_type(&mut r)?;
        }
        let mut frame_length_960 = false;
        if is_general_audio(object_type) {
            frame_length_960 = r.bits(1, "frameLengthFlag")? == 1;
            if r.bits(1, "dependsOnCoreCoder")? == 1 {
                r.bits(14, "coreCoderDelay")?;
            }
            let extension_flag = r.bits(1, "extensionFlag")? == 1;
            if channel_configuration == 0 {
                // A program_config_element follows; the channel layout is in
                // it. Stop here: the fields above are what callers need.
                return Ok(Self {
                    object_type,
                    sampling_frequency_index,
                    sampling_frequency,
                    channel_configuration,
                    frame_length_960,
                    extension,
                });
            }
            if object_type == 6 || object_type == 20 {
                r.bits(3, "layerNr")?;
            }
            if extension_flag {
                if object_type == 22 {
                    r.bits(16, "numOfSubFrame/layer_length")?;
                }
                if matches!(object_type, 17 | 19 | 20 | 23) {
                    r.bits(3, "resilience flags")?;
                }
                r.bits(1, "extensionFlag3")?;
            }
        }
        // Backward-compatible SBR signalling: syncExtensionType 0x2b7.
        if extension.is_none() && r.remaining() >= 16 && r.peek(11) == Some(0x2b7) {
            r.bits(11, "syncExtensionType")?;
            let ext_type = read_object_type(&mut r)?;
            if ext_type == AOT_SBR && r.bits(1, "sbrPresentFlag")? == 1 {
                let (_, ext_freq) = read_frequency(&mut r)?;
                let mut ext = SbrExtension {
                    object_type: AOT_SBR,
                    sampling_frequency: ext_freq,
                };
                if r.remaining() >= 12
                    && r.peek(11) == Some(0x548)
                    && r.bits(11, "syncExtensionType")? == 0x548
                    && r.bits(1, "psPresentFlag")? == 1
                {
                    ext.object_type = AOT_PS;
                }
                extension = Some(ext);
            }
        }
        Ok(Self {
            object_type,
            sampling_frequency_index,
            sampling_frequency,
            channel_configuration,
            frame_length_960,
            extension,
        })
    }

    /// Serializes the config (explicit hierarchical signalling for SBR/PS).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AacError> {
        let mut w = BitWriter::default();
        let write_freq = |w: &mut BitWriter, index: u8, freq: u32| -> Result<(), AacError> {
            match index {
                0..=12 if SAMPLING_FREQUENCIES[usize::from(index)] == freq => {
                    w.put(u32::from(index), 4);
                    Ok(())
                }
                15 if freq > 0 && freq < (1 << 24) => {
                    w.put(15, 4);
                    w.put(freq, 24);
                    Ok(())
                }
                _ => Err(AacError::Unrepresentable {
                    field: "sampling frequency",
                    value: freq,
                }),
            }
        };
        if self.channel_configuration > 15 {
            return Err(AacError::Unrepresentable {
                field: "channel configuration",
                value: u32::from(self.channel_configuration),
            });
        }
        match self.extension {
            Some(ext) => {
                if ext.object_type != AOT_SBR && ext.object_type != AOT_PS {
                    return Err(AacError::Unrepresentable {
                        field: "extension object type",
                        value: u32::from(ext.object_type),
                    });
                }
                write_object_type(&mut w, ext.object_type)?;
                write_freq(
                    &mut w,
                    self.sampling_frequency_index,
                    self.sampling_frequency,
                )?;
                w.put(u32::from(self.channel_configuration), 4);
                write_freq(
                    &mut w,
                    frequency_index(ext.sampling_frequency),
                    ext.sampling_frequency,
                )?;
                write_object_type(&mut w, self.object_type)?;
            }
            None => {
                if self.object_type == AOT_SBR || self.object_type == AOT_PS {
                    // These object types announce an extension config.
                    return Err(AacError::Unrepresentable {
                        field: "object type without its extension",
                        value: u32::from(self.object_type),
                    });
                }
                write_object_type(&mut w, self.object_type)?;
                write_freq(
                    &mut w,
                    self.sampling_frequency_index,
                    self.sampling_frequency,
                )?;
                w.put(u32::from(self.channel_configuration), 4);
            }
        }
        if is_general_audio(self.object_type) {
            w.put(u32::from(self.frame_length_960), 1);
            w.put(0, 1); // dependsOnCoreCoder
            w.put(0, 1); // extensionFlag
            if self.object_type == 6 || self.object_type == 20 {
                w.put(0, 3); // layerNr
            }
        }
        Ok(w.finish())
    }

    /// Decoded samples per channel in one raw frame: 1024 (or 960), doubled
    /// when SBR is present.
    pub fn samples_per_frame(&self) -> u32 {
        let core = if self.frame_length_960 { 960 } else { 1024 };
        if self.extension.is_some() {
            core * 2
        } else {
            core
        }
    }

    /// The output sampling frequency: the SBR frequency when present.
    pub fn output_sampling_frequency(&self) -> u32 {
        self.extension
            .map_or(self.sampling_frequency, |e| e.sampling_frequency)
    }

    /// The channel count implied by `channelConfiguration` (7 → 8 for 7.1),
    /// or `None` for 0 (given by a program config element) and reserved values.
    pub fn channel_count(&self) -> Option<u8> {
        match self.channel_configuration {
            1..=6 => Some(self.channel_configuration),
            7 => Some(8),
            _ => None,
        }
    }

    /// One raw frame that decodes to silence, for AAC-LC mono and stereo (`None` for
    /// other configurations): a single channel element (mono) or a channel pair element
    /// (stereo) with no spectral data. FFmpeg decodes it to 1024 zero samples per
    /// channel at any sampling frequency; hls.js fills audio gaps with the same frames.
    ///
    /// ```
    /// let asc = skylark_media::aac::AudioSpecificConfig::lc(44_100, 2)?;
    /// assert_eq!(asc.silent_frame().map(<[u8]>::len), Some(9));
    /// # Ok::<(), skylark_media::aac::AacError>(())
    /// ```
    pub fn silent_frame(&self) -> Option<&'static [u8]> {
        if self.object_type != 2 || self.extension.is_some() || self.frame_length_960 {
            return None;
        }
        match self.channel_configuration {
            1 => Some(&[0x00, 0xc8, 0x00, 0x80, 0x23, 0x80]),
            2 => Some(&[0x21, 0x00, 0x49, 0x90, 0x02, 0x19, 0x00, 0x23, 0x80]),
            _ => None,
        }
    }

    /// The RFC 6381 `codecs` value, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        let aot = self.extension.map_or(self.object_type, |e| e.object_type);
        format!("mp4a.40.{aot}")
    }
}

/// Object types using `GASpecificConfig`.
fn is_general_audio(aot: u8) -> bool {
    matches!(aot, 1..=4 | 6 | 7 | 17 | 19..=23)
}

fn frequency_index(freq: u32) -> u8 {
    SAMPLING_FREQUENCIES
        .iter()
        .position(|&f| f == freq)
        .map_or(15, |i| i as u8)
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, AacError> {
    let aot = r.bits(5, "audioObjectType")? as u8;
    let aot = if aot == 31 {
        32 + r.bits(6, "audioObjectTypeExt")? as u8
    } else {
        aot
    };
    if aot == 0 {
        return Err(AacError::ObjectType(0));
    }
    Ok(aot)
}

fn write_object_type(w: &mut BitWriter, aot: u8) -> Result<(), AacError> {
    match aot {
        1..=30 => w.put(u32::from(aot), 5),
        32..=95 => {
            w.put(31, 5);
            w.put(u32::from(aot - 32), 6);
        }
        _ => return Err(AacError::ObjectType(aot)),
    }
    Ok(())
}

fn read_frequency(r: &mut BitReader<'_>) -> Result<(u8, u32), AacError> {
    let index = r.bits(4, "samplingFrequencyIndex")? as u8;
    let freq = match index {
        0..=12 => SAMPLING_FREQUENCIES[usize::from(index)],
        15 => r.bits(24, "samplingFrequency")?,
        _ => return Err(AacError::ReservedFrequencyIndex(index)),
    };
    if freq == 0 {
        return Err(AacError::ZeroFrequency);
    }
    Ok((index, freq))
}

/// Length of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;
/// Largest ADTS `frame_length` (13 bits).
pub const ADTS_MAX_FRAME_LEN: usize = (1 << 13) - 1;

/// An ADTS fixed + variable header (ISO/IEC 13818-7 §6.2 / 14496-3 §1.A.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// `ID`: true for MPEG-2 AAC, false for MPEG-4.
    pub mpeg2: bool,
    /// `protection_absent`: false when a 16-bit CRC follows the header.
    pub protection_absent: bool,
    /// `profile_ObjectType`: the audio object type minus one (1 = AAC-LC).
    pub profile: u8,
    /// `sampling_frequency_index`, 0–12.
    pub sampling_frequency_index: u8,
    /// `channel_configuration`, 0–7.
    pub channel_configuration: u8,
    /// `aac_frame_length`: header, CRC and payload, in bytes.
    pub frame_length: usize,
    /// `adts_buffer_fullness` (0x7FF = variable bit rate).
    pub buffer_fullness: u16,
    /// `number_of_raw_data_blocks_in_frame`: raw blocks minus one.
    pub raw_data_blocks: u8,
}

impl AdtsHeader {
    /// The header for one raw AAC frame of `payload_len` bytes, no CRC, VBR.
    ///
    /// Fails for object types over 4, explicit frequencies, channel
    /// configurations over 7 and payloads that do not fit 13 bits.
    pub fn for_frame(asc: &AudioSpecificConfig, payload_len: usize) -> Result<Self, AacError> {
        if !(1..=4).contains(&asc.object_type) {
            return Err(AacError::Unrepresentable {
                field: "ADTS object type",
                value: u32::from(asc.object_type),
            });
        }
        if asc.sampling_frequency_index > 12 {
            return Err(AacError::Unrepresentable {
                field: "ADTS sampling frequency",
                value: asc.sampling_frequency,
            });
        }
        if asc.channel_configuration > 7 {
            return Err(AacError::Unrepresentable {
                field: "ADTS channel configuration",
                value: u32::from(asc.channel_configuration),
            });
        }
        let frame_length = payload_len
            .checked_add(ADTS_HEADER_LEN)
            .filter(|&l| l <= ADTS_MAX_FRAME_LEN)
            .ok_or(AacError::FrameLength(payload_len.saturating_add(7)))?;
        Ok(Self {
            mpeg2: false,
            protection_absent: true,
            profile: asc.object_type - 1,
            sampling_frequency_index: asc.sampling_frequency_index,
            channel_configuration: asc.channel_configuration,
            frame_length,
            buffer_fullness: 0x7ff,
            raw_data_blocks: 0,
        })
    }

    /// Parses the header at the start of `data`; returns it and the offset of
    /// the payload (7, or 9 with a CRC). The payload is
    /// `data[offset..header.frame_length]` when the data is that long.
    pub fn parse(data: &[u8]) -> Result<(Self, usize), AacError> {
        let h = data
            .get(..ADTS_HEADER_LEN)
            .ok_or(AacError::Truncated("ADTS header"))?;
        if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
            return Err(AacError::NoSync);
        }
        let layer = (h[1] >> 1) & 0x03;
        if layer != 0 {
            return Err(AacError::Layer(layer));
        }
        let protection_absent = h[1] & 1 == 1;
        let sampling_frequency_index = (h[2] >> 2) & 0x0f;
        if sampling_frequency_index > 12 {
            return Err(AacError::ReservedFrequencyIndex(sampling_frequency_index));
        }
        let header_len = if protection_absent { 7 } else { 9 };
        let frame_length =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        if frame_length < header_len {
            return Err(AacError::FrameLength(frame_length));
        }
        Ok((
            Self {
                mpeg2: h[1] & 0x08 != 0,
                protection_absent,
                profile: h[2] >> 6,
                sampling_frequency_index,
                channel_configuration: ((h[2] & 0x01) << 2) | (h[3] >> 6),
                frame_length,
                buffer_fullness: (u16::from(h[5] & 0x1f) << 6) | u16::from(h[6] >> 2),
                raw_data_blocks: h[6] & 0x03,
            },
            header_len,
        ))
    }

    /// The 7-byte header (a CRC, if `protection_absent` is false, is the
    /// caller's to append).
    pub fn to_bytes(&self) -> [u8; ADTS_HEADER_LEN] {
        let len = self.frame_length & ADTS_MAX_FRAME_LEN;
        let fullness = self.buffer_fullness & 0x7ff;
        [
            0xff,
            0xf0 | (u8::from(self.mpeg2) << 3) | u8::from(self.protection_absent),
            ((self.profile & 0x03) << 6)
                | ((self.sampling_frequency_index & 0x0f) << 2)
                | ((self.channel_configuration >> 2) & 0x01),
            ((self.channel_configuration & 0x03) << 6) | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            ((len as u8 & 0x07) << 5) | ((fullness >> 6) as u8 & 0x1f),
            ((fullness as u8 & 0x3f) << 2) | (self.raw_data_blocks & 0x03),
        ]
    }

    /// The equivalent `AudioSpecificConfig` (the FLV/MP4 sequence header).
    pub fn to_audio_specific_config(&self) -> Result<AudioSpecificConfig, AacError> {
        let index = self.sampling_frequency_index;
        let freq = *SAMPLING_FREQUENCIES
            .get(usize::from(index))
            .ok_or(AacError::ReservedFrequencyIndex(index))?;
        Ok(AudioSpecificConfig {
            object_type: self.profile + 1,
            sampling_frequency_index: index,
            sampling_frequency: freq,
            channel_configuration: self.channel_configuration,
            frame_length_960: false,
            extension: None,
        })
    }
}

/// Splits an ADTS stream into `(header, raw frame)` pairs; stops at the end,
/// and yields one error (then stops) at a broken or truncated frame.
///
/// ```
/// use skylark_media::aac::{adts_frames, AdtsHeader, AudioSpecificConfig};
///
/// let asc = AudioSpecificConfig::lc(44_100, 2)?;
/// let mut stream = Vec::new();
/// for payload in [&[1u8, 2, 3][..], &[4, 5]] {
///     stream.extend(AdtsHeader::for_frame(&asc, payload.len())?.to_bytes());
///     stream.extend_from_slice(payload);
/// }
/// let frames: Vec<_> = adts_frames(&stream).map(|f| f.map(|(_, p)| p)).collect::<Result<_, _>>()?;
/// assert_eq!(frames, [&[1, 2, 3][..], &[4, 5]]);
/// # Ok::<(), skylark_media::aac::AacError>(())
/// ```
pub fn adts_frames(data: &[u8]) -> AdtsFrames<'_> {
    AdtsFrames {
        data,
        failed: false,
    }
}

/// Iterator returned by [`adts_frames`].
#[derive(Debug, Clone)]
pub struct AdtsFrames<'a> {
    data: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for AdtsFrames<'a> {
    type Item = Result<(AdtsHeader, &'a [u8]), AacError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.data.is_empty() {
            return None;
        }
        let result = AdtsHeader::parse(self.data).and_then(|(header, offset)| {
            let payload = self
                .data
                .get(offset..header.frame_length)
                .ok_or(AacError::Truncated("ADTS frame"))?;
            self.data = &self.data[header.frame_length..];
            Ok((header, payload))
        });
        self.failed = result.is_err();
        Some(result)
    }
}

/// A bounds-checked MSB-first bit reader.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    fn peek(&self, n: u32) -> Option<u32> {
        let mut copy = BitReader {
            data: self.data,
            pos: self.pos,
        };
        copy.bits(n, "").ok()
    }

    /// Reads `n` ≤ 32 bits.
    fn bits(&mut self, n: u32, what: &'static str) -> Result<u32, AacError> {
        if self.remaining() < n as usize {
            return Err(AacError::Truncated(what));
        }
        let mut value = 0u32;
        for _ in 0..n {
            let byte = self.data[self.pos / 8];
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(value)
    }
}

/// An MSB-first bit writer.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, value: u32, n: u32) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.out.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            if let Some(last) = self.out.last_mut() {
                *last |= bit << (7 - self.bits % 8);
            }
            self.bits += 1;
        }
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_configs() {
        // FFmpeg's 44.1 kHz stereo LC, OBS's 48 kHz stereo LC, mono 22.05 kHz.
        for (bytes, freq, ch) in [
            ([0x12, 0x10], 44_100, 2),
            ([0x11, 0x90], 48_000, 2),
            ([0x13, 0x88], 22_050, 1),
        ] {
            let asc = AudioSpecificConfig::parse(&bytes).unwrap();
            assert_eq!(asc.object_type, AOT_AAC_LC);
            assert_eq!(asc.sampling_frequency, freq);
            assert_eq!(asc.channel_count(), Some(ch));
            assert_eq!(asc.samples_per_frame(), 1024);
            assert_eq!(asc.codec_string(), "mp4a.40.2");
            assert_eq!(asc.to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn escape_object_type_and_explicit_frequency() {
        let asc = AudioSpecificConfig {
            object_type: 42,
            sampling_frequency_index: 15,
            sampling_frequency: 44_056,
            channel_configuration: 1,
            frame_length_960: false,
            extension: None,
        };
        let bytes = asc.to_bytes().unwrap();
        // 31 escape, then 10 (42 - 32) in 6 bits, then index 15 and 24 bits.
        assert_eq!(bytes[0] >> 3, 31);
        assert_eq!(AudioSpecificConfig::parse(&bytes).unwrap(), asc);
    }

    #[test]
    fn he_aac_explicit_and_backward_compatible() {
        // Explicit: AOT 5, 24 kHz core, stereo, 48 kHz SBR, core AOT 2.
        let he = AudioSpecificConfig {
            object_type: AOT_AAC_LC,
            sampling_frequency_index: 6,
            sampling_frequency: 24_000,
            channel_configuration: 2,
            frame_length_960: false,
            extension: Some(SbrExtension {
                object_type: AOT_SBR,
                sampling_frequency: 48_000,
            }),
        };
        let bytes = he.to_bytes().unwrap();
        let parsed = AudioSpecificConfig::parse(&bytes).unwrap();
        assert_eq!(parsed, he);
        assert_eq!(parsed.output_sampling_frequency(), 48_000);
        assert_eq!(parsed.samples_per_frame(), 2048);
        assert_eq!(parsed.codec_string(), "mp4a.40.5");

        // Backward compatible: LC 24 kHz stereo + 0x2b7, AOT 5, present, 48 kHz.
        let mut w = BitWriter::default();
        w.put(2, 5);
        w.put(6, 4);
        w.put(2, 4);
        w.put(0, 3);
        w.put(0x2b7, 11);
        w.put(5, 5);
        w.put(1, 1);
        w.put(3, 4);
        let parsed = AudioSpecificConfig::parse(&w.finish()).unwrap();
        assert_eq!(parsed.object_type, AOT_AAC_LC);
        assert_eq!(
            parsed.extension,
            Some(SbrExtension {
                object_type: AOT_SBR,
                sampling_frequency: 48_000
            })
        );
    }

    #[test]
    fn bad_configs() {
        assert_eq!(
            AudioSpecificConfig::parse(&[]),
            Err(AacError::Truncated("audioObjectType"))
        );
        assert_eq!(
            AudioSpecificConfig::parse(&[0x00, 0x10]),
            Err(AacError::ObjectType(0))
        );
        // Index 13 is reserved.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x16, 0x90]),
            Err(AacError::ReservedFrequencyIndex(13))
        );
        // Explicit frequency of zero.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x17, 0x80, 0, 0, 0x10]),
            Err(AacError::ZeroFrequency)
        );
        assert!(AudioSpecificConfig::lc(0, 2).is_err());
        assert!(AudioSpecificConfig::lc(48_000, 9).is_err());
        let mut bad = AudioSpecificConfig::lc(48_000, 2).unwrap();
        bad.sampling_frequency_index = 3;
        bad.sampling_frequency = 44_100; // index and frequency disagree
        assert!(bad.to_bytes().is_err());
    }

    #[test]
    fn channel_configuration_zero_stops_before_pce() {
        // LC, 48 kHz, channel configuration 0, then a PCE we do not parse.
        let asc = AudioSpecificConfig::parse(&[0x11, 0x80, 0xff, 0xff]).unwrap();
        assert_eq!(asc.channel_configuration, 0);
        assert_eq!(asc.channel_count(), None);
    }

    #[test]
    fn adts_round_trip_and_crc_variant() {
        let asc = AudioSpecificConfig::lc(44_100, 2).unwrap();
        let header = AdtsHeader::for_frame(&asc, 371).unwrap();
        let bytes = header.to_bytes();
        // A 378-byte LC 44.1 kHz stereo VBR frame (as `ffmpeg -f adts` writes them).
        assert_eq!(bytes, [0xff, 0xf1, 0x50, 0x80, 0x2f, 0x5f, 0xfc]);
        assert_eq!(AdtsHeader::parse(&bytes).unwrap(), (header, 7));

        let mut crc = bytes;
        crc[1] &= !1; // protection present: 9-byte header
        let (parsed, offset) = AdtsHeader::parse(&crc).unwrap();
        assert_eq!(offset, 9);
        assert!(!parsed.protection_absent);
    }

    #[test]
    fn adts_errors() {
        assert_eq!(
            AdtsHeader::parse(&[0xff, 0xf1]),
            Err(AacError::Truncated("ADTS header"))
        );
        assert_eq!(
            AdtsHeader::parse(&[0xfe, 0xf1, 0x50, 0x80, 0, 0, 0]),
            Err(AacError::NoSync)
        );
        assert_eq!(
            AdtsHeader::parse(&[0xff, 0xf3, 0x50, 0x80, 0, 0, 0]),
            Err(AacError::Layer(1))
        );
        // frame_length 3 < 7.
        assert_eq!(
            AdtsHeader::parse(&[0xff, 0xf1, 0x50, 0x80, 0x00, 0x60, 0]),
            Err(AacError::FrameLength(3))
        );
        let asc = AudioSpecificConfig::lc(44_100, 2).unwrap();
        assert!(AdtsHeader::for_frame(&asc, 9000).is_err());
        let he = AudioSpecificConfig {
            object_type: 42,
            ..asc.clone()
        };
        assert!(AdtsHeader::for_frame(&he, 10).is_err());
        // A truncated frame stops the iterator with an error.
        let mut stream = AdtsHeader::for_frame(&asc, 10).unwrap().to_bytes().to_vec();
        stream.extend([0; 5]);
        let items: Vec<_> = adts_frames(&stream).collect();
        assert_eq!(items, [Err(AacError::Truncated("ADTS frame"))]);
    }
}
