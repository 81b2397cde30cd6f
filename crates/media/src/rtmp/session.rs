//! The server side of one RTMP connection from a publisher, sans-IO.

use std::collections::VecDeque;

use bytes::Bytes;

use super::amf0::{self, Amf0Limits, Amf0Value};
use super::chunk::{ChunkDecoder, ChunkEncoder, ChunkLimits, RawMessage};
use super::handshake::Handshake;
use super::message::{self, ControlMessage, UserControlEvent};
use super::RtmpError;
use crate::rtp::TsUnwrapper;

/// Chunk stream for command responses on the connection (`_result`, ...).
const COMMAND_CSID: u32 = 3;
/// Chunk stream for stream-level status messages (`onStatus`).
const STATUS_CSID: u32 = 5;
/// Most message streams one connection may create.
const MAX_STREAMS: u32 = 16;

/// Limits and settings of a [`ServerSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest message accepted (audio and video included).
    pub max_message_size: usize,
    /// Largest command or data (AMF) message accepted: AMF decodes to
    /// many small values, so these are held to a much smaller size.
    pub max_amf_message_size: usize,
    /// Most chunk streams the peer may use at once.
    pub max_chunk_streams: usize,
    /// Most bytes held in partly received messages.
    pub max_pending_bytes: usize,
    /// Limits until a publish is accepted: a connection that has not proven its stream
    /// key holds only what commands need, not a keyframe's worth of memory.
    pub setup_limits: ChunkLimits,
    /// The chunk size this server sends with (announced after `connect`).
    pub chunk_size: u32,
    /// The Window Acknowledgement Size announced to the peer.
    pub window_ack_size: u32,
    /// The Set Peer Bandwidth announced to the peer (dynamic limit).
    pub peer_bandwidth: u32,
    /// Seed for the handshake's S1 random bytes.
    pub handshake_seed: u64,
}

/// [`SessionConfig::setup_limits`] by default: AMF commands fit (`connect`,
/// `publish` and early metadata are a few hundred bytes).
pub const SETUP_LIMITS: ChunkLimits = ChunkLimits {
    max_message_size: 16 << 10,
    max_chunk_streams: 8,
    max_pending_bytes: 32 << 10,
};

impl Default for SessionConfig {
    /// 8 MiB messages, 256 KiB AMF messages, 64 chunk streams, 16 MiB
    /// pending, 4096-byte chunks out, 2.5 MB windows.
    fn default() -> Self {
        Self {
            max_message_size: 8 << 20,
            max_amf_message_size: 256 << 10,
            max_chunk_streams: 64,
            max_pending_bytes: 16 << 20,
            setup_limits: SETUP_LIMITS,
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            peer_bandwidth: 2_500_000,
            handshake_seed: 0x5ca1_ab1e,
        }
    }
}

/// What happened on the connection, for the server to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The client connected to an application (`connect` was answered).
    Connect {
        /// The `app` property, e.g. `live` for `rtmp://host/live/key`.
        app: String,
        /// The `tcUrl` property, if sent.
        tc_url: Option<String>,
    },
    /// The client asks to publish. Answer with
    /// [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`];
    /// media is dropped until then. A connection publishes at most once (as
    /// OBS and FFmpeg do), so the answer always concerns this request; if the
    /// client withdrew it or the session failed meanwhile, the answer returns
    /// [`RtmpError::NoPendingPublish`].
    Publish {
        /// The application from `connect`.
        app: String,
        /// The stream name (the stream key for `rtmp://host/live/key`),
        /// exactly as sent, query string included.
        stream_name: String,
        /// The publishing type: `live`, `record` or `append`.
        publish_type: String,
    },
    /// The client stopped publishing (`FCUnpublish`, `deleteStream` or
    /// `closeStream` on the published stream).
    Unpublish,
    /// Stream metadata (`@setDataFrame` / `onMetaData`): the values of an
    /// FLV `onMetaData` script tag, i.e. `["onMetaData", {...}]`.
    Metadata(Vec<Amf0Value>),
    /// An audio message: an FLV audio tag body.
    Audio {
        /// Milliseconds, extended past the 32-bit wrap.
        timestamp: u64,
        /// The FLV audio tag body.
        data: Bytes,
    },
    /// A video message: an FLV video tag body.
    Video {
        /// Milliseconds, extended past the 32-bit wrap.
        timestamp: u64,
        /// The FLV video tag body.
        data: Bytes,
    },
}

/// Where a [`ServerSession`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Exchanging C0/C1/C2 and S0/S1/S2.
    Handshake,
    /// Waiting for `connect`.
    WaitingConnect,
    /// Connected to an application; no publish yet (or it ended).
    Connected,
    /// A [`SessionEvent::Publish`] awaits an answer.
    PublishPending,
    /// Publishing: media flows as events.
    Publishing,
    /// Rejected, or failed with an error: close the connection.
    Closed,
}

/// Counters of a [`ServerSession`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes fed, handshake included.
    pub bytes_received: u64,
    /// Complete messages received.
    pub messages: u64,
    /// Audio and video messages dropped because no publish was accepted.
    pub dropped_media: u64,
    /// Acknowledgements sent.
    pub acks_sent: u64,
}

#[derive(Debug, Clone)]
struct PublishState {
    stream_id: u32,
    stream_name: String,
    accepted: bool,
    /// Metadata that arrived before the publish was accepted.
    early_metadata: Option<Vec<Amf0Value>>,
}

/// The server side of one RTMP connection, for publishers (OBS, FFmpeg,
/// librtmp), without I/O.
///
/// The caller owns the socket: it passes every received byte to
/// [`feed`](Self::feed), writes out what [`take_output`](Self::take_output)
/// returns, and handles the events from [`poll_event`](Self::poll_event).
/// Any error means the peer broke the protocol or a limit: close the
/// connection. Output and events grow only with input, so draining both after
/// each `feed` keeps them bounded.
///
/// ```
/// use skylark_media::rtmp::{ServerSession, SessionConfig, SessionState};
///
/// let mut session = ServerSession::new(SessionConfig::default());
/// let mut c0c1 = vec![3u8];
/// c0c1.resize(1 + 1536, 0);
/// session.feed(&c0c1)?;
/// assert_eq!(session.take_output().len(), 1 + 2 * 1536); // S0 S1 S2
/// session.feed(&[0u8; 1536])?; // C2
/// assert_eq!(session.state(), SessionState::WaitingConnect);
/// assert!(session.poll_event().is_none());
/// # Ok::<(), skylark_media::rtmp::RtmpError>(())
/// ```
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    state: SessionState,
    handshake: Handshake,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    out: Vec<u8>,
    events: VecDeque<SessionEvent>,
    app: String,
    next_stream_id: u32,
    publish: Option<PublishState>,
    /// Set by the first `publish`: one publish per connection, so that an
    /// answer can only ever apply to the request the caller saw.
    publish_requested: bool,
    /// The peer's acknowledgement window (0 = none announced).
    peer_window: u32,
    /// `bytes_received` at the last acknowledgement.
    last_ack: u64,
    /// The window size last announced to the peer.
    announced_window: u32,
    /// One clock for audio and video, so that both stay on one timeline
    /// across a 32-bit wrap.
    media_ts: TsUnwrapper,
    stats: SessionStats,
}

impl ServerSession {
    /// A session waiting for C0/C1.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            handshake: Handshake::new(config.handshake_seed),
            decoder: ChunkDecoder::new(config.setup_limits),
            encoder: ChunkEncoder::new(),
            state: SessionState::Handshake,
            out: Vec::new(),
            events: VecDeque::new(),
            app: String::new(),
            next_stream_id: 1,
            publish: None,
            publish_requested: false,
            peer_window: 0,
            last_ack: 0,
            announced_window: 0,
            media_ts: TsUnwrapper::new(),
            stats: SessionStats::default(),
            config,
        }
    }

    /// Where the session is.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The application from `connect` (empty before it).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Takes the bytes to write to the peer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Processes received bytes. On error the session is closed and every
    /// later call fails with [`RtmpError::Closed`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), RtmpError> {
        if self.state == SessionState::Closed {
            return Err(RtmpError::Closed);
        }
        let result = self.feed_inner(data);
        if result.is_err() {
            self.state = SessionState::Closed;
        }
        result
    }

    /// Accepts the pending publish: sends StreamBegin and
    /// `onStatus(NetStream.Publish.Start)`; media events follow from now on.
    pub fn accept_publish(&mut self) -> Result<(), RtmpError> {
        let publish = match &mut self.publish {
            Some(p) if !p.accepted && self.state == SessionState::PublishPending => p,
            _ => return Err(RtmpError::NoPendingPublish),
        };
        publish.accepted = true;
        // The key is proven: media-sized messages from now on.
        self.decoder.set_limits(ChunkLimits {
            max_message_size: self.config.max_message_size,
            max_chunk_streams: self.config.max_chunk_streams,
            max_pending_bytes: self.config.max_pending_bytes,
        });
        let stream_id = publish.stream_id;
        let name = publish.stream_name.clone();
        let early = publish.early_metadata.take();
        self.state = SessionState::Publishing;
        self.send_control(ControlMessage::UserControl(UserControlEvent::StreamBegin(
            stream_id,
        )));
        self.send_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{name} is now published."),
        );
        if let Some(values) = early {
            self.events.push_back(SessionEvent::Metadata(values));
        }
        Ok(())
    }

    /// Rejects the pending publish with an `onStatus` error, e.g.
    /// `NetStream.Publish.BadName` or `NetStream.Publish.Unauthorized`. The
    /// session is then closed: write the output and close the connection.
    pub fn reject_publish(&mut self, code: &str, description: &str) -> Result<(), RtmpError> {
        let stream_id = match &self.publish {
            Some(p) if !p.accepted && self.state == SessionState::PublishPending => p.stream_id,
            _ => return Err(RtmpError::NoPendingPublish),
        };
        self.send_status(stream_id, "error", code, description);
        self.publish = None;
        self.state = SessionState::Closed;
        Ok(())
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), RtmpError> {
        self.stats.bytes_received += data.len() as u64;
        if self.state == SessionState::Handshake {
            let used = self.handshake.feed(data)?;
            self.out.extend(self.handshake.take_output());
            data = &data[used..];
            if !self.handshake.is_done() {
                return Ok(());
            }
            self.state = SessionState::WaitingConnect;
        }
        self.decoder.push(data);
        while let Some(msg) = self.decoder.next_message()? {
            self.stats.messages += 1;
            self.handle(msg)?;
        }
        if self.peer_window > 0
            && self.stats.bytes_received - self.last_ack >= u64::from(self.peer_window)
        {
            self.last_ack = self.stats.bytes_received;
            self.stats.acks_sent += 1;
            // The sequence number wraps at 32 bits.
            self.send_control(ControlMessage::Acknowledgement(
                self.stats.bytes_received as u32,
            ));
        }
        Ok(())
    }

    fn send(&mut self, msg: &RawMessage) {
        self.encoder.encode(msg, &mut self.out);
    }

    fn send_control(&mut self, msg: ControlMessage) {
        self.send(&msg.to_message());
    }

    fn send_command(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
        // Built from short literals and echoed strings that arrived in an
        // AMF message of bounded size: encoding cannot fail.
        let payload = amf0::encode_all(values).unwrap_or_default();
        self.send(&RawMessage {
            csid,
            timestamp: 0,
            type_id: message::COMMAND_AMF0,
            stream_id,
            payload: payload.into(),
        });
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = Amf0Value::object([
            ("level", Amf0Value::from(level)),
            ("code", Amf0Value::from(code)),
            ("description", Amf0Value::from(description)),
        ]);
        self.send_command(
            STATUS_CSID,
            stream_id,
            &[
                Amf0Value::from("onStatus"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                info,
            ],
        );
    }

    fn send_result(&mut self, txn: f64, values: Vec<Amf0Value>) {
        let mut all = vec![Amf0Value::from("_result"), Amf0Value::Number(txn)];
        all.extend(values);
        self.send_command(COMMAND_CSID, 0, &all);
    }

    fn handle(&mut self, msg: RawMessage) -> Result<(), RtmpError> {
        match msg.type_id {
            message::SET_CHUNK_SIZE
            | message::ABORT
            | message::ACKNOWLEDGEMENT
            | message::WINDOW_ACK_SIZE
            | message::SET_PEER_BANDWIDTH
            | message::USER_CONTROL => {
                let control = ControlMessage::parse(msg.type_id, &msg.payload)?;
                self.handle_control(control)
            }
            message::COMMAND_AMF0 | message::COMMAND_AMF3 => {
                let values = self.decode_amf(&msg)?;
                self.handle_command(msg.stream_id, values)
            }
            message::DATA_AMF0 | message::DATA_AMF3 => {
                let values = self.decode_amf(&msg)?;
                self.handle_data(msg.stream_id, values);
                Ok(())
            }
            message::AUDIO | message::VIDEO => {
                self.handle_media(msg.type_id, msg.stream_id, msg.timestamp, msg.payload);
                Ok(())
            }
            message::AGGREGATE => self.handle_aggregate(&msg),
            // Shared objects and unknown types: not used by publishers.
            _ => Ok(()),
        }
    }

    fn decode_amf(&self, msg: &RawMessage) -> Result<Vec<Amf0Value>, RtmpError> {
        if msg.payload.len() > self.config.max_amf_message_size {
            return Err(RtmpError::MessageTooLarge {
                length: msg.payload.len(),
                max: self.config.max_amf_message_size,
            });
        }
        let mut body = &msg.payload[..];
        if matches!(msg.type_id, message::COMMAND_AMF3 | message::DATA_AMF3) {
            // A format byte of 0 means the rest is AMF0, which is what every
            // client sends; real AMF3 is not supported.
            match body.split_first() {
                Some((0, rest)) => body = rest,
                _ => return Err(RtmpError::Malformed("AMF3 message")),
            }
        }
        Ok(amf0::decode_all_with(body, Amf0Limits::default())?)
    }

    fn handle_control(&mut self, control: ControlMessage) -> Result<(), RtmpError> {
        match control {
            ControlMessage::SetChunkSize(size) => self.decoder.set_chunk_size(size)?,
            ControlMessage::Abort(csid) => self.decoder.abort(csid),
            ControlMessage::Acknowledgement(_) => {}
            ControlMessage::WindowAckSize(size) => self.peer_window = size,
            ControlMessage::SetPeerBandwidth { size, limit_type } => {
                // §5.4.5: answer with a Window Acknowledgement Size when the
                // size differs from the one last sent.
                let size = if limit_type == message::LIMIT_SOFT && self.announced_window != 0 {
                    size.min(self.announced_window)
                } else {
                    size
                };
                if size != self.announced_window {
                    self.announced_window = size;
                    self.send_control(ControlMessage::WindowAckSize(size));
                }
            }
            ControlMessage::UserControl(UserControlEvent::PingRequest(t)) => {
                self.send_control(ControlMessage::UserControl(UserControlEvent::PingResponse(
                    t,
                )));
            }
            ControlMessage::UserControl(_) => {}
        }
        Ok(())
    }

    fn handle_command(&mut self, stream_id: u32, values: Vec<Amf0Value>) -> Result<(), RtmpError> {
        let mut values = values.into_iter();
        let name = match values.next() {
            Some(Amf0Value::String(name)) => name,
            _ => return Err(RtmpError::Malformed("command without a name")),
        };
        let txn = values.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let command_object = values.next().unwrap_or(Amf0Value::Null);
        let args: Vec<Amf0Value> = values.collect();
        let first_string = || args.first().and_then(Amf0Value::as_str).map(str::to_owned);

        if self.state == SessionState::WaitingConnect && name != "connect" {
            return Err(RtmpError::UnexpectedCommand(name));
        }
        match name.as_str() {
            "connect" => {
                if self.state != SessionState::WaitingConnect {
                    return Err(RtmpError::UnexpectedCommand(name));
                }
                let app = command_object
                    .get("app")
                    .and_then(Amf0Value::as_str)
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_owned();
                let tc_url = command_object
                    .get("tcUrl")
                    .and_then(Amf0Value::as_str)
                    .map(str::to_owned);
                let window = self.config.window_ack_size;
                self.announced_window = window;
                self.send_control(ControlMessage::WindowAckSize(window));
                self.send_control(ControlMessage::SetPeerBandwidth {
                    size: self.config.peer_bandwidth,
                    limit_type: message::LIMIT_DYNAMIC,
                });
                let chunk_size = self.config.chunk_size.clamp(1, 0x7fff_ffff);
                self.send_control(ControlMessage::SetChunkSize(chunk_size));
                self.encoder.set_chunk_size(chunk_size);
                self.send_result(
                    txn,
                    vec![
                        Amf0Value::object([
                            ("fmsVer", Amf0Value::from("FMS/3,0,1,123")),
                            ("capabilities", Amf0Value::Number(31.0)),
                        ]),
                        Amf0Value::object([
                            ("level", Amf0Value::from("status")),
                            ("code", Amf0Value::from("NetConnection.Connect.Success")),
                            ("description", Amf0Value::from("Connection succeeded.")),
                            ("objectEncoding", Amf0Value::Number(0.0)),
                        ]),
                    ],
                );
                self.state = SessionState::Connected;
                self.app.clone_from(&app);
                self.events.push_back(SessionEvent::Connect { app, tc_url });
            }
            "releaseStream" => self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Undefined]),
            "FCPublish" => {
                self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Undefined]);
                let info = Amf0Value::object([
                    ("code", Amf0Value::from("NetStream.Publish.Start")),
                    (
                        "description",
                        Amf0Value::from(first_string().unwrap_or_default()),
                    ),
                ]);
                self.send_command(
                    COMMAND_CSID,
                    0,
                    &[
                        Amf0Value::from("onFCPublish"),
                        Amf0Value::Number(0.0),
                        Amf0Value::Null,
                        info,
                    ],
                );
            }
            "createStream" => {
                if self.next_stream_id > MAX_STREAMS {
                    return Err(RtmpError::TooManyStreams(MAX_STREAMS));
                }
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Number(f64::from(id))]);
            }
            "publish" => {
                if self.publish_requested {
                    return Err(RtmpError::UnexpectedCommand(name));
                }
                if stream_id == 0 || stream_id >= self.next_stream_id {
                    return Err(RtmpError::UnknownStream(stream_id));
                }
                let stream_name = first_string().unwrap_or_default();
                let publish_type = args
                    .get(1)
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("live")
                    .to_owned();
                self.publish = Some(PublishState {
                    stream_id,
                    stream_name: stream_name.clone(),
                    accepted: false,
                    early_metadata: None,
                });
                self.publish_requested = true;
                self.state = SessionState::PublishPending;
                self.events.push_back(SessionEvent::Publish {
                    app: self.app.clone(),
                    stream_name,
                    publish_type,
                });
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if name == "FCUnpublish" && txn != 0.0 {
                    self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Undefined]);
                }
                let target = match name.as_str() {
                    "deleteStream" => args.first().and_then(Amf0Value::as_f64).map(|n| n as u32),
                    "closeStream" => Some(stream_id),
                    // FCUnpublish names the stream; one publish per connection.
                    _ => self.publish.as_ref().map(|p| p.stream_id),
                };
                if let Some(p) = &self.publish {
                    if Some(p.stream_id) == target {
                        let was_accepted = p.accepted;
                        self.publish = None;
                        self.state = SessionState::Connected;
                        if was_accepted {
                            self.events.push_back(SessionEvent::Unpublish);
                        }
                    }
                }
            }
            _ => {
                // Anything else (play, getStreamLength, _checkbw, ...): an
                // error answer when one is expected.
                if txn != 0.0 {
                    let info = Amf0Value::object([
                        ("level", Amf0Value::from("error")),
                        ("code", Amf0Value::from("NetConnection.Call.Failed")),
                        (
                            "description",
                            Amf0Value::from(format!("Method not found ({name}).")),
                        ),
                    ]);
                    self.send_command(
                        COMMAND_CSID,
                        0,
                        &[
                            Amf0Value::from("_error"),
                            Amf0Value::Number(txn),
                            Amf0Value::Null,
                            info,
                        ],
                    );
                }
            }
        }
        Ok(())
    }

    fn handle_data(&mut self, stream_id: u32, mut values: Vec<Amf0Value>) {
        if values.first().and_then(Amf0Value::as_str) == Some("@setDataFrame") {
            values.remove(0);
        }
        if values.first().and_then(Amf0Value::as_str) != Some("onMetaData") {
            return;
        }
        let Some(publish) = &mut self.publish else {
            return;
        };
        if publish.stream_id != stream_id {
            return;
        }
        if publish.accepted {
            self.events.push_back(SessionEvent::Metadata(values));
        } else {
            publish.early_metadata = Some(values);
        }
    }

    fn handle_media(&mut self, type_id: u8, stream_id: u32, timestamp: u32, data: Bytes) {
        let publishing = self
            .publish
            .as_ref()
            .is_some_and(|p| p.accepted && p.stream_id == stream_id);
        if !publishing {
            self.stats.dropped_media += 1;
            return;
        }
        let timestamp = self.media_ts.unwrap(timestamp);
        self.events.push_back(if type_id == message::AUDIO {
            SessionEvent::Audio { timestamp, data }
        } else {
            SessionEvent::Video { timestamp, data }
        });
    }

    /// An aggregate message: FLV tags (11-byte header, body, 4-byte back
    /// pointer) whose timestamps are relative to the first one.
    fn handle_aggregate(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        let mut rest = &msg.payload[..];
        let mut first_ts: Option<u32> = None;
        while !rest.is_empty() {
            let h = rest
                .get(..11)
                .ok_or(RtmpError::Malformed("aggregate message"))?;
            let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
            let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let end = 11 + size;
            if rest.len() < end {
                return Err(RtmpError::Malformed("aggregate message"));
            }
            let base = *first_ts.get_or_insert(ts);
            let timestamp = msg.timestamp.wrapping_add(ts.wrapping_sub(base));
            let offset = msg.payload.len() - rest.len();
            let body = msg.payload.slice(offset + 11..offset + end);
            match h[0] & 0x1f {
                message::AUDIO | message::VIDEO => {
                    self.handle_media(h[0] & 0x1f, msg.stream_id, timestamp, body);
                }
                message::DATA_AMF0 => {
                    let values = self.decode_amf(&RawMessage {
                        csid: msg.csid,
                        timestamp,
                        type_id: message::DATA_AMF0,
                        stream_id: msg.stream_id,
                        payload: body,
                    })?;
                    self.handle_data(msg.stream_id, values);
                }
                _ => {}
            }
            // Skip the back pointer (absent after the last tag in some
            // encoders).
            rest = rest.get(end + 4..).unwrap_or_default();
        }
        Ok(())
    }
}
