//! TURN over TCP and TLS: connections framed into whole STUN messages and ChannelData
//! (RFC 8656 §12: on a stream, ChannelData is padded to 4 bytes), bounded in size,
//! count and silence; a data connection (RFC 6062 ConnectionBind) relays raw bytes
//! once bound.

use crate::shell::Event;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Largest frame taken: WebRTC packets are sized for UDP paths.
const MAX_FRAME: usize = 4096;
/// A new connection must send its first message (or finish TLS) within this.
const FIRST: Duration = Duration::from_secs(10);
/// Silence that ends a connection: longer than the 5-minute permission lifetime, which
/// a live client refreshes before.
const IDLE: Duration = Duration::from_secs(330);
/// A peer not reading for this long is dropped.
const WRITE: Duration = Duration::from_secs(10);
/// Frames queued to one connection; past it they are dropped, as UDP would.
const QUEUE: usize = 256;

/// How many stream connections may be open at once (TCP and TLS together).
#[derive(Clone)]
pub(crate) struct Budget(Arc<Semaphore>);

impl Budget {
    pub(crate) fn new(n: usize) -> Self {
        Self(Arc::new(Semaphore::new(n)))
    }
}

/// A TLS acceptor from PEM files, on aws-lc-rs.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "SKYLARK_TURN_TLS_CERT {}: {e}; give a PEM certificate chain",
                cert.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "SKYLARK_TURN_TLS_KEY {}: {e}; give a PEM private key",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("SKYLARK_TURN_TLS_CERT/KEY: the key does not fit the certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `shutdown`, each served by its own task.
pub(crate) async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    events: mpsc::Sender<Event>,
    budget: Budget,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let got = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            got = listener.accept() => got,
        };
        let Ok((conn, from)) = got else { continue };
        let Ok(permit) = budget.0.clone().try_acquire_owned() else {
            metrics::counter!("skylark_turn_connections_refused_total").increment(1);
            continue;
        };
        let _ = conn.set_nodelay(true);
        let events = events.clone();
        let tls = tls.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(conn, from, events, permit, stop).await,
                Some(acceptor) => match tokio::time::timeout(FIRST, acceptor.accept(conn)).await {
                    Ok(Ok(s)) => serve(s, from, events, permit, stop).await,
                    Ok(Err(e)) => tracing::debug!(%from, error = %e, "TURN TLS handshake failed"),
                    Err(_) => tracing::debug!(%from, "TURN TLS handshake timed out"),
                },
            }
        });
    }
}

/// One client connection: frames in to the shell, the shell's frames out.
async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    from: SocketAddr,
    events: mpsc::Sender<Event>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut out) = mpsc::channel::<Vec<u8>>(QUEUE);
    if events.send(Event::Opened { from, tx }).await.is_err() {
        return;
    }
    let done = CancellationToken::new();
    let writer_done = done.clone();
    let writer = tokio::spawn(async move {
        // Ends when the shell drops the queue (connection closed on either side, or
        // bound as a data connection); hands the half back unless writing failed.
        let mut ok = true;
        while let Some(frame) = out.recv().await {
            match tokio::time::timeout(WRITE, wr.write_all(&frame)).await {
                Ok(Ok(())) => {}
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        writer_done.cancel();
        ok.then_some(wr)
    });
    let mut first = true;
    let mut spliced = None;
    loop {
        let wait = if first { FIRST } else { IDLE };
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = done.cancelled() => break,
            f = tokio::time::timeout(wait, read_frame(&mut rd)) => f,
        };
        let data = match frame {
            Ok(Ok(Some(d))) => d,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::debug!(%from, error = %e, "TURN stream closed");
                break;
            }
            Err(_) => {
                tracing::debug!(%from, "TURN stream silent too long: closed");
                break;
            }
        };
        if first && is_connection_bind(&data) {
            let (tx, rx) = oneshot::channel();
            let ev = Event::Bind {
                from,
                data,
                splice: tx,
            };
            if events.send(ev).await.is_err() {
                break;
            }
            // The shell answers at once: bound, or not (the sender dropped).
            if let Ok(s) = rx.await {
                spliced = Some(s);
                break;
            }
            continue;
        }
        first = false;
        if events.send(Event::Client { from, data }).await.is_err() {
            break;
        }
    }
    match spliced {
        Some(s) => {
            // The answer written (the shell dropped the queue after it), bytes flow.
            if let Ok(Some(wr)) = writer.await {
                crate::tcp::splice(rd.unsplit(wr), s, shutdown).await;
            }
            let _ = events.send(Event::Closed { from }).await;
        }
        None => {
            let _ = events.send(Event::Closed { from }).await;
            if let Ok(Some(mut wr)) = writer.await {
                let _ = wr.shutdown().await;
            }
        }
    }
}

/// Whether `frame` is a ConnectionBind request (RFC 6062: method 0x00B).
fn is_connection_bind(frame: &[u8]) -> bool {
    frame.starts_with(&[0x00, 0x0b])
}

/// ChannelData padded to 4 bytes, as RFC 8656 §12.5 wants on streams (the server
/// writes it unpadded; browsers frame by the padded length).
pub(crate) fn pad_channel_data(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.first().is_some_and(|b| b >> 6 == 1) {
        frame.resize(frame.len().div_ceil(4) * 4, 0);
    }
    frame
}

/// One STUN message or ChannelData frame; `None` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 4];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let total = match head[0] >> 6 {
        // STUN: 20-byte header, attributes already 4-byte aligned.
        0 => 20 + len,
        // ChannelData (0x4000–0x7fff): padded to 4 bytes on streams.
        1 => 4 + len.div_ceil(4) * 4,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "neither STUN nor ChannelData",
            ))
        }
    };
    if total > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame over 4 KiB",
        ));
    }
    let mut frame = vec![0u8; total];
    frame[..4].copy_from_slice(&head);
    rd.read_exact(&mut frame[4..]).await?;
    // The server parses ChannelData unpadded and would take the padding for the start
    // of the next frame.
    if head[0] >> 6 == 1 {
        frame.truncate(4 + len);
    }
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_data_is_framed_by_its_padded_length_and_handed_on_unpadded() {
        // Channel 0x4000, 5 bytes + 3 of padding, then a 20-byte STUN header.
        let mut wire = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        wire.extend_from_slice(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        wire.extend_from_slice(&[7; 12]);
        let mut rd = wire.as_slice();
        assert_eq!(
            read_frame(&mut rd).await.unwrap().unwrap(),
            [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5]
        );
        assert_eq!(read_frame(&mut rd).await.unwrap().unwrap().len(), 20);
        assert!(read_frame(&mut rd).await.unwrap().is_none());
        assert_eq!(pad_channel_data(vec![0x40, 0, 0, 1, 9]).len(), 8);
        assert_eq!(pad_channel_data(vec![0, 1, 0, 0]).len(), 4);
    }

    #[tokio::test]
    async fn oversize_and_foreign_frames_end_the_stream() {
        let mut big: &[u8] = &[0x40, 0x00, 0xff, 0xff];
        assert!(read_frame(&mut big).await.is_err());
        let mut foreign: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(read_frame(&mut foreign).await.is_err());
    }
}
