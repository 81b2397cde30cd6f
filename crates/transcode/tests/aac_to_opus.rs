//! End to end: a 440 Hz tone encoded to AAC by Debian's FFmpeg at test time
//! → `AacToOpus` → Opus, decoded twice: by `ropus` here, and by FFmpeg
//! (libopus) from an Ogg Opus file written by the test. Both must hear a
//! 440 Hz tone of the right length and level.
//!
//! Without `ffmpeg` the test is skipped with a message, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use skylark_media::aac::adts_frames;
use skylark_transcode::{AacToOpus, OpusPacket, FRAME_SAMPLES};

#[path = "../../media/tests/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::assert_440_hz_crossings;

fn ffmpeg_available() -> bool {
    common::have("ffmpeg")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skylark-transcode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `ffmpeg -f lavfi -i INPUT… ARGS… OUT` (FFmpeg's generated sources, encoded), read back.
fn ffmpeg_lavfi(out: &str, inputs: &[&str], args: &[&str]) -> Vec<u8> {
    let path = scratch(out);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"]);
    for input in inputs {
        cmd.args(["-f", "lavfi", "-i", input]);
    }
    let status = cmd.args(args).arg(&path).status().unwrap();
    assert!(status.success());
    std::fs::read(&path).unwrap()
}

/// `ffmpeg -f lavfi -i sine=frequency=440:sample_rate=RATE -t 1 -c:a aac -f adts`.
fn aac_tone(rate: u32, channels: u32) -> Vec<u8> {
    ffmpeg_lavfi(
        &format!("tone-{rate}-{channels}.aac"),
        &[&format!("sine=frequency=440:sample_rate={rate}")],
        &[
            "-t",
            "1",
            "-ac",
            &channels.to_string(),
            "-c:a",
            "aac",
            "-f",
            "adts",
        ],
    )
}

/// What one frame is given to the transcoder as: `(transcoder, frame index, payload,
/// sampling rate)` → the packets the push gave (none for a frame it skips).
type Feed<'a> = dyn FnMut(&mut AacToOpus, usize, &[u8], u32) -> Vec<OpusPacket> + 'a;

/// Every frame of the ADTS stream through one `AacToOpus`, each pushed by `feed`, then
/// the flush: the packets, the transcoder (for its stats), the number of frames and the
/// sampling rate.
fn through_transcoder(adts: &[u8], feed: &mut Feed) -> (Vec<OpusPacket>, AacToOpus, usize, u32) {
    let frames: Vec<_> = adts_frames(adts).collect::<Result<_, _>>().unwrap();
    let asc = frames[0].0.to_audio_specific_config().unwrap();
    let rate = asc.sampling_frequency;
    let mut t = AacToOpus::new(&asc).unwrap();
    let mut packets = Vec::new();
    for (i, (_, payload)) in frames.iter().enumerate() {
        packets.extend(feed(&mut t, i, payload, rate));
    }
    packets.extend(t.flush().unwrap());
    (packets, t, frames.len(), rate)
}

/// A one-second 48 kHz mono AAC tone through [`through_transcoder`]: the packets, the
/// transcoder and the number of frames; `None` (skipped) without FFmpeg.
fn mono_tone_through(feed: &mut Feed) -> Option<(Vec<OpusPacket>, AacToOpus, usize)> {
    if !ffmpeg_available() {
        return None;
    }
    let (packets, t, frames, _) = through_transcoder(&aac_tone(48_000, 1), feed);
    Some((packets, t, frames))
}

/// Runs the ADTS stream through `AacToOpus`, timestamps from the frame count.
fn transcode(adts: &[u8]) -> (Vec<OpusPacket>, u16, u32) {
    let (packets, t, frames, rate) = through_transcoder(adts, &mut |t, i, payload, rate| {
        let pts = i as u64 * 1024 * 48_000 / u64::from(rate);
        t.push(payload, pts).unwrap()
    });
    assert_eq!(t.stats().frames_in, frames as u64);
    assert_eq!(t.stats().resyncs, 0);
    (packets, t.pre_skip(), rate)
}

/// Goertzel power of `freq` in `x` (48 kHz).
fn goertzel(x: &[f32], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency between 100 Hz and 4 kHz, to 1 Hz.
fn dominant_frequency(x: &[f32]) -> f64 {
    let coarse = (100..4000)
        .step_by(10)
        .map(f64::from)
        .max_by(|a, b| goertzel(x, *a).total_cmp(&goertzel(x, *b)))
        .unwrap();
    ((coarse as i64 - 10)..=(coarse as i64 + 10))
        .map(|f| f as f64)
        .max_by(|a, b| goertzel(x, *a).total_cmp(&goertzel(x, *b)))
        .unwrap()
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Checks a decoded mono 48 kHz signal: a 440 Hz tone at the given RMS level
/// lasting about a second.
fn check_tone(what: &str, mono: &[f32], expected_rms: f64) {
    let seconds = mono.len() as f64 / 48_000.0;
    assert!((0.98..1.12).contains(&seconds), "{what}: {seconds} s");
    let middle = &mono[mono.len() / 4..mono.len() * 3 / 4];
    let f = dominant_frequency(middle);
    assert!(
        (f - 440.0).abs() <= 2.0,
        "{what}: dominant frequency {f} Hz"
    );
    let level = rms(middle);
    assert!(
        (level / expected_rms - 1.0).abs() < 0.15,
        "{what}: rms {level}, expected {expected_rms}"
    );
    // Zero crossings agree: 880 a second.
    let crossings = assert_440_hz_crossings(what, middle);
    eprintln!("{what}: {seconds:.3} s, {f} Hz, rms {level:.4}, {crossings:.0} zero crossings/s");
}

fn decode_with_ropus(packets: &[OpusPacket], pre_skip: u16) -> Vec<f32> {
    let mut decoder = ropus::Decoder::new(48_000, ropus::Channels::Stereo).unwrap();
    let mut out = Vec::new();
    for p in packets {
        let mut pcm = vec![0i16; FRAME_SAMPLES * 2];
        let n = decoder
            .decode(&p.data, &mut pcm, ropus::DecodeMode::Normal)
            .unwrap();
        assert_eq!(n, FRAME_SAMPLES);
        assert_eq!(skylark_media::opus::packet_samples(&p.data).unwrap(), 960);
        // Left channel; mono input is duplicated, so both are the same.
        out.extend(pcm.chunks_exact(2).map(|c| f32::from(c[0]) / 32768.0));
    }
    out.drain(..usize::from(pre_skip));
    out
}

/// A minimal Ogg Opus file (RFC 7845): one packet per page.
fn ogg_opus(packets: &[OpusPacket], pre_skip: u16) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut crc = 0u32;
        for &b in data {
            crc ^= u32::from(b) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04c1_1db7
                } else {
                    crc << 1
                };
            }
        }
        crc
    }
    fn page(out: &mut Vec<u8>, flags: u8, granule: u64, seq: u32, packet: &[u8]) {
        let mut p = b"OggS\0".to_vec();
        p.push(flags);
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&0x5ca1_ab1eu32.to_le_bytes());
        p.extend_from_slice(&seq.to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        let mut lacing = vec![255u8; packet.len() / 255];
        lacing.push((packet.len() % 255) as u8);
        p.push(lacing.len() as u8);
        p.extend_from_slice(&lacing);
        p.extend_from_slice(packet);
        let c = crc(&p);
        p[22..26].copy_from_slice(&c.to_le_bytes());
        out.extend_from_slice(&p);
    }
    let mut out = Vec::new();
    let head = skylark_media::flv::OpusHead::new(2, pre_skip).to_bytes();
    page(&mut out, 0x02, 0, 0, &head);
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&7u32.to_le_bytes());
    tags.extend_from_slice(b"skylark");
    tags.extend_from_slice(&0u32.to_le_bytes());
    page(&mut out, 0, 0, 1, &tags);
    let mut granule = 0;
    for (i, p) in packets.iter().enumerate() {
        granule += u64::from(p.duration);
        let eos = if i + 1 == packets.len() { 0x04 } else { 0 };
        page(&mut out, eos, granule, 2 + i as u32, &p.data);
    }
    out
}

fn decode_with_ffmpeg(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-c:a",
            "libopus",
            "-i",
        ])
        .arg(path)
        .args(["-f", "f32le", "-ac", "2", "-ar", "48000", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The left channel (FFmpeg's own downmix would add 3 dB).
    out.stdout
        .chunks_exact(8)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn a_440_hz_aac_tone_becomes_a_440_hz_opus_tone() {
    if !ffmpeg_available() {
        return;
    }
    // 44.1 kHz mono (resampled), 48 kHz stereo (not), 22.05 kHz mono.
    for (rate, channels) in [(44_100, 1), (48_000, 2), (22_050, 1)] {
        let what = format!("{rate} Hz × {channels}");
        // FFmpeg's sine has amplitude 1/8 (RMS 0.088); its mono → stereo
        // upmix lowers each channel by 3 dB.
        let level = if channels == 1 { 0.0884 } else { 0.0625 };
        let (packets, pre_skip, input_rate) = transcode(&aac_tone(rate, channels));
        assert_eq!(input_rate, rate);
        // Timestamps: contiguous 20 ms packets from 0.
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.pts_48k, i as u64 * 960, "{what}");
            assert_eq!(p.duration, 960);
        }
        check_tone(
            &format!("{what}, ropus"),
            &decode_with_ropus(&packets, pre_skip),
            level,
        );

        let file = scratch(&format!("out-{rate}-{channels}.opus"));
        std::fs::write(&file, ogg_opus(&packets, pre_skip)).unwrap();
        check_tone(
            &format!("{what}, ffmpeg"),
            &decode_with_ffmpeg(&file),
            level,
        );
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,sample_rate,channels",
            ])
            .args(["-of", "csv=p=0"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&probe.stdout).trim(),
            "opus,48000,2"
        );
    }
}

#[test]
fn lost_frames_are_bridged_with_silence() {
    let through = mono_tone_through(&mut |t, i, payload, _| {
        // Frames 10 and 11 are lost; frame 20 does not decode.
        if i == 10 || i == 11 {
            return Vec::new();
        }
        let pts = i as u64 * 1024;
        if i == 20 {
            // A program config element: the decoder refuses it.
            assert!(t.push(&[0xa0, 0, 0, 0], pts).is_err());
            return Vec::new();
        }
        t.push(payload, pts).unwrap()
    });
    let Some((packets, t, frames)) = through else {
        return;
    };
    assert_eq!(t.stats().resyncs, 0);
    assert_eq!(t.stats().decode_errors, 1);
    // Contiguous packets covering every frame's time, as if none were lost.
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.pts_48k, i as u64 * 960);
    }
    // The encoder's lookahead is dropped at the start (output time = input time).
    let total = frames as u64 * 1024 - u64::from(t.pre_skip());
    assert_eq!(packets.len() as u64, total.div_ceil(960));
}

#[test]
fn a_gap_in_timestamps_starts_a_new_timeline() {
    let through = mono_tone_through(&mut |t, i, payload, _| {
        // Millisecond-rounded timestamps (as RTMP gives), and a 2 s gap
        // after frame 20.
        let ms = (i as u64 * 1024 * 1000).div_ceil(48_000);
        let ms = if i > 20 { ms + 2000 } else { ms };
        t.push(payload, ms * 48).unwrap()
    });
    let Some((packets, t, _)) = through else {
        return;
    };
    assert_eq!(t.stats().resyncs, 1);
    let jump = packets
        .windows(2)
        .position(|w| w[1].pts_48k != w[0].pts_48k + 960)
        .expect("a jump");
    // 21 frames of 1024 samples = 21504 samples: 22.4 packets, padded to 23.
    assert_eq!(jump + 1, 23);
    let expected = (21u64 * 1024 * 1000).div_ceil(48_000) * 48 + 2000 * 48;
    assert_eq!(packets[jump + 1].pts_48k, expected);
}

/// Lip sync of RTMP sources: WebRTC receivers play an Opus packet's decoded audio at its
/// RTP time, and sync it to video by the timestamps alone (the SFU's sender reports map
/// both tracks' media time to one clock). So a sound must come out of the transcoder at
/// the time its AAC frame's FLV timestamp says, which is the time of the video frame
/// shown with it. FFmpeg publishes as OBS does: a flash and a beep at each whole second
/// (the beep sample-exact), H.264 + AAC in FLV, its AAC priming (1024 samples) in the
/// timestamps (audio starts at 0, video at 23 ms). Each beep must start within 1 ms of
/// its flash's frame time; the Opus encoder's lookahead alone would make it 6.5 ms late.
#[test]
fn a_beep_leaves_the_transcoder_at_its_flash_frame_time() {
    use skylark_media::flv::{parse_file_header, AudioTag, FlvTag, VideoPacket, VideoTag};
    if !ffmpeg_available() {
        return;
    }
    let flv = ffmpeg_lavfi(
        "flash-beep.flv",
        &[
            "color=c=black:size=64x64:rate=30,drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'",
            "aevalsrc='if(lt(mod(t,1),0.1),0.5*sin(2*PI*1000*t),0)':s=44100",
        ],
        &[
            "-t",
            "3.5",
            "-c:v",
            "libx264",
            "-tune",
            "zerolatency",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ],
    );

    // The tags as RTMP would carry them; audio as the ingest feeds it (ms × 48).
    let (_, mut at) = parse_file_header(&flv).unwrap();
    let mut first_frame_ms = None;
    let mut transcoder = None;
    let mut packets = Vec::new();
    while at < flv.len() {
        let (tag, used) = FlvTag::parse(&flv[at..]).unwrap();
        at += used;
        match tag.tag_type {
            9 => {
                if let VideoPacket::AvcNalus { .. } = VideoTag::parse(tag.body).unwrap().packet {
                    first_frame_ms.get_or_insert(u64::from(tag.timestamp));
                }
            }
            8 => match AudioTag::parse(tag.body).unwrap() {
                AudioTag::AacSequenceHeader(asc) => {
                    transcoder = Some(AacToOpus::new(&asc).unwrap())
                }
                AudioTag::AacRaw(frame) => {
                    let t = transcoder.as_mut().expect("AAC config first");
                    packets.extend(t.push(frame, u64::from(tag.timestamp) * 48).unwrap());
                }
                other => panic!("unexpected audio tag {other:?}"),
            },
            _ => {}
        }
    }
    packets.extend(transcoder.unwrap().flush().unwrap());
    // FFmpeg's first frame is its source time 0: the flashes' frames are 1 s apart from it.
    let first_frame_ms = first_frame_ms.unwrap();
    assert!(
        first_frame_ms > 0,
        "the AAC priming shifts video, not audio"
    );

    // Decoded as a WebRTC receiver plays it: each packet at its timestamp, no pre-skip.
    let mut timeline = vec![0f32; (packets.last().unwrap().pts_48k as usize) + FRAME_SAMPLES];
    let mut decoder = ropus::Decoder::new(48_000, ropus::Channels::Stereo).unwrap();
    for p in &packets {
        let mut pcm = vec![0i16; FRAME_SAMPLES * 2];
        decoder
            .decode(&p.data, &mut pcm, ropus::DecodeMode::Normal)
            .unwrap();
        for (i, c) in pcm.chunks_exact(2).enumerate() {
            timeline[p.pts_48k as usize + i] = f32::from(c[0]) / 32768.0;
        }
    }
    // Onsets: the first sample above 0.1 after 300 ms of quiet (as the browser bench).
    let mut onsets = Vec::new();
    let mut quiet = usize::MAX;
    for (i, v) in timeline.iter().enumerate() {
        if v.abs() > 0.1 {
            if quiet >= 14_400 {
                onsets.push(i as i64);
            }
            quiet = 0;
        } else {
            quiet = quiet.saturating_add(1);
        }
    }
    assert_eq!(onsets.len(), 4, "beeps at 0, 1, 2 and 3 s: {onsets:?}");
    for (k, onset) in onsets.iter().enumerate() {
        let flash = (first_frame_ms as i64 + 1000 * k as i64) * 48;
        let late_ms = (onset - flash) as f64 / 48.0;
        eprintln!("beep {k}: {late_ms:+.2} ms after its flash frame");
        assert!(
            late_ms.abs() <= 1.0,
            "beep {k} starts {late_ms:+.2} ms from its flash frame (onsets {onsets:?}, first frame {first_frame_ms} ms)"
        );
    }
}
