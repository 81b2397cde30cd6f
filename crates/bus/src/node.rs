//! What a node announces about itself in the registry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The role of a registered node; the registry is kept per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A WebRTC SFU (origin or edge).
    Sfu,
    /// An HLS/FLV packager.
    Packager,
}

impl NodeKind {
    /// Stable lowercase name, used in storage keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sfu => "sfu",
            Self::Packager => "packager",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How busy a node is, in role-neutral figures (an SFU's origin and edge work both
/// count). Every field defaults to 0, so older entries still read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeLoad {
    /// Sessions held: publishers and subscribers (an SFU), rooms packaged (a packager).
    pub sessions: u32,
    /// Of `sessions`, those receiving media (viewers).
    pub subscribers: u32,
    /// Downstream relay links this node feeds (edges and packagers pulling from it).
    pub relays_out: u32,
    /// Rooms whose publisher this node holds (it is their origin).
    pub origins: u32,
    /// Media leaving the node, bits per second.
    pub egress_bps: u64,
    /// Its CPU is spent (an SFU's workers past their busy threshold): it takes no new
    /// viewers, which placement sends to other nodes (edges) instead.
    pub overloaded: bool,
}

/// What a node has room for; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeCapacity {
    /// Sessions the node accepts (`SKYLARK_SFU_MAX_SESSIONS`).
    pub sessions: u32,
    /// Downstream relay links the node feeds (`SKYLARK_SFU_MAX_RELAYS`).
    pub relays: u32,
}

/// Sessions a node taking `max_sessions` keeps for publishers: viewers never take the
/// last of them, so a full room's publisher can still reconnect. Signaling places
/// viewers by it and the SFU admits by it: one figure for both.
pub fn publisher_reserve(max_sessions: u32) -> u32 {
    if max_sessions == 0 {
        0
    } else {
        (max_sessions / 50).max(1)
    }
}

/// A node's heartbeat: what it is, how to reach it and how busy it is.
///
/// ```
/// use skylark_bus::{NodeCapacity, NodeInfo, NodeKind, NodeLoad};
/// let node = NodeInfo {
///     id: "sfu-1".into(),
///     kind: NodeKind::Sfu,
///     grpc_addr: "http://10.0.0.5:7001".into(),
///     media_addr: "203.0.113.7:50000".into(),
///     load: NodeLoad { sessions: 12, ..NodeLoad::default() },
///     capacity: NodeCapacity { sessions: 500, relays: 8 },
///     ..NodeInfo::default()
/// };
/// assert_eq!(node.kind.as_str(), "sfu");
/// assert!(node.has_session_room());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique per node and stable across its heartbeats.
    pub id: String,
    /// Which registry the node lives in.
    pub kind: NodeKind,
    /// Where other services reach its gRPC API.
    pub grpc_addr: String,
    /// An SFU's announced media address (UDP); empty for other kinds.
    #[serde(default)]
    pub media_addr: String,
    /// An SFU's announced ICE-TCP address (RFC 6544 passive candidates); empty when it
    /// serves none, as in records of nodes from before the field.
    #[serde(default)]
    pub ice_tcp_addr: String,
    /// A packager's HTTP address (where HLS/FLV requests are passed); empty for others.
    #[serde(default)]
    pub http_addr: String,
    /// Current load.
    #[serde(default)]
    pub load: NodeLoad,
    /// Limits the load is measured against.
    #[serde(default)]
    pub capacity: NodeCapacity,
}

impl Default for NodeInfo {
    fn default() -> Self {
        Self {
            id: String::new(),
            kind: NodeKind::Sfu,
            grpc_addr: String::new(),
            media_addr: String::new(),
            ice_tcp_addr: String::new(),
            http_addr: String::new(),
            load: NodeLoad::default(),
            capacity: NodeCapacity::default(),
        }
    }
}

impl NodeInfo {
    /// Whether one more session fits under the session capacity.
    pub fn has_session_room(&self) -> bool {
        self.capacity.sessions == 0 || self.load.sessions < self.capacity.sessions
    }

    /// Whether one more session fits while keeping `reserve` sessions free (for
    /// publishers: viewers must never lock a publisher out), and the node is not
    /// overloaded (viewers only: a publisher is one session, a room's audience many).
    pub fn has_session_room_keeping(&self, reserve: u32) -> bool {
        !self.load.overloaded
            && (self.capacity.sessions == 0
                || self.load.sessions.saturating_add(reserve) < self.capacity.sessions)
    }

    /// Whether the node can feed one more downstream relay link, counting at least
    /// `links` in use. Every room the node is the origin of keeps a link in reserve
    /// (its first edge); a link for one of those rooms (`for_own_room`) may use the
    /// reserve, a link for anything else (another room's tree, a new origin) may not,
    /// so other rooms can never leave a room unable to grow past its origin.
    pub fn has_relay_slot(&self, links: u32, for_own_room: bool) -> bool {
        let reserve = if for_own_room { 0 } else { self.load.origins };
        self.capacity.relays == 0
            || self.load.relays_out.max(links).saturating_add(reserve) < self.capacity.relays
    }

    /// Sessions in use as a fraction of capacity (an unlimited node counts its
    /// sessions as if its capacity were 1, so it still compares by load).
    pub fn session_fill(&self) -> f64 {
        f64::from(self.load.sessions) / f64::from(self.capacity.sessions.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes from before a field keep heartbeating during a rolling upgrade: their
    /// records still read, the missing field empty.
    #[test]
    fn records_without_the_ice_tcp_address_still_read() {
        let old = r#"{"id":"sfu-1","kind":"sfu","grpc_addr":"http://10.0.0.5:7001",
            "media_addr":"203.0.113.7:7882","http_addr":"","load":{},"capacity":{}}"#;
        let node: NodeInfo = serde_json::from_str(old).unwrap();
        assert_eq!(node.media_addr, "203.0.113.7:7882");
        assert_eq!(node.ice_tcp_addr, "");
        let new = NodeInfo {
            ice_tcp_addr: "203.0.113.7:7881".into(),
            ..node
        };
        let back: NodeInfo = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
