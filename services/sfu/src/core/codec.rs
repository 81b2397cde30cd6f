//! Codec policy: what the SFU negotiates with peers, and which of a subscriber's payload
//! types carries a publisher's frames.

use std::sync::Arc;
use std::time::Duration;
use str0m::crypto::dtls::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::format::{Codec, CodecSpec};
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::ExtensionMap;
use str0m::{Rtc, RtcConfig};

/// What a published frame carries, whatever the source (WebRTC or a local ingest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCodec {
    H264,
    Opus,
    /// Relayed only (HLS/FLV of RTMP sources); WebRTC viewers get the Opus transcode.
    Aac,
}

impl FrameCodec {
    /// The frame codec of a negotiated codec; `None` for codecs the SFU does not route.
    pub(super) fn from_negotiated(codec: Codec) -> Option<Self> {
        match codec {
            Codec::H264 => Some(FrameCodec::H264),
            Codec::Opus => Some(FrameCodec::Opus),
            _ => None,
        }
    }

    pub(super) fn kind(self) -> MediaKind {
        match self {
            FrameCodec::H264 => MediaKind::Video,
            FrameCodec::Opus | FrameCodec::Aac => MediaKind::Audio,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            FrameCodec::H264 => "H264",
            FrameCodec::Opus => "opus",
            FrameCodec::Aac => "aac",
        }
    }

    pub(super) fn clock_rate(self) -> u32 {
        match self {
            FrameCodec::H264 => 90_000,
            FrameCodec::Opus => 48_000,
            // RTMP sources time AAC in ms; the relay rebases it to 48 kHz.
            FrameCodec::Aac => 48_000,
        }
    }
}

/// The codecs the SFU speaks: H.264 packetization-mode 1 in the profiles browsers
/// offer, and Opus. Nothing else, so viewers get exactly what publishers send.
///
/// Subscribers negotiate no RTP header extension at all. Not transport-wide congestion
/// control (TWCC): its feedback (about 20 RTCP packets a second from each viewer) only
/// feeds a sender's bandwidth estimate, which the SFU does not run per viewer, and
/// processing it was a fifth of the SFU's CPU at 300 viewers (docs/benchmarks.md).
/// Publishers keep it: browsers size their encoder bitrate from it. Not abs-send-time:
/// it only feeds a receiver's estimate (REMB). And not MID: str0m writes it on every
/// packet of a stream with RTX for good (its receiver-report check looks only at the RTX
/// SSRC), ~900 instructions of a forwarded packet's ~10,900 (docs/benchmarks.md); the
/// answer's `a=ssrc` lines bind the SSRCs instead, as for any receiver without MID. The
/// SFU sets no other extension's value on forwarded packets.
///
/// Subscribers run in str0m's RTP mode: the room packetizes each frame once
/// (`packetize`) and their streams send those packets. Their audio gets a sender report
/// every second like their video (str0m's default is 5 s): browsers lip-sync only once
/// they have one of each.
///
/// A subscriber the core sends to itself (`direct`, see `super::direct`) gets its
/// sender reports from the core: str0m's would report the packets it did not send (none,
/// at RTP time 0), so they never come. Its RTCP reaches the core as raw packets (NACKs,
/// reception reports).
///
/// `cert`: the worker's certificate (see [`super::Core`]); `None`, str0m makes one.
pub(super) fn rtc_config(
    crypto: &Arc<CryptoProvider>,
    cert: Option<&DtlsCert>,
    subscriber: bool,
    direct: bool,
) -> RtcConfig {
    let mut cfg = Rtc::builder()
        .set_rtp_mode(subscriber)
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
        .set_ice_lite(true)
        .set_stats_interval(Some(Duration::from_secs(1)))
        .clear_codecs()
        .enable_opus(true, false)
        .set_crypto_provider(crypto.clone());
    if let Some(cert) = cert {
        cfg = cfg.set_dtls_cert(cert.clone());
    }
    let codecs = cfg.codec_config();
    for (pt, rtx, profile) in [
        (102u8, 103u8, 0x42e01f_u32),
        (104, 105, 0x42001f),
        (106, 107, 0x4d001f),
        (108, 109, 0x64001f),
    ] {
        codecs.add_h264(pt.into(), Some(rtx.into()), true, profile);
    }
    if subscriber {
        cfg = cfg.set_extension_map(ExtensionMap::empty());
    }
    if direct {
        cfg = cfg
            .set_rtcp_report_interval_audio(NO_REPORTS)
            .set_rtcp_report_interval_video(NO_REPORTS)
            .enable_raw_packets(true);
    }
    cfg
}

/// str0m's sender report interval for streams the core sends itself: never, in effect.
const NO_REPORTS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The payload type a subscriber receives a publisher's `kind` frames on, among the
/// codecs it negotiated for `mid`: the publisher's exact format first; else, for video,
/// any H.264 in packetization mode 1 — the publisher's profile-level-id (FFmpeg offers
/// 42001e, browsers 42e01f) only bounds what a decoder must handle, and every H.264
/// receiver decodes these streams.
pub(super) fn subscriber_pt(
    rtc: &Rtc,
    mid: Mid,
    publisher: Option<CodecSpec>,
    kind: MediaKind,
) -> Option<Pt> {
    let negotiated = rtc.media(mid)?.remote_pts();
    let params = || {
        rtc.codec_config()
            .params()
            .iter()
            .filter(|p| negotiated.contains(&p.pt()))
    };
    params()
        .find(|p| Some(p.spec()) == publisher)
        .or_else(|| {
            params().find(|p| match kind {
                MediaKind::Video => {
                    p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1)
                }
                MediaKind::Audio => p.spec().codec == Codec::Opus,
            })
        })
        .map(|p| p.pt())
}
