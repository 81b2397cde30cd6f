//! Synthetic Opus audio: one constant, valid packet every 20 ms.

use std::time::Duration;

/// Duration of one Opus packet.
pub const OPUS_FRAME: Duration = Duration::from_millis(20);

/// RTP clock rate of Opus (always 48 kHz, RFC 7587).
pub const OPUS_CLOCK_RATE: u32 = 48_000;

/// A valid Opus packet: TOC `0xF8` (config 31 = CELT-only fullband 20 ms, mono, one
/// frame) and a two-byte frame that decoders play as silence.
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// One audio packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioPacket {
    /// Packet sequence number, from 0.
    pub seq: u64,
    /// RTP timestamp in 48 kHz ticks from the first packet.
    pub rtp_time: u64,
    /// The Opus packet.
    pub data: &'static [u8],
}

/// Endless Opus packets, one per [`OPUS_FRAME`].
///
/// ```
/// use skylark_loadgen::source::OpusSource;
/// let mut audio = OpusSource::default();
/// assert_eq!(audio.next_packet().rtp_time, 0);
/// assert_eq!(audio.next_packet().rtp_time, 960);
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpusSource {
    seq: u64,
}

impl OpusSource {
    /// Sequence number of the next packet.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// When packet `seq` is due, counted from the first packet.
    pub fn packet_offset(seq: u64) -> Duration {
        OPUS_FRAME.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX))
    }

    /// Produces the next packet.
    pub fn next_packet(&mut self) -> AudioPacket {
        let p = AudioPacket {
            seq: self.seq,
            rtp_time: self.seq * u64::from(OPUS_CLOCK_RATE / 50),
            data: &OPUS_SILENCE,
        };
        self.seq += 1;
        p
    }
}
