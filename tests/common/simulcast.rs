//! A simulcast WHIP publisher for tests: one str0m peer sending an H.264 layer per RID
//! (x264-encoded test pictures of the sizes asked for, looped) and Opus, the way a
//! browser with `sendEncodings` does. Keyframe requests restart the asked layer at its
//! IDR, like an encoder answering a PLI.

use skylark_loadgen::peer::rtc_config;
use skylark_loadgen::source::{split_access_units, OpusSource};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// One simulcast layer: its RID and picture size.
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub rid: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Access units of one layer: Annex B bytes, keyframe flag.
type Clip = Vec<(Vec<u8>, bool)>;

/// Two seconds of `testsrc2` at the layer's size, constrained baseline, an IDR with its
/// SPS/PPS every second.
fn encode(ffmpeg: &str, layer: Layer, dir: &Path) -> Clip {
    let path = dir.join(format!("layer-{}.h264", layer.rid));
    let out = Command::new(ffmpeg)
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size={}x{}:rate=30",
            layer.width, layer.height
        ))
        .args(["-t", "2", "-c:v", "libx264", "-profile:v", "baseline"])
        .args(["-preset", "veryfast", "-tune", "zerolatency", "-bf", "0"])
        .args([
            "-g",
            "30",
            "-sc_threshold",
            "0",
            "-x264-params",
            "repeat-headers=1",
        ])
        .args(["-f", "h264"])
        .arg(&path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    split_access_units(&bytes)
        .into_iter()
        .map(|nals| {
            let mut au = Vec::new();
            let mut key = false;
            for n in nals {
                au.extend_from_slice(&[0, 0, 0, 1]);
                au.extend_from_slice(n);
                key |= n.first().is_some_and(|b| b & 0x1f == 5);
            }
            (au, key)
        })
        .collect()
}

/// A running simulcast publisher; stops (and DELETEs its WHIP session) on drop.
pub struct SimulcastPublisher {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    connected: tokio::sync::watch::Receiver<bool>,
}

impl SimulcastPublisher {
    /// Publishes `layers` (encoded with `ffmpeg` into `dir`) to `whip_url` with `key`.
    pub async fn start(
        whip_url: &str,
        key: &str,
        layers: &[Layer],
        ffmpeg: &str,
        dir: &Path,
    ) -> SimulcastPublisher {
        let clips: Vec<Clip> = layers.iter().map(|l| encode(ffmpeg, *l, dir)).collect();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = rtc_config()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mut sim = Simulcast::new();
        for l in layers {
            sim.add_send_layer(SimulcastLayer::new(l.rid));
        }
        let stream = Some("simulcast".to_string());
        let video = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            stream.clone(),
            None,
            Some(sim),
        );
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, stream, None, None);
        let (offer, pending) = api.apply().unwrap();
        let client = reqwest::Client::new();
        let resp = client
            .post(whip_url)
            .bearer_auth(key)
            .header("content-type", "application/sdp")
            .body(offer.to_sdp_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "WHIP: {:?}", resp.text().await);
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|l| reqwest::Url::parse(whip_url).unwrap().join(l).unwrap());
        let answer = SdpAnswer::from_sdp_string(&resp.text().await.unwrap()).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();

        let stop = CancellationToken::new();
        let (tx, connected) = tokio::sync::watch::channel(false);
        let rids: Vec<Rid> = layers.iter().map(|l| Rid::from(l.rid)).collect();
        let media = Media {
            video,
            audio,
            rids,
            clips,
            pos: vec![0; layers.len()],
            frames: 0,
            opus: OpusSource::default(),
            start: None,
        };
        let task = tokio::spawn(run(
            rtc,
            socket,
            media,
            stop.clone(),
            tx,
            key.to_string(),
            location,
        ));
        SimulcastPublisher {
            stop,
            task: Some(task),
            connected,
        }
    }

    /// Waits until ICE and DTLS are up (media flows from then on).
    pub async fn wait_connected(&mut self, within: Duration) {
        tokio::time::timeout(within, self.connected.wait_for(|c| *c))
            .await
            .expect("simulcast publisher connected in time")
            .unwrap();
    }

    /// Stops sending and ends the WHIP session.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimulcastPublisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Media {
    video: Mid,
    audio: Mid,
    rids: Vec<Rid>,
    clips: Vec<Clip>,
    pos: Vec<usize>,
    frames: u64,
    opus: OpusSource,
    start: Option<Instant>,
}

impl Media {
    fn next_due(&self) -> Option<Instant> {
        let start = self.start?;
        let video = start + Duration::from_micros(self.frames * 1_000_000 / 30);
        let audio = start + OpusSource::packet_offset(self.opus.next_seq());
        Some(video.min(audio))
    }

    fn write_due(&mut self, rtc: &mut Rtc, now: Instant) {
        let Some(start) = self.start else { return };
        while start + Duration::from_micros(self.frames * 1_000_000 / 30) <= now {
            for (i, rid) in self.rids.iter().enumerate() {
                let clip = &self.clips[i];
                let (au, _) = &clip[self.pos[i] % clip.len()];
                self.pos[i] = (self.pos[i] + 1) % clip.len();
                let Some(w) = rtc.writer(self.video) else {
                    return;
                };
                let w = w.rid(*rid);
                let Some(pt) = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::H264)
                    .map(|p| p.pt())
                else {
                    return;
                };
                let _ = w.write(
                    pt,
                    now,
                    MediaTime::from_90khz(self.frames * 3000),
                    au.clone(),
                );
            }
            self.frames += 1;
        }
        while start + OpusSource::packet_offset(self.opus.next_seq()) <= now {
            let p = self.opus.next_packet();
            let Some(w) = rtc.writer(self.audio) else {
                return;
            };
            let Some(pt) = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt())
            else {
                return;
            };
            let time = MediaTime::new(p.rtp_time, Frequency::FORTY_EIGHT_KHZ);
            let _ = w.write(pt, now, time, p.data.to_vec());
        }
    }

    /// A PLI for a layer: restart its clip at the IDR.
    fn keyframe(&mut self, rid: Option<Rid>) {
        for (i, r) in self.rids.iter().enumerate() {
            if rid.is_none_or(|want| want == *r) {
                self.pos[i] = 0;
            }
        }
    }
}

async fn run(
    mut rtc: Rtc,
    socket: UdpSocket,
    mut media: Media,
    stop: CancellationToken,
    connected: tokio::sync::watch::Sender<bool>,
    key: String,
    location: Option<reqwest::Url>,
) {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    media.start = Some(Instant::now());
                    let _ = connected.send(true);
                }
                Ok(Output::Event(Event::KeyframeRequest(r))) if r.mid == media.video => {
                    media.keyframe(r.rid)
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let deadline = media.next_due().map_or(timeout, |m| m.min(timeout));
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline.into()) => None,
            r = socket.recv_from(&mut buf) => r.ok(),
        };
        let now = Instant::now();
        let input = match received.as_ref() {
            Some((n, source)) => match DatagramRecv::try_from(&buf[..*n]) {
                Ok(contents) => Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: *source,
                        destination: local,
                        contents,
                    },
                ),
                Err(_) => continue,
            },
            None => Input::Timeout(now),
        };
        if rtc.handle_input(input).is_err() {
            return;
        }
        media.write_due(&mut rtc, now);
    }
    if let Some(url) = location {
        let _ = reqwest::Client::new()
            .delete(url)
            .bearer_auth(key)
            .send()
            .await;
    }
}
