//! Wall time as an input. The shell reads the wall clock once, with the `Instant` it
//! read it at; the core adds the monotonic time since, as str0m does for its NTP times.
//! A simulated `now` moves the wall clock with it.

use std::time::{Duration, Instant};

/// One reading of the wall clock (µs since the UNIX epoch) and the `Instant` it was
/// taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    at: Instant,
    unix_us: u64,
}

impl WallClock {
    /// The wall clock read `unix_us` at `at`.
    pub fn new(at: Instant, unix_us: u64) -> Self {
        Self { at, unix_us }
    }

    /// The wall time at `now`, µs since the UNIX epoch.
    pub fn unix_us(&self, now: Instant) -> u64 {
        if now >= self.at {
            self.unix_us.saturating_add(micros(now - self.at))
        } else {
            self.unix_us.saturating_sub(micros(self.at - now))
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_follows_the_instant_both_ways() {
        let at = Instant::now() + Duration::from_secs(10);
        let clock = WallClock::new(at, 1_000_000_000);
        assert_eq!(clock.unix_us(at), 1_000_000_000);
        assert_eq!(
            clock.unix_us(at + Duration::from_millis(1500)),
            1_001_500_000
        );
        assert_eq!(clock.unix_us(at - Duration::from_micros(7)), 999_999_993);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let at = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            WallClock::new(at, 5).unix_us(at - Duration::from_secs(1)),
            0
        );
        assert_eq!(
            WallClock::new(at, u64::MAX).unix_us(at + Duration::from_secs(1)),
            u64::MAX
        );
    }
}
