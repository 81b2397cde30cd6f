//! HTTP-FLV and WebSocket-FLV playback (`/flv/{room}.flv`): the room's frames as one
//! live FLV stream per viewer, starting at a keyframe: the room's latest one, from its
//! GOP cache, so a viewer starts at once rather than at the encoder's next keyframe (as
//! SRS's `gop_cache`). H.264 as AVC tags; audio as AAC when the source sent AAC (RTMP),
//! else Opus in Enhanced-FLV tags. A viewer that can't keep up is dropped rather than
//! buffered without bound.

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use skylark_media::flv::{self, OpusHead};
use skylark_media::gop::{GopCache, GopLimits};
use skylark_media::h264::{self, AvcDecoderConfigurationRecord};
use skylark_proto::sfu::v1 as pb;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// Tags buffered per room for slow viewers (~10 s of 30 fps video with audio): a viewer
/// further behind is dropped.
const FEED_CAPACITY: usize = 1024;

/// One FLV tag body with its type and time.
#[derive(Debug)]
pub struct Item {
    tag_type: u8,
    ts_ms: u32,
    body: Vec<u8>,
    keyframe: bool,
}

#[derive(Default, Clone)]
struct Config {
    avc: Option<Vec<u8>>,
    audio: Option<Vec<u8>>,
}

/// What a joining viewer is sent before live tags: sequence headers and the latest GOP.
struct Cached {
    config: Config,
    gop: GopCache<Arc<Item>>,
}

/// A room's FLV feed: sequence headers and the latest GOP for late joiners, and a
/// broadcast of tags.
pub struct FlvFeed {
    tx: broadcast::Sender<Arc<Item>>,
    /// Tags are broadcast under this lock, and viewers subscribe under it: a joiner's
    /// cached GOP and its first live tag meet with no tag lost or repeated.
    cached: Mutex<Cached>,
}

impl Default for FlvFeed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(FEED_CAPACITY).0,
            cached: Mutex::new(Cached {
                config: Config::default(),
                gop: GopCache::new(GopLimits::default()),
            }),
        }
    }
}

impl FlvFeed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, item: Item) {
        let item = Arc::new(item);
        let mut c = self.lock();
        c.gop.push(
            item.clone(),
            item.body.len(),
            u64::from(item.ts_ms),
            item.keyframe,
        );
        // No receivers is fine: nobody watches over FLV right now.
        let _ = self.tx.send(item);
    }

    fn set_config(&self, f: impl FnOnce(&mut Config)) {
        f(&mut self.lock().config);
    }

    /// Frames were lost upstream or the publisher changed: the GOP can't be decoded.
    fn forget_gop(&self) {
        self.lock().gop.clear();
    }
}

/// Per-track timing: RTP time to milliseconds on a timeline shared by both tracks.
#[derive(Default, Clone, Copy)]
struct Clock {
    first_rtp: u64,
    first_ms: u64,
}

/// Turns relay frames into FLV tags (sans-IO apart from the broadcast it writes to).
#[derive(Default)]
pub struct FlvMuxer {
    video: Option<String>,
    aac: Option<String>,
    opus: Option<String>,
    video_clock: Option<Clock>,
    audio_clock: Option<Clock>,
    /// Wall clock (µs) of this epoch's first frame, and the FLV time it maps to.
    epoch: Option<(u64, u64)>,
    last_ms: u64,
    sps_pps: Option<(Vec<u8>, Vec<u8>)>,
}

impl FlvMuxer {
    pub fn add_track(&mut self, t: &pb::TrackInfo, feed: &FlvFeed) {
        match (t.kind, t.codec.as_str()) {
            (k, "H264") if k == pb::TrackKind::Video as i32 && self.video.is_none() => {
                self.video = Some(t.track_id.clone())
            }
            (k, "aac") if k == pb::TrackKind::Audio as i32 => {
                if let Some(asc) = crate::track::aac_config(t) {
                    if let Ok(body) = flv::aac_sequence_header(&asc) {
                        feed.set_config(|c| c.audio = Some(body));
                    }
                }
                self.aac = Some(t.track_id.clone());
            }
            (k, "opus") if k == pb::TrackKind::Audio as i32 && self.opus.is_none() => {
                self.opus = Some(t.track_id.clone());
            }
            _ => {}
        }
    }

    /// A new publisher: timestamps restart, tracks are announced again.
    pub fn reset(&mut self, feed: &FlvFeed) {
        feed.forget_gop();
        *self = Self {
            last_ms: self.last_ms + 40,
            ..Self::default()
        };
    }

    fn ms(&mut self, video: bool, rtp: u64, clock_rate: u64, received_us: u64) -> u32 {
        let (epoch_us, epoch_ms) = *self.epoch.get_or_insert((received_us, self.last_ms));
        let slot = if video {
            &mut self.video_clock
        } else {
            &mut self.audio_clock
        };
        let clock = *slot.get_or_insert_with(|| Clock {
            first_rtp: rtp,
            first_ms: epoch_ms + received_us.saturating_sub(epoch_us) / 1000,
        });
        let ms = clock.first_ms + rtp.saturating_sub(clock.first_rtp) * 1000 / clock_rate;
        self.last_ms = self.last_ms.max(ms);
        ms as u32
    }

    pub fn push(&mut self, f: &pb::Frame, feed: &FlvFeed) {
        if Some(&f.track_id) == self.video.as_ref() {
            if !f.contiguous {
                feed.forget_gop();
            }
            let nalus: Vec<&[u8]> = h264::annexb_nalus(&f.data).collect();
            if let Some((sps, pps)) = h264::parameter_sets(&nalus) {
                let changed = self
                    .sps_pps
                    .as_ref()
                    .is_none_or(|(s, p)| s != sps || p != pps);
                if changed {
                    if let Ok(rec) = AvcDecoderConfigurationRecord::from_parameter_sets(sps, pps) {
                        if let Ok(body) = flv::avc_sequence_header(&rec) {
                            feed.set_config(|c| c.avc = Some(body.clone()));
                            let ts = self.ms(true, f.rtp_time, 90_000, f.received_at_us);
                            feed.publish(Item {
                                tag_type: flv::TAG_VIDEO,
                                ts_ms: ts,
                                body,
                                keyframe: false,
                            });
                        }
                    }
                    self.sps_pps = Some((sps.to_vec(), pps.to_vec()));
                }
            }
            let keyframe = h264::is_keyframe(&nalus);
            let avcc = h264::nalus_to_avcc(nalus.iter().filter(|n| h264::is_sample_nal(n)));
            let ts = self.ms(true, f.rtp_time, 90_000, f.received_at_us);
            if let Ok(body) = flv::avc_nalus(keyframe, 0, &avcc) {
                feed.publish(Item {
                    tag_type: flv::TAG_VIDEO,
                    ts_ms: ts,
                    body,
                    keyframe,
                });
            }
        } else if self.aac.as_ref() == Some(&f.track_id) {
            let ts = self.ms(false, f.rtp_time, 48_000, f.received_at_us);
            feed.publish(Item {
                tag_type: flv::TAG_AUDIO,
                ts_ms: ts,
                body: flv::aac_raw(&f.data),
                keyframe: false,
            });
        } else if self.aac.is_none() && Some(&f.track_id) == self.opus.as_ref() {
            feed.set_config(|c| {
                if c.audio.is_none() {
                    c.audio = Some(flv::opus_sequence_header(&OpusHead::new(2, 0)));
                }
            });
            let ts = self.ms(false, f.rtp_time, 48_000, f.received_at_us);
            feed.publish(Item {
                tag_type: flv::TAG_AUDIO,
                ts_ms: ts,
                body: flv::opus_frame(&f.data),
                keyframe: false,
            });
        }
    }
}

fn tag(item_type: u8, ts: u32, body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len() + 16);
    flv::write_tag(&mut out, item_type, ts, body).ok()?;
    Some(Bytes::from(out))
}

/// The stream one viewer gets: header, metadata, sequence headers, the room's cached
/// GOP (from its latest keyframe), then live tags; without a cached GOP, live tags from
/// the next keyframe on. Ends when the viewer falls too far behind or the room ends.
fn spawn_viewer(feed: &Arc<FlvFeed>) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (mut sub, config, gop) = {
        let c = feed.lock();
        (
            feed.tx.subscribe(),
            c.config.clone(),
            c.gop.items().to_vec(),
        )
    };
    tokio::spawn(async move {
        let mut head = flv::file_header(config.audio.is_some(), true).to_vec();
        if let Ok(meta) = flv::on_metadata([("encoder", "skylark".into())]) {
            let _ = flv::write_tag(&mut head, flv::TAG_SCRIPT, 0, &meta);
        }
        if tx.send(Bytes::from(head)).await.is_err() {
            return;
        }
        let mut config = Some(config);
        // The cached GOP goes out as fast as the viewer takes it (up to a few MiB, once).
        for item in &gop {
            if !send_item(&tx, item, &mut config).await {
                return;
            }
        }
        loop {
            let item = match sub.recv().await {
                Ok(i) => i,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("skylark_flv_viewers_dropped_total").increment(1);
                    tracing::info!(lagged = n, "FLV viewer too slow; dropping it");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if config.is_some() && !item.keyframe {
                continue;
            }
            let Some(bytes) = tag(item.tag_type, item.ts_ms, &item.body) else {
                continue;
            };
            if config.is_some() && !send_config(&tx, item.ts_ms, &mut config).await {
                return;
            }
            metrics::counter!("skylark_flv_bytes_served_total").increment(bytes.len() as u64);
            // Waiting here holds nobody else up: the room's broadcast ring is the bound, and
            // a reader that falls its length behind is dropped above (`Lagged`). Dropping on a
            // full queue instead cut readers that paused for ~1 s, or that caught up on the
            // tags queued while their cached GOP went out.
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The sequence headers, once (`config` is taken), stamped `ts` (the first frame's).
async fn send_config(tx: &mpsc::Sender<Bytes>, ts: u32, config: &mut Option<Config>) -> bool {
    let Some(cfg) = config.take() else {
        return true;
    };
    for (t, body) in [(flv::TAG_VIDEO, cfg.avc), (flv::TAG_AUDIO, cfg.audio)] {
        if let Some(b) = body.and_then(|b| tag(t, ts, &b)) {
            if tx.send(b).await.is_err() {
                return false;
            }
        }
    }
    true
}

/// One cached tag, after the sequence headers if they have not gone out yet.
async fn send_item(tx: &mpsc::Sender<Bytes>, item: &Item, config: &mut Option<Config>) -> bool {
    if !send_config(tx, item.ts_ms, config).await {
        return false;
    }
    let Some(bytes) = tag(item.tag_type, item.ts_ms, &item.body) else {
        return true;
    };
    metrics::counter!("skylark_flv_bytes_served_total").increment(bytes.len() as u64);
    tx.send(bytes).await.is_ok()
}

/// `GET /flv/{room}.flv`, over plain HTTP (chunked) or upgraded to a WebSocket.
impl FlvFeed {
    /// Viewers watching now: each holds a subscription while its stream is open.
    pub fn viewers(&self) -> usize {
        self.tx.receiver_count()
    }
}

pub fn serve(feed: &Arc<FlvFeed>, ws: Option<WebSocketUpgrade>) -> Response {
    let rx = spawn_viewer(feed);
    metrics::counter!("skylark_flv_viewers_total").increment(1);
    match ws {
        Some(ws) => ws.on_upgrade(move |socket| ws_pump(socket, rx)),
        None => {
            let stream =
                tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
            let mut r = Response::new(Body::from_stream(stream));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("video/x-flv"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    }
}

async fn ws_pump(mut socket: WebSocket, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if socket.send(Message::Binary(b)).await.is_err() {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// 404 in the service's error shape.
pub fn not_live() -> Response {
    skylark_telemetry::error::json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "this room is not live: retry when it is",
    )
}

use futures_util::StreamExt as _;
