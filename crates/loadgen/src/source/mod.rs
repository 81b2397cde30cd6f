//! Synthetic media: H.264 access units with a per-frame marker (one source per
//! simulcast layer), and Opus packets.
//!
//! Nothing here does I/O or decodes: the publisher writes these frames, and viewers
//! check them with [`inspect_frame`] for integrity (hash), order (sequence number)
//! and latency (send time).

mod access_unit;
mod audio;
mod mark;
mod video;

pub use access_unit::{split_access_units, START_CODE};
pub use audio::{AudioPacket, OpusSource, OPUS_CLOCK_RATE, OPUS_FRAME, OPUS_SILENCE};
pub use mark::{inspect_frame, mark_nal, FrameMark, MARK_UUID};
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
