//! The server side of the RTMP handshake (RTMP 1.0 §5.2), in its simple form:
//! no digest, which OBS, FFmpeg and librtmp accept.
//!
//! ```
//! use skylark_media::rtmp::handshake::{Handshake, HANDSHAKE_SIZE};
//!
//! let mut hs = Handshake::new(7);
//! let mut c0c1 = vec![3u8];
//! c0c1.extend((0..HANDSHAKE_SIZE).map(|i| i as u8));
//! assert_eq!(hs.feed(&c0c1)?, c0c1.len());
//! let s0s1s2 = hs.take_output();
//! assert_eq!(s0s1s2.len(), 1 + 2 * HANDSHAKE_SIZE);
//! assert_eq!(&s0s1s2[1 + HANDSHAKE_SIZE..], &c0c1[1..]); // S2 echoes C1
//!
//! let c2 = s0s1s2[1..1 + HANDSHAKE_SIZE].to_vec(); // C2 echoes S1
//! assert_eq!(hs.feed(&c2)?, HANDSHAKE_SIZE);
//! assert!(hs.is_done());
//! # Ok::<(), skylark_media::rtmp::RtmpError>(())
//! ```

use super::RtmpError;

/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// The only RTMP version in use (C0/S0).
pub const RTMP_VERSION: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for C0 and C1 (1 + 1536 bytes).
    C0C1,
    /// S0, S1 and S2 are sent; waiting for C2.
    C2,
    /// Complete.
    Done,
}

/// The server handshake as a state machine: feed it received bytes, send
/// what [`take_output`](Self::take_output) returns.
///
/// S0, S1 and S2 go out together as soon as C0 and C1 are in. S1 is a zero
/// time, zero version (which tells clients "no digest") and pseudo-random
/// bytes from the seed; S2 echoes C1. C2 is read but not checked: clients
/// that attempted the digest handshake send something other than an echo.
#[derive(Debug, Clone)]
pub struct Handshake {
    state: State,
    buf: Vec<u8>,
    out: Vec<u8>,
    seed: u64,
}

impl Handshake {
    /// A handshake whose S1 random bytes come from `seed` (they carry no
    /// security in the simple handshake; any value works).
    pub fn new(seed: u64) -> Self {
        Self {
            state: State::C0C1,
            buf: Vec::new(),
            out: Vec::new(),
            seed,
        }
    }

    /// Whether C2 has been received.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Consumes handshake bytes from `data`; returns how many it used. Bytes
    /// after C2 are left for the chunk stream (the count stops short of them).
    ///
    /// Fails if C0 is not version 3.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, RtmpError> {
        let mut used = 0;
        while used < data.len() && self.state != State::Done {
            used += self.feed_stage(&data[used..])?;
        }
        Ok(used)
    }

    /// Consumes bytes of the current stage (C0+C1, or C2).
    fn feed_stage(&mut self, data: &[u8]) -> Result<usize, RtmpError> {
        let need = match self.state {
            State::C0C1 => 1 + HANDSHAKE_SIZE,
            State::C2 => HANDSHAKE_SIZE,
            State::Done => return Ok(0),
        };
        if self.state == State::C0C1 && self.buf.is_empty() {
            if let Some(&version) = data.first() {
                if version != RTMP_VERSION {
                    return Err(RtmpError::HandshakeVersion(version));
                }
            }
        }
        let take = (need - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == need {
            match self.state {
                State::C0C1 => {
                    self.out.reserve(1 + 2 * HANDSHAKE_SIZE);
                    self.out.push(RTMP_VERSION);
                    // S1: time 0, zero 0, random.
                    self.out.extend_from_slice(&[0; 8]);
                    let mut x = self.seed | 1;
                    while self.out.len() < 1 + HANDSHAKE_SIZE {
                        // xorshift64*
                        x ^= x >> 12;
                        x ^= x << 25;
                        x ^= x >> 27;
                        let word = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes();
                        let room = 1 + HANDSHAKE_SIZE - self.out.len();
                        self.out.extend_from_slice(&word[..room.min(8)]);
                    }
                    // S2: C1 echoed.
                    self.out.extend_from_slice(&self.buf[1..]);
                    self.state = State::C2;
                }
                _ => self.state = State::Done,
            }
            self.buf.clear();
        }
        Ok(take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0c1() -> Vec<u8> {
        let mut v = vec![RTMP_VERSION];
        v.extend((0..HANDSHAKE_SIZE).map(|i| (i * 7) as u8));
        v
    }

    #[test]
    fn byte_at_a_time() {
        let mut hs = Handshake::new(1);
        let input = c0c1();
        for b in &input {
            assert_eq!(hs.feed(&[*b]).unwrap(), 1);
        }
        let out = hs.take_output();
        assert_eq!(out[0], RTMP_VERSION);
        assert_eq!(out[1..9], [0; 8]);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &input[1..]);
        assert!(!hs.is_done());
        for _ in 0..HANDSHAKE_SIZE {
            assert_eq!(hs.feed(&[0]).unwrap(), 1);
        }
        assert!(hs.is_done());
        assert!(hs.take_output().is_empty());
        assert_eq!(hs.feed(&[1, 2, 3]).unwrap(), 0);
    }

    #[test]
    fn pipelined_bytes_after_c2_are_left() {
        let mut hs = Handshake::new(1);
        let mut input = c0c1();
        input.extend(vec![0u8; HANDSHAKE_SIZE]);
        input.extend([0x03, 0xaa]); // the first chunk of `connect`
        let used = hs.feed(&input).unwrap();
        assert_eq!(used, input.len() - 2);
        assert!(hs.is_done());
        assert_eq!(hs.feed(&input[used..]).unwrap(), 0);
    }

    #[test]
    fn s1_depends_on_the_seed_only() {
        let run = |seed| {
            let mut hs = Handshake::new(seed);
            hs.feed(&c0c1()).unwrap();
            hs.take_output()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5)[9..1 + HANDSHAKE_SIZE], run(6)[9..1 + HANDSHAKE_SIZE]);
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut hs = Handshake::new(1);
        assert_eq!(hs.feed(&[6, 0, 0]), Err(RtmpError::HandshakeVersion(6)));
        let mut hs = Handshake::new(1);
        assert_eq!(
            hs.feed(b"GET / HTTP/1.1"),
            Err(RtmpError::HandshakeVersion(b'G'))
        );
    }
}
