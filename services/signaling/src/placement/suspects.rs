//! Nodes that did not answer a call: still in the registry (a heartbeat lives
//! [`LEASE_TTL`]) but probably cut off or dead. Placement tries them last for one
//! lease: by then a dead node has left the registry and a live one has heartbeated
//! again, so the mark never outlives what the registry would say by itself.

use skylark_bus::placement::LEASE_TTL;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Nodes placement tries last, by id, until their mark runs out.
#[derive(Debug, Default)]
pub struct Suspects {
    until: Mutex<HashMap<String, Instant>>,
}

impl Suspects {
    /// `node` did not answer (a timeout, a refused connection, or slower than a hedge).
    pub fn mark(&self, node: &str) {
        let mut until = self.lock();
        let now = Instant::now();
        // Bounded by the registry's size in practice; sweep expired marks as we go.
        until.retain(|_, t| *t > now);
        until.insert(node.to_owned(), now + LEASE_TTL);
        metrics::gauge!("skylark_placement_suspect_nodes").set(until.len() as f64);
    }

    /// `node` answered: it is reachable again.
    pub fn clear(&self, node: &str) {
        let mut until = self.lock();
        if until.remove(node).is_some() {
            metrics::gauge!("skylark_placement_suspect_nodes").set(until.len() as f64);
        }
    }

    pub fn is_suspect(&self, node: &str) -> bool {
        self.lock().get(node).is_some_and(|t| *t > Instant::now())
    }

    /// `candidates` with those that involve a suspect node (per `nodes`) moved to the
    /// end, order otherwise kept: a suspect is still tried when nothing else answers.
    pub fn last<C, I, S>(&self, candidates: Vec<C>, nodes: impl Fn(&C) -> I) -> Vec<C>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (sound, suspect): (Vec<C>, Vec<C>) = candidates
            .into_iter()
            .partition(|c| !nodes(c).into_iter().any(|n| self.is_suspect(n.as_ref())));
        sound.into_iter().chain(suspect).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_go_last_in_order_and_clear_when_they_answer() {
        let s = Suspects::default();
        type Plan = (&'static str, Option<&'static str>);
        let plan: Vec<Plan> = vec![("a", None), ("b", None), ("c", Some("a")), ("d", None)];
        fn by(c: &Plan) -> Vec<&'static str> {
            [Some(c.0), c.1].into_iter().flatten().collect()
        }
        assert_eq!(s.last(plan.clone(), by), plan);
        s.mark("a");
        // A new edge pulling from a suspect parent is as doubtful as the parent.
        let order: Vec<&str> = s.last(plan.clone(), by).iter().map(|c| c.0).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
        s.clear("a");
        assert!(!s.is_suspect("a"));
        assert_eq!(s.last(plan.clone(), by), plan);
    }
}
