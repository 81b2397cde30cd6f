//! Test ports and names that one run never hands out twice, in this process or in any
//! other test process on the machine (nextest runs every test in a process of its own).
//!
//! Binding port 0 and releasing it lets the kernel hand the same port to the next port-0
//! bind, so two listeners of one `skylark` could get one port. Instead a port comes from
//! below the kernel's ephemeral range, where no port-0 bind or outgoing connection lands,
//! and is claimed by binding a Unix socket with an abstract name made from it. Only one
//! socket on the machine can hold a name, the claim lasts until this process exits (the
//! kernel drops it even on a crash), and it leaves no file behind.

// `tests/binary.rs` includes this file alone and uses a part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::ops::Range;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Claims of this process, kept open so they last as long as it does.
static CLAIMS: Mutex<Vec<UnixListener>> = Mutex::new(Vec::new());

/// A port no test process on this machine has been handed, free for TCP and UDP on every
/// address; it stays this process's until it exits.
pub fn free_port() -> u16 {
    let ports = test_ports();
    let span = u32::from(ports.end - ports.start);
    // Processes start their search at different places so they rarely contend.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for i in 0..span {
        let port = ports.start + ((start + i) % span) as u16;
        if let Some(claim) = claim(&format!("port-{port}")) {
            // A daemon that binds a fixed port without claiming it: leave that port alone.
            if bindable(port) {
                CLAIMS.lock().unwrap().push(claim);
                return port;
            }
        }
    }
    panic!("every test port in {ports:?} is claimed or in use");
}

/// A number in `range` no other live test process holds; this process's until it exits.
/// For per-test resources with small name spaces, like network interface numbers.
pub fn claim_slot(kind: &str, range: Range<u32>) -> u32 {
    let span = range.end - range.start;
    let start = std::process::id() % span;
    for i in 0..span {
        let slot = range.start + (start + i) % span;
        if let Some(claim) = claim(&format!("{kind}-{slot}")) {
            CLAIMS.lock().unwrap().push(claim);
            return slot;
        }
    }
    panic!("every {kind} slot in {range:?} is claimed");
}

/// Holds `name` machine-wide until the returned guard drops, waiting up to `patience` for
/// another test process to let go of it: for a test that must use fixed ports (the
/// defaults a user gets), so two such tests never overlap.
pub fn hold(name: &str, patience: Duration) -> UnixListener {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(held) = claim(name) {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still held by another test process after {patience:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A name part (`[0-9_]`) that no other call, here or in another process, returns: the
/// start time tells processes that reused a pid apart.
pub fn unique_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static STARTED_MS: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let started = STARTED_MS.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{started}_{}_{n}", std::process::id())
}

/// Ports below the kernel's ephemeral range (Linux: 32768–60999 by default) and above the
/// ones daemons usually take.
fn test_ports() -> Range<u16> {
    const FIRST: u16 = 20000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let end = ephemeral_start.min(32000);
    assert!(
        end >= FIRST + 1000,
        "the kernel's ephemeral ports start at {ephemeral_start}: test ports need \
         {FIRST}..{} outside net.ipv4.ip_local_port_range",
        FIRST + 1000
    );
    FIRST..end
}

/// The machine-wide name `name`, if no live process holds it.
fn claim(name: &str) -> Option<UnixListener> {
    let addr = SocketAddr::from_abstract_name(format!("skylark-test-claim/{name}")).unwrap();
    match UnixListener::bind_addr(&addr) {
        Ok(held) => Some(held),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
        Err(e) => panic!("claiming {name}: {e}"),
    }
}

/// Nothing listens on `port`, TCP or UDP, on any address.
pub fn bindable(port: u16) -> bool {
    let any = (Ipv4Addr::UNSPECIFIED, port);
    TcpListener::bind(any).is_ok() && UdpSocket::bind(any).is_ok()
}
