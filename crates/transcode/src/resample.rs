//! A rational-ratio windowed-sinc resampler (polyphase), one channel.
//!
//! The ratio `out/in` is reduced to `L/M`; output sample `n` sits at input
//! time `n·M/L` and is a dot product of the input around that time with one
//! of `L` precomputed filter phases. The kernel is a sinc cut off at 0.95 of
//! the lower Nyquist frequency, Blackman-windowed over 16 zero crossings on
//! each side (≈ 32 input taps when upsampling, more when downsampling), and
//! every phase is normalised to unit DC gain.
//!
//! The filter is centred (zero phase): output sample `n` is aligned with
//! input time `n·M/L` exactly, so timestamps need no correction; the price is
//! a latency of 16 input samples, released by [`Resampler::flush`].

/// Zero crossings of the sinc on each side of the centre.
const HALF_ZEROS: f64 = 16.0;
/// Passband edge as a fraction of the lower Nyquist frequency.
const ROLLOFF: f64 = 0.95;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Converts one channel from `in_rate` to `out_rate`.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Interpolation factor.
    l: u64,
    /// Decimation factor.
    m: u64,
    /// Input samples each side of the centre.
    half: usize,
    /// `l` phases × `2·half` taps; tap `j` of phase `p` weighs input
    /// `i - half + 1 + j` for output time `i + p/l`.
    table: Vec<f32>,
    /// Input samples not yet fully used; `buf[0]` is input index `base`.
    buf: Vec<f32>,
    base: i64,
    /// The next output index.
    next_out: u64,
    /// Input samples received.
    received: u64,
}

impl Resampler {
    /// A resampler between two positive rates; `None` if either is 0 or the
    /// reduced interpolation factor is over 4096 (an unusual rate pair whose
    /// filter table would be large).
    pub fn new(in_rate: u32, out_rate: u32) -> Option<Self> {
        if in_rate == 0 || out_rate == 0 {
            return None;
        }
        let g = gcd(u64::from(in_rate), u64::from(out_rate));
        let (l, m) = (u64::from(out_rate) / g, u64::from(in_rate) / g);
        if l > 4096 {
            return None;
        }
        // Cut-off relative to the input Nyquist frequency.
        let fc = ROLLOFF * (l as f64 / m as f64).min(1.0);
        let half = (HALF_ZEROS / fc).ceil() as usize;
        let taps = 2 * half;
        let mut table = Vec::with_capacity(l as usize * taps);
        for p in 0..l {
            let frac = p as f64 / l as f64;
            let start = table.len();
            for j in 0..taps {
                // Distance from the output time to input sample j.
                let t = (j as f64 - (half as f64 - 1.0)) - frac;
                let x = std::f64::consts::PI * fc * t;
                let sinc = if x.abs() < 1e-12 { 1.0 } else { x.sin() / x };
                // Blackman window over [-half, half].
                let w = 0.5 + t / (2.0 * half as f64);
                let window = if (0.0..=1.0).contains(&w) {
                    let a = 2.0 * std::f64::consts::PI * w;
                    0.42 - 0.5 * a.cos() + 0.08 * (2.0 * a).cos()
                } else {
                    0.0
                };
                table.push((sinc * window) as f32);
            }
            let sum: f32 = table[start..].iter().sum();
            if sum.abs() > f32::EPSILON {
                for c in &mut table[start..] {
                    *c /= sum;
                }
            }
        }
        Some(Self {
            l,
            m,
            half,
            table,
            // Silence before the first sample, so the first outputs exist.
            buf: vec![0.0; half],
            base: -(half as i64),
            next_out: 0,
            received: 0,
        })
    }

    /// Output samples for every input sample: `out_rate / in_rate`.
    pub fn ratio(&self) -> f64 {
        self.l as f64 / self.m as f64
    }

    /// Appends input and returns every output sample that is now complete.
    pub fn process(&mut self, input: &[f32]) -> Vec<f32> {
        self.buf.extend_from_slice(input);
        self.received += input.len() as u64;
        self.drain(None)
    }

    /// Returns the remaining output: the input's last samples, with silence
    /// after them, up to `ceil(received · L / M)` outputs in total.
    pub fn flush(&mut self) -> Vec<f32> {
        let total = (self.received * self.l).div_ceil(self.m);
        self.buf.extend(std::iter::repeat_n(0.0, 2 * self.half + 1));
        self.drain(Some(total))
    }

    fn drain(&mut self, limit: Option<u64>) -> Vec<f32> {
        let taps = 2 * self.half;
        let end = self.base + self.buf.len() as i64;
        let mut out = Vec::new();
        loop {
            if limit.is_some_and(|l| self.next_out >= l) {
                break;
            }
            let pos = self.next_out * self.m;
            let i = (pos / self.l) as i64;
            let p = (pos % self.l) as usize;
            // Taps cover inputs i - half + 1 ..= i + half.
            if i + self.half as i64 >= end {
                break;
            }
            let first = (i - self.half as i64 + 1 - self.base) as usize;
            let x = &self.buf[first..first + taps];
            let h = &self.table[p * taps..(p + 1) * taps];
            out.push(x.iter().zip(h).map(|(a, b)| a * b).sum());
            self.next_out += 1;
        }
        // Drop the inputs no later output needs.
        let next_i = ((self.next_out * self.m) / self.l) as i64;
        let keep_from = next_i - self.half as i64 + 1;
        let drop = (keep_from - self.base).clamp(0, self.buf.len() as i64) as usize;
        self.buf.drain(..drop);
        self.base += drop as i64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    /// Resamples in uneven pieces and checks length, and that a tone stays
    /// at its frequency and amplitude with little error.
    fn check(in_rate: u32, out_rate: u32, freq: f64) {
        let input = sine(freq, in_rate, in_rate as usize / 2);
        let mut r = Resampler::new(in_rate, out_rate).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(333) {
            out.extend(r.process(piece));
        }
        out.extend(r.flush());
        let expected_len = (input.len() as u64 * u64::from(out_rate)).div_ceil(u64::from(in_rate));
        assert_eq!(out.len() as u64, expected_len, "{in_rate} -> {out_rate}");
        let want = sine(freq, out_rate, out.len());
        // Skip the edges, where the input starts and ends abruptly.
        let margin = out_rate as usize / 100;
        let err: f64 = out[margin..out.len() - margin]
            .iter()
            .zip(&want[margin..])
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / (out.len() - 2 * margin) as f64;
        assert!(
            err.sqrt() < 0.01,
            "{in_rate} -> {out_rate}: rms error {}",
            err.sqrt()
        );
    }

    #[test]
    fn common_rates_to_48k() {
        for rate in [
            8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 88_200, 96_000,
        ] {
            check(rate, 48_000, 440.0);
        }
        check(44_100, 48_000, 15_000.0);
        check(48_000, 48_000, 1000.0);
    }

    #[test]
    fn downsampling_removes_what_does_not_fit() {
        // 30 kHz at 96 kHz cannot exist at 48 kHz: it must be filtered out.
        let input = sine(30_000.0, 96_000, 48_000);
        let mut r = Resampler::new(96_000, 48_000).unwrap();
        let mut out = r.process(&input);
        out.extend(r.flush());
        let rms = (out[1000..out.len() - 1000]
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            / (out.len() - 2000) as f64)
            .sqrt();
        assert!(rms < 0.01, "alias rms {rms}");
    }

    proptest::proptest! {
        /// Whatever the piece sizes, the output has `ceil(n · out / in)`
        /// samples and matches one-shot processing exactly.
        #[test]
        fn length_and_chunking_invariance(
            rate in proptest::sample::select(vec![8_000u32, 11_025, 22_050, 44_100, 48_000, 96_000]),
            input in proptest::collection::vec(-1.0f32..1.0, 0..3000),
            pieces in proptest::collection::vec(1usize..500, 1..10),
        ) {
            let mut whole = Resampler::new(rate, 48_000).unwrap();
            let mut expected = whole.process(&input);
            expected.extend(whole.flush());
            let mut r = Resampler::new(rate, 48_000).unwrap();
            let mut got = Vec::new();
            let mut pos = 0;
            for size in pieces.iter().cycle() {
                if pos >= input.len() {
                    break;
                }
                let end = (pos + size).min(input.len());
                got.extend(r.process(&input[pos..end]));
                pos = end;
            }
            got.extend(r.flush());
            let want_len = (input.len() as u64 * 48_000).div_ceil(u64::from(rate));
            proptest::prop_assert_eq!(got.len() as u64, want_len);
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn bad_rates() {
        assert!(Resampler::new(0, 48_000).is_none());
        assert!(Resampler::new(48_000, 0).is_none());
        assert!(Resampler::new(44_099, 48_000).is_none());
        assert!((Resampler::new(44_100, 48_000).unwrap().ratio() - 48.0 / 44.1).abs() < 1e-9);
    }
}
