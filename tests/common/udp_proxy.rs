//! A user-space UDP proxy in front of a server that impairs one client's path the way
//! a slow access link does: what the server sends the client crosses a bottleneck of
//! a set rate with a drop-tail queue (packets that would wait longer than
//! [`QUEUE_LIMIT`] are dropped, as a router's buffer overflows), and may also lose a
//! share of them at random (a lossy radio link). Both can change while media flows; 0
//! means none.

// Only the test binaries that impair a path use it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The bottleneck's buffer, in time at its rate.
pub const QUEUE_LIMIT: Duration = Duration::from_millis(100);

pub struct UdpProxy {
    /// Where the client sends (put it in place of the server's candidate).
    pub addr: SocketAddr,
    rate_kbps: Arc<AtomicU64>,
    /// Packets lost at random, per million.
    loss_ppm: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl UdpProxy {
    /// A proxy on loopback forwarding to `server`, unlimited until [`Self::limit_kbps`].
    pub async fn start(server: SocketAddr) -> UdpProxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let rate_kbps = Arc::new(AtomicU64::new(0));
        let loss_ppm = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();

        // Client → server: as is; the client's address is where answers go.
        let (f, b, c, stop) = (front.clone(), back.clone(), client.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, from) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = f.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
                };
                *c.lock().unwrap() = Some(from);
                let _ = b.send(&buf[..n]).await;
            }
        });

        // Server → client: through the bottleneck. The link is busy until `busy_until`;
        // a packet leaves when the ones before it have.
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let (b, rate, lost, stop) = (back, rate_kbps.clone(), dropped.clone(), cancel.clone());
        let loss = loss_ppm.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut busy_until = Instant::now();
            // A fixed-seed generator: the same losses every run (xorshift64).
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            loop {
                let n = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = b.recv(&mut buf) => match r { Ok(n) => n, Err(_) => continue },
                };
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed % 1_000_000 < loss.load(Ordering::Relaxed) {
                    lost.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let now = Instant::now();
                let kbps = rate.load(Ordering::Relaxed);
                // On the wire for n * 8 / kbps ms; no limit (0): at once.
                let leaves = match (n as u64 * 8 * 1000).checked_div(kbps) {
                    None => now,
                    Some(on_wire_us) => {
                        let start = busy_until.max(now);
                        if start > now + QUEUE_LIMIT {
                            lost.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        busy_until = start + Duration::from_micros(on_wire_us);
                        busy_until
                    }
                };
                let _ = tx.send((leaves, buf[..n].to_vec()));
            }
        });
        let stop = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (at, packet) = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => p, None => return },
                };
                tokio::time::sleep_until(at).await;
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = front.send_to(&packet, to).await;
                }
            }
        });
        UdpProxy {
            addr,
            rate_kbps,
            loss_ppm,
            dropped,
            cancel,
        }
    }

    /// Limits what reaches the client to `kbps` (0: no limit).
    pub fn limit_kbps(&self, kbps: u64) {
        self.rate_kbps.store(kbps, Ordering::Relaxed);
    }

    /// Loses `percent` of what reaches the client, at random (0: none).
    pub fn lose_percent(&self, percent: f64) {
        self.loss_ppm
            .store((percent * 10_000.0) as u64, Ordering::Relaxed);
    }

    /// Packets the bottleneck dropped or the link lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
