//! A simulcast WHIP publisher for tests: the load generator's str0m publisher
//! (`Engine::publish_simulcast`), sending its synthetic H.264 as the layers of
//! [`LAYERS`] — RIDs `h`, `m`, `l` at 320x240, 160x120 and 80x60, each a real x264
//! clip with its own SPS — and Opus, the way a browser with `sendEncodings` does.
//! Keyframe requests restart the asked layer at its IDR, like an encoder answering a
//! PLI. Every frame carries the load generator's marker, so WHEP viewers of it can
//! check what they receive.

use skylark_loadgen::source::VideoConfig;
use skylark_loadgen::{Engine, EngineConfig, Publisher};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The layers the publisher sends, largest first (`rid`, `width`, `height`, ...).
pub use skylark_loadgen::source::SIMULCAST_LAYERS as LAYERS;

/// A running simulcast publisher; dropping it stops the media (without a DELETE),
/// [`SimulcastPublisher::stop`] also ends the WHIP session.
pub struct SimulcastPublisher {
    engine: Engine,
    publisher: Publisher,
}

impl SimulcastPublisher {
    /// Publishes every layer of [`LAYERS`] to `whip_url` with `key` (the top layer at
    /// 600 kbit/s, a keyframe every 2 s).
    pub async fn start(whip_url: &str, key: &str) -> SimulcastPublisher {
        let engine = Engine::start(EngineConfig::default(), CancellationToken::new())
            .expect("engine starts");
        let publisher = engine
            .publish_simulcast(whip_url, key, VideoConfig::default())
            .await
            .expect("simulcast WHIP publish accepted");
        SimulcastPublisher { engine, publisher }
    }

    /// Waits until ICE and DTLS are up (media flows from then on).
    pub async fn wait_connected(&mut self, within: Duration) {
        let stats = self
            .publisher
            .wait_connected(within)
            .await
            .expect("simulcast publisher connected in time");
        assert_eq!(stats.layers.len(), LAYERS.len());
    }

    /// Stops sending and ends the WHIP session.
    pub async fn stop(self) {
        let (_, deleted) = self.publisher.stop().await;
        deleted.expect("WHIP DELETE");
        self.engine.shutdown().await;
    }
}

/// ffprobe (`ffprobe`) reads `url`, a rendition of layer `layer`: H.264 at the layer's
/// size, and the Opus audio.
#[allow(dead_code)] // tests/quality.rs reads no HLS
pub fn assert_rendition_of(ffprobe: &str, url: &str, layer: &skylark_loadgen::source::Layer) {
    let out = crate::common::ffprobe_streams(ffprobe, "codec_name,width,height", url);
    let probe = String::from_utf8_lossy(&out.stdout);
    assert!(
        probe.contains(&format!(
            "codec_name=h264|width={}|height={}",
            layer.width, layer.height
        )),
        "{}: {probe}\n{}",
        layer.rid,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(probe.contains("codec_name=opus"), "{}: {probe}", layer.rid);
}
