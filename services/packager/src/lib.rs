//! The packager: turns live rooms into LL-HLS (CMAF: H.264 + Opus in fMP4) without
//! transcoding. One packager holds each room (a lease in the bus), pulls its frames
//! from the origin SFU over `RelayPull`, gives each simulcast layer a rendition
//! (`renditions`), cuts segments and parts (`segmenter`, where a segment is cut), and
//! serves them (`http`). Requests for rooms held by another packager are passed on to
//! it (`remote`).

mod access;
mod audience;
mod bounded;
pub mod dvr;
mod flv;
mod http;
mod recording;
mod recording_http;
mod remote;
pub mod renditions;
pub mod segmenter;
mod store;
mod track;

use futures_util::StreamExt;
use renditions::Renditions;
use segmenter::SegOutput;
use skylark_bus::events::{self, RoomEvent};
use skylark_bus::placement::{self, LEASE_TTL};
use skylark_bus::{AnyBus, Bus, NodeCapacity, NodeInfo, NodeKind};
use skylark_proto::sfu::v1 as pb;
use skylark_proto::sfu::v1::sfu_node_client::SfuNodeClient;
use skylark_telemetry::{traced_channel, ServicePart, TracedChannel};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{RoomHls, Rooms};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

type SfuClient = SfuNodeClient<TracedChannel>;

const TICK: Duration = Duration::from_secs(1);
/// How long an ended room's playlist (with `EXT-X-ENDLIST`) stays served.
const GRACE: Duration = Duration::from_secs(30);

/// Configuration of the packager.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `skylark packager` serves HTTP when run alone.
    pub http_addr: SocketAddr,
    /// How other packagers reach this one's HTTP (for passing requests on); `None`:
    /// the HTTP address, with `public_ip` for an unspecified IP.
    pub http_advertise: Option<String>,
    pub public_ip: IpAddr,
    pub node_id: Option<String>,
    /// Target segment duration (cut at the first keyframe after it).
    pub segment_target: Duration,
    /// The LL-HLS part duration aimed at; the playlists' `PART-TARGET` is
    /// [`segmenter::part_target`] of it.
    pub part_target: Duration,
    /// The API's RoomDirectory gRPC (rooms' visibility).
    pub api_grpc_url: String,
    /// Checks the playback tokens of private rooms' URLs.
    pub playback_tokens: skylark_auth::PlaybackTokens,
    /// Where recordings are written (`SKYLARK_RECORDINGS_URL`: a directory or S3).
    pub recordings: skylark_objstore::Store,
    /// The live DVR window (`SKYLARK_DVR_WINDOW_S`); `None` or a zero window: none.
    pub dvr: Option<dvr::Settings>,
}

struct Shared {
    bus: AnyBus,
    rooms: Rooms,
    me: String,
    segment_target: Duration,
    /// `PART-TARGET`: no part is longer.
    part_target: Duration,
    recordings: recording::Storage,
    dvr: Option<dvr::Settings>,
    /// Holds this packager's DVR directory for as long as it runs.
    _dvr_claim: Option<dvr::Claim>,
}

/// Starts discovery and returns the `/hls` routes.
pub async fn start(
    config: Config,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<ServicePart> {
    let me = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("packager-{:08x}", rand_u32()));
    let advertise = config.http_advertise.clone().unwrap_or_else(|| {
        let ip = if config.http_addr.ip().is_unspecified() {
            config.public_ip
        } else {
            config.http_addr.ip()
        };
        SocketAddr::new(ip, config.http_addr.port()).to_string()
    });
    let rooms = Rooms::default();
    let recordings = recording::Storage::new(
        config.recordings.clone(),
        access::directory_client(&config.api_grpc_url)?,
        shutdown.clone(),
    );
    // The DVR root may be shared by several packagers: each one works in its own locked
    // directory and, starting, removes only what stopped ones left.
    let (dvr, dvr_claim) = match config.dvr.clone().filter(|d| !d.window.is_zero()) {
        Some(mut d) => {
            let (root, name) = (d.root.clone(), me.clone());
            let claim = tokio::task::spawn_blocking(move || {
                dvr::sweep_stale(&root);
                dvr::claim(&root, &name)
            })
            .await?
            .map_err(|e| anyhow::anyhow!("DVR directory under {}: {e}", d.root.display()))?;
            d.root = claim.dir.clone();
            (Some(d), Some(claim))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        bus: bus.clone(),
        rooms: rooms.clone(),
        me: me.clone(),
        segment_target: config.segment_target,
        part_target: segmenter::part_target(config.part_target),
        recordings: recordings.clone(),
        dvr,
        _dvr_claim: dvr_claim,
    });
    let node = NodeInfo {
        id: me.clone(),
        kind: NodeKind::Packager,
        http_addr: advertise,
        capacity: NodeCapacity {
            sessions: 1000,
            relays: 0,
        },
        ..NodeInfo::default()
    };
    let sweep_bus = bus.clone();
    let sweep = tokio::spawn(recording::sweep(recordings.clone(), move |room: String| {
        let bus = sweep_bus.clone();
        Box::pin(async move {
            // Unknown (bus down) counts as live: finalize only what is surely over.
            !matches!(placement::origin_node(&bus, &room).await, Ok(None))
        })
    }));
    let task = tokio::spawn(async move {
        let r = discovery(shared, node, shutdown).await;
        let _ = sweep.await;
        r
    });
    let router = http::router(http::HttpState {
        rooms,
        recordings: recordings.clone(),
        remote: Arc::new(remote::Remote::new(
            bus,
            me,
            http::BLOCK_TIMEOUT.max(http::STILL_WAIT) + Duration::from_secs(2),
        )),
        access: Arc::new(
            access::Access::new(config.playback_tokens.clone(), &config.api_grpc_url)?
                .with_recordings(recordings),
        ),
    });
    Ok(ServicePart {
        name: "packager",
        router,
        ready: None,
        tasks: vec![task],
        grpc_addr: None,
        drain: None,
    })
}

/// Runs the packager alone until `shutdown`.
pub async fn run(config: Config, bus: AnyBus, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = config.http_addr;
    let part = start(config, bus, shutdown.clone()).await?;
    skylark_telemetry::serve_parts(addr, vec![part], shutdown).await
}

type Workers = HashMap<String, (JoinHandle<()>, CancellationToken)>;

/// Finds live rooms, takes the lease of rooms nobody packages, and keeps the leases it
/// holds. A room is taken when an SFU announces it live (`events::publish_went_live`),
/// and every [`TICK`] by asking every SFU node for its rooms, for announcements missed
/// (the bus reconnecting, a packager starting after the room).
async fn discovery(
    sh: Arc<Shared>,
    mut node: NodeInfo,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut workers = Workers::new();
    // One lazily connected client per SFU node, kept while the node is registered.
    let mut clients: HashMap<String, SfuClient> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    let mut went_live = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            ev = next_event(&mut went_live) => {
                match ev {
                    Some(RoomEvent::State { room, live: true, .. }) => {
                        take_room(&sh, &mut workers, room, &shutdown).await;
                    }
                    Some(_) => {}
                    // Ended (the bus reconnects): subscribed again at the tick.
                    None => went_live = None,
                }
                continue;
            }
        }
        // Subscribed before the SFUs are asked: a room going live in between is heard.
        if went_live.is_none() {
            went_live = events::subscribe_went_live(&sh.bus)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "not hearing rooms go live; asking the SFUs every {TICK:?}"))
                .ok();
        }
        workers.retain(|_, (h, _)| !h.is_finished());
        node.load.sessions = workers.len() as u32;
        metrics::gauge!("skylark_packager_rooms").set(workers.len() as f64);
        if let Err(e) = sh.bus.heartbeat(&node, LEASE_TTL).await {
            tracing::warn!(error = %e, "packager heartbeat failed");
        }
        // Keep what we hold; let go of what we lost.
        for (room, (_, stop)) in workers.iter() {
            match placement::renew_packager(&sh.bus, room, &sh.me, LEASE_TTL).await {
                Ok(true) => count_viewers(&sh, room).await,
                Ok(false) => {
                    tracing::warn!(room_id = %room, "packager lease lost; stopping");
                    stop.cancel();
                }
                Err(e) => {
                    tracing::warn!(error = %e, room_id = %room, "packager lease renewal failed")
                }
            }
        }
        let Ok(sfus) = sh.bus.nodes(NodeKind::Sfu).await else {
            continue;
        };
        clients.retain(|url, _| sfus.iter().any(|n| &n.grpc_addr == url));
        for sfu in sfus {
            let mut client = match clients.get(&sfu.grpc_addr) {
                Some(c) => c.clone(),
                None => {
                    let Ok(ch) = traced_channel(&sfu.grpc_addr) else {
                        continue;
                    };
                    let c = SfuNodeClient::new(ch);
                    clients.insert(sfu.grpc_addr.clone(), c.clone());
                    c
                }
            };
            let Ok(stats) = client.stats(pb::StatsRequest {}).await else {
                continue;
            };
            for r in stats.into_inner().rooms.into_iter().filter(|r| r.live) {
                take_room(&sh, &mut workers, r.room_id, &shutdown).await;
            }
        }
    }
    for (room, (h, stop)) in workers {
        stop.cancel();
        let _ = h.await;
        let _ = placement::release_packager(&sh.bus, &room, &sh.me).await;
    }
    let _ = sh.bus.remove_node(NodeKind::Packager, &sh.me).await;
    Ok(())
}

/// The next event of a subscription; never, without one.
async fn next_event(sub: &mut Option<events::RoomEvents>) -> Option<RoomEvent> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Takes the lease of live `room` unless this packager or another holds it, and starts
/// its worker.
async fn take_room(
    sh: &Arc<Shared>,
    workers: &mut Workers,
    room: String,
    shutdown: &CancellationToken,
) {
    // Room ids come from the bus: bounded as the SFU bounds them.
    if workers.contains_key(&room) || room.is_empty() || room.len() > 128 {
        return;
    }
    match placement::claim_packager(&sh.bus, &room, &sh.me, LEASE_TTL).await {
        Ok(true) => {
            tracing::info!(room_id = %room, "packaging room");
            let stop = shutdown.child_token();
            let h = tokio::spawn(room_worker(sh.clone(), room.clone(), stop.clone()));
            workers.insert(room, (h, stop));
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "packager lease unavailable"),
    }
}

/// Records the room's HLS players and FLV streams in the bus, where the API sums them
/// with the SFUs' WebRTC viewers. The entries live a lease: a dead packager stops
/// counting by itself.
async fn count_viewers(sh: &Shared, room: &str) {
    let Some(hls) = sh.rooms.get(room) else {
        return;
    };
    let counts = [
        (
            placement::hls_entry(&sh.me),
            hls.audience.count(Instant::now()),
        ),
        (placement::flv_entry(&sh.me), hls.flv.viewers()),
    ];
    for (entry, n) in counts {
        if let Err(e) = placement::set_viewers(&sh.bus, room, &entry, n as u64).await {
            tracing::warn!(error = %e, room_id = %room, "viewer count not recorded");
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Pulls one room from its origin and writes its HLS until the room ends, the lease
/// is lost, or shutdown.
async fn room_worker(sh: Arc<Shared>, room: String, stop: CancellationToken) {
    let hls = RoomHls::with_dvr(sh.segment_target, sh.part_target, sh.dvr.as_ref(), &room);
    sh.rooms.insert(&room, hls.clone());
    let mut seg = Renditions::new(sh.segment_target, sh.part_target);
    let mut flv_mux = flv::FlvMuxer::default();
    let mut rec: Option<recording::Recorder> = None;
    let mut written = Written::default();
    'room: loop {
        let mut offline_since: Option<tokio::time::Instant> = None;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let Some(origin) = origin_node(&sh, &room).await else {
                // Not live (any more): give a reconnecting publisher a few seconds.
                let since = *offline_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    break;
                }
                tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(TICK) => continue }
            };
            offline_since = None;
            if rec.is_none() {
                rec = start_recording(&sh, &room).await;
            }
            // One trace per pull: packager → sfu (RelayPull), room id as an attribute.
            let span =
                tracing::info_span!("packager.relay_pull", otel.kind = "client", room_id = %room);
            if let Err(e) = pull(
                &origin.grpc_addr,
                &room,
                &mut seg,
                &mut flv_mux,
                &hls,
                &mut rec,
                &mut written,
                &stop,
            )
            .instrument(span)
            .await
            {
                tracing::info!(room_id = %room, error = %e, "relay pull ended; retrying");
            }
            // Whatever comes next (a reconnecting publisher, a new origin) restarts timestamps.
            let mut out = Vec::new();
            seg.publisher_changed(&mut out);
            apply(&hls, &mut rec, out);
            flv_mux.reset(&hls.flv);
            tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(Duration::from_millis(500)) => {} }
        }
        let mut out = Vec::new();
        seg.flush(&mut out);
        apply(&hls, &mut rec, out);
        hls.end();
        // Stopped (lease lost, shutdown): the recording stays open for whoever packages
        // the room next; ended: finalize it.
        if let Some(r) = rec.take().filter(|_| !stop.is_cancelled()) {
            r.finish().await;
        }
        tracing::info!(room_id = %room, "room ended; HLS kept for the grace period");
        // Serve the ended playlist for a while, still holding the lease (so the discovery
        // loop's renewals succeed), unless the process is stopping or the lease is lost.
        // A publisher back in that time resumes the same playlists (see `RoomHls::resume`).
        let grace_over = tokio::time::Instant::now() + GRACE;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break 'room,
                _ = tokio::time::sleep(TICK) => {}
            }
            if origin_node(&sh, &room).await.is_some() {
                tracing::info!(room_id = %room, "room live again within the grace period; packaging resumes");
                hls.resume();
                continue 'room;
            }
            if tokio::time::Instant::now() >= grace_over {
                break 'room;
            }
        }
    }
    if sh.rooms.get(&room).is_some_and(|h| Arc::ptr_eq(&h, &hls)) {
        sh.rooms.remove(&room);
    }
    // The window's files go with the room (the writer removes its directory).
    if let Some(writer) = hls.close_dvr() {
        let _ = writer.await;
    }
    let _ = placement::release_packager(&sh.bus, &room, &sh.me).await;
}

/// Gives the outputs to the live HLS and, when the room records, to the recorder.
/// The recorder takes the segments the live HLS completed (their bytes, shared).
fn apply(hls: &RoomHls, rec: &mut Option<recording::Recorder>, out: Vec<(String, SegOutput)>) {
    let finished = hls.apply(out);
    if let Some(r) = rec {
        r.feed(finished);
    }
}

/// A recorder if the room's `record` setting is on (asked of the RoomDirectory at
/// each pull until a recording starts).
async fn start_recording(sh: &Shared, room: &str) -> Option<recording::Recorder> {
    let mut req = tonic::Request::new(skylark_proto::rooms::v1::GetRoomRequest {
        room_id: room.to_string(),
    });
    req.set_timeout(Duration::from_secs(3));
    match sh.recordings.directory.clone().get_room(req).await {
        Ok(r) if r.get_ref().record => {}
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(room_id = %room, error = %e, "room directory unreachable: whether to record is unknown; asking again at the next pull");
            return None;
        }
    }
    match recording::Recorder::start(sh.recordings.clone(), room).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(room_id = %room, error = %e, store = %sh.recordings.objects.describe, "recording could not start: check that SKYLARK_RECORDINGS_URL is writable (a directory, or a bucket the AWS_* credentials may write)");
            None
        }
    }
}

/// The room's origin SFU, if the room is live.
async fn origin_node(sh: &Shared, room: &str) -> Option<NodeInfo> {
    placement::origin_node(&sh.bus, room).await.ok().flatten()
}

/// The newest RTP time of each track of the current publisher written to the HLS (and
/// the recording), kept across pulls: a pull made again starts with the room's cached
/// GOP, whose frames up to these were written by the pull before.
#[derive(Default)]
struct Written(HashMap<String, u64>);

impl Written {
    /// Whether to write `f`: a live frame always; a cached one if newer than its track's
    /// newest written frame.
    fn admit(&mut self, f: &pb::Frame, cached: bool) -> bool {
        match self.0.get_mut(&f.track_id) {
            Some(newest) if cached && f.rtp_time <= *newest => return false,
            Some(newest) => *newest = f.rtp_time,
            None => {
                self.0.insert(f.track_id.clone(), f.rtp_time);
            }
        }
        true
    }

    /// A new publisher: its timestamps restart.
    fn publisher_changed(&mut self) {
        self.0.clear();
    }
}

#[allow(clippy::too_many_arguments)]
async fn pull(
    origin: &str,
    room: &str,
    seg: &mut Renditions,
    flv_mux: &mut flv::FlvMuxer,
    hls: &RoomHls,
    rec: &mut Option<recording::Recorder>,
    written: &mut Written,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut client =
        SfuNodeClient::new(traced_channel(origin)?).max_decoding_message_size(8 * 1024 * 1024);
    let (fb_tx, fb_rx) = mpsc::channel(16);
    fb_tx
        .send(pb::RelayFeedback {
            msg: Some(pb::relay_feedback::Msg::Start(pb::RelayStart {
                room_id: room.to_string(),
                consumer: "packager".into(),
                // The frames since the last keyframe, instead of waiting up to a GOP for
                // the next (RTMP encoders can't be asked for one).
                from_gop: true,
            })),
        })
        .await?;
    // The relay is long-lived: no per-call deadline, the stream ends with the room.
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(fb_rx));
    req.set_timeout(Duration::from_secs(24 * 3600));
    let mut stream = client.relay_pull(req).await?.into_inner();
    let mut out = Vec::new();
    // Frames still to come of the cached GOP the SFU announced.
    let mut cached = 0u32;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = stream.next() => m,
        };
        let Some(msg) = msg else { return Ok(()) };
        match msg?.msg {
            Some(pb::relay_message::Msg::Track(t)) => {
                seg.add_track(&t);
                flv_mux.add_track(&t, &hls.flv);
            }
            Some(pb::relay_message::Msg::CachedGop(g)) => cached = g.frames,
            Some(pb::relay_message::Msg::Frame(f)) => {
                let from_cache = cached > 0;
                cached = cached.saturating_sub(1);
                if !written.admit(&f, from_cache) {
                    continue;
                }
                // A cached frame is from the past: its wall clock is its capture's.
                let at_ms = match from_cache {
                    true => (f.received_at_us / 1000) as i64,
                    false => now_ms(),
                };
                seg.push(&f, at_ms, &mut out);
                flv_mux.push(&f, &hls.flv);
            }
            Some(pb::relay_message::Msg::PublisherChanged(_)) => {
                seg.publisher_changed(&mut out);
                flv_mux.reset(&hls.flv);
                written.publisher_changed();
            }
            Some(pb::relay_message::Msg::Ended(_)) => return Ok(()),
            None => {}
        }
        for (_, o) in out.iter() {
            if let SegOutput::RequestKeyframe = o {
                let _ = fb_tx.try_send(pb::RelayFeedback {
                    msg: Some(pb::relay_feedback::Msg::KeyframeRequest(
                        pb::KeyframeRequest {
                            track_id: String::new(),
                        },
                    )),
                });
            }
        }
        apply(hls, rec, std::mem::take(&mut out));
    }
}

/// `n` random bytes in hex (zeros if the system has no randomness to give).
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packager `packager-t` on `bus`, its recordings under `dir`: what `discovery` runs.
    fn packager(bus: &AnyBus, dir: &std::path::Path) -> (Arc<Shared>, NodeInfo) {
        let sh = Arc::new(Shared {
            bus: bus.clone(),
            rooms: Rooms::default(),
            me: "packager-t".into(),
            segment_target: Duration::from_secs(2),
            part_target: Duration::from_millis(220),
            recordings: recording::tests::storage(dir),
            dvr: None,
            _dvr_claim: None,
        });
        let node = NodeInfo {
            id: "packager-t".into(),
            kind: NodeKind::Packager,
            ..NodeInfo::default()
        };
        (sh, node)
    }

    /// Waits until `room`'s packager lease is held, until `deadline`; its holder.
    async fn taken(bus: &AnyBus, room: &str, deadline: tokio::time::Instant) -> String {
        loop {
            if let Some(h) = placement::packager(bus, room).await.unwrap() {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "room {room} was not taken"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A room announced live is packaged at once: with no SFU registered, the periodic
    /// look at the SFUs' rooms finds nothing, so only the announcement can start it.
    #[tokio::test]
    async fn a_room_announced_live_is_taken_without_asking_the_sfus() {
        let bus = skylark_bus::connect(None).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (sh, node) = packager(&bus, dir.path());
        let task = tokio::spawn(discovery(sh, node, shutdown.clone()));
        // Registered: its first tick ran, so it listens.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while bus.nodes(NodeKind::Packager).await.unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        events::publish_went_live(&bus, "r1").await.unwrap();
        assert_eq!(taken(&bus, "r1", deadline).await, "packager-t");
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(
            placement::packager(&bus, "r1").await.unwrap(),
            None,
            "released"
        );
    }

    /// The other way round: a room whose announcement never reached the packager (it
    /// was not listening yet, as a packager starting after the room or during a bus
    /// reconnect) is taken by the look at the SFUs' rooms, within a tick of it. A real
    /// SFU node holds the room, pushed to it as RTMP ingest pushes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_whose_announcement_was_missed_is_taken_from_the_sfus() {
        let bus = skylark_bus::connect(None).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let config = skylark_sfu::Config::loopback("sfu-t", 4);
        let sfu = skylark_sfu::start(config, bus.clone(), shutdown.clone())
            .await
            .unwrap();
        let url = format!("http://{}", sfu.grpc_addr.unwrap());
        let mut heard = events::subscribe_went_live(&bus).await.unwrap();
        let (push, pushed) = mpsc::channel(1);
        let start = pb::push_message::Msg::Start(pb::PushStart {
            room_id: "r1".into(),
            key_id: String::new(),
        });
        push.send(pb::PushMessage { msg: Some(start) })
            .await
            .unwrap();
        let mut client = SfuNodeClient::new(traced_channel(&url).unwrap());
        let _events = client
            .push(tokio_stream::wrappers::ReceiverStream::new(pushed))
            .await
            .unwrap();
        // Announced, and gone: nobody else listened.
        let ev = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await;
        assert!(
            matches!(ev, Ok(Some(RoomEvent::State { ref room, live: true, .. })) if room == "r1"),
            "the SFU announces the room: {ev:?}"
        );
        drop(heard);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while bus.nodes(NodeKind::Sfu).await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "SFU never registered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (sh, node) = packager(&bus, dir.path());
        let task = tokio::spawn(discovery(sh, node, shutdown.child_token()));
        // The fallback looks every TICK; the margin is for a starved CI machine (without
        // the fallback the room is never taken).
        let within = tokio::time::Instant::now() + 5 * TICK;
        assert_eq!(taken(&bus, "r1", within).await, "packager-t");
        shutdown.cancel();
        task.await.unwrap().unwrap();
        drop(push);
    }

    fn frame(track: &str, rtp_time: u64) -> pb::Frame {
        pb::Frame {
            track_id: track.into(),
            rtp_time,
            ..Default::default()
        }
    }

    /// A pull made again starts with the cached GOP: what the pull before wrote is not
    /// written twice, what it missed is; live frames always are; a new publisher's
    /// timestamps start over.
    #[test]
    fn a_pull_made_again_writes_no_frame_twice() {
        let mut w = Written::default();
        for t in [0, 3000, 6000] {
            assert!(w.admit(&frame("v", t), true), "first pull's GOP");
        }
        assert!(w.admit(&frame("v", 9000), false));
        assert!(w.admit(&frame("a", 100), false));
        // Pulled again: the GOP from its keyframe at 3000 up to 12000.
        let again: Vec<bool> = [3000, 6000, 9000, 12000]
            .iter()
            .map(|&t| w.admit(&frame("v", t), true))
            .collect();
        assert_eq!(again, [false, false, false, true]);
        assert!(w.admit(&frame("a", 50), false), "live frames pass");
        w.publisher_changed();
        assert!(w.admit(&frame("v", 0), true), "a new publisher's GOP");
    }
}
