//! Spread: the node with the lowest session fill.

use super::{with_room, NodeSelector, SelectError};
use skylark_bus::NodeInfo;

/// The node with the lowest load relative to its capacity; ties go to the lowest id.
pub struct LeastLoaded;

impl NodeSelector for LeastLoaded {
    fn select<'a>(&self, nodes: &[&'a NodeInfo]) -> Result<&'a NodeInfo, SelectError> {
        with_room(nodes)?
            .min_by(|a, b| {
                a.session_fill()
                    .total_cmp(&b.session_fill())
                    .then_with(|| a.id.cmp(&b.id))
            })
            .ok_or(SelectError::NoNodes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{node, refs};
    use super::*;

    #[test]
    fn lowest_fill_wins_and_full_nodes_are_skipped() {
        let nodes = [node("a", 50, 100), node("b", 10, 100), node("c", 5, 5)];
        assert_eq!(LeastLoaded.select(&refs(&nodes)).unwrap().id, "b");
        // Fill, not absolute load: 3 of 4 is fuller than 30 of 100.
        let nodes = [node("small", 3, 4), node("big", 30, 100)];
        assert_eq!(LeastLoaded.select(&refs(&nodes)).unwrap().id, "big");
    }

    #[test]
    fn ties_go_to_the_lowest_id() {
        let nodes = [node("a", 1, 10), node("b", 1, 10)];
        assert_eq!(LeastLoaded.select(&refs(&nodes)).unwrap().id, "a");
    }

    #[test]
    fn no_nodes_and_all_full_are_told_apart() {
        assert_eq!(LeastLoaded.select(&refs(&[])), Err(SelectError::NoNodes));
        assert_eq!(
            LeastLoaded.select(&refs(&[node("x", 3, 3), node("y", 9, 9)])),
            Err(SelectError::AllFull { nodes: 2 })
        );
    }

    #[test]
    fn unlimited_nodes_compare_by_load() {
        let nodes = [node("a", 7, 0), node("b", 2, 0)];
        assert_eq!(LeastLoaded.select(&refs(&nodes)).unwrap().id, "b");
    }
}
