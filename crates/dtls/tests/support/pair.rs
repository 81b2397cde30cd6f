//! Two DTLS instances wired back to back in memory (tests and benches).

use std::time::{Duration, Instant};
use str0m::crypto::dtls::{DtlsInstance, DtlsOutput};

/// Delivers what `from` has to send to `to`, keeping the application data `from` read;
/// true if a datagram moved.
fn flight(from: &mut dyn DtlsInstance, to: &mut dyn DtlsInstance, read: &mut Vec<u8>) -> bool {
    let mut buf = vec![0; 2048];
    let mut packets = Vec::new();
    loop {
        match from.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => packets.push(p.to_vec()),
            DtlsOutput::ApplicationData(d) => read.extend_from_slice(d),
            DtlsOutput::Timeout(_) => break,
            _ => {}
        }
    }
    for p in &packets {
        let _ = to.handle_packet(p);
    }
    !packets.is_empty()
}

/// Moves datagrams both ways until quiet; returns the application data each read.
pub fn exchange(
    a: &mut dyn DtlsInstance,
    b: &mut dyn DtlsInstance,
    now: Instant,
) -> (Vec<u8>, Vec<u8>) {
    let (mut read_a, mut read_b) = (Vec::new(), Vec::new());
    for round in 0..50 {
        let t = now + Duration::from_millis(round);
        let _ = a.handle_timeout(t);
        let _ = b.handle_timeout(t);
        let mut moved = flight(a, b, &mut read_a);
        moved |= flight(b, a, &mut read_b);
        if !moved {
            break;
        }
    }
    (read_a, read_b)
}
