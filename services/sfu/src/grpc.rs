//! `skylark.sfu.v1.SfuNode`: the worker's commands as gRPC.

use crate::core::{Choice, FrameCodec, SessionError};
use crate::edge::Edges;
use crate::grants::Grants;
use crate::worker::Command;
use crate::workers::Workers;
use futures_util::StreamExt;
use skylark_proto::sfu::v1 as pb;
use skylark_proto::sfu::v1::sfu_node_server::{SfuNode, SfuNodeServer};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Frames buffered per relay consumer before the SFU drops (the consumer asks for a keyframe).
const RELAY_QUEUE: usize = 512;

#[derive(Clone)]
pub struct SfuService {
    worker: Workers,
    edges: Edges,
    grants: Grants,
}

static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

impl SfuService {
    pub fn new(worker: Workers, edges: Edges, grants: Grants) -> Self {
        Self {
            worker,
            edges,
            grants,
        }
    }

    pub fn into_server(self) -> SfuNodeServer<Self> {
        SfuNodeServer::new(self)
            .max_decoding_message_size(MAX_PUSH_FRAME + 1024)
            .max_encoding_message_size(4 * 1024 * 1024)
    }
}

fn status(e: SessionError) -> Status {
    match e {
        SessionError::BadSdp(m) => Status::invalid_argument(format!("malformed SDP: {m}")),
        SessionError::UnsupportedCodec(m) => Status::failed_precondition(m),
        SessionError::UnknownSession => Status::not_found("no such session"),
        SessionError::BadCandidate(m) => {
            Status::invalid_argument(format!("bad ICE candidate: {m}"))
        }
        SessionError::AtCapacity => Status::resource_exhausted("SFU node at capacity"),
        SessionError::Overloaded => {
            let mut s = Status::resource_exhausted("SFU node overloaded: its workers are busy");
            s.metadata_mut().insert(
                skylark_proto::sfu::REFUSED_FOR_CPU,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            s
        }
        SessionError::Draining => Status::unavailable("SFU node draining: retry"),
        SessionError::Stopped => Status::unavailable("SFU worker stopped: retry"),
        SessionError::PublishedHere | SessionError::NotASubscriber => {
            Status::failed_precondition(e.to_string())
        }
        SessionError::UnknownLayer(_) => Status::invalid_argument(e.to_string()),
    }
}

fn valid_room(room: &str) -> Result<(), Status> {
    if room.is_empty() || room.len() > 128 {
        return Err(Status::invalid_argument("room_id: 1 to 128 bytes"));
    }
    Ok(())
}

type PushEvents = Pin<Box<dyn futures_util::Stream<Item = Result<pb::PushEvent, Status>> + Send>>;

/// Largest frame a local publisher may push (a 4K keyframe fits).
const MAX_PUSH_FRAME: usize = 4 * 1024 * 1024;

fn push_event(msg: pb::push_event::Msg) -> pb::PushEvent {
    pb::PushEvent { msg: Some(msg) }
}

type RelayStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<pb::RelayMessage, Status>> + Send>>;

/// Detaches a relay sink when its stream is dropped.
struct DetachOnDrop {
    worker: Workers,
    room: String,
    sink: u64,
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        self.worker.send(Command::DetachRelay {
            room: std::mem::take(&mut self.room),
            sink: self.sink,
        });
    }
}

#[tonic::async_trait]
impl SfuNode for SfuService {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::SessionAnswer>, Status> {
        let r = req.into_inner();
        valid_room(&r.room_id)?;
        self.grants.admit(&r.room_id, &r.key_id).await?;
        let (session_id, answer_sdp) = self
            .worker
            .publish(r.room_id.clone(), r.offer_sdp)
            .await
            .map_err(status)?;
        self.grants.record(&session_id, &r.room_id, &r.key_id);
        Ok(Response::new(pb::SessionAnswer {
            session_id,
            answer_sdp,
        }))
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SessionAnswer>, Status> {
        let r = req.into_inner();
        valid_room(&r.room_id)?;
        if let Some(up) = r.upstream.filter(|u| !u.grpc_url.is_empty()) {
            if !(up.grpc_url.starts_with("http://") || up.grpc_url.starts_with("https://")) {
                return Err(Status::invalid_argument(
                    "upstream.grpc_url: an http(s) URL",
                ));
            }
            self.edges.ensure(&r.room_id, up).await;
        }
        let (session_id, answer_sdp) = self
            .worker
            .subscribe(r.room_id, r.offer_sdp)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SessionAnswer {
            session_id,
            answer_sdp,
        }))
    }

    async fn add_candidate(
        &self,
        req: Request<pb::AddCandidateRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        self.worker
            .add_candidate(r.session_id, r.candidate)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn close(&self, req: Request<pb::CloseRequest>) -> Result<Response<pb::Empty>, Status> {
        self.worker
            .close(req.into_inner().session_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn layers(
        &self,
        req: Request<pb::LayersRequest>,
    ) -> Result<Response<pb::LayersReply>, Status> {
        let r = req.into_inner();
        let choice =
            match r.choice.as_str() {
                "" => None,
                "auto" => Some(Choice::Auto),
                rid if rid.len() <= 16
                    && rid
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    Some(Choice::Layer(rid.into()))
                }
                _ => return Err(Status::invalid_argument(
                    "choice: \"auto\", a layer's rid (up to 16 letters, digits, - or _), or empty",
                )),
            };
        let report = self
            .worker
            .layers(r.session_id, choice)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LayersReply {
            layers: report
                .layers
                .iter()
                .map(|(rid, p)| pb::Layer {
                    rid: rid.to_string(),
                    width: p.width,
                    height: p.height,
                })
                .collect(),
            following: report.following.map(|r| r.to_string()).unwrap_or_default(),
            choice: match report.choice {
                Choice::Auto => "auto".into(),
                Choice::Layer(rid) => rid.to_string(),
            },
        }))
    }

    async fn stats(&self, _: Request<pb::StatsRequest>) -> Result<Response<pb::NodeStats>, Status> {
        let mut stats = self
            .worker
            .stats()
            .await
            .ok_or_else(|| Status::unavailable("SFU worker stopped"))?;
        stats.relays_in = self.edges.len() as u32;
        Ok(Response::new(stats))
    }

    type PushStream = PushEvents;

    async fn push(
        &self,
        req: Request<Streaming<pb::PushMessage>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let mut frames = req.into_inner();
        let start = match frames.next().await {
            Some(Ok(pb::PushMessage {
                msg: Some(pb::push_message::Msg::Start(s)),
            })) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be `start`",
                ))
            }
        };
        valid_room(&start.room_id)?;
        self.grants.admit(&start.room_id, &start.key_id).await?;
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let session = self
            .worker
            .publish_local(start.room_id.clone(), closed_tx)
            .await
            .map_err(status)?;
        self.grants.record(&session, &start.room_id, &start.key_id);
        tracing::info!(room_id = %start.room_id, %session, "local publisher started");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx
            .send(Ok(push_event(pb::push_event::Msg::Ready(pb::PushReady {
                session_id: session.clone(),
            }))))
            .await;
        let worker = self.worker.clone();
        tokio::spawn(async move {
            let mut closed_rx = closed_rx;
            loop {
                tokio::select! {
                    _ = &mut closed_rx => {
                        let _ = tx.send(Ok(push_event(pb::push_event::Msg::Ended(pb::Empty {})))).await;
                        return;
                    }
                    m = frames.next() => {
                        let Some(Ok(pb::PushMessage { msg: Some(pb::push_message::Msg::Frame(f)) })) = m else { break };
                        let codec = match f.codec.as_str() {
                            "H264" => FrameCodec::H264,
                            "opus" => FrameCodec::Opus,
                            "aac" => FrameCodec::Aac,
                            _ => continue,
                        };
                        if f.data.is_empty() || f.data.len() > MAX_PUSH_FRAME {
                            continue;
                        }
                        let cmd = Command::PushLocal { session: session.clone(), codec, time: f.rtp_time, data: f.data.into(), config: f.config };
                        if !worker.send_wait(cmd).await {
                            return;
                        }
                    }
                }
            }
            // The pusher went away: end its session.
            let _ = worker.close(session).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type RelayPullStream = RelayStream;

    async fn relay_pull(
        &self,
        req: Request<Streaming<pb::RelayFeedback>>,
    ) -> Result<Response<Self::RelayPullStream>, Status> {
        let mut feedback = req.into_inner();
        let (room, consumer, from_gop) = match feedback.next().await {
            Some(Ok(pb::RelayFeedback {
                msg: Some(pb::relay_feedback::Msg::Start(s)),
            })) => {
                let consumer = match s.consumer.as_str() {
                    "edge" => "edge",
                    "packager" => "packager",
                    _ => "other",
                };
                (s.room_id, consumer, s.from_gop)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be `start`",
                ))
            }
        };
        valid_room(&room)?;
        let sink = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
        if !self
            .worker
            .send_wait(Command::AttachRelay {
                room: room.clone(),
                sink,
                tx,
                consumer,
                from_gop,
            })
            .await
        {
            return Err(Status::unavailable("SFU worker stopped"));
        }
        tracing::info!(room_id = %room, sink, consumer, from_gop, "relay attached");
        let guard = DetachOnDrop {
            worker: self.worker.clone(),
            room: room.clone(),
            sink,
        };
        let worker = self.worker.clone();
        let room_fb = room.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = feedback.next().await {
                if let Some(pb::relay_feedback::Msg::KeyframeRequest(k)) = msg.msg {
                    if k.track_id.len() > 256 {
                        continue;
                    }
                    // Coalesced per track in the core, across every consumer of the room.
                    worker.send(Command::RelayKeyframe {
                        room: room_fb.clone(),
                        track_id: k.track_id,
                    });
                }
            }
        });
        let stream = ReceiverStream::new(rx).map(move |m| {
            let _keep = &guard;
            Ok(m)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placement asks a node that refused for CPU no more for that viewer; one that
    /// refused for sessions may have room after the next heartbeat.
    #[test]
    fn only_a_refusal_for_cpu_says_so() {
        let key = skylark_proto::sfu::REFUSED_FOR_CPU;
        let cpu = status(SessionError::Overloaded);
        assert_eq!(cpu.code(), tonic::Code::ResourceExhausted);
        assert!(cpu.metadata().get(key).is_some());
        let sessions = status(SessionError::AtCapacity);
        assert_eq!(sessions.code(), tonic::Code::ResourceExhausted);
        assert!(sessions.metadata().get(key).is_none());
    }
}
