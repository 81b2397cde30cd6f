//! ICE over TCP (RFC 6544 passive candidates, RFC 4571 framing) on the node's one TCP
//! port, for peers whose network drops UDP. A connection's first frame must be a STUN
//! Binding request of ours: the ufrag it names picks the worker that owns the session,
//! as it steers UDP datagrams (`core::stun_worker`). From then on the connection's
//! frames go to that worker's core like datagrams ([`TcpInput::Frame`]), and the core's
//! sends to its address come back as frames on it.
//!
//! Limits: connections per node ([`Limits::max_connections`], refused past it), frame
//! size (a longer one closes the connection), a first frame within
//! [`Limits::first_frame`], silence for [`Limits::idle`] (ICE consent checks come every
//! ~5 s, RFC 7675) and a peer that stops reading for [`Limits::write_stall`] close it.
//! Everything ends with the node's shutdown token.

use crate::core::stun_worker;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Frames queued towards one connection; past it the worker drops them, as a full UDP
/// socket would.
pub const OUT_QUEUE: usize = 512;

/// What a connection tells the worker that owns its session.
#[derive(Debug)]
pub enum TcpInput {
    /// A connection whose first check named this worker; frames to `remote` go to
    /// `frames`.
    Opened {
        conn: u64,
        remote: SocketAddr,
        frames: mpsc::Sender<Vec<u8>>,
    },
    /// One RFC 4571 frame from `remote`.
    Frame {
        remote: SocketAddr,
        contents: Vec<u8>,
    },
    /// Connection `conn` ended (a later one from the same address is not this one).
    Closed { conn: u64, remote: SocketAddr },
}

/// The bounds of the ICE-TCP port.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; a browser opens one per local interface to our one
    /// passive candidate.
    pub max_connections: usize,
    /// Longest frame taken. WebRTC packets stay under ~1,500 bytes (DTLS and RTP are
    /// sized for UDP paths); RFC 4571 allows 65,535.
    pub max_frame: usize,
    /// A connection must send its first check within this.
    pub first_frame: Duration,
    /// A connection silent this long is closed.
    pub idle: Duration,
    /// A connection whose peer takes nothing for this long is closed.
    pub write_stall: Duration,
}

impl Limits {
    /// The defaults for a node taking `max_sessions` sessions: two connections each
    /// (a peer on two interfaces), and room for strangers' attempts.
    pub fn for_sessions(max_sessions: usize) -> Self {
        Self {
            max_connections: max_sessions.saturating_mul(2).max(64),
            max_frame: 4096,
            first_frame: Duration::from_secs(5),
            idle: Duration::from_secs(30),
            write_stall: Duration::from_secs(10),
        }
    }
}

/// Why a connection ended (a metric label: keep the set small and fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its first frame was not a STUN check naming one of our workers, or none came.
    NoCheck,
    /// The peer closed it or broke it.
    Closed,
    /// Silent past [`Limits::idle`].
    Idle,
    /// A frame over [`Limits::max_frame`].
    Oversize,
    /// The worker let it go: its session ended, or no session took a check from it.
    Released,
    /// The peer took nothing for [`Limits::write_stall`], or writing failed.
    WriteStall,
    Shutdown,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::NoCheck => "no_check",
            End::Closed => "closed",
            End::Idle => "idle",
            End::Oversize => "oversize",
            End::Released => "released",
            End::WriteStall => "write_stall",
            End::Shutdown => "shutdown",
        }
    }
}

/// Accepts ICE-TCP connections until `shutdown`, handing each to the worker its first
/// check names (`workers[i]` is worker `i`'s queue).
pub async fn serve(
    listener: TcpListener,
    workers: Vec<mpsc::Sender<TcpInput>>,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let workers: Arc<[mpsc::Sender<TcpInput>]> = workers.into();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut next_conn = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, mostly: wait instead of spinning.
                tracing::warn!(error = %e, "ICE-TCP accept failed; raise the open-files limit if this repeats");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("skylark_sfu_tcp_refused_total").increment(1);
            tracing::debug!(%remote, "ICE-TCP connection refused: at the connection limit");
            continue;
        };
        next_conn += 1;
        let conn = Conn {
            id: next_conn,
            remote,
            workers: workers.clone(),
            limits,
            _permit: permit,
        };
        tokio::spawn(conn.run(stream, shutdown.clone()));
    }
}

/// One accepted connection.
struct Conn {
    id: u64,
    remote: SocketAddr,
    workers: Arc<[mpsc::Sender<TcpInput>]>,
    limits: Limits,
    /// Its place under [`Limits::max_connections`], given back when it ends.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    async fn run(self, stream: TcpStream, shutdown: CancellationToken) {
        let open = metrics::gauge!("skylark_sfu_tcp_connections");
        open.increment(1.0);
        let end = tokio::select! {
            end = self.serve(stream) => end,
            _ = shutdown.cancelled() => End::Shutdown,
        };
        open.decrement(1.0);
        metrics::counter!("skylark_sfu_tcp_connections_total", "end" => end.label()).increment(1);
        tracing::debug!(remote = %self.remote, end = end.label(), "ICE-TCP connection ended");
    }

    async fn serve(&self, stream: TcpStream) -> End {
        // Media: each frame leaves at once (no Nagle delay).
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let max = self.limits.max_frame;
        let first =
            match tokio::time::timeout(self.limits.first_frame, read_frame(&mut rd, max)).await {
                Ok(Ok(Some(f))) => f,
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => return End::Oversize,
                _ => return End::NoCheck,
            };
        let count = u8::try_from(self.workers.len()).unwrap_or(u8::MAX);
        let Some(queue) = stun_worker(&first, count).and_then(|w| self.workers.get(usize::from(w)))
        else {
            return End::NoCheck;
        };
        let (frames, out) = mpsc::channel(OUT_QUEUE);
        let opened = TcpInput::Opened {
            conn: self.id,
            remote: self.remote,
            frames,
        };
        if queue.send(opened).await.is_err() {
            return End::Shutdown;
        }
        let remote = self.remote;
        forward(queue, remote, first);
        let end = tokio::select! {
            end = async {
                loop {
                    match tokio::time::timeout(self.limits.idle, read_frame(&mut rd, max)).await {
                        Ok(Ok(Some(f))) => forward(queue, remote, f),
                        Ok(Ok(None)) => return End::Closed,
                        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => return End::Oversize,
                        Ok(Err(_)) => return End::Closed,
                        Err(_) => return End::Idle,
                    }
                }
            } => end,
            w = write_frames(wr, out, self.limits.write_stall) => match w {
                Ok(()) => End::Released,
                Err(_) => End::WriteStall,
            },
        };
        let _ = queue
            .send(TcpInput::Closed {
                conn: self.id,
                remote,
            })
            .await;
        end
    }
}

/// Hands a frame to the worker; dropped when its queue is full, as the kernel drops
/// datagrams for a full socket.
fn forward(queue: &mpsc::Sender<TcpInput>, remote: SocketAddr, contents: Vec<u8>) {
    if queue
        .try_send(TcpInput::Frame { remote, contents })
        .is_err()
    {
        metrics::counter!("skylark_sfu_tcp_frames_dropped_total", "direction" => "in").increment(1);
    }
}

/// One RFC 4571 frame: a 16-bit big-endian length, then that many bytes. `None` at a
/// clean end of stream; `InvalidData` for an empty frame or one over `max`.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = usize::from(u16::from_be_bytes(len));
    if n == 0 || n > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ICE-TCP frame of {n} bytes (limit {max})"),
        ));
    }
    let mut frame = vec![0; n];
    r.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

/// Writes the worker's frames until it lets go of the connection (or the peer stops
/// reading for `stall`); what is queued goes out in one write.
async fn write_frames<W: AsyncWrite + Unpin>(
    wr: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
    stall: Duration,
) -> io::Result<()> {
    let mut wr = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(first) = frames.recv().await {
        let batch = async {
            put_frame(&mut wr, &first).await?;
            while let Ok(f) = frames.try_recv() {
                put_frame(&mut wr, &f).await?;
            }
            wr.flush().await
        };
        match tokio::time::timeout(stall, batch).await {
            Ok(r) => r?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
    }
    Ok(())
}

async fn put_frame<W: AsyncWrite + Unpin>(wr: &mut W, frame: &[u8]) -> io::Result<()> {
    // str0m's datagrams are MTU-sized: never past the 16-bit length.
    let Ok(len) = u16::try_from(frame.len()) else {
        return Ok(());
    };
    wr.write_all(&len.to_be_bytes()).await?;
    wr.write_all(frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_until_a_clean_end_and_bounded() {
        let mut bytes: &[u8] = &[0, 3, 1, 2, 3, 0, 1, 9];
        assert_eq!(
            read_frame(&mut bytes, 16).await.unwrap(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(read_frame(&mut bytes, 16).await.unwrap(), Some(vec![9]));
        assert_eq!(read_frame(&mut bytes, 16).await.unwrap(), None);
        // Over the limit, empty, or cut short: an error, never a huge allocation.
        let mut big: &[u8] = &[0xff, 0xff, 0];
        let e = read_frame(&mut big, 4096).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut empty: &[u8] = &[0, 0];
        assert!(read_frame(&mut empty, 16).await.is_err());
        let mut short: &[u8] = &[0, 5, 1, 2];
        assert!(read_frame(&mut short, 16).await.is_err());
    }

    #[tokio::test]
    async fn queued_frames_leave_length_prefixed_in_order() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(vec![7; 3]).await.unwrap();
        tx.send(vec![8]).await.unwrap();
        drop(tx);
        let mut out = Vec::new();
        write_frames(&mut out, rx, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(out, [0, 3, 7, 7, 7, 0, 1, 8]);
    }
}
