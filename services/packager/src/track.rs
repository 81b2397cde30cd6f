//! What relay tracks say about their codecs, read the same way by every output (HLS
//! renditions, HTTP-FLV).

use skylark_media::aac::AudioSpecificConfig;
use skylark_proto::sfu::v1 as pb;

/// The AAC `AudioSpecificConfig` of an `aac` relay track: the RTMP ingest passes the
/// publisher's AAC sequence header in `fmtp`, hex-encoded. `None` for other tracks and
/// for a config that doesn't parse.
pub fn aac_config(t: &pb::TrackInfo) -> Option<AudioSpecificConfig> {
    let aac = t.kind == pb::TrackKind::Audio as i32 && t.codec.eq_ignore_ascii_case("aac");
    aac.then(|| AudioSpecificConfig::parse(&hex(&t.fmtp)).ok())
        .flatten()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The RTMP ingest's AAC relay track: 44.1 kHz stereo AAC-LC (config `1210`).
#[cfg(test)]
pub(crate) fn rtmp_aac_track() -> pb::TrackInfo {
    pb::TrackInfo {
        track_id: "local-aac".into(),
        kind: pb::TrackKind::Audio as i32,
        codec: "aac".into(),
        clock_rate: 48_000,
        fmtp: "1210".into(),
        rid: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_config_from_the_rtmp_ingests_fmtp() {
        let mut t = rtmp_aac_track();
        let asc = aac_config(&t).unwrap();
        assert_eq!(
            (asc.sampling_frequency, asc.channel_configuration),
            (44_100, 2)
        );
        for bad in ["", "zz", "f"] {
            t.fmtp = bad.into();
            assert_eq!(aac_config(&t), None, "{bad:?}");
        }
        t.fmtp = "1210".into();
        t.codec = "opus".into();
        assert_eq!(aac_config(&t), None);
    }
}
