//! RTP (RFC 3550): packet parsing and writing, RFC 8285 header extensions,
//! sequence-number and timestamp unwrapping, and a reorder buffer.
//!
//! ```
//! use skylark_media::rtp::{RtpHeader, RtpPacket, SeqUnwrapper};
//!
//! let bytes = RtpHeader { payload_type: 96, sequence_number: 65535, ..Default::default() }
//!     .to_packet(&[0x65])?;
//! let pkt = RtpPacket::parse(&bytes)?;
//! let mut seq = SeqUnwrapper::new();
//! assert_eq!(seq.unwrap(pkt.sequence_number()), 65535);
//! assert_eq!(seq.unwrap(0), 65536);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod packet;
mod reorder;
mod unwrap;
mod writer;

pub use packet::{Extensions, RtpPacket, FIXED_HEADER_LEN, ONE_BYTE_PROFILE};
pub use reorder::{Arrival, Ordered, ReorderBuffer};
pub use unwrap::{SeqUnwrapper, TsUnwrapper};
pub use writer::RtpHeader;

/// Why a buffer is not a valid RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The buffer ends inside a header part.
    #[error("RTP packet too short for its {what}: needs {needed} bytes, has {available}")]
    TooShort {
        /// The part being read.
        what: &'static str,
        /// Bytes needed up to the end of that part.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The padding count is 0 or larger than what follows the header.
    #[error("RTP padding of {padding} bytes is invalid with {available} bytes after the header")]
    BadPadding {
        /// The padding count from the last byte.
        padding: usize,
        /// Bytes after the header (payload + padding).
        available: usize,
    },
}

/// Why an [`RtpHeader`] cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpWriteError {
    /// Payload types are 7 bits.
    #[error("RTP payload type {0} is out of range 0-127")]
    PayloadType(u8),
    /// The CSRC count field is 4 bits.
    #[error("{0} CSRCs, at most 15 fit in an RTP header")]
    TooManyCsrcs(usize),
    /// Extension ID 0 is reserved for padding.
    #[error("RTP header extension ID {0} is reserved")]
    ExtensionId(u8),
    /// A two-byte-form element holds at most 255 bytes.
    #[error("RTP header extension {id} has {len} bytes, at most 255 fit")]
    ExtensionTooLong {
        /// Element ID.
        id: u8,
        /// Its length.
        len: usize,
    },
    /// The whole extension block exceeds 65535 words.
    #[error("RTP header extension block of {0} bytes is too long")]
    ExtensionBlockTooLong(usize),
}

#[cfg(test)]
mod tests;
