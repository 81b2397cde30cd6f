//! The one path every front door (WHIP, WHEP, WebSocket, RTMP) takes to start or end
//! a media session: authorize through `RoomDirectory`, check the room's mode, place
//! it on a node, call the SFU, record the session. Front doors only translate
//! requests in and [`SessionError`]s out (an HTTP status, a WebSocket `error`, an
//! RTMP status).

use crate::error::status_error;
use crate::placement::{self, PlaceError, ViewCandidate};
use crate::upstream::Sfu;
use crate::State;
use axum::http::StatusCode;
use skylark_bus::placement::{self as bus_placement, Relay, SessionRecord, LEASE_TTL};
use skylark_bus::NodeInfo;
use skylark_proto::rooms::v1 as rooms;
use skylark_proto::rooms::v1::authorize_publish_request::Credential;
use skylark_proto::sfu::v1 as sfu;

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A downstream service (the room directory or an SFU) refused or failed.
    #[error("{what}: {status}")]
    Upstream {
        what: &'static str,
        status: tonic::Status,
    },
    #[error("the room directory answered without a room: retry")]
    NoRoom,
    #[error("this room is peer-to-peer: publish from the studio page (WebSocket signaling), or switch the room to `sfu` mode")]
    P2pRoom,
    #[error(transparent)]
    Place(#[from] PlaceError),
    #[error("{0}: retry shortly")]
    Client(String),
}

impl SessionError {
    fn directory(status: tonic::Status) -> Self {
        Self::Upstream {
            what: "room directory",
            status,
        }
    }

    fn sfu(status: tonic::Status) -> Self {
        Self::Upstream {
            what: "SFU",
            status,
        }
    }

    /// HTTP status and error code, from the one gRPC status table for upstream failures.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Upstream { status, .. } => status_error(status.code()),
            Self::P2pRoom => (StatusCode::CONFLICT, "p2p_room"),
            Self::Place(PlaceError::NotLive) => (StatusCode::CONFLICT, "not_live"),
            Self::NoRoom | Self::Place(_) | Self::Client(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        }
    }

    /// What the user is told: what went wrong and what to do.
    pub fn message(&self) -> String {
        match self {
            Self::Upstream { what, status } => match status_error(status.code()).0 {
                StatusCode::SERVICE_UNAVAILABLE => {
                    tracing::warn!(%status, what, "downstream unavailable");
                    format!("{what} unavailable: retry in a few seconds")
                }
                StatusCode::INTERNAL_SERVER_ERROR => {
                    tracing::error!(%status, what, "downstream error");
                    format!("{what} failed: retry")
                }
                _ => status.message().to_string(),
            },
            other => other.to_string(),
        }
    }

    /// Whether another node may succeed where this one failed: it is unreachable,
    /// full, draining or timed out.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Upstream {
                what: "SFU",
                status,
            } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            Self::Client(_) => true,
            _ => false,
        }
    }

    /// Whether the node did not answer at all (as opposed to refusing: full, draining).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Upstream { what: "SFU", status }
                if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
        )
    }

    /// Whether the node refused for lack of room (sessions or CPU).
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            Self::Upstream { what: "SFU", status } if status.code() == tonic::Code::ResourceExhausted
        )
    }

    /// Whether the node refused for CPU (its workers past their busy threshold), not
    /// for sessions or relay links.
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            Self::Upstream { what: "SFU", status }
                if status.code() == tonic::Code::ResourceExhausted
                    && status.metadata().get(skylark_proto::sfu::REFUSED_FOR_CPU).is_some()
        )
    }

    /// The `Retry-After` of this refusal, when one is known.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::Place(PlaceError::NoNode(e)) => e.retry_after_s(),
            _ => None,
        }
    }

    /// What every candidate refusing ends in: the last refusal, except that nodes
    /// refusing for lack of room (sessions or CPU) are told as the selector tells a
    /// registry of full nodes, so a user refused for room sees one text.
    fn refused_by_all(last: Option<Self>, full_nodes: usize) -> Self {
        match last {
            Some(e) if e.is_full() => {
                Self::Place(PlaceError::NoNode(placement::SelectError::AllFull {
                    nodes: full_nodes.max(1),
                }))
            }
            Some(e) => e,
            None => Self::Place(PlaceError::NoNode(placement::SelectError::NoNodes)),
        }
    }

    /// Whether the credential itself was refused (RTMP says `BadName` then).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::Upstream { status, .. } if status.code() == tonic::Code::Unauthenticated)
    }
}

/// A publish the directory allowed.
pub struct PublishGrant {
    pub room: rooms::Room,
    /// The stream-key generation the SFU checks against.
    pub key_id: String,
    /// How the publisher connects (see [`Ingest`]).
    pub protocol: &'static str,
}

/// How a publisher reached signaling: told to the operator's admission hook, and
/// recorded for `publisher.*` webhooks.
#[derive(Debug, Clone, Copy)]
pub struct Ingest {
    /// `whip`, `rtmp` or `ws`.
    pub protocol: &'static str,
    pub client_ip: Option<std::net::IpAddr>,
}

impl PublishGrant {
    pub fn is_p2p(&self) -> bool {
        self.room.mode == rooms::Mode::P2p as i32
    }
}

/// A media session an SFU node holds.
pub struct Started {
    pub session_id: String,
    pub answer_sdp: String,
    pub node: NodeInfo,
}

/// What kind of session a record is for (PATCH/DELETE route by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Publish,
    View,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "whip",
            Self::View => "whep",
        }
    }
}

/// A bearer token from an `Authorization` header value: `Bearer <token>`, scheme
/// case-insensitive, token non-empty. The one parser for every front door.
pub fn bearer(value: Option<&str>) -> Option<String> {
    let (scheme, token) = value?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The credential a publisher presented: an access token (a JWT, three dot-separated
/// parts) lets the owner publish; anything else is a stream key.
pub fn publish_credential(secret: String) -> Credential {
    if secret.split('.').count() == 3 {
        Credential::AccessToken(secret)
    } else {
        Credential::StreamKey(secret)
    }
}

/// Asks the directory whether `credential` may publish to `room_id` (empty: the room
/// the stream key belongs to).
pub async fn authorize_publish(
    state: &State,
    credential: Credential,
    room_id: String,
    ingest: Ingest,
) -> Result<PublishGrant, SessionError> {
    let auth = state
        .upstream
        .directory()
        .authorize_publish(rooms::AuthorizePublishRequest {
            credential: Some(credential),
            room_id,
            protocol: ingest.protocol.to_owned(),
            client_ip: ingest
                .client_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
        })
        .await
        .map_err(SessionError::directory)?
        .into_inner();
    let room = auth.room.ok_or(SessionError::NoRoom)?;
    Ok(PublishGrant {
        room,
        key_id: auth.key_id,
        protocol: ingest.protocol,
    })
}

/// Records a placed publisher as its room's latest (session id and protocol), where the
/// API's webhook reconciler reads it.
pub async fn record_publisher(
    state: &State,
    room: &str,
    session: &str,
    protocol: &str,
    key_id: Option<&str>,
) {
    let publisher = bus_placement::Publisher {
        session: session.to_owned(),
        protocol: protocol.to_owned(),
        key_id: key_id.map(str::to_owned),
    };
    if let Err(e) = bus_placement::set_publisher(&state.bus, room, &publisher).await {
        tracing::warn!(error = %e, room_id = %room, "publisher not recorded in the bus: webhooks will miss its protocol");
    }
}

/// Asks the directory whether `grant` still holds: its key not rotated, its room not
/// deleted. Live publishers are re-checked with it, so a lost `end_publish` event
/// does not let one outlive its credential.
pub async fn grant_is_current(state: &State, grant: &PublishGrant) -> Result<bool, SessionError> {
    let current = state
        .upstream
        .directory()
        .check_publish_grants(rooms::CheckPublishGrantsRequest {
            grants: vec![rooms::PublishGrantRef {
                room_id: grant.room.id.clone(),
                key_id: grant.key_id.clone(),
            }],
        })
        .await
        .map_err(SessionError::directory)?
        .into_inner()
        .current;
    Ok(current.first() == Some(&true))
}

/// Asks the directory whether `token` (empty: anonymous) may watch `room_id`.
pub async fn authorize_view(
    state: &State,
    room_id: String,
    token: String,
) -> Result<rooms::Room, SessionError> {
    state
        .upstream
        .directory()
        .authorize_play(rooms::AuthorizePlayRequest { room_id, token })
        .await
        .map_err(SessionError::directory)?
        .into_inner()
        .room
        .ok_or(SessionError::NoRoom)
}

/// The SFU nodes a publisher of this grant may go to, best first. Refuses p2p rooms:
/// their media never touches an SFU.
pub async fn place_publisher(
    state: &State,
    grant: &PublishGrant,
) -> Result<Vec<NodeInfo>, SessionError> {
    if grant.is_p2p() {
        return Err(SessionError::P2pRoom);
    }
    Ok(placement::publish_candidates(&state.bus, &grant.room.id, state.selector.as_ref()).await?)
}

/// Starts a WebRTC publisher of `grant` with `offer` on the first candidate node that
/// takes it: a dead origin still in the registry costs a retry, not a failure.
pub async fn start_publish(
    state: &State,
    grant: &PublishGrant,
    offer: String,
) -> Result<Started, SessionError> {
    let candidates = place_publisher(state, grant).await?;
    let (_, started) = on_first_taker(state, &grant.room.id, candidates, None, |_, mut c| {
        let req = sfu::PublishRequest {
            room_id: grant.room.id.clone(),
            offer_sdp: offer.clone(),
            key_id: grant.key_id.clone(),
        };
        async move { c.publish(req).await }
    })
    .await?;
    record(state, &started, &grant.room.id, Kind::Publish).await;
    record_publisher(
        state,
        &grant.room.id,
        &started.session_id,
        grant.protocol,
        None,
    )
    .await;
    Ok(started)
}

/// Starts a WebRTC viewer of `room` with `offer`, on the first candidate node that
/// takes it (the origin, an edge, or a new edge: see `placement::view`). A node that
/// is dead, full or draining costs the viewer only a retry on the next one.
pub async fn start_view(state: &State, room: &str, offer: String) -> Result<Started, SessionError> {
    let candidates = placement::view_candidates(&state.bus, room, state.selector.as_ref()).await?;
    let (bus, selector, owned_room) = (state.bus.clone(), state.selector.clone(), room.to_owned());
    let replan = move || -> futures_util::future::BoxFuture<'static, Vec<ViewCandidate>> {
        let (bus, selector, room) = (bus.clone(), selector.clone(), owned_room.clone());
        Box::pin(async move {
            placement::view_candidates(&bus, &room, selector.as_ref())
                .await
                .unwrap_or_default()
        })
    };
    let hedge = Hedge {
        after: HEDGE_AFTER,
        replans: 2,
        replan: &replan,
    };
    let (candidate, started) =
        on_first_taker(state, room, candidates, Some(hedge), |candidate, mut c| {
            let upstream = match candidate {
                ViewCandidate::Serve { parent, depth, .. } => {
                    parent.as_ref().map(|p| relay_source(p, *depth))
                }
                ViewCandidate::NewEdge { parent, depth, .. } => Some(relay_source(parent, *depth)),
            };
            let req = sfu::SubscribeRequest {
                room_id: room.to_owned(),
                offer_sdp: offer.clone(),
                upstream,
            };
            async move { c.subscribe(req).await }
        })
        .await?;
    if let ViewCandidate::NewEdge { parent, depth, .. } = &candidate {
        // Recorded now so the next viewer's plan sees the link; the edge renews it
        // while it pulls.
        let relay = Relay {
            node: started.node.id.clone(),
            parent: parent.id.clone(),
            depth: *depth,
        };
        let _ = bus_placement::set_relay(&state.bus, room, &relay, LEASE_TTL).await;
    }
    record(state, &started, room, Kind::View).await;
    Ok(started)
}

/// A place a session may go: a node, and what placement knows of it.
trait Candidate: Send + 'static {
    fn node(&self) -> &NodeInfo;
    /// Every node the session depends on: the node, and the parent a new edge pulls from.
    fn depends_on(&self) -> Vec<String> {
        vec![self.node().id.clone()]
    }
}

impl Candidate for NodeInfo {
    fn node(&self) -> &NodeInfo {
        self
    }
}

impl Candidate for ViewCandidate {
    fn node(&self) -> &NodeInfo {
        ViewCandidate::node(self)
    }
    fn depends_on(&self) -> Vec<String> {
        let parent = match self {
            ViewCandidate::Serve { parent, .. } => parent.as_ref(),
            ViewCandidate::NewEdge { parent, .. } => Some(parent),
        };
        std::iter::once(self.node())
            .chain(parent)
            .map(|n| n.id.clone())
            .collect()
    }
}

/// How long a viewer's session request waits on one node before the next candidate is
/// asked too. A node cut off the network but still in the registry holds a call for
/// the channel's whole timeout (5 s); a healthy one answers in milliseconds, a new
/// edge once its pull from the parent is up (hundreds of ms), a CPU-starved one later:
/// a hedge costs a second session, briefly, so it is kept for calls that look lost.
pub const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);

type Attempt<C> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (C, NodeInfo, Result<Started, SessionError>)> + Send>,
>;

/// Calls `call` with each candidate's SFU client until one answers: a node that is
/// dead, full or draining costs a retry on the next, any other refusal is final. Nodes
/// that recently failed to answer go last ([`placement::Suspects`]). With `hedge`, a
/// candidate that has not answered within it gets company: the next one is asked too
/// (from a fresh plan when none is left: room frees up as viewers leave, so a node
/// that refused for being full may be asked again), the first to
/// answer serves, and a session a slower one starts afterwards is ended. When every
/// candidate refused for being full, a fresh plan is made after the next heartbeats,
/// unless every node refused for CPU (then the refusal is final).
/// Publishers are not hedged: two answers would be two origins.
async fn on_first_taker<C, F, Fut>(
    state: &State,
    room: &str,
    candidates: Vec<C>,
    hedge: Option<Hedge<'_, C>>,
    mut call: F,
) -> Result<(C, Started), SessionError>
where
    C: Candidate,
    F: FnMut(&C, Sfu) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<sfu::SessionAnswer>, tonic::Status>>
        + Send
        + 'static,
{
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut pending: std::collections::VecDeque<C> =
        state.suspects.last(candidates, |c| c.depends_on()).into();
    let mut running: FuturesUnordered<Attempt<C>> = FuturesUnordered::new();
    let mut asked_at = tokio::time::Instant::now();
    // The node of the latest request: the one a hedge gives company to.
    let mut asked = String::new();
    // Nodes with a request still running: a new plan does not ask them again (one that
    // refused, e.g. full, may take the viewer now).
    let mut asking: Vec<String> = Vec::new();
    let mut replans = 0;
    let mut last = None;
    // Nodes that refused for lack of room, each once; of them, those that refused for CPU.
    let mut full: Vec<String> = Vec::new();
    let mut overloaded: Vec<String> = Vec::new();
    loop {
        if running.is_empty() && pending.is_empty() {
            // Every candidate refused. A node's load in the registry is up to a heartbeat
            // old: one full now, or a relay link freed since, shows after the next one.
            let Some(h) = hedge.as_ref().filter(|h| {
                replans < h.replans && last.as_ref().is_some_and(SessionError::is_full)
            }) else {
                break;
            };
            // A node that refused for CPU measured itself past its threshold just now.
            // Waiting a heartbeat for it alone admits the viewer seconds late into a
            // node at its limit, if at all (admitted joins' p99 was 5.2 s in
            // tests/overload.rs): wait only if another node may have room by then.
            if !any_other_node(state, &overloaded).await {
                break;
            }
            replans += 1;
            tokio::time::sleep(bus_placement::RENEW_EVERY).await;
            let fresh = h.fresh(state, &asking).await;
            tracing::info!(room_id = %room, candidates = fresh.len(), "placement: every node refused; planning again on fresh loads");
            pending.extend(fresh);
            continue;
        }
        if running.is_empty() {
            let Some(candidate) = pending.pop_front() else {
                break;
            };
            asked = candidate.node().id.clone();
            asking.push(asked.clone());
            running.push(attempt(state, candidate, &mut call));
            asked_at = tokio::time::Instant::now();
        }
        let can_replan = hedge.as_ref().is_some_and(|h| replans < h.replans);
        let hedge_at = hedge
            .as_ref()
            .filter(|_| !pending.is_empty() || can_replan)
            .map(|h| asked_at + h.after);
        let next = tokio::select! {
            next = running.next() => next,
            _ = sleep_until_some(hedge_at) => {
                if pending.is_empty() {
                    // Nobody left to ask: a fresh plan may have room now (viewers
                    // leave, capacity frees), without the nodes asked already.
                    replans += 1;
                    if let Some(h) = &hedge {
                        pending.extend(h.fresh(state, &asking).await);
                    }
                }
                if let Some(candidate) = pending.pop_front() {
                    tracing::warn!(room_id = %room, slow = %asked, next = %candidate.node().id, "placement: a node is slow to answer; asking the next one too");
                    metrics::counter!("skylark_placement_hedges_total").increment(1);
                    // Not marked yet: a node slow under load still answers; one that
                    // fails is marked when its request does.
                    asked = candidate.node().id.clone();
                    asking.push(asked.clone());
                    running.push(attempt(state, candidate, &mut call));
                }
                asked_at = tokio::time::Instant::now();
                continue;
            }
        };
        let Some((candidate, node, res)) = next else {
            continue;
        };
        if let Some(i) = asking.iter().position(|n| *n == node.id) {
            asking.swap_remove(i);
        }
        match res {
            Ok(started) => {
                state.suspects.clear(&node.id);
                end_late_answers(state.clone(), running);
                return Ok((candidate, started));
            }
            Err(e) if e.is_retryable() => {
                if e.is_unreachable() {
                    state.suspects.mark(&node.id);
                }
                if e.is_full() && !full.contains(&node.id) {
                    full.push(node.id.clone());
                }
                if e.is_overloaded() && !overloaded.contains(&node.id) {
                    overloaded.push(node.id.clone());
                }
                tracing::warn!(node = %node.id, room_id = %room, error = %e, "placement: trying the next node");
                metrics::counter!("skylark_placement_retries_total").increment(1);
                last = Some(e);
            }
            Err(e) => {
                end_late_answers(state.clone(), running);
                return Err(e);
            }
        }
    }
    Err(SessionError::refused_by_all(last, full.len()))
}

/// Whether the registry has an SFU node besides `refused` (a failing registry: assume
/// so, as before the check).
async fn any_other_node(state: &State, refused: &[String]) -> bool {
    use skylark_bus::Bus;
    if refused.is_empty() {
        return true;
    }
    match state.bus.nodes(skylark_bus::NodeKind::Sfu).await {
        Ok(nodes) => others_than(&nodes, refused),
        Err(_) => true,
    }
}

fn others_than(nodes: &[NodeInfo], refused: &[String]) -> bool {
    nodes.iter().any(|n| !refused.contains(&n.id))
}

/// A plan made again: the candidates placement gives now.
type Replan<'a, C> =
    &'a (dyn Fn() -> futures_util::future::BoxFuture<'static, Vec<C>> + Send + Sync);

/// How a viewer's session request is hedged: after `after` without an answer the next
/// candidate is asked too; with none left, `replan` makes a fresh plan (at most
/// `replans` times).
struct Hedge<'a, C> {
    after: std::time::Duration,
    replans: u32,
    replan: Replan<'a, C>,
}

impl<C: Candidate> Hedge<'_, C> {
    /// A fresh plan, without the nodes in `asking` (a request to them is still running),
    /// nodes that recently failed last.
    async fn fresh(&self, state: &State, asking: &[String]) -> Vec<C> {
        let fresh: Vec<C> = (self.replan)()
            .await
            .into_iter()
            .filter(|c| !asking.contains(&c.node().id))
            .collect();
        state.suspects.last(fresh, |c| c.depends_on())
    }
}

/// One session request to `candidate`'s node.
fn attempt<C, F, Fut>(state: &State, candidate: C, call: &mut F) -> Attempt<C>
where
    C: Candidate,
    F: FnMut(&C, Sfu) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<sfu::SessionAnswer>, tonic::Status>>
        + Send
        + 'static,
{
    let node = candidate.node().clone();
    let fut = sfu_client(state, &node.grpc_addr).map(|c| call(&candidate, c));
    Box::pin(async move {
        let res = match fut {
            Ok(fut) => fut.await.map_err(SessionError::sfu).map(|answer| {
                let answer = answer.into_inner();
                Started {
                    session_id: answer.session_id,
                    answer_sdp: answer.answer_sdp,
                    node: node.clone(),
                }
            }),
            Err(e) => Err(e),
        };
        (candidate, node, res)
    })
}

/// Requests still running when another candidate served: each session one of them
/// starts is ended at once (its viewer went elsewhere); each node that fails is marked.
fn end_late_answers<C: Candidate>(
    state: State,
    mut running: futures_util::stream::FuturesUnordered<Attempt<C>>,
) {
    use futures_util::stream::StreamExt;
    if running.is_empty() {
        return;
    }
    // Bounded: every request ends within the gRPC channel's timeout.
    tokio::spawn(async move {
        while let Some((_, node, res)) = running.next().await {
            match res {
                Ok(started) => {
                    state.suspects.clear(&node.id);
                    if let Err(e) = end(&state, &node.grpc_addr, &started.session_id).await {
                        tracing::warn!(node = %node.id, error = %e, "ending a session its viewer did not take");
                    }
                }
                Err(e) if e.is_unreachable() => state.suspects.mark(&node.id),
                Err(_) => {}
            }
        }
    });
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn relay_source(parent: &NodeInfo, depth: u32) -> sfu::RelaySource {
    sfu::RelaySource {
        node_id: parent.id.clone(),
        grpc_url: parent.grpc_addr.clone(),
        depth,
    }
}

fn session_not_found() -> SessionError {
    SessionError::Upstream {
        what: "session",
        status: tonic::Status::not_found("no such session: it has ended or never existed"),
    }
}

/// The record of session `id` in `room`, live or just ended.
async fn lookup(state: &State, room: &str, id: &str) -> Result<SessionRecord, SessionError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(session_not_found());
    }
    bus_placement::session(&state.bus, id)
        .await
        .map_err(|e| SessionError::Client(format!("session registry unavailable ({e})")))?
        .filter(|r| r.room == room)
        .ok_or_else(session_not_found)
}

/// The record of live session `id` in `room`.
pub async fn find(state: &State, room: &str, id: &str) -> Result<SessionRecord, SessionError> {
    let rec = lookup(state, room, id).await?;
    if rec.ended {
        return Err(session_not_found());
    }
    Ok(rec)
}

/// A client's `DELETE` of session `id` in `room`: ends it on its SFU. One that ended
/// a moment ago (the SFU closed it) counts as deleted: DELETE is idempotent.
pub async fn delete(state: &State, room: &str, id: &str) -> Result<(), SessionError> {
    let rec = lookup(state, room, id).await?;
    if rec.ended {
        return Ok(());
    }
    end(state, &rec.sfu_url, id).await
}

/// Trickles one ICE candidate line (`candidate:…`) to the SFU holding session `id`.
pub async fn add_candidate(
    state: &State,
    sfu_url: &str,
    id: &str,
    candidate: String,
) -> Result<(), SessionError> {
    sfu_client(state, sfu_url)?
        .add_candidate(sfu::AddCandidateRequest {
            session_id: id.to_owned(),
            candidate,
        })
        .await
        .map_err(SessionError::sfu)?;
    Ok(())
}

/// Ends session `id` on the SFU at `sfu_url`; its record becomes a short tombstone. A
/// session the node no longer knows (timed out, replaced) counts as ended.
pub async fn end(state: &State, sfu_url: &str, id: &str) -> Result<(), SessionError> {
    let res = sfu_client(state, sfu_url)?
        .close(sfu::CloseRequest {
            session_id: id.to_owned(),
        })
        .await;
    let _ = bus_placement::end_session(&state.bus, id).await;
    match res {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(SessionError::sfu(s)),
    }
}

/// Viewer session `id`'s simulcast layers on the SFU at `sfu_url`; with `choice`
/// ("auto" or a layer's rid), changes which it gets first.
pub async fn layers(
    state: &State,
    sfu_url: &str,
    id: &str,
    choice: Option<String>,
) -> Result<sfu::LayersReply, SessionError> {
    let reply = sfu_client(state, sfu_url)?
        .layers(sfu::LayersRequest {
            session_id: id.to_owned(),
            choice: choice.unwrap_or_default(),
        })
        .await
        .map_err(SessionError::sfu)?;
    Ok(reply.into_inner())
}

/// A layers reply as the WHEP layer resource and the WebSocket `layers` message give it.
pub fn layers_json(r: &sfu::LayersReply) -> serde_json::Value {
    serde_json::json!({
        "layers": r.layers.iter().map(|l| serde_json::json!({
            "encodingId": l.rid, "width": l.width, "height": l.height,
        })).collect::<Vec<_>>(),
        "following": (!r.following.is_empty()).then_some(&r.following),
        "choice": r.choice,
    })
}

fn sfu_client(state: &State, url: &str) -> Result<Sfu, SessionError> {
    state
        .upstream
        .sfu(url)
        .map_err(|e| SessionError::Client(e.to_string()))
}

async fn record(state: &State, started: &Started, room: &str, kind: Kind) {
    let rec = SessionRecord {
        sfu_url: started.node.grpc_addr.clone(),
        room: room.to_owned(),
        kind: kind.as_str().to_owned(),
        ended: false,
    };
    if let Err(e) = bus_placement::record_session(&state.bus, &started.session_id, &rec).await {
        tracing::warn!(error = %e, "session not recorded in the bus: PATCH/DELETE via other pods will miss it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_strict_about_scheme_and_lenient_about_case() {
        assert_eq!(bearer(Some("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")).as_deref(), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("abc")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn jwt_shaped_secrets_are_access_tokens() {
        assert!(matches!(
            publish_credential("a.b.c".into()),
            Credential::AccessToken(_)
        ));
        assert!(matches!(
            publish_credential("sk_live_abc".into()),
            Credential::StreamKey(_)
        ));
    }

    #[test]
    fn every_failure_has_a_status_and_code() {
        let cases = [
            (
                SessionError::Upstream {
                    what: "SFU",
                    status: tonic::Status::failed_precondition("VP8 only"),
                },
                (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_codec"),
            ),
            (SessionError::P2pRoom, (StatusCode::CONFLICT, "p2p_room")),
            (
                SessionError::Place(PlaceError::NotLive),
                (StatusCode::CONFLICT, "not_live"),
            ),
            (
                SessionError::Place(PlaceError::NoNode(crate::placement::SelectError::NoNodes)),
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.status_and_code(), want, "{e}");
        }
    }

    /// A node's own refusal for lack of room (its gRPC `ResourceExhausted`) and a
    /// registry of full nodes tell the user the same thing, with the same Retry-After.
    #[test]
    fn a_refusal_for_room_reads_the_same_from_the_node_and_from_the_registry() {
        use axum::response::IntoResponse;
        let registry =
            SessionError::Place(PlaceError::NoNode(crate::placement::SelectError::AllFull {
                nodes: 2,
            }));
        let node = SessionError::sfu(tonic::Status::resource_exhausted(
            "node overloaded (its CPU is spent): try another node",
        ));
        let node = SessionError::refused_by_all(Some(node), 2);
        assert_eq!(node.message(), registry.message());
        assert!(
            node.message().contains("full or out of CPU: retry in 2 s"),
            "{}",
            node.message()
        );
        for e in [node, registry] {
            let r = crate::error::SignalError::from(e).into_response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()["retry-after"], "2");
        }
        // Other refusals stay what they were.
        let down = SessionError::sfu(tonic::Status::unavailable("connection refused"));
        let down = SessionError::refused_by_all(Some(down), 0);
        assert!(down.is_unreachable(), "{down}");
    }

    #[test]
    fn a_refusal_for_cpu_is_told_apart_from_one_for_sessions() {
        let mut cpu = tonic::Status::resource_exhausted("SFU node overloaded");
        cpu.metadata_mut().insert(
            skylark_proto::sfu::REFUSED_FOR_CPU,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        let cpu = SessionError::sfu(cpu);
        assert!(cpu.is_full() && cpu.is_overloaded());
        let sessions = SessionError::sfu(tonic::Status::resource_exhausted("at capacity"));
        assert!(sessions.is_full() && !sessions.is_overloaded());
    }

    #[test]
    fn a_replan_waits_only_for_nodes_that_did_not_refuse_for_cpu() {
        let node = |id: &str| NodeInfo {
            id: id.into(),
            ..NodeInfo::default()
        };
        let (a, b) = (node("a"), node("b"));
        let refused = vec!["a".to_string()];
        assert!(!others_than(std::slice::from_ref(&a), &refused));
        assert!(others_than(&[a, b], &refused));
        assert!(!others_than(&[], &refused));
    }
}
