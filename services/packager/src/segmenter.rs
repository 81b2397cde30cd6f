//! Where a segment is cut: a sans-IO state machine from relay frames (H.264 access
//! units, Opus packets) to CMAF output — the init segment, LL-HLS parts, and segment
//! boundaries. No clocks: the caller passes wall-clock time in, so tests replay
//! streams in microseconds.
//!
//! Rules: a segment starts at a keyframe once the current one reached the target
//! duration, or at the keyframe it asked for; a part closes before it would outgrow
//! `part_target` of video. When the publisher's GOP would carry a segment past what
//! rounds to the target (RFC 8216: `EXTINF` rounded ≤ `EXT-X-TARGETDURATION`), the
//! segmenter asks for a keyframe [`KEYFRAME_LEAD`] before the target, which leaves the
//! request's round trip (packager → SFU → publisher's encoder → back) that much time.
//! Video samples are held one frame so each gets its exact duration from the next
//! timestamp; Opus durations come from the TOC byte, AAC's from its config. An RTMP
//! source's own AAC is preferred over the Opus the ingest transcodes for WebRTC.
//!
//! Which audio a rendition carries is settled when an epoch starts and written into
//! its init segment: a track the init declares but no sample fills leaves MSE with an
//! empty audio buffer and the player stuck at time 0 (hls.js with a video-only RTMP
//! source). A publisher's tracks are announced with their first frames, so the first
//! keyframe waits up to [`AUDIO_WAIT`] of video for an audio track before the epoch
//! starts without one.

use bytes::Bytes;
use skylark_media::aac::AudioSpecificConfig;
use skylark_media::fmp4::{self, Codec, Sample, Track, TrackFragment};
use skylark_media::h264::{self, AvcDecoderConfigurationRecord};
use skylark_media::hls::Variant;
use skylark_media::opus::Toc;
use skylark_proto::sfu::v1 as pb;
use std::time::Duration;

const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;
const VIDEO_TIMESCALE: u32 = 90_000;
/// The clock of relay audio: Opus's own, and the RTMP ingest's AAC rebased to it.
const RELAY_AUDIO_CLOCK: u64 = 48_000;
/// How long before the segment target a keyframe is requested. Chromium on loopback
/// answers in 30–100 ms (1.53–1.60 s segments); the SFU may hold a request up to 300 ms
/// (coalescing) and a real network adds its round trip: a keyframe may come up to 1 s
/// after the request and the segment still rounds to the target.
pub const KEYFRAME_LEAD: Duration = Duration::from_millis(500);
/// How much video an epoch's start waits for an audio track to be announced: encoders
/// interleave audio within tens of ms of the first keyframe; a video-only stream starts
/// this much later (its frames are kept, not dropped).
pub const AUDIO_WAIT: Duration = Duration::from_millis(500);
/// The furthest an RTMP source's first AAC frame may follow the epoch's keyframe and
/// still be placed by its time (see `Segmenter::audio_start`): the SFU's GOP cache span.
const MAX_AUDIO_LEAD: Duration = Duration::from_secs(10);
/// Frames held while waiting, whatever their timestamps say.
const MAX_START_QUEUE: usize = 90;

/// `PART-TARGET` for parts of about `nominal`: 10 % above it. RFC 8216bis §4.4.4.9 puts
/// every part within 85–100 % of `PART-TARGET` (bar independent parts and a segment's
/// last), and frames are whole: a capture clock's six 30 fps frames last 197–203 ms, and
/// with `PART-TARGET` at 200 ms a 203 ms run closed a frame early at 167 ms, under the
/// floor. At 220 ms the whole frames nearest 200 ms fit at 15, 20, 24, 25, 30 and 60 fps.
pub fn part_target(nominal: Duration) -> Duration {
    nominal.mul_f64(1.1)
}

/// How long (90 kHz) a part's close waits for the audio that straddles its end.
const AUDIO_CUT_WAIT: u64 = 9_000;

/// The audio an epoch muxes next to the video.
#[derive(Debug, Clone, PartialEq)]
enum Audio {
    /// Not settled yet: the epoch has not started.
    Undecided,
    /// The publisher sends none: video-only init segment and `CODECS`.
    Absent,
    Opus(String),
    /// An RTMP publisher's AAC, passed through.
    Aac {
        track: String,
        config: AudioSpecificConfig,
    },
}

impl Audio {
    fn track(&self) -> Option<&str> {
        match self {
            Audio::Opus(t) | Audio::Aac { track: t, .. } => Some(t),
            Audio::Absent | Audio::Undecided => None,
        }
    }

    /// The audio track's timescale (its sample rate).
    fn timescale(&self) -> u64 {
        match self {
            Audio::Aac { config, .. } => u64::from(config.output_sampling_frequency()).max(1),
            _ => RELAY_AUDIO_CLOCK,
        }
    }
}
/// The codec and picture facts of an init segment, as the multivariant playlist
/// advertises them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamInfo {
    /// RFC 6381 codecs, e.g. `avc1.42e01f,opus`.
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    /// Peak bits per second seen in a segment.
    pub bandwidth: u64,
}

/// What the segmenter produced.
#[derive(Debug, Clone, PartialEq)]
pub enum SegOutput {
    /// A new init segment (first keyframe, new parameter sets, a new publisher or layer)
    /// for the segments from the next one on.
    Init {
        bytes: Bytes,
        info: StreamInfo,
        /// The next segment follows a discontinuity (every init but a stream's first).
        discontinuity: bool,
    },
    /// The next segment follows a discontinuity and a new init segment, not written yet
    /// (a publisher or layer change): its tags go ahead of the hint of its first part.
    NextInit,
    /// A part of segment `msn`.
    Part {
        msn: u64,
        bytes: Bytes,
        duration: f64,
        independent: bool,
        pdt_ms: i64,
        discontinuity: bool,
    },
    /// Segment `msn` is complete.
    SegmentDone { msn: u64, duration: f64 },
    /// The GOP outlasts the segment target: ask the publisher for a keyframe.
    RequestKeyframe,
    /// The rendition's layer is gone with its publisher: unlist it.
    Inactive,
    /// A one-picture MP4 of a recent keyframe (see `fmp4::still`): the room's thumbnail.
    Still(Bytes),
}

/// Media time between two stills: a thumbnail refreshed every few seconds.
const STILL_EVERY: u64 = 2 * VIDEO_TIMESCALE as u64;

struct Pending {
    dts: u64,
    data: Bytes,
    keyframe: bool,
}

#[derive(Clone, Copy)]
struct PendingCut {
    at: u64,
    segment: bool,
    now_ms: i64,
}

/// The cutting state of one video layer's CMAF output: the current epoch (tracks, audio
/// choice, decode-time bases), the held frame and the open part and segment.
pub struct Segmenter {
    segment_target: u64,
    part_target: u64,
    video_track: Option<String>,
    /// The first Opus and AAC tracks announced in this epoch.
    opus_track: Option<String>,
    aac_track: Option<(String, AudioSpecificConfig)>,
    audio: Audio,
    /// The epoch's first keyframe and what followed it, while `audio` is undecided.
    start_queue: Vec<(pb::Frame, i64)>,
    /// The tracks of the last init segment written.
    init_tracks: Option<Vec<Track>>,
    /// First RTP time of each track in this epoch (decode time zero).
    video_base: Option<u64>,
    audio_base: Option<u64>,
    /// Wall clock (ms) at decode time zero of this epoch.
    epoch_wall_ms: i64,
    /// Wall clock (ms) of decode time zero of the room's timeline, when renditions share one.
    timeline_zero_ms: Option<i64>,
    /// Decode time (90 kHz) where this epoch starts on the continuous output timeline.
    epoch_offset: u64,
    held: Option<Pending>,
    /// A part (and segment) boundary reached by the video, waiting for the audio that
    /// straddles it (see [`Segmenter::cut`]).
    cut_pending: Option<PendingCut>,
    /// Video that arrived while a cut waits for audio, replayed after the cut.
    cut_wait: Vec<(pb::Frame, i64)>,
    /// New parameter sets' init tracks, written when the pending cut closes the segment.
    next_init: Option<Vec<Track>>,
    part_video: Vec<Sample>,
    part_video_start: Option<u64>,
    part_audio: Vec<Sample>,
    part_audio_start: Option<u64>,
    /// Output audio decode time (48 kHz) of the next sample.
    audio_next_dts: Option<u64>,
    msn: u64,
    segment_start: Option<u64>,
    segment_duration: u64,
    part_independent: bool,
    part_wall_ms: i64,
    discontinuity: bool,
    sequence: u32,
    last_video_dts: u64,
    /// The newest part handed out: its segment, wall clock (ms), and whether it was its
    /// segment's last; and what [`Segmenter::pace`] holds back.
    last_part: Option<(u64, i64, bool)>,
    paced: Vec<SegOutput>,
    keyframe_asked_at: Option<u64>,
    /// Decode time of the newest still.
    last_still: Option<u64>,
    /// Decode time of the newest keyframe, and the publisher's own GOP: learnt only
    /// from keyframes nobody asked for, since a requested one restarts its cadence.
    last_keyframe: Option<u64>,
    gop: Option<u64>,
    asked_since_keyframe: bool,
    /// [`KEYFRAME_LEAD`] in 90 kHz ticks (at most a quarter of the target).
    keyframe_lead: u64,
    /// A keyframe due before this far into a segment needs no request: the segment
    /// still rounds to the target (100 ms short of the half second that rounds up).
    natural_limit: u64,
}

impl Segmenter {
    pub fn new(segment_target: Duration, part_target: Duration) -> Self {
        let ticks = |secs: f64| (secs * VIDEO_TIMESCALE as f64) as u64;
        let target = ticks(segment_target.as_secs_f64());
        Self {
            keyframe_lead: ticks(KEYFRAME_LEAD.as_secs_f64()).min(target / 4),
            natural_limit: ticks(segment_target.as_secs_f64().ceil() + 0.4),
            last_keyframe: None,
            last_still: None,
            gop: None,
            asked_since_keyframe: false,
            segment_target: target,
            part_target: (part_target.as_secs_f64() * VIDEO_TIMESCALE as f64) as u64,
            video_track: None,
            opus_track: None,
            aac_track: None,
            audio: Audio::Undecided,
            start_queue: Vec::new(),
            init_tracks: None,
            video_base: None,
            audio_base: None,
            epoch_wall_ms: 0,
            timeline_zero_ms: None,
            epoch_offset: 0,
            held: None,
            cut_pending: None,
            cut_wait: Vec::new(),
            next_init: None,
            part_video: Vec::new(),
            part_video_start: None,
            part_audio: Vec::new(),
            part_audio_start: None,
            audio_next_dts: None,
            msn: 0,
            segment_start: None,
            segment_duration: 0,
            part_independent: false,
            part_wall_ms: 0,
            discontinuity: false,
            sequence: 0,
            last_video_dts: 0,
            keyframe_asked_at: None,
            last_part: None,
            paced: Vec::new(),
        }
    }

    /// Puts decode time zero at this wall-clock time: an epoch then starts at its first
    /// keyframe's offset from it, so renditions started at different moments line up.
    pub fn set_timeline_zero(&mut self, zero_ms: Option<i64>) {
        self.timeline_zero_ms = zero_ms;
    }

    /// Registers a relay track: the first video track (the caller gives each rendition
    /// its layer's) and the first audio track.
    pub fn add_track(&mut self, t: &pb::TrackInfo) {
        if t.kind == pb::TrackKind::Video as i32 && t.codec.eq_ignore_ascii_case("H264") {
            if self.video_track.is_none() {
                self.video_track = Some(t.track_id.clone());
            }
        } else if t.kind == pb::TrackKind::Audio as i32
            && t.codec.eq_ignore_ascii_case("opus")
            && self.opus_track.is_none()
        {
            self.opus_track = Some(t.track_id.clone());
        } else if let Some(config) = crate::track::aac_config(t) {
            if self.aac_track.is_none() && Track::aac(AUDIO_TRACK, config.clone()).is_ok() {
                self.aac_track = Some((t.track_id.clone(), config));
            }
        }
    }

    /// The audio this epoch would carry with the tracks known now: the publisher's AAC
    /// (RTMP, which announces it before the Opus it transcodes from it), else Opus.
    fn audio_candidate(&self) -> Option<Audio> {
        match (&self.aac_track, &self.opus_track) {
            (Some((track, config)), _) => Some(Audio::Aac {
                track: track.clone(),
                config: config.clone(),
            }),
            (None, Some(opus)) => Some(Audio::Opus(opus.clone())),
            (None, None) => None,
        }
    }

    /// A new publisher: close what is open, mark the next part as a discontinuity, and
    /// start a new epoch (timestamps restart) once its first keyframe arrives.
    pub fn publisher_changed(&mut self, out: &mut Vec<SegOutput>) {
        self.restart_epoch(out);
        self.video_track = None;
        self.opus_track = None;
        self.aac_track = None;
        self.audio = Audio::Undecided;
    }

    /// Another video track feeds this output from its next keyframe on (a rendition's
    /// layer paused and a layer still sending stands in, or the layer came back): close
    /// what is open and continue after a discontinuity, on the shared wall-clock
    /// timeline, so the gap while switching is a hole in time, not a shift of it.
    pub fn switch_video(&mut self, track: &str, out: &mut Vec<SegOutput>) {
        if self.video_track.as_deref() == Some(track) {
            return;
        }
        self.restart_epoch(out);
        self.video_track = Some(track.to_owned());
    }

    /// Closes what is open and starts a new epoch after a discontinuity: the next
    /// keyframe sets the video's decode-time base and, after it, the audio's (timestamps
    /// restart), past the last frame written.
    fn restart_epoch(&mut self, out: &mut Vec<SegOutput>) {
        self.flush(out);
        // The next part is hinted from now on, before the new epoch's parameter sets and
        // tracks are known (a publisher back without its microphone has other tracks):
        // announce a new init now, and write it at the epoch's first keyframe.
        if self.init_tracks.take().is_some() {
            out.push(SegOutput::NextInit);
        }
        // Audio past the last video frame has no part to go in.
        self.part_audio.clear();
        self.part_audio_start = None;
        self.start_queue.clear();
        self.video_base = None;
        self.audio_base = None;
        self.audio_next_dts = None;
        self.epoch_offset = self.last_video_dts + 3000;
        self.discontinuity = true;
        self.last_keyframe = None;
        self.gop = None;
        self.asked_since_keyframe = false;
    }

    /// The video track feeding this output.
    pub fn video_track(&self) -> Option<&str> {
        self.video_track.as_deref()
    }

    /// The picture width of the last init segment written.
    pub fn width(&self) -> Option<u16> {
        match self.init_tracks.as_ref()?.first()?.codec {
            Codec::Avc { width, .. } => Some(width),
            _ => None,
        }
    }

    /// Closes the open part and segment (end of stream or publisher change).
    pub fn flush(&mut self, out: &mut Vec<SegOutput>) {
        out.append(&mut self.paced);
        self.finish_cut(out);
        if let Some(p) = self.held.take() {
            // The last frame has no successor: give it the nominal 30 fps duration.
            self.append_video(p, 3000);
        }
        self.close_part(out);
        self.close_segment(out);
    }

    /// One relay frame; `now_ms` is the wall clock (for `EXT-X-PROGRAM-DATE-TIME`).
    pub fn push(&mut self, f: &pb::Frame, now_ms: i64, out: &mut Vec<SegOutput>) {
        let from = out.len();
        self.push_frame(f, now_ms, out);
        self.pace(from, now_ms, out);
    }

    /// Holds a segment's last part (and what follows it) until a part's time
    /// (`PART-TARGET`) has passed since the part before it was handed out. hls.js 1.7
    /// counts a segment as buffered once its buffer reaches within 0.2 s of the segment's
    /// end (its fragment tracker's padding): when the playlist that completes a segment
    /// arrived while hls.js was still appending the part before the last (a last part
    /// of 1–5 frames, or parts delivered in a burst), it never loaded the last part and
    /// stalled until that segment's parts left the playlist. A whole part's time is
    /// longer than it took to fetch and append a part (≤ 0.21 s at load 10). The next
    /// segment's first part then waits half that, so that it never joins the playlist
    /// that completes the segment (parts delivered in a burst did): listed together,
    /// hls.js skipped the last part for the next segment.
    fn pace(&mut self, from: usize, now_ms: i64, out: &mut Vec<SegOutput>) {
        let mut queue = std::mem::take(&mut self.paced);
        queue.extend(out.drain(from..));
        let hold = (self.part_target * 1000 / VIDEO_TIMESCALE as u64) as i64;
        let mut queue = queue.into_iter().peekable();
        while let Some(o) = queue.next() {
            // Keyframe requests are not media: they never wait.
            if !self.paced.is_empty() && !matches!(o, SegOutput::RequestKeyframe) {
                self.paced.push(o);
                continue;
            }
            if let SegOutput::Part { msn, .. } = &o {
                let last =
                    matches!(queue.peek(), Some(SegOutput::SegmentDone { msn: m, .. }) if m == msn);
                let due = match self.last_part {
                    Some((_, t, _)) if last => t + hold,
                    // The next segment's first part comes in a later playlist than the
                    // last part: listed together, hls.js skipped the last part too.
                    Some((m, end, true)) if m != *msn => end + hold / 2,
                    _ => now_ms,
                };
                if now_ms < due {
                    self.paced.push(o);
                    continue;
                }
                self.last_part = Some((*msn, now_ms, last));
            }
            out.push(o);
        }
    }

    fn push_frame(&mut self, f: &pb::Frame, now_ms: i64, out: &mut Vec<SegOutput>) {
        let video = Some(&f.track_id) == self.video_track.as_ref();
        if self.audio == Audio::Undecided {
            if video {
                self.queue_start(f, now_ms, out);
            }
            self.maybe_start(out);
            if video {
                return;
            }
        } else if video {
            self.push_video_or_wait(f, now_ms, out);
            return;
        }
        if self.audio.track() == Some(f.track_id.as_str()) {
            self.push_audio(f, out);
        }
    }

    /// Holds the epoch's first keyframe and its successors until the audio is settled.
    fn queue_start(&mut self, f: &pb::Frame, now_ms: i64, out: &mut Vec<SegOutput>) {
        if self.start_queue.is_empty() {
            let nalus: Vec<&[u8]> = h264::annexb_nalus(&f.data).collect();
            if !h264::is_keyframe(&nalus) {
                out.push(SegOutput::RequestKeyframe);
                return;
            }
        }
        self.start_queue.push((f.clone(), now_ms));
    }

    /// Starts the epoch once an audio track is known or the wait for one is over, and
    /// replays the held video into it.
    fn maybe_start(&mut self, out: &mut Vec<SegOutput>) {
        let (Some((first, _)), Some((last, _))) =
            (self.start_queue.first(), self.start_queue.last())
        else {
            return;
        };
        let waited = last.rtp_time.saturating_sub(first.rtp_time)
            >= (AUDIO_WAIT.as_secs_f64() * VIDEO_TIMESCALE as f64) as u64
            || self.start_queue.len() >= MAX_START_QUEUE;
        let audio = match self.audio_candidate() {
            Some(a) => a,
            None if waited => Audio::Absent,
            None => return,
        };
        self.audio = audio;
        for (f, now_ms) in std::mem::take(&mut self.start_queue) {
            self.push_video(&f, now_ms, out);
        }
    }

    fn push_video(&mut self, f: &pb::Frame, now_ms: i64, out: &mut Vec<SegOutput>) {
        let nalus: Vec<&[u8]> = h264::annexb_nalus(&f.data).collect();
        let keyframe = h264::is_keyframe(&nalus);
        if self.video_base.is_none() {
            if !keyframe {
                out.push(SegOutput::RequestKeyframe);
                return;
            }
            let Some((sps, pps)) = h264::parameter_sets(&nalus) else {
                // Parameter sets may come out of band in theory; browsers and x264
                // repeat them with every IDR, so wait for one that has them.
                out.push(SegOutput::RequestKeyframe);
                return;
            };
            let Ok(config) = AvcDecoderConfigurationRecord::from_parameter_sets(sps, pps) else {
                out.push(SegOutput::RequestKeyframe);
                return;
            };
            let Some(tracks) = self.init_tracks_for(config) else {
                out.push(SegOutput::RequestKeyframe);
                return;
            };
            if self.init_tracks.as_ref() != Some(&tracks) {
                if let Some(init) = init_segment(&tracks, self.discontinuity) {
                    out.push(init);
                }
                self.init_tracks = Some(tracks);
            }
            self.video_base = Some(f.rtp_time);
            self.epoch_wall_ms = now_ms;
            if let Some(zero) = self.timeline_zero_ms {
                let since_zero = u64::try_from(now_ms - zero).unwrap_or(0) * 90;
                self.epoch_offset = self.epoch_offset.max(since_zero);
            }
        }
        let Some(base) = self.video_base else { return };
        let dts = self.epoch_offset + f.rtp_time.saturating_sub(base);
        if keyframe {
            if let Some(prev) = self.last_keyframe.filter(|&p| p < dts) {
                if !self.asked_since_keyframe {
                    self.gop = Some(dts - prev);
                }
            }
            self.last_keyframe = Some(dts);
            self.asked_since_keyframe = false;
        }
        // A cut still waiting for audio happens now, before the frame it waited at.
        self.finish_cut(out);
        if keyframe {
            if let Some(tracks) = self.changed_tracks(&nalus) {
                // New parameter sets mid-stream (an encoder that changed resolution
                // under load): samples carry no SPS/PPS, so the old init would decode
                // them as garbage (Shaka and video.js failed with a decode error). A new
                // init, from a new segment after EXT-X-DISCONTINUITY (RFC 8216 §4.3.2.3),
                // cut like any segment once the audio reaches the keyframe: audio before
                // it in the new segment put its start ahead of the video's, and hls.js,
                // which lines a discontinuity's earliest sample up with the playlist,
                // left a hole in the video there and stalled.
                if let Some(prev) = self.held.take() {
                    let duration = dts
                        .saturating_sub(prev.dts)
                        .clamp(1, VIDEO_TIMESCALE as u64);
                    self.append_video(prev, duration as u32);
                }
                self.next_init = Some(tracks);
                tracing::info!(msn = self.msn, "new H.264 parameter sets: new init segment");
                self.cut(dts, true, now_ms, out);
            }
        }
        if let Some(prev) = self.held.take() {
            let duration = dts
                .saturating_sub(prev.dts)
                .clamp(1, VIDEO_TIMESCALE as u64);
            // A part never outgrows PART-TARGET: with jittery timestamps it closes one
            // frame early rather than one frame late.
            let part_len: u64 = self.part_video.iter().map(|s| s.duration as u64).sum();
            if !self.part_video.is_empty() && part_len + duration > self.part_target {
                self.close_part(out);
            }
            self.append_video(prev, duration as u32);
            self.maybe_cut(dts, keyframe, now_ms, out);
        } else if self.segment_start.is_none() {
            self.start_segment(dts, now_ms);
        }
        // Parameter sets travel in the init segment; samples keep only picture data.
        let data = h264::nalus_to_avcc(nalus.iter().filter(|n| h264::is_sample_nal(n)));
        if keyframe && self.last_still.is_none_or(|t| dts >= t + STILL_EVERY) {
            let video = self.init_tracks.as_ref().and_then(|t| t.first());
            if let Some(still) = video.and_then(|v| fmp4::still(v, data.clone()).ok()) {
                self.last_still = Some(dts);
                out.push(SegOutput::Still(still));
            }
        }
        self.held = Some(Pending {
            dts,
            data,
            keyframe,
        });
        self.last_video_dts = dts;
    }

    fn push_audio(&mut self, f: &pb::Frame, out: &mut Vec<SegOutput>) {
        // Audio starts with the first video keyframe so both tracks share time zero.
        if self.video_base.is_none() || f.data.is_empty() {
            return;
        }
        let samples = match &self.audio {
            Audio::Opus(_) => Toc::from_byte(f.data[0]).frame_samples().max(1),
            Audio::Aac { config, .. } => config.samples_per_frame(),
            Audio::Absent | Audio::Undecided => return,
        };
        let timescale = self.audio.timescale();
        let first = self.audio_base.is_none();
        let base = match self.audio_base {
            Some(b) => b,
            None => *self.audio_base.insert(self.audio_start(f.rtp_time)),
        };
        let epoch_audio = self.epoch_offset * timescale / VIDEO_TIMESCALE as u64;
        let at = epoch_audio + f.rtp_time.saturating_sub(base) * timescale / RELAY_AUDIO_CLOCK;
        if first {
            self.fill_silence(at);
        }
        let dts = self.audio_next_dts.unwrap_or(at);
        self.part_audio_start.get_or_insert(dts);
        self.audio_next_dts = Some(dts + samples as u64);
        self.part_audio.push(Sample {
            duration: samples,
            data: Bytes::copy_from_slice(&f.data),
            keyframe: true,
            composition_offset: 0,
        });
        if self.cut_pending.is_some_and(|c| self.audio_covers(c.at)) {
            self.finish_cut(out);
        }
    }

    /// The relay audio time (48 kHz) at the epoch's video decode time zero, from the
    /// epoch's first audio frame at `first`. An RTMP source's AAC shares the video's
    /// clock (both are its ms times): its first frame goes where its time says, which
    /// matters when the video starts from a GOP cached before the audio that follows
    /// (a packager's pull: that audio is up to a GOP later than the keyframe). Other
    /// audio (WebRTC Opus, whose RTP clock is unrelated to the video's) and times too far
    /// apart to be one clock start with the keyframe.
    fn audio_start(&self, first: u64) -> u64 {
        let (Audio::Aac { .. }, Some(video)) = (&self.audio, self.video_base) else {
            return first;
        };
        let video_at = video * RELAY_AUDIO_CLOCK / VIDEO_TIMESCALE as u64;
        let lead = first.saturating_sub(video_at);
        if lead == 0 || lead > MAX_AUDIO_LEAD.as_secs() * RELAY_AUDIO_CLOCK {
            return first;
        }
        video_at
    }

    /// Fills the audio with silent frames from where it is due (after what was written,
    /// else at the open part's first video frame) up to `until` (audio ticks), so that a
    /// part's audio spans its video (`media-av-aligned`) when the epoch's audio begins
    /// later than its video: after a GOP the SFU cached (video only) and handed over.
    /// AAC-LC mono and stereo only (`AudioSpecificConfig::silent_frame`); other audio
    /// leaves the gap.
    fn fill_silence(&mut self, until: u64) {
        let Audio::Aac { config, .. } = &self.audio else {
            return;
        };
        let Some(silent) = config.silent_frame() else {
            return;
        };
        let samples = config.samples_per_frame();
        let timescale = self.audio.timescale();
        let video_start = self
            .part_video_start
            .or(self.held.as_ref().map(|h| h.dts))
            .map(|v| v * timescale / VIDEO_TIMESCALE as u64);
        let Some(mut next) = self.audio_next_dts.or(video_start) else {
            return;
        };
        while next + u64::from(samples) <= until {
            self.part_audio_start.get_or_insert(next);
            self.part_audio.push(Sample {
                duration: samples,
                data: Bytes::from_static(silent),
                keyframe: true,
                composition_offset: 0,
            });
            next += u64::from(samples);
        }
        self.audio_next_dts = Some(next);
    }

    /// Whether the audio received reaches decode time `at` (90 kHz).
    fn audio_covers(&self, at: u64) -> bool {
        match self.audio {
            Audio::Absent | Audio::Undecided => true,
            _ => self
                .audio_next_dts
                .is_some_and(|n| n * VIDEO_TIMESCALE as u64 / self.audio.timescale() >= at),
        }
    }

    /// Closes the part (and the segment, when `segment`) at video decode time `at`, once
    /// the audio reaches `at` or the next video frame arrives, whichever comes first.
    /// Audio travels apart from video (RTMP interleaving, the relay), and a part whose
    /// audio ends a few ms before its video leaves the player's buffered range inside
    /// that part: hls.js then reloaded the part over and over at a stream's start.
    fn cut(&mut self, at: u64, segment: bool, now_ms: i64, out: &mut Vec<SegOutput>) {
        self.cut_pending = Some(PendingCut {
            at,
            segment,
            now_ms,
        });
        if self.audio_covers(at) {
            self.finish_cut(out);
        }
    }

    fn finish_cut(&mut self, out: &mut Vec<SegOutput>) {
        let Some(c) = self.cut_pending.take() else {
            return;
        };
        self.close_part(out);
        if c.segment {
            self.close_segment(out);
            if let Some(tracks) = self.next_init.take() {
                self.discontinuity = true;
                if let Some(init) = init_segment(&tracks, true) {
                    out.push(init);
                }
                self.init_tracks = Some(tracks);
            }
            self.start_segment(c.at, c.now_ms);
        }
        for (f, now_ms) in std::mem::take(&mut self.cut_wait) {
            self.push_video_or_wait(&f, now_ms, out);
        }
    }

    /// Video waits while a cut waits for its audio, up to [`AUDIO_CUT_WAIT`] past the
    /// cut; after that the part closes with the audio it has.
    fn push_video_or_wait(&mut self, f: &pb::Frame, now_ms: i64, out: &mut Vec<SegOutput>) {
        if let (Some(c), Some(base)) = (self.cut_pending, self.video_base) {
            let dts = self.epoch_offset + f.rtp_time.saturating_sub(base);
            if dts < c.at + AUDIO_CUT_WAIT {
                self.cut_wait.push((f.clone(), now_ms));
                return;
            }
        }
        self.push_video(f, now_ms, out);
    }

    fn append_video(&mut self, p: Pending, duration: u32) {
        if self.part_video.is_empty() {
            self.part_video_start = Some(p.dts);
            self.part_independent = p.keyframe;
        }
        self.part_video.push(Sample {
            duration,
            data: p.data,
            keyframe: p.keyframe,
            composition_offset: 0,
        });
    }

    /// Before appending the frame at `dts`: close the part and/or segment if due, and
    /// ask for a keyframe if the segment would otherwise run too long.
    fn maybe_cut(&mut self, dts: u64, keyframe: bool, now_ms: i64, out: &mut Vec<SegOutput>) {
        let seg_start = self.segment_start.unwrap_or(dts);
        let seg_len = dts.saturating_sub(seg_start);
        let ask_from = self.segment_target.saturating_sub(self.keyframe_lead);
        // Where the publisher's next keyframe falls on its own cadence (after this one,
        // when this is a keyframe: the cadence was updated before the call).
        let next_natural = self.last_keyframe.zip(self.gop).map(|(l, g)| l + g);
        let limit = seg_start + self.natural_limit;
        if keyframe {
            let next_too_late = next_natural.is_none_or(|n| n >= limit);
            // At the target; at the keyframe we asked for, even a little before it; or
            // near the target when waiting for the next one would overshoot.
            if seg_len >= self.segment_target
                || self.keyframe_asked_at.is_some()
                || (seg_len >= ask_from && next_too_late)
            {
                self.cut(dts, true, now_ms, out);
                return;
            }
        }
        let part_start = self.part_video_start.unwrap_or(dts);
        if dts.saturating_sub(part_start) >= self.part_target {
            self.cut(dts, false, now_ms, out);
        }
        // A keyframe due in time on the publisher's cadence needs no request (a 1 s GOP
        // never gets one); one overdue or unknown does.
        let natural_in_time = next_natural.is_some_and(|n| n > dts && n < limit);
        // Repeated every lead while none comes: a request can be lost or coalesced away.
        if seg_len >= ask_from
            && !natural_in_time
            && self
                .keyframe_asked_at
                .is_none_or(|at| dts.saturating_sub(at) >= self.keyframe_lead.max(1))
        {
            self.keyframe_asked_at = Some(dts);
            self.asked_since_keyframe = true;
            out.push(SegOutput::RequestKeyframe);
        }
    }

    fn start_segment(&mut self, dts: u64, now_ms: i64) {
        self.segment_start = Some(dts);
        self.segment_duration = 0;
        self.keyframe_asked_at = None;
        self.part_wall_ms = self.epoch_wall_ms
            + (dts.saturating_sub(self.epoch_offset) * 1000 / VIDEO_TIMESCALE as u64) as i64;
        if self.part_wall_ms == 0 {
            self.part_wall_ms = now_ms;
        }
    }

    fn close_part(&mut self, out: &mut Vec<SegOutput>) {
        if self.part_video.is_empty() {
            return;
        }
        let video_start = self.part_video_start.unwrap_or(0);
        let duration: u64 = self.part_video.iter().map(|s| s.duration as u64).sum();
        if self.audio_base.is_none() && self.part_audio.is_empty() {
            // The audio has not begun (video from a cached GOP): silence to the video's
            // end, up to a frame past it, as real audio would.
            let timescale = self.audio.timescale();
            let frame = match &self.audio {
                Audio::Aac { config, .. } => u64::from(config.samples_per_frame()),
                _ => 0,
            };
            let end = (video_start + duration) * timescale / VIDEO_TIMESCALE as u64;
            self.fill_silence(end + frame.saturating_sub(1));
        }
        let video = std::mem::take(&mut self.part_video);
        let mut audio = std::mem::take(&mut self.part_audio);
        // Audio that starts at or after the video's end belongs to the next part.
        let audio_start = self.part_audio_start.unwrap_or(0);
        let video_end = video_start + duration;
        let timescale = self.audio.timescale();
        let mut t = audio_start;
        let keep = audio
            .iter()
            .take_while(|a| {
                let starts_before = t * VIDEO_TIMESCALE as u64 / timescale < video_end;
                t += u64::from(a.duration);
                starts_before
            })
            .count();
        let next_audio = audio.split_off(keep);
        let next_audio_start =
            audio_start + audio.iter().map(|a| u64::from(a.duration)).sum::<u64>();
        let mut tracks = vec![TrackFragment {
            track_id: VIDEO_TRACK,
            base_media_decode_time: video_start,
            samples: &video,
        }];
        if !audio.is_empty() {
            tracks.push(TrackFragment {
                track_id: AUDIO_TRACK,
                base_media_decode_time: self.part_audio_start.unwrap_or(0),
                samples: &audio,
            });
        }
        self.part_audio_start = (!next_audio.is_empty()).then_some(next_audio_start);
        self.part_audio = next_audio;
        self.part_video_start = None;
        self.sequence = self.sequence.wrapping_add(1);
        let bytes = match fmp4::fragment(self.sequence, &tracks) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "fragment not written; part dropped");
                return;
            }
        };
        let pdt_ms = self.epoch_wall_ms
            + (video_start.saturating_sub(self.epoch_offset) * 1000 / VIDEO_TIMESCALE as u64)
                as i64;
        out.push(SegOutput::Part {
            msn: self.msn,
            bytes,
            duration: duration as f64 / VIDEO_TIMESCALE as f64,
            independent: self.part_independent,
            pdt_ms,
            discontinuity: std::mem::take(&mut self.discontinuity),
        });
        self.segment_duration += duration;
    }

    fn close_segment(&mut self, out: &mut Vec<SegOutput>) {
        if self.segment_duration == 0 {
            return;
        }
        out.push(SegOutput::SegmentDone {
            msn: self.msn,
            duration: self.segment_duration as f64 / VIDEO_TIMESCALE as f64,
        });
        self.msn += 1;
        self.segment_duration = 0;
        self.segment_start = None;
    }

    /// The init tracks for a keyframe's parameter sets, when they differ from the
    /// current init's.
    fn changed_tracks(&self, nalus: &[&[u8]]) -> Option<Vec<Track>> {
        let (sps, pps) = h264::parameter_sets(nalus)?;
        let config = AvcDecoderConfigurationRecord::from_parameter_sets(sps, pps).ok()?;
        let tracks = self.init_tracks_for(config)?;
        (self.init_tracks.as_ref() != Some(&tracks)).then_some(tracks)
    }

    /// The init segment's tracks: the video, and the audio settled for this epoch.
    fn init_tracks_for(&self, config: AvcDecoderConfigurationRecord) -> Option<Vec<Track>> {
        let mut tracks = vec![Track::avc(VIDEO_TRACK, config).ok()?];
        match &self.audio {
            Audio::Opus(_) => tracks.push(Track::opus(AUDIO_TRACK, 2)),
            Audio::Aac { config, .. } => tracks.push(Track::aac(AUDIO_TRACK, config.clone()).ok()?),
            Audio::Absent | Audio::Undecided => {}
        }
        Some(tracks)
    }
}

fn init_segment(tracks: &[Track], discontinuity: bool) -> Option<SegOutput> {
    let bytes = fmp4::init_segment(tracks).ok()?;
    let v = Variant::from_tracks("", 0, tracks);
    Some(SegOutput::Init {
        bytes,
        info: StreamInfo {
            codecs: v.codecs,
            resolution: v.resolution,
            bandwidth: 0,
        },
        discontinuity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylark_loadgen::source::{OpusSource, VideoConfig, VideoSource};
    use skylark_media::fmp4::read;
    use skylark_media::hls::check;

    fn tracks(seg: &mut Segmenter) {
        seg.add_track(&video_track());
        seg.add_track(&pb::TrackInfo {
            track_id: "a".into(),
            kind: pb::TrackKind::Audio as i32,
            codec: "opus".into(),
            clock_rate: 48_000,
            fmtp: String::new(),
            rid: String::new(),
        });
    }

    /// Feeds `secs` of real H.264 (30 fps, GOP `gop`) and Opus (20 ms) from t=`start`.
    fn feed(
        seg: &mut Segmenter,
        secs: u64,
        gop: Duration,
        rtp_offset: u64,
        out: &mut Vec<SegOutput>,
    ) {
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: 600,
            gop,
        });
        let mut a = OpusSource::default();
        let mut next_audio_ms = 0;
        for i in 0..secs * 30 {
            let ms = i * 1000 / 30;
            while next_audio_ms <= ms {
                let p = a.next_packet();
                let f = pb::Frame {
                    track_id: "a".into(),
                    rtp_time: rtp_offset + p.rtp_time,
                    data: p.data.to_vec(),
                    ..Default::default()
                };
                seg.push(&f, 1_000_000 + next_audio_ms as i64, out);
                next_audio_ms += 20;
            }
            let fr = v.next_frame(0);
            let f = pb::Frame {
                track_id: "v".into(),
                rtp_time: rtp_offset + fr.rtp_time,
                keyframe: fr.keyframe,
                data: fr.data.to_vec(),
                ..Default::default()
            };
            seg.push(&f, 1_000_000 + ms as i64, out);
        }
    }

    /// The next 20 ms Opus packet of track `a`, as the relay carries it.
    fn opus_frame(a: &mut OpusSource) -> pb::Frame {
        let p = a.next_packet();
        pb::Frame {
            track_id: "a".into(),
            rtp_time: p.rtp_time,
            data: p.data.to_vec(),
            ..Default::default()
        }
    }

    /// A simulated publisher: 30 fps H.264 with `gop`, Opus every 20 ms, for `secs`. A
    /// keyframe request is answered `pli_delay` later (`None`: ignored, like RTMP), and
    /// `jitter` moves each frame's RTP time by a few ticks, as capture clocks do.
    fn simulate(
        seg: &mut Segmenter,
        secs: u64,
        gop: Duration,
        pli_delay: Option<Duration>,
        jitter: impl Fn(u64) -> i64,
    ) -> Vec<SegOutput> {
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: 300,
            gop,
        });
        let mut a = OpusSource::default();
        let mut out = Vec::new();
        let mut forced_at: Option<u64> = None;
        let mut next_audio_ms = 0;
        for i in 0..secs * 30 {
            let ms = i * 1000 / 30;
            while next_audio_ms <= ms {
                seg.push(
                    &opus_frame(&mut a),
                    1_000_000 + next_audio_ms as i64,
                    &mut out,
                );
                next_audio_ms += 20;
            }
            if forced_at.is_some_and(|at| ms >= at) {
                forced_at = None;
                v.force_keyframe();
            }
            let fr = v.next_frame(0);
            let f = pb::Frame {
                track_id: "v".into(),
                rtp_time: (fr.rtp_time as i64 + 90_000 + jitter(i)) as u64,
                keyframe: fr.keyframe,
                data: fr.data.to_vec(),
                ..Default::default()
            };
            let before = out.len();
            seg.push(&f, 1_000_000 + ms as i64, &mut out);
            let asked = out[before..]
                .iter()
                .any(|o| matches!(o, SegOutput::RequestKeyframe));
            if let (true, Some(d), None) = (asked, pli_delay, forced_at) {
                forced_at = Some(ms + d.as_millis() as u64);
            }
        }
        out
    }

    /// A segmenter with the packager's defaults: 2 s segments, parts of about 200 ms.
    fn segmenter() -> Segmenter {
        Segmenter::new(
            Duration::from_secs(2),
            part_target(Duration::from_millis(200)),
        )
    }

    /// The media playlist the packager would serve for these outputs, and what
    /// `hls::check` finds wrong in it and in the media it lists.
    fn served(out: Vec<SegOutput>) -> (String, Vec<check::Violation>) {
        let hls = crate::store::RoomHls::new(
            Duration::from_secs(2),
            part_target(Duration::from_millis(200)),
        );
        hls.apply(out.into_iter().map(|o| (String::new(), o)).collect());
        let (text, init) = hls
            .read_rendition("", |r| (r.playlist.render(), r.init.clone()))
            .unwrap_or_default();
        let pl = check::parse_media(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        let tracks = init.map(|i| read::tracks(&i).unwrap()).unwrap_or_default();
        let runs = |uri: &str| {
            let name = uri.strip_prefix("seg")?.strip_suffix(".m4s")?;
            let bytes = match name.split_once('.') {
                Some((msn, p)) => hls.part("", msn.parse().ok()?, p.parse().ok()?),
                None => hls.segment("", name.parse().ok()?),
            }?;
            read::track_runs(&bytes).ok()
        };
        let mut found = check::check_media(&pl);
        found.extend(check::check_media_timing(&pl, &tracks, &runs));
        (text, found)
    }

    /// No `hls::check` rule broken; returns (TARGETDURATION, longest EXTINF).
    fn assert_playlist_rules(out: Vec<SegOutput>) -> (u64, f64, String) {
        let (text, found) = served(out);
        assert!(found.is_empty(), "{found:#?}\n{text}");
        let pl = check::parse_media(&text).unwrap();
        assert!(
            pl.segments.iter().filter(|s| s.duration.is_some()).count() >= 3,
            "{text}"
        );
        let longest = pl
            .segments
            .iter()
            .filter_map(|s| s.duration)
            .fold(0.0, f64::max);
        // PART-HOLD-BACK follows the part target, not the segment target.
        let part_target = pl.part_target.unwrap_or_default();
        assert!(
            (pl.part_hold_back.unwrap_or_default() - 3.0 * part_target).abs() < 1e-3,
            "{text}"
        );
        (pl.target_duration.unwrap_or_default(), longest, text)
    }

    #[test]
    fn a_long_gop_publisher_that_honours_keyframe_requests_keeps_the_target() {
        for delay_ms in [50, 300, 700] {
            let mut seg = segmenter();
            tracks(&mut seg);
            let out = simulate(
                &mut seg,
                20,
                Duration::from_secs(3),
                Some(Duration::from_millis(delay_ms)),
                |_| 0,
            );
            let (target, longest, text) = assert_playlist_rules(out);
            assert_eq!(target, 2, "PLI answered after {delay_ms} ms:\n{text}");
            assert!(longest < 2.5, "{longest}");
        }
    }

    #[test]
    fn a_publisher_that_ignores_keyframe_requests_gets_an_honest_target() {
        let mut seg = segmenter();
        tracks(&mut seg);
        let out = simulate(&mut seg, 20, Duration::from_secs(3), None, |_| 0);
        let (target, longest, text) = assert_playlist_rules(out);
        assert!(
            (longest - 3.0).abs() < 0.01,
            "cut at its own keyframes: {longest}"
        );
        assert_eq!(target, 3, "the real maximum is advertised:\n{text}");
        assert!(
            text.contains("#EXT-X-PART-INF:PART-TARGET=0.22000\n"),
            "{text}"
        );
    }

    #[test]
    fn parts_never_outgrow_the_part_target_with_jittery_timestamps() {
        // Capture times a few ms off the 30 fps grid, as browsers stamp them.
        let jitter = |i: u64| [0, 270, -180, 450, -90][(i % 5) as usize];
        let mut seg = segmenter();
        tracks(&mut seg);
        let out = simulate(&mut seg, 12, Duration::from_secs(1), None, jitter);
        let (target, _, _) = assert_playlist_rules(out);
        assert_eq!(target, 2);
        // With PART-TARGET at the nominal 200 ms, six jittery frames overran it and the
        // part closed at five (167 ms), under §4.4.4.9's 85 % floor.
        let mut seg = Segmenter::new(Duration::from_secs(2), Duration::from_millis(200));
        tracks(&mut seg);
        let out = simulate(&mut seg, 12, Duration::from_secs(1), None, jitter);
        let hls = crate::store::RoomHls::new(Duration::from_secs(2), Duration::from_millis(200));
        hls.apply(out.into_iter().map(|o| (String::new(), o)).collect());
        let text = hls
            .read_rendition("", |r| r.playlist.render())
            .unwrap_or_default();
        let found = check::check_media(&check::parse_media(&text).unwrap());
        assert!(found.iter().any(|v| v.rule == "part-min"), "{text}");
    }

    fn video_track() -> pb::TrackInfo {
        pb::TrackInfo {
            track_id: "v".into(),
            kind: pb::TrackKind::Video as i32,
            codec: "H264".into(),
            clock_rate: 90_000,
            fmtp: String::new(),
            rid: String::new(),
        }
    }

    /// A segmenter of an RTMP room: its H.264 and AAC tracks.
    fn rtmp_segmenter() -> Segmenter {
        let mut seg = Segmenter::new(Duration::from_secs(2), Duration::from_millis(200));
        seg.add_track(&video_track());
        seg.add_track(&crate::track::rtmp_aac_track());
        seg
    }

    /// Where AAC frame `n` (1024 samples at 44.1 kHz) starts, in ms as RTMP times it.
    fn aac_ms(n: u64) -> u64 {
        n * 1024 * 1000 / 44_100
    }

    /// AAC frame `n` as the relay carries it: the RTMP ms time rebased to 48 kHz.
    fn aac_frame(n: u64) -> pb::Frame {
        pb::Frame {
            track_id: "local-aac".into(),
            rtp_time: aac_ms(n) * 48,
            data: b"AACFRAME".to_vec(),
            ..Default::default()
        }
    }

    fn video_frames(secs: u64) -> Vec<pb::Frame> {
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: 300,
            gop: Duration::from_secs(1),
        });
        (0..secs * 30)
            .map(|_| {
                let fr = v.next_frame(0);
                pb::Frame {
                    track_id: "v".into(),
                    rtp_time: fr.rtp_time,
                    keyframe: fr.keyframe,
                    data: fr.data.to_vec(),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn init_info(out: &[SegOutput]) -> (StreamInfo, usize) {
        out.iter()
            .find_map(|o| match o {
                SegOutput::Init { bytes, info, .. } => {
                    let traks = bytes.windows(4).filter(|w| w == b"trak").count();
                    Some((info.clone(), traks))
                }
                _ => None,
            })
            .expect("an init segment")
    }

    #[test]
    fn a_video_only_stream_declares_no_audio_and_keeps_its_first_frames() {
        let mut seg = Segmenter::new(Duration::from_secs(2), Duration::from_millis(200));
        seg.add_track(&video_track());
        let mut out = Vec::new();
        for (i, f) in video_frames(3).iter().enumerate() {
            seg.push(f, i as i64 * 33, &mut out);
        }
        seg.flush(&mut out);
        let (info, traks) = init_info(&out);
        assert!(!info.codecs.contains(','), "{}", info.codecs);
        assert!(info.codecs.starts_with("avc1."));
        assert_eq!(traks, 1, "no audio track for MSE to wait on");
        let video: f64 = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::Part { duration, .. } => Some(*duration),
                _ => None,
            })
            .sum();
        assert!((video - 3.0).abs() < 0.001, "every frame kept: {video} s");
        assert!(matches!(
            out.iter().find(|o| matches!(o, SegOutput::Part { .. })),
            Some(SegOutput::Part {
                independent: true,
                ..
            })
        ));
    }

    /// An encoder that changes its parameter sets mid-stream (a new resolution) gets a
    /// new init segment, from a new segment after a discontinuity, and the playlist
    /// still keeps every rule — served after every frame as a blocking reload would get
    /// it, each a valid reload of the one before: the new init and its discontinuity are
    /// listed ahead of the hint of the new segment's first part (rule `hint-tags`).
    /// Opus arrives 40 ms behind the video, as relayed WebRTC audio may: the cut at the
    /// new keyframe waits for it, so each part's audio lines up with its video (rule
    /// `media-av-aligned`; hls.js left a hole where the new segment's audio started first).
    #[test]
    fn new_parameter_sets_start_a_new_init_after_a_discontinuity() {
        let mut seg = segmenter();
        tracks(&mut seg);
        let mut opus = OpusSource::default();
        let mut push_opus = |seg: &mut Segmenter, ms: u64, out: &mut Vec<SegOutput>| {
            seg.push(&opus_frame(&mut opus), 1_000_000 + ms as i64, out);
        };
        let mut next_audio_ms = 0;
        let hls = crate::store::RoomHls::new(
            Duration::from_secs(2),
            part_target(Duration::from_millis(200)),
        );
        let mut out = Vec::new();
        let mut last: Option<check::MediaPlaylistText> = None;
        let mut announced = false;
        for (i, mut f) in video_frames(8).into_iter().enumerate() {
            if i >= 4 * 30 {
                // Another level_idc in every SPS from 4 s on: another avcC.
                let at = f.data.windows(5).position(|w| w == [0, 0, 0, 1, 0x67]);
                if let Some(at) = at {
                    f.data[at + 7] = f.data[at + 7].wrapping_add(1);
                }
            }
            let before = out.len();
            let ms = i as u64 * 1000 / 30;
            while next_audio_ms + 40 <= ms {
                push_opus(&mut seg, ms, &mut out);
                next_audio_ms += 20;
            }
            seg.push(&f, 1_000_000 + ms as i64, &mut out);
            hls.apply(
                out[before..]
                    .iter()
                    .map(|o| (String::new(), o.clone()))
                    .collect(),
            );
            let Some(text) = hls
                .read_rendition("", |r| r.playable().then(|| r.playlist.render()))
                .flatten()
            else {
                continue;
            };
            let now = check::parse_media(&text).unwrap();
            announced |= now.next_segment.as_ref().is_some_and(|n| n.discontinuity);
            let mut found = check::check_media(&now);
            if let Some(prev) = &last {
                found.extend(check::check_reload(prev, &now));
            }
            assert!(found.is_empty(), "frame {i}: {found:#?}\n{text}");
            last = Some(now);
        }
        assert!(
            announced,
            "a playlist announced the discontinuity ahead of the hint"
        );
        // The audio still on its way when the video ends.
        while next_audio_ms < 8000 {
            push_opus(&mut seg, 8000, &mut out);
            next_audio_ms += 20;
        }
        seg.flush(&mut out);
        let inits: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, SegOutput::Init { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(inits.len(), 2, "{out:?}");
        let after = out[inits[1]..].iter().find_map(|o| match o {
            SegOutput::Part {
                discontinuity,
                independent,
                ..
            } => Some((*discontinuity, *independent)),
            _ => None,
        });
        assert_eq!(after, Some((true, true)));
        assert!(
            matches!(out[inits[1] - 1], SegOutput::SegmentDone { .. }),
            "the old segment closes first"
        );
        let (text, found) = served(out);
        assert!(found.is_empty(), "{found:#?}\n{text}");
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\""),
            "{text}"
        );
    }

    #[test]
    fn audio_announced_just_after_the_first_keyframe_is_muxed() {
        let mut seg = Segmenter::new(Duration::from_secs(2), Duration::from_millis(200));
        seg.add_track(&video_track());
        let mut out = Vec::new();
        let frames = video_frames(2);
        for (i, f) in frames[..3].iter().enumerate() {
            seg.push(f, i as i64 * 33, &mut out);
        }
        assert!(out.is_empty(), "held while the audio is unknown: {out:?}");
        tracks(&mut seg);
        let opus = OpusSource::default().next_packet();
        let a = pb::Frame {
            track_id: "a".into(),
            rtp_time: 0,
            data: opus.data.to_vec(),
            ..Default::default()
        };
        seg.push(&a, 100, &mut out);
        for (i, f) in frames[3..].iter().enumerate() {
            seg.push(f, 100 + i as i64 * 33, &mut out);
        }
        let (info, traks) = init_info(&out);
        assert!(info.codecs.ends_with(",opus"), "{}", info.codecs);
        assert_eq!(traks, 2);
    }

    /// An RTMP room: the relay carries the publisher's AAC (44.1 kHz, config in `fmtp`)
    /// and the Opus transcoded from it; HLS takes the AAC.
    #[test]
    fn an_rtmp_room_muxes_the_publishers_aac_not_the_opus_transcode() {
        let mut seg = rtmp_segmenter();
        tracks(&mut seg);
        let mut out = Vec::new();
        let opus = OpusSource::default().next_packet();
        let (mut aac_n, mut opus_ms) = (0u64, 0u64);
        for (i, f) in video_frames(3).iter().enumerate() {
            let ms = i as u64 * 1000 / 30;
            while aac_ms(aac_n) <= ms {
                seg.push(&aac_frame(aac_n), ms as i64, &mut out);
                aac_n += 1;
            }
            while opus_ms <= ms {
                let a = pb::Frame {
                    track_id: "a".into(),
                    rtp_time: opus_ms * 48,
                    data: opus.data.to_vec(),
                    ..Default::default()
                };
                seg.push(&a, ms as i64, &mut out);
                opus_ms += 20;
            }
            seg.push(f, ms as i64, &mut out);
        }
        let (info, traks) = init_info(&out);
        assert!(info.codecs.ends_with(",mp4a.40.2"), "{}", info.codecs);
        assert_eq!(traks, 2);
        let Some(SegOutput::Init { bytes: init, .. }) = out.first() else {
            panic!("init first")
        };
        let has = |b: &[u8], what: &[u8]| b.windows(what.len()).any(|w| w == what);
        assert!(has(init, b"esds") && !has(init, b"dOps"));
        let parts: Vec<&Bytes> = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::Part { bytes, .. } => Some(bytes),
                _ => None,
            })
            .collect();
        assert!(parts.len() >= 10);
        for p in &parts {
            assert!(
                has(p, b"AACFRAME") && !has(p, opus.data),
                "AAC samples only"
            );
            // The audio traf: every sample lasts 1024 ticks of 44.1 kHz.
            let runs = read::track_runs(p).unwrap();
            assert_eq!(runs.len(), 2);
            assert!(runs[1].durations.iter().all(|&d| d == 1024), "{runs:?}");
        }
    }

    /// video.js (VHS 3.17) starts LL-HLS at the part holding its start time and steps
    /// back to an `INDEPENDENT=YES` part only when the playlists lack
    /// `EXT-X-INDEPENDENT-SEGMENTS`; with the tag it started an RTMP room (a keyframe a
    /// second, two per segment) one part after a keyframe, and Chromium's buffer then had
    /// holes after later keyframes (stalls). The parts say where a player may start.
    #[test]
    fn an_rtmp_rooms_playlist_marks_independence_on_parts_only() {
        let mut seg = rtmp_segmenter();
        let mut out = Vec::new();
        let mut aac_n = 0u64;
        for (i, f) in video_frames(7).iter().enumerate() {
            let ms = i as u64 * 1000 / 30;
            while aac_ms(aac_n) <= ms {
                seg.push(&aac_frame(aac_n), ms as i64, &mut out);
                aac_n += 1;
            }
            seg.push(f, ms as i64, &mut out);
        }
        let (text, found) = served(out);
        assert!(found.is_empty(), "{found:#?}\n{text}");
        assert!(!text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{text}");
        let pl = check::parse_media(&text).unwrap();
        let with_parts: Vec<_> = pl.segments.iter().filter(|s| !s.parts.is_empty()).collect();
        assert!(!with_parts.is_empty(), "{text}");
        for s in with_parts {
            // Both keyframes of the segment, and no other part, say INDEPENDENT=YES.
            let independent: Vec<usize> = (0..s.parts.len())
                .filter(|&i| s.parts[i].independent)
                .collect();
            assert_eq!(independent, [0, 5][..independent.len().min(2)], "{text}");
        }
        let multivariant = skylark_media::hls::render_multivariant(&[]);
        assert!(
            !multivariant.contains("INDEPENDENT-SEGMENTS"),
            "{multivariant}"
        );
    }

    /// A packager's pull starts from the SFU's cached GOP: the video from its keyframe
    /// at once, the RTMP source's AAC only from the pull on. The first AAC frame goes at
    /// its own time beside the video of that moment (not at the keyframe, 1.5 s early),
    /// silence before it, so every part's audio spans its video.
    #[test]
    fn rtmp_audio_after_a_cached_gop_keeps_its_time_after_silence() {
        let mut seg = rtmp_segmenter();
        let mut out = Vec::new();
        let frames = video_frames(4);
        // The cached GOP: 1.5 s of video in one burst.
        for f in &frames[..45] {
            seg.push(f, 0, &mut out);
        }
        // Live from 1.5 s: AAC and video interleaved as RTMP sends them.
        let first_live = (0..).find(|&n| aac_ms(n) >= 1500).unwrap();
        let mut aac_n = first_live;
        for (i, f) in frames.iter().enumerate().skip(45) {
            let ms = i as u64 * 1000 / 30;
            while aac_ms(aac_n) <= ms {
                seg.push(&aac_frame(aac_n), ms as i64, &mut out);
                aac_n += 1;
            }
            seg.push(f, ms as i64, &mut out);
        }
        let parts: Vec<Bytes> = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::Part { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .collect();
        for (n, p) in parts.iter().enumerate() {
            assert_eq!(read::track_runs(p).unwrap().len(), 2, "part {n} has audio");
        }
        // Where the first real AAC frame is: after every silent frame written.
        let silent = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
        let silent = silent.silent_frame().unwrap();
        let count = |b: &[u8], what: &[u8]| b.windows(what.len()).filter(|w| *w == what).count();
        let real = parts
            .iter()
            .position(|p| count(p, b"AACFRAME") > 0)
            .unwrap();
        let silences: usize = parts[..real]
            .iter()
            .map(|p| count(p, silent))
            .sum::<usize>()
            + {
                let p = &parts[real];
                let at = p.windows(8).position(|w| w == b"AACFRAME").unwrap();
                count(&p[..at], silent)
            };
        let start = read::track_runs(&parts[0]).unwrap()[1].start;
        let first_real = start + silences as u64 * 1024;
        let expected = aac_ms(first_live) * 44_100 / 1000;
        assert!(
            first_real.abs_diff(expected) <= 1024,
            "the first AAC frame at {first_real}, its time {expected} (44.1 kHz)"
        );
        let (text, found) = served(out);
        assert!(found.is_empty(), "{found:#?}\n{text}");
    }

    #[test]
    fn each_parts_audio_reaches_its_video_end_when_audio_arrives_late() {
        // RTMP and the relay deliver a part's last AAC frame after the video frame that
        // closes the part; a part whose audio stopped short of its video left hls.js
        // reloading that part in a loop at a stream's start.
        let mut seg = rtmp_segmenter();
        let mut out = Vec::new();
        let mut aac_n = 0u64;
        for (i, f) in video_frames(3).iter().enumerate() {
            let ms = i as u64 * 1000 / 30;
            seg.push(f, ms as i64, &mut out);
            // Audio 50 ms behind the video.
            while aac_ms(aac_n) + 50 <= ms {
                seg.push(&aac_frame(aac_n), ms as i64, &mut out);
                aac_n += 1;
            }
        }
        let parts: Vec<Vec<(u64, u64)>> = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::Part { bytes, .. } => Some(
                    read::track_runs(bytes)
                        .unwrap()
                        .iter()
                        .map(|r| (r.start, r.end()))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .collect();
        assert!(parts.len() >= 10, "{}", parts.len());
        let mut audio_end = None;
        for (n, ranges) in parts.iter().enumerate() {
            let [(_, video_end), (audio_start, end)] = ranges[..] else {
                panic!("part {n}: a video and an audio traf: {ranges:?}")
            };
            assert!(
                end * 90_000 / 44_100 >= video_end,
                "part {n}: audio ends at {} before the video at {video_end}",
                end * 90_000 / 44_100
            );
            // Contiguous: no AAC frame lost or repeated between parts.
            if let Some(prev) = audio_end {
                assert_eq!(audio_start, prev, "part {n}");
            }
            audio_end = Some(end);
        }
    }

    #[test]
    fn cuts_segments_at_keyframes_and_parts_at_target() {
        let mut seg = Segmenter::new(Duration::from_secs(2), Duration::from_millis(200));
        tracks(&mut seg);
        let mut out = Vec::new();
        feed(&mut seg, 7, Duration::from_secs(1), 5_000_000, &mut out);
        let init = out
            .iter()
            .filter(|o| matches!(o, SegOutput::Init { .. }))
            .count();
        assert_eq!(init, 1);
        if let Some(SegOutput::Init { info, .. }) = out.first() {
            assert!(info.codecs.starts_with("avc1.") && info.codecs.ends_with(",opus"));
            assert_eq!(info.resolution, Some((320, 240)));
        } else {
            panic!("init first");
        }
        let done: Vec<(u64, f64)> = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::SegmentDone { msn, duration } => Some((*msn, *duration)),
                _ => None,
            })
            .collect();
        assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        for (_, d) in &done {
            assert!(
                (d - 2.0).abs() < 0.001,
                "segments are exactly 2 s (keyframe every 1 s): {d}"
            );
        }
        let parts: Vec<(u64, f64, bool)> = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::Part {
                    msn,
                    duration,
                    independent,
                    ..
                } => Some((*msn, *duration, *independent)),
                _ => None,
            })
            .collect();
        assert!(
            parts.iter().all(|p| p.1 <= 0.2 + 1e-9 && p.1 > 0.0),
            "{parts:?}"
        );
        assert_eq!(
            parts.iter().filter(|p| p.0 == 0).count(),
            10,
            "ten 200 ms parts per 2 s segment"
        );
        assert!(
            parts.iter().find(|p| p.0 == 0).unwrap().2,
            "a segment starts independent"
        );
        // Fragments parse as moof+mdat.
        if let Some(SegOutput::Part { bytes, .. }) =
            out.iter().find(|o| matches!(o, SegOutput::Part { .. }))
        {
            assert_eq!(&bytes[4..8], b"moof");
        }
        assert!(!out.iter().any(|o| matches!(o, SegOutput::RequestKeyframe)));
    }

    #[test]
    fn long_gop_earns_a_keyframe_request_and_waits_for_the_keyframe() {
        let mut seg = Segmenter::new(Duration::from_secs(2), Duration::from_millis(200));
        tracks(&mut seg);
        let mut out = Vec::new();
        feed(&mut seg, 8, Duration::from_secs(4), 0, &mut out);
        assert!(out.iter().any(|o| matches!(o, SegOutput::RequestKeyframe)));
        let done: Vec<f64> = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::SegmentDone { duration, .. } => Some(*duration),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), 1, "cut only at the second keyframe: {done:?}");
        assert!((done[0] - 4.0).abs() < 0.001);
    }

    #[test]
    fn waits_for_a_keyframe_and_marks_discontinuity_on_publisher_change() {
        let mut seg = Segmenter::new(Duration::from_secs(2), Duration::from_millis(200));
        tracks(&mut seg);
        let mut out = Vec::new();
        // A delta frame first: nothing but a keyframe request.
        let delta = pb::Frame {
            track_id: "v".into(),
            data: vec![0, 0, 0, 1, 0x41, 0x9a],
            ..Default::default()
        };
        seg.push(&delta, 0, &mut out);
        assert_eq!(out, vec![SegOutput::RequestKeyframe]);
        out.clear();
        feed(&mut seg, 3, Duration::from_secs(1), 0, &mut out);
        let before = out
            .iter()
            .filter(|o| matches!(o, SegOutput::Part { .. }))
            .count();
        seg.publisher_changed(&mut out);
        tracks(&mut seg);
        feed(&mut seg, 3, Duration::from_secs(1), 777_000, &mut out);
        let parts: Vec<&SegOutput> = out
            .iter()
            .filter(|o| matches!(o, SegOutput::Part { .. }))
            .collect();
        assert!(parts.len() > before);
        let disc = parts
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    SegOutput::Part {
                        discontinuity: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(disc, 1, "exactly the first part after the change");
        // Segment numbers keep increasing across the change.
        let msns: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                SegOutput::SegmentDone { msn, .. } => Some(*msn),
                _ => None,
            })
            .collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    }

    /// Plays segmenter output into a store batch by batch, as the packager does, and
    /// checks each playlist a reader could fetch against `hls::check`, alone and as a
    /// reload of the one before.
    struct Reader {
        hls: std::sync::Arc<crate::store::RoomHls>,
        last: Option<check::MediaPlaylistText>,
    }

    impl Reader {
        fn new() -> Self {
            Self {
                hls: crate::store::RoomHls::new(
                    Duration::from_secs(2),
                    part_target(Duration::from_millis(200)),
                ),
                last: None,
            }
        }

        /// Applies one batch; returns the playlist now served, if one is.
        fn apply(&mut self, batch: &[SegOutput], what: &str) -> Option<check::MediaPlaylistText> {
            self.hls
                .apply(batch.iter().map(|o| (String::new(), o.clone())).collect());
            let text = self
                .hls
                .read_rendition("", |r| r.playable().then(|| r.playlist.render()))
                .flatten()?;
            let now = check::parse_media(&text).unwrap();
            let mut found = check::check_media(&now);
            if let Some(prev) = &self.last {
                found.extend(check::check_reload(prev, &now));
            }
            assert!(found.is_empty(), "{what}: {found:#?}\n{text}");
            self.last = Some(now.clone());
            Some(now)
        }
    }

    #[test]
    fn a_publisher_change_to_other_tracks_hints_the_next_part_under_its_new_init() {
        // Audio and video, then a publisher with video only (a WHIP publisher back
        // without its microphone): another init, after a discontinuity.
        let mut seg = segmenter();
        tracks(&mut seg);
        let mut reader = Reader::new();
        let mut opus = OpusSource::default();
        let mut next_audio_ms = 0;
        for (i, f) in video_frames(3).into_iter().enumerate() {
            let ms = i as u64 * 1000 / 30;
            let mut out = Vec::new();
            while next_audio_ms <= ms {
                seg.push(&opus_frame(&mut opus), 1_000_000 + ms as i64, &mut out);
                next_audio_ms += 20;
            }
            seg.push(&f, 1_000_000 + ms as i64, &mut out);
            reader.apply(&out, &format!("first publisher, frame {i}"));
        }
        let mut out = Vec::new();
        seg.publisher_changed(&mut out);
        reader.apply(&out, "publisher gone");
        seg.add_track(&video_track());
        let mut inits = 0;
        for (i, mut f) in video_frames(3).into_iter().enumerate() {
            let ms = 3000 + i as u64 * 1000 / 30;
            f.rtp_time += 555_000;
            let mut out = Vec::new();
            seg.push(&f, 1_000_000 + ms as i64, &mut out);
            inits += out
                .iter()
                .filter(|o| matches!(o, SegOutput::Init { .. }))
                .count();
            reader.apply(&out, &format!("video-only publisher, frame {i}"));
        }
        assert_eq!(inits, 1, "the video-only publisher's init");
        let pl = reader.last.expect("a playlist");
        let maps: Vec<_> = pl
            .segments
            .iter()
            .filter_map(|s| s.map_uri.clone())
            .collect();
        assert!(maps.iter().any(|m| m != "init1.mp4"), "{maps:?}");
    }

    /// Feeds `frames` of 30 fps H.264 (GOP `gop_frames`) with Opus, handing frame `i` in
    /// at wall clock `at(i)` ms, each batch into a [`Reader`]; returns every output with
    /// the wall clock it came out at.
    fn delivered(gop_frames: u64, frames: u64, at: impl Fn(u64) -> i64) -> Vec<(i64, SegOutput)> {
        let mut seg = segmenter();
        tracks(&mut seg);
        let mut reader = Reader::new();
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: 300,
            gop: Duration::from_secs_f64(gop_frames as f64 / 30.0),
        });
        let mut a = OpusSource::default();
        let mut next_audio_ms = 0;
        let mut all = Vec::new();
        for i in 0..frames {
            let ms = i * 1000 / 30;
            let now = at(i);
            let mut out = Vec::new();
            while next_audio_ms <= ms {
                seg.push(&opus_frame(&mut a), now, &mut out);
                next_audio_ms += 20;
            }
            let fr = v.next_frame(0);
            let f = pb::Frame {
                track_id: "v".into(),
                rtp_time: fr.rtp_time,
                keyframe: fr.keyframe,
                data: fr.data.to_vec(),
                ..Default::default()
            };
            seg.push(&f, now, &mut out);
            reader.apply(&out, &format!("frame {i}"));
            all.extend(out.into_iter().map(|o| (now, o)));
        }
        all
    }

    /// For each complete segment: its last part's duration, the wall-clock ms between
    /// the part before it and it coming out, and between it and the next part.
    fn last_parts(all: &[(i64, SegOutput)]) -> Vec<(f64, i64, Option<i64>)> {
        let parts: Vec<(i64, u64, f64)> = all
            .iter()
            .filter_map(|(t, o)| match o {
                SegOutput::Part { msn, duration, .. } => Some((*t, *msn, *duration)),
                _ => None,
            })
            .collect();
        all.iter()
            .filter_map(|(_, o)| match o {
                SegOutput::SegmentDone { msn, .. } => Some(*msn),
                _ => None,
            })
            .filter_map(|msn| {
                let i = parts.iter().rposition(|p| p.1 == msn)?;
                let before = parts.get(i.checked_sub(1)?)?;
                let after = parts.get(i + 1).map(|p| p.0 - parts[i].0);
                Some((parts[i].2, parts[i].0 - before.0, after))
            })
            .collect()
    }

    #[test]
    fn a_segments_last_part_comes_out_a_part_after_the_one_before() {
        // Keyframes one or two frames after a part boundary (GOPs of 61 and 62 frames:
        // ten 6-frame parts and a short last one), frames handed in as they are
        // captured, or in bursts of six every 200 ms (a loaded machine).
        for gop in [61, 62] {
            for burst in [1, 6] {
                let all = delivered(gop, 8 * 30, |i| {
                    1_000_000 + ((i / burst * burst) * 1000 / 30) as i64
                });
                let lasts = last_parts(&all);
                assert!(lasts.len() >= 3, "gop {gop}, burst {burst}: {lasts:?}");
                assert!(
                    lasts.iter().any(|(d, ..)| *d < 0.1),
                    "a short last part (gop {gop}): {lasts:?}"
                );
                // hls.js skipped a last part listed while it appended the one before.
                for (d, gap, next) in &lasts {
                    assert!(
                        *gap >= 220,
                        "gop {gop}, burst {burst}: a {d} s last part came out {gap} ms after the part before: {lasts:?}"
                    );
                    // ... and also when the next segment's first part joined it.
                    assert!(
                        next.is_none_or(|n| n >= 110),
                        "gop {gop}, burst {burst}: the next segment's first part came {next:?} ms after its last: {lasts:?}"
                    );
                }
            }
        }
    }
}
