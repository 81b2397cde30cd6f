//! Session admission: offers in, answers and session ids out; capacity and draining;
//! trickled candidates and explicit ends.

use super::codec::rtc_config;
use super::direct::SendPath;
use super::ids::session_id;
use super::peer::{LocalPublisher, PathState, Peer, PeerRole, SubscriberState};
use super::{sdp, CloseReason, Core, CoreEvent, Output};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use str0m::change::SdpOffer;
use str0m::net::TcpType;
use str0m::{Candidate, IceCreds};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    #[error("{0}")]
    UnsupportedCodec(String),
    #[error("no such session")]
    UnknownSession,
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    #[error("node at capacity: try another node")]
    AtCapacity,
    /// Every worker is past its busy threshold: another viewer would cost the ones
    /// it serves their latency.
    #[error("node overloaded (its CPU is spent): try another node")]
    Overloaded,
    #[error("node draining (shutting down): retry and another node takes the session")]
    Draining,
    /// The node's worker has stopped (the node is shutting down or failed).
    #[error("SFU worker stopped: retry and another node takes the session")]
    Stopped,
    /// A layer request for a session that receives no video layers.
    #[error("not a subscriber: only a viewer's session has layers to choose")]
    NotASubscriber,
    /// A layer request naming a layer the room's publisher does not send.
    #[error("no layer {0} in this room: choose one of the layers listed, or auto")]
    UnknownLayer(String),
    /// An edge pull of a room whose publisher is on this node.
    #[error("the room's publisher is on this node: nothing to pull")]
    PublishedHere,
}

/// Whether a session sends into the room or receives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

/// [`skylark_bus::publisher_reserve`] of a node taking `max_sessions`.
pub fn publisher_reserve(max_sessions: usize) -> usize {
    let max = u32::try_from(max_sessions).unwrap_or(u32::MAX);
    skylark_bus::publisher_reserve(max) as usize
}

/// Whether a node with `sessions` of `max` taken admits one more of `role`.
pub fn admit(draining: bool, sessions: usize, max: usize, role: Role) -> Result<(), SessionError> {
    if draining {
        return Err(SessionError::Draining);
    }
    let limit = match role {
        Role::Publisher => max,
        Role::Subscriber => max.saturating_sub(publisher_reserve(max)),
    };
    if sessions >= limit {
        return Err(SessionError::AtCapacity);
    }
    Ok(())
}

impl Core {
    /// Refuse new sessions from now on; live ones continue until they end.
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// The next session key and its id.
    fn next_session(&mut self) -> (u64, String) {
        let key = self.next_key;
        self.next_key += 1;
        let id = session_id(self.crypto.sha256_provider, &self.config.id_seed, key);
        (key, id)
    }

    fn new_session(
        &mut self,
        now: Instant,
        room: &str,
        offer: &str,
        role: PeerRole,
    ) -> Result<(u64, String, String), SessionError> {
        // Local publishers are not counted here (unlike in `publish_local`).
        admit(
            self.draining,
            self.peers.len(),
            self.config.max_sessions,
            role.role(),
        )?;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SessionError::BadSdp(e.to_string()))?;
        let subscriber = matches!(role, PeerRole::Subscriber(_));
        let direct = subscriber && self.send_path == SendPath::Direct;
        let mut rtc = rtc_config(&self.crypto, self.dtls_cert.as_ref(), subscriber, direct).build(now);
        // The association str0m just made keeps its SRTP keys here for the core.
        let keys = skylark_dtls::take_created_keys().filter(|_| direct);
        // str0m's ufrags are 16 random characters: a clash is for the books, but one would
        // send a session's checks to another.
        // The first character names this worker (`slot`), for the node's other workers.
        let mut creds = rtc.direct_api().local_ice_credentials();
        for _ in 0..4 {
            creds.ufrag = self.config.worker.stamp_ufrag(&creds.ufrag);
            if !self.by_ufrag.contains_key(&creds.ufrag) {
                break;
            }
            creds = IceCreds::new();
        }
        let ufrag = creds.ufrag.clone();
        let ice_pass = creds.pass.clone();
        rtc.direct_api().set_local_ice_credentials(creds);
        if self.by_ufrag.contains_key(&ufrag) {
            return Err(SessionError::AtCapacity);
        }
        // After the credentials: a local candidate carries the ufrag it was made with.
        let candidate = Candidate::host(self.config.announce_addr, "udp")
            .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        if let Some(tcp) = self.config.tcp_addr {
            // RFC 6544 passive: the peer connects to us. Its type preference (host over
            // TCP) puts it below the UDP candidate, so peers that reach UDP use UDP.
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SessionError::BadSdp(e.to_string()))?;
        let (key, session) = self.next_session();
        self.by_ufrag.insert(ufrag.clone(), key);
        self.peers.insert(
            key,
            Peer {
                stream_totals: HashMap::new(),
                loss: 0.0,
                session: session.clone(),
                room: room.to_string(),
                rtc,
                role,
                next_timeout: now,
                created: now,
                connected: false,
                ufrag,
                addrs: VecDeque::new(),
                clock: Default::default(),
                path: PathState::new(ice_pass),
                send_to: None,
                keys,
                direct: None,
            },
        );
        self.by_session.insert(session.clone(), key);
        Ok((key, session, answer.to_sdp_string()))
    }

    /// A publisher's offer → `(session id, answer)`. Replaces the room's current publisher.
    pub fn publish(
        &mut self,
        now: Instant,
        room: &str,
        offer: &str,
    ) -> Result<(String, String), SessionError> {
        sdp::check_publish_offer(offer)?;
        let (key, session, answer) =
            self.new_session(now, room, offer, PeerRole::Publisher { tracks: Vec::new() })?;
        self.install_publisher(room, key);
        self.drain(key, now);
        Ok((session, answer))
    }

    /// A publisher that is not a WebRTC peer (RTMP ingest): its frames arrive through
    /// [`Core::push_local`]. Replaces the room's current publisher like a WHIP reconnect.
    pub fn publish_local(&mut self, room: &str) -> Result<String, SessionError> {
        self.new_local(room, false)
    }

    /// The local publisher of an edge pull: frames relayed from the room's parent node
    /// arrive through [`Core::push_relayed`]; keyframe wants leave as
    /// [`Output::UpstreamKeyframe`]. It makes no `RoomLive`/`RoomOffline` events (the
    /// room's origin is elsewhere). Replaces the room's current publisher, so a new
    /// relay link looks like a publisher reconnect to the viewers.
    pub fn publish_relayed(&mut self, room: &str) -> Result<String, SessionError> {
        self.new_local(room, true)
    }

    /// Whether the room's publisher is on this node and not an edge pull.
    pub fn has_own_publisher(&self, room: &str) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.publisher)
            .is_some_and(|k| self.locals.get(&k).is_none_or(|l| !l.relayed))
    }

    fn new_local(&mut self, room: &str, relayed: bool) -> Result<String, SessionError> {
        if relayed && self.has_own_publisher(room) {
            return Err(SessionError::PublishedHere);
        }
        admit(
            self.draining,
            self.peers.len() + self.locals.len(),
            self.config.max_sessions,
            Role::Publisher,
        )?;
        let (key, session) = self.next_session();
        self.locals.insert(
            key,
            LocalPublisher {
                session: session.clone(),
                room: room.to_string(),
                relayed,
                clock: Default::default(),
            },
        );
        self.by_session.insert(session.clone(), key);
        self.install_publisher(room, key);
        Ok(session)
    }

    /// A subscriber's offer → `(session id, answer)`. The room need not be live yet.
    pub fn subscribe(
        &mut self,
        now: Instant,
        room: &str,
        offer: &str,
    ) -> Result<(String, String), SessionError> {
        sdp::check_size(offer)?;
        let state = Box::new(SubscriberState::new(getrandom::u32().unwrap_or(0)));
        let (key, session, answer) =
            self.new_session(now, room, offer, PeerRole::Subscriber(state))?;
        let answer = sdp::one_stream(&answer, room);
        let r = self.rooms.entry(room.to_string()).or_default();
        r.subscribers.push(key);
        let count = r.subscribers.len();
        self.out.push_back(Output::Event(CoreEvent::Viewers {
            room: room.to_string(),
            count,
        }));
        self.drain(key, now);
        Ok((session, answer))
    }

    /// A trickled remote candidate (`candidate:…`, with or without `a=`).
    pub fn add_candidate(&mut self, session: &str, candidate: &str) -> Result<(), SessionError> {
        let key = *self
            .by_session
            .get(session)
            .ok_or(SessionError::UnknownSession)?;
        let line = candidate.trim().trim_start_matches("a=");
        if line.is_empty() || line.len() > 1024 {
            return Err(SessionError::BadCandidate(
                "empty or over 1024 bytes".into(),
            ));
        }
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
        if let Some(p) = self.peers.get_mut(&key) {
            p.rtc.add_remote_candidate(c);
        }
        Ok(())
    }

    pub fn close(&mut self, session: &str) -> Result<(), SessionError> {
        let key = *self
            .by_session
            .get(session)
            .ok_or(SessionError::UnknownSession)?;
        self.remove_peer(key, CloseReason::Closed);
        Ok(())
    }

    /// Ends the room's publisher session (stream key rotated, room deleted).
    pub fn end_publisher(&mut self, room: &str) -> bool {
        match self.rooms.get(room).and_then(|r| r.publisher) {
            Some(key) => {
                self.remove_peer(key, CloseReason::Closed);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_refuses_before_capacity_does() {
        let p = Role::Publisher;
        assert_eq!(admit(false, 0, 1, p), Ok(()));
        assert_eq!(admit(false, 1, 1, p), Err(SessionError::AtCapacity));
        assert_eq!(admit(true, 0, 1, p), Err(SessionError::Draining));
        assert_eq!(admit(true, 5, 1, p), Err(SessionError::Draining));
    }

    #[test]
    fn subscribers_leave_the_reserve_to_publishers() {
        let (p, s) = (Role::Publisher, Role::Subscriber);
        assert_eq!(publisher_reserve(0), 0);
        assert_eq!(publisher_reserve(20), 1);
        assert_eq!(publisher_reserve(5000), 100);
        // 20 sessions: the 20th is a publisher's.
        assert_eq!(admit(false, 18, 20, s), Ok(()));
        assert_eq!(admit(false, 19, 20, s), Err(SessionError::AtCapacity));
        assert_eq!(admit(false, 19, 20, p), Ok(()));
        assert_eq!(admit(false, 20, 20, p), Err(SessionError::AtCapacity));
        assert_eq!(admit(false, 4899, 5000, s), Ok(()));
        assert_eq!(admit(false, 4900, 5000, s), Err(SessionError::AtCapacity));
        assert_eq!(admit(false, 4999, 5000, p), Ok(()));
    }
}
