//! Where a session's media goes: the node a publisher or a viewer is sent to. Reads
//! the typed room placement (`skylark_bus::placement`) and the node registry, and
//! asks the configured [`NodeSelector`] when a room needs a new node.

pub mod selector;
pub mod suspects;
pub mod view;

pub use selector::{NodeSelector, SelectError, SelectorKind};
pub use suspects::Suspects;
pub use view::{ViewCandidate, ViewError};

use skylark_bus::placement::Origin;
use skylark_bus::{placement, AnyBus, Bus, BusError, NodeInfo, NodeKind};

/// Why no node could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("node registry unavailable ({0}): retry shortly")]
    Registry(#[from] BusError),
    #[error(transparent)]
    NoNode(#[from] SelectError),
    #[error("the room is not live yet: retry when it is (the watch page waits by itself)")]
    NotLive,
    #[error(transparent)]
    View(#[from] ViewError),
}

/// Where a publisher of `room` may go, best first: the room's origin (a reconnect
/// replaces the old session there), then the selector's pick among the other nodes
/// (the origin may be dead but not yet out of the registry).
pub async fn publish_candidates(
    bus: &AnyBus,
    room: &str,
    selector: &dyn NodeSelector,
) -> Result<Vec<NodeInfo>, PlaceError> {
    let origin = placement::origin_node(bus, room).await?;
    let nodes = bus.nodes(NodeKind::Sfu).await?;
    let others: Vec<NodeInfo> = nodes
        .into_iter()
        .filter(|n| Some(&n.id) != origin.as_ref().map(|o| &o.id))
        .collect();
    let pick = selector.select(&origin_candidates(&others)).cloned();
    match (origin, pick) {
        (Some(o), Ok(p)) => Ok(vec![o, p]),
        (Some(o), Err(_)) => Ok(vec![o]),
        (None, pick) => Ok(vec![pick?]),
    }
}

/// The nodes a room's publisher may go to: those with a relay link to reserve for the
/// room, so its audience can grow past the node; all of them if none has.
pub fn origin_candidates(nodes: &[NodeInfo]) -> Vec<&NodeInfo> {
    let growable: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.has_relay_slot(0, false))
        .collect();
    if growable.is_empty() {
        nodes.iter().collect()
    } else {
        growable
    }
}

/// Where a viewer of `room` may go, best first (see [`view`]).
pub async fn view_candidates(
    bus: &AnyBus,
    room: &str,
    selector: &dyn NodeSelector,
) -> Result<Vec<ViewCandidate>, PlaceError> {
    let Some(Origin::Sfu { node: origin }) = placement::origin(bus, room).await? else {
        return Err(PlaceError::NotLive);
    };
    let relays = placement::relays(bus, room).await?;
    let nodes = bus.nodes(NodeKind::Sfu).await?;
    Ok(view::plan_view(&origin, &relays, &nodes, selector)?)
}
