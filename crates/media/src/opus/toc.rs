//! The Opus TOC byte and packet framing (RFC 6716 §3.1–§3.4).

use super::OpusError;

/// Largest frame an Opus packet may hold (RFC 6716 §3.2.1).
const MAX_FRAME_BYTES: usize = 1275;
/// Longest packet: 120 ms at 48 kHz (RFC 6716 §3.2.5).
const MAX_PACKET_SAMPLES: u32 = 5760;

/// The coding mode selected by a TOC configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SILK only (speech, up to wideband).
    Silk,
    /// SILK + CELT.
    Hybrid,
    /// CELT only (music, low delay).
    Celt,
}

/// Audio bandwidth selected by a TOC configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bandwidth {
    /// 4 kHz.
    Narrowband,
    /// 6 kHz.
    Mediumband,
    /// 8 kHz.
    Wideband,
    /// 12 kHz.
    SuperWideband,
    /// 20 kHz.
    Fullband,
}

/// The table-of-contents byte that starts every Opus packet.
///
/// ```
/// use skylark_media::opus::{Bandwidth, Mode, Toc};
///
/// // What libopus sends for 20 ms CELT fullband stereo.
/// let toc = Toc::from_byte(0xfc);
/// assert_eq!(toc.mode(), Mode::Celt);
/// assert_eq!(toc.bandwidth(), Bandwidth::Fullband);
/// assert_eq!(toc.frame_samples(), 960);
/// assert!(toc.stereo);
/// assert_eq!(toc.code, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toc {
    /// Configuration number, 0–31: mode, bandwidth and frame size.
    pub config: u8,
    /// Whether the frames are coded stereo.
    pub stereo: bool,
    /// Frame count code, 0–3: one frame, two equal, two different, or an
    /// arbitrary number signalled in a second byte.
    pub code: u8,
}

impl Toc {
    /// Splits a TOC byte into its fields. Every byte value is a valid TOC.
    pub fn from_byte(byte: u8) -> Self {
        Self {
            config: byte >> 3,
            stereo: byte & 0x04 != 0,
            code: byte & 0x03,
        }
    }

    /// The coding mode (RFC 6716 Table 2).
    pub fn mode(&self) -> Mode {
        match self.config {
            0..=11 => Mode::Silk,
            12..=15 => Mode::Hybrid,
            _ => Mode::Celt,
        }
    }

    /// The audio bandwidth (RFC 6716 Table 2).
    pub fn bandwidth(&self) -> Bandwidth {
        match self.config {
            0..=3 | 16..=19 => Bandwidth::Narrowband,
            4..=7 => Bandwidth::Mediumband,
            8..=11 | 20..=23 => Bandwidth::Wideband,
            12 | 13 | 24..=27 => Bandwidth::SuperWideband,
            _ => Bandwidth::Fullband,
        }
    }

    /// Duration of one frame in samples at 48 kHz: 120 (2.5 ms) to 2880 (60 ms).
    pub fn frame_samples(&self) -> u32 {
        match self.config {
            // SILK: 10, 20, 40, 60 ms.
            0..=11 => [480, 960, 1920, 2880][usize::from(self.config % 4)],
            // Hybrid: 10, 20 ms.
            12..=15 => [480, 960][usize::from(self.config % 2)],
            // CELT: 2.5, 5, 10, 20 ms.
            _ => [120, 240, 480, 960][usize::from(self.config % 4)],
        }
    }
}

/// The framing of one Opus packet: its TOC, frame count and duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// The TOC byte's fields.
    pub toc: Toc,
    /// Number of frames, 1–48.
    pub frames: u8,
    /// Total duration in samples at 48 kHz (frames × frame duration), at most 5760.
    pub samples: u32,
}

/// Parses and validates the framing of an Opus packet (RFC 6716 §3.4, R1–R7).
///
/// ```
/// use skylark_media::opus::parse_packet;
///
/// // Code 3, CBR, 3 frames of 20 ms SILK wideband (config 9), 2 bytes each.
/// let info = parse_packet(&[0x4b, 0x03, 1, 2, 3, 4, 5, 6])?;
/// assert_eq!(info.frames, 3);
/// assert_eq!(info.samples, 2880);
/// # Ok::<(), skylark_media::opus::OpusError>(())
/// ```
pub fn parse_packet(data: &[u8]) -> Result<PacketInfo, OpusError> {
    let (&toc_byte, rest) = data.split_first().ok_or(OpusError::Empty)?;
    let toc = Toc::from_byte(toc_byte);
    let frames = match toc.code {
        0 => {
            check_frame(rest.len())?;
            1
        }
        1 => {
            if rest.len() % 2 != 0 {
                return Err(OpusError::Malformed(
                    "code 1 packet with an odd payload length",
                ));
            }
            check_frame(rest.len() / 2)?;
            2
        }
        2 => {
            let (first, used) = frame_length(rest)?;
            let remaining = rest.len() - used;
            if first > remaining {
                return Err(OpusError::Malformed(
                    "code 2 first frame runs past the packet",
                ));
            }
            check_frame(remaining - first)?;
            2
        }
        _ => return parse_code3(toc, rest),
    };
    Ok(PacketInfo {
        toc,
        frames,
        samples: toc.frame_samples() * u32::from(frames),
    })
}

/// Duration of an Opus packet in samples at 48 kHz, after validating it.
pub fn packet_samples(data: &[u8]) -> Result<u32, OpusError> {
    parse_packet(data).map(|info| info.samples)
}

fn parse_code3(toc: Toc, rest: &[u8]) -> Result<PacketInfo, OpusError> {
    let (&count_byte, mut rest) = rest.split_first().ok_or(OpusError::Malformed(
        "code 3 packet without a frame count byte",
    ))?;
    let vbr = count_byte & 0x80 != 0;
    let padded = count_byte & 0x40 != 0;
    let frames = count_byte & 0x3f;
    if frames == 0 {
        return Err(OpusError::Malformed("code 3 packet with zero frames"));
    }
    let samples = toc.frame_samples() * u32::from(frames);
    if samples > MAX_PACKET_SAMPLES {
        return Err(OpusError::TooLong(samples));
    }
    if padded {
        // Padding length: bytes of 255 add 254 and continue; any other ends it.
        let mut padding = 0usize;
        loop {
            let (&b, tail) = rest.split_first().ok_or(OpusError::Malformed(
                "code 3 padding length runs past the packet",
            ))?;
            rest = tail;
            padding += if b == 255 { 254 } else { usize::from(b) };
            if b != 255 {
                break;
            }
        }
        let len = rest
            .len()
            .checked_sub(padding)
            .ok_or(OpusError::Malformed("code 3 padding runs past the packet"))?;
        rest = &rest[..len];
    }
    let frames_usize = usize::from(frames);
    if vbr {
        let mut total = 0usize;
        for _ in 1..frames_usize {
            let (len, used) = frame_length(rest)?;
            rest = &rest[used..];
            total += len;
        }
        let last = rest.len().checked_sub(total).ok_or(OpusError::Malformed(
            "code 3 frame lengths run past the packet",
        ))?;
        check_frame(last)?;
    } else {
        if rest.len() % frames_usize != 0 {
            return Err(OpusError::Malformed(
                "code 3 CBR payload is not a multiple of the frame count",
            ));
        }
        check_frame(rest.len() / frames_usize)?;
    }
    Ok(PacketInfo {
        toc,
        frames,
        samples,
    })
}

/// Reads a frame length (RFC 6716 §3.2.1): one byte below 252, else two.
fn frame_length(data: &[u8]) -> Result<(usize, usize), OpusError> {
    match data {
        [] => Err(OpusError::Malformed("missing frame length")),
        [b0 @ 0..=251, ..] => Ok((usize::from(*b0), 1)),
        [b0, b1, ..] => Ok((usize::from(*b1) * 4 + usize::from(*b0), 2)),
        [_] => Err(OpusError::Malformed("truncated two-byte frame length")),
    }
}

fn check_frame(len: usize) -> Result<(), OpusError> {
    if len > MAX_FRAME_BYTES {
        return Err(OpusError::FrameTooLarge(len));
    }
    Ok(())
}
