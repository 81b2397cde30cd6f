//! TCP relayed addresses (RFC 6062): the listener peers connect to, connections opened
//! to peers for Connect requests, and the byte relaying between a peer connection and
//! the client's data connection once ConnectionBind paired them. The signalling (ids,
//! permissions, ConnectionBind's credentials) is the sans-IO server's; this is the I/O.

use crate::policy::Policy;
use crate::shell::Event;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turn_server_proto::api::TcpConnectError;

/// How long opening a connection to a peer may take (RFC 6062 §5.2 leaves it to the
/// server; an SFU or an allowed peer answers at once or not at all).
const CONNECT: Duration = Duration::from_secs(10);
/// Silence in both directions that ends a relayed connection (as a client stream's).
const IDLE: Duration = Duration::from_secs(330);
/// A side not reading for this long ends the relayed connection.
const WRITE: Duration = Duration::from_secs(10);
/// Read size of the relaying: bounds each write and each bucket debit.
const CHUNK: usize = 16 * 1024;
/// Connections queued in a relayed address's listener.
const BACKLOG: u32 = 16;

/// A peer connection handed to the client's data connection once bound.
#[derive(Debug)]
pub(crate) struct Splice {
    pub(crate) peer: TcpStream,
    pub(crate) relay: SocketAddr,
    pub(crate) policy: Arc<Policy>,
    /// The allocation's: relaying ends with it.
    pub(crate) stop: CancellationToken,
    pub(crate) active: Active,
}

/// The (relay, peer) pairs being relayed, each while its task runs: a second Connect
/// to the same peer gets 446 meanwhile (RFC 6062 §5.2).
#[derive(Debug, Clone, Default)]
pub(crate) struct Relayed(Arc<Mutex<HashSet<(SocketAddr, SocketAddr)>>>);

impl Relayed {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<(SocketAddr, SocketAddr)>> {
        // Plain data: usable after a panic elsewhere.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn contains(&self, pair: (SocketAddr, SocketAddr)) -> bool {
        self.set().contains(&pair)
    }

    pub(crate) fn hold(&self, pair: (SocketAddr, SocketAddr)) -> Active {
        self.set().insert(pair);
        Active {
            of: self.clone(),
            pair,
        }
    }
}

/// One pair of [`Relayed`], until dropped.
#[derive(Debug)]
pub(crate) struct Active {
    of: Relayed,
    pair: (SocketAddr, SocketAddr),
}

impl Drop for Active {
    fn drop(&mut self) {
        self.of.set().remove(&self.pair);
    }
}

/// Reuse of the address: connections to peers leave from the relayed address itself
/// (RFC 6062 §5.2), which its listener holds.
fn socket(ip: IpAddr) -> std::io::Result<TcpSocket> {
    let s = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    Ok(s)
}

/// A listener for a TCP relayed address on `ip` (any free port).
pub(crate) fn relay_listener(ip: IpAddr) -> std::io::Result<TcpListener> {
    let s = socket(ip)?;
    s.bind(SocketAddr::new(ip, 0))?;
    s.listen(BACKLOG)
}

/// Peers connecting to `relay` until `stop`; the shell asks the client to take each.
pub(crate) async fn accept(
    listener: TcpListener,
    relay: SocketAddr,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            got = listener.accept() => got,
        };
        let Ok((stream, peer)) = got else {
            // Out of descriptors, most likely: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ev = Event::PeerAccepted {
            relay,
            peer,
            stream,
        };
        // A busy shell drops the connection, as a full backlog would.
        if events.try_send(ev).is_err() && events.is_closed() {
            return;
        }
    }
}

/// Opens a connection from `bind` (the relayed address's socket) to `peer` for a
/// Connect request and tells the shell how it went.
pub(crate) async fn connect(
    bind: SocketAddr,
    relay: SocketAddr,
    peer: SocketAddr,
    events: mpsc::Sender<Event>,
) {
    let result = connect_from(bind, peer).await;
    if let Err(e) = &result {
        tracing::debug!(%relay, %peer, error = %e, "TURN TCP connect to the peer failed");
    }
    let _ = events
        .send(Event::PeerConnected {
            relay,
            peer,
            result,
        })
        .await;
}

async fn connect_from(bind: SocketAddr, peer: SocketAddr) -> Result<TcpStream, TcpConnectError> {
    let s = socket(bind.ip()).map_err(|_| TcpConnectError::InsufficientCapacity)?;
    s.bind(bind)
        .map_err(|_| TcpConnectError::InsufficientCapacity)?;
    match tokio::time::timeout(CONNECT, s.connect(peer)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(_)) => Err(TcpConnectError::Failure),
        Err(_) => Err(TcpConnectError::TimedOut),
    }
}

/// Relays bytes between the client's data connection and the peer until either ends
/// (a half close is passed on), both are silent for [`IDLE`], the allocation ends or
/// the server stops. Both directions draw on the bandwidth budget of the allocation's credential.
pub(crate) async fn splice<S: AsyncRead + AsyncWrite>(
    client: S,
    s: Splice,
    shutdown: CancellationToken,
) {
    let Splice {
        peer,
        relay,
        policy,
        stop,
        active: _active,
    } = s;
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut pr, mut pw) = peer.into_split();
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let up = pump(&mut cr, &mut pw, relay, &policy, "out", &last, start);
    let down = pump(&mut pr, &mut cw, relay, &policy, "in", &last, start);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = shutdown.cancelled() => {}
        _ = idle(&last, start) => tracing::debug!(%relay, "TURN TCP relay silent too long: closed"),
        r = async { tokio::try_join!(up, down) } => {
            if let Err(e) = r {
                tracing::debug!(%relay, error = %e, "TURN TCP relay ended");
            }
        }
    }
}

/// One direction: reads, waits out the bandwidth budget, writes; passes the end on.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut R,
    wr: &mut W,
    relay: SocketAddr,
    policy: &Policy,
    direction: &'static str,
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return wr.shutdown().await;
        }
        last.store(millis(start.elapsed()), Ordering::Relaxed);
        let wait = policy.debit(relay, n, Instant::now());
        if !wait.is_zero() {
            metrics::counter!("skylark_turn_tcp_throttled_total").increment(1);
            tokio::time::sleep(wait).await;
        }
        tokio::time::timeout(WRITE, wr.write_all(&buf[..n]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "not reading"))??;
        metrics::counter!("skylark_turn_relayed_bytes_total", "direction" => direction)
            .increment(n as u64);
    }
}

/// Ends when neither direction has moved a byte for [`IDLE`].
async fn idle(last: &AtomicU64, start: Instant) {
    loop {
        let since = millis(start.elapsed()).saturating_sub(last.load(Ordering::Relaxed));
        let left = IDLE.saturating_sub(Duration::from_millis(since));
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left).await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
