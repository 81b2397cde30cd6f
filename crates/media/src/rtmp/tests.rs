//! Session tests: a scripted client talks to a [`ServerSession`] the way OBS
//! (librtmp) and FFmpeg do, and the server's answers are decoded and checked.

use bytes::Bytes;

use super::amf0::{self, Amf0Value};
use super::chunk::{ChunkDecoder, ChunkEncoder, ChunkLimits, RawMessage};
use super::handshake::HANDSHAKE_SIZE;
use super::message::{self, ControlMessage, UserControlEvent};
use super::*;

/// The client half: builds chunked messages and decodes the server's.
struct Client {
    enc: ChunkEncoder,
    dec: ChunkDecoder,
    session: ServerSession,
    handshake_left: usize,
}

impl Client {
    fn new() -> Self {
        Self::with_config(SessionConfig::default())
    }

    fn with_config(config: SessionConfig) -> Self {
        Self {
            enc: ChunkEncoder::new(),
            dec: ChunkDecoder::new(ChunkLimits::default()),
            session: ServerSession::new(config),
            handshake_left: 1 + 2 * HANDSHAKE_SIZE,
        }
    }

    /// Handshake + connect, answers drained.
    fn connected() -> Self {
        let mut c = Self::new();
        c.handshake();
        c.command(3, 0, &connect_command());
        c.replies();
        assert!(matches!(
            c.session.poll_event(),
            Some(SessionEvent::Connect { .. })
        ));
        c
    }

    /// Connected, stream 1 created, `publish("key")` sent and accepted.
    fn publishing() -> Self {
        let mut c = Self::connected();
        c.command(3, 0, &cmd("createStream", 2.0, vec![]));
        c.command(
            4,
            1,
            &cmd("publish", 0.0, vec!["key".into(), "live".into()]),
        );
        assert!(matches!(
            c.session.poll_event(),
            Some(SessionEvent::Publish { .. })
        ));
        c.session.accept_publish().unwrap();
        c.replies();
        c
    }

    fn handshake(&mut self) {
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..HANDSHAKE_SIZE).map(|i| (i % 251) as u8));
        self.session.feed(&c0c1).unwrap();
        self.session.feed(&[0u8; HANDSHAKE_SIZE]).unwrap();
        assert_eq!(self.session.state(), SessionState::WaitingConnect);
        assert!(self.replies().is_empty());
    }

    fn send(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        let mut wire = Vec::new();
        self.enc.encode(msg, &mut wire);
        self.session.feed(&wire)
    }

    fn command(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
        self.try_command(csid, stream_id, values).unwrap();
    }

    fn try_command(
        &mut self,
        csid: u32,
        stream_id: u32,
        values: &[Amf0Value],
    ) -> Result<(), RtmpError> {
        self.send(&RawMessage {
            csid,
            timestamp: 0,
            type_id: message::COMMAND_AMF0,
            stream_id,
            payload: amf0::encode_all(values).unwrap().into(),
        })
    }

    fn media(&mut self, type_id: u8, timestamp: u32, body: &[u8]) {
        self.send(&RawMessage {
            csid: if type_id == message::AUDIO { 4 } else { 6 },
            timestamp,
            type_id,
            stream_id: 1,
            payload: Bytes::copy_from_slice(body),
        })
        .unwrap();
    }

    fn control(&mut self, control: ControlMessage) {
        self.send(&control.to_message()).unwrap();
    }

    /// The messages the server wrote since the last call.
    fn replies(&mut self) -> Vec<RawMessage> {
        let mut out = self.session.take_output();
        let skip = self.handshake_left.min(out.len());
        self.handshake_left -= skip;
        out.drain(..skip);
        self.dec.push(&out);
        let mut msgs = Vec::new();
        while let Some(m) = self.dec.next_message().unwrap() {
            if let (message::SET_CHUNK_SIZE, Ok(ControlMessage::SetChunkSize(n))) =
                (m.type_id, ControlMessage::parse(m.type_id, &m.payload))
            {
                self.dec.set_chunk_size(n).unwrap();
            }
            msgs.push(m);
        }
        msgs
    }

    fn events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }
}

fn cmd(name: &str, txn: f64, args: Vec<Amf0Value>) -> Vec<Amf0Value> {
    let mut v = vec![
        Amf0Value::from(name),
        Amf0Value::Number(txn),
        Amf0Value::Null,
    ];
    v.extend(args);
    v
}

/// `connect` as OBS 30 sends it.
fn connect_command() -> Vec<Amf0Value> {
    vec![
        "connect".into(),
        Amf0Value::Number(1.0),
        Amf0Value::object([
            ("app", Amf0Value::from("live")),
            ("type", Amf0Value::from("nonprivate")),
            (
                "flashVer",
                Amf0Value::from("FMLE/3.0 (compatible; FMSc/1.0)"),
            ),
            ("swfUrl", Amf0Value::from("rtmp://127.0.0.1/live")),
            ("tcUrl", Amf0Value::from("rtmp://127.0.0.1/live")),
        ]),
    ]
}

fn amf(m: &RawMessage) -> Vec<Amf0Value> {
    assert_eq!(m.type_id, message::COMMAND_AMF0);
    amf0::decode_all(&m.payload).unwrap()
}

fn control(m: &RawMessage) -> ControlMessage {
    ControlMessage::parse(m.type_id, &m.payload).unwrap()
}

fn status_code(m: &RawMessage) -> (String, String) {
    let v = amf(m);
    assert_eq!(v[0].as_str(), Some("onStatus"));
    (
        v[3].get("level")
            .and_then(Amf0Value::as_str)
            .unwrap()
            .to_owned(),
        v[3].get("code")
            .and_then(Amf0Value::as_str)
            .unwrap()
            .to_owned(),
    )
}

#[test]
fn obs_publish_sequence() {
    let mut c = Client::new();
    c.handshake();

    // connect → window ack size, peer bandwidth, chunk size, _result.
    c.command(3, 0, &connect_command());
    let r = c.replies();
    assert_eq!(r.len(), 4);
    assert_eq!(control(&r[0]), ControlMessage::WindowAckSize(2_500_000));
    assert_eq!(
        control(&r[1]),
        ControlMessage::SetPeerBandwidth {
            size: 2_500_000,
            limit_type: message::LIMIT_DYNAMIC
        }
    );
    assert_eq!(control(&r[2]), ControlMessage::SetChunkSize(4096));
    let result = amf(&r[3]);
    assert_eq!(result[0].as_str(), Some("_result"));
    assert_eq!(result[1].as_f64(), Some(1.0));
    assert_eq!(
        result[3].get("code").and_then(Amf0Value::as_str),
        Some("NetConnection.Connect.Success")
    );
    assert_eq!(
        c.events(),
        [SessionEvent::Connect {
            app: "live".into(),
            tc_url: Some("rtmp://127.0.0.1/live".into())
        }]
    );
    assert_eq!(c.session.state(), SessionState::Connected);
    assert_eq!(c.session.app(), "live");

    // OBS raises its chunk size, then releaseStream, FCPublish, createStream.
    c.control(ControlMessage::SetChunkSize(4096));
    c.enc.set_chunk_size(4096);
    c.command(3, 0, &cmd("releaseStream", 2.0, vec!["key".into()]));
    c.command(3, 0, &cmd("FCPublish", 3.0, vec!["key".into()]));
    c.command(3, 0, &cmd("createStream", 4.0, vec![]));
    let r = c.replies();
    let names: Vec<_> = r
        .iter()
        .map(|m| (amf(m)[0].as_str().unwrap().to_owned(), amf(m)[1].as_f64()))
        .collect();
    assert_eq!(
        names,
        [
            ("_result".into(), Some(2.0)),
            ("_result".into(), Some(3.0)),
            ("onFCPublish".into(), Some(0.0)),
            ("_result".into(), Some(4.0)),
        ]
    );
    assert_eq!(amf(&r[3])[3], Amf0Value::Number(1.0)); // the stream id

    // publish on stream 1 → a Publish event, nothing sent yet.
    c.command(
        4,
        1,
        &cmd("publish", 5.0, vec!["key".into(), "live".into()]),
    );
    assert!(c.replies().is_empty());
    assert_eq!(
        c.events(),
        [SessionEvent::Publish {
            app: "live".into(),
            stream_name: "key".into(),
            publish_type: "live".into()
        }]
    );
    assert_eq!(c.session.state(), SessionState::PublishPending);

    // Metadata and media before the answer: metadata is held, media dropped.
    let meta = vec![
        Amf0Value::from("@setDataFrame"),
        Amf0Value::from("onMetaData"),
        Amf0Value::ecma_array([("width", Amf0Value::Number(1280.0))]),
    ];
    c.send(&RawMessage {
        csid: 4,
        timestamp: 0,
        type_id: message::DATA_AMF0,
        stream_id: 1,
        payload: amf0::encode_all(&meta).unwrap().into(),
    })
    .unwrap();
    c.media(message::VIDEO, 0, &[0x17, 1, 0, 0, 0]);
    assert!(c.events().is_empty());
    assert_eq!(c.session.stats().dropped_media, 1);

    c.session.accept_publish().unwrap();
    assert_eq!(c.session.state(), SessionState::Publishing);
    let r = c.replies();
    assert_eq!(
        control(&r[0]),
        ControlMessage::UserControl(UserControlEvent::StreamBegin(1))
    );
    assert_eq!(r[1].stream_id, 1);
    assert_eq!(
        status_code(&r[1]),
        ("status".into(), "NetStream.Publish.Start".into())
    );
    assert_eq!(c.events(), [SessionEvent::Metadata(meta[1..].to_vec())]);

    // Media flows.
    c.media(message::VIDEO, 0, &[0x17, 0, 0, 0, 0, 1, 0x42]);
    c.media(message::AUDIO, 0, &[0xaf, 0, 0x12, 0x10]);
    c.media(message::VIDEO, 33, &[0x27, 1, 0, 0, 0]);
    c.media(message::AUDIO, 23, &[0xaf, 1, 0x21]);
    let events = c.events();
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0],
        SessionEvent::Video {
            timestamp: 0,
            data: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x42])
        }
    );
    assert!(matches!(
        events[2],
        SessionEvent::Video { timestamp: 33, .. }
    ));
    assert!(matches!(
        events[3],
        SessionEvent::Audio { timestamp: 23, .. }
    ));

    // Stop: FCUnpublish then deleteStream: one Unpublish.
    c.command(3, 0, &cmd("FCUnpublish", 6.0, vec!["key".into()]));
    c.command(
        3,
        0,
        &cmd("deleteStream", 7.0, vec![Amf0Value::Number(1.0)]),
    );
    assert_eq!(c.events(), [SessionEvent::Unpublish]);
    assert_eq!(c.session.state(), SessionState::Connected);
    let r = c.replies();
    assert_eq!(amf(&r[0])[0].as_str(), Some("_result"));
}

#[test]
fn ffmpeg_sends_delete_stream_only() {
    let mut c = Client::publishing();
    c.command(
        3,
        0,
        &cmd("deleteStream", 0.0, vec![Amf0Value::Number(1.0)]),
    );
    assert_eq!(c.events(), [SessionEvent::Unpublish]);
    // Media after the stream is gone is dropped.
    c.media(message::VIDEO, 40, &[0x27, 1, 0, 0, 0]);
    assert!(c.events().is_empty());
}

#[test]
fn reject_publish_closes_the_session() {
    let mut c = Client::connected();
    c.command(3, 0, &cmd("createStream", 2.0, vec![]));
    c.command(
        4,
        1,
        &cmd("publish", 0.0, vec!["wrong".into(), "live".into()]),
    );
    c.replies();
    assert!(matches!(
        c.events()[..],
        [SessionEvent::Publish { ref stream_name, .. }] if stream_name == "wrong"
    ));
    c.session
        .reject_publish("NetStream.Publish.BadName", "unknown stream key")
        .unwrap();
    let r = c.replies();
    assert_eq!(
        status_code(&r[0]),
        ("error".into(), "NetStream.Publish.BadName".into())
    );
    assert_eq!(c.session.state(), SessionState::Closed);
    assert_eq!(c.session.feed(&[0]), Err(RtmpError::Closed));
    assert_eq!(c.session.accept_publish(), Err(RtmpError::NoPendingPublish));
}

#[test]
fn answers_need_a_pending_publish() {
    let mut c = Client::connected();
    assert_eq!(c.session.accept_publish(), Err(RtmpError::NoPendingPublish));
    assert_eq!(
        c.session.reject_publish("x", "y"),
        Err(RtmpError::NoPendingPublish)
    );
    let mut c = Client::publishing();
    assert_eq!(c.session.accept_publish(), Err(RtmpError::NoPendingPublish));
    // A second publish on the same connection is refused, even after the
    // first ended.
    c.command(
        3,
        0,
        &cmd("deleteStream", 0.0, vec![Amf0Value::Number(1.0)]),
    );
    assert_eq!(c.events(), [SessionEvent::Unpublish]);
    assert_eq!(
        c.try_command(4, 1, &cmd("publish", 0.0, vec!["key".into()])),
        Err(RtmpError::UnexpectedCommand("publish".into()))
    );
}

#[test]
fn a_withdrawn_publish_cannot_be_answered() {
    let mut c = Client::connected();
    c.command(3, 0, &cmd("createStream", 2.0, vec![]));
    c.command(4, 1, &cmd("publish", 0.0, vec!["a".into()]));
    c.command(
        3,
        0,
        &cmd("deleteStream", 0.0, vec![Amf0Value::Number(1.0)]),
    );
    // The Publish event is still queued, but there is nothing to accept, and
    // no other request can take its place.
    assert!(matches!(c.events()[..], [SessionEvent::Publish { .. }]));
    assert_eq!(c.session.accept_publish(), Err(RtmpError::NoPendingPublish));
    assert_eq!(
        c.try_command(4, 1, &cmd("publish", 0.0, vec!["b".into()])),
        Err(RtmpError::UnexpectedCommand("publish".into()))
    );
}

#[test]
fn publish_on_a_stream_that_was_not_created() {
    let mut c = Client::connected();
    assert_eq!(
        c.try_command(4, 1, &cmd("publish", 0.0, vec!["key".into()])),
        Err(RtmpError::UnknownStream(1))
    );
    assert_eq!(c.session.state(), SessionState::Closed);
}

#[test]
fn commands_before_connect_and_twice_connect() {
    let mut c = Client::new();
    c.handshake();
    assert_eq!(
        c.try_command(3, 0, &cmd("createStream", 2.0, vec![])),
        Err(RtmpError::UnexpectedCommand("createStream".into()))
    );
    let mut c = Client::connected();
    assert_eq!(
        c.try_command(3, 0, &connect_command()),
        Err(RtmpError::UnexpectedCommand("connect".into()))
    );
}

#[test]
fn unknown_commands_get_an_error_answer() {
    let mut c = Client::connected();
    c.command(3, 0, &cmd("play", 9.0, vec!["key".into()]));
    c.command(3, 0, &cmd("someNotification", 0.0, vec![]));
    let r = c.replies();
    assert_eq!(r.len(), 1);
    let v = amf(&r[0]);
    assert_eq!(v[0].as_str(), Some("_error"));
    assert_eq!(v[1].as_f64(), Some(9.0));
    assert_eq!(
        v[3].get("code").and_then(Amf0Value::as_str),
        Some("NetConnection.Call.Failed")
    );
}

#[test]
fn ping_request_gets_a_response() {
    let mut c = Client::connected();
    c.control(ControlMessage::UserControl(UserControlEvent::PingRequest(
        777,
    )));
    c.control(ControlMessage::UserControl(
        UserControlEvent::SetBufferLength {
            stream_id: 1,
            buffer_ms: 100,
        },
    ));
    let r = c.replies();
    assert_eq!(r.len(), 1);
    assert_eq!(
        control(&r[0]),
        ControlMessage::UserControl(UserControlEvent::PingResponse(777))
    );
}

#[test]
fn acknowledgements_follow_the_peer_window() {
    let mut c = Client::publishing();
    c.control(ControlMessage::WindowAckSize(5000));
    assert!(c.replies().is_empty());
    let mut acks = Vec::new();
    for i in 0..20 {
        c.media(message::VIDEO, i * 33, &[0x27; 1000]);
        for m in c.replies() {
            if let ControlMessage::Acknowledgement(n) = control(&m) {
                acks.push(n);
            }
        }
    }
    // About 20 kB after the window was set: an ack every 5000 bytes.
    assert!((4..=5).contains(&acks.len()), "{acks:?}");
    for pair in acks.windows(2) {
        assert!(pair[1] - pair[0] >= 5000);
    }
    let received = c.session.stats().bytes_received;
    let last = u64::from(*acks.last().unwrap());
    assert!(last <= received && received - last < 5000);
    assert_eq!(c.session.stats().acks_sent as usize, acks.len());
}

#[test]
fn set_peer_bandwidth_from_the_peer_gets_a_window_size() {
    let mut c = Client::connected();
    // The same size as announced: no answer.
    c.control(ControlMessage::SetPeerBandwidth {
        size: 2_500_000,
        limit_type: message::LIMIT_HARD,
    });
    assert!(c.replies().is_empty());
    c.control(ControlMessage::SetPeerBandwidth {
        size: 1_000_000,
        limit_type: message::LIMIT_HARD,
    });
    assert_eq!(
        c.replies().iter().map(control).collect::<Vec<_>>(),
        [ControlMessage::WindowAckSize(1_000_000)]
    );
    // Soft limit above the current one: kept.
    c.control(ControlMessage::SetPeerBandwidth {
        size: 9_000_000,
        limit_type: message::LIMIT_SOFT,
    });
    assert!(c.replies().is_empty());
}

#[test]
fn media_timestamps_unwrap_past_32_bits() {
    let mut c = Client::publishing();
    let start = u32::MAX - 40;
    c.media(message::VIDEO, start, &[0x17, 1, 0, 0, 0]);
    c.media(message::VIDEO, start.wrapping_add(33), &[0x27, 1, 0, 0, 0]);
    c.media(message::VIDEO, start.wrapping_add(66), &[0x27, 1, 0, 0, 0]);
    let ts: Vec<u64> = c
        .events()
        .iter()
        .map(|e| match e {
            SessionEvent::Video { timestamp, .. } => *timestamp,
            other => panic!("{other:?}"),
        })
        .collect();
    let s = u64::from(start);
    assert_eq!(ts, [s, s + 33, s + 66]);
}

#[test]
fn abort_and_chunk_size_changes_at_session_level() {
    let mut c = Client::publishing();
    // Start a 300-byte video message in 128-byte chunks, send only the
    // first chunk, abort it, then send a whole one.
    let mut wire = Vec::new();
    c.enc.encode(
        &RawMessage {
            csid: 6,
            timestamp: 0,
            type_id: message::VIDEO,
            stream_id: 1,
            payload: vec![0x27; 300].into(),
        },
        &mut wire,
    );
    c.session.feed(&wire[..140]).unwrap();
    c.control(ControlMessage::Abort(6));
    c.control(ControlMessage::SetChunkSize(100));
    c.enc.set_chunk_size(100);
    c.media(message::VIDEO, 10, &[0x17; 250]);
    let events = c.events();
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], SessionEvent::Video { data, .. } if data.len() == 250));
    // An invalid chunk size closes the session.
    assert_eq!(
        c.send(&ControlMessage::SetChunkSize(0).to_message()),
        Err(RtmpError::InvalidChunkSize(0))
    );
}

#[test]
fn amf3_command_with_format_byte() {
    let mut c = Client::new();
    c.handshake();
    let mut payload = vec![0u8];
    payload.extend(amf0::encode_all(&connect_command()).unwrap());
    c.send(&RawMessage {
        csid: 3,
        timestamp: 0,
        type_id: message::COMMAND_AMF3,
        stream_id: 0,
        payload: payload.into(),
    })
    .unwrap();
    assert_eq!(c.session.state(), SessionState::Connected);
}

#[test]
fn oversized_and_malformed_amf_messages() {
    let config = SessionConfig {
        max_amf_message_size: 100,
        ..SessionConfig::default()
    };
    let mut c = Client::with_config(config);
    c.handshake();
    let mut big = connect_command();
    big.push(Amf0Value::String("x".repeat(200)));
    assert!(matches!(
        c.try_command(3, 0, &big),
        Err(RtmpError::MessageTooLarge { max: 100, .. })
    ));
    let mut c = Client::new();
    c.handshake();
    assert_eq!(
        c.send(&RawMessage {
            csid: 3,
            timestamp: 0,
            type_id: message::COMMAND_AMF0,
            stream_id: 0,
            payload: Bytes::from_static(&[0x02, 0x00, 0x09, b'x']),
        }),
        Err(RtmpError::Amf0(amf0::Amf0Error::Truncated("string")))
    );
    let mut c = Client::new();
    c.handshake();
    assert_eq!(
        c.try_command(3, 0, &[Amf0Value::Number(1.0)]),
        Err(RtmpError::Malformed("command without a name"))
    );
}

#[test]
fn aggregate_messages_are_split() {
    let mut c = Client::publishing();
    // Two FLV tags with timestamps 1000 and 1033 inside an aggregate stamped 50.
    let mut payload = Vec::new();
    for (ty, ts, body) in [
        (9u8, 1000u32, &[0x17u8, 1, 0, 0, 0][..]),
        (8, 1033, &[0xaf, 1, 7]),
    ] {
        payload.push(ty);
        payload.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        payload.extend_from_slice(&ts.to_be_bytes()[1..]);
        payload.push((ts >> 24) as u8);
        payload.extend_from_slice(&[0, 0, 0]);
        payload.extend_from_slice(body);
        payload.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
    }
    c.send(&RawMessage {
        csid: 6,
        timestamp: 50,
        type_id: message::AGGREGATE,
        stream_id: 1,
        payload: payload.into(),
    })
    .unwrap();
    let events = c.events();
    assert!(matches!(
        events[0],
        SessionEvent::Video { timestamp: 50, .. }
    ));
    assert!(
        matches!(&events[1], SessionEvent::Audio { timestamp: 83, data } if data[..] == [0xaf, 1, 7])
    );
    // A truncated aggregate is an error.
    assert_eq!(
        c.send(&RawMessage {
            csid: 6,
            timestamp: 50,
            type_id: message::AGGREGATE,
            stream_id: 1,
            payload: Bytes::from_static(&[9, 0, 0, 9, 0]),
        }),
        Err(RtmpError::Malformed("aggregate message"))
    );
}

#[test]
fn too_many_streams() {
    let mut c = Client::connected();
    for i in 0..16 {
        c.command(3, 0, &cmd("createStream", f64::from(i + 2), vec![]));
    }
    assert_eq!(
        c.try_command(3, 0, &cmd("createStream", 99.0, vec![])),
        Err(RtmpError::TooManyStreams(16))
    );
}

#[test]
fn garbage_closes_the_session() {
    let mut s = ServerSession::new(SessionConfig::default());
    assert_eq!(
        s.feed(b"GET / HTTP/1.1\r\n"),
        Err(RtmpError::HandshakeVersion(b'G'))
    );
    assert_eq!(s.state(), SessionState::Closed);
    assert_eq!(s.feed(&[3]), Err(RtmpError::Closed));

    // After the handshake: a fmt 3 chunk on a fresh chunk stream.
    let mut c = Client::new();
    c.handshake();
    assert_eq!(
        c.session.feed(&[0xc3, 1, 2, 3]),
        Err(RtmpError::NoPreviousHeader { fmt: 3, csid: 3 })
    );
}

#[test]
fn buffers_stay_small_until_a_publish_is_accepted() {
    // Before the key is proven: a keyframe-sized message is refused, whatever the
    // configured media limits.
    let mut c = Client::connected();
    c.command(3, 0, &cmd("createStream", 2.0, vec![]));
    let big = RawMessage {
        csid: 6,
        timestamp: 0,
        type_id: message::VIDEO,
        stream_id: 1,
        payload: Bytes::from(vec![0x17; 64 << 10]),
    };
    assert!(matches!(
        c.send(&big),
        Err(RtmpError::MessageTooLarge { max, .. }) if max == SETUP_LIMITS.max_message_size
    ));
    // Accepted: the same message passes.
    let mut c = Client::publishing();
    assert_eq!(c.send(&big), Ok(()));
}
