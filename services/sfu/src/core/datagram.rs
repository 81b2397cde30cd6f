//! Datagram routing: which session a received datagram belongs to. The source address
//! is remembered per session; a datagram from a new address (ICE) goes to the peer
//! that accepts it.

use super::Core;
use std::net::SocketAddr;
use std::time::Instant;
use str0m::net::{Protocol, Receive};
use str0m::Input;

impl Core {
    /// One received datagram. Garbage and datagrams of no session are counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.counters.datagrams_in += 1;
        let Ok(contents) = contents.try_into() else {
            self.counters.datagrams_unmatched += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.config.local_addr,
                contents,
            },
        );
        let cached = self
            .by_addr
            .get(&source)
            .copied()
            .filter(|k| self.peers.get(k).is_some_and(|p| p.rtc.accepts(&input)));
        let key = cached.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(k, _)| *k)
        });
        let Some(key) = key else {
            self.counters.datagrams_unmatched += 1;
            return;
        };
        self.by_addr.insert(source, key);
        if let Some(p) = self.peers.get_mut(&key) {
            tracing::trace!(session = %p.session, %source, "datagram");
            if let Err(e) = p.rtc.handle_input(input) {
                tracing::debug!(session = %p.session, error = %e, "input refused; closing session");
                p.rtc.disconnect();
            }
        }
        self.drain(key, now);
    }
}
