//! Building RTP packets.

use bytes::Bytes;

use super::packet::{RtpPacket, FIXED_HEADER_LEN, ONE_BYTE_PROFILE};
use super::RtpWriteError;

/// An owned RTP header, used to write packets.
///
/// Header extensions are written in the one-byte form (RFC 8285 §4.2) when every
/// element fits it (IDs 1–14, 1–16 bytes) and in the two-byte form otherwise.
///
/// ```
/// use skylark_media::rtp::{RtpHeader, RtpPacket};
///
/// let header = RtpHeader {
///     marker: true,
///     payload_type: 111,
///     sequence_number: 65535,
///     timestamp: 960,
///     ssrc: 42,
///     extensions: vec![(1, vec![0x30].into())],
///     ..RtpHeader::default()
/// };
/// let bytes = header.to_packet(b"opus")?;
/// let pkt = RtpPacket::parse(&bytes)?;
/// assert_eq!(pkt.extension(1), Some(&[0x30][..]));
/// assert_eq!(pkt.payload(), b"opus");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type, 0–127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Contributing sources, at most 15.
    pub csrcs: Vec<u32>,
    /// RFC 8285 header extension elements as `(id, data)`.
    pub extensions: Vec<(u8, Bytes)>,
    /// Padding bytes to append after the payload, the count byte included (0 = none).
    pub padding: u8,
}

impl RtpHeader {
    /// Copies the header fields of a parsed packet.
    ///
    /// Only RFC 8285 extension elements are kept; an extension block with any
    /// other profile is dropped. Padding length is kept.
    pub fn from_packet(pkt: &RtpPacket<'_>) -> Self {
        Self {
            marker: pkt.marker(),
            payload_type: pkt.payload_type(),
            sequence_number: pkt.sequence_number(),
            timestamp: pkt.timestamp(),
            ssrc: pkt.ssrc(),
            csrcs: pkt.csrcs().collect(),
            extensions: pkt
                .extensions()
                .map(|(id, data)| (id, Bytes::copy_from_slice(data)))
                .collect(),
            // A parsed packet's padding is at most 255 bytes: one count byte.
            padding: u8::try_from(pkt.padding_len()).unwrap_or(u8::MAX),
        }
    }

    /// Writes header, `payload` and padding into a new buffer.
    pub fn to_packet(&self, payload: &[u8]) -> Result<Vec<u8>, RtpWriteError> {
        let mut out = Vec::with_capacity(self.header_len()? + payload.len() + 4);
        self.write(payload, &mut out)?;
        Ok(out)
    }

    /// Appends header, `payload` and padding to `out`.
    ///
    /// On error nothing is appended.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RtpWriteError> {
        let form = self.validate()?;
        let csrc_count = self.csrcs.len() as u8; // validated <= 15
        let mut b0 = 0x80 | csrc_count;
        if self.padding > 0 {
            b0 |= 0x20;
        }
        if form.is_some() {
            b0 |= 0x10;
        }
        out.push(b0);
        out.push((u8::from(self.marker) << 7) | self.payload_type);
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for csrc in &self.csrcs {
            out.extend_from_slice(&csrc.to_be_bytes());
        }
        if let Some(form) = form {
            let (profile, data_len) = match form {
                Form::OneByte(len) => (ONE_BYTE_PROFILE, len),
                Form::TwoByte(len) => (0x1000, len),
            };
            let words = data_len.div_ceil(4);
            out.extend_from_slice(&profile.to_be_bytes());
            out.extend_from_slice(&(words as u16).to_be_bytes()); // validated
            let start = out.len();
            for (id, data) in &self.extensions {
                match form {
                    Form::OneByte(_) => out.push((id << 4) | (data.len() as u8 - 1)),
                    Form::TwoByte(_) => out.extend_from_slice(&[*id, data.len() as u8]),
                }
                out.extend_from_slice(data);
            }
            // Pad the block to 32-bit words with zero bytes (RFC 8285 §4.1).
            out.resize(start + words * 4, 0);
        }
        out.extend_from_slice(payload);
        if self.padding > 0 {
            out.resize(out.len() + usize::from(self.padding) - 1, 0);
            out.push(self.padding);
        }
        Ok(())
    }

    /// Length of the header this writes, CSRCs and extension included.
    pub fn header_len(&self) -> Result<usize, RtpWriteError> {
        let ext = match self.validate()? {
            None => 0,
            Some(Form::OneByte(len) | Form::TwoByte(len)) => 4 + len.div_ceil(4) * 4,
        };
        Ok(FIXED_HEADER_LEN + 4 * self.csrcs.len() + ext)
    }

    /// Checks the fields and picks the extension form and its data length.
    fn validate(&self) -> Result<Option<Form>, RtpWriteError> {
        if self.payload_type > 127 {
            return Err(RtpWriteError::PayloadType(self.payload_type));
        }
        if self.csrcs.len() > 15 {
            return Err(RtpWriteError::TooManyCsrcs(self.csrcs.len()));
        }
        if self.extensions.is_empty() {
            return Ok(None);
        }
        let one_byte = self
            .extensions
            .iter()
            .all(|(id, data)| (1..=14).contains(id) && (1..=16).contains(&data.len()));
        if one_byte {
            let len = self.extensions.iter().map(|(_, d)| 1 + d.len()).sum();
            return Ok(Some(Form::OneByte(len)));
        }
        let mut len = 0usize;
        for (id, data) in &self.extensions {
            if *id == 0 {
                return Err(RtpWriteError::ExtensionId(*id));
            }
            if data.len() > 255 {
                return Err(RtpWriteError::ExtensionTooLong {
                    id: *id,
                    len: data.len(),
                });
            }
            len += 2 + data.len();
        }
        if len.div_ceil(4) > usize::from(u16::MAX) {
            return Err(RtpWriteError::ExtensionBlockTooLong(len));
        }
        Ok(Some(Form::TwoByte(len)))
    }
}

/// Extension form with the element bytes' total length (before word padding).
#[derive(Debug, Clone, Copy)]
enum Form {
    OneByte(usize),
    TwoByte(usize),
}
