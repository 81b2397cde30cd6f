//! Synthetic media: H.264 access units with a per-frame marker (one source per
//! simulcast layer), and Opus packets.
//!
//! Nothing here does I/O or decodes: the publisher writes these frames, and viewers
//! check them with [`inspect_frame`] for integrity (hash), order (sequence number)
//! and latency (send time).

mod audio;
mod mark;
mod nal;
mod video;

pub use audio::{AudioPacket, OpusSource, OPUS_CLOCK_RATE, OPUS_FRAME, OPUS_SILENCE};
pub use mark::{inspect_frame, mark_nal, FrameMark, MARK_UUID};
pub use nal::{
    escape_rbsp, nal_type, nal_units, split_access_units, unescape_rbsp, NalUnits, NAL_AUD,
    NAL_FILLER, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS, START_CODE,
};
pub use video::{
    clip, picture_size, Layer, VideoConfig, VideoFrame, VideoSource, FPS, PROFILE_LEVEL_ID,
    SIMULCAST_LAYERS, VIDEO_CLOCK_RATE,
};

/// Microseconds since the UNIX epoch, the clock of [`FrameMark::sent_at_us`].
///
/// ```
/// assert!(skylark_loadgen::source::unix_micros() > 1_600_000_000_000_000);
/// ```
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
