//! The I/O shell around [`Core`]: one UDP socket, one task, a command channel, a timer,
//! and the real clock and randomness the core takes as inputs. It keeps the core's run
//! loop rule: every change is followed by draining the core's outputs.

use crate::core::{
    Core, CoreEvent, DropReason, FrameCodec, IdSeed, Output, RelayedFrame, SessionError, WallClock,
};
use skylark_proto::sfu::v1 as pb;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Largest datagram read; WebRTC packets stay under ~1500 bytes.
const RECV_BUF: usize = 2048;
/// Datagrams read per wake before running timers and commands again.
const RECV_BATCH: usize = 64;
/// Receive buffer asked for the media socket. The default (~208 KiB) holds ~100 small
/// datagrams: a flood of junk or a moment off the CPU then drops media in the kernel,
/// before the core can tell it from junk. The kernel caps it at `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;

pub type Reply<T> = oneshot::Sender<Result<T, SessionError>>;

pub enum Command {
    Publish {
        room: String,
        offer: String,
        reply: Reply<(String, String)>,
    },
    Subscribe {
        room: String,
        offer: String,
        reply: Reply<(String, String)>,
    },
    AddCandidate {
        session: String,
        candidate: String,
        reply: Reply<()>,
    },
    Close {
        session: String,
        reply: Reply<()>,
    },
    EndPublisher {
        room: String,
    },
    Stats {
        reply: oneshot::Sender<pb::NodeStats>,
    },
    AttachRelay {
        room: String,
        sink: u64,
        tx: mpsc::Sender<pb::RelayMessage>,
        /// Metrics label: "edge", "packager" or "other".
        consumer: &'static str,
    },
    DetachRelay {
        room: String,
        sink: u64,
    },
    RelayKeyframe {
        room: String,
        /// Empty: every video track.
        track_id: String,
    },
    PushRelayed {
        session: String,
        frame: RelayedFrame,
    },
    /// How many relay consumers pull the room from this node.
    RelaySinks {
        room: String,
        reply: oneshot::Sender<usize>,
    },
    /// Whether the room's publisher is on this node (not an edge pull).
    HasOwnPublisher {
        room: String,
        reply: oneshot::Sender<bool>,
    },
    /// A local (non-WebRTC) publisher; `closed` fires when the core ends its session.
    /// With `upstream_keyframes` it is an edge pull's, and its keyframe wants (track
    /// ids) go there.
    PublishLocal {
        room: String,
        closed: oneshot::Sender<()>,
        upstream_keyframes: Option<mpsc::Sender<String>>,
        reply: Reply<String>,
    },
    /// Stop taking sessions (graceful shutdown).
    Drain,
    PushLocal {
        session: String,
        codec: FrameCodec,
        time: u64,
        data: Arc<[u8]>,
        config: String,
    },
}

/// A cloneable handle to the worker.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::Sender<Command>,
    node_id: Arc<str>,
}

/// The system wall clock, read once; the core follows it with the monotonic clock.
pub fn system_wall_clock() -> WallClock {
    let at = Instant::now();
    WallClock::new(at, unix_now_us())
}

/// A fresh secret for session ids (they are capabilities) from the OS.
pub fn random_id_seed() -> IdSeed {
    let mut b = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut b) {
        // Ids stay unique through their counter prefix; only guessing gets easier.
        tracing::warn!(error = %e, "no OS randomness; session ids seeded from the clock");
        b[..8].copy_from_slice(&unix_now_us().to_le_bytes());
    }
    IdSeed::new(b)
}

fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn gone() -> SessionError {
    SessionError::Stopped
}

impl Worker {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn publish(
        &self,
        room: String,
        offer: String,
    ) -> Result<(String, String), SessionError> {
        self.ask(|reply| Command::Publish { room, offer, reply })
            .await
    }

    pub async fn subscribe(
        &self,
        room: String,
        offer: String,
    ) -> Result<(String, String), SessionError> {
        self.ask(|reply| Command::Subscribe { room, offer, reply })
            .await
    }

    pub async fn add_candidate(
        &self,
        session: String,
        candidate: String,
    ) -> Result<(), SessionError> {
        self.ask(|reply| Command::AddCandidate {
            session,
            candidate,
            reply,
        })
        .await
    }

    pub async fn close(&self, session: String) -> Result<(), SessionError> {
        self.ask(|reply| Command::Close { session, reply }).await
    }

    pub async fn publish_local(
        &self,
        room: String,
        closed: oneshot::Sender<()>,
    ) -> Result<String, SessionError> {
        self.ask(|reply| Command::PublishLocal {
            room,
            closed,
            upstream_keyframes: None,
            reply,
        })
        .await
    }

    /// An edge pull's local publisher: its session, and a signal when the core ends it.
    pub async fn publish_relayed(
        &self,
        room: String,
        keyframes: mpsc::Sender<String>,
    ) -> Result<(String, oneshot::Receiver<()>), SessionError> {
        let (closed, closed_rx) = oneshot::channel();
        let session = self
            .ask(|reply| Command::PublishLocal {
                room,
                closed,
                upstream_keyframes: Some(keyframes),
                reply,
            })
            .await?;
        Ok((session, closed_rx))
    }

    /// A question the worker answers at once; `T::default()` if it stopped.
    async fn query<T: Default>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> T {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(make(reply)).await.is_err() {
            return T::default();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn has_own_publisher(&self, room: String) -> bool {
        self.query(|reply| Command::HasOwnPublisher { room, reply })
            .await
    }

    /// Relay consumers of `room` here.
    pub async fn relay_sinks(&self, room: String) -> usize {
        self.query(|reply| Command::RelaySinks { room, reply })
            .await
    }

    pub async fn stats(&self) -> Option<pb::NodeStats> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Stats { reply }).await.ok()?;
        rx.await.ok()
    }

    pub fn send(&self, cmd: Command) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    pub async fn send_wait(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

/// Starts the worker task; core events go to `events`.
pub fn spawn(
    socket: UdpSocket,
    core: Core,
    node_id: String,
    events: mpsc::UnboundedSender<CoreEvent>,
    shutdown: CancellationToken,
) -> (Worker, tokio::task::JoinHandle<anyhow::Result<()>>) {
    grow_recv_buffer(&socket);
    let (tx, rx) = mpsc::channel(1024);
    let worker = Worker {
        tx,
        node_id: node_id.clone().into(),
    };
    let task = tokio::spawn(run(socket, core, node_id, rx, events, shutdown));
    (worker, task)
}

/// Asks for [`RECV_BUFFER`]; says what the kernel granted.
fn grow_recv_buffer(socket: &UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "media socket receive buffer not raised");
    }
    // Linux reports twice what it keeps for data (the rest is bookkeeping).
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < RECV_BUFFER {
        tracing::warn!(
            granted,
            wanted = RECV_BUFFER,
            "media socket receive buffer capped: raise net.core.rmem_max, or floods and stalls drop media"
        );
    } else {
        tracing::info!(granted, "media socket receive buffer");
    }
}

/// A downstream relay link. Its queue is bounded and never waited on: when it is full
/// the message is dropped, and each video track resumes at its next keyframe, marked
/// `contiguous = false`, so a slow consumer never slows this node nor decodes garbage.
struct RelaySink {
    room: String,
    tx: mpsc::Sender<pb::RelayMessage>,
    consumer: &'static str,
    video: HashSet<String>,
    /// Video tracks waiting for a keyframe after a drop.
    stale: HashSet<String>,
}

struct Loop {
    socket: UdpSocket,
    core: Core,
    node_id: String,
    relays: HashMap<u64, RelaySink>,
    /// Keyframe wants of edge pulls' publishers, by session.
    upstream_keyframes: HashMap<String, mpsc::Sender<String>>,
    relay_bytes_out: u64,
    relay_resyncs: u64,
    events: mpsc::UnboundedSender<CoreEvent>,
    dropped_sends: u64,
    last_counters: crate::core::Counters,
    last_export: Instant,
    local_closers: HashMap<String, oneshot::Sender<()>>,
}

async fn run(
    socket: UdpSocket,
    core: Core,
    node_id: String,
    mut rx: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<CoreEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut lp = Loop::new(socket, core, node_id, events);
    let mut buf = vec![0u8; RECV_BUF];
    let mut metrics_at = Instant::now();
    loop {
        let now = Instant::now();
        let deadline = lp
            .core
            .next_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .min(now + Duration::from_millis(100));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(cmd) = rx.recv() => {
                lp.command(cmd);
                lp.flush();
            }
            r = lp.socket.recv_from(&mut buf) => {
                match r {
                    Ok((n, src)) => {
                        lp.core.handle_datagram(Instant::now(), src, &buf[..n]);
                        lp.flush();
                        // Take what else is queued without another wake-up.
                        for _ in 0..RECV_BATCH {
                            match lp.socket.try_recv_from(&mut buf) {
                                Ok((n, src)) => {
                                    lp.core.handle_datagram(Instant::now(), src, &buf[..n]);
                                    lp.flush();
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    // ICMP port-unreachable from a gone peer surfaces here on Linux.
                    Err(e) => tracing::trace!(error = %e, "UDP receive error"),
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        lp.core.handle_timeout(Instant::now());
        lp.flush();
        if metrics_at.elapsed() >= Duration::from_secs(1) {
            metrics_at = Instant::now();
            lp.export_metrics();
        }
    }
    tracing::info!("SFU worker stopped");
    Ok(())
}

impl Loop {
    fn new(
        socket: UdpSocket,
        core: Core,
        node_id: String,
        events: mpsc::UnboundedSender<CoreEvent>,
    ) -> Self {
        Self {
            socket,
            core,
            node_id,
            relays: HashMap::new(),
            upstream_keyframes: HashMap::new(),
            relay_bytes_out: 0,
            relay_resyncs: 0,
            events,
            dropped_sends: 0,
            last_counters: Default::default(),
            last_export: Instant::now(),
            local_closers: HashMap::new(),
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Publish { room, offer, reply } => {
                let _ = reply.send(self.core.publish(now, &room, &offer));
            }
            Command::Subscribe { room, offer, reply } => {
                let _ = reply.send(self.core.subscribe(now, &room, &offer));
            }
            Command::AddCandidate {
                session,
                candidate,
                reply,
            } => {
                let _ = reply.send(self.core.add_candidate(&session, &candidate));
            }
            Command::Close { session, reply } => {
                let _ = reply.send(self.core.close(&session));
            }
            Command::EndPublisher { room } => {
                if self.core.end_publisher(&room) {
                    tracing::info!(room_id = %room, "publisher cut");
                }
            }
            Command::Stats { reply } => {
                let c = self.core.counters();
                let (publishers, subscribers) = self.core.session_counts();
                let _ = reply.send(pb::NodeStats {
                    node_id: self.node_id.clone(),
                    publishers: publishers as u32,
                    subscribers: subscribers as u32,
                    frames_in: c.frames_in,
                    frames_out: c.frames_out,
                    bytes_in: c.bytes_in,
                    bytes_out: c.bytes_out,
                    keyframe_requests: c.keyframe_requests,
                    rooms: self.core.room_stats(),
                    relays_out: self.relays.len() as u32,
                    // Filled by the gRPC layer, which owns the edge pulls.
                    relays_in: 0,
                });
            }
            Command::AttachRelay {
                room,
                sink,
                tx,
                consumer,
            } => {
                self.relays.insert(
                    sink,
                    RelaySink {
                        room: room.clone(),
                        tx,
                        consumer,
                        video: HashSet::new(),
                        stale: HashSet::new(),
                    },
                );
                self.core.attach_relay(now, &room, sink);
            }
            Command::DetachRelay { room, sink } => {
                self.relays.remove(&sink);
                self.core.detach_relay(&room, sink);
            }
            Command::RelayKeyframe { room, track_id } => {
                self.core.relay_keyframe_request(&room, &track_id, now)
            }
            Command::PushRelayed { session, frame } => {
                let _ = self.core.push_relayed(now, &session, frame);
            }
            Command::RelaySinks { room, reply } => {
                let _ = reply.send(self.relays.values().filter(|s| s.room == room).count());
            }
            Command::HasOwnPublisher { room, reply } => {
                let _ = reply.send(self.core.has_own_publisher(&room));
            }
            Command::PublishLocal {
                room,
                closed,
                upstream_keyframes,
                reply,
            } => {
                let res = match &upstream_keyframes {
                    Some(_) => self.core.publish_relayed(&room),
                    None => self.core.publish_local(&room),
                };
                if let Ok(session) = &res {
                    self.local_closers.insert(session.clone(), closed);
                    if let Some(k) = upstream_keyframes {
                        self.upstream_keyframes.insert(session.clone(), k);
                    }
                }
                let _ = reply.send(res);
            }
            Command::Drain => self.core.set_draining(),
            Command::PushLocal {
                session,
                codec,
                time,
                data,
                config,
            } => {
                let _ = self
                    .core
                    .push_local(now, &session, codec, time, data, &config);
            }
        }
    }

    fn flush(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit {
                    destination,
                    contents,
                } => {
                    // Never block the loop on one slow or gone peer: drop instead.
                    if self.socket.try_send_to(&contents, destination).is_err() {
                        self.dropped_sends += 1;
                    }
                }
                Output::Relay { sink, msg } => self.relay(sink, msg),
                Output::UpstreamKeyframe { session, track_id } => {
                    if let Some(tx) = self.upstream_keyframes.get(&session) {
                        // Coalesced already; a full queue has the same asks in it.
                        let _ = tx.try_send(track_id);
                    }
                }
                Output::Event(e) => {
                    if let CoreEvent::SessionClosed { session, .. } = &e {
                        if let Some(c) = self.local_closers.remove(session) {
                            let _ = c.send(());
                        }
                        self.upstream_keyframes.remove(session);
                    }
                    let _ = self.events.send(e);
                }
            }
        }
    }

    /// One message to a relay sink: never waits (see [`RelaySink`]).
    fn relay(&mut self, sink: u64, mut msg: pb::RelayMessage) {
        let Some(s) = self.relays.get_mut(&sink) else {
            return;
        };
        let mut resynced = false;
        match &mut msg.msg {
            Some(pb::relay_message::Msg::Track(t)) if t.kind == pb::TrackKind::Video as i32 => {
                s.video.insert(t.track_id.clone());
            }
            Some(pb::relay_message::Msg::PublisherChanged(_)) => {
                s.video.clear();
                s.stale.clear();
            }
            Some(pb::relay_message::Msg::Frame(f)) if s.stale.contains(&f.track_id) => {
                if !f.keyframe {
                    return;
                }
                f.contiguous = false;
                resynced = true;
            }
            _ => {}
        }
        let (bytes, track) = match &msg.msg {
            Some(pb::relay_message::Msg::Frame(f)) => {
                (f.data.len() as u64, Some(f.track_id.clone()))
            }
            _ => (0, None),
        };
        match s.tx.try_send(msg) {
            Ok(()) => {
                self.relay_bytes_out += bytes;
                if resynced {
                    if let Some(t) = track {
                        s.stale.remove(&t);
                    }
                    self.relay_resyncs += 1;
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) if track.is_none() => {
                // A lost track or publisher change would leave the consumer confused:
                // end its stream instead; it pulls again and gets the room's state.
                tracing::info!(room_id = %s.room, sink, "relay consumer too slow; link cut");
                self.relays.remove(&sink);
                self.relay_resyncs += 1;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A stuck consumer: drop, and resume every video track at a keyframe.
                s.stale = s.video.clone();
                let room = s.room.clone();
                self.core.relay_keyframe_request(&room, "", Instant::now());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.relays.remove(&sink);
            }
        }
    }

    fn export_metrics(&mut self) {
        let c = self.core.counters();
        let (publishers, subscribers) = self.core.session_counts();
        metrics::gauge!("skylark_sfu_publishers").set(publishers as f64);
        metrics::gauge!("skylark_sfu_subscribers").set(subscribers as f64);
        metrics::counter!("skylark_sfu_frames_in_total").absolute(c.frames_in);
        metrics::counter!("skylark_sfu_frames_out_total").absolute(c.frames_out);
        metrics::counter!("skylark_sfu_bytes_in_total").absolute(c.bytes_in);
        metrics::counter!("skylark_sfu_bytes_out_total").absolute(c.bytes_out);
        metrics::counter!("skylark_sfu_datagrams_in_total").absolute(c.datagrams_in);
        metrics::counter!("skylark_sfu_datagrams_out_total").absolute(c.datagrams_out);
        metrics::counter!("skylark_sfu_datagrams_unmatched_total").absolute(c.datagrams_unmatched);
        for reason in DropReason::ALL {
            metrics::counter!("skylark_sfu_datagrams_dropped_total", "reason" => reason.label())
                .absolute(c.dropped(reason));
        }
        metrics::counter!("skylark_sfu_connect_timeouts_total").absolute(c.connect_timeouts);
        metrics::counter!("skylark_sfu_keyframe_requests_total").absolute(c.keyframe_requests);
        metrics::counter!("skylark_sfu_packets_in_total").absolute(c.packets_in);
        metrics::counter!("skylark_sfu_packets_out_total").absolute(c.packets_out);
        metrics::counter!("skylark_sfu_nacks_to_publishers_total").absolute(c.nacks_to_publishers);
        metrics::counter!("skylark_sfu_nacks_from_subscribers_total")
            .absolute(c.nacks_from_subscribers);
        metrics::counter!("skylark_sfu_plis_from_subscribers_total")
            .absolute(c.plis_from_subscribers);
        metrics::gauge!("skylark_sfu_publisher_loss_ratio")
            .set(f64::from(self.core.publisher_loss()));
        let secs = self.last_export.elapsed().as_secs_f64().max(0.001);
        metrics::gauge!("skylark_sfu_ingress_bitrate_bps")
            .set((c.bytes_in - self.last_counters.bytes_in) as f64 * 8.0 / secs);
        metrics::gauge!("skylark_sfu_egress_bitrate_bps")
            .set((c.bytes_out - self.last_counters.bytes_out) as f64 * 8.0 / secs);
        // Node-level only: room ids (private rooms' too) and client-chosen track ids never
        // become label values; per-room figures are in the SfuNode Stats call.
        metrics::gauge!("skylark_sfu_rooms").set(self.core.room_stats().len() as f64);
        metrics::counter!("skylark_sfu_send_drops_total").absolute(self.dropped_sends);
        for consumer in ["edge", "packager", "other"] {
            let n = self
                .relays
                .values()
                .filter(|s| s.consumer == consumer)
                .count();
            metrics::gauge!("skylark_sfu_relays_out", "consumer" => consumer).set(n as f64);
        }
        metrics::counter!("skylark_sfu_relay_bytes_total", "direction" => "out")
            .absolute(self.relay_bytes_out);
        metrics::counter!("skylark_sfu_relay_resyncs_total").absolute(self.relay_resyncs);
        self.last_counters = c;
        self.last_export = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreConfig;

    fn frame(key: bool, n: u8) -> Arc<[u8]> {
        let nal = if key { 0x65 } else { 0x41 };
        Arc::from(vec![0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, nal, n])
    }

    /// What a relay consumer got: (keyframe, contiguous, last byte) per frame, and the
    /// number of other messages.
    fn drain(rx: &mut mpsc::Receiver<pb::RelayMessage>) -> (Vec<(bool, bool, u8)>, usize) {
        let (mut frames, mut other) = (Vec::new(), 0);
        while let Ok(m) = rx.try_recv() {
            match m.msg {
                Some(pb::relay_message::Msg::Frame(f)) => {
                    frames.push((f.keyframe, f.contiguous, *f.data.last().unwrap_or(&0)))
                }
                _ => other += 1,
            }
        }
        (frames, other)
    }

    /// A stuck relay consumer never holds the node up: what does not fit is dropped,
    /// video resumes at the next keyframe marked `contiguous = false`, and a control
    /// message that does not fit cuts the link (the consumer pulls again).
    #[tokio::test]
    async fn a_slow_relay_consumer_drops_and_resumes_at_a_keyframe() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let core = Core::new(CoreConfig {
            local_addr: addr,
            announce_addr: addr,
            max_sessions: 10,
            connect_timeout: crate::core::DEFAULT_CONNECT_TIMEOUT,
            wall_clock: system_wall_clock(),
            id_seed: IdSeed::new([1; 32]),
        });
        let (events, _events_rx) = mpsc::unbounded_channel();
        let mut lp = Loop::new(socket, core, "n".into(), events);
        let (tx, mut rx) = mpsc::channel(4);
        lp.command(Command::AttachRelay {
            room: "r".into(),
            sink: 1,
            tx,
            consumer: "edge",
        });
        let session = lp.core.publish_local("r").unwrap();
        lp.flush();
        let push = |lp: &mut Loop, codec: FrameCodec, data: Arc<[u8]>| {
            lp.command(Command::PushLocal {
                session: session.clone(),
                codec,
                time: 0,
                data,
                config: String::new(),
            });
            lp.flush();
        };
        // The publisher change, the track, a keyframe and a frame fill the queue; the
        // rest is dropped.
        for n in 0..6 {
            push(&mut lp, FrameCodec::H264, frame(n == 0, n));
        }
        assert_eq!(drain(&mut rx), (vec![(true, true, 0), (false, true, 1)], 2));
        // Room again, but no keyframe yet: still dropped; then the keyframe resumes.
        push(&mut lp, FrameCodec::H264, frame(false, 6));
        push(&mut lp, FrameCodec::H264, frame(true, 7));
        push(&mut lp, FrameCodec::H264, frame(false, 8));
        assert_eq!(
            drain(&mut rx),
            (vec![(true, false, 7), (false, true, 8)], 0)
        );
        assert_eq!(lp.relay_resyncs, 1);
        // A new track's announcement that does not fit cuts the link.
        for n in 9..13 {
            push(&mut lp, FrameCodec::H264, frame(false, n));
        }
        push(&mut lp, FrameCodec::Opus, Arc::from(vec![0xf8, 0xff]));
        assert!(lp.relays.is_empty(), "link cut");
        drain(&mut rx);
        assert!(
            rx.recv().await.is_none(),
            "the consumer sees its stream end"
        );
    }
}
