//! RTMP message types, protocol control messages (RTMP 1.0 §5.4) and user
//! control events (§6.2).
//!
//! ```
//! use skylark_media::rtmp::message::{ControlMessage, UserControlEvent};
//!
//! let ping = ControlMessage::UserControl(UserControlEvent::PingRequest(1234));
//! let raw = ping.to_message();
//! assert_eq!((raw.csid, raw.type_id, raw.stream_id), (2, 4, 0));
//! assert_eq!(ControlMessage::parse(raw.type_id, &raw.payload)?, ping);
//! # Ok::<(), skylark_media::rtmp::RtmpError>(())
//! ```

use bytes::Bytes;

use super::chunk::RawMessage;
use super::RtmpError;

/// Set Chunk Size (§5.4.1).
pub const SET_CHUNK_SIZE: u8 = 1;
/// Abort Message (§5.4.2).
pub const ABORT: u8 = 2;
/// Acknowledgement (§5.4.3).
pub const ACKNOWLEDGEMENT: u8 = 3;
/// User Control Message (§6.2).
pub const USER_CONTROL: u8 = 4;
/// Window Acknowledgement Size (§5.4.4).
pub const WINDOW_ACK_SIZE: u8 = 5;
/// Set Peer Bandwidth (§5.4.5).
pub const SET_PEER_BANDWIDTH: u8 = 6;
/// Audio data: an FLV audio tag body.
pub const AUDIO: u8 = 8;
/// Video data: an FLV video tag body.
pub const VIDEO: u8 = 9;
/// Data message, AMF3 (a format byte, then AMF0 in practice).
pub const DATA_AMF3: u8 = 15;
/// Shared object message, AMF3.
pub const SHARED_OBJECT_AMF3: u8 = 16;
/// Command message, AMF3 (a format byte, then AMF0 in practice).
pub const COMMAND_AMF3: u8 = 17;
/// Data message, AMF0 (`@setDataFrame`, `onMetaData`).
pub const DATA_AMF0: u8 = 18;
/// Shared object message, AMF0.
pub const SHARED_OBJECT_AMF0: u8 = 19;
/// Command message, AMF0 (`connect`, `publish`, ...).
pub const COMMAND_AMF0: u8 = 20;
/// Aggregate message: a run of FLV tags.
pub const AGGREGATE: u8 = 22;

/// The chunk stream protocol control messages are sent on.
pub const CONTROL_CSID: u32 = 2;

/// Set Peer Bandwidth limit type: hard.
pub const LIMIT_HARD: u8 = 0;
/// Set Peer Bandwidth limit type: soft.
pub const LIMIT_SOFT: u8 = 1;
/// Set Peer Bandwidth limit type: dynamic.
pub const LIMIT_DYNAMIC: u8 = 2;

/// A user control event (§6.2 / §7.1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserControlEvent {
    /// The stream is functional (server → client).
    StreamBegin(u32),
    /// Playback of the stream is over.
    StreamEof(u32),
    /// No more data on the stream for now.
    StreamDry(u32),
    /// The client's buffer length for a stream, in ms.
    SetBufferLength {
        /// The stream.
        stream_id: u32,
        /// Buffer length in milliseconds.
        buffer_ms: u32,
    },
    /// The stream is a recorded one.
    StreamIsRecorded(u32),
    /// A ping carrying a timestamp, to be answered with `PingResponse`.
    PingRequest(u32),
    /// The answer to a ping, echoing its timestamp.
    PingResponse(u32),
    /// Any other event type, kept as is.
    Other {
        /// The event type.
        event_type: u16,
        /// Its data.
        data: Bytes,
    },
}

/// A protocol control message or user control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// The sender's new chunk size.
    SetChunkSize(u32),
    /// Discard the partial message on this chunk stream.
    Abort(u32),
    /// Bytes received so far (wrapping).
    Acknowledgement(u32),
    /// Send an acknowledgement every this many bytes.
    WindowAckSize(u32),
    /// Limit the peer's output bandwidth.
    SetPeerBandwidth {
        /// Window size in bytes.
        size: u32,
        /// [`LIMIT_HARD`], [`LIMIT_SOFT`] or [`LIMIT_DYNAMIC`].
        limit_type: u8,
    },
    /// A user control event.
    UserControl(UserControlEvent),
}

fn be32(payload: &[u8], at: usize, what: &'static str) -> Result<u32, RtmpError> {
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(RtmpError::Malformed(what))
}

impl ControlMessage {
    /// Parses the body of a message of type 1–6.
    pub fn parse(type_id: u8, payload: &[u8]) -> Result<Self, RtmpError> {
        Ok(match type_id {
            SET_CHUNK_SIZE => Self::SetChunkSize(be32(payload, 0, "Set Chunk Size")?),
            ABORT => Self::Abort(be32(payload, 0, "Abort")?),
            ACKNOWLEDGEMENT => Self::Acknowledgement(be32(payload, 0, "Acknowledgement")?),
            WINDOW_ACK_SIZE => Self::WindowAckSize(be32(payload, 0, "Window Ack Size")?),
            SET_PEER_BANDWIDTH => Self::SetPeerBandwidth {
                size: be32(payload, 0, "Set Peer Bandwidth")?,
                limit_type: *payload
                    .get(4)
                    .ok_or(RtmpError::Malformed("Set Peer Bandwidth"))?,
            },
            USER_CONTROL => {
                let event = payload
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or(RtmpError::Malformed("User Control"))?;
                let arg = || be32(payload, 2, "User Control");
                Self::UserControl(match event {
                    0 => UserControlEvent::StreamBegin(arg()?),
                    1 => UserControlEvent::StreamEof(arg()?),
                    2 => UserControlEvent::StreamDry(arg()?),
                    3 => UserControlEvent::SetBufferLength {
                        stream_id: arg()?,
                        buffer_ms: be32(payload, 6, "Set Buffer Length")?,
                    },
                    4 => UserControlEvent::StreamIsRecorded(arg()?),
                    6 => UserControlEvent::PingRequest(arg()?),
                    7 => UserControlEvent::PingResponse(arg()?),
                    other => UserControlEvent::Other {
                        event_type: other,
                        data: Bytes::copy_from_slice(&payload[2..]),
                    },
                })
            }
            other => return Err(RtmpError::UnexpectedMessageType(other)),
        })
    }

    /// The message's type id.
    pub fn type_id(&self) -> u8 {
        match self {
            Self::SetChunkSize(_) => SET_CHUNK_SIZE,
            Self::Abort(_) => ABORT,
            Self::Acknowledgement(_) => ACKNOWLEDGEMENT,
            Self::WindowAckSize(_) => WINDOW_ACK_SIZE,
            Self::SetPeerBandwidth { .. } => SET_PEER_BANDWIDTH,
            Self::UserControl(_) => USER_CONTROL,
        }
    }

    /// The message body.
    pub fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(10);
        match self {
            Self::SetChunkSize(v)
            | Self::Abort(v)
            | Self::Acknowledgement(v)
            | Self::WindowAckSize(v) => p.extend_from_slice(&v.to_be_bytes()),
            Self::SetPeerBandwidth { size, limit_type } => {
                p.extend_from_slice(&size.to_be_bytes());
                p.push(*limit_type);
            }
            Self::UserControl(event) => {
                let (ty, args): (u16, Vec<u32>) = match event {
                    UserControlEvent::StreamBegin(s) => (0, vec![*s]),
                    UserControlEvent::StreamEof(s) => (1, vec![*s]),
                    UserControlEvent::StreamDry(s) => (2, vec![*s]),
                    UserControlEvent::SetBufferLength {
                        stream_id,
                        buffer_ms,
                    } => (3, vec![*stream_id, *buffer_ms]),
                    UserControlEvent::StreamIsRecorded(s) => (4, vec![*s]),
                    UserControlEvent::PingRequest(t) => (6, vec![*t]),
                    UserControlEvent::PingResponse(t) => (7, vec![*t]),
                    UserControlEvent::Other { event_type, data } => {
                        p.extend_from_slice(&event_type.to_be_bytes());
                        p.extend_from_slice(data);
                        return p;
                    }
                };
                p.extend_from_slice(&ty.to_be_bytes());
                for a in args {
                    p.extend_from_slice(&a.to_be_bytes());
                }
            }
        }
        p
    }

    /// The complete message: chunk stream 2, message stream 0, timestamp 0.
    pub fn to_message(&self) -> RawMessage {
        RawMessage {
            csid: CONTROL_CSID,
            timestamp: 0,
            type_id: self.type_id(),
            stream_id: 0,
            payload: self.payload().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let all = [
            ControlMessage::SetChunkSize(4096),
            ControlMessage::Abort(6),
            ControlMessage::Acknowledgement(u32::MAX),
            ControlMessage::WindowAckSize(2_500_000),
            ControlMessage::SetPeerBandwidth {
                size: 2_500_000,
                limit_type: LIMIT_DYNAMIC,
            },
            ControlMessage::UserControl(UserControlEvent::StreamBegin(1)),
            ControlMessage::UserControl(UserControlEvent::StreamEof(1)),
            ControlMessage::UserControl(UserControlEvent::StreamDry(1)),
            ControlMessage::UserControl(UserControlEvent::SetBufferLength {
                stream_id: 1,
                buffer_ms: 3000,
            }),
            ControlMessage::UserControl(UserControlEvent::StreamIsRecorded(1)),
            ControlMessage::UserControl(UserControlEvent::PingRequest(9)),
            ControlMessage::UserControl(UserControlEvent::PingResponse(9)),
            ControlMessage::UserControl(UserControlEvent::Other {
                event_type: 31,
                data: Bytes::from_static(&[1, 2, 3]),
            }),
        ];
        for m in all {
            let raw = m.to_message();
            assert_eq!(ControlMessage::parse(raw.type_id, &raw.payload).unwrap(), m);
        }
    }

    #[test]
    fn known_bytes_and_errors() {
        assert_eq!(
            ControlMessage::SetPeerBandwidth {
                size: 0x0100,
                limit_type: 2
            }
            .payload(),
            [0, 0, 1, 0, 2]
        );
        assert_eq!(
            ControlMessage::parse(SET_CHUNK_SIZE, &[0, 0, 1]),
            Err(RtmpError::Malformed("Set Chunk Size"))
        );
        assert_eq!(
            ControlMessage::parse(USER_CONTROL, &[0]),
            Err(RtmpError::Malformed("User Control"))
        );
        assert_eq!(
            ControlMessage::parse(USER_CONTROL, &[0, 3, 0, 0, 0, 1]),
            Err(RtmpError::Malformed("Set Buffer Length"))
        );
        assert_eq!(
            ControlMessage::parse(AUDIO, &[]),
            Err(RtmpError::UnexpectedMessageType(AUDIO))
        );
    }
}
