//! What comes out of the core: datagrams, relay messages and events for the shell.

use super::Role;
use skylark_proto::sfu::v1 as pb;
use std::net::SocketAddr;
use str0m::net::Protocol;

/// What the worker must do after feeding the core.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram (over UDP, or as one RFC 4571 frame on the ICE-TCP connection
    /// from `destination`); dropping it when the socket or connection is full is fine
    /// (never block).
    Transmit {
        proto: Protocol,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// No session uses the ICE-TCP connection from `remote` any more: close it.
    CloseTcp {
        remote: SocketAddr,
    },
    /// Deliver to a relay sink (edge SFU or packager); drop if its queue is full.
    Relay {
        sink: u64,
        msg: pb::RelayMessage,
    },
    Event(CoreEvent),
    /// A datagram for a session of worker `worker` of this node: hand it over (its
    /// `handle_steered_datagram`); drop it if that worker's queue is full.
    Steer {
        worker: u8,
        source: SocketAddr,
        contents: Vec<u8>,
    },
    /// An edge pull's publisher needs a keyframe of `track_id`: ask the parent node
    /// (already coalesced per track).
    UpstreamKeyframe {
        session: String,
        track_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// The room got a publisher (first, or after having none); not for edge pulls.
    RoomLive { room: String },
    /// The room's publisher left; not for edge pulls.
    RoomOffline { room: String },
    /// Subscriber count of a room changed.
    Viewers { room: String, count: usize },
    /// A session ended (closed, timed out, replaced, failed).
    SessionClosed {
        session: String,
        room: String,
        role: Role,
        reason: CloseReason,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Asked to: `close`, `end_publisher`.
    Closed,
    /// A new publisher of the room took its place (a reconnect).
    Replaced,
    /// ICE/DTLS did not complete within the connect timeout.
    NeverConnected,
    /// The peer went away or broke (ICE disconnected, DTLS or SRTP failure).
    Failed,
}

pub(super) fn relay_msg(msg: pb::relay_message::Msg) -> pb::RelayMessage {
    pb::RelayMessage { msg: Some(msg) }
}

/// Queues RTP datagrams the core sealed for one peer (forwarded, paced or resent).
pub(super) fn transmit_rtp(
    out: &mut std::collections::VecDeque<Output>,
    counters: &mut super::Counters,
    (proto, destination): super::datagram::Route,
    datagrams: impl IntoIterator<Item = Vec<u8>>,
) {
    for contents in datagrams {
        counters.datagrams_out += 1;
        counters.packets_out += 1;
        out.push_back(Output::Transmit {
            proto,
            destination,
            contents,
        });
    }
}
