//! RTMP ingest (OBS, FFmpeg): `rtmp://host:1935/live/{stream key}`. The protocol is the
//! media crate's sans-IO [`ServerSession`]; this is its TCP shell. A publish is
//! authorized like a WHIP one (RoomDirectory), placed on the room's origin SFU, and fed
//! to it as a local publisher over `SfuNode.Push`: H.264 as Annex-B access units (no
//! re-encoding), AAC as-is for HLS/FLV consumers and transcoded to Opus for WebRTC viewers.

use crate::session;
use crate::State;
use skylark_media::flv::{AudioTag, FlvError, VideoPacket, VideoTag};
use skylark_media::h264::{self, AvcDecoderConfigurationRecord};
use skylark_media::rtmp::{ServerSession, SessionConfig, SessionEvent};
use skylark_proto::rooms::v1::authorize_publish_request::Credential;
use skylark_proto::sfu::v1 as sfu;
use skylark_transcode::AacToOpus;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Until `publish` is accepted, a connection has this long (slowloris guard).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent RTMP connections per process.
const MAX_CONNECTIONS: usize = 1000;
/// Read buffer before a publish is accepted, and after.
const SETUP_READ_BUF: usize = 4 * 1024;
const MEDIA_READ_BUF: usize = 64 * 1024;

/// Accepts RTMP connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: State,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        live.fetch_add(1, Ordering::Relaxed);
        let (state, live, stop) = (state.clone(), live.clone(), shutdown.child_token());
        tokio::spawn(async move {
            metrics::gauge!("skylark_rtmp_connections").increment(1.0);
            if let Err(e) = Connection::new(state, peer).run(stream, stop).await {
                tracing::info!(%peer, error = %e, "RTMP connection ended");
            }
            metrics::gauge!("skylark_rtmp_connections").decrement(1.0);
            live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The SFU side of an accepted publish.
struct Push {
    tx: mpsc::Sender<sfu::PushMessage>,
    ended: tokio::task::JoinHandle<()>,
    room: String,
}

struct Connection {
    state: State,
    peer: SocketAddr,
    session: ServerSession,
    push: Option<Push>,
    avc: Option<AvcDecoderConfigurationRecord>,
    /// SPS and PPS in Annex B, prepended to every keyframe so decoders can join there.
    parameter_sets: Vec<u8>,
    aac_config_hex: String,
    transcoder: Option<AacToOpus>,
    cut: CancellationToken,
}

fn frame(codec: &str, rtp_time: u64, data: Vec<u8>, config: &str) -> sfu::PushMessage {
    sfu::PushMessage {
        msg: Some(sfu::push_message::Msg::Frame(sfu::PushFrame {
            codec: codec.into(),
            rtp_time,
            data,
            config: config.into(),
        })),
    }
}

impl Connection {
    fn new(state: State, peer: SocketAddr) -> Self {
        Self {
            state,
            peer,
            session: ServerSession::new(SessionConfig::default()),
            push: None,
            avc: None,
            parameter_sets: Vec::new(),
            aac_config_hex: String::new(),
            transcoder: None,
            cut: CancellationToken::new(),
        }
    }

    async fn run(mut self, mut stream: TcpStream, stop: CancellationToken) -> anyhow::Result<()> {
        let _ = stream.set_nodelay(true);
        // Small until the publish is accepted: a connection that has not proven its key
        // holds a few KiB (the session's setup limits bound what it may make us buffer).
        let mut buf = vec![0u8; SETUP_READ_BUF];
        let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
        let result = loop {
            let timeout = if self.push.is_some() {
                tokio::time::Instant::now() + IDLE_TIMEOUT
            } else {
                setup_deadline
            };
            let n = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = self.cut.cancelled() => break Err(anyhow::anyhow!("publish ended by the server (key rotated, room deleted or replaced)")),
                _ = tokio::time::sleep_until(timeout) => break Err(anyhow::anyhow!("no data in time; dropping the connection")),
                r = stream.read(&mut buf) => match r {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) => break Err(e.into()),
                },
            };
            if let Err(e) = self.session.feed(&buf[..n]) {
                let _ = stream.write_all(&self.session.take_output()).await;
                break Err(anyhow::anyhow!("RTMP protocol error: {e}"));
            }
            let mut closing = false;
            while let Some(ev) = self.session.poll_event() {
                match self.on_event(ev).await {
                    Ok(true) => {}
                    Ok(false) => closing = true,
                    Err(e) => {
                        tracing::info!(peer = %self.peer, error = %e, "RTMP stream refused");
                        closing = true;
                    }
                }
            }
            if self.session.has_output() {
                stream.write_all(&self.session.take_output()).await?;
            }
            if closing {
                break Ok(());
            }
            if self.push.is_some() && buf.len() < MEDIA_READ_BUF {
                buf.resize(MEDIA_READ_BUF, 0);
            }
        };
        self.finish().await;
        result
    }

    /// Handles one session event; `Ok(false)` closes the connection.
    async fn on_event(&mut self, ev: SessionEvent) -> anyhow::Result<bool> {
        match ev {
            SessionEvent::Connect { .. } | SessionEvent::Metadata(_) => Ok(true),
            SessionEvent::Publish { stream_name, .. } => self.on_publish(&stream_name).await,
            SessionEvent::Unpublish => Ok(false),
            SessionEvent::Video { timestamp, data } => self.on_video(timestamp, &data).await,
            SessionEvent::Audio { timestamp, data } => self.on_audio(timestamp, &data).await,
        }
    }

    async fn on_publish(&mut self, stream_name: &str) -> anyhow::Result<bool> {
        // OBS "Custom" users may paste a query string after the key.
        let key = stream_name
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let refuse = |s: &mut ServerSession, code: &str, why: &str| {
            let _ = s.reject_publish(code, why);
            Ok(false)
        };
        let ingest = session::Ingest {
            protocol: "rtmp",
            client_ip: Some(self.peer.ip()),
        };
        let placed = match session::authorize_publish(
            &self.state,
            Credential::StreamKey(key),
            String::new(),
            ingest,
        )
        .await
        {
            Ok(grant) => session::place_publisher(&self.state, &grant)
                .await
                .map(|nodes| (grant, nodes)),
            Err(e) => Err(e),
        };
        let (grant, candidates) = match placed {
            Ok(p) => p,
            Err(e) => {
                // Logged without the key: only where it came from and why.
                tracing::warn!(peer = %self.peer, error = %e, "RTMP publish refused");
                let code = if e.is_unauthenticated() {
                    "NetStream.Publish.BadName"
                } else {
                    "NetStream.Publish.Failed"
                };
                return refuse(&mut self.session, code, &e.message());
            }
        };
        let room = grant.room;
        // Recorded before the push starts: the room goes live with this publisher.
        let session_id = format!("rtmp_{}", skylark_auth::new_secret(9));
        session::record_publisher(&self.state, &room.id, &session_id, grant.protocol, None).await;
        // The first candidate node that takes the push (a dead origin costs a retry).
        let mut pushed = None;
        for node in candidates {
            let Ok(mut client) = self.state.upstream.sfu(&node.grpc_addr) else {
                continue;
            };
            let (tx, rx) = mpsc::channel(256);
            tx.send(sfu::PushMessage {
                msg: Some(sfu::push_message::Msg::Start(sfu::PushStart {
                    room_id: room.id.clone(),
                    key_id: grant.key_id.clone(),
                })),
            })
            .await?;
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            req.set_timeout(Duration::from_secs(7 * 24 * 3600));
            let mut events = match client.push(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    tracing::warn!(node = %node.id, status = %s, "RTMP push refused by a node; trying the next");
                    continue;
                }
            };
            if let Ok(Some(sfu::PushEvent {
                msg: Some(sfu::push_event::Msg::Ready(_)),
            })) = events.message().await
            {
                pushed = Some((node, tx, events));
                break;
            }
        }
        let Some((node, tx, mut events)) = pushed else {
            return refuse(
                &mut self.session,
                "NetStream.Publish.Failed",
                "no media node took the stream: retry shortly",
            );
        };
        let cut = self.cut.clone();
        let ended = tokio::spawn(async move {
            // `ended`, or the stream closing, means the SFU cut this publisher.
            while let Ok(Some(ev)) = events.message().await {
                if let Some(sfu::push_event::Msg::Ended(_)) = ev.msg {
                    break;
                }
            }
            cut.cancel();
        });
        self.session.accept_publish()?;
        tracing::info!(room_id = %room.id, node = %node.id, peer = %self.peer, "RTMP publish started");
        metrics::counter!("skylark_rtmp_publishes_total").increment(1);
        self.push = Some(Push {
            tx,
            ended,
            room: room.id,
        });
        Ok(true)
    }

    async fn send(&mut self, msg: sfu::PushMessage) -> anyhow::Result<bool> {
        let Some(p) = &self.push else { return Ok(true) };
        // Waiting here is the backpressure: TCP slows the publisher down.
        Ok(p.tx.send(msg).await.is_ok())
    }

    async fn on_video(&mut self, timestamp: u64, data: &[u8]) -> anyhow::Result<bool> {
        let tag = match VideoTag::parse(data) {
            Ok(t) => t,
            Err(e @ FlvError::UnsupportedCodec(_)) => {
                anyhow::bail!("{e}: set the encoder to H.264 (x264 or a hardware H.264 encoder)")
            }
            Err(e) => anyhow::bail!("bad video tag: {e}"),
        };
        match tag.packet {
            VideoPacket::AvcSequenceHeader(config) => {
                let mut ps = Vec::new();
                for nal in config.sps.iter().chain(config.pps.iter()) {
                    ps.extend_from_slice(&[0, 0, 0, 1]);
                    ps.extend_from_slice(nal);
                }
                self.parameter_sets = ps;
                self.avc = Some(config);
                Ok(true)
            }
            VideoPacket::AvcNalus {
                composition_time,
                data,
            } => {
                let Some(config) = &self.avc else {
                    return Ok(true);
                };
                let nalus = skylark_media::flv::split_avcc(data, config.length_size)?;
                let keyframe = nalus.iter().any(|n| h264::is_idr(n));
                let mut au = Vec::with_capacity(data.len() + self.parameter_sets.len() + 16);
                if keyframe {
                    au.extend_from_slice(&self.parameter_sets);
                }
                for n in nalus {
                    au.extend_from_slice(&[0, 0, 0, 1]);
                    au.extend_from_slice(n);
                }
                // RTP carries presentation time; B-frames (PTS ≠ DTS) arrive in decode order.
                let pts_ms = (timestamp as i64 + i64::from(composition_time)).max(0) as u64;
                self.send(frame("H264", pts_ms * 90, au, "")).await
            }
            _ => Ok(true),
        }
    }

    async fn on_audio(&mut self, timestamp: u64, data: &[u8]) -> anyhow::Result<bool> {
        let tag = match AudioTag::parse(data) {
            Ok(t) => t,
            // Audio we can't carry is dropped, video goes on.
            Err(_) => return Ok(true),
        };
        match tag {
            AudioTag::AacSequenceHeader(asc) => {
                let raw = asc.to_bytes().unwrap_or_default();
                self.aac_config_hex = raw.iter().map(|b| format!("{b:02x}")).collect();
                self.transcoder = match AacToOpus::new(&asc) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "AAC not transcodable: WebRTC viewers get no audio");
                        None
                    }
                };
                Ok(true)
            }
            AudioTag::AacRaw(frame_data) => {
                let pts = timestamp * 48;
                let config = self.aac_config_hex.clone();
                if !self
                    .send(frame("aac", pts, frame_data.to_vec(), &config))
                    .await?
                {
                    return Ok(false);
                }
                let packets = match self.transcoder.as_mut().map(|t| t.push(frame_data, pts)) {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "AAC frame not transcoded");
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                for p in packets {
                    if !self
                        .send(frame("opus", p.pts_48k, p.data.to_vec(), ""))
                        .await?
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            AudioTag::OpusFrame(packet) => {
                self.send(frame("opus", timestamp * 48, packet.to_vec(), ""))
                    .await
            }
            _ => Ok(true),
        }
    }

    async fn finish(&mut self) {
        if let Some(p) = self.push.take() {
            tracing::info!(room_id = %p.room, peer = %self.peer, "RTMP publish ended");
            drop(p.tx);
            let _ = tokio::time::timeout(Duration::from_secs(2), p.ended).await;
        }
    }
}
