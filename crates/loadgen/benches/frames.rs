//! Per-frame cost of the load generator's media: making a frame (publisher) and
//! checking one (every viewer, every frame: marker parse + FNV hash of the frame).
//!
//! `cargo bench -p skylark-loadgen --bench frames -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use skylark_loadgen::source::{inspect_frame, VideoConfig, VideoFrame, VideoSource};

/// A steady-state P-frame and the keyframe of a source at `kbps`.
fn frames(kbps: u32) -> (VideoFrame, VideoFrame) {
    let mut v = VideoSource::new(VideoConfig {
        bitrate_kbps: kbps,
        gop: Duration::from_secs(2),
    });
    let key = v.next_frame(1);
    // Past the keyframe's padding debt: a typical P-frame.
    let p = (0..20)
        .map(|i| v.next_frame(i))
        .last()
        .unwrap_or_else(|| key.clone());
    (key, p)
}

fn inspect(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen/inspect_frame");
    for kbps in [600u32, 1500] {
        let (key, p) = frames(kbps);
        for (name, f) in [("p", &p), ("key", &key)] {
            g.throughput(Throughput::Bytes(f.data.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{kbps}kbps_{name}"), f.data.len()),
                &f.data,
                |b, d| b.iter(|| inspect_frame(black_box(d))),
            );
        }
    }
    g.finish();
}

fn make(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen/next_frame");
    for kbps in [600u32, 1500] {
        let mut v = VideoSource::new(VideoConfig {
            bitrate_kbps: kbps,
            gop: Duration::from_secs(2),
        });
        g.bench_function(format!("{kbps}kbps"), |b| {
            b.iter(|| black_box(v.next_frame(7)))
        });
    }
    g.finish();
}

criterion_group!(benches, inspect, make);
criterion_main!(benches);
