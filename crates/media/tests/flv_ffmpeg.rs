//! The FLV writer against real readers: FLV files built with this crate from
//! FFmpeg-encoded H.264, AAC and Opus are probed and decoded by FFmpeg.
//!
//! H.264 + AAC files are read by Debian's FFmpeg 5.1; Opus in Enhanced FLV
//! needs FFmpeg 7.1+, the static build `scripts/test` installs (or
//! `SKYLARK_TEST_FFMPEG`). Missing binaries skip with a message, except
//! under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use skylark_media::aac::adts_frames;
use skylark_media::flv::{self, FourCc, OpusHead};
use skylark_media::h264::{annexb_nalus, nal_type, nalus_to_avcc, AvcDecoderConfigurationRecord};
use skylark_media::rtmp::amf0::Amf0Value;

mod common;
use common::{assert_440_hz_crossings, have, recent_ffmpeg, TONE_1S_48K};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skylark-flv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn ffmpeg(bin: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The start of an FLV file: its header (with audio, with video) and an onMetaData tag
/// of `meta`.
fn flv_start((audio, video): (bool, bool), meta: Vec<(&str, Amf0Value)>) -> Vec<u8> {
    let mut file = flv::file_header(audio, video).to_vec();
    let meta = flv::on_metadata(meta).unwrap();
    flv::write_tag(&mut file, flv::TAG_SCRIPT, 0, &meta).unwrap();
    file
}

/// Splits an Annex-B stream with access unit delimiters into access units.
fn access_units(stream: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut aus: Vec<Vec<&[u8]>> = Vec::new();
    for nal in annexb_nalus(stream) {
        if nal_type(nal) == Some(9) {
            aus.push(Vec::new());
        } else if let Some(au) = aus.last_mut() {
            au.push(nal);
        }
    }
    aus
}

#[test]
fn ffmpeg_reads_h264_and_aac_flv() {
    if !have("ffmpeg") || !have("ffprobe") {
        return;
    }
    let ff = Path::new("ffmpeg");
    let h264 = scratch("video.h264");
    let aac = scratch("audio.aac");
    ffmpeg(
        ff,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-x264-params",
            "aud=1",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "h264",
            h264.to_str().unwrap(),
        ],
    );
    ffmpeg(
        ff,
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "1",
            "-c:a",
            "aac",
            "-f",
            "adts",
            aac.to_str().unwrap(),
        ],
    );
    let h264 = std::fs::read(h264).unwrap();
    let aac = std::fs::read(aac).unwrap();
    let aus = access_units(&h264);
    assert_eq!(aus.len(), 25);
    let sps = aus[0].iter().find(|n| nal_type(n) == Some(7)).unwrap();
    let pps = aus[0].iter().find(|n| nal_type(n) == Some(8)).unwrap();
    let avcc = AvcDecoderConfigurationRecord::from_parameter_sets(sps, pps).unwrap();
    let frames: Vec<_> = adts_frames(&aac).collect::<Result<_, _>>().unwrap();
    let asc = frames[0].0.to_audio_specific_config().unwrap();

    let mut file = flv_start(
        (true, true),
        vec![
            ("width", Amf0Value::Number(320.0)),
            ("height", Amf0Value::Number(240.0)),
            ("framerate", Amf0Value::Number(25.0)),
            ("videocodecid", Amf0Value::Number(7.0)),
            ("audiocodecid", Amf0Value::Number(10.0)),
            ("audiosamplerate", Amf0Value::Number(44_100.0)),
            ("stereo", Amf0Value::Boolean(false)),
        ],
    );
    flv::write_tag(
        &mut file,
        flv::TAG_VIDEO,
        0,
        &flv::avc_sequence_header(&avcc).unwrap(),
    )
    .unwrap();
    flv::write_tag(
        &mut file,
        flv::TAG_AUDIO,
        0,
        &flv::aac_sequence_header(&asc).unwrap(),
    )
    .unwrap();
    // Interleave by timestamp: video every 40 ms, audio every 1024 samples.
    let mut v = (0..aus.len())
        .map(|i| (i as u32 * 40, true, i))
        .collect::<Vec<_>>();
    v.extend((0..frames.len()).map(|i| ((i as u64 * 1024 * 1000 / 44_100) as u32, false, i)));
    v.sort();
    for (ts, video, i) in v {
        if video {
            let au: Vec<&[u8]> = aus[i]
                .iter()
                .copied()
                .filter(|n| !matches!(nal_type(n), Some(7 | 8)))
                .collect();
            let key = au.iter().any(|n| nal_type(n) == Some(5));
            let body = flv::avc_nalus(key, 0, &nalus_to_avcc(au)).unwrap();
            flv::write_tag(&mut file, flv::TAG_VIDEO, ts, &body).unwrap();
        } else {
            flv::write_tag(&mut file, flv::TAG_AUDIO, ts, &flv::aac_raw(frames[i].1)).unwrap();
        }
    }
    flv::write_tag(&mut file, flv::TAG_VIDEO, 1000, &flv::avc_end_of_sequence()).unwrap();
    let path = scratch("out.flv");
    std::fs::write(&path, &file).unwrap();

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args(["stream=codec_name,width,height,sample_rate,channels,nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&probe.stdout);
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines.contains(&"h264,320,240,25"), "{report}");
    assert!(
        lines.iter().any(|l| l.starts_with("aac,44100,1,")),
        "{report}"
    );
    // And everything decodes without a complaint.
    let out = ffmpeg(ff, &["-i", path.to_str().unwrap(), "-f", "null", "-"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opus packets from an Ogg file (one or more segments per packet).
fn ogg_packets(data: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut pos = 0;
    while pos + 27 <= data.len() {
        assert_eq!(&data[pos..pos + 4], b"OggS");
        let segments = usize::from(data[pos + 26]);
        let lacing = &data[pos + 27..pos + 27 + segments];
        let mut body = pos + 27 + segments;
        for &len in lacing {
            current.extend_from_slice(&data[body..body + usize::from(len)]);
            body += usize::from(len);
            if len < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        pos = body;
    }
    packets
}

#[test]
fn recent_ffmpeg_reads_opus_in_enhanced_flv() {
    if !have("ffmpeg") {
        return;
    }
    let Some(ff9) = recent_ffmpeg() else {
        return;
    };
    let ogg = scratch("tone.ogg");
    let opus_ogg = [
        "-ac",
        "2",
        "-c:a",
        "libopus",
        "-f",
        "ogg",
        ogg.to_str().unwrap(),
    ];
    ffmpeg(Path::new("ffmpeg"), &[&TONE_1S_48K[..], &opus_ogg].concat());
    let packets = ogg_packets(&std::fs::read(ogg).unwrap());
    let head = OpusHead::parse(&packets[0]).unwrap();
    assert_eq!(head.channels, 2);
    assert!(packets[1].starts_with(b"OpusTags"));
    let audio = &packets[2..];

    let opus = Amf0Value::Number(f64::from(FourCc::OPUS.as_u32()));
    let mut file = flv_start(
        (true, false),
        vec![
            ("audiocodecid", opus),
            ("audiosamplerate", Amf0Value::Number(48_000.0)),
            ("stereo", Amf0Value::Boolean(true)),
        ],
    );
    flv::write_tag(
        &mut file,
        flv::TAG_AUDIO,
        0,
        &flv::opus_sequence_header(&head),
    )
    .unwrap();
    for (i, p) in audio.iter().enumerate() {
        flv::write_tag(
            &mut file,
            flv::TAG_AUDIO,
            i as u32 * 20,
            &flv::opus_frame(p),
        )
        .unwrap();
    }
    let path = scratch("opus.flv");
    std::fs::write(&path, &file).unwrap();

    let out = ffmpeg(
        &ff9,
        &[
            "-i",
            path.to_str().unwrap(),
            "-f",
            "s16le",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-",
        ],
    );
    let pcm: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let seconds = pcm.len() as f64 / 48_000.0;
    assert!((0.95..1.1).contains(&seconds), "{seconds} s decoded");
    let middle = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
    assert_440_hz_crossings("decoded Opus", middle);
}
