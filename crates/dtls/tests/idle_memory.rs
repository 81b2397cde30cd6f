//! What a connected DTLS association keeps of OpenSSL's memory while idle.
//!
//! One test in its own binary on purpose: OpenSSL's allocator hooks can only be set
//! before its first allocation in the process.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use skylark_dtls::OpensslDtls;
use str0m::crypto::dtls::{DtlsCert, DtlsProvider, DtlsVersion};

#[path = "support/pair.rs"]
mod pair;
use pair::exchange;

/// Bytes OpenSSL holds, by `malloc_usable_size`.
static LIVE: AtomicIsize = AtomicIsize::new(0);

extern "C" {
    fn CRYPTO_set_mem_functions(
        malloc: unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
        realloc: unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
        free: unsafe extern "C" fn(*mut c_void, *const c_char, c_int),
    ) -> c_int;
}

unsafe extern "C" fn counted_malloc(n: usize, _: *const c_char, _: c_int) -> *mut c_void {
    let p = libc::malloc(n);
    if !p.is_null() {
        LIVE.fetch_add(libc::malloc_usable_size(p) as isize, Ordering::Relaxed);
    }
    p
}

unsafe extern "C" fn counted_realloc(
    p: *mut c_void,
    n: usize,
    _: *const c_char,
    _: c_int,
) -> *mut c_void {
    let old = if p.is_null() {
        0
    } else {
        libc::malloc_usable_size(p) as isize
    };
    let q = libc::realloc(p, n);
    if !q.is_null() {
        LIVE.fetch_add(
            libc::malloc_usable_size(q) as isize - old,
            Ordering::Relaxed,
        );
    } else if n == 0 {
        LIVE.fetch_sub(old, Ordering::Relaxed);
    }
    q
}

unsafe extern "C" fn counted_free(p: *mut c_void, _: *const c_char, _: c_int) {
    if !p.is_null() {
        LIVE.fetch_sub(libc::malloc_usable_size(p) as isize, Ordering::Relaxed);
    }
    libc::free(p)
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Ours with `ours_cert` against str0m's own DTLS (whose memory is not OpenSSL's) in
/// `ours_server`'s role; returns OpenSSL's bytes held once connected and once data went
/// both ways.
fn association(ours_server: bool, ours_cert: &DtlsCert) -> (isize, isize) {
    let dimpl = str0m::crypto::from_feature_flags().dtls_provider;
    let now = Instant::now();
    let theirs_cert = dimpl.generate_certificate().expect("their certificate");
    let before = live();
    let mut ours = OpensslDtls
        .new_dtls(ours_cert, now, DtlsVersion::Dtls12, None)
        .expect("ours");
    let mut theirs = dimpl
        .new_dtls(&theirs_cert, now, DtlsVersion::Dtls12, None)
        .expect("theirs");
    ours.set_active(!ours_server);
    theirs.set_active(ours_server);
    // As str0m starts a client: a timeout, then an empty packet.
    let client = if ours_server { &mut theirs } else { &mut ours };
    let _ = client.handle_timeout(now);
    let _ = client.handle_packet(&[]);
    exchange(ours.as_mut(), theirs.as_mut(), now);
    assert!(ours.protocol_version().is_some(), "ours connected");
    let connected = live() - before;

    // The data channel's traffic (SCTP) after the handshake, twice each way.
    let mut later = now + Duration::from_secs(1);
    for round in 0..2u8 {
        let (to_theirs, to_ours) = (vec![round; 1000], vec![round + 100; 700]);
        assert_eq!(ours.send_application_data(&to_theirs), Ok(1000));
        assert_eq!(theirs.send_application_data(&to_ours), Ok(700));
        let (read_ours, read_theirs) = exchange(ours.as_mut(), theirs.as_mut(), later);
        assert_eq!(read_ours, to_ours, "ours read what theirs sent");
        assert_eq!(read_theirs, to_theirs, "theirs read what ours sent");
        later += Duration::from_secs(1);
    }
    let after_data = live() - before;
    drop(ours);
    (connected, after_data)
}

fn certificate() -> DtlsCert {
    OpensslDtls.generate_certificate().expect("our certificate")
}

/// A connected association's record buffers (~17 KB each way) are freed between
/// datagrams, and it still carries application data both ways. Measured on OpenSSL
/// 3.0: ~88 KiB held per association with the buffers, ~55 KiB without, ~39 KiB when
/// its certificate's context is shared (the rest is the `SSL`, its handshake buffer
/// and keys). The associations of one certificate share its context, which keeps no
/// session of theirs.
#[test]
fn an_idle_association_holds_no_record_buffers_and_still_carries_data() {
    // SAFETY: three functions with OpenSSL's signatures, set before its first allocation.
    let set = unsafe { CRYPTO_set_mem_functions(counted_malloc, counted_realloc, counted_free) };
    assert_eq!(set, 1, "OpenSSL allocated before the hooks were set");
    // OpenSSL's one-time allocations (algorithm fetches, error strings) on the first.
    association(true, &certificate());
    const BOUND: isize = 64 * 1024;
    for ours_server in [true, false] {
        // A certificate of its own: the association builds its context.
        let (connected, after_data) = association(ours_server, &certificate());
        println!(
            "ours server {ours_server}, own certificate: {connected} B held connected, {after_data} B after data"
        );
        assert!(connected < BOUND, "{connected} B held after the handshake");
        assert!(
            after_data < BOUND,
            "{after_data} B held after data both ways"
        );
    }

    // One certificate for many associations, as an SFU worker has.
    const SHARED_BOUND: isize = 48 * 1024;
    let shared = certificate();
    association(true, &shared);
    let context_built = live();
    for ours_server in [true, false, true, false] {
        let (connected, after_data) = association(ours_server, &shared);
        println!(
            "ours server {ours_server}, shared certificate: {connected} B held connected, {after_data} B after data"
        );
        assert!(
            connected < SHARED_BOUND,
            "{connected} B held after the handshake: is the context shared?"
        );
        assert!(after_data < SHARED_BOUND, "{after_data} B held after data");
    }
    let kept = live() - context_built;
    println!("shared context grew by {kept} B over four associations");
    assert!(
        kept < 1024,
        "the shared context kept {kept} B of four closed associations (a session cache?)"
    );
}
