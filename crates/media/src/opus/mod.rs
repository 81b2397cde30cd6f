//! Opus: RTP depacketizing (RFC 7587) and TOC/framing parsing (RFC 6716), which
//! gives each packet's duration for the muxer.
//!
//! ```
//! use skylark_media::opus::packet_samples;
//!
//! // Two 20 ms CELT fullband frames of equal size (code 1).
//! assert_eq!(packet_samples(&[0xf9, 1, 2, 3, 4])?, 1920);
//! # Ok::<(), skylark_media::opus::OpusError>(())
//! ```

mod depacketizer;
mod toc;

pub use depacketizer::{OpusDepacketizer, OpusPacket, OpusStats};
pub use toc::{packet_samples, parse_packet, Bandwidth, Mode, PacketInfo, Toc};

/// Opus RTP clock rate and the unit of every duration here (RFC 7587 §4.1).
pub const SAMPLE_RATE: u32 = 48_000;

/// Why bytes are not a valid Opus packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusError {
    /// A packet needs at least its TOC byte (R1).
    #[error("empty Opus packet")]
    Empty,
    /// The framing does not add up (R3, R4, R6, R7).
    #[error("malformed Opus packet: {0}")]
    Malformed(&'static str),
    /// A frame over 1275 bytes (R2).
    #[error("Opus frame of {0} bytes exceeds 1275")]
    FrameTooLarge(usize),
    /// A code 3 packet over 120 ms (R5).
    #[error("Opus packet of {0} samples exceeds 120 ms")]
    TooLong(u32),
}

#[cfg(test)]
mod tests;
