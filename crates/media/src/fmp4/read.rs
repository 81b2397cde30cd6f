//! Reading back what a CMAF stream says about time: each track's timescale and
//! handler from an init segment, and each fragment's track runs (`tfdt` and the
//! `trun` sample durations and flags) — what a player's timeline is built from.
//! Checkers compare it with the playlist (`hls::check`); nothing here decodes media.
//!
//! ```
//! use bytes::Bytes;
//! use skylark_media::fmp4::{self, read, Sample, Track, TrackFragment};
//!
//! let init = fmp4::init_segment(&[Track::opus(2, 2)])?;
//! assert_eq!(read::tracks(&init)?[0].timescale, 48_000);
//! let samples = vec![Sample { duration: 960, data: Bytes::from_static(&[0xfc]), keyframe: true, composition_offset: 0 }; 3];
//! let part = fmp4::fragment(1, &[TrackFragment { track_id: 2, base_media_decode_time: 4800, samples: &samples }])?;
//! let runs = read::track_runs(&part)?;
//! assert_eq!((runs[0].track_id, runs[0].start, runs[0].end()), (2, 4800, 7680));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// Why bytes are not the CMAF this reader expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fMP4: {0}")]
pub struct ReadError(&'static str);

/// A track as an init segment declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// `tkhd` track ID.
    pub track_id: u32,
    /// `mdhd` ticks per second.
    pub timescale: u32,
    /// `hdlr` handler type: `vide`, `soun`, …
    pub handler: [u8; 4],
}

/// One `traf` of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRun {
    /// `tfhd` track ID.
    pub track_id: u32,
    /// `tfdt` base media decode time, in the track's timescale.
    pub start: u64,
    /// Each sample's duration (`trun`, else the `tfhd` default).
    pub durations: Vec<u32>,
    /// Each sample is a sync sample (`sample_is_non_sync_sample` clear).
    pub sync: Vec<bool>,
}

impl TrackRun {
    /// Decode time just after the last sample.
    pub fn end(&self) -> u64 {
        self.durations
            .iter()
            .fold(self.start, |t, &d| t.saturating_add(u64::from(d)))
    }
}

/// A box: its type and its body.
type BoxRef<'a> = ([u8; 4], &'a [u8]);

/// The boxes of `data`, in order.
fn boxes(mut data: &[u8]) -> Result<Vec<BoxRef<'_>>, ReadError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (size, kind, header) = match data {
            [a, b, c, d, t0, t1, t2, t3, rest @ ..] => {
                let size = u64::from(u32::from_be_bytes([*a, *b, *c, *d]));
                let kind = [*t0, *t1, *t2, *t3];
                match size {
                    1 => {
                        let large = rest.get(..8).ok_or(ReadError("truncated box size"))?;
                        let mut b = [0u8; 8];
                        b.copy_from_slice(large);
                        (u64::from_be_bytes(b), kind, 16)
                    }
                    0 => (data.len() as u64, kind, 8),
                    s => (s, kind, 8),
                }
            }
            _ => return Err(ReadError("truncated box header")),
        };
        let size = usize::try_from(size).map_err(|_| ReadError("box too large"))?;
        if size < header || size > data.len() {
            return Err(ReadError("box size out of bounds"));
        }
        out.push((kind, &data[header..size]));
        data = &data[size..];
    }
    Ok(out)
}

/// The first child box of type `kind`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, ReadError> {
    Ok(boxes(data)?
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| b))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ReadError> {
    let s = b.get(at..at + 4).ok_or(ReadError("truncated field"))?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, ReadError> {
    Ok(u64::from(u32_at(b, at)?) << 32 | u64::from(u32_at(b, at + 4)?))
}

/// The tracks of an init segment (`moov/trak`).
pub fn tracks(init: &[u8]) -> Result<Vec<TrackInfo>, ReadError> {
    let moov = child(init, b"moov")?.ok_or(ReadError("no moov"))?;
    let mut out = Vec::new();
    for (kind, trak) in boxes(moov)? {
        if &kind != b"trak" {
            continue;
        }
        let tkhd = child(trak, b"tkhd")?.ok_or(ReadError("no tkhd"))?;
        // Full box: version, flags, then creation/modification times (4 or 8 bytes each).
        let track_id = u32_at(tkhd, if tkhd.first() == Some(&1) { 20 } else { 12 })?;
        let mdia = child(trak, b"mdia")?.ok_or(ReadError("no mdia"))?;
        let mdhd = child(mdia, b"mdhd")?.ok_or(ReadError("no mdhd"))?;
        let timescale = u32_at(mdhd, if mdhd.first() == Some(&1) { 20 } else { 12 })?;
        let hdlr = child(mdia, b"hdlr")?.ok_or(ReadError("no hdlr"))?;
        let handler = u32_at(hdlr, 8)?.to_be_bytes();
        if timescale == 0 {
            return Err(ReadError("zero timescale"));
        }
        out.push(TrackInfo {
            track_id,
            timescale,
            handler,
        });
    }
    Ok(out)
}

/// The track runs of every `moof` in `data` (a part, or a whole segment), in order.
pub fn track_runs(data: &[u8]) -> Result<Vec<TrackRun>, ReadError> {
    let mut out = Vec::new();
    for (kind, moof) in boxes(data)? {
        if &kind != b"moof" {
            continue;
        }
        for (kind, traf) in boxes(moof)? {
            if &kind == b"traf" {
                out.push(track_run(traf)?);
            }
        }
    }
    Ok(out)
}

fn track_run(traf: &[u8]) -> Result<TrackRun, ReadError> {
    let tfhd = child(traf, b"tfhd")?.ok_or(ReadError("no tfhd"))?;
    let flags = u32_at(tfhd, 0)? & 0xff_ffff;
    let track_id = u32_at(tfhd, 4)?;
    let mut at = 8;
    if flags & 0x01 != 0 {
        at += 8; // base data offset
    }
    if flags & 0x02 != 0 {
        at += 4; // sample description index
    }
    let default_duration = if flags & 0x08 != 0 {
        Some(u32_at(tfhd, at)?)
    } else {
        None
    };
    if flags & 0x08 != 0 {
        at += 4;
    }
    if flags & 0x10 != 0 {
        at += 4; // default sample size
    }
    let default_flags = if flags & 0x20 != 0 {
        Some(u32_at(tfhd, at)?)
    } else {
        None
    };
    let tfdt = child(traf, b"tfdt")?.ok_or(ReadError("no tfdt"))?;
    let start = if tfdt.first() == Some(&1) {
        u64_at(tfdt, 4)?
    } else {
        u64::from(u32_at(tfdt, 4)?)
    };
    let mut run = TrackRun {
        track_id,
        start,
        durations: Vec::new(),
        sync: Vec::new(),
    };
    for (kind, trun) in boxes(traf)? {
        if &kind != b"trun" {
            continue;
        }
        let flags = u32_at(trun, 0)? & 0xff_ffff;
        let count = u32_at(trun, 4)?;
        let mut at = 8;
        if flags & 0x01 != 0 {
            at += 4; // data offset
        }
        let first_flags = if flags & 0x04 != 0 {
            at += 4;
            Some(u32_at(trun, at - 4)?)
        } else {
            None
        };
        let per_sample = 4 * (flags & 0xf00).count_ones() as usize;
        let needed = per_sample
            .checked_mul(count as usize)
            .and_then(|n| n.checked_add(at))
            .ok_or(ReadError("trun too large"))?;
        if needed > trun.len() {
            return Err(ReadError("trun shorter than its sample count"));
        }
        for i in 0..count as usize {
            let mut field = at + i * per_sample;
            let duration = if flags & 0x100 != 0 {
                field += 4;
                u32_at(trun, field - 4)?
            } else {
                default_duration.ok_or(ReadError("no sample duration"))?
            };
            if flags & 0x200 != 0 {
                field += 4; // size
            }
            let sample_flags = if flags & 0x400 != 0 {
                Some(u32_at(trun, field)?)
            } else if i == 0 {
                first_flags.or(default_flags)
            } else {
                default_flags
            };
            run.durations.push(duration);
            // `sample_is_non_sync_sample` is bit 16; no flags at all means sync.
            run.sync
                .push(sample_flags.is_none_or(|f| f & 0x0001_0000 == 0));
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::{fragment, init_segment, Sample, Track, TrackFragment};
    use crate::h264::AvcDecoderConfigurationRecord;
    use bytes::Bytes;

    fn video() -> Track {
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35,
        ];
        let rec =
            AvcDecoderConfigurationRecord::from_parameter_sets(&sps, &[0x68, 0xce, 0x38, 0x80])
                .unwrap();
        Track::avc(1, rec).unwrap()
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let init = init_segment(&[video(), Track::opus(2, 2)]).unwrap();
        let t = tracks(&init).unwrap();
        assert_eq!(
            t,
            vec![
                TrackInfo {
                    track_id: 1,
                    timescale: 90_000,
                    handler: *b"vide"
                },
                TrackInfo {
                    track_id: 2,
                    timescale: 48_000,
                    handler: *b"soun"
                }
            ]
        );
        let pic = |keyframe| Sample {
            duration: 3000,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            keyframe,
            composition_offset: 0,
        };
        let video = [pic(true), pic(false), pic(false)];
        let audio = vec![
            Sample {
                duration: 960,
                data: Bytes::from_static(&[0xfc]),
                keyframe: true,
                composition_offset: 0,
            };
            5
        ];
        let tracks = [
            TrackFragment {
                track_id: 1,
                base_media_decode_time: 1 << 33,
                samples: &video,
            },
            TrackFragment {
                track_id: 2,
                base_media_decode_time: 96_000,
                samples: &audio,
            },
        ];
        let part = fragment(7, &tracks).unwrap();
        let runs = track_runs(&[part.clone(), part].concat()).unwrap();
        assert_eq!(runs.len(), 4, "two moofs of two trafs");
        assert_eq!(runs[0].start, 1 << 33, "64-bit tfdt");
        assert_eq!(runs[0].end(), (1 << 33) + 9000);
        assert_eq!(runs[0].sync, vec![true, false, false]);
        assert_eq!((runs[1].start, runs[1].end()), (96_000, 100_800));
        assert!(runs[1].sync.iter().all(|&s| s));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(tracks(b"").is_err());
        assert!(track_runs(&[0, 0, 0, 9, b'm', b'o', b'o', b'f']).is_err());
        assert!(track_runs(&[0, 0, 0, 4]).is_err());
        // A trun claiming more samples than it holds.
        let mut part = fragment(
            1,
            &[TrackFragment {
                track_id: 1,
                base_media_decode_time: 0,
                samples: &[Sample {
                    duration: 1,
                    data: Bytes::from_static(&[1]),
                    keyframe: true,
                    composition_offset: 0,
                }],
            }],
        )
        .unwrap()
        .to_vec();
        let at = part.windows(4).position(|w| w == b"trun").unwrap();
        part[at + 8..at + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(track_runs(&part).is_err());
    }
}
