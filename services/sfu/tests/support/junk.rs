//! Deterministic junk datagrams, the shapes a flood at the SFU's UDP port has: shared by
//! the SFU core's simulation (`core_sim.rs`) and the workspace's flood test
//! (`tests/sfu_flood.rs`), which include this file by path.

/// A small deterministic generator for junk (tests must repeat exactly).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A well-formed STUN Binding request with USERNAME `username` and a made-up
/// MESSAGE-INTEGRITY (no password known): shaped like a real ICE check.
pub fn stun_request(rng: &mut Lcg, username: &[u8]) -> Vec<u8> {
    let mut attrs = Vec::new();
    let mut attr = |kind: u16, value: &[u8]| {
        attrs.extend_from_slice(&kind.to_be_bytes());
        attrs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        attrs.extend_from_slice(value);
        attrs.resize(attrs.len().div_ceil(4) * 4, 0);
    };
    attr(0x0006, username);
    attr(0x0024, &[0x6e, 0, 0x1e, 0xff]);
    attr(0x0008, &rng.bytes(20));
    let mut d = vec![0, 1];
    d.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    d.extend_from_slice(&rng.bytes(12));
    d.extend_from_slice(&attrs);
    d
}

/// Junk of every shape a flood has: random bytes of random length (0–1500), RTP- and
/// DTLS-looking headers, STUN with random usernames, truncated STUN.
pub fn junk(rng: &mut Lcg) -> Vec<u8> {
    let len = rng.next() as usize % 1501;
    let mut d = rng.bytes(len);
    match rng.next() % 6 {
        0 if !d.is_empty() => d[0] = 0x80 | (d[0] & 0x3f),
        1 if !d.is_empty() => d[0] = 22,
        2 => {
            let n = rng.next() as usize % 40;
            let user = format!("{}:{}", hex(&rng.bytes(n / 2 + 1)), hex(&rng.bytes(4)));
            d = stun_request(rng, user.as_bytes());
        }
        3 => {
            d = stun_request(rng, b"abcd:efgh");
            d.truncate(rng.next() as usize % d.len());
        }
        _ => {}
    }
    d
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
