//! Recordings: while a room with `record` set is live, the room worker hands the
//! segments the live HLS store completed (their bytes, shared: [`Finished`]) and the
//! inits to a [`Recorder`], whose writer task (all storage I/O off the worker) writes
//! each segment, the inits and the state
//! (`recording.json`, its segment lists sealed in chunks of [`CHUNK`]: storing it is
//! O(1) per segment) under `{room}/{id}/` of the recordings store (a directory or
//! S3-compatible object storage, [`skylark_objstore`]); the `EVENT` playlists are
//! rendered from the state when asked for. `{room}/current`
//! names the open recording, so a packager taking the room over continues it after a
//! discontinuity. When the stream ends the recording is finalized (`VOD` playlists, one
//! fragmented MP4) and the API is told (`RecordingFinished`, retried until answered).
//! A [`sweep`] finalizes recordings a dead packager left open.

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
/// sealed chunks of its segment lists.
pub async fn read_meta(store: &skylark_objstore::Store, dir: &str) -> io::Result<Meta> {
    let text = get(store, &format!("{dir}/recording.json"), MAX_META).await?;
    let mut meta: Meta = serde_json::from_slice(&text).map_err(io::Error::other)?;
    for (name, r) in meta.renditions.iter_mut() {
        if r.sealed == 0 {
            continue;
        }
        let mut all = Vec::with_capacity(r.sealed as usize * CHUNK + r.segments.len());
        for k in 0..r.sealed {
            let chunk = get(store, &chunk_key(dir, name, k), MAX_META).await?;
            let segs: Vec<SegMeta> = serde_json::from_slice(&chunk).map_err(io::Error::other)?;
            all.extend(segs);
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
    /// Recording id → room, so serving a recording's files does not list every room.
    pub rooms_of: Arc<Mutex<HashMap<String, String>>>,
}

/// Recordings whose room [`Storage::find`] remembers.
const MAX_REMEMBERED: usize = 10_000;

impl Storage {
    /// The room of recording `id` and where it is: `{room}/{id}`.
    pub async fn find(&self, id: &str) -> Option<(String, String)> {
        if !safe_name(id) {
            return None;
        }
        let exists = |dir: String| async move {
            self.objects
                .objects
                .head(&Key::from(format!("{dir}/recording.json")))
                .await
                .is_ok()
        };
        let known = self.remembered().get(id).cloned();
        if let Some(room) = known {
            let dir = format!("{room}/{id}");
            if exists(dir.clone()).await {
                return Some((room, dir));
            }
            self.remembered().remove(id);
        }
        let rooms = self.objects.objects.list_with_delimiter(None).await.ok()?;
        for room in rooms.common_prefixes {
            let Some(room) = room.filename().filter(|r| safe_name(r)) else {
                continue;
            };
            let dir = format!("{room}/{id}");
            if exists(dir.clone()).await {
                let mut remembered = self.remembered();
                if remembered.len() >= MAX_REMEMBERED {
                    remembered.clear();
                }
                remembered.insert(id.to_string(), room.to_string());
                return Some((room.to_string(), dir));
            }
        }
        None
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.rooms_of.lock().unwrap_or_else(|p| p.into_inner())
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
        }
    }
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
    /// The API was asked to list the recording as in progress (`RecordingStarted`)
    /// by this writer: at its first segment, so an empty recording is never listed.
    /// Stopped when the recording ends, so a late call cannot list it again.
    announced: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    async fn open(storage: Storage, room: &str) -> io::Result<Self> {
        let objs = &storage.objects;
        if let Some((dir, mut meta)) = current(objs, room).await {
            if meta.ended_at.is_none() && crate::now_ms() - meta.updated_at < CONTINUE_WITHIN_MS {
                tracing::info!(room_id = %room, recording_id = %meta.id, "continuing the room's recording after a discontinuity");
                for r in meta.renditions.values_mut() {
                    r.discontinuity_due = true;
                }
                return Ok(Self {
                    storage,
                    dir,
                    meta,
                    index: String::new(),
                    announced: None,
                });
            }
            // Stale: end it here (files only), tell the API in the background.
            if meta.ended_at.is_none() {
                if let Err(e) = end(objs, &dir, &mut meta).await {
                    tracing::warn!(error = %e, recording_id = %meta.id, "stale recording not finalized; the sweep retries");
                }
            }
            let st = storage.clone();
            tokio::spawn(async move { finalize(&st, &dir).await });
        }
        let id = new_id();
        let dir = format!("{room}/{id}");
        let mut meta = Meta::new(room, &id, crate::now_ms());
        write_meta(objs, &dir, &mut meta).await?;
        put(objs, &format!("{room}/current"), id.clone()).await?;
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
                    if let Some(a) = self.announced.take() {
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
            if let Err(e) = self.apply(&r, o).await {
                metrics::counter!("skylark_recording_write_errors_total").increment(1);
                tracing::warn!(error = %e, recording_id = %self.meta.id, rendition = %r, ?msn, "recording write failed; the segment is lost");
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
                if self.announced.is_none() {
                    let (storage, meta) = (self.storage.clone(), self.meta.clone());
                    self.announced =
                        Some(tokio::spawn(async move { announce(&storage, &meta).await }));
                }
            }
        }
        Ok(())
    }
}

/// The room's open recording, as `{room}/current` names it: (`{room}/{id}`, its state).
async fn current(objs: &skylark_objstore::Store, room: &str) -> Option<(String, Meta)> {
    let id = get(objs, &format!("{room}/current"), 256).await.ok()?;
    let id = std::str::from_utf8(&id).ok()?.trim();
    if !safe_name(id) {
        return None;
    }
    let dir = format!("{room}/{id}");
    let meta = read_meta(objs, &dir).await.ok()?;
    Some((dir, meta))
}

fn new_id() -> String {
    format!("rec_{}", crate::random_hex(10))
}

/// Ends the recording at `dir` (`{room}/{id}`): `VOD` playlists, the MP4 download,
/// `recording.json` ended, `current` removed; then tells the API. An empty recording is
/// deleted. Idempotent: a recording already ended is only registered (if it was not).
pub async fn finalize(storage: &Storage, dir: &str) {
    let objs = &storage.objects;
    let mut meta = match read_meta(objs, dir).await {
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
        return;
    }
    if meta.registered {
        return;
    }
    match register(storage, &meta).await {
        Registered::Stored => {
            meta.registered = true;
            if let Err(e) = write_meta(objs, dir, &mut meta).await {
                tracing::warn!(error = %e, recording_id = %meta.id, "registration not noted (it will be repeated, harmlessly)");
            }
        }
        Registered::Orphan => {
            tracing::info!(recording_id = %meta.id, room_id = %meta.room, "the recording's room is gone: its files are deleted");
            delete(objs, dir).await;
        }
        Registered::Unknown => {}
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
    if let Some((cur, _)) = current(objs, &meta.room).await {
        if cur == dir {
            objs.objects
                .delete(&Key::from(format!("{}/current", meta.room)))
                .await
                .map_err(io_err)?;
        }
    }
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

/// Tells the API the recording is in progress (listed as `recording`), retrying until
/// it answers or shutdown; harmless when repeated or late.
async fn announce(storage: &Storage, meta: &Meta) {
    let req = rooms::RecordingStartedRequest {
        recording_id: meta.id.clone(),
        room_id: meta.room.clone(),
        started_at_ms: meta.started_at,
        path: format!("{}/{}", meta.room, meta.id),
    };
    let answer = call_api(
        storage,
        "telling the API a recording started",
        &meta.id,
        |mut c| {
            let mut call = tonic::Request::new(req.clone());
            call.set_timeout(REGISTER_TIMEOUT);
            async move { c.recording_started(call).await }
        },
    )
    .await;
    if let Some(Err(e)) = answer {
        tracing::warn!(error = %e, recording_id = %meta.id, "API refused the recording in progress");
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

/// At startup and every 30 s: finalizes recordings left open (not updated for
/// [`ABANDONED_AFTER_MS`]) whose room is not live, and registers ended ones the API
/// has not acknowledged. Runs until `storage.shutdown`.
pub async fn sweep(
    storage: Storage,
    live: impl Fn(String) -> futures_util::future::BoxFuture<'static, bool>,
) {
    loop {
        sweep_once(&storage, &live).await;
        tokio::select! {
            _ = storage.shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

async fn sweep_once(
    storage: &Storage,
    live: &impl Fn(String) -> futures_util::future::BoxFuture<'static, bool>,
) {
    let objs = &storage.objects.objects;
    let Ok(rooms) = objs.list_with_delimiter(None).await else {
        return;
    };
    for room in rooms.common_prefixes {
        let Some(name) = room.filename().filter(|r| safe_name(r)).map(str::to_string) else {
            continue;
        };
        let Ok(recs) = objs.list_with_delimiter(Some(&room)).await else {
            continue;
        };
        for rec in recs.common_prefixes {
            if storage.shutdown.is_cancelled() {
                return;
            }
            let dir = rec.as_ref();
            let Ok(meta) = read_meta(&storage.objects, dir).await else {
                continue;
            };
            let abandoned = meta.ended_at.is_none()
                && crate::now_ms() - meta.updated_at > ABANDONED_AFTER_MS
                && !live(name.clone()).await;
            if abandoned || (meta.ended_at.is_some() && !meta.registered) {
                finalize(storage, dir).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segmenter::StreamInfo;

    fn storage(root: &std::path::Path) -> Storage {
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
            SegOutput::Init { bytes, info },
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
        let media = read_meta(&st.objects, &key)
            .await
            .unwrap()
            .media_playlist("")
            .unwrap();
        assert!(
            media.ends_with("seg1.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n#EXTINF:2.00000,\nseg2.m4s\n"),
            "{media}"
        );

        finalize(&st, &key).await;
        let meta = read_meta(&st.objects, &key).await.unwrap();
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
        assert!(!tmp.path().join("room_a/current").exists());
        assert!(st.find(&id).await.is_some_and(|(room, _)| room == "room_a"));

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
        let old_meta = read_meta(&st.objects, &old_dir).await.unwrap();
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
        let back = read_meta(&st.objects, &w.dir).await.unwrap();
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
