//! Live progress of a run: the counters a [`Swarm`](crate::Swarm) publishes twice a
//! second, their sum over rooms, and the one-line summary `skylark loadtest` prints.
//!
//! [`ProgressLine`] does no I/O: it is given samples and the time, and returns the text
//! to write, so the caller owns stderr and tests own the clock.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::peer::CounterSnapshot;

/// Progress samples averaged for the live loss estimate (0.5 s each: one GOP of 2 s).
const LOSS_WINDOW: usize = 4;
/// Without a terminal, a line is printed at most this often (samples come every 0.5 s).
const PRINT_INTERVAL: Duration = Duration::from_millis(950);

/// Live state of a run, for a progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Viewers started.
    pub requested: u64,
    /// Viewers in signaling or ICE/DTLS.
    pub joining: u64,
    /// Viewers connected now.
    pub connected: u64,
    /// Connected viewers that received a keyframe.
    pub playing: u64,
    /// Viewers that failed.
    pub failed: u64,
    /// Media received by all viewers over the last interval, kbit/s.
    pub kbps: f64,
}

impl Progress {
    pub(crate) fn from_counters(c: &CounterSnapshot, elapsed: Duration, kbps: f64) -> Self {
        Progress {
            elapsed_s: elapsed.as_secs_f64(),
            requested: c.viewers_requested,
            joining: c.viewers_joining(),
            connected: c.viewers_connected,
            playing: c.viewers_playing,
            failed: c.viewers_failed,
            kbps,
        }
    }

    /// The progress of several rooms' swarms together: counts and rates add up, the
    /// elapsed time is the longest.
    ///
    /// ```
    /// use skylark_loadgen::progress::Progress;
    /// let a = Progress { elapsed_s: 2.0, playing: 3, kbps: 100.0, ..Default::default() };
    /// let b = Progress { elapsed_s: 1.5, playing: 1, kbps: 50.0, ..Default::default() };
    /// let sum = Progress::sum([a, b]);
    /// assert_eq!((sum.elapsed_s, sum.playing, sum.kbps), (2.0, 4, 150.0));
    /// ```
    pub fn sum(rooms: impl IntoIterator<Item = Progress>) -> Progress {
        let mut total = Progress::default();
        for p in rooms {
            total.elapsed_s = total.elapsed_s.max(p.elapsed_s);
            total.requested += p.requested;
            total.joining += p.joining;
            total.connected += p.connected;
            total.playing += p.playing;
            total.failed += p.failed;
            total.kbps += p.kbps;
        }
        total
    }
}

/// The live progress line: on a terminal one line rewritten in place at every sample,
/// elsewhere (a log, a pipe) one line per second.
///
/// ```
/// use std::time::Instant;
/// use skylark_loadgen::progress::{Progress, ProgressLine};
/// let mut line = ProgressLine::new(Some(602.4), false);
/// let p = Progress { elapsed_s: 1.0, requested: 2, connected: 2, playing: 2, kbps: 1204.8, ..Default::default() };
/// let text = line.update(&p, Instant::now()).unwrap();
/// assert!(text.starts_with("[   1.0s] viewers 2/2 connected, 2 playing"), "{text}");
/// assert!(text.ends_with("| loss≈– (ramping)\n"), "{text}");
/// ```
#[derive(Debug, Clone)]
pub struct ProgressLine {
    tty: bool,
    expected_kbps: Option<f64>,
    /// Recent (kbps, playing) samples for the loss estimate.
    window: VecDeque<(f64, u64)>,
    last_print: Option<Instant>,
}

impl ProgressLine {
    /// A line for a run whose viewers should each receive `expected_kbps` (`None`
    /// when the run has no publisher of its own); `tty` when it goes to a terminal.
    pub fn new(expected_kbps: Option<f64>, tty: bool) -> Self {
        ProgressLine {
            tty,
            expected_kbps,
            window: VecDeque::with_capacity(LOSS_WINDOW + 1),
            last_print: None,
        }
    }

    /// Adds one sample (the sum over rooms) taken at `now`, and returns the text to
    /// write when a line is due.
    pub fn update(&mut self, p: &Progress, now: Instant) -> Option<String> {
        self.window.push_back((p.kbps, p.playing));
        while self.window.len() > LOSS_WINDOW {
            self.window.pop_front();
        }
        let due = self.tty
            || self
                .last_print
                .is_none_or(|t| now.duration_since(t) >= PRINT_INTERVAL);
        if !due {
            return None;
        }
        self.last_print = Some(now);
        let line = self.format(p);
        Some(if self.tty {
            format!("\r{line}\x1b[K")
        } else {
            format!("{line}\n")
        })
    }

    /// The text that ends the progress output: a newline after a line rewritten in
    /// place, nothing otherwise.
    pub fn finish(&self) -> Option<&'static str> {
        self.tty.then_some("\n")
    }

    /// Received bitrate over what the playing viewers should get, over the last ~2 s:
    /// an estimate (the exact loss, from frame sequence numbers, is in the final
    /// report). `None` when not publishing, or while viewers join or leave (a viewer's
    /// first bytes and the playing count don't line up in one window).
    fn loss_estimate(&self) -> Option<f64> {
        let expected = self.expected_kbps?;
        let playing = self.window.front()?.1;
        let steady = self.window.len() == LOSS_WINDOW
            && playing > 0
            && self.window.iter().all(|w| w.1 == playing);
        if !steady {
            return None;
        }
        let kbps = self.window.iter().map(|w| w.0).sum::<f64>() / LOSS_WINDOW as f64;
        Some(((1.0 - kbps / (playing as f64 * expected)) * 100.0).clamp(0.0, 100.0))
    }

    fn format(&self, p: &Progress) -> String {
        if p.requested == 0 {
            let what = if self.expected_kbps.is_some() {
                "publisher connecting"
            } else {
                "starting viewers"
            };
            return format!("[{:>6.1}s] {what}", p.elapsed_s);
        }
        let mut s = format!(
            "[{:>6.1}s] viewers {}/{} connected, {} playing, {} joining, {} failed | {}",
            p.elapsed_s,
            p.connected,
            p.requested,
            p.playing,
            p.joining,
            p.failed,
            fmt_rate(p.kbps),
        );
        if p.playing > 0 {
            let _ = write!(s, ", {:.0} kbit/s per viewer", p.kbps / p.playing as f64);
        }
        match self.loss_estimate() {
            Some(l) => {
                let _ = write!(s, " | loss≈{l:.1}%");
            }
            None if self.expected_kbps.is_some() => s.push_str(" | loss≈– (ramping)"),
            None => {}
        }
        s
    }
}

fn fmt_rate(kbps: f64) -> String {
    if kbps >= 10_000.0 {
        format!("{:.1} Mbit/s", kbps / 1000.0)
    } else {
        format!("{kbps:.0} kbit/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_estimate_from_bitrate() {
        let mut line = ProgressLine::new(Some(601.2), false);
        for _ in 0..LOSS_WINDOW {
            line.window.push_back((10.0 * 601.2 * 0.9, 10));
        }
        let l = line.loss_estimate().unwrap();
        assert!((l - 10.0).abs() < 1e-6, "{l}");
        // A viewer joined inside the window: no estimate.
        line.window.push_back((10.0 * 601.2, 11));
        assert!(line.loss_estimate().is_none());
        assert!(ProgressLine::new(None, false).loss_estimate().is_none());
    }

    #[test]
    fn without_a_terminal_one_line_a_second() {
        let t0 = Instant::now();
        let mut line = ProgressLine::new(None, false);
        let p = Progress::default();
        let printed: Vec<bool> = (0..6u64)
            .map(|i| {
                let now = t0 + Duration::from_millis(500 * i);
                line.update(&p, now).is_some()
            })
            .collect();
        assert_eq!(printed, [true, false, true, false, true, false]);
        assert_eq!(
            line.update(&p, t0 + Duration::from_secs(9)).as_deref(),
            Some("[   0.0s] starting viewers\n")
        );
        assert_eq!(line.finish(), None);
    }

    #[test]
    fn on_a_terminal_every_sample_rewrites_the_line() {
        let t0 = Instant::now();
        let mut line = ProgressLine::new(Some(600.0), true);
        let p = Progress {
            elapsed_s: 3.0,
            requested: 4,
            joining: 1,
            connected: 3,
            playing: 2,
            failed: 0,
            kbps: 12_000.0,
        };
        let a = line.update(&p, t0).unwrap();
        let b = line.update(&p, t0).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            "\r[   3.0s] viewers 3/4 connected, 2 playing, 1 joining, 0 failed | 12.0 Mbit/s, \
             6000 kbit/s per viewer | loss≈– (ramping)\x1b[K"
        );
        assert_eq!(line.finish(), Some("\n"));
    }
}
