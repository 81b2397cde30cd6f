//! Real peers: FFmpeg publishes over RTMP to a tiny blocking server loop that
//! drives the sans-IO [`ServerSession`], and what arrives is checked with the
//! FLV, H.264 and AAC parsers of this crate.
//!
//! Debian's FFmpeg (5.1, native RTMP client) publishes H.264 + AAC like OBS
//! does. The static FFmpeg 9 that `scripts/test` installs (or
//! `SKYLARK_TEST_FFMPEG`) also publishes Opus in Enhanced RTMP. Missing
//! binaries skip the test with a message, except under `CI=true`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skylark_media::flv::{split_avcc, AudioTag, FrameType, VideoPacket, VideoTag};
use skylark_media::h264::nal_type;
use skylark_media::rtmp::amf0::Amf0Value;
use skylark_media::rtmp::{ServerSession, SessionConfig, SessionEvent};

mod common;
use common::{have, recent_ffmpeg, TONE_1S_48K};

/// Debian's `ffmpeg`, if installed.
fn debian_ffmpeg() -> Option<PathBuf> {
    have("ffmpeg").then(|| PathBuf::from("ffmpeg"))
}

/// All `child` wrote to its piped stderr.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    log
}

struct Outcome {
    events: Vec<SessionEvent>,
    ffmpeg_ok: bool,
    ffmpeg_log: String,
}

/// Runs `ffmpeg <args> rtmp://127.0.0.1:PORT/<path>` against one server
/// connection; `accept` decides on the publish request.
fn publish(
    ffmpeg: &PathBuf,
    args: &[&str],
    path: &str,
    accept: impl Fn(&str, &str) -> bool,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut child = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(args)
        .arg(format!("rtmp://127.0.0.1:{port}/{path}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg starts");

    // Accept with a deadline, so a failing FFmpeg cannot hang the test.
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut socket = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = stderr_of(&mut child);
                    panic!("ffmpeg exited ({status}) before connecting: {log}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no RTMP connection: {e}"),
        }
    };
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut session = ServerSession::new(SessionConfig::default());
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut closing = false;
    while !closing && Instant::now() < deadline {
        let n = match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        };
        session
            .feed(&buf[..n])
            .unwrap_or_else(|e| panic!("session error: {e}"));
        while let Some(event) = session.poll_event() {
            if let SessionEvent::Publish {
                app, stream_name, ..
            } = &event
            {
                if accept(app, stream_name) {
                    session.accept_publish().unwrap();
                } else {
                    session
                        .reject_publish("NetStream.Publish.BadName", "unknown stream key")
                        .unwrap();
                    closing = true;
                }
            }
            events.push(event);
        }
        let out = session.take_output();
        if !out.is_empty() && socket.write_all(&out).is_err() {
            break;
        }
    }
    drop(socket);
    let status = child.wait().unwrap();
    Outcome {
        events,
        ffmpeg_ok: status.success(),
        ffmpeg_log: stderr_of(&mut child),
    }
}

/// Test pattern + tone, 2 s, H.264 with a keyframe every second.
const H264_AAC: &[&str] = &[
    "-f",
    "lavfi",
    "-i",
    "testsrc=size=320x240:rate=25",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=44100",
    "-t",
    "2",
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-g",
    "25",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-b:a",
    "64k",
    "-f",
    "flv",
];

#[test]
fn ffmpeg_publishes_h264_and_aac() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let out = publish(&ffmpeg, H264_AAC, "live/key", |app, name| {
        app == "live" && name == "key"
    });
    assert!(out.ffmpeg_ok, "ffmpeg failed: {}", out.ffmpeg_log);
    let events = &out.events;

    assert!(matches!(&events[0], SessionEvent::Connect { app, .. } if app == "live"));
    assert!(matches!(
        &events[1],
        SessionEvent::Publish { app, stream_name, .. } if app == "live" && stream_name == "key"
    ));
    let metadata = events
        .iter()
        .find_map(|e| match e {
            SessionEvent::Metadata(values) => Some(values.clone()),
            _ => None,
        })
        .expect("metadata");
    assert_eq!(metadata[0].as_str(), Some("onMetaData"));
    assert_eq!(
        metadata[1].get("width").and_then(Amf0Value::as_f64),
        Some(320.0)
    );
    assert_eq!(
        metadata[1].get("videocodecid").and_then(Amf0Value::as_f64),
        Some(7.0)
    );
    assert!(matches!(events.last(), Some(SessionEvent::Unpublish)));

    // Video: the sequence header first, then access units starting with a
    // keyframe that holds an IDR slice; DTS never goes back.
    let video: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Video { timestamp, data } => Some((*timestamp, data.clone())),
            _ => None,
        })
        .collect();
    let first = VideoTag::parse(&video[0].1).unwrap();
    let VideoPacket::AvcSequenceHeader(config) = first.packet else {
        panic!("first video tag is not the sequence header: {first:?}");
    };
    let sps = config.parse_sps().unwrap();
    assert_eq!((sps.width, sps.height), (320, 240));
    let mut frames = 0;
    let mut last_ts = 0;
    for (i, (ts, body)) in video[1..].iter().enumerate() {
        let tag = VideoTag::parse(body).unwrap();
        let VideoPacket::AvcNalus {
            data,
            composition_time,
        } = tag.packet
        else {
            continue;
        };
        assert!(composition_time >= 0);
        let nalus = split_avcc(data, config.length_size).unwrap();
        let idr = nalus.iter().any(|n| nal_type(n) == Some(5));
        assert_eq!(idr, tag.frame_type == FrameType::Key);
        if i == 0 {
            assert!(tag.is_keyframe() && idr, "the first frame is a keyframe");
        }
        assert!(*ts >= last_ts);
        last_ts = *ts;
        frames += 1;
    }
    assert_eq!(frames, 50, "2 s at 25 fps");
    assert!((1900..=2000).contains(&last_ts), "last video DTS {last_ts}");

    // Audio: the AAC config, then about 2 s of 1024-sample frames.
    let audio: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Audio { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    let AudioTag::AacSequenceHeader(asc) = AudioTag::parse(&audio[0]).unwrap() else {
        panic!("first audio tag is not the AAC config");
    };
    assert_eq!(asc.object_type, 2);
    assert_eq!(asc.sampling_frequency, 44_100);
    assert_eq!(asc.channel_count(), Some(1));
    let raw = audio[1..]
        .iter()
        .filter(|a| matches!(AudioTag::parse(a), Ok(AudioTag::AacRaw(f)) if !f.is_empty()))
        .count();
    assert!((85..=90).contains(&raw), "{raw} AAC frames for 2 s");
}

#[test]
fn ffmpeg_gets_a_clean_error_for_a_rejected_key() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let out = publish(&ffmpeg, H264_AAC, "live/wrong", |_, name| name == "key");
    assert!(!out.ffmpeg_ok, "ffmpeg should fail on a rejected publish");
    assert!(
        out.ffmpeg_log.contains("NetStream.Publish.BadName")
            || out.ffmpeg_log.contains("unknown stream key"),
        "ffmpeg log: {}",
        out.ffmpeg_log
    );
    assert!(out
        .events
        .iter()
        .all(|e| !matches!(e, SessionEvent::Audio { .. } | SessionEvent::Video { .. })));
}

#[test]
fn recent_ffmpeg_publishes_opus_in_enhanced_rtmp() {
    let Some(ffmpeg) = recent_ffmpeg() else {
        return;
    };
    let args = [
        &TONE_1S_48K[..],
        &["-c:a", "libopus", "-ac", "2", "-f", "flv"],
    ]
    .concat();
    let out = publish(&ffmpeg, &args, "live/key", |_, _| true);
    assert!(out.ffmpeg_ok, "ffmpeg failed: {}", out.ffmpeg_log);
    let audio: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Audio { data, .. } => Some(AudioTag::parse(data).unwrap()),
            _ => None,
        })
        .collect();
    let AudioTag::OpusSequenceHeader(Some(head)) = &audio[0] else {
        panic!("first audio tag: {:?}", audio[0]);
    };
    assert_eq!(head.channels, 2);
    let frames: Vec<_> = audio
        .iter()
        .filter_map(|a| match a {
            AudioTag::OpusFrame(p) => Some(*p),
            _ => None,
        })
        .collect();
    // 1 s of 20 ms packets, each a valid Opus packet.
    assert!((49..=51).contains(&frames.len()), "{} frames", frames.len());
    for p in frames {
        assert_eq!(skylark_media::opus::packet_samples(p).unwrap(), 960);
    }
}
