//! Packetizing once per frame: a room's frame becomes RTP payloads a single time, and
//! every subscriber sends those same payloads (reference counted, so str0m's per-viewer
//! resend cache holds a pointer, not a copy) under its own SSRC, sequence numbers and
//! timestamps. Viewers cost a header rewrite, SRTP and a send each, not a packetizer run.

use super::codec::FrameCodec;
use skylark_media::h264::{annexb_nalus, H264Packetizer};
use std::sync::Arc;

/// Largest RTP payload sent: str0m's datagram target (1150) less the RTP header, the
/// header extensions a subscriber stream carries and the SRTP tag, so that resends
/// (two bytes more, RFC 4588) still fit a 1200-byte path.
pub const MAX_PAYLOAD: usize = 1100;

/// A frame's RTP payloads; the last of a video frame carries the marker bit.
pub(super) type Payloads = Arc<[Arc<[u8]>]>;

/// The payloads of one frame, or `None` for what WebRTC viewers don't get (AAC) or an
/// access unit that can't be packetized (an empty or reserved NAL unit type).
pub(super) fn packetize(codec: FrameCodec, data: &[u8]) -> Option<Payloads> {
    match codec {
        FrameCodec::H264 => {
            let nalus: Vec<&[u8]> = annexb_nalus(data).collect();
            let packetizer = H264Packetizer::new(MAX_PAYLOAD).ok()?;
            let payloads = packetizer.packetize(&nalus).ok()?;
            if payloads.is_empty() {
                return None;
            }
            Some(payloads.iter().map(|p| Arc::from(&p[..])).collect())
        }
        FrameCodec::Opus => Some(Arc::from([Arc::from(data)])),
        FrameCodec::Aac => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_access_unit_splits_within_the_payload_limit() {
        let mut au = vec![
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65,
        ];
        au.extend(std::iter::repeat_n(7u8, 3000));
        let p = packetize(FrameCodec::H264, &au).expect("payloads");
        // STAP-A of SPS+PPS, then the IDR slice in FU-A fragments.
        assert_eq!(p[0][0] & 0x1f, 24);
        assert!(p.len() >= 4);
        assert!(p.iter().all(|x| x.len() <= MAX_PAYLOAD));
    }

    #[test]
    fn opus_is_one_payload_and_aac_none() {
        let p = packetize(FrameCodec::Opus, &[1, 2, 3]).expect("payloads");
        assert_eq!(p.len(), 1);
        assert_eq!(&p[0][..], &[1, 2, 3]);
        assert!(packetize(FrameCodec::Aac, &[1]).is_none());
        assert!(packetize(FrameCodec::H264, &[]).is_none());
    }
}
