//! What the SFU accepts in an offer, checked before str0m sees it so refusals are clear.

use super::SessionError;

/// Largest SDP we parse: browsers send ~6 KB, simulcast ~10 KB.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Checks a publisher's offer: parseable lines, and H.264 with packetization-mode=1 in
/// every video section (the same track serves WebRTC viewers and HLS, which needs H.264).
pub fn check_publish_offer(sdp: &str) -> Result<(), SessionError> {
    check_size(sdp)?;
    let mut in_video = false;
    let mut video_sections = 0;
    let mut h264_pts: Vec<&str> = Vec::new();
    let mut ok_sections = 0;
    let mut section_ok = false;
    let mut finish = |in_video: bool, section_ok: bool| {
        if in_video && section_ok {
            ok_sections += 1;
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            finish(in_video, section_ok);
            in_video = m.starts_with("video ");
            if in_video {
                video_sections += 1;
            }
            section_ok = false;
            h264_pts.clear();
        } else if in_video {
            if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, enc)) = rest.split_once(' ') {
                    if enc.to_ascii_uppercase().starts_with("H264/90000") {
                        h264_pts.push(pt);
                    }
                }
            } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
                if let Some((pt, params)) = rest.split_once(' ') {
                    if h264_pts.contains(&pt) && params.contains("packetization-mode=1") {
                        section_ok = true;
                    }
                }
            }
        }
    }
    finish(in_video, section_ok);
    if video_sections > 0 && ok_sections < video_sections {
        return Err(SessionError::UnsupportedCodec(
            "the offer's video has no H.264 with packetization-mode=1: Skylark needs H.264 \
             (constrained baseline or high) so the same stream serves WebRTC and HLS; \
             enable H.264 in the encoder (OBS: x264 or a hardware H.264 encoder)"
                .into(),
        ));
    }
    Ok(())
}

pub fn check_size(sdp: &str) -> Result<(), SessionError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SessionError::BadSdp(format!(
            "SDP of {} bytes is over the {MAX_SDP_BYTES}-byte limit",
            sdp.len()
        )));
    }
    if !sdp.starts_with("v=0") {
        return Err(SessionError::BadSdp(
            "not an SDP offer: it must start with `v=0`".into(),
        ));
    }
    Ok(())
}

/// A subscriber's answer with every media line in one media stream (`a=msid`, RFC 8830),
/// named after the room: browsers play a stream's audio and video in sync (by the
/// sender reports' wall clock) only when both tracks belong to the same stream. str0m
/// names each answered line's stream at random and has no setter for it.
pub fn one_stream(answer: &str, room: &str) -> String {
    let id: String = std::iter::once("skylark-")
        .flat_map(str::chars)
        .chain(
            room.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_'),
        )
        .take(64)
        .collect();
    let mut out = String::with_capacity(answer.len() + 64);
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let end = &line[body.len()..];
        if let Some(rest) = body.strip_prefix("a=msid:") {
            let track = rest.split_once(' ').map_or("", |(_, t)| t);
            out.push_str(&format!("a=msid:{id} {track}"));
        } else if body.starts_with("a=msid-semantic:") {
            out.push_str(&format!("a=msid-semantic: WMS {id}"));
        } else if let Some((ssrc, rest)) = body
            .strip_prefix("a=ssrc:")
            .and_then(|r| r.split_once(" msid:"))
        {
            let track = rest.split_once(' ').map_or("", |(_, t)| t);
            out.push_str(&format!("a=ssrc:{ssrc} msid:{id} {track}"));
        } else {
            out.push_str(body);
        }
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VP8_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
    const H264_PM0: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=42e01f;packetization-mode=0\r\n";
    const H264_PM1: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn h264_required_in_video() {
        assert!(
            matches!(check_publish_offer(VP8_ONLY), Err(SessionError::UnsupportedCodec(m)) if m.contains("H.264"))
        );
        assert!(check_publish_offer(H264_PM0).is_err());
        assert!(check_publish_offer(H264_PM1).is_ok());
        let audio_only = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(check_publish_offer(audio_only).is_ok());
    }

    #[test]
    fn answer_lines_join_one_stream_named_after_the_room() {
        let answer = "v=0\r\na=msid-semantic: WMS a b\r\nm=audio 9 X 111\r\na=msid:a t1\r\na=ssrc:1 cname:c\r\na=ssrc:1 msid:a t1\r\nm=video 9 X 102\r\na=msid:b t2\r\na=ssrc:2 msid:b t2\r\n";
        let got = one_stream(answer, "my room!");
        assert_eq!(
            got,
            "v=0\r\na=msid-semantic: WMS skylark-myroom\r\nm=audio 9 X 111\r\na=msid:skylark-myroom t1\r\na=ssrc:1 cname:c\r\na=ssrc:1 msid:skylark-myroom t1\r\nm=video 9 X 102\r\na=msid:skylark-myroom t2\r\na=ssrc:2 msid:skylark-myroom t2\r\n"
        );
    }

    #[test]
    fn garbage_and_huge_are_bad_sdp() {
        assert!(matches!(
            check_publish_offer("hello"),
            Err(SessionError::BadSdp(_))
        ));
        let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
        assert!(matches!(
            check_publish_offer(&huge),
            Err(SessionError::BadSdp(_))
        ));
    }
}
