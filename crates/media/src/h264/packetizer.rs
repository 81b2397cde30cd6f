//! RFC 6184 packetizer (packetization-mode 1): NAL units of one access unit to
//! RTP payloads, with FU-A fragmentation and optional STAP-A aggregation.

use bytes::{BufMut, Bytes, BytesMut};

use super::{nal_type, NAL_FU_A, NAL_STAP_A};

/// Why NAL units could not be packetized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketizeError {
    /// The payload size leaves no room for data after the FU-A headers.
    #[error("maximum RTP payload size {0} is too small (at least 3 bytes are needed)")]
    PayloadSizeTooSmall(usize),
    /// An empty NAL unit cannot be sent.
    #[error("empty NAL unit at index {0}")]
    EmptyNalUnit(usize),
    /// NAL unit types 0 and 24–31 would be read as packet types by the receiver.
    #[error("NAL unit type {nal_type} at index {index} cannot be packetized")]
    InvalidNalType {
        /// Index in the input.
        index: usize,
        /// Its type.
        nal_type: u8,
    },
}

/// Splits an access unit's NAL units into RTP payloads of at most
/// `max_payload_size` bytes.
///
/// A NAL unit that fits is sent as a single NAL unit packet, a larger one as
/// FU-A fragments. With aggregation on (the default), runs of consecutive
/// small NAL units (typically SPS + PPS) share one STAP-A packet. All payloads
/// of one access unit take the same RTP timestamp, and the last one the marker
/// bit.
///
/// ```
/// use skylark_media::h264::H264Packetizer;
///
/// let idr = vec![0x65; 2500];
/// let payloads = H264Packetizer::new(1000)?.packetize(&[&idr[..]])?;
/// assert_eq!(payloads.len(), 3);
/// assert_eq!(&payloads[0][..2], [0x7c, 0x85]); // FU indicator, FU header (S, type 5)
/// assert_eq!(&payloads[2][..2], [0x7c, 0x45]); // E, type 5
/// # Ok::<(), skylark_media::h264::PacketizeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Packetizer {
    max_payload_size: usize,
    aggregate: bool,
}

impl H264Packetizer {
    /// A packetizer for payloads of at most `max_payload_size` bytes (the MTU
    /// minus IP, UDP, SRTP and RTP header overhead; ~1200 is customary).
    pub fn new(max_payload_size: usize) -> Result<Self, PacketizeError> {
        if max_payload_size < 3 {
            return Err(PacketizeError::PayloadSizeTooSmall(max_payload_size));
        }
        Ok(Self {
            max_payload_size,
            aggregate: true,
        })
    }

    /// Turns STAP-A aggregation on or off.
    pub fn with_aggregation(mut self, aggregate: bool) -> Self {
        self.aggregate = aggregate;
        self
    }

    /// Packetizes the NAL units of one access unit, in order.
    pub fn packetize<N: AsRef<[u8]>>(&self, nalus: &[N]) -> Result<Vec<Bytes>, PacketizeError> {
        for (index, nal) in nalus.iter().enumerate() {
            match nal_type(nal.as_ref()) {
                None => return Err(PacketizeError::EmptyNalUnit(index)),
                Some(t @ (0 | 24..)) => {
                    return Err(PacketizeError::InvalidNalType { index, nal_type: t })
                }
                Some(_) => {}
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < nalus.len() {
            let run = if self.aggregate {
                self.aggregation_run(&nalus[i..])
            } else {
                1
            };
            if run >= 2 {
                out.push(stap_a(&nalus[i..i + run]));
                i += run;
                continue;
            }
            let nal = nalus[i].as_ref();
            if nal.len() <= self.max_payload_size {
                out.push(Bytes::copy_from_slice(nal));
            } else {
                self.fu_a(nal, &mut out);
            }
            i += 1;
        }
        Ok(out)
    }

    /// How many NAL units from the start of `nalus` fit one STAP-A.
    fn aggregation_run<N: AsRef<[u8]>>(&self, nalus: &[N]) -> usize {
        let mut size = 1; // STAP-A NAL header
        let mut run = 0;
        for nal in nalus {
            let len = nal.as_ref().len();
            size += 2 + len;
            // The unit size field is 16 bits.
            if size > self.max_payload_size || len > usize::from(u16::MAX) {
                break;
            }
            run += 1;
        }
        run
    }

    fn fu_a(&self, nal: &[u8], out: &mut Vec<Bytes>) {
        let header = nal[0];
        let indicator = (header & 0xe0) | NAL_FU_A;
        let data = &nal[1..];
        let chunk = self.max_payload_size - 2;
        let count = data.len().div_ceil(chunk);
        for (n, part) in data.chunks(chunk).enumerate() {
            let mut fu_header = header & 0x1f;
            if n == 0 {
                fu_header |= 0x80;
            }
            if n + 1 == count {
                fu_header |= 0x40;
            }
            let mut payload = BytesMut::with_capacity(2 + part.len());
            payload.put_u8(indicator);
            payload.put_u8(fu_header);
            payload.put_slice(part);
            out.push(payload.freeze());
        }
    }
}

/// One STAP-A packet; F is the OR and NRI the maximum of the units' (RFC 6184 §5.7).
fn stap_a<N: AsRef<[u8]>>(nalus: &[N]) -> Bytes {
    let forbidden = nalus.iter().fold(0, |f, n| f | (n.as_ref()[0] & 0x80));
    let nri = nalus
        .iter()
        .map(|n| n.as_ref()[0] & 0x60)
        .max()
        .unwrap_or(0);
    let size = 1 + nalus.iter().map(|n| 2 + n.as_ref().len()).sum::<usize>();
    let mut payload = BytesMut::with_capacity(size);
    payload.put_u8(forbidden | nri | NAL_STAP_A);
    for nal in nalus {
        let nal = nal.as_ref();
        // `aggregation_run` only admits units up to 65535 bytes.
        payload.put_u16(nal.len() as u16);
        payload.put_slice(nal);
    }
    payload.freeze()
}
