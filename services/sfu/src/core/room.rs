//! Who is in a room — its publisher, subscribers and relay sinks — and what changes when
//! one of them comes or goes.

use super::forward::{Gate, Layers};
use super::join::TrackGop;
use super::keyframe::{TrackThrottles, Want};
use super::output::relay_msg;
use super::peer::PeerRole;
use super::{CloseReason, Core, CoreEvent, Output, Role};
use skylark_proto::sfu::v1 as pb;
use std::time::Instant;
use str0m::{Output as RtcOutput, Rtc};

#[derive(Default)]
pub(super) struct Room {
    pub publisher: Option<u64>,
    pub subscribers: Vec<u64>,
    pub relays: Vec<u64>,
    /// Increments with each new publisher, so subscribers re-base their timelines.
    pub epoch: u64,
    pub tracks: Vec<pb::TrackInfo>,
    pub keyframes: TrackThrottles,
    /// Each video track's latest GOP, kept while the publisher can't be asked for a
    /// keyframe (`join`).
    pub gops: std::collections::HashMap<String, TrackGop>,
    /// Its simulcast layers lately: where a viewer with no layer yet starts.
    pub layers: Layers,
}

impl Core {
    /// The room a session belongs to.
    pub fn session_room(&self, session: &str) -> Option<(&str, Role)> {
        let p = self.peers.get(self.by_session.get(session)?)?;
        Some((p.room.as_str(), p.role.role()))
    }

    /// Registers a relay sink for a room; it gets the current tracks at once and every
    /// frame from now on, starting at a keyframe. A room with no publisher here is told
    /// `Ended` at once: a consumer that came in as the room went offline looks for its
    /// origin again instead of holding the room open here.
    pub fn attach_relay(&mut self, now: Instant, room: &str, sink: u64) {
        self.attach(now, room, sink, false);
    }

    /// [`Core::attach_relay`] for a consumer that starts from the room's cached GOP
    /// (`RelayStart.from_gop`, a packager): after the tracks, a `CachedGop` and each video
    /// track's frames since its last keyframe, then the live frames. A recording then
    /// starts where the stream did instead of at the encoder's next keyframe, and a
    /// packager's first segment starts at that keyframe, up to a GOP behind live (as
    /// SRS's HLS does with its GOP cache). Rooms without a cache (WebRTC publishers, who
    /// are asked for a keyframe) attach as with [`Core::attach_relay`].
    pub fn attach_relay_from_gop(&mut self, now: Instant, room: &str, sink: u64) {
        self.attach(now, room, sink, true);
    }

    fn attach(&mut self, now: Instant, room: &str, sink: u64, from_gop: bool) {
        let r = self.rooms.entry(room.to_string()).or_default();
        r.relays.push(sink);
        if r.publisher.is_none() {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Ended(pb::Empty {})),
            });
            return;
        }
        let tracks = r.tracks.clone();
        let gop = if from_gop {
            self.cached_gop(room)
        } else {
            Vec::new()
        };
        let video = |t: &&pb::TrackInfo| t.kind == pb::TrackKind::Video as i32;
        // Every video track starts at a cached keyframe: none to ask the publisher for.
        let all_cached = tracks
            .iter()
            .filter(video)
            .all(|t| gop.iter().any(|f| f.track_id == t.track_id));
        for t in tracks {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Track(t)),
            });
        }
        if !gop.is_empty() {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::CachedGop(pb::CachedGop {
                    frames: gop.len() as u32,
                })),
            });
        }
        for f in gop {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Frame(f)),
            });
        }
        if !all_cached {
            self.request_keyframe(room, Want::All, now);
        }
    }

    /// The room's cached GOP of each video track, as relay frames, keyframe first.
    fn cached_gop(&self, room: &str) -> Vec<pb::Frame> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut frames = Vec::new();
        for t in r.tracks.iter() {
            let Some(gop) = r.gops.get(&t.track_id) else {
                continue;
            };
            frames.extend(gop.items().iter().enumerate().map(|(i, f)| pb::Frame {
                track_id: t.track_id.clone(),
                rtp_time: f.time,
                // A cached GOP starts at its keyframe and holds none after it.
                keyframe: i == 0,
                data: f.data.to_vec(),
                received_at_us: self.config.wall_clock.unix_us(f.capture),
                contiguous: true,
            }));
        }
        frames
    }

    pub fn detach_relay(&mut self, room: &str, sink: u64) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.relays.retain(|s| *s != sink);
        }
        self.gc_room(room);
    }

    /// Makes `key` the room's publisher: a new epoch for subscribers and relays, and the
    /// previous publisher (a reconnect's old session) is closed.
    pub(super) fn install_publisher(&mut self, room: &str, key: u64) {
        let relayed = self.locals.get(&key).is_some_and(|l| l.relayed);
        let r = self.rooms.entry(room.to_string()).or_default();
        let old = r.publisher.replace(key);
        let old_relayed = old.is_some_and(|k| self.locals.get(&k).is_some_and(|l| l.relayed));
        r.epoch += 1;
        r.tracks.clear();
        r.gops.clear();
        r.keyframes.new_publisher();
        let relays = r.relays.clone();
        for sink in relays {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::PublisherChanged(pb::Empty {})),
            });
        }
        let subs = self
            .rooms
            .get(room)
            .map(|r| r.subscribers.clone())
            .unwrap_or_default();
        for s in subs {
            if let Some(PeerRole::Subscriber(st)) = self.peers.get_mut(&s).map(|p| &mut p.role) {
                st.gate = Gate::default();
            }
        }
        if let Some(old) = old {
            self.remove_peer(old, CloseReason::Replaced);
        }
        // Live when the room gets its first own publisher (an edge's room is live at its origin).
        if !relayed && old.is_none_or(|_| old_relayed) {
            self.out.push_back(Output::Event(CoreEvent::RoomLive {
                room: room.to_string(),
            }));
        }
    }

    /// Ends session `key` and forgets every route to it.
    pub(super) fn remove_peer(&mut self, key: u64, reason: CloseReason) {
        if let Some(l) = self.locals.remove(&key) {
            self.by_session.remove(&l.session);
            self.publisher_gone(&l.room, key, l.relayed);
            tracing::info!(session = %l.session, room_id = %l.room, "local publisher closed");
            self.out.push_back(Output::Event(CoreEvent::SessionClosed {
                session: l.session,
                room: l.room.clone(),
                role: Role::Publisher,
                reason,
            }));
            self.gc_room(&l.room);
            return;
        }
        let Some(mut p) = self.peers.remove(&key) else {
            return;
        };
        // Ended by the server (asked to, or replaced): the peer is told at once, instead
        // of learning when its consent checks time out (20-30 s).
        if matches!(reason, CloseReason::Closed | CloseReason::Replaced) {
            self.say_goodbye(&mut p.rtc);
        }
        self.by_session.remove(&p.session);
        let addrs: Vec<_> = p.addrs.drain(..).collect();
        self.unroute(key, &p.ufrag, &addrs);
        let role = p.role.role();
        if let Some(r) = self.rooms.get_mut(&p.room) {
            match role {
                Role::Publisher => {}
                Role::Subscriber => {
                    r.subscribers.retain(|s| *s != key);
                    let count = r.subscribers.len();
                    self.out.push_back(Output::Event(CoreEvent::Viewers {
                        room: p.room.clone(),
                        count,
                    }));
                }
            }
        }
        if role == Role::Publisher {
            self.publisher_gone(&p.room, key, false);
        }
        tracing::info!(session = %p.session, room_id = %p.room, ?role, "session closed");
        self.out.push_back(Output::Event(CoreEvent::SessionClosed {
            session: p.session,
            room: p.room.clone(),
            role,
            reason,
        }));
        self.gc_room(&p.room);
    }

    /// Closes `rtc` with RTCP BYE and DTLS close_notify, queued for sending before the
    /// session's routes go.
    fn say_goodbye(&mut self, rtc: &mut Rtc) {
        if rtc.close().is_err() {
            return;
        }
        // Bounded: the close output is a handful of datagrams.
        for _ in 0..64 {
            match rtc.poll_output() {
                Ok(RtcOutput::Transmit(t)) => {
                    self.counters.datagrams_out += 1;
                    self.out.push_back(Output::Transmit {
                        proto: t.proto,
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                Ok(RtcOutput::Event(_)) => {}
                Ok(RtcOutput::Timeout(_)) | Err(_) => break,
            }
            if !rtc.is_alive() {
                break;
            }
        }
    }

    /// The room's publisher `key` left: the room goes offline, and relay consumers learn
    /// the stream stopped (a returning publisher is a new stream: timestamps restart).
    fn publisher_gone(&mut self, room: &str, key: u64, relayed: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.publisher != Some(key) {
            return;
        }
        r.publisher = None;
        if !relayed {
            self.out.push_back(Output::Event(CoreEvent::RoomOffline {
                room: room.to_string(),
            }));
        }
        for sink in r.relays.clone() {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Ended(pb::Empty {})),
            });
        }
    }

    /// Forgets a room's track bytes once it has no publisher, and the room once it has
    /// nobody.
    fn gc_room(&mut self, room: &str) {
        if self.rooms.get(room).is_none_or(|r| r.publisher.is_none()) {
            self.track_bytes.retain(|(r, _), _| r != room);
        }
        if self.rooms.get(room).is_some_and(|r| {
            r.publisher.is_none() && r.subscribers.is_empty() && r.relays.is_empty()
        }) {
            self.rooms.remove(room);
        }
    }
}
