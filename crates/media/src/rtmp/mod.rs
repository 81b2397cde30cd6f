//! RTMP ingest, server side, sans-IO: the handshake, the chunk stream, AMF0,
//! and the command flow of a publisher (OBS, FFmpeg, librtmp).
//!
//! A [`ServerSession`] takes the bytes read from a TCP connection and yields
//! bytes to write back and [`SessionEvent`]s: the publish request (which the
//! server accepts or rejects), metadata, and audio and video messages, whose
//! bodies are FLV tag bodies (see [`crate::flv`]). Playback over RTMP is not
//! implemented; Skylark plays over WebRTC, HLS and HTTP-FLV.
//!
//! | module | holds |
//! |---|---|
//! | [`handshake`] | C0/C1/C2 ↔ S0/S1/S2, simple (no digest) |
//! | [`chunk`] | chunk headers fmt 0–3, extended timestamps, chunk sizes, reassembly |
//! | [`message`] | message type ids, protocol control and user control messages |
//! | [`amf0`] | AMF0 values, encoding and bounded decoding |
//! | `session` | [`ServerSession`]: the publisher command flow |
//!
//! The loop around it, in outline (std I/O for brevity):
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use skylark_media::rtmp::{ServerSession, SessionConfig, SessionEvent};
//!
//! fn serve(mut socket: std::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut session = ServerSession::new(SessionConfig::default());
//!     let mut buf = vec![0u8; 64 * 1024];
//!     loop {
//!         let n = socket.read(&mut buf)?;
//!         if n == 0 {
//!             return Ok(());
//!         }
//!         session.feed(&buf[..n])?; // an error: close the connection
//!         while let Some(event) = session.poll_event() {
//!             match event {
//!                 SessionEvent::Publish { app, stream_name, .. } => {
//!                     if app == "live" && stream_name == "secret-key" {
//!                         session.accept_publish()?;
//!                     } else {
//!                         session.reject_publish("NetStream.Publish.BadName", "unknown stream key")?;
//!                     }
//!                 }
//!                 SessionEvent::Video { timestamp, data } => { /* crate::flv::VideoTag::parse(&data) */ }
//!                 _ => {}
//!             }
//!         }
//!         socket.write_all(&session.take_output())?;
//!     }
//! }
//! ```

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod message;
mod session;

pub use session::{
    ServerSession, SessionConfig, SessionEvent, SessionState, SessionStats, SETUP_LIMITS,
};

/// Why an RTMP connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    /// C0 is not version 3 (6 would be RTMPE, letters an HTTP request).
    #[error("RTMP handshake version {0}, expected 3")]
    HandshakeVersion(u8),
    /// A chunk with a compressed header on a chunk stream without a previous
    /// full header.
    #[error("chunk of format {fmt} on chunk stream {csid} without a previous header")]
    NoPreviousHeader {
        /// The chunk format, 1–3.
        fmt: u8,
        /// The chunk stream id.
        csid: u32,
    },
    /// A chunk with a new message header while a message is still incomplete
    /// on the same chunk stream.
    #[error("chunk of format {fmt} on chunk stream {csid} interrupts a message")]
    InterruptedMessage {
        /// The chunk format, 0–2.
        fmt: u8,
        /// The chunk stream id.
        csid: u32,
    },
    /// A message longer than the configured maximum.
    #[error("RTMP message of {length} bytes exceeds the {max}-byte limit")]
    MessageTooLarge {
        /// The announced length.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// A Set Chunk Size of 0 or with the top bit set.
    #[error("invalid RTMP chunk size {0}")]
    InvalidChunkSize(u32),
    /// More chunk streams in use than allowed.
    #[error("more than {0} RTMP chunk streams")]
    TooManyChunkStreams(usize),
    /// More bytes in partial messages than allowed.
    #[error("more than {0} bytes in partial RTMP messages")]
    TooMuchPending(usize),
    /// More `createStream` calls than allowed.
    #[error("more than {0} RTMP streams on one connection")]
    TooManyStreams(u32),
    /// A message body that does not parse.
    #[error("malformed RTMP {0}")]
    Malformed(&'static str),
    /// A control message parser was given another message type.
    #[error("RTMP message type {0} is not a control message")]
    UnexpectedMessageType(u8),
    /// A command that is not allowed now (e.g. before `connect`, or a second
    /// `publish` on one connection).
    #[error("unexpected RTMP command {0:?}")]
    UnexpectedCommand(String),
    /// `publish` on a message stream that `createStream` did not create.
    #[error("RTMP publish on unknown stream {0}")]
    UnknownStream(u32),
    /// A command or data message that is not valid AMF0.
    #[error("bad AMF0 in RTMP message: {0}")]
    Amf0(#[from] amf0::Amf0Error),
    /// `accept_publish` / `reject_publish` without a pending publish.
    #[error("no publish request is pending")]
    NoPendingPublish,
    /// The session was closed by an error or a rejection.
    #[error("the RTMP session is closed")]
    Closed,
}

#[cfg(test)]
mod tests;
