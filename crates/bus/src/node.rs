//! What a media node announces about itself in the registry.

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

/// A node's heartbeat: how to reach it and how busy it is.
///
/// ```
/// use skylark_bus::{NodeInfo, NodeKind};
/// let node = NodeInfo {
///     id: "sfu-1".into(),
///     kind: NodeKind::Sfu,
///     grpc_addr: "http://10.0.0.5:7001".into(),
///     media_addr: "203.0.113.7:50000".into(),
///     load: 12,
///     capacity: 500,
/// };
/// assert_eq!(node.kind.as_str(), "sfu");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique per node and stable across its heartbeats.
    pub id: String,
    /// Which registry the node lives in.
    pub kind: NodeKind,
    /// Where other services reach its gRPC API.
    pub grpc_addr: String,
    /// Its announced media address (UDP for an SFU).
    pub media_addr: String,
    /// Current load, in the node's own unit (e.g. subscribers).
    pub load: u32,
    /// Load at which the node counts as full, same unit as `load`.
    pub capacity: u32,
}
