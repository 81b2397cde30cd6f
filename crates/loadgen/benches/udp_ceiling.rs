//! The raw loopback UDP ceiling of one core: how many 1200-byte datagrams per second
//! plain `sendto` + `recvfrom` move, with no WebRTC at all. The fan-out benchmark
//! (docs/benchmarks.md) divides the SFU's forwarded packets/s by this figure.
//!
//! Not a criterion benchmark: it reports one rate per mode, measured over wall time.
//!
//! ```text
//! cargo bench -p skylark-loadgen --bench udp_ceiling -- loop 3     # send + drain, one thread
//! taskset -c 1 …/udp_ceiling-* recv 40000 5 & taskset -c 0 …/udp_ceiling-* send 127.0.0.1:40000 3
//! ```
//!
//! `loop` is the figure to compare with: one core both sends and receives, as on a
//! loopback benchmark the kernel's delivery work lands on the sending core anyway.
//!
//! `fan N` is the same with the datagrams spread round-robin over N receiving sockets,
//! as an SFU's are over its N viewers: the like-for-like yardstick for N viewers. On the
//! 255k-ceiling and the AMD EPYC VM types it measured the same as `loop` within noise up
//! to N = 600 (docs/benchmarks.md, "The ratio on a third VM", "A fifth VM type").
//!
//! ```text
//! cargo bench -p skylark-loadgen --bench udp_ceiling -- fan 400 3
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Payload size: a full video RTP packet as str0m sends it (MTU 1200 by default).
const SIZE: usize = 1200;
/// Datagrams sent before draining, in `loop` mode (the SFU reads up to 64 per wake).
const BATCH: usize = 32;

fn main() -> std::io::Result<()> {
    // `cargo bench` passes `--bench`; ignore any flag.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("loop");
    let secs = |i: usize, d: u64| {
        Duration::from_secs_f64(args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d as f64))
    };
    match mode {
        "loop" => send_and_drain(secs(1, 3)),
        "fan" => {
            let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(400usize);
            send_and_drain_fan(n.max(1), secs(2, 3))
        }
        "send" => {
            let to: SocketAddr = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 40000)));
            send_only(to, secs(2, 3))
        }
        "recv" => {
            let port: u16 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(40000);
            recv_only(port, secs(2, 5))
        }
        other => {
            eprintln!(
                "unknown mode {other:?}: use loop [secs] | fan N [secs] | send ADDR [secs] | recv PORT [secs]"
            );
            std::process::exit(2);
        }
    }
}

fn report(mode: &str, packets: u64, elapsed: Duration) {
    let pps = packets as f64 / elapsed.as_secs_f64();
    println!(
        "{{\"mode\":\"{mode}\",\"packets\":{packets},\"secs\":{:.3},\"pps\":{pps:.0},\"mbit_s\":{:.0}}}",
        elapsed.as_secs_f64(),
        pps * (SIZE * 8) as f64 / 1e6
    );
}

/// One thread sends a batch, then drains its own receiving socket: both halves of
/// every datagram's trip through the kernel on one core.
fn send_and_drain(run: Duration) -> std::io::Result<()> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    rx.set_nonblocking(true)?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let to = rx.local_addr()?;
    let payload = [0x5au8; SIZE];
    let mut buf = [0u8; 2048];
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < run {
        for _ in 0..BATCH {
            if tx.send_to(&payload, to).is_ok() {
                sent += 1;
            }
        }
        loop {
            match rx.recv_from(&mut buf) {
                Ok(_) => got += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    let elapsed = start.elapsed();
    eprintln!("sent {sent}, received {got}");
    report("loop", got, elapsed);
    Ok(())
}

/// As [`send_and_drain`], to `n` receiving sockets in turn: each batch goes to the next
/// `BATCH` of them, which are then read once each.
fn send_and_drain_fan(n: usize, run: Duration) -> std::io::Result<()> {
    let mut rxs = Vec::with_capacity(n);
    for _ in 0..n {
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        rx.set_nonblocking(true)?;
        let to = rx.local_addr()?;
        rxs.push((rx, to));
    }
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let payload = [0x5au8; SIZE];
    let mut buf = [0u8; 2048];
    let (mut sent, mut got, mut next) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < run {
        let first = next;
        for _ in 0..BATCH {
            if tx.send_to(&payload, rxs[next].1).is_ok() {
                sent += 1;
            }
            next = (next + 1) % n;
        }
        // Each socket sent to holds its datagrams now (loopback delivers in the send):
        // read as many as went to it, no more (a read that finds none is a syscall the
        // one-socket loop does not make per datagram).
        for k in 0..BATCH.min(n) {
            let i = (first + k) % n;
            let mut due = BATCH / n + usize::from(k < BATCH % n);
            while due > 0 {
                match rxs[i].0.recv_from(&mut buf) {
                    Ok(_) => got += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
                due -= 1;
            }
        }
    }
    let elapsed = start.elapsed();
    eprintln!("sent {sent}, received {got} over {n} sockets");
    report(&format!("fan {n}"), got, elapsed);
    Ok(())
}

fn send_only(to: SocketAddr, run: Duration) -> std::io::Result<()> {
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let payload = [0x5au8; SIZE];
    let mut sent = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        for _ in 0..BATCH {
            if tx.send_to(&payload, to).is_ok() {
                sent += 1;
            }
        }
    }
    report("send", sent, start.elapsed());
    Ok(())
}

fn recv_only(port: u16, run: Duration) -> std::io::Result<()> {
    let rx = UdpSocket::bind(("127.0.0.1", port))?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 2048];
    let mut got = 0u64;
    let (mut first, mut last) = (None, Instant::now());
    let deadline = Instant::now() + run;
    while Instant::now() < deadline {
        if rx.recv_from(&mut buf).is_ok() {
            last = Instant::now();
            first.get_or_insert(last);
            got += 1;
        }
    }
    // From the first datagram to the last: the sender's run, not this one's.
    let elapsed = first.map_or(Duration::ZERO, |f| last.duration_since(f));
    report("recv", got, elapsed.max(Duration::from_millis(1)));
    Ok(())
}
