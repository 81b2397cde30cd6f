//! What a WebRTC viewer joining mid-GOP gets when the room's publisher can't be asked
//! for a keyframe (RTMP has no way to; an edge's ask travels up to such a publisher).
//! With any mode but [`JoinFrames::Wait`] the room keeps each video track's latest GOP
//! ([`skylark_media::gop`]) and a joiner gets it, or part of it, before the live frames.
//! WebRTC publishers are asked (PLI) as before: they answer within a round trip.

use skylark_media::gop::{GopCache, GopLimits};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a viewer joining between two keyframes of a publisher that can't be asked for
/// one gets first. Measured in docs/benchmarks.md ("Join time per source and viewer"):
/// with the GOP at its own times Chromium showed the cached keyframe ~0.3–0.4 s after the
/// WHEP POST, then dropped the stale frames and played at live latency (~25 ms later in
/// the first second) — so that is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinFrames {
    /// Nothing: video starts at the encoder's next keyframe (up to a GOP away).
    Wait,
    /// The cached keyframe at its own time, then live frames. Those reference pictures
    /// the viewer never got: a wrong picture until the next keyframe.
    Keyframe,
    /// The whole cached GOP at once, at its own times: the player decodes it, shows the
    /// keyframe and skips the frames already late, so it is at live latency at once.
    #[default]
    Gop,
    /// The whole cached GOP at once, stamped one tick apart and ending at the newest
    /// frame's own time. Measured worse than [`JoinFrames::Gop`] (the squeezed times
    /// left Chromium 0.1–0.4 s further behind a few seconds on).
    GopFast,
}

impl std::str::FromStr for JoinFrames {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(Self::Wait),
            "keyframe" => Ok(Self::Keyframe),
            "gop" => Ok(Self::Gop),
            "gop-fast" => Ok(Self::GopFast),
            _ => Err(format!("{s:?}: one of wait, keyframe, gop, gop-fast")),
        }
    }
}

/// One cached video frame (the data is shared with the frame routed live).
#[derive(Debug, Clone)]
pub(super) struct CachedFrame {
    pub time: u64,
    pub capture: Instant,
    pub data: Arc<[u8]>,
}

/// A video track's latest GOP.
pub(super) type TrackGop = GopCache<CachedFrame>;

/// A joiner's burst is paced (`direct`) and kept for resends: held to about what the
/// RTX cache (512 packets) takes; a longer GOP is not cached and its joiners wait.
pub(super) fn gop_limits() -> GopLimits {
    GopLimits {
        max_items: 300,
        max_bytes: 1 << 20,
        max_span_ms: 10_000,
    }
}

/// The frames a joiner gets from `gop` (ending with the frame being routed), with the
/// times to send them at.
pub(super) fn burst(mode: JoinFrames, gop: &[CachedFrame]) -> Vec<(u64, &CachedFrame)> {
    let Some(last) = gop.last() else {
        return Vec::new();
    };
    match mode {
        JoinFrames::Wait => Vec::new(),
        JoinFrames::Keyframe if gop.len() > 1 => vec![(gop[0].time, &gop[0]), (last.time, last)],
        JoinFrames::Keyframe | JoinFrames::Gop => gop.iter().map(|f| (f.time, f)).collect(),
        JoinFrames::GopFast => {
            let n = gop.len() as u64;
            gop.iter()
                .zip(0..)
                .map(|(f, i)| (last.time.saturating_sub(n - 1 - i), f))
                .collect()
        }
    }
}

/// The capture instant of a squeezed frame: its send time's, so sender reports stay
/// consistent with the RTP times (1 tick of 90 kHz).
pub(super) fn squeezed_capture(last: &CachedFrame, time: u64) -> Instant {
    let ticks = last.time.saturating_sub(time);
    last.capture
        .checked_sub(Duration::from_micros(ticks * 1_000_000 / 90_000))
        .unwrap_or(last.capture)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gop(times: &[u64]) -> Vec<CachedFrame> {
        let t0 = Instant::now();
        times
            .iter()
            .map(|&time| CachedFrame {
                time,
                capture: t0 + Duration::from_micros(time * 1_000_000 / 90_000),
                data: Arc::from(&[][..]),
            })
            .collect()
    }

    fn times(mode: JoinFrames, g: &[CachedFrame]) -> Vec<u64> {
        burst(mode, g).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn each_mode_sends_what_it_says() {
        let g = gop(&[90_000, 93_000, 96_000, 99_000]);
        assert!(times(JoinFrames::Wait, &g).is_empty());
        assert_eq!(times(JoinFrames::Keyframe, &g), [90_000, 99_000]);
        assert_eq!(times(JoinFrames::Gop, &g), [90_000, 93_000, 96_000, 99_000]);
        assert_eq!(
            times(JoinFrames::GopFast, &g),
            [98_997, 98_998, 98_999, 99_000]
        );
        // A keyframe alone is sent once.
        assert_eq!(times(JoinFrames::Keyframe, &g[..1]), [90_000]);
        assert_eq!(times(JoinFrames::GopFast, &g[..1]), [90_000]);
    }

    #[test]
    fn squeezed_frames_are_captured_just_before_the_newest() {
        let g = gop(&[90_000, 99_000]);
        let c = squeezed_capture(&g[1], 98_910);
        assert_eq!(g[1].capture - c, Duration::from_millis(1));
    }

    #[test]
    fn modes_parse() {
        for (s, m) in [
            ("wait", JoinFrames::Wait),
            ("keyframe", JoinFrames::Keyframe),
            ("gop", JoinFrames::Gop),
            ("gop-fast", JoinFrames::GopFast),
        ] {
            assert_eq!(s.parse::<JoinFrames>(), Ok(m));
        }
        assert!("all".parse::<JoinFrames>().is_err());
    }
}
