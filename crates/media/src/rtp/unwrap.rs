//! Extending wrapping RTP counters (16-bit sequence numbers, 32-bit timestamps)
//! to 64 bits.

macro_rules! unwrapper {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $signed:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            /// The last value, unwrapped. Signed so that a packet older than the
            /// first one seen keeps an exact position instead of wrapping the
            /// state; only the returned value is clamped at zero.
            last: Option<i64>,
        }

        impl $name {
            /// A fresh unwrapper; the first value it sees keeps its raw value.
            pub fn new() -> Self {
                Self::default()
            }

            /// Extends `value` to 64 bits.
            ///
            /// Each value is placed at the position nearest to the previous one, so
            /// wrap-arounds and reordering are handled as long as consecutive values
            /// are less than half the counter range apart. A value that would land
            /// before zero (older than the first value, across a wrap) returns 0.
            pub fn unwrap(&mut self, value: $raw) -> u64 {
                let next = match self.last {
                    None => i64::from(value),
                    Some(last) => {
                        // Truncating `last` keeps its low bits: the raw value it had.
                        let delta = value.wrapping_sub(last as $raw) as $signed;
                        last + i64::from(delta)
                    }
                };
                self.last = Some(next);
                u64::try_from(next).unwrap_or(0)
            }

            /// What `value` would unwrap to, without updating the state.
            pub fn peek(&self, value: $raw) -> u64 {
                self.clone().unwrap(value)
            }

            /// The last unwrapped value (clamped at zero), if any.
            pub fn last(&self) -> Option<u64> {
                self.last.map(|v| u64::try_from(v).unwrap_or(0))
            }
        }
    };
}

unwrapper!(
    /// Unwraps 16-bit RTP sequence numbers into a 64-bit counter.
    ///
    /// ```
    /// use skylark_media::rtp::SeqUnwrapper;
    ///
    /// let mut u = SeqUnwrapper::new();
    /// assert_eq!(u.unwrap(65534), 65534);
    /// assert_eq!(u.unwrap(1), 65537); // wrapped forward
    /// assert_eq!(u.unwrap(65535), 65535); // a late packet from before the wrap
    /// assert_eq!(u.unwrap(2), 65538);
    /// ```
    SeqUnwrapper,
    u16,
    i16
);

unwrapper!(
    /// Unwraps 32-bit RTP timestamps into a 64-bit media clock.
    ///
    /// ```
    /// use skylark_media::rtp::TsUnwrapper;
    ///
    /// let mut u = TsUnwrapper::new();
    /// assert_eq!(u.unwrap(u32::MAX - 1499), u64::from(u32::MAX) - 1499);
    /// assert_eq!(u.unwrap(1500), (1 << 32) + 1500); // 3000 ticks later
    /// ```
    TsUnwrapper,
    u32,
    i32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_wraps_forward_at_65535() {
        let mut u = SeqUnwrapper::new();
        let raw: Vec<u16> = (65530..=65535).chain(0..5).collect();
        let got: Vec<u64> = raw.iter().map(|&s| u.unwrap(s)).collect();
        let want: Vec<u64> = (65530..65541).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn seq_tolerates_reordering_across_the_wrap() {
        let mut u = SeqUnwrapper::new();
        assert_eq!(u.unwrap(65533), 65533);
        assert_eq!(u.unwrap(0), 65536);
        assert_eq!(u.unwrap(65535), 65535);
        assert_eq!(u.unwrap(65534), 65534);
        assert_eq!(u.unwrap(1), 65537);
    }

    #[test]
    fn seq_before_the_first_value_clamps_to_zero_but_keeps_position() {
        let mut u = SeqUnwrapper::new();
        assert_eq!(u.unwrap(2), 2);
        assert_eq!(u.unwrap(65535), 0); // really -1
        assert_eq!(u.unwrap(3), 3);
        assert_eq!(u.last(), Some(3));
    }

    #[test]
    fn ts_wraps_at_2_pow_32() {
        let mut u = TsUnwrapper::new();
        let start = u32::MAX - 2999;
        assert_eq!(u.unwrap(start), u64::from(start));
        assert_eq!(u.unwrap(start.wrapping_add(3000)), 1 << 32);
        assert_eq!(u.unwrap(start.wrapping_add(6000)), (1 << 32) + 3000);
        // A late frame from before the wrap.
        assert_eq!(
            u.unwrap(start.wrapping_add(1500)),
            u64::from(u32::MAX) + 1 - 1500
        );
    }

    #[test]
    fn ts_second_wrap() {
        let mut u = TsUnwrapper::new();
        let mut expected = 0u64;
        u.unwrap(0);
        for _ in 0..10 {
            expected += 1 << 30;
            assert_eq!(u.unwrap(expected as u32), expected);
        }
        assert!(expected > 2 << 32);
    }

    #[test]
    fn peek_does_not_move_the_state() {
        let mut u = SeqUnwrapper::new();
        u.unwrap(65535);
        assert_eq!(u.peek(0), 65536);
        assert_eq!(u.last(), Some(65535));
    }
}
