//! Recordings: while a room with `record` set is live, the room worker hands the
//! segments the live HLS store completed (their bytes, shared: [`Finished`]) and the
//! inits to a [`Recorder`], whose writer task (all storage I/O off the worker) writes
//! each segment, the inits and the state
//! (`recording.json`, its segment lists sealed in chunks of [`CHUNK`]: storing it is
//! O(1) per segment) under `{room}/{id}/` of the recordings store (a directory or
//! S3-compatible object storage, [`skylark_objstore`]); the `EVENT` playlists are
//! rendered from the state when asked for (sealed chunks, which never change, cached).
//! `open/{room}/{id}` marks a recording until the API has it finished: the open one is
//! what a packager taking the room over continues after a discontinuity, and the
//! [`sweep`] looks only there. When the stream ends the recording is finalized (`VOD`
//! playlists, one fragmented MP4) and the API is told (`RecordingFinished`, retried
//! until answered); while it grows the API hears of its size (`RecordingStarted`,
//! every [`PROGRESS_EVERY`]). A [`sweep`] finalizes recordings a dead packager left
//! open. A recording's room, for serving its files, comes from the API
//! (`GetRecording`), remembered.

use crate::access::Directory;
use crate::store::Finished;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skylark_media::hls::{render_multivariant, render_recording, RecordedSegment, Variant};
use skylark_objstore::{Key, ObjectStore, ObjectStoreExt, PutPayload};
use skylark_proto::rooms::v1 as rooms;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Batches queued between the room worker and the writer (one per completed segment
/// or new init). When full, batches are dropped, logged and counted
/// (`skylark_recording_dropped_total`), and the recording continues after a
/// discontinuity.
const QUEUE: usize = 256;
/// An open recording updated this recently is continued by the packager taking the
/// room over; an older one is finalized and a new one starts.
pub const CONTINUE_WITHIN_MS: i64 = 30_000;
/// The sweep finalizes open recordings not updated for this long whose room is offline.
pub const ABANDONED_AFTER_MS: i64 = 60_000;
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Largest `recording.json` or segment chunk read (far above what they hold).
const MAX_META: u64 = 16 * 1024 * 1024;
/// Segments per sealed chunk of a rendition's list (`{rendition}/segments-{k}.json`):
/// `recording.json` holds only the open tail, so storing it after each segment costs
/// O(1), not O(segments so far).
const CHUNK: usize = 64;
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, at most, the API hears how large a recording in progress has grown.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Where the markers of recordings the API has not finished are: `open/{room}/{id}`
/// (room ids never are `open`).
const OPEN: &str = "open";
/// Sealed chunks of segment lists a packager keeps (~2.5 KB each).
const MAX_CACHED_CHUNKS: usize = 4096;
/// API lookups of a recording's room in flight at once; more wait, then get a 503.
const MAX_LOOKUPS: usize = 64;
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// What is recorded of one rendition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenditionMeta {
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    /// Peak bits per second of a segment.
    pub bandwidth: u64,
    /// The newest init written (`init{v}.mp4`); 0: none yet.
    pub init: u32,
    pub segments: Vec<SegMeta>,
    /// The next segment follows a gap (takeover, dropped segments).
    #[serde(default)]
    pub discontinuity_due: bool,
    /// Chunks of [`CHUNK`] segments stored apart; `segments` in `recording.json` holds
    /// the ones after them.
    #[serde(default)]
    pub sealed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegMeta {
    /// `seg{n}.m4s`.
    pub n: u64,
    pub duration: f64,
    /// Its init, `init{init}.mp4`.
    pub init: u32,
    pub discontinuity: bool,
    pub bytes: u64,
}

/// `recording.json`: the recording's state, from which every playlist is rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub room: String,
    pub id: String,
    pub started_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    pub duration_s: f64,
    pub bytes: u64,
    /// The API acknowledged it (`RecordingFinished`).
    #[serde(default)]
    pub registered: bool,
    /// The download covers only the longest run of segments with one init.
    #[serde(default)]
    pub mp4_partial: bool,
    pub renditions: BTreeMap<String, RenditionMeta>,
}

/// A rendition's directory in a recording (storage and `/recordings/{id}/` URLs): its
/// layer name, `main` without simulcast (live HLS puts that one at the root:
/// [`crate::store::rendition_url_prefix`]).
pub fn rendition_dir(name: &str) -> &str {
    if name.is_empty() {
        "main"
    } else {
        name
    }
}

/// Names that can be a directory here (room ids, recording ids, layer names).
pub fn safe_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Meta {
    fn new(room: &str, id: &str, now: i64) -> Self {
        Self {
            room: room.into(),
            id: id.into(),
            started_at: now,
            updated_at: now,
            ended_at: None,
            duration_s: 0.0,
            bytes: 0,
            registered: false,
            mp4_partial: false,
            renditions: BTreeMap::new(),
        }
    }

    /// The rendition's playlist (`EVENT` while open, `VOD` once ended).
    pub fn media_playlist(&self, rendition: &str) -> Option<String> {
        let r = self.renditions.get(rendition)?;
        let segs: Vec<RecordedSegment> = r
            .segments
            .iter()
            .map(|s| RecordedSegment {
                uri: format!("seg{}.m4s", s.n),
                duration: s.duration,
                map_uri: format!("init{}.mp4", s.init),
                discontinuity: s.discontinuity,
            })
            .collect();
        Some(render_recording(&segs, self.ended_at.is_some()))
    }

    /// The multivariant playlist: renditions with a segment, best first.
    pub fn multivariant(&self) -> String {
        let mut variants: Vec<Variant> = self
            .renditions
            .iter()
            .filter(|(_, r)| !r.segments.is_empty())
            .map(|(name, r)| Variant {
                uri: format!("{}/media.m3u8", rendition_dir(name)),
                bandwidth: r.bandwidth.max(1),
                codecs: r.codecs.clone(),
                resolution: r.resolution,
                frame_rate: None,
            })
            .collect();
        variants.sort_by_key(|v| std::cmp::Reverse(rank(v.resolution, v.bandwidth)));
        render_multivariant(&variants)
    }

    /// The rendition the download is made of: the largest picture, then the most bits.
    pub fn top_rendition(&self) -> Option<&str> {
        self.renditions
            .iter()
            .filter(|(_, r)| !r.segments.is_empty())
            .max_by_key(|(_, r)| rank(r.resolution, r.bandwidth))
            .map(|(n, _)| n.as_str())
    }

    fn refresh_duration(&mut self) {
        self.duration_s = self
            .renditions
            .values()
            .map(|r| r.segments.iter().map(|s| s.duration).sum::<f64>())
            .fold(0.0, f64::max);
    }
}

fn rank(resolution: Option<(u32, u32)>, bandwidth: u64) -> (u64, u64) {
    let area = resolution.map_or(0, |(w, h)| u64::from(w) * u64::from(h));
    (area, bandwidth)
}

/// The longest run of consecutive segments of `r` sharing one init: (init, first, len).
pub fn longest_run(r: &RenditionMeta) -> Option<(u32, usize, usize)> {
    let mut best: Option<(u32, usize, usize)> = None;
    let mut i = 0;
    while i < r.segments.len() {
        let init = r.segments[i].init;
        let len = r.segments[i..]
            .iter()
            .take_while(|s| s.init == init)
            .count();
        if best.is_none_or(|(_, _, l)| len > l) {
            best = Some((init, i, len));
        }
        i += len;
    }
    best
}

fn io_err(e: skylark_objstore::Error) -> io::Error {
    match e {
        skylark_objstore::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

/// Stores `bytes` at `key` (atomically: a reader sees the old object or the new one).
async fn put(
    store: &skylark_objstore::Store,
    key: &str,
    bytes: impl Into<PutPayload>,
) -> io::Result<()> {
    store
        .objects
        .put(&Key::from(key), bytes.into())
        .await
        .map(drop)
        .map_err(io_err)
}

/// Reads the object `key`, refusing one larger than `max`.
async fn get(store: &skylark_objstore::Store, key: &str, max: u64) -> io::Result<Bytes> {
    let r = store.objects.get(&Key::from(key)).await.map_err(io_err)?;
    if r.meta.size > max {
        return Err(io::Error::other(format!("{key} is too large")));
    }
    r.bytes().await.map_err(io_err)
}

fn chunk_key(dir: &str, rendition: &str, k: u32) -> String {
    format!("{dir}/{}/segments-{k}.json", rendition_dir(rendition))
}

/// Reads the state of the recording at `dir` (`{room}/{id}`): `recording.json` and the
/// sealed chunks of its segment lists. A chunk never changes once `recording.json`
/// names it, so each is read from the store once per packager (while recording, a
/// playlist request costs one read, not one per 64 segments).
pub async fn read_meta(storage: &Storage, dir: &str) -> io::Result<Meta> {
    let store = &storage.objects;
    let text = get(store, &format!("{dir}/recording.json"), MAX_META).await?;
    let mut meta: Meta = serde_json::from_slice(&text).map_err(io::Error::other)?;
    for (name, r) in meta.renditions.iter_mut() {
        if r.sealed == 0 {
            continue;
        }
        let mut all = Vec::with_capacity(r.sealed as usize * CHUNK + r.segments.len());
        for k in 0..r.sealed {
            let key = chunk_key(dir, name, k);
            let cached = storage.cached_chunk(&key);
            let segs = match cached {
                Some(segs) => segs,
                None => {
                    let chunk = get(store, &key, MAX_META).await?;
                    let segs: Arc<[SegMeta]> = serde_json::from_slice::<Vec<SegMeta>>(&chunk)
                        .map_err(io::Error::other)?
                        .into();
                    storage.cache_chunk(key, segs.clone());
                    segs
                }
            };
            all.extend_from_slice(&segs);
        }
        all.append(&mut r.segments);
        r.segments = all;
    }
    Ok(meta)
}

/// Stores the state: full chunks of the segment lists first (once each), then
/// `recording.json` with the tails, so a reader never misses a segment.
async fn write_meta(store: &skylark_objstore::Store, dir: &str, meta: &mut Meta) -> io::Result<()> {
    for (name, r) in meta.renditions.iter_mut() {
        while r.segments.len() >= (r.sealed as usize + 1) * CHUNK {
            let from = r.sealed as usize * CHUNK;
            let json =
                serde_json::to_vec(&r.segments[from..from + CHUNK]).map_err(io::Error::other)?;
            put(store, &chunk_key(dir, name, r.sealed), json).await?;
            r.sealed += 1;
        }
    }
    // Serialize with each list cut to its tail, then put the lists back whole.
    let mut heads = Vec::new();
    for r in meta.renditions.values_mut() {
        let at = (r.sealed as usize * CHUNK).min(r.segments.len());
        let tail = r.segments.split_off(at);
        heads.push(std::mem::replace(&mut r.segments, tail));
    }
    let json = serde_json::to_vec(meta);
    for (r, mut head) in meta.renditions.values_mut().zip(heads) {
        head.append(&mut r.segments);
        r.segments = head;
    }
    put(
        store,
        &format!("{dir}/recording.json"),
        json.map_err(io::Error::other)?,
    )
    .await
}

/// Where recordings are and how to tell the API about finished ones.
#[derive(Clone)]
pub struct Storage {
    pub objects: skylark_objstore::Store,
    pub directory: Directory,
    pub shutdown: CancellationToken,
    /// Recording id → room, so serving a recording's files asks the API once.
    rooms_of: Arc<Mutex<HashMap<String, String>>>,
    /// Sealed chunks of segment lists read so far, by key.
    chunks: Arc<Mutex<HashMap<String, Arc<[SegMeta]>>>>,
    lookups: Arc<tokio::sync::Semaphore>,
}

/// Recordings whose room [`Storage::find`] remembers.
const MAX_REMEMBERED: usize = 10_000;

/// The API could not say where a recording is (unreachable, overloaded).
#[derive(Debug)]
pub struct Unavailable;

/// Inserts into a bounded cache (entries are cheap to learn again).
fn insert_bounded<V>(map: &Mutex<HashMap<String, V>>, max: usize, key: String, v: V) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    crate::bounded::cache_insert(&mut map, max, |_| false, key, v);
}

impl Storage {
    /// The room of recording `id` and where it is, `{room}/{id}`, as the API lists it
    /// (remembered: a recording never changes rooms); `None` for a recording the API
    /// does not list (a deleted one still remembered is found, and its files are not).
    pub async fn find(&self, id: &str) -> Result<Option<(String, String)>, Unavailable> {
        if !safe_name(id) {
            return Ok(None);
        }
        let known = self
            .rooms_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        if let Some(room) = known {
            return Ok(Some((room.clone(), format!("{room}/{id}"))));
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(LOOKUP_TIMEOUT, self.lookups.acquire()).await
        else {
            return Err(Unavailable);
        };
        let mut req = tonic::Request::new(rooms::GetRecordingRequest {
            recording_id: id.to_string(),
        });
        req.set_timeout(LOOKUP_TIMEOUT);
        let r = match self.directory.clone().get_recording(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => {
                tracing::warn!(recording_id = %id, error = %s, "recording lookup failed");
                return Err(Unavailable);
            }
        };
        if !safe_name(&r.room_id) || r.path != format!("{}/{id}", r.room_id) {
            return Ok(None);
        }
        self.remember(id, &r.room_id);
        Ok(Some((r.room_id, r.path)))
    }

    fn remember(&self, id: &str, room: &str) {
        insert_bounded(&self.rooms_of, MAX_REMEMBERED, id.into(), room.into());
    }

    fn cached_chunk(&self, key: &str) -> Option<Arc<[SegMeta]>> {
        let chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.get(key).cloned()
    }

    fn cache_chunk(&self, key: String, segs: Arc<[SegMeta]>) {
        insert_bounded(&self.chunks, MAX_CACHED_CHUNKS, key, segs);
    }

    pub fn new(
        objects: skylark_objstore::Store,
        directory: Directory,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            objects,
            directory,
            shutdown,
            rooms_of: Arc::default(),
            chunks: Arc::default(),
            lookups: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
        }
    }
}

/// The marker of recording `{room}/{id}` (`dir`) the API has not finished.
fn marker(dir: &str) -> String {
    format!("{OPEN}/{dir}")
}

/// The recordings (`{room}/{id}`) marked unfinished, of one room or of all.
async fn unfinished(objs: &skylark_objstore::Store, room: Option<&str>) -> io::Result<Vec<String>> {
    use futures_util::TryStreamExt;
    let prefix = Key::from(match room {
        Some(room) => format!("{OPEN}/{room}"),
        None => OPEN.to_string(),
    });
    let keys: Vec<_> = objs
        .objects
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(io_err)?;
    Ok(keys
        .into_iter()
        .filter_map(|m| {
            let mut parts = m.location.parts();
            let (open, room, id) = (parts.next()?, parts.next()?, parts.next()?);
            let ok = open.as_ref() == OPEN
                && parts.next().is_none()
                && safe_name(room.as_ref())
                && safe_name(id.as_ref());
            ok.then(|| format!("{}/{}", room.as_ref(), id.as_ref()))
        })
        .collect())
}

/// The marker of a room's open recording before `open/{room}/{id}` (2026-12-06):
/// `{room}/current`, holding the id.
const LEGACY_CURRENT: &str = "current";

/// Turns room `room`'s `{room}/current` marker, if it has one, into an `open/` marker:
/// takeover and the sweep look only there. Whether it had one.
async fn adopt_legacy_marker(objs: &skylark_objstore::Store, room: &str) -> io::Result<bool> {
    let key = format!("{room}/{LEGACY_CURRENT}");
    let id = match get(objs, &key, 256).await {
        Ok(id) => id,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match std::str::from_utf8(&id).map(str::trim) {
        Ok(id) if safe_name(id) => {
            put(objs, &marker(&format!("{room}/{id}")), Bytes::new()).await?;
            tracing::info!(room_id = %room, recording_id = %id, "recording marked open (was `{room}/current`)");
        }
        _ => tracing::warn!(room_id = %room, "`{room}/current` names no recording: removed"),
    }
    match objs.objects.delete(&Key::from(key)).await {
        Ok(()) | Err(skylark_objstore::Error::NotFound { .. }) => Ok(true),
        Err(e) => Err(io_err(e)),
    }
}

/// Written when a start-up pass found no `{room}/current` marker left: later starts read
/// this one object instead of listing every room. Not a room (a `.` is no
/// [`safe_name`]), so no room's prefix collides with it.
const LEGACY_ADOPTED: &str = "legacy-markers.done";

/// [`adopt_legacy_marker`] for every room, at start-up: one listing of the rooms and one
/// read each, until a pass finds none (then [`LEGACY_ADOPTED`] is written and read instead).
async fn adopt_legacy_markers(storage: &Storage) -> io::Result<()> {
    let objs = &storage.objects;
    match get(objs, LEGACY_ADOPTED, 4096).await {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let rooms = objs
        .objects
        .list_with_delimiter(None)
        .await
        .map_err(io_err)?;
    // Converted or failed: the next start looks again (an older packager may still be
    // running and marking the old way while this one starts).
    let mut left = false;
    for room in rooms.common_prefixes {
        if storage.shutdown.is_cancelled() {
            return Ok(());
        }
        let Some(room) = room.filename().filter(|r| *r != OPEN && safe_name(r)) else {
            continue;
        };
        match adopt_legacy_marker(objs, room).await {
            Ok(converted) => left |= converted,
            Err(e) => {
                left = true;
                tracing::warn!(error = %e, room_id = %room, "old recording marker not converted (retried at the next start)");
            }
        }
    }
    if !left {
        let note = "No `{room}/current` recording markers were left. Delete this object to make \
                    the next packager start look for them again.\n";
        put(objs, LEGACY_ADOPTED, note).await?;
        tracing::info!(store = ?objs, "no old recording markers left: later starts skip the look");
    }
    Ok(())
}

/// One message to the writer.
enum Msg {
    Out {
        out: Vec<(String, Finished)>,
        /// Batches were dropped before this one.
        gap: bool,
    },
    /// The stream ended: finalize.
    Finish,
}

/// The room worker's side of a recording: queues outputs, never blocks on the disk.
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    gap: bool,
    room: String,
    /// Each rendition's newest init, sent again after a gap (it may be what was dropped).
    inits: HashMap<String, Finished>,
}

impl Recorder {
    /// Continues the room's open recording if it was updated within
    /// [`CONTINUE_WITHIN_MS`], else starts a new one (finalizing a stale one first).
    pub async fn start(storage: Storage, room: &str) -> io::Result<Self> {
        let writer = Writer::open(storage, room).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer.run(rx));
        Ok(Self {
            tx,
            gap: false,
            room: room.into(),
            inits: HashMap::new(),
        })
    }

    /// Queues what the live HLS store completed; drops (and counts) it if the writer
    /// is too far behind.
    pub fn feed(&mut self, out: Vec<(String, Finished)>) {
        if out.is_empty() {
            return;
        }
        for (r, o) in &out {
            if let Finished::Init { .. } = o {
                self.inits.insert(r.clone(), o.clone());
            }
        }
        let out = if self.gap {
            let mut again: Vec<(String, Finished)> = self
                .inits
                .iter()
                .map(|(r, o)| (r.clone(), o.clone()))
                .collect();
            again.extend(out);
            again
        } else {
            out
        };
        match self.tx.try_send(Msg::Out { out, gap: self.gap }) {
            Ok(()) => self.gap = false,
            Err(_) => {
                if !self.gap {
                    tracing::warn!(room_id = %self.room, "recording writer is behind (slow disk?): dropping segments");
                }
                metrics::counter!("skylark_recording_dropped_total").increment(1);
                self.gap = true;
            }
        }
    }

    /// The stream ended: the writer finalizes and registers the recording.
    pub async fn finish(self) {
        let _ = self.tx.send(Msg::Finish).await;
    }
}

struct Writer {
    storage: Storage,
    /// `{room}/{id}`.
    dir: String,
    meta: Meta,
    /// The `index.m3u8` last stored: it is rewritten only when it changes (a new
    /// rendition, a higher peak bandwidth), not at every segment.
    index: String,
    /// The API was last told of the recording in progress (`RecordingStarted`) by
    /// this call, at that time: at its first segment (an empty recording is never
    /// listed), then with its size every [`PROGRESS_EVERY`]. Stopped when the recording
    /// ends, so a late call cannot list it again.
    announced: Option<(tokio::task::JoinHandle<()>, std::time::Instant)>,
}

impl Writer {
    async fn open(storage: Storage, room: &str) -> io::Result<Self> {
        let objs = &storage.objects;
        adopt_legacy_marker(objs, room).await?;
        let mut found = Vec::new();
        for dir in unfinished(objs, Some(room)).await? {
            if let Ok(meta) = read_meta(&storage, &dir).await {
                found.push((dir, meta));
            }
        }
        // The newest open one updated lately is continued; any other is finished.
        let now = crate::now_ms();
        let newest = found
            .iter()
            .enumerate()
            .filter(|(_, (_, m))| m.ended_at.is_none() && now - m.updated_at < CONTINUE_WITHIN_MS)
            .max_by_key(|(_, (_, m))| m.updated_at)
            .map(|(i, _)| i);
        let continued = newest.map(|i| found.swap_remove(i));
        for (dir, mut meta) in found {
            // Stale: end it here (files only), tell the API in the background.
            if meta.ended_at.is_none() {
                if let Err(e) = end(objs, &dir, &mut meta).await {
                    tracing::warn!(error = %e, recording_id = %meta.id, "stale recording not finalized; the sweep retries");
                }
            }
            let st = storage.clone();
            tokio::spawn(async move { finalize(&st, &dir).await });
        }
        if let Some((dir, mut meta)) = continued {
            tracing::info!(room_id = %room, recording_id = %meta.id, "continuing the room's recording after a discontinuity");
            for r in meta.renditions.values_mut() {
                r.discontinuity_due = true;
            }
            storage.remember(&meta.id, room);
            return Ok(Self {
                storage,
                dir,
                meta,
                index: String::new(),
                announced: None,
            });
        }
        let id = new_id();
        let dir = format!("{room}/{id}");
        let mut meta = Meta::new(room, &id, crate::now_ms());
        write_meta(objs, &dir, &mut meta).await?;
        put(objs, &marker(&dir), Bytes::new()).await?;
        storage.remember(&id, room);
        tracing::info!(room_id = %room, recording_id = %id, "recording started");
        Ok(Self {
            storage,
            dir,
            meta,
            index: String::new(),
            announced: None,
        })
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let msg = tokio::select! {
                _ = self.storage.shutdown.cancelled() => return,
                m = rx.recv() => m,
            };
            match msg {
                // The worker stopped without an end (lease lost, shutdown): the
                // recording stays open for whoever takes the room over.
                None => return,
                Some(Msg::Finish) => {
                    if let Some((a, _)) = self.announced.take() {
                        a.abort();
                    }
                    finalize(&self.storage, &self.dir).await;
                    return;
                }
                Some(Msg::Out { out, gap }) => self.out(out, gap).await,
            }
        }
    }

    async fn out(&mut self, out: Vec<(String, Finished)>, gap: bool) {
        if gap {
            // Batches were dropped: segments are missing before these.
            for r in self.meta.renditions.values_mut() {
                r.discontinuity_due = true;
            }
        }
        for (r, o) in out {
            let msn = match &o {
                Finished::Segment { msn, .. } => Some(*msn),
                Finished::Init { .. } => None,
            };
            let listed = |m: &Meta| m.renditions.get(&r).map(|x| x.segments.len());
            let before = listed(&self.meta);
            if let Err(e) = self.apply(&r, o).await {
                metrics::counter!("skylark_recording_write_errors_total").increment(1);
                tracing::warn!(error = %e, recording_id = %self.meta.id, rendition = %r, ?msn, "recording write failed; the segment is lost");
                // Not stored: the next segment follows a hole.
                if msn.is_some() && listed(&self.meta) == before {
                    if let Some(x) = self.meta.renditions.get_mut(&r) {
                        x.discontinuity_due = true;
                    }
                }
            }
        }
    }

    async fn apply(&mut self, rendition: &str, o: Finished) -> io::Result<()> {
        if !safe_name(rendition_dir(rendition)) {
            return Ok(());
        }
        match o {
            Finished::Init { bytes, info } => {
                let key = |v| format!("{}/{}/init{v}.mp4", self.dir, rendition_dir(rendition));
                let r = self.meta.renditions.entry(rendition.into()).or_default();
                let v = r.init + 1;
                let len = bytes.len() as u64;
                put(&self.storage.objects, &key(v), bytes).await?;
                r.init = v;
                r.codecs = info.codecs;
                r.resolution = info.resolution;
                self.meta.bytes += len;
            }
            Finished::Segment {
                bytes: data,
                duration,
                discontinuity,
                ..
            } => {
                let Some(r) = self.meta.renditions.get_mut(rendition) else {
                    return Ok(());
                };
                if r.init == 0 || data.is_empty() {
                    return Ok(());
                }
                let n = r.segments.last().map_or(0, |s| s.n + 1);
                let len = data.len() as u64;
                let objs = &self.storage.objects;
                let rdir = format!("{}/{}", self.dir, rendition_dir(rendition));
                put(objs, &format!("{rdir}/seg{n}.m4s"), data).await?;
                if duration > 0.0 {
                    r.bandwidth = r.bandwidth.max((len as f64 * 8.0 / duration) as u64);
                }
                r.segments.push(SegMeta {
                    n,
                    duration,
                    init: r.init,
                    discontinuity: discontinuity || r.discontinuity_due,
                    bytes: len,
                });
                r.discontinuity_due = false;
                self.meta.bytes += len;
                self.meta.updated_at = crate::now_ms();
                self.meta.refresh_duration();
                // Segment, then the state: a crash between them loses only the
                // segment. The `EVENT` playlist is rendered from the state when asked
                // for (recording_http), so nothing of size O(segments) is stored here.
                let index = self.meta.multivariant();
                if index != self.index {
                    put(objs, &format!("{}/index.m3u8", self.dir), index.clone()).await?;
                    self.index = index;
                }
                write_meta(objs, &self.dir, &mut self.meta).await?;
                // The size so far, at most every PROGRESS_EVERY, one call at a time.
                let due = self
                    .announced
                    .as_ref()
                    .is_none_or(|(task, at)| task.is_finished() && at.elapsed() >= PROGRESS_EVERY);
                if due {
                    let (storage, req) = (self.storage.clone(), started(&self.meta));
                    let task = tokio::spawn(async move { announce(&storage, req).await });
                    self.announced = Some((task, std::time::Instant::now()));
                }
            }
        }
        Ok(())
    }
}

fn new_id() -> String {
    format!("rec_{}", crate::random_hex(10))
}

/// Ends the recording at `dir` (`{room}/{id}`): `VOD` playlists, the MP4 download,
/// `recording.json` ended; then tells the API, and removes its `open/` marker once the
/// API has it (or its room is gone). An empty recording is deleted. Idempotent: a
/// recording already ended is only registered (if it was not).
pub async fn finalize(storage: &Storage, dir: &str) {
    let objs = &storage.objects;
    let mut meta = match read_meta(storage, dir).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, dir, "unreadable recording left as is");
            return;
        }
    };
    if meta.ended_at.is_none() {
        if let Err(e) = end(objs, dir, &mut meta).await {
            tracing::warn!(error = %e, recording_id = %meta.id, "recording not finalized; the sweep retries");
            return;
        }
    }
    if meta.top_rendition().is_none() {
        tracing::info!(recording_id = %meta.id, "empty recording deleted");
        delete(objs, dir).await;
        unmark(objs, dir).await;
        return;
    }
    if meta.registered {
        unmark(objs, dir).await;
        return;
    }
    match register(storage, &meta).await {
        Registered::Stored => {
            meta.registered = true;
            if let Err(e) = write_meta(objs, dir, &mut meta).await {
                tracing::warn!(error = %e, recording_id = %meta.id, "registration not noted (it will be repeated, harmlessly)");
            }
            unmark(objs, dir).await;
        }
        Registered::Orphan => {
            tracing::info!(recording_id = %meta.id, room_id = %meta.room, "the recording's room is gone: its files are deleted");
            delete(objs, dir).await;
            unmark(objs, dir).await;
        }
        Registered::Unknown => {}
    }
}

/// Removes the `open/` marker of the recording at `dir`: the sweep no longer looks at it.
async fn unmark(objs: &skylark_objstore::Store, dir: &str) {
    match objs.objects.delete(&Key::from(marker(dir))).await {
        Ok(()) | Err(skylark_objstore::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(error = %e, dir, "recording marker not deleted (the sweep retries)")
        }
    }
}

async fn delete(objs: &skylark_objstore::Store, dir: &str) {
    if let Err(e) = objs.delete_prefix(dir).await {
        tracing::warn!(error = %e, dir, "recording files not deleted");
    }
}

async fn end(objs: &skylark_objstore::Store, dir: &str, meta: &mut Meta) -> io::Result<()> {
    meta.ended_at = Some(crate::now_ms().max(meta.updated_at));
    for name in meta.renditions.keys() {
        if let Some(text) = meta.media_playlist(name) {
            put(
                objs,
                &format!("{dir}/{}/media.m3u8", rendition_dir(name)),
                text,
            )
            .await?;
        }
    }
    if let Some(top) = meta.top_rendition() {
        let r = &meta.renditions[top];
        if let Some((init, first, len)) = longest_run(r) {
            let rdir = format!("{dir}/{}", rendition_dir(top));
            let parts: Vec<String> = std::iter::once(format!("{rdir}/init{init}.mp4"))
                .chain(
                    r.segments[first..first + len]
                        .iter()
                        .map(|s| format!("{rdir}/seg{}.m4s", s.n)),
                )
                .collect();
            let size = concat(objs, &parts, &format!("{dir}/recording.mp4")).await?;
            meta.mp4_partial = len < r.segments.len();
            meta.bytes += size;
        }
    }
    meta.refresh_duration();
    write_meta(objs, dir, meta).await?;
    tracing::info!(recording_id = %meta.id, duration_s = meta.duration_s, "recording finalized");
    Ok(())
}

/// Writes the objects `parts`, one after the other, as the object `out` (a multipart
/// upload, so a long recording is never held in memory whole), returning its size.
async fn concat(objs: &skylark_objstore::Store, parts: &[String], out: &str) -> io::Result<u64> {
    use futures_util::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    let mut w = skylark_objstore::buffered::BufWriter::new(objs.objects.clone(), Key::from(out));
    let mut size = 0;
    let copied: Result<(), skylark_objstore::Error> = async {
        for p in parts {
            let mut chunks = objs
                .objects
                .get(&Key::from(p.as_str()))
                .await?
                .into_stream();
            while let Some(chunk) = chunks.try_next().await? {
                size += chunk.len() as u64;
                w.put(chunk).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = w.abort().await;
        return Err(io_err(e));
    }
    w.shutdown().await?;
    Ok(size)
}

/// What the API said of a finished recording.
enum Registered {
    Stored,
    /// Its room is gone (or the API refused it): nobody can list it.
    Orphan,
    /// No answer before shutdown: the sweep asks again.
    Unknown,
}

/// Calls the API until it answers (or refuses the request as invalid), retrying with
/// backoff; `None` at shutdown.
async fn call_api<T, F, Fut>(
    storage: &Storage,
    what: &str,
    id: &str,
    mut call: F,
) -> Option<Result<T, tonic::Status>>
where
    F: FnMut(Directory) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut wait = Duration::from_secs(1);
    loop {
        match call(storage.directory.clone()).await {
            Ok(r) => return Some(Ok(r.into_inner())),
            Err(e) if e.code() == tonic::Code::InvalidArgument => return Some(Err(e)),
            Err(e) => {
                tracing::warn!(error = %e, recording_id = %id, "{what} failed; retrying")
            }
        }
        tokio::select! {
            _ = storage.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// What the API is told of a recording in progress: its size so far.
fn started(meta: &Meta) -> rooms::RecordingStartedRequest {
    rooms::RecordingStartedRequest {
        recording_id: meta.id.clone(),
        room_id: meta.room.clone(),
        started_at_ms: meta.started_at,
        path: format!("{}/{}", meta.room, meta.id),
        bytes: meta.bytes as i64,
    }
}

/// Tells the API the recording is in progress (listed as `recording`) and its size,
/// retrying until it answers or shutdown; harmless when repeated or late.
async fn announce(storage: &Storage, req: rooms::RecordingStartedRequest) {
    let id = req.recording_id.clone();
    let answer = call_api(
        storage,
        "telling the API a recording started",
        &id,
        |mut c| {
            let mut call = tonic::Request::new(req.clone());
            call.set_timeout(REGISTER_TIMEOUT);
            async move { c.recording_started(call).await }
        },
    )
    .await;
    if let Some(Err(e)) = answer {
        tracing::warn!(error = %e, recording_id = %id, "API refused the recording in progress");
    }
}

/// Tells the API, retrying with backoff until it answers or shutdown.
async fn register(storage: &Storage, meta: &Meta) -> Registered {
    let req = rooms::RecordingFinishedRequest {
        recording_id: meta.id.clone(),
        room_id: meta.room.clone(),
        started_at_ms: meta.started_at,
        ended_at_ms: meta.ended_at.unwrap_or(meta.updated_at),
        duration_ms: (meta.duration_s * 1000.0).round() as i64,
        bytes: meta.bytes as i64,
        path: format!("{}/{}", meta.room, meta.id),
    };
    let answer = call_api(
        storage,
        "telling the API about a recording",
        &meta.id,
        |mut c| {
            let mut call = tonic::Request::new(req.clone());
            call.set_timeout(REGISTER_TIMEOUT);
            async move { c.recording_finished(call).await }
        },
    )
    .await;
    match answer {
        Some(Ok(r)) if r.stored => Registered::Stored,
        Some(Ok(_)) => Registered::Orphan,
        Some(Err(e)) => {
            tracing::warn!(error = %e, recording_id = %meta.id, "API refused the recording");
            Registered::Orphan
        }
        None => Registered::Unknown,
    }
}

/// At startup (after [`adopt_legacy_markers`]) and every 30 s: finalizes recordings left open (not updated for
/// [`ABANDONED_AFTER_MS`]) whose room is not live, and registers ended ones the API
/// has not acknowledged. Runs until `storage.shutdown`.
pub async fn sweep(
    storage: Storage,
    live: impl Fn(String) -> futures_util::future::BoxFuture<'static, bool>,
) {
    if let Err(e) = adopt_legacy_markers(&storage).await {
        tracing::warn!(error = %e, "old recording markers not looked for (retried at the next start)");
    }
    loop {
        sweep_once(&storage, &live).await;
        tokio::select! {
            _ = storage.shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

/// Looks at the recordings marked unfinished only (`open/`: the rooms live now, and
/// any the API has not finished), not at every recording ever made.
async fn sweep_once(
    storage: &Storage,
    live: &impl Fn(String) -> futures_util::future::BoxFuture<'static, bool>,
) {
    let Ok(dirs) = unfinished(&storage.objects, None).await else {
        return;
    };
    for dir in dirs {
        if storage.shutdown.is_cancelled() {
            return;
        }
        let meta = match read_meta(storage, &dir).await {
            Ok(m) => m,
            // Its files are gone (deleted): so goes the marker.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                unmark(&storage.objects, &dir).await;
                continue;
            }
            Err(_) => continue,
        };
        let abandoned = meta.ended_at.is_none()
            && crate::now_ms() - meta.updated_at > ABANDONED_AFTER_MS
            && !live(meta.room.clone()).await;
        if abandoned || meta.ended_at.is_some() {
            finalize(storage, &dir).await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::segmenter::StreamInfo;

    pub(crate) fn storage(root: &std::path::Path) -> Storage {
        // Nothing listens here: registration is not reached in these tests (shutdown).
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        Storage::new(
            skylark_objstore::local(root.to_path_buf()).unwrap(),
            crate::access::directory_client("http://127.0.0.1:9").unwrap(),
            shutdown,
        )
    }

    fn init(codecs: &str) -> Finished {
        Finished::Init {
            bytes: Bytes::from_static(b"INIT"),
            info: StreamInfo {
                codecs: codecs.into(),
                resolution: Some((640, 360)),
                bandwidth: 0,
            },
        }
    }

    async fn segment(w: &mut Writer, msn: u64) {
        let seg = Finished::Segment {
            msn,
            bytes: Bytes::from_static(b"abcd"),
            duration: 2.0,
            discontinuity: false,
        };
        w.apply("", seg).await.unwrap();
    }

    /// The recorder gets the segment the live HLS store assembled: the very same
    /// bytes (one allocation, shared), not a second concatenation of the parts.
    #[test]
    fn the_recorder_takes_the_stores_segment_bytes_not_a_copy() {
        use crate::segmenter::SegOutput;
        let hls = crate::store::RoomHls::new(Duration::from_secs(2), Duration::from_secs(1));
        let (tx, mut rx) = mpsc::channel(4);
        let mut rec = Recorder {
            tx,
            gap: false,
            room: "room_p".into(),
            inits: HashMap::new(),
        };
        let Finished::Init { bytes, info } = init("avc1.42e01f") else {
            unreachable!()
        };
        let part = |b: &'static [u8], discontinuity| SegOutput::Part {
            msn: 0,
            bytes: Bytes::from_static(b),
            duration: 1.0,
            independent: true,
            pdt_ms: 0,
            discontinuity,
        };
        let out = vec![
            SegOutput::Init {
                bytes,
                info,
                discontinuity: false,
            },
            part(b"ab", true),
            part(b"cd", false),
            SegOutput::SegmentDone {
                msn: 0,
                duration: 2.0,
            },
        ];
        rec.feed(hls.apply(out.into_iter().map(|o| (String::new(), o)).collect()));
        let Ok(Msg::Out { out, gap: false }) = rx.try_recv() else {
            panic!("nothing queued");
        };
        let served = hls.segment("", 0).expect("the store serves segment 0");
        let recorded: Vec<_> = out
            .iter()
            .filter_map(|(_, o)| match o {
                Finished::Segment {
                    msn,
                    bytes,
                    discontinuity,
                    ..
                } => Some((*msn, bytes.clone(), *discontinuity)),
                Finished::Init { .. } => None,
            })
            .collect();
        assert_eq!(recorded.len(), 1);
        let (msn, bytes, discontinuity) = &recorded[0];
        assert_eq!((*msn, &bytes[..], *discontinuity), (0, &b"abcd"[..], true));
        assert_eq!(
            bytes.as_ptr(),
            served.as_ptr(),
            "a copy, not the store's bytes"
        );
        assert!(matches!(out[0].1, Finished::Init { .. }), "the init first");
    }

    #[tokio::test]
    async fn segments_playlists_continuation_and_finalize() {
        let tmp = tempfile::tempdir().unwrap();
        let st = storage(tmp.path());
        let mut w = Writer::open(st.clone(), "room_a").await.unwrap();
        w.apply("", init("avc1.42e01f,mp4a.40.2")).await.unwrap();
        segment(&mut w, 0).await;
        segment(&mut w, 1).await;
        let key = w.dir.clone();
        let dir = tmp.path().join(&key);
        let id = w.meta.id.clone();
        assert_eq!(std::fs::read(dir.join("main/seg1.m4s")).unwrap(), b"abcd");
        let media = w.meta.media_playlist("").unwrap();
        assert!(media.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{media}");
        assert!(!media.contains("ENDLIST"));
        assert!(!dir.join("main/seg2.m4s").exists());
        let index = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
        assert!(index.contains("main/media.m3u8"), "{index}");
        drop(w);

        // Another packager takes over: same recording, numbers continue, discontinuity.
        let mut w = Writer::open(st.clone(), "room_a").await.unwrap();
        assert_eq!(w.meta.id, id);
        w.apply("", init("avc1.42e01f,mp4a.40.2")).await.unwrap();
        segment(&mut w, 0).await;
        let media = read_meta(&st, &key)
            .await
            .unwrap()
            .media_playlist("")
            .unwrap();
        assert!(
            media.ends_with("seg1.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n#EXTINF:2.00000,\nseg2.m4s\n"),
            "{media}"
        );

        finalize(&st, &key).await;
        let meta = read_meta(&st, &key).await.unwrap();
        assert!(meta.ended_at.is_some());
        assert_eq!(meta.duration_s, 6.0);
        // The download is the longest run with one init (segments 0 and 1).
        assert!(meta.mp4_partial);
        assert_eq!(
            std::fs::read(dir.join("recording.mp4")).unwrap(),
            b"INITabcdabcd"
        );
        let media = std::fs::read_to_string(dir.join("main/media.m3u8")).unwrap();
        assert!(media.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(media.ends_with("#EXT-X-ENDLIST\n"));
        // Marked unfinished until the API has it (nothing answers here).
        assert!(tmp.path().join(format!("open/room_a/{id}")).exists());
        let found = st.find(&id).await.unwrap();
        assert!(found.is_some_and(|(room, _)| room == "room_a"));

        // The next stream starts a new recording.
        let w = Writer::open(st.clone(), "room_a").await.unwrap();
        assert_ne!(w.meta.id, id);
    }

    #[tokio::test]
    async fn a_stale_open_recording_is_finalized_not_continued() {
        let tmp = tempfile::tempdir().unwrap();
        let st = storage(tmp.path());
        let mut w = Writer::open(st.clone(), "room_b").await.unwrap();
        w.apply("", init("avc1.42e01f")).await.unwrap();
        segment(&mut w, 0).await;
        w.meta.updated_at -= CONTINUE_WITHIN_MS + 1000;
        write_meta(&w.storage.objects, &w.dir, &mut w.meta)
            .await
            .unwrap();
        let (old, old_dir) = (w.meta.id.clone(), w.dir.clone());
        drop(w);
        let w = Writer::open(st.clone(), "room_b").await.unwrap();
        assert_ne!(w.meta.id, old);
        let old_meta = read_meta(&st, &old_dir).await.unwrap();
        assert!(old_meta.ended_at.is_some());
    }

    #[tokio::test]
    async fn after_a_gap_the_next_segment_follows_a_discontinuity_with_the_init_again() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Writer::open(storage(tmp.path()), "room_c").await.unwrap();
        w.out(vec![("".into(), init("avc1.42e01f"))], false).await;
        segment(&mut w, 0).await;
        // Batches were dropped (segment 1 with them): the init comes again, then 2.
        let rest = vec![
            ("".into(), init("avc1.42e01f")),
            (
                "".into(),
                Finished::Segment {
                    msn: 2,
                    bytes: Bytes::from_static(b"efgh"),
                    duration: 2.0,
                    discontinuity: false,
                },
            ),
        ];
        w.out(rest, true).await;
        segment(&mut w, 3).await;
        let r = &w.meta.renditions[""];
        let written: Vec<(u64, bool)> = r.segments.iter().map(|s| (s.n, s.discontinuity)).collect();
        assert_eq!(
            written,
            [(0, false), (1, true), (2, false)],
            "segment 2 written as seg1, after a discontinuity"
        );
        let seg1 = tmp.path().join(&w.dir).join("main/seg1.m4s");
        assert_eq!(std::fs::read(seg1).unwrap(), b"efgh");
        assert_eq!(r.segments[1].init, 2, "the init sent again after the gap");
    }

    #[tokio::test]
    async fn the_segment_list_is_stored_in_sealed_chunks_and_read_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let st = storage(tmp.path());
        let mut w = Writer::open(st.clone(), "room_d").await.unwrap();
        w.apply("", init("avc1.42e01f")).await.unwrap();
        for msn in 0..(2 * CHUNK as u64 + 5) {
            segment(&mut w, msn).await;
        }
        let dir = tmp.path().join(&w.dir);
        let stored: Meta =
            serde_json::from_slice(&std::fs::read(dir.join("recording.json")).unwrap()).unwrap();
        assert_eq!(stored.renditions[""].sealed, 2);
        assert_eq!(stored.renditions[""].segments.len(), 5, "only the tail");
        assert!(dir.join("main/segments-1.json").exists());
        let back = read_meta(&st, &w.dir).await.unwrap();
        assert_eq!(back, w.meta);
        assert_eq!(back.renditions[""].segments.len(), 2 * CHUNK + 5);
        assert_eq!(back.renditions[""].segments[CHUNK + 3].n, CHUNK as u64 + 3);
    }

    /// Bytes of state stored over an hour of 2 s segments: what is stored now
    /// (`recording.json` with the tail, each sealed chunk once) against what rewriting the
    /// whole list and playlist at every segment stored. Figures: docs/benchmarks.md.
    #[tokio::test]
    async fn state_stored_per_segment_does_not_grow_with_the_recording() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Writer::open(storage(tmp.path()), "room_e").await.unwrap();
        w.apply("", init("avc1.42e01f")).await.unwrap();
        let dir = tmp.path().join(&w.dir);
        let (mut now, mut whole, mut last) = (0u64, 0u64, 0u64);
        for msn in 0..1800 {
            segment(&mut w, msn).await;
            let state = std::fs::metadata(dir.join("recording.json")).unwrap().len();
            let sealed = w.meta.renditions[""].sealed;
            if msn as usize + 1 == sealed as usize * CHUNK {
                let chunk = dir.join(format!("main/segments-{}.json", sealed - 1));
                now += std::fs::metadata(chunk).unwrap().len();
            }
            now += state;
            last = state;
            whole += serde_json::to_vec(&w.meta).unwrap().len() as u64
                + w.meta.media_playlist("").unwrap().len() as u64;
        }
        println!("1800 segments: {now} bytes of state stored, {whole} if rewritten whole; recording.json at the end {last} bytes");
        assert!(last < 64 * 1024, "recording.json grows: {last} bytes");
        assert!(now * 20 < whole, "{now} vs {whole}");
    }

    /// The store's requests, counted: GETs and HEADs (`get_opts`) and lists; and the
    /// next put of a key ending in `refuse_put`, refused (a failed write).
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn ObjectStore>,
        reads: std::sync::atomic::AtomicUsize,
        lists: std::sync::atomic::AtomicUsize,
        refuse_put: Mutex<Option<String>>,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "counting {}", self.inner)
        }
    }

    impl Counting {
        /// (reads, lists) since the last call.
        fn take(&self) -> (usize, usize) {
            use std::sync::atomic::Ordering::Relaxed;
            (self.reads.swap(0, Relaxed), self.lists.swap(0, Relaxed))
        }
        fn read(&self) {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn listed(&self) {
            self.lists
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[async_trait::async_trait]
    #[deny(clippy::missing_trait_methods)]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Key,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            // Taken (and put back unless it matches) so no guard lives across the await.
            let refuse = self.refuse_put.lock().unwrap().take();
            match refuse {
                Some(k) if location.as_ref().ends_with(k.as_str()) => {
                    return Err(object_store::Error::Generic {
                        store: "test",
                        source: "write refused".into(),
                    });
                }
                other => *self.refuse_put.lock().unwrap() = other,
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Key,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Key,
            options: skylark_objstore::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.read();
            self.inner.get_opts(location, options).await
        }
        async fn get_ranges(
            &self,
            location: &Key,
            ranges: &[std::ops::Range<u64>],
        ) -> object_store::Result<Vec<Bytes>> {
            self.read();
            self.inner.get_ranges(location, ranges).await
        }
        fn delete_stream(
            &self,
            locations: futures_util::stream::BoxStream<'static, object_store::Result<Key>>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<Key>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Key>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.listed();
            self.inner.list(prefix)
        }
        fn list_with_offset(
            &self,
            prefix: Option<&Key>,
            offset: &Key,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.listed();
            self.inner.list_with_offset(prefix, offset)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Key>,
        ) -> object_store::Result<object_store::ListResult> {
            self.listed();
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Key,
            to: &Key,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
        async fn rename_opts(
            &self,
            from: &Key,
            to: &Key,
            options: object_store::RenameOptions,
        ) -> object_store::Result<()> {
            self.inner.rename_opts(from, to, options).await
        }
    }

    /// [`storage`] with its requests counted.
    fn counted(root: &std::path::Path) -> (Storage, Arc<Counting>) {
        let counting = Arc::new(Counting {
            inner: skylark_objstore::local(root.to_path_buf()).unwrap().objects,
            reads: Default::default(),
            lists: Default::default(),
            refuse_put: Mutex::default(),
        });
        let mut st = storage(root);
        st.objects.objects = counting.clone();
        (st, counting)
    }

    /// While recording, a media playlist request reads `recording.json` (and the
    /// 404 of a stored `media.m3u8`), not every sealed chunk of the segment list: those
    /// never change, and the packager keeps them. Figures: docs/benchmarks.md.
    #[tokio::test]
    async fn an_event_playlist_request_does_not_read_every_sealed_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let (st, counting) = counted(tmp.path());
        let mut w = Writer::open(st.clone(), "room_f").await.unwrap();
        w.apply("", init("avc1.42e01f")).await.unwrap();
        let n = 10 * CHUNK as u64 + 5;
        for msn in 0..n {
            segment(&mut w, msn).await;
        }
        let id = w.meta.id.clone();
        let ask = || async {
            let r = crate::recording_http::serve(
                &st,
                &id,
                Some("main"),
                "media.m3u8",
                &axum::http::HeaderMap::new(),
            )
            .await;
            assert_eq!(r.status(), 200);
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            String::from_utf8(body.to_vec()).unwrap()
        };
        counting.take();
        let first = ask().await;
        assert!(first.contains(&format!("seg{}.m4s", n - 1)), "{first}");
        assert_eq!(first.matches("#EXTINF").count(), n as usize);
        let cold = counting.take();
        segment(&mut w, n).await;
        counting.take();
        let second = ask().await;
        assert!(second.contains(&format!("seg{n}.m4s")), "{second}");
        let warm = counting.take();
        println!(
            "EVENT playlist of {} segments: first request {} reads + {} lists, next {} reads + {} lists",
            n + 1,
            cold.0,
            cold.1,
            warm.0,
            warm.1
        );
        assert_eq!(warm, (2, 0), "reads, lists per request");
    }

    /// The sweep reads the recordings marked unfinished, not every recording of every
    /// room: here two finished ones (registered) and one left open.
    #[tokio::test]
    async fn the_sweep_looks_only_at_unfinished_recordings() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut st, counting) = counted(tmp.path());
        for room in ["room_g", "room_h"] {
            let mut w = Writer::open(st.clone(), room).await.unwrap();
            w.apply("", init("avc1.42e01f")).await.unwrap();
            segment(&mut w, 0).await;
            finalize(&st, &w.dir).await;
            // As if the API had acknowledged it.
            w.meta = read_meta(&st, &w.dir).await.unwrap();
            w.meta.registered = true;
            write_meta(&st.objects, &w.dir, &mut w.meta).await.unwrap();
            finalize(&st, &w.dir).await;
        }
        let mut w = Writer::open(st.clone(), "room_i").await.unwrap();
        w.apply("", init("avc1.42e01f")).await.unwrap();
        segment(&mut w, 0).await;
        let live = |_room: String| -> futures_util::future::BoxFuture<'static, bool> {
            Box::pin(async { true })
        };
        // Running (the sweep stops at shutdown); the open room is live: nothing to call.
        st.shutdown = CancellationToken::new();
        counting.take();
        sweep_once(&st, &live).await;
        let (reads, lists) = counting.take();
        assert_eq!(
            (reads, lists),
            (1, 1),
            "one list of open/, one recording.json"
        );
        assert!(tmp.path().join(format!("open/{}", w.dir)).exists());
        assert!(!tmp.path().join("open/room_g").exists());
    }

    /// Sizes of the media files stored under `dir` (inits, segments, the MP4).
    fn media_bytes(dir: &std::path::Path) -> u64 {
        let mut total = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                total += media_bytes(&p);
            } else if p.extension().is_some_and(|x| x == "mp4" || x == "m4s") {
                total += p.metadata().unwrap().len();
            }
        }
        total
    }

    /// A segment the store refused is not in the recording's size: what the API hears,
    /// while recording and when finished, is what was stored.
    #[tokio::test]
    async fn a_segment_the_store_refused_is_not_counted_in_the_size() {
        let tmp = tempfile::tempdir().unwrap();
        let (st, counting) = counted(tmp.path());
        let mut w = Writer::open(st.clone(), "room_m").await.unwrap();
        w.out(vec![("".into(), init("avc1.42e01f"))], false).await;
        *counting.refuse_put.lock().unwrap() = Some("/seg1.m4s".into());
        for msn in 0..3 {
            let seg = Finished::Segment {
                msn,
                bytes: Bytes::from(vec![7; 1000 + msn as usize]),
                duration: 2.0,
                discontinuity: false,
            };
            w.out(vec![("".into(), seg)], false).await;
        }
        assert!(
            counting.refuse_put.lock().unwrap().is_none(),
            "no write was refused"
        );
        let dir = tmp.path().join(&w.dir);
        // Segments 0 and 2 of the stream (1000 and 1002 bytes) and the init (4); the
        // second follows the lost one.
        let segs = &w.meta.renditions[""].segments;
        assert_eq!(
            segs.iter()
                .map(|s| (s.bytes, s.discontinuity))
                .collect::<Vec<_>>(),
            [(1000, false), (1002, true)]
        );
        assert_eq!(media_bytes(&dir), 2006);
        assert_eq!(started(&w.meta).bytes, 2006);
        finalize(&st, &w.dir).await;
        let meta = read_meta(&st, &w.dir).await.unwrap();
        // The MP4 (init and both segments) is stored and counted too.
        assert_eq!(media_bytes(&dir), 2 * 2006);
        assert_eq!(meta.bytes, 2 * 2006);
    }

    /// A recording marked open the old way (`{room}/current`, before `open/` markers):
    /// the room's next packager continues it.
    #[tokio::test]
    async fn a_recording_marked_the_old_way_is_continued() {
        let tmp = tempfile::tempdir().unwrap();
        let st = storage(tmp.path());
        let mut w = Writer::open(st.clone(), "room_n").await.unwrap();
        w.apply("", init("avc1.42e01f")).await.unwrap();
        segment(&mut w, 0).await;
        let id = w.meta.id.clone();
        std::fs::remove_file(tmp.path().join(format!("open/{}", w.dir))).unwrap();
        std::fs::write(tmp.path().join("room_n/current"), &id).unwrap();
        drop(w);
        let w = Writer::open(st.clone(), "room_n").await.unwrap();
        assert_eq!(w.meta.id, id);
        assert!(tmp.path().join(format!("open/room_n/{id}")).exists());
        assert!(!tmp.path().join("room_n/current").exists());
    }

    /// A recording a packager left open the old way, its room offline: the sweep run at
    /// start-up finalizes it (and keeps it marked until the API has it).
    #[tokio::test]
    async fn the_start_up_sweep_finalizes_a_recording_marked_the_old_way() {
        let tmp = tempfile::tempdir().unwrap();
        let mut st = storage(tmp.path());
        let mut w = Writer::open(st.clone(), "room_o").await.unwrap();
        w.apply("", init("avc1.42e01f")).await.unwrap();
        segment(&mut w, 0).await;
        w.meta.updated_at -= ABANDONED_AFTER_MS + 1000;
        write_meta(&st.objects, &w.dir, &mut w.meta).await.unwrap();
        let (id, dir) = (w.meta.id.clone(), w.dir.clone());
        std::fs::remove_file(tmp.path().join(format!("open/{dir}"))).unwrap();
        std::fs::write(tmp.path().join("room_o/current"), format!("{id}\n")).unwrap();
        // Another room's `current` naming nothing valid is dropped, nothing marked.
        std::fs::create_dir_all(tmp.path().join("room_p")).unwrap();
        std::fs::write(tmp.path().join("room_p/current"), "../x").unwrap();
        drop(w);

        // Running (the sweep stops at shutdown); nothing answers for the API, so the
        // sweep finalizes the files, then keeps asking the API until stopped.
        st.shutdown = CancellationToken::new();
        let offline = |_room: String| -> futures_util::future::BoxFuture<'static, bool> {
            Box::pin(async { false })
        };
        let sweeping = tokio::spawn(sweep(st.clone(), offline));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while read_meta(&st, &dir).await.unwrap().ended_at.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not finalized by the sweep"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        st.shutdown.cancel();
        sweeping.await.unwrap();
        assert!(tmp.path().join(format!("{dir}/recording.mp4")).exists());
        assert!(tmp.path().join(format!("open/{dir}")).exists());
        assert!(!tmp.path().join("room_o/current").exists());
        assert!(!tmp.path().join("room_p/current").exists());
        assert!(!tmp.path().join("open/room_p").exists());
    }

    /// Start-up looks for old markers by listing the rooms until a start finds none left;
    /// later starts read one object instead of listing the store.
    #[tokio::test]
    async fn old_markers_are_listed_for_until_none_is_left_then_never_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut st, counting) = counted(tmp.path());
        // Running: a pass cut short by shutdown marks nothing done.
        st.shutdown = CancellationToken::new();
        std::fs::create_dir_all(tmp.path().join("room_q")).unwrap();
        std::fs::write(tmp.path().join("room_q/current"), "rec_1").unwrap();
        adopt_legacy_markers(&st).await.unwrap();
        assert!(tmp.path().join("open/room_q/rec_1").exists());
        assert_eq!(counting.take().1, 1, "the first start lists the rooms");
        // It converted one: an older packager may still mark the old way, look again.
        adopt_legacy_markers(&st).await.unwrap();
        assert_eq!(counting.take().1, 1, "the second start lists the rooms");
        for start in 3..6 {
            adopt_legacy_markers(&st).await.unwrap();
            assert_eq!(counting.take(), (1, 0), "start {start}: reads, lists");
        }
        // Deleting the flag (as docs/operators.md says) makes the next start look again.
        std::fs::remove_file(tmp.path().join(LEGACY_ADOPTED)).unwrap();
        // (The directory went with the converted marker: the store removes empty ones.)
        std::fs::create_dir_all(tmp.path().join("room_q")).unwrap();
        std::fs::write(tmp.path().join("room_q/current"), "rec_2").unwrap();
        adopt_legacy_markers(&st).await.unwrap();
        assert_eq!(counting.take().1, 1);
        assert!(tmp.path().join("open/room_q/rec_2").exists());
    }

    #[test]
    fn longest_run_of_one_init() {
        let seg = |n, init| SegMeta {
            n,
            duration: 1.0,
            init,
            discontinuity: false,
            bytes: 1,
        };
        let r = RenditionMeta {
            segments: vec![seg(0, 1), seg(1, 2), seg(2, 2), seg(3, 1)],
            ..RenditionMeta::default()
        };
        assert_eq!(longest_run(&r), Some((2, 1, 2)));
        assert_eq!(longest_run(&RenditionMeta::default()), None);
    }
}
