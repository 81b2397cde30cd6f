//! `Sender::seal_rtp` per profile and payload size: what the SFU's forward path pays per
//! subscriber per packet for SRTP (the header is 12 bytes, the buffer has room for
//! the tag, as the forward path reserves it).
//!
//! `cargo bench -p skylark-srtp --bench seal`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use skylark_srtp::{split_keying, Profile, Sender};

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp/seal_rtp");
    for profile in [
        Profile::Aes128Gcm,
        Profile::Aes256Gcm,
        Profile::Aes128CmSha1_80,
    ] {
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let (ours, _) = split_keying(&material, profile, false).expect("keying");
        let sender = Sender::new(&ours).expect("sender");
        for payload in [160usize, 1100] {
            let mut plain = vec![0x80, 96, 0x12, 0x34, 0, 0, 0x10, 0, 0xca, 0xfe, 0xba, 0xbe];
            plain.resize(12 + payload, 0xab);
            let mut packet = Vec::with_capacity(plain.len() + sender.rtp_overhead());
            group.throughput(Throughput::Bytes(payload as u64));
            let id = BenchmarkId::new(format!("{profile:?}"), payload);
            group.bench_with_input(id, &plain, |b, plain| {
                b.iter(|| {
                    // The forward path writes header and payload into its buffer, then seals.
                    packet.clear();
                    packet.extend_from_slice(plain);
                    sender
                        .seal_rtp(black_box(&mut packet), 12, black_box(0))
                        .expect("seal");
                    black_box(packet.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, seal);
criterion_main!(benches);
