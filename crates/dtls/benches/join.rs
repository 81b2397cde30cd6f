//! What a join costs the SFU in DTLS, per peer: its `Rtc` built, and the server side
//! of its handshake against a str0m (dimpl) client, in memory.
//!
//! - `join/rtc_build/{own_cert,worker_cert}`: `RtcConfig::build` with our provider,
//!   generating a certificate (what every join did) or given the worker's.
//! - `join/handshake/{own_cert,worker_cert}`: a fresh certificate and its OpenSSL
//!   context per association, against the worker's certificate and its shared context;
//!   both include the client's side of the handshake (the same in both).
//!
//! `cargo bench -p skylark-dtls --bench join -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use skylark_dtls::OpensslDtls;
use str0m::crypto::dtls::{DtlsCert, DtlsProvider, DtlsVersion};
use str0m::Rtc;

#[path = "../tests/support/pair.rs"]
mod pair;

/// One association of ours as server with `cert` against a dimpl client, to connected.
fn handshake(cert: &DtlsCert, client_cert: &DtlsCert) {
    let dimpl = str0m::crypto::from_feature_flags().dtls_provider;
    let now = Instant::now();
    let mut server = OpensslDtls
        .new_dtls(cert, now, DtlsVersion::Dtls12, None)
        .expect("server");
    let mut client = dimpl
        .new_dtls(client_cert, now, DtlsVersion::Dtls12, None)
        .expect("client");
    server.set_active(false);
    client.set_active(true);
    let _ = client.handle_timeout(now);
    let _ = client.handle_packet(&[]);
    pair::exchange(client.as_mut(), server.as_mut(), now);
    assert!(server.protocol_version().is_some(), "connected");
}

fn join(c: &mut Criterion) {
    let crypto = std::sync::Arc::new(skylark_dtls::crypto_provider());
    let worker = OpensslDtls.generate_certificate().expect("certificate");
    let dimpl = str0m::crypto::from_feature_flags().dtls_provider;
    let client = dimpl.generate_certificate().expect("client certificate");
    let mut g = c.benchmark_group("join");
    g.bench_function("rtc_build/own_cert", |b| {
        b.iter(|| {
            black_box(
                Rtc::builder()
                    .set_crypto_provider(crypto.clone())
                    .build(Instant::now()),
            )
        })
    });
    g.bench_function("rtc_build/worker_cert", |b| {
        b.iter(|| {
            black_box(
                Rtc::builder()
                    .set_crypto_provider(crypto.clone())
                    .set_dtls_cert(worker.clone())
                    .build(Instant::now()),
            )
        })
    });
    g.bench_function("handshake/own_cert", |b| {
        b.iter(|| {
            let own = OpensslDtls.generate_certificate().expect("certificate");
            handshake(&own, &client)
        })
    });
    g.bench_function("handshake/worker_cert", |b| {
        b.iter(|| handshake(&worker, &client))
    });
    g.finish();
}

criterion_group!(benches, join);
criterion_main!(benches);
