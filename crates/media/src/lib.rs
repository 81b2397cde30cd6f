//! Pure media code for Skylark: no I/O, no async runtime, no threads, no clocks.
//!
//! Everything here is a deterministic function or a sans-IO state machine: bytes
//! and packet metadata go in, parsed values or complete media units come out. The
//! SFU, the packager and the RTMP ingest own the sockets and the timers and call
//! into this crate, which keeps the media logic unit-testable and fuzzable.
//!
//! | module | holds |
//! |---|---|
//! | [`rtp`] | RTP header view and writer, sequence/timestamp unwrapping, reordering |
//! | [`h264`] | RFC 6184 depacketizer and packetizer, Annex-B/AVCC, SPS/PPS, `avcC` |
//! | [`opus`] | RFC 7587 depacketizer, RFC 6716 TOC and frame-duration parsing |
//! | [`fmp4`] | CMAF (fragmented MP4) init segments and fragments for H.264 + Opus or AAC |
//! | [`hls`] | HLS multivariant and LL-HLS media playlists |
//! | [`rtmp`] | RTMP ingest, server side: handshake, chunk stream, AMF0, publish commands |
//! | [`flv`] | FLV tag bodies (H.264, AAC, Enhanced RTMP FourCCs) and FLV files for HTTP-FLV |
//! | [`aac`] | AAC `AudioSpecificConfig` and ADTS headers |
//!
//! Every parser returns a `Result` and never panics, whatever the input: the
//! [`fuzzing`] entry points are driven by `cargo fuzz` (see `fuzz/`) and by
//! property tests on stable.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aac;
pub mod flv;
pub mod fmp4;
pub mod gop;
pub mod h264;
pub mod hls;
pub mod opus;
pub mod rtmp;
pub mod rtp;

#[doc(hidden)]
pub mod fuzzing;
