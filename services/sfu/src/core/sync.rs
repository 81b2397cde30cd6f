//! Lip sync: the instant each frame was captured, on one clock for all of a publisher's
//! tracks. Subscribers' sender reports map RTP time to it (RFC 3550 §6.4.1), and
//! browsers line a stream's audio up with its video by those reports. The arrival time
//! would do only if audio and video took equally long to encode and send; they don't.

use std::time::{Duration, Instant, UNIX_EPOCH};
use str0m::media::MediaTime;
use str0m::rtp::rtcp::SenderInfo;

/// Maps a source's clock (µs) to this node's instants: the same offset for every track
/// of the source, which is all that sync needs. The offset is the smallest seen between
/// arrival and source time, so no capture lands after its frame's arrival (str0m's
/// sender reports need wall clocks in the past); a track that arrives with less delay
/// than the anchor's moves the anchor back for all tracks.
#[derive(Debug, Default, Clone)]
pub struct SourceClock {
    anchor: Option<(Instant, i128)>,
}

impl SourceClock {
    /// The local instant of source time `source_us`, which arrived at `arrival`.
    pub fn instant(&mut self, arrival: Instant, source_us: i128) -> Instant {
        let (at, base) = *self.anchor.get_or_insert((arrival, source_us));
        let mapped = shift(at, source_us - base);
        if mapped > arrival {
            let back = mapped - arrival;
            self.anchor = Some((at.checked_sub(back).unwrap_or(at), base));
            return arrival;
        }
        mapped
    }
}

fn shift(at: Instant, us: i128) -> Instant {
    let step = Duration::from_micros(us.unsigned_abs().min(u128::from(u64::MAX)) as u64);
    if us >= 0 {
        at + step
    } else {
        at.checked_sub(step).unwrap_or(at)
    }
}

/// A WebRTC frame's capture time on the publisher's NTP clock (µs since the epoch), from
/// the track's last sender report; `None` before the first report.
pub fn sender_clock_us(time: MediaTime, report: Option<&SenderInfo>) -> Option<i128> {
    let sr = report?;
    let ntp_us = sr.ntp_time.duration_since(UNIX_EPOCH).ok()?.as_micros() as i128;
    let hz = i128::from(time.frequency().get());
    // 32-bit RTP arithmetic: the report's time may be on either side of the frame's.
    let ticks = (time.numer() as u32).wrapping_sub(sr.rtp_time.numer() as u32) as i32;
    Some(ntp_us + i128::from(ticks) * 1_000_000 / hz)
}

/// Media time as µs: the common clock of a local source's tracks (RTMP times audio and
/// video from one millisecond clock).
pub fn media_us(time: u64, clock_rate: u32) -> i128 {
    i128::from(time) * 1_000_000 / i128::from(clock_rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use str0m::media::Frequency;
    use str0m::rtp::Ssrc;

    fn sr(ntp_s: u64, rtp: u64, hz: Frequency) -> SenderInfo {
        SenderInfo {
            ssrc: Ssrc::from(1),
            ntp_time: SystemTime::UNIX_EPOCH + Duration::from_secs(ntp_s),
            rtp_time: MediaTime::new(rtp, hz),
            sender_packet_count: 0,
            sender_octet_count: 0,
        }
    }

    #[test]
    fn tracks_with_unrelated_rtp_clocks_meet_on_the_sender_clock() {
        // Audio and video captured at the same instant (t = 100.5 s on the sender's
        // clock), their RTP times starting anywhere.
        let v = sr(100, 7_000_000, Frequency::NINETY_KHZ);
        let a = sr(100, 123, Frequency::FORTY_EIGHT_KHZ);
        let tv = sender_clock_us(MediaTime::new(7_045_000, Frequency::NINETY_KHZ), Some(&v));
        let ta = sender_clock_us(
            MediaTime::new(123 + 24_000, Frequency::FORTY_EIGHT_KHZ),
            Some(&a),
        );
        assert_eq!(tv, Some(100_500_000));
        assert_eq!(ta, tv);
        // A frame from before the report, and across the 32-bit wrap.
        let w = sr(100, u64::from(u32::MAX) - 899, Frequency::NINETY_KHZ);
        let after_wrap = MediaTime::new(u64::from(u32::MAX) + 1 + 8_100, Frequency::NINETY_KHZ);
        assert_eq!(sender_clock_us(after_wrap, Some(&w)), Some(100_100_000));
        let before = MediaTime::new(7_000_000 - 9_000, Frequency::NINETY_KHZ);
        assert_eq!(sender_clock_us(before, Some(&v)), Some(99_900_000));
        assert_eq!(sender_clock_us(before, None), None);
    }

    #[test]
    fn one_anchor_keeps_the_offsets_between_tracks() {
        let mut c = SourceClock::default();
        let t0 = Instant::now() + Duration::from_secs(10);
        let ms = Duration::from_millis;
        // Video captured at source 1.000 s arrives first, 60 ms after its capture.
        assert_eq!(c.instant(t0, 1_000_000), t0);
        // Later frames keep the source's spacing, whenever they arrive.
        assert_eq!(c.instant(t0 + ms(50), 1_030_000), t0 + ms(30));
        // Audio captured at 1.010 s arrives at once (t0 - 50 ms): the anchor moves 60 ms
        // back, and everything after is on the audio's (earliest) clock.
        assert_eq!(c.instant(t0 - ms(50), 1_010_000), t0 - ms(50));
        assert_eq!(c.instant(t0 + ms(100), 1_000_000), t0 - ms(60));
        assert_eq!(c.instant(t0 + ms(100), 1_040_000), t0 - ms(20));
        assert_eq!(media_us(90_000, 90_000), 1_000_000);
        assert_eq!(media_us(48_000, 48_000), 1_000_000);
    }
}
