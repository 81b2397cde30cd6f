//! Node selection: which SFU node takes a new room. A small strategy interface in
//! the style of LiveKit's `routing/selector`: one method over the registry's live
//! nodes, named errors, one file per strategy, chosen by configuration
//! (`SKYLARK_NODE_SELECTOR`).
//!
//! ```
//! use skylark_bus::{NodeCapacity, NodeInfo, NodeLoad};
//! use skylark_signaling::{NodeSelector, SelectError, SelectorKind};
//! let node = |id: &str, sessions| NodeInfo {
//!     id: id.into(),
//!     load: NodeLoad { sessions, ..NodeLoad::default() },
//!     capacity: NodeCapacity { sessions: 10, relays: 0 },
//!     ..NodeInfo::default()
//! };
//! let selector = SelectorKind::LeastLoaded.build();
//! let (a, b, full) = (node("a", 7), node("b", 2), node("c", 10));
//! assert_eq!(selector.select(&[&a, &b]).unwrap().id, "b");
//! assert_eq!(selector.select(&[&full]).unwrap_err(), SelectError::AllFull { nodes: 1 });
//! ```

mod least_loaded;
mod pack;

pub use least_loaded::LeastLoaded;
pub use pack::Pack;

use skylark_bus::NodeInfo;
use std::sync::Arc;

/// Seconds a client refused for lack of room waits before asking again (its
/// `Retry-After`): nodes publish their load every heartbeat (2 s), so a sooner try
/// would most likely meet the same loads.
pub const RETRY_FULL_S: u64 = skylark_bus::placement::RENEW_EVERY.as_secs();

/// Why no node was selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no SFU node is registered: start one (`skylark sfu`), or retry shortly")]
    NoNodes,
    /// No node can take the session: the registry says so, or every node asked refused
    /// (`session::on_first_taker`). The one text a user refused for room sees.
    #[error("every SFU node ({nodes}) is full or out of CPU: retry in {RETRY_FULL_S} s; operators: add nodes or raise SKYLARK_SFU_MAX_SESSIONS")]
    AllFull { nodes: usize },
}

impl SelectError {
    /// The `Retry-After` of this refusal, when waiting may help.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::AllFull { .. } => Some(RETRY_FULL_S),
            Self::NoNodes => None,
        }
    }
}

/// Picks the node for one more session among the live `nodes` (sorted by id).
/// References, so callers filter the registry without copying entries.
pub trait NodeSelector: Send + Sync {
    fn select<'a>(&self, nodes: &[&'a NodeInfo]) -> Result<&'a NodeInfo, SelectError>;
}

/// The strategies configuration can name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SelectorKind {
    /// The node with the lowest session fill (the default): spreads rooms.
    #[default]
    LeastLoaded,
    /// The fullest node that still has room: packs rooms onto few nodes.
    Pack,
}

impl SelectorKind {
    pub fn build(self) -> Arc<dyn NodeSelector> {
        match self {
            Self::LeastLoaded => Arc::new(LeastLoaded),
            Self::Pack => Arc::new(Pack),
        }
    }
}

/// The nodes with room for one more session, or the error saying why there are none.
fn with_room<'a, 'b>(
    nodes: &'b [&'a NodeInfo],
) -> Result<impl Iterator<Item = &'a NodeInfo> + 'b, SelectError> {
    if nodes.is_empty() {
        return Err(SelectError::NoNodes);
    }
    if !nodes.iter().any(|n| n.has_session_room()) {
        return Err(SelectError::AllFull { nodes: nodes.len() });
    }
    Ok(nodes.iter().copied().filter(|n| n.has_session_room()))
}

#[cfg(test)]
pub(crate) mod fixtures {
    use skylark_bus::{NodeCapacity, NodeInfo, NodeLoad};

    /// An SFU node with `sessions` of `capacity` in use.
    pub fn node(id: &str, sessions: u32, capacity: u32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            grpc_addr: format!("http://{id}:7001"),
            load: NodeLoad {
                sessions,
                ..NodeLoad::default()
            },
            capacity: NodeCapacity {
                sessions: capacity,
                relays: 0,
            },
            ..NodeInfo::default()
        }
    }

    /// What the selector takes: references to the entries.
    pub fn refs(nodes: &[NodeInfo]) -> Vec<&NodeInfo> {
        nodes.iter().collect()
    }
}
