//! `GET /ws`: WebSocket signaling. JSON messages with a `type`:
//! - from clients: `publish`, `watch`, `offer`, `answer`, `candidate`, `leave`;
//! - from the server: `answer`, `offer`, `candidate`, `room`, `waiting`, `viewer-joined`,
//!   `viewer-left`, `error`. The reply to `publish`/`watch` carries `iceServers`
//!   (`[{urls, username, credential}]`, a TURN REST credential per connection) when TURN
//!   servers are configured.
//!
//! In `sfu` rooms the server answers offers through an SFU node; a viewer that arrives
//! before the publisher gets `waiting`, then `room {live:true}` when the room goes live,
//! and sends its offer then. In `p2p` rooms the server only relays `offer`, `answer` and
//! `candidate` between the broadcaster and each viewer, over the room's bus channel, so
//! the two may be connected to different signaling pods. Each viewer is announced to
//! the broadcaster (`viewer-joined`) once per broadcaster: on arrival while live, or
//! when the room goes live (or a new broadcaster takes it) while it waits; viewers get
//! `room {live:false}` when the broadcaster leaves.
//!
//! TURN credentials are scoped (`skylark_auth::TurnScope`): p2p participants' to their
//! room, whose candidates' addresses are recorded in the bus (`skylark_bus::peers`) as
//! they are relayed; everyone else's to the SFU nodes.

use crate::limits::Limits;
use crate::peer_addrs;
use crate::session::{self, PublishGrant, SessionError};
use crate::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use skylark_auth::P2pSide;
use skylark_bus::events::{self, RoomEvent};
use skylark_bus::peers;
use skylark_bus::placement::{self, Origin};
use skylark_proto::rooms::v1 as rooms;
use skylark_proto::rooms::v1::authorize_publish_request::Credential;
use skylark_telemetry::limits::ClientIp;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Largest message a client may send (an SDP offer with simulcast fits easily).
const MAX_MESSAGE: usize = 64 * 1024;
/// A connection that says nothing (not even a pong) for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const PING_EVERY: Duration = Duration::from_secs(20);
/// How often a publisher's grant is re-checked with the directory: the longest a
/// publisher outlives a rotated key or deleted room when the `end_publish` event is lost.
const GRANT_CHECK_EVERY: Duration = Duration::from_secs(3);
/// How long a closing connection waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The error code that ends a publisher's connection.
const PUBLISH_ENDED: &str = "publish_ended";
/// The error code that ends a p2p broadcaster whose room another connection took.
const ROOM_BUSY: &str = "room_busy";
/// The error code that ends a publisher a new one with the same credential replaced
/// (the studio reconnected, or went live from another tab): a p2p broadcaster, or a
/// WebSocket publisher whose SFU session the SFU replaced.
const PUBLISH_TAKEN_OVER: &str = "publish_taken_over";
/// How long a takeover waits for the old broadcaster to let go: past this its lease
/// has expired anyway (its signaling pod is gone).
const TAKEOVER_WITHIN: Duration = Duration::from_secs(8);
/// How often a takeover asks the old broadcaster again (a bus message may be lost).
const TAKEOVER_ASK_EVERY: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ClientMsg {
    Publish {
        room: String,
        #[serde(default)]
        stream_key: Option<String>,
        #[serde(default)]
        token: Option<String>,
    },
    Watch {
        room: String,
        #[serde(default)]
        token: Option<String>,
    },
    Offer {
        sdp: String,
        #[serde(default)]
        to: Option<String>,
    },
    Answer {
        sdp: String,
        #[serde(default)]
        to: Option<String>,
    },
    Candidate {
        candidate: Value,
        #[serde(default)]
        to: Option<String>,
    },
    Leave {},
    /// A viewer's simulcast layers; with `choice` ("auto" or a layer's rid), chooses.
    Layer {
        #[serde(default)]
        choice: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Viewer,
}

struct Joined {
    role: Role,
    room: String,
    p2p: bool,
    /// Publishers: what the directory granted (the key generation goes to the SFU).
    grant: Option<PublishGrant>,
    /// The SFU session, once an offer was answered.
    session: Option<SfuSession>,
}

impl Joined {
    /// Its side of a p2p room: what its TURN credential and announced addresses say.
    fn side(&self) -> P2pSide {
        match self.role {
            Role::Publisher => P2pSide::Broadcaster,
            Role::Viewer => P2pSide::Viewer,
        }
    }
}

struct SfuSession {
    id: String,
    /// gRPC URL of the SFU node holding it.
    sfu_url: String,
}

pub async fn upgrade(
    AxState(state): AxState<State>,
    ClientIp(ip): ClientIp,
    ws: WebSocketUpgrade,
) -> Response {
    let slot = match state.limits.ws_connection(ip) {
        Ok(slot) => slot,
        Err(e) => return e.into_response(),
    };
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            Conn::new(state, ip).serve(socket).await;
            drop(slot);
        })
}

struct Conn {
    state: State,
    /// The client's address (limits).
    ip: IpAddr,
    id: String,
    joined: Option<Joined>,
    /// Messages to this client from room events and relays.
    tx: mpsc::Sender<Value>,
    rx: Option<mpsc::Receiver<Value>>,
    room_task: Option<tokio::task::JoinHandle<()>>,
    /// p2p viewers: the broadcaster this viewer was announced to (`viewer-joined`), so
    /// the arrival and the go-live paths announce it once per broadcaster.
    announced: Arc<Mutex<Option<String>>>,
    /// p2p broadcasters: the viewers announced and not gone, counted in the room's
    /// viewers (as WebRTC) under this connection's entry.
    p2p_viewers: Arc<Mutex<HashSet<String>>>,
    /// p2p broadcasters: a new connection took the room over; leaving must not say
    /// the room went offline.
    taken_over: bool,
    /// SFU publishers: the session id, once the offer is answered (the SFU names the
    /// one it replaced in `publish_taken_over`).
    sfu_session: Arc<Mutex<Option<String>>>,
    /// p2p, with TURN: the candidate addresses this connection announced and recorded
    /// in the bus (renewed while it lives, forgotten when it leaves).
    peer_ips: Vec<IpAddr>,
}

fn err(code: &str, message: impl Into<String>) -> Value {
    json!({"type": "error", "code": code, "message": message.into()})
}

/// The last message a publisher whose credential went stale gets before its
/// connection closes.
fn publish_ended() -> Value {
    err(
        PUBLISH_ENDED,
        "the stream key was rotated or the room deleted: publish again with the current key",
    )
}

/// Why a p2p broadcaster can't take (or keep) a room another connection holds.
fn room_busy(holder: &Origin) -> Value {
    let by = if holder.broadcaster().is_some() {
        "another studio or connection"
    } else {
        "a server (SFU) publisher"
    };
    err(
        ROOM_BUSY,
        format!("this room is already live from {by}: stop that stream first, then go live again (the same stream key or account takes a dropped connection's place at once)"),
    )
}

/// The last message a publisher gets when a new one with its credential took over.
fn taken_over() -> Value {
    err(
        PUBLISH_TAKEN_OVER,
        "this stream was taken over by a newer connection with the same credential (a reconnect, another tab or device): this one stopped broadcasting",
    )
}

/// A p2p broadcaster's entry in the room's viewer counts (counted as WebRTC).
fn p2p_viewers_entry(broadcaster: &str) -> String {
    format!("p2p:{broadcaster}")
}

fn count(viewers: &Mutex<HashSet<String>>) -> u64 {
    viewers.lock().map(|v| v.len() as u64).unwrap_or(0)
}

/// p2p: tells broadcaster `broadcaster` about viewer `me` (`viewer-joined`), once per
/// broadcaster: `announced` remembers whom it told.
async fn announce(
    bus: &skylark_bus::AnyBus,
    room: &str,
    me: &str,
    broadcaster: &str,
    announced: &Mutex<Option<String>>,
) {
    {
        let Ok(mut a) = announced.lock() else { return };
        if a.as_deref() == Some(broadcaster) {
            return;
        }
        *a = Some(broadcaster.to_owned());
    }
    let ev = RoomEvent::ViewerJoined {
        viewer: me.to_owned(),
    };
    if let Err(e) = events::publish(bus, room, &ev).await {
        tracing::warn!(error = %e, "viewer-joined not published");
    }
}

/// A session failure as a WebSocket `error` message (same code as over HTTP).
fn session_err(e: SessionError) -> Value {
    err(e.status_and_code().1, e.message())
}

impl Conn {
    fn new(state: State, ip: IpAddr) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let id = format!("c{:016x}", crate::rand_u64());
        Self {
            state,
            ip,
            id,
            joined: None,
            tx,
            rx: Some(rx),
            room_task: None,
            announced: Arc::default(),
            p2p_viewers: Arc::default(),
            taken_over: false,
            sfu_session: Arc::default(),
            peer_ips: Vec::new(),
        }
    }

    async fn serve(mut self, socket: WebSocket) {
        metrics::gauge!("skylark_ws_connections").increment(1.0);
        let (mut sink, mut stream) = socket.split();
        let Some(mut rx) = self.rx.take() else { return };
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut grant_check = tokio::time::interval(GRANT_CHECK_EVERY);
        grant_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(placement::RENEW_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew_peers = tokio::time::interval(peers::PEER_RENEW_EVERY);
        renew_peers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        let budget = Limits::ws_messages(self.ip);
        loop {
            tokio::select! {
                incoming = stream.next() => {
                    let Some(Ok(msg)) = incoming else { break };
                    last_heard = tokio::time::Instant::now();
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Binary(_) => {
                            let _ = send(&mut sink, err("bad_message", "send JSON text messages")).await;
                            break;
                        }
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if let Some(Err(retry)) = budget.as_ref().map(|b| b.check(&())) {
                        let m = format!("too many messages: slow down, reconnect in {retry} s");
                        let _ = send(&mut sink, err("rate_limited", m)).await;
                        break;
                    }
                    let raw: Result<serde_json::Value, _> = serde_json::from_str(text.as_str());
                    let traceparent = raw.as_ref().ok().and_then(|v| v["traceparent"].as_str().map(str::to_string));
                    let parsed: Result<ClientMsg, _> = raw.and_then(serde_json::from_value);
                    match parsed {
                        Ok(ClientMsg::Leave {}) => break,
                        Ok(m) => {
                            let span = message_span(&m, traceparent.as_deref());
                            let replies = self.handle(m).instrument(span).await;
                            let ended = replies.iter().any(|r| r["code"] == PUBLISH_ENDED || r["code"] == ROOM_BUSY);
                            for r in replies {
                                if send(&mut sink, r).await.is_err() { break; }
                            }
                            if ended { break; }
                        }
                        Err(e) => {
                            let _ = send(&mut sink, err("bad_message", format!("not a signaling message: {e}"))).await;
                            break;
                        }
                    }
                }
                Some(out) = rx.recv() => {
                    if out["code"] == PUBLISH_TAKEN_OVER {
                        // The room first: the new connection waits for it, and this
                        // socket may be dead (a write to it must not hold the room).
                        self.taken_over = true;
                        self.leave().await;
                        let _ = tokio::time::timeout(CLOSE_GRACE, send(&mut sink, out)).await;
                        break;
                    }
                    let ended = out["code"] == PUBLISH_ENDED;
                    if send(&mut sink, out).await.is_err() || ended { break; }
                }
                _ = grant_check.tick() => {
                    if !self.grant_holds().await {
                        let _ = send(&mut sink, publish_ended()).await;
                        break;
                    }
                }
                _ = renew.tick() => {
                    if let Some(lost) = self.renew_p2p_origin().await {
                        let _ = send(&mut sink, lost).await;
                        break;
                    }
                }
                _ = renew_peers.tick() => self.renew_peer_ips().await,
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT { break; }
                    if sink.send(Message::Ping(Default::default())).await.is_err() { break; }
                }
            }
        }
        let _ = sink.close().await;
        // The closing handshake: read until the client's close (briefly), so messages
        // in flight from it don't make the kernel reset the connection and discard the
        // last messages we sent (the `error` saying why).
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
        self.leave().await;
        metrics::gauge!("skylark_ws_connections").decrement(1.0);
    }

    async fn handle(&mut self, m: ClientMsg) -> Vec<Value> {
        match m {
            ClientMsg::Publish {
                room,
                stream_key,
                token,
            } => self.publish(room, stream_key, token).await,
            ClientMsg::Watch { room, token } => self.watch(room, token).await,
            ClientMsg::Offer { sdp, to } => self.offer(sdp, to).await,
            ClientMsg::Answer { sdp, to } => {
                self.relay(to, json!({"type": "answer", "sdp": sdp})).await
            }
            ClientMsg::Candidate { candidate, to } => self.candidate(candidate, to).await,
            ClientMsg::Leave {} => vec![],
            ClientMsg::Layer { choice } => self.layer(choice).await,
        }
    }

    /// `layer`: answers `layers` (what the room sends, what this viewer gets).
    async fn layer(&mut self, choice: Option<String>) -> Vec<Value> {
        let sfu = match &self.joined {
            Some(j) if j.role == Role::Viewer && !j.p2p => j.session.as_ref(),
            _ => {
                return vec![err(
                    "bad_state",
                    "`layer` is for viewers of sfu rooms: send `watch` first",
                )]
            }
        };
        let Some(sfu) = sfu else {
            return vec![err("bad_state", "no session yet: send `offer` first")];
        };
        match session::layers(&self.state, &sfu.sfu_url, &sfu.id, choice).await {
            Ok(r) => {
                let mut v = session::layers_json(&r);
                v["type"] = json!("layers");
                vec![v]
            }
            Err(e) => vec![session_err(e)],
        }
    }

    async fn publish(
        &mut self,
        room: String,
        key: Option<String>,
        token: Option<String>,
    ) -> Vec<Value> {
        if self.joined.is_some() {
            return vec![err(
                "bad_state",
                "this connection already joined a room: open another",
            )];
        }
        let credential = match (key, token) {
            (Some(k), _) => Credential::StreamKey(k),
            (None, Some(t)) => Credential::AccessToken(t),
            (None, None) => {
                return vec![err(
                    "unauthorized",
                    "`publish` needs `stream_key` (or the owner's `token`)",
                )]
            }
        };
        let ingest = session::Ingest {
            protocol: "ws",
            client_ip: Some(self.ip),
        };
        let grant = match session::authorize_publish(&self.state, credential, room, ingest).await {
            Ok(g) => g,
            Err(e) => return vec![session_err(e)],
        };
        let room = grant.room.id.clone();
        let key_id = grant.key_id.clone();
        let p2p = grant.is_p2p();
        // p2p: a broadcaster with the same credential (a reconnect whose old connection
        // is not noticed dead yet) takes the room over; anyone else is refused.
        let mut replaces = None;
        if p2p {
            if let Ok(Some(holder)) = placement::origin(&self.state.bus, &room).await {
                match self.same_credential(&room, &holder, &key_id).await {
                    Some(old) => replaces = Some(old),
                    None => return vec![room_busy(&holder)],
                }
            }
        }
        self.joined = Some(Joined {
            role: Role::Publisher,
            room: room.clone(),
            p2p,
            grant: Some(grant),
            session: None,
        });
        // Subscribed before the room is announced live: viewers answer that at once.
        if let Err(e) = self.follow_room(&room).await {
            self.joined = None;
            return vec![e];
        }
        if p2p {
            let origin = Origin::P2p {
                broadcaster: self.id.clone(),
            };
            // Recorded first: the room is live (and its webhooks name this publisher)
            // from the claim on. The claim is a lease the connection renews, so a
            // signaling pod that dies frees the room within seconds.
            session::record_publisher(&self.state, &room, &self.id, "p2p", Some(&key_id)).await;
            let claimed = match &replaces {
                None => {
                    placement::claim_origin(&self.state.bus, &room, &origin, placement::LEASE_TTL)
                        .await
                }
                Some(old) => self.take_over(&room, &origin, old).await,
            };
            match claimed {
                Ok(true) => {}
                Ok(false) => {
                    self.unjoin();
                    let holder = placement::origin(&self.state.bus, &room).await;
                    return vec![room_busy(&holder.ok().flatten().unwrap_or(origin))];
                }
                Err(e) => {
                    self.unjoin();
                    tracing::warn!(error = %e, "p2p origin not claimed");
                    return vec![err("unavailable", "the room could not be set live (the bus is unavailable): try again in a few seconds")];
                }
            }
            self.broadcast(RoomEvent::State {
                room: room.clone(),
                live: true,
                viewers: 0,
                broadcaster: Some(self.id.clone()),
            })
            .await;
        }
        vec![self.with_ice_servers(
            json!({"type": "room", "room": room, "live": p2p, "role": "publisher", "mode": if p2p { "p2p" } else { "sfu" }}),
        )]
    }

    async fn watch(&mut self, room: String, token: Option<String>) -> Vec<Value> {
        if self.joined.is_some() {
            return vec![err(
                "bad_state",
                "this connection already joined a room: open another",
            )];
        }
        let room = match session::authorize_view(&self.state, room, token.unwrap_or_default()).await
        {
            Ok(r) => r,
            Err(e) => return vec![session_err(e)],
        };
        let p2p = room.mode == rooms::Mode::P2p as i32;
        self.joined = Some(Joined {
            role: Role::Viewer,
            room: room.id.clone(),
            p2p,
            grant: None,
            session: None,
        });
        // Subscribed before the broadcaster hears of this viewer: its offer comes back
        // on the room's channel.
        if let Err(e) = self.follow_room(&room.id).await {
            self.joined = None;
            return vec![e];
        }
        let waiting = json!({"type": "waiting", "room": room.id});
        let Ok(placed) = placement::room(&self.state.bus, &room.id).await else {
            return vec![self.with_ice_servers(waiting)];
        };
        let reply = match &placed.origin {
            Some(origin) => {
                if let Some(b) = origin.broadcaster().filter(|_| p2p) {
                    announce(&self.state.bus, &room.id, &self.id, b, &self.announced).await;
                }
                json!({"type": "room", "room": room.id, "live": true, "viewers": placed.viewers(), "mode": if p2p { "p2p" } else { "sfu" }, "broadcaster": origin.broadcaster()})
            }
            None => waiting,
        };
        vec![self.with_ice_servers(reply)]
    }

    /// The reply to `publish`/`watch` with `iceServers` (when TURN is configured): a
    /// TURN credential minted for this connection, so both ends of a p2p room and
    /// WebSocket viewers of sfu rooms can relay.
    fn with_ice_servers(&self, mut reply: Value) -> Value {
        let (Some(turn), Some(j)) = (&self.state.turn, &self.joined) else {
            return reply;
        };
        let scope = if j.p2p {
            skylark_auth::TurnScope::p2p(&j.room, &self.id, j.side())
        } else {
            skylark_auth::TurnScope::sfu(&self.id)
        };
        match scope {
            Ok(scope) => reply["iceServers"] = turn.ice_servers_json(&scope),
            Err(e) => tracing::warn!(error = %e, "no TURN credential for this connection"),
        }
        reply
    }

    /// p2p with TURN: records the addresses of the candidates in `msg` (sent by this
    /// connection) for the TURN server, before the message goes on: the peer's TURN
    /// permission for them follows it.
    async fn record_peer_ips(&mut self, msg: &Value) {
        let Some(j) = self.joined.as_ref().filter(|j| j.p2p) else {
            return;
        };
        if self.state.turn.is_none() {
            return;
        }
        let left = peers::MAX_PER_CONNECTION.saturating_sub(self.peer_ips.len());
        let text = peer_addrs::message_candidates(msg);
        let new: Vec<IpAddr> = peer_addrs::candidate_ips(text, peers::MAX_PER_CONNECTION)
            .into_iter()
            .filter(|ip| !self.peer_ips.contains(ip))
            .take(left)
            .collect();
        if new.is_empty() {
            return;
        }
        match peers::record(&self.state.bus, &j.room, &self.id, j.side(), &new).await {
            Ok(n) => self.peer_ips.extend(new.into_iter().take(n)),
            Err(e) => {
                tracing::warn!(error = %e, "p2p candidate addresses not recorded: TURN may refuse them")
            }
        }
    }

    /// Keeps this connection's recorded candidate addresses from expiring.
    async fn renew_peer_ips(&self) {
        let Some(j) = self.joined.as_ref().filter(|_| !self.peer_ips.is_empty()) else {
            return;
        };
        let ips = &self.peer_ips;
        if let Err(e) = peers::record(&self.state.bus, &j.room, &self.id, j.side(), ips).await {
            tracing::debug!(error = %e, "p2p candidate addresses not renewed");
        }
    }

    /// The p2p broadcaster holding the room, if it was granted with `key_id` too (the
    /// bus's publisher record says so).
    async fn same_credential(&self, room: &str, holder: &Origin, key_id: &str) -> Option<String> {
        let b = holder.broadcaster()?;
        let record = placement::publisher(&self.state.bus, room).await.ok()??;
        (record.session == b && record.key_id.as_deref() == Some(key_id)).then(|| b.to_owned())
    }

    /// Tells broadcaster `old` (on whichever pod holds it) to stop, and claims the room
    /// as it lets go. `false` when yet another holder got it, or `old` kept it past its
    /// lease (cannot happen unless it still renews without hearing the bus).
    async fn take_over(
        &self,
        room: &str,
        origin: &Origin,
        old: &str,
    ) -> Result<bool, skylark_bus::BusError> {
        let bus = &self.state.bus;
        let deadline = tokio::time::Instant::now() + TAKEOVER_WITHIN;
        let mut asked = None;
        tracing::info!(room_id = %room, old, "p2p broadcaster taking the room over");
        loop {
            if asked.is_none_or(|at: tokio::time::Instant| at.elapsed() >= TAKEOVER_ASK_EVERY) {
                let ev = RoomEvent::PublishTakenOver {
                    session: old.to_owned(),
                };
                if let Err(e) = events::publish(bus, room, &ev).await {
                    tracing::warn!(error = %e, "publish_taken_over not published");
                }
                asked = Some(tokio::time::Instant::now());
            }
            if placement::claim_origin(bus, room, origin, placement::LEASE_TTL).await? {
                metrics::counter!("skylark_p2p_takeovers_total").increment(1);
                return Ok(true);
            }
            let holder = placement::origin(bus, room).await?;
            let still_old = holder.as_ref().is_none_or(|h| h.broadcaster() == Some(old));
            if !still_old || tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this connection's publish grant (if it publishes) is still current. A
    /// directory that cannot be reached cuts no one.
    async fn grant_holds(&self) -> bool {
        let Some(grant) = self.joined.as_ref().and_then(|j| j.grant.as_ref()) else {
            return true;
        };
        match session::grant_is_current(&self.state, grant).await {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "grant check failed; the publisher keeps going");
                true
            }
        }
    }

    /// p2p broadcasters: renews the room's origin lease. `Some(message)` when another
    /// connection holds the room now (this one must end); a bus error cuts no one.
    async fn renew_p2p_origin(&self) -> Option<Value> {
        let j = self.joined.as_ref()?;
        if !(j.p2p && j.role == Role::Publisher) {
            return None;
        }
        let origin = Origin::P2p {
            broadcaster: self.id.clone(),
        };
        match placement::renew_origin(&self.state.bus, &j.room, &origin, placement::LEASE_TTL).await
        {
            Ok(true) => {
                let n = count(&self.p2p_viewers);
                let entry = p2p_viewers_entry(&self.id);
                if let Err(e) = placement::set_viewers(&self.state.bus, &j.room, &entry, n).await {
                    tracing::debug!(error = %e, "p2p viewer count not renewed");
                }
                None
            }
            Ok(false) => {
                let holder = placement::origin(&self.state.bus, &j.room).await;
                Some(room_busy(&holder.ok().flatten().unwrap_or(origin)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "p2p origin not renewed; the broadcaster keeps going");
                None
            }
        }
    }

    async fn offer(&mut self, sdp: String, to: Option<String>) -> Vec<Value> {
        // A publisher is authorized again when it offers: `publish` may predate a
        // rotation. (The SFU checks the grant too.)
        if let Some(grant) = self.joined.as_ref().and_then(|j| j.grant.as_ref()) {
            match session::grant_is_current(&self.state, grant).await {
                Ok(true) => {}
                Ok(false) => return vec![publish_ended()],
                Err(e) => return vec![session_err(e)],
            }
        }
        let Some(j) = &self.joined else {
            return vec![err("bad_state", "send `publish` or `watch` first")];
        };
        if j.p2p {
            return self.relay(to, json!({"type": "offer", "sdp": sdp})).await;
        }
        if j.session.is_some() {
            return vec![err(
                "bad_state",
                "this connection already has a session: open another to renegotiate",
            )];
        }
        if let Err(e) = self.state.limits.session(self.ip, &j.room) {
            return vec![err(e.code, e.message)];
        }
        let started = match (&j.grant, j.role) {
            (Some(grant), Role::Publisher) => session::start_publish(&self.state, grant, sdp).await,
            _ => session::start_view(&self.state, &j.room, sdp).await,
        };
        match started {
            Ok(s) => {
                if let Some(j) = &mut self.joined {
                    if let Ok(mut id) = self.sfu_session.lock() {
                        *id = Some(s.session_id.clone());
                    }
                    j.session = Some(SfuSession {
                        id: s.session_id,
                        sfu_url: s.node.grpc_addr,
                    });
                }
                vec![json!({"type": "answer", "sdp": s.answer_sdp})]
            }
            Err(SessionError::Place(crate::placement::PlaceError::NotLive)) => {
                vec![json!({"type": "waiting", "room": j.room})]
            }
            Err(e) => vec![session_err(e)],
        }
    }

    async fn candidate(&mut self, candidate: Value, to: Option<String>) -> Vec<Value> {
        let Some(j) = &self.joined else {
            return vec![err("bad_state", "send `publish` or `watch` first")];
        };
        if j.p2p {
            return self
                .relay(to, json!({"type": "candidate", "candidate": candidate}))
                .await;
        }
        // Browsers send RTCIceCandidateInit ({candidate, sdpMid, …}) or a bare string.
        let line = match &candidate {
            Value::String(s) => s.clone(),
            v => v["candidate"].as_str().unwrap_or_default().to_string(),
        };
        let Some(sfu) = &j.session else {
            return vec![];
        };
        if line.is_empty() {
            return vec![];
        }
        match session::add_candidate(&self.state, &sfu.sfu_url, &sfu.id, line).await {
            Ok(()) => vec![],
            Err(e) => vec![session_err(e)],
        }
    }

    /// p2p: passes a message to the broadcaster (viewers) or to viewer `to` (broadcaster).
    async fn relay(&mut self, to: Option<String>, msg: Value) -> Vec<Value> {
        let Some(j) = &self.joined else {
            return vec![err("bad_state", "send `publish` or `watch` first")];
        };
        if !j.p2p {
            return vec![err(
                "bad_state",
                "`answer` and relayed messages are for p2p rooms; in sfu rooms send `offer`",
            )];
        }
        let target = match (j.role, to) {
            (Role::Publisher, Some(t)) => t,
            (Role::Publisher, None) => return vec![err("bad_request", "say which viewer: `to`")],
            (Role::Viewer, _) => {
                match placement::origin(&self.state.bus, &j.room)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|o| o.broadcaster().map(str::to_string))
                {
                    Some(b) => b,
                    None => return vec![json!({"type": "waiting", "room": j.room})],
                }
            }
        };
        self.record_peer_ips(&msg).await;
        let mut msg = msg;
        msg["from"] = json!(self.id);
        self.broadcast(RoomEvent::Relay { to: target, msg }).await;
        vec![]
    }

    async fn broadcast(&self, ev: RoomEvent) {
        let Some(j) = &self.joined else { return };
        if let Err(e) = events::publish(&self.state.bus, &j.room, &ev).await {
            tracing::warn!(error = %e, "room event not published");
        }
    }

    /// Forwards the room's bus events meant for this client; subscribed when it returns.
    async fn follow_room(&mut self, room: &str) -> Result<(), Value> {
        let Ok(mut sub) = events::subscribe(&self.state.bus, room).await else {
            return Err(err("unavailable", "room events unavailable: reconnect"));
        };
        let bus = self.state.bus.clone();
        let tx = self.tx.clone();
        let me = self.id.clone();
        let role = self.joined.as_ref().map(|j| (j.role, j.p2p));
        let publisher = role.map(|r| r.0) == Some(Role::Publisher);
        let p2p_viewer = role == Some((Role::Viewer, true));
        let announced = self.announced.clone();
        let p2p_broadcaster = role == Some((Role::Publisher, true));
        let viewers = self.p2p_viewers.clone();
        let entry = p2p_viewers_entry(&self.id);
        let sfu_session = self.sfu_session.clone();
        let room = room.to_owned();
        self.room_task = Some(tokio::spawn(async move {
            while let Some(ev) = sub.recv().await {
                if let (
                    true,
                    RoomEvent::State {
                        live, broadcaster, ..
                    },
                ) = (p2p_viewer, &ev)
                {
                    match broadcaster.as_deref().filter(|_| *live) {
                        // A waiting viewer meets the broadcaster going live (or a new one).
                        Some(b) => announce(&bus, &room, &me, b, &announced).await,
                        None => {
                            if let Ok(mut a) = announced.lock() {
                                *a = None;
                            }
                        }
                    }
                }
                if p2p_broadcaster {
                    let changed = match (&ev, viewers.lock()) {
                        (RoomEvent::ViewerJoined { viewer }, Ok(mut v)) => {
                            v.insert(viewer.clone()).then(|| v.len())
                        }
                        (RoomEvent::ViewerLeft { viewer }, Ok(mut v)) => {
                            v.remove(viewer).then(|| v.len())
                        }
                        _ => None,
                    };
                    if let Some(n) = changed {
                        let _ = placement::set_viewers(&bus, &room, &entry, n as u64).await;
                    }
                }
                let out = match ev {
                    RoomEvent::Relay { to, msg } if to == me => Some(msg),
                    RoomEvent::State {
                        ref broadcaster, ..
                    } if broadcaster.as_deref() != Some(me.as_str()) => {
                        serde_json::to_value(&ev).ok()
                    }
                    RoomEvent::ViewerJoined { .. } | RoomEvent::ViewerLeft { .. } if publisher => {
                        serde_json::to_value(&ev).ok()
                    }
                    RoomEvent::EndPublish { .. } if publisher => Some(publish_ended()),
                    RoomEvent::PublishTakenOver { ref session }
                        if p2p_broadcaster && *session == me =>
                    {
                        Some(taken_over())
                    }
                    RoomEvent::PublishTakenOver { ref session }
                        if publisher
                            && sfu_session
                                .lock()
                                .is_ok_and(|s| s.as_deref() == Some(session.as_str())) =>
                    {
                        Some(taken_over())
                    }
                    _ => None,
                };
                if let Some(o) = out {
                    // A client that doesn't read its socket loses events rather than memory.
                    if tx.try_send(o).is_err() && tx.is_closed() {
                        return;
                    }
                }
            }
        }));
        Ok(())
    }

    /// Undoes a join that failed half-way (no room events, no room).
    fn unjoin(&mut self) {
        if let Some(t) = self.room_task.take() {
            t.abort();
        }
        self.joined = None;
    }

    async fn leave(&mut self) {
        if let Some(t) = self.room_task.take() {
            t.abort();
        }
        let Some(j) = self.joined.take() else { return };
        if !self.peer_ips.is_empty() {
            let ips = std::mem::take(&mut self.peer_ips);
            let _ = peers::forget(&self.state.bus, &j.room, &self.id, &ips).await;
        }
        if let Some(sfu) = &j.session {
            let _ = session::end(&self.state, &sfu.sfu_url, &sfu.id).await;
        }
        if j.p2p {
            let ev = match j.role {
                Role::Publisher => {
                    let origin = Origin::P2p {
                        broadcaster: self.id.clone(),
                    };
                    let _ = placement::release_origin(&self.state.bus, &j.room, &origin).await;
                    let entry = p2p_viewers_entry(&self.id);
                    let _ = placement::set_viewers(&self.state.bus, &j.room, &entry, 0).await;
                    if self.taken_over {
                        // Still live, from the new connection.
                        return;
                    }
                    RoomEvent::State {
                        room: j.room.clone(),
                        live: false,
                        viewers: 0,
                        broadcaster: None,
                    }
                }
                Role::Viewer => RoomEvent::ViewerLeft {
                    viewer: self.id.clone(),
                },
            };
            let _ = events::publish(&self.state.bus, &j.room, &ev).await;
        }
    }
}

/// A span per client message; a `traceparent` field in the message (W3C format) makes it
/// part of the client's trace, as the header does for HTTP.
fn message_span(m: &ClientMsg, traceparent: Option<&str>) -> tracing::Span {
    let kind = match m {
        ClientMsg::Publish { .. } => "publish",
        ClientMsg::Watch { .. } => "watch",
        ClientMsg::Offer { .. } => "offer",
        ClientMsg::Answer { .. } => "answer",
        ClientMsg::Candidate { .. } => "candidate",
        ClientMsg::Leave {} => "leave",
        ClientMsg::Layer { .. } => "layer",
    };
    let span = tracing::info_span!("ws.message", otel.name = format!("WS {kind}"), otel.kind = "server", ws.message.type = kind);
    if let Some(tp) = traceparent.filter(|t| t.len() <= 128) {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(tp) {
            headers.insert("traceparent", v);
            let _ = span.set_parent(skylark_telemetry::extract_http(&headers));
        }
    }
    span
}

async fn send<S>(sink: &mut S, v: Value) -> Result<(), axum::Error>
where
    S: futures_util::Sink<Message, Error = axum::Error> + Unpin,
{
    sink.send(Message::Text(Utf8Bytes::from(v.to_string())))
        .await
}
