//! Where a viewer of a live room goes, as an ordered list of candidates (the first
//! that answers serves; a dead or full node costs the viewer nothing but a retry):
//!
//! 1. the origin, while it has room for subscribers (keeping a reserve for publishers);
//! 2. an edge already relaying the room that has room, nearest the origin first;
//! 3. a new edge, chosen by the node selector among nodes not yet in the room's tree,
//!    pulling from the origin if it has a free relay slot, else from the relaying node
//!    with a free slot nearest the origin (the tree grows downward).
//!
//! Pure: a snapshot of the registry and of the room's placement in, a plan out; so
//! fixture tests and the simulation drive exactly what production runs.

use super::selector::{NodeSelector, SelectError};
use skylark_bus::placement::Relay;
use skylark_bus::NodeInfo;
use std::collections::{HashMap, HashSet};

/// Candidates one plan lists at most: enough to ride over a dead or full node or two
/// without a second look at the registry.
pub const MAX_CANDIDATES: usize = 4;

/// Sessions a node keeps free for publishers: viewers never take the last of them.
pub fn publisher_reserve(node: &NodeInfo) -> u32 {
    skylark_bus::publisher_reserve(node.capacity.sessions)
}

/// One way to serve a viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewCandidate {
    /// `node` serves the viewer from media it already has: the origin (`parent`
    /// `None`) or an edge relaying the room from `parent`.
    Serve {
        node: NodeInfo,
        parent: Option<NodeInfo>,
        depth: u32,
    },
    /// `node` becomes a new edge of the room, pulling it from `parent`.
    NewEdge {
        node: NodeInfo,
        parent: NodeInfo,
        depth: u32,
    },
}

impl ViewCandidate {
    pub fn node(&self) -> &NodeInfo {
        match self {
            Self::Serve { node, .. } | Self::NewEdge { node, .. } => node,
        }
    }
}

/// The node a new edge of the room pulls from, and the new edge's depth: the origin if
/// it has a free relay slot, else the relaying node with a free slot nearest the
/// origin (the tree grows downward). Links this room's tree already uses are counted
/// even before heartbeats show them. `find` resolves a live node by id.
pub fn relay_parent<'a>(
    origin: &'a NodeInfo,
    relays: &[Relay],
    find: impl Fn(&str) -> Option<&'a NodeInfo>,
) -> Option<(u32, &'a NodeInfo)> {
    let links_from = |id: &str| relays.iter().filter(|r| r.parent == id).count() as u32;
    let mut edges: Vec<(u32, &NodeInfo)> = relays
        .iter()
        .filter_map(|r| Some((r.depth, find(&r.node)?)))
        .collect();
    edges.sort_by(|(da, a), (db, b)| da.cmp(db).then(a.id.cmp(&b.id)));
    std::iter::once((0, origin))
        .chain(edges)
        .find(|(depth, n)| n.has_relay_slot(links_from(&n.id), *depth == 0))
}

/// Why a viewer can't be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("the room's origin node is not in the registry: retry shortly")]
    OriginGone,
    #[error(transparent)]
    NoNode(#[from] SelectError),
    #[error("every node relaying this room has all its relay links in use: add nodes or raise SKYLARK_SFU_MAX_RELAYS")]
    RelaysFull,
}

/// The candidates for one viewer, best first, at most [`MAX_CANDIDATES`]. `nodes` are
/// the live SFU nodes; `relays` the room's edges; `origin` the id of the room's
/// origin node. Cost: linear in the nodes and the room's relays.
pub fn plan_view(
    origin: &str,
    relays: &[Relay],
    nodes: &[NodeInfo],
    selector: &dyn NodeSelector,
) -> Result<Vec<ViewCandidate>, ViewError> {
    let index: HashMap<&str, &NodeInfo> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let find = |id: &str| index.get(id).copied();
    let origin_node = find(origin).ok_or(ViewError::OriginGone)?;
    let has_room = |n: &NodeInfo| n.has_session_room_keeping(publisher_reserve(n));
    let mut out = Vec::new();
    if has_room(origin_node) {
        out.push(ViewCandidate::Serve {
            node: origin_node.clone(),
            parent: None,
            depth: 0,
        });
    }
    // Edges that are alive, nearest the origin first, then the least full.
    let mut edges: Vec<(&Relay, &NodeInfo)> = relays
        .iter()
        .filter_map(|r| Some((r, find(&r.node)?)))
        .collect();
    edges.sort_by(|(ra, na), (rb, nb)| {
        ra.depth
            .cmp(&rb.depth)
            .then(na.session_fill().total_cmp(&nb.session_fill()))
            .then(na.id.cmp(&nb.id))
    });
    for (relay, node) in &edges {
        if out.len() == MAX_CANDIDATES {
            return Ok(out);
        }
        if has_room(node) {
            out.push(ViewCandidate::Serve {
                node: (*node).clone(),
                parent: find(&relay.parent).cloned(),
                depth: relay.depth,
            });
        }
    }
    let parent = relay_parent(origin_node, relays, |id| find(id));
    let tree: HashSet<&str> = std::iter::once(origin)
        .chain(relays.iter().map(|r| r.node.as_str()))
        .collect();
    // An overloaded node takes no viewer, so it starts no new edge either.
    let mut fresh: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| !tree.contains(n.id.as_str()) && !n.load.overloaded)
        .collect();
    match parent {
        Some((depth, parent)) => {
            // The selector's order: pick, remove, pick again.
            while out.len() < MAX_CANDIDATES {
                let Ok(pick) = selector.select(&fresh) else {
                    break;
                };
                fresh.retain(|n| n.id != pick.id);
                out.push(ViewCandidate::NewEdge {
                    node: pick.clone(),
                    parent: parent.clone(),
                    depth: depth + 1,
                });
            }
        }
        None if out.is_empty() => return Err(ViewError::RelaysFull),
        None => {}
    }
    if out.is_empty() {
        // Say why. The room's own nodes (the origin at least: it is registered) are
        // full or out of CPU, and no other node can start an edge: every node is.
        return Err(SelectError::AllFull { nodes: nodes.len() }.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::selector::fixtures::node as sfu;
    use super::super::selector::LeastLoaded;
    use super::*;

    fn with_relays(mut n: NodeInfo, used: u32, slots: u32) -> NodeInfo {
        n.load.relays_out = used;
        n.capacity.relays = slots;
        n
    }

    fn relay(node: &str, parent: &str, depth: u32) -> Relay {
        Relay {
            node: node.into(),
            parent: parent.into(),
            depth,
        }
    }

    fn ids(plan: &[ViewCandidate]) -> Vec<(String, &'static str, Option<String>)> {
        plan.iter()
            .map(|c| match c {
                ViewCandidate::Serve { node, parent, .. } => (
                    node.id.clone(),
                    "serve",
                    parent.as_ref().map(|p| p.id.clone()),
                ),
                ViewCandidate::NewEdge { node, parent, .. } => {
                    (node.id.clone(), "edge", Some(parent.id.clone()))
                }
            })
            .collect()
    }

    #[test]
    fn origin_first_while_it_has_room() {
        let nodes = [sfu("o", 3, 20), sfu("a", 0, 20), sfu("b", 5, 20)];
        let plan = plan_view("o", &[], &nodes, &LeastLoaded).unwrap();
        // The origin, then new edges in the selector's order as fallbacks.
        assert_eq!(
            ids(&plan),
            [
                ("o".into(), "serve", None),
                ("a".into(), "edge", Some("o".into())),
                ("b".into(), "edge", Some("o".into())),
            ]
        );
    }

    #[test]
    fn an_overloaded_node_takes_no_viewer_and_starts_no_edge() {
        // The origin has sessions to spare but no CPU: its viewers go to an edge under it,
        // never to an overloaded node.
        let mut o = sfu("o", 3, 20);
        o.load.overloaded = true;
        let mut busy = sfu("busy", 0, 20);
        busy.load.overloaded = true;
        let nodes = [o, busy, sfu("a", 5, 20)];
        let plan = plan_view("o", &[], &nodes, &LeastLoaded).unwrap();
        assert_eq!(ids(&plan), [("a".into(), "edge", Some("o".into()))]);
    }

    #[test]
    fn origin_full_goes_to_an_edge_with_room() {
        // 19 of 20: the last session is the publishers' reserve.
        let nodes = [
            sfu("o", 19, 20),
            sfu("e1", 20, 20),
            sfu("e2", 4, 20),
            sfu("x", 0, 20),
        ];
        let relays = [relay("e1", "o", 1), relay("e2", "o", 1)];
        let plan = plan_view("o", &relays, &nodes, &LeastLoaded).unwrap();
        assert_eq!(ids(&plan)[0], ("e2".into(), "serve", Some("o".into())));
        assert!(!ids(&plan).iter().any(|(id, _, _)| id == "o" || id == "e1"));
    }

    #[test]
    fn relay_slots_full_grows_the_tree_downward() {
        // The origin feeds one link (to e1); e1 has a free slot: x pulls from e1.
        let nodes = [
            with_relays(sfu("o", 19, 20), 1, 1),
            with_relays(sfu("e1", 19, 20), 0, 1),
            sfu("x", 0, 20),
        ];
        let relays = [relay("e1", "o", 1)];
        let plan = plan_view("o", &relays, &nodes, &LeastLoaded).unwrap();
        assert_eq!(
            plan,
            [ViewCandidate::NewEdge {
                node: nodes[2].clone(),
                parent: nodes[1].clone(),
                depth: 2
            }]
        );
    }

    #[test]
    fn links_of_this_room_count_before_heartbeats_show_them() {
        // The registry still says 0 links out, but the room's tree records one.
        let nodes = [
            with_relays(sfu("o", 19, 20), 0, 1),
            with_relays(sfu("e1", 0, 20), 0, 1),
            sfu("x", 0, 20),
        ];
        let plan = plan_view("o", &[relay("e1", "o", 1)], &nodes, &LeastLoaded).unwrap();
        assert_eq!(ids(&plan)[0], ("e1".into(), "serve", Some("o".into())));
        assert_eq!(ids(&plan)[1], ("x".into(), "edge", Some("e1".into())));
    }

    #[test]
    fn all_full_is_a_named_error() {
        let nodes = [sfu("o", 20, 20), sfu("a", 20, 20)];
        assert_eq!(
            plan_view("o", &[], &nodes, &LeastLoaded),
            Err(ViewError::NoNode(SelectError::AllFull { nodes: 2 }))
        );
        // The only node full (or overloaded): not "no node registered".
        assert_eq!(
            plan_view("o", &[], &[sfu("o", 20, 20)], &LeastLoaded),
            Err(ViewError::NoNode(SelectError::AllFull { nodes: 1 }))
        );
        let nodes = [with_relays(sfu("o", 20, 20), 1, 1), sfu("a", 0, 20)];
        assert_eq!(
            plan_view("o", &[relay("gone", "o", 1)], &nodes, &LeastLoaded),
            Err(ViewError::RelaysFull)
        );
        assert_eq!(
            plan_view("o", &[], &[sfu("a", 0, 9)], &LeastLoaded),
            Err(ViewError::OriginGone)
        );
    }

    #[test]
    fn a_node_keeps_a_link_for_the_rooms_it_originates() {
        // e1 is this room's edge and another room's origin, with one link: it keeps
        // that link for its own room, so this room's next edge hangs off the origin.
        let mut e1 = with_relays(sfu("e1", 19, 20), 0, 1);
        e1.load.origins = 1;
        let nodes = [with_relays(sfu("o", 19, 20), 1, 2), e1, sfu("x", 0, 20)];
        let plan = plan_view("o", &[relay("e1", "o", 1)], &nodes, &LeastLoaded).unwrap();
        assert_eq!(ids(&plan), [("x".into(), "edge", Some("o".into()))]);
    }

    #[test]
    fn dead_relays_are_skipped() {
        // e1 left the registry (dead); its relay entry hasn't expired yet.
        let nodes = [sfu("o", 19, 20), sfu("x", 0, 20)];
        let plan = plan_view("o", &[relay("e1", "o", 1)], &nodes, &LeastLoaded).unwrap();
        assert_eq!(ids(&plan), [("x".into(), "edge", Some("o".into()))]);
    }
}
