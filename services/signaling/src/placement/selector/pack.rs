//! Pack: the fullest node that still has room, so rooms (and, with edges, their
//! audiences) use as few nodes as possible and idle nodes can be scaled away.

use super::{with_room, NodeSelector, SelectError};
use skylark_bus::NodeInfo;

/// The node with the highest session fill that still has room; ties go to the
/// lowest id.
pub struct Pack;

impl NodeSelector for Pack {
    fn select<'a>(&self, nodes: &[&'a NodeInfo]) -> Result<&'a NodeInfo, SelectError> {
        with_room(nodes)?
            .max_by(|a, b| {
                a.session_fill()
                    .total_cmp(&b.session_fill())
                    .then_with(|| b.id.cmp(&a.id))
            })
            .ok_or(SelectError::NoNodes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{node, refs};
    use super::*;

    #[test]
    fn fullest_node_with_room_wins() {
        let nodes = [node("a", 50, 100), node("b", 99, 100), node("c", 5, 5)];
        assert_eq!(Pack.select(&refs(&nodes)).unwrap().id, "b");
    }

    #[test]
    fn ties_go_to_the_lowest_id() {
        let nodes = [node("b", 0, 10), node("a", 0, 10)];
        assert_eq!(Pack.select(&refs(&nodes)).unwrap().id, "a");
    }

    #[test]
    fn no_nodes_and_all_full_are_told_apart() {
        assert_eq!(Pack.select(&refs(&[])), Err(SelectError::NoNodes));
        assert_eq!(
            Pack.select(&refs(&[node("x", 3, 3)])),
            Err(SelectError::AllFull { nodes: 1 })
        );
    }
}
