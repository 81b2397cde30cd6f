//! Where a room's media lives: choosing SFU nodes for publishers and viewers.

use skylark_bus::{keys, AnyBus, Bus, BusError, NodeInfo, NodeKind};

/// Picks a node for a new room among the live ones. A strategy, so placement policies
/// (least loaded, zone-aware, …) stay swappable.
pub trait NodeSelector: Send + Sync {
    fn pick<'a>(&self, nodes: &'a [NodeInfo]) -> Option<&'a NodeInfo>;
}

/// The node with the lowest load relative to its capacity; full nodes are skipped.
pub struct LeastLoaded;

impl NodeSelector for LeastLoaded {
    fn pick<'a>(&self, nodes: &'a [NodeInfo]) -> Option<&'a NodeInfo> {
        nodes
            .iter()
            .filter(|n| n.capacity == 0 || n.load < n.capacity)
            .min_by(|a, b| {
                let fa = a.load as f64 / a.capacity.max(1) as f64;
                let fb = b.load as f64 / b.capacity.max(1) as f64;
                fa.total_cmp(&fb).then_with(|| a.id.cmp(&b.id))
            })
    }
}

/// The node holding the room's origin lease, if it is alive.
pub async fn origin(bus: &AnyBus, room: &str) -> Result<Option<NodeInfo>, BusError> {
    let Some(holder) = bus.lease_holder(&keys::room_origin(room)).await? else {
        return Ok(None);
    };
    Ok(bus
        .nodes(NodeKind::Sfu)
        .await?
        .into_iter()
        .find(|n| n.id == holder))
}

/// Where a publisher of `room` goes: the room's origin (a reconnect replaces the old
/// session there), else the selector's pick.
pub async fn publish_node(
    bus: &AnyBus,
    room: &str,
    selector: &dyn NodeSelector,
) -> Result<Option<NodeInfo>, BusError> {
    if let Some(n) = origin(bus, room).await? {
        return Ok(Some(n));
    }
    let nodes = bus.nodes(NodeKind::Sfu).await?;
    Ok(selector.pick(&nodes).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, load: u32, capacity: u32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            kind: NodeKind::Sfu,
            grpc_addr: String::new(),
            media_addr: String::new(),
            load,
            capacity,
        }
    }

    #[test]
    fn least_loaded_by_fraction_and_skips_full() {
        let nodes = vec![node("a", 50, 100), node("b", 10, 100), node("c", 5, 5)];
        assert_eq!(LeastLoaded.pick(&nodes).unwrap().id, "b");
        assert!(LeastLoaded.pick(&[node("x", 3, 3)]).is_none());
        assert!(LeastLoaded.pick(&[]).is_none());
    }
}
