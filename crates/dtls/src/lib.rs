//! DTLS 1.2 for str0m through OpenSSL, sans-IO like the rest of str0m.
//!
//! str0m's own DTLS (dimpl) only speaks ECDSA: as a DTLS server its
//! CertificateRequest asks for ECDSA client certificates, so a peer whose stack
//! only has an RSA certificate (GStreamer's webrtcbin, older libwebrtc builds,
//! many embedded WHIP encoders) sends none and the handshake fails with "no client
//! certificate received". OpenSSL accepts RSA and ECDSA peers in either role. Only
//! the handshake runs here: SRTP, STUN and hashing stay on str0m's provider.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509Name, X509};
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial,
    ProtocolVersion, SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// ECDHE only (forward secrecy), AEAD first. An ECDSA certificate of ours selects the
/// ECDSA suites as server; the RSA suites let us be the client of an RSA server.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA";

/// The SRTP profiles str0m implements, in our order of preference. The SFU answers offers
/// (`actpass`), so it is the DTLS server and OpenSSL picks by this order: AES-128-GCM seals a
/// forwarded packet in ~3,000 instructions, AES-CM + HMAC-SHA1 in ~17,700
/// (docs/benchmarks.md, "SRTP seal cost").
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AEAD_AES_256_GCM:SRTP_AES128_CM_SHA1_80";

/// Label of RFC 5764 §4.2 for the SRTP keys.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// Same default as dimpl: leaves room for IP/UDP headers and TURN framing.
const DEFAULT_MTU: usize = 1150;

/// Handshake messages larger than this are not DTLS; refuse them rather than buffer.
const MAX_DATAGRAM: usize = 16 * 1024;

/// Datagrams held while OpenSSL has not consumed them (a flight is a handful).
const MAX_QUEUED: usize = 64;

/// `DTLS_CTRL_*` from OpenSSL's ssl.h; rust-openssl exposes no wrapper for the timer.
const DTLS_CTRL_GET_TIMEOUT: i32 = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: i32 = 74;

// OpenSSL >= 1.1.0, not declared by openssl-sys. `SSL_MODE_RELEASE_BUFFERS` does nothing
// for DTLS (OpenSSL 3.0, measured: every association kept both ~17 KB record buffers), so
// they are freed by hand between calls and allocated again before each.
extern "C" {
    fn SSL_alloc_buffers(ssl: *mut openssl_sys::SSL) -> libc::c_int;
    fn SSL_free_buffers(ssl: *mut openssl_sys::SSL) -> libc::c_int;
}

/// A str0m crypto provider: str0m's default for everything but DTLS, which is ours.
pub fn crypto_provider() -> CryptoProvider {
    let mut provider = str0m::crypto::from_feature_flags();
    provider.dtls_provider = &OPENSSL_DTLS;
    provider
}

static OPENSSL_DTLS: OpensslDtls = OpensslDtls;

/// The SRTP keys an association exported, for a session that seals its own packets
/// (the SFU's forward path) beside str0m's context for the same keys.
#[derive(Clone)]
pub struct SrtpKeys {
    /// RFC 5764 §4.2 keying material: client key, server key, client salt, server salt.
    pub material: Vec<u8>,
    pub profile: SrtpProfile,
    /// We were the DTLS client: we send with the client's key.
    pub dtls_client: bool,
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .field("dtls_client", &self.dtls_client)
            .finish_non_exhaustive()
    }
}

/// Where an association puts its keys once connected.
pub type KeysSlot = Arc<OnceLock<SrtpKeys>>;

thread_local! {
    /// The keys slot of the association this thread created last (str0m creates one
    /// per `Rtc`, inside its constructor, through a provider that has no per-session
    /// context).
    static CREATED: RefCell<Option<KeysSlot>> = const { RefCell::new(None) };
}

/// The keys slot of the DTLS association created last on this thread: call it right
/// after building an `Rtc` with [`crypto_provider`] to learn that session's SRTP keys
/// once it connects.
pub fn take_created_keys() -> Option<KeysSlot> {
    CREATED.with(|c| c.borrow_mut().take())
}

/// Creates OpenSSL DTLS instances and ECDSA P-256 certificates.
#[derive(Debug)]
pub struct OpensslDtls;

impl DtlsProvider for OpensslDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        match self_signed_certificate() {
            Ok(cert) => Some(cert),
            Err(e) => {
                tracing::error!(error = %e, "generating the DTLS certificate failed");
                None
            }
        }
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        _version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let context =
            shared_context(cert).map_err(|e| CryptoError::Other(format!("DTLS setup: {e}")))?;
        let mut ssl = Ssl::new(&context).map_err(|e| CryptoError::Other(e.to_string()))?;
        let mtu = mtu.unwrap_or(DEFAULT_MTU).min(u32::MAX as usize) as u32;
        ssl.set_mtu(mtu)
            .map_err(|e| CryptoError::Other(format!("DTLS MTU {mtu}: {e}")))?;
        let keys = KeysSlot::default();
        CREATED.with(|c| *c.borrow_mut() = Some(keys.clone()));
        Ok(Box::new(OpensslDtlsInstance {
            state: State::Unstarted(Some(ssl)),
            active: false,
            now,
            idle_until: now + IDLE_WAIT,
            out: VecDeque::new(),
            keys,
        }))
    }
}

/// A self-signed ECDSA P-256 certificate: what browsers generate, and the cheapest
/// signature for the one handshake per peer.
fn self_signed_certificate() -> Result<DtlsCert, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "skylark")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    // Backdated a day so peers with a skewed clock accept it.
    let not_before = Asn1Time::from_unix(unix_now() - 86_400)?;
    let not_after = Asn1Time::days_from_now(365)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok(DtlsCert {
        certificate: builder.build().to_der()?,
        private_key: key.private_key_to_pkcs8()?,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Contexts of the certificates used last, most recent first. With one certificate per
/// SFU worker its associations share one `SSL_CTX` (~26 KB, and a parse of the key)
/// instead of each building its own. Taken once per association, never per packet.
static CONTEXTS: Mutex<Vec<(DtlsCert, SslContext)>> = Mutex::new(Vec::new());

/// Contexts kept: a node's workers' certificates and a few more. Peers with a
/// certificate of their own each (str0m's default) only churn through the rest.
const MAX_CONTEXTS: usize = 64;

/// The context of `cert`, built once while it stays among the last [`MAX_CONTEXTS`].
fn shared_context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    let mut contexts = CONTEXTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let same =
        |c: &DtlsCert| c.certificate == cert.certificate && c.private_key == cert.private_key;
    if let Some(i) = contexts.iter().position(|(c, _)| same(c)) {
        let entry = contexts.remove(i);
        let found = entry.1.clone();
        contexts.insert(0, entry);
        return Ok(found);
    }
    let built = context(cert)?;
    contexts.insert(0, (cert.clone(), built.clone()));
    contexts.truncate(MAX_CONTEXTS);
    Ok(built)
}

fn context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    let certificate = X509::from_der(&cert.certificate)?;
    let key: PKey<Private> = PKey::private_key_from_der(&cert.private_key)
        .or_else(|_| PKey::private_key_from_pkcs8(&cert.private_key))?;
    let mut builder = SslContextBuilder::new(SslMethod::dtls())?;
    builder.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_certificate(&certificate)?;
    builder.set_private_key(&key)?;
    builder.check_private_key()?;
    builder.set_cipher_list(CIPHERS)?;
    builder.set_tlsext_use_srtp(SRTP_PROFILES)?;
    // WebRTC peers are self-signed: accept any certificate here, str0m then checks it
    // against the SDP's a=fingerprint (RFC 8122). Without one the handshake fails.
    builder.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    // The MTU is ours to set; there is no socket to query.
    builder.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    Ok(builder.build())
}

/// Datagrams in and out of OpenSSL: each write is one datagram, each read one datagram.
#[derive(Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // OpenSSL reads with a buffer of a full record; a longer datagram is truncated,
        // as a datagram socket would do, and then fails OpenSSL's record checks.
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    /// Created, waiting for str0m to pick the role.
    Unstarted(Option<Ssl>),
    Handshaking(SslStream<Datagrams>),
    Connected(SslStream<Datagrams>),
    Closed(SslStream<Datagrams>),
    Failed,
}

/// What `poll_output` hands str0m, in order: datagrams and events interleaved as they
/// happened.
enum Out {
    Packet(Vec<u8>),
    PeerCert(Vec<u8>),
    Keying(KeyingMaterial, SrtpProfile),
    Connected,
    Data(Vec<u8>),
    CloseNotify,
}

pub struct OpensslDtlsInstance {
    state: State,
    active: bool,
    now: Instant,
    /// `now + IDLE_WAIT`, kept with `now`: str0m asks for it on every `poll_output`
    /// of the session, i.e. once per packet it sends.
    idle_until: Instant,
    out: VecDeque<Out>,
    keys: KeysSlot,
}

/// When an association with no handshake running next needs a timeout: never, really.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

impl fmt::Debug for OpensslDtlsInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Unstarted(_) => "unstarted",
            State::Handshaking(_) => "handshaking",
            State::Connected(_) => "connected",
            State::Closed(_) => "closed",
            State::Failed => "failed",
        };
        f.debug_struct("OpensslDtlsInstance")
            .field("state", &state)
            .field("active", &self.active)
            .finish()
    }
}

impl OpensslDtlsInstance {
    fn stream(&mut self) -> Option<&mut SslStream<Datagrams>> {
        match &mut self.state {
            State::Handshaking(s) | State::Connected(s) | State::Closed(s) => Some(s),
            State::Unstarted(_) | State::Failed => None,
        }
    }

    /// Gives a connected association its record buffers back before OpenSSL runs, so it
    /// never runs without them (its DTLS write path is not relied on to allocate them).
    /// False if out of memory.
    fn wake(&mut self) -> bool {
        match &self.state {
            State::Connected(stream) | State::Closed(stream) => {
                // SAFETY: a valid SSL*; allocates the buffers it lacks, keeps the others.
                unsafe { SSL_alloc_buffers(stream.ssl().as_ptr()) == 1 }
            }
            _ => true,
        }
    }

    /// Frees a connected association's record buffers (~35 KB) until its next datagram:
    /// after the handshake only the data channel's few datagrams use them.
    fn idle(&mut self) {
        if let State::Connected(stream) | State::Closed(stream) = &self.state {
            // SAFETY: a valid SSL*; OpenSSL keeps buffers that still hold data.
            unsafe { SSL_free_buffers(stream.ssl().as_ptr()) };
        }
    }

    /// Moves what OpenSSL wrote into the output queue.
    fn collect_datagrams(&mut self) {
        let Some(stream) = self.stream() else {
            return;
        };
        let datagrams: Vec<_> = stream.get_mut().outgoing.drain(..).collect();
        self.out.extend(datagrams.into_iter().map(Out::Packet));
    }

    /// Runs the handshake or reads application data, whichever the state calls for.
    fn drive(&mut self) -> Result<(), DtlsImplError> {
        if !self.wake() {
            // Out of memory: the datagram waits in `incoming` for the next call.
            return Ok(());
        }
        let result = match &mut self.state {
            State::Handshaking(stream) => match stream.do_handshake() {
                Ok(()) => {
                    self.collect_datagrams();
                    self.on_connected()
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(error = %e, active = self.active, "DTLS handshake failed");
                    self.fail()
                }
            },
            State::Connected(stream) => {
                let mut buf = vec![0; MAX_DATAGRAM];
                let mut read = Vec::new();
                loop {
                    match stream.ssl_read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => read.push(Out::Data(buf[..n].to_vec())),
                        Err(e) if e.code() == ErrorCode::WANT_READ => break,
                        Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                            read.push(Out::CloseNotify);
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "DTLS read failed");
                            break;
                        }
                    }
                }
                self.collect_datagrams();
                self.out.extend(read);
                Ok(())
            }
            State::Unstarted(_) | State::Closed(_) | State::Failed => Ok(()),
        };
        self.collect_datagrams();
        self.idle();
        result
    }

    fn on_connected(&mut self) -> Result<(), DtlsImplError> {
        let State::Handshaking(stream) = std::mem::replace(&mut self.state, State::Failed) else {
            return Ok(());
        };
        let ssl = stream.ssl();
        let Some(peer) = ssl.peer_certificate().and_then(|c| c.to_der().ok()) else {
            tracing::warn!("DTLS peer sent no certificate");
            return Err(DtlsImplError::ConnectionClosed);
        };
        let Some((profile, len)) = ssl
            .selected_srtp_profile()
            .and_then(|p| srtp_profile(p.id()))
        else {
            tracing::warn!("DTLS peer negotiated no SRTP profile we support");
            return Err(DtlsImplError::ConnectionClosed);
        };
        let mut keying = vec![0; len];
        if let Err(e) = ssl.export_keying_material(&mut keying, SRTP_EXPORTER_LABEL, None) {
            tracing::warn!(error = %e, "exporting SRTP keys failed");
            return Err(DtlsImplError::ConnectionClosed);
        }
        self.out.push_back(Out::PeerCert(peer));
        self.out
            .push_back(Out::Keying(KeyingMaterial::new(&keying), profile));
        // Set once: a second handshake on the association is refused before this.
        let _ = self.keys.set(SrtpKeys {
            material: keying,
            profile,
            dtls_client: self.active,
        });
        self.out.push_back(Out::Connected);
        self.state = State::Connected(stream);
        // Application data may have arrived with the last flight.
        self.drive()
    }

    /// Keeps the alert OpenSSL queued for the peer, then stops.
    fn fail(&mut self) -> Result<(), DtlsImplError> {
        self.collect_datagrams();
        self.state = State::Failed;
        Err(DtlsImplError::ConnectionClosed)
    }

    /// Time until OpenSSL's retransmission timer fires, if it runs.
    fn retransmit_in(&mut self) -> Option<Duration> {
        let stream = self.stream()?;
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: a valid SSL*, and DTLS_CTRL_GET_TIMEOUT writes one `struct timeval`
        // through the pointer, which lives on this stack frame.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast(),
            )
        };
        (running == 1).then(|| {
            Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
        })
    }
}

/// str0m's profile and the keying material length RFC 5764 §4.2 asks for:
/// 2 × (key + salt).
fn srtp_profile(id: SrtpProfileId) -> Option<(SrtpProfile, usize)> {
    if id == SrtpProfileId::SRTP_AEAD_AES_128_GCM {
        Some((SrtpProfile::AEAD_AES_128_GCM, 2 * (16 + 12)))
    } else if id == SrtpProfileId::SRTP_AEAD_AES_256_GCM {
        Some((SrtpProfile::AEAD_AES_256_GCM, 2 * (32 + 12)))
    } else if id == SrtpProfileId::SRTP_AES128_CM_SHA1_80 {
        Some((SrtpProfile::AES128_CM_SHA1_80, 2 * (16 + 14)))
    } else {
        None
    }
}

impl DtlsInstance for OpensslDtlsInstance {
    fn set_active(&mut self, active: bool) {
        let State::Unstarted(ssl) = &mut self.state else {
            return;
        };
        let Some(mut ssl) = ssl.take() else {
            return;
        };
        self.active = active;
        if active {
            ssl.set_connect_state();
        } else {
            ssl.set_accept_state();
        }
        self.state = match SslStream::new(ssl, Datagrams::default()) {
            Ok(stream) => State::Handshaking(stream),
            Err(e) => {
                tracing::error!(error = %e, "DTLS stream setup failed");
                State::Failed
            }
        };
        if active {
            // The client speaks first: ClientHello. A failure is kept in the state.
            let _ = self.drive();
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        // str0m sends an empty packet to start a client; OpenSSL would read it as EOF.
        if packet.is_empty() {
            return self.drive();
        }
        if packet.len() > MAX_DATAGRAM {
            return Ok(());
        }
        let Some(stream) = self.stream() else {
            return Ok(());
        };
        let incoming = &mut stream.get_mut().incoming;
        if incoming.len() >= MAX_QUEUED {
            return Err(DtlsImplError::ReceiveQueueFull);
        }
        incoming.push_back(packet.to_vec());
        self.drive()
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        // The common answer (connected, nothing to say), before anything else.
        if self.out.is_empty() && !matches!(self.state, State::Handshaking(_)) {
            return DtlsOutput::Timeout(self.idle_until);
        }
        let needed = match self.out.front() {
            Some(Out::Packet(b) | Out::PeerCert(b) | Out::Data(b)) => b.len(),
            _ => 0,
        };
        if needed > buf.len() {
            return DtlsOutput::BufferTooSmall { needed };
        }
        match self.out.pop_front() {
            Some(Out::Packet(b)) => DtlsOutput::Packet(copy_into(buf, &b)),
            Some(Out::PeerCert(b)) => DtlsOutput::PeerCert(copy_into(buf, &b)),
            Some(Out::Data(b)) => DtlsOutput::ApplicationData(copy_into(buf, &b)),
            Some(Out::Keying(km, profile)) => DtlsOutput::KeyingMaterial(km, profile),
            Some(Out::Connected) => DtlsOutput::Connected,
            Some(Out::CloseNotify) => DtlsOutput::CloseNotify,
            None => {
                let wait = match self.state {
                    State::Handshaking(_) => self
                        .retransmit_in()
                        .unwrap_or(Duration::from_millis(100))
                        .max(Duration::from_millis(1)),
                    _ => IDLE_WAIT,
                };
                DtlsOutput::Timeout(self.now + wait)
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        self.idle_until = now + IDLE_WAIT;
        let State::Handshaking(stream) = &mut self.state else {
            return Ok(());
        };
        // SAFETY: a valid SSL*; DTLS_CTRL_HANDLE_TIMEOUT takes no pointer argument.
        let handled = unsafe {
            openssl_sys::SSL_ctrl(
                stream.ssl().as_ptr(),
                DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        if handled < 0 {
            tracing::warn!(active = self.active, "DTLS handshake timed out");
            return self.fail();
        }
        self.collect_datagrams();
        Ok(())
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        if !matches!(self.state, State::Connected(_)) || !self.wake() {
            return Ok(0);
        }
        let State::Connected(stream) = &mut self.state else {
            return Ok(0);
        };
        let result = match stream.ssl_write(data) {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => Ok(0),
            Err(e) => {
                tracing::debug!(error = %e, "DTLS write failed");
                Err(DtlsImplError::ConnectionClosed)
            }
        };
        self.collect_datagrams();
        self.idle();
        result
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.state, State::Connected(_) | State::Closed(_))
            .then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        matches!(self.state, State::Closed(_)) && !self.out.is_empty()
    }

    fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_) | State::Failed) && self.out.is_empty()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if !self.wake() {
            // Out of memory: no close_notify, the peer times the association out.
            self.state = State::Failed;
            return Ok(());
        }
        if let State::Connected(mut stream) = std::mem::replace(&mut self.state, State::Failed) {
            // Queues close_notify; the peer's reply is not awaited.
            let _ = stream.shutdown();
            self.state = State::Closed(stream);
            self.collect_datagrams();
            self.idle();
        }
        Ok(())
    }
}

fn copy_into<'a>(buf: &'a mut [u8], bytes: &[u8]) -> &'a [u8] {
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    /// What a GStreamer or other RSA-only WebRTC stack presents.
    fn rsa_certificate() -> DtlsCert {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "rsa-peer")
            .unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        let not_before = Asn1Time::days_from_now(0).unwrap();
        let not_after = Asn1Time::days_from_now(30).unwrap();
        builder.set_not_before(&not_before).unwrap();
        builder.set_not_after(&not_after).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        DtlsCert {
            certificate: builder.build().to_der().unwrap(),
            private_key: key.private_key_to_der().unwrap(),
        }
    }

    fn instance(provider: &dyn DtlsProvider, cert: &DtlsCert) -> Box<dyn DtlsInstance> {
        provider
            .new_dtls(cert, Instant::now(), DtlsVersion::Dtls12, None)
            .unwrap()
    }

    #[derive(Default)]
    struct Seen {
        connected: bool,
        peer_cert: Option<Vec<u8>>,
        keying: Option<(Vec<u8>, SrtpProfile)>,
        data: Vec<Vec<u8>>,
    }

    /// Delivers what `from` has to send to `to`; true if anything moved.
    fn flight(
        from: &mut dyn DtlsInstance,
        to: &mut dyn DtlsInstance,
        seen: &mut Seen,
        buf: &mut [u8],
    ) -> bool {
        let mut packets = Vec::new();
        loop {
            match from.poll_output(buf) {
                DtlsOutput::Packet(p) => packets.push(p.to_vec()),
                DtlsOutput::Connected => seen.connected = true,
                DtlsOutput::PeerCert(c) => seen.peer_cert = Some(c.to_vec()),
                DtlsOutput::KeyingMaterial(km, p) => seen.keying = Some((km.to_vec(), p)),
                DtlsOutput::ApplicationData(d) => seen.data.push(d.to_vec()),
                DtlsOutput::Timeout(_) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        for p in &packets {
            let _ = to.handle_packet(p);
        }
        !packets.is_empty()
    }

    /// Moves datagrams between the two until both are quiet; returns what each saw.
    fn handshake(
        client: &mut dyn DtlsInstance,
        server: &mut dyn DtlsInstance,
        now: Instant,
    ) -> (Seen, Seen) {
        let (mut seen_client, mut seen_server) = (Seen::default(), Seen::default());
        client.set_active(true);
        server.set_active(false);
        // As str0m starts a client: a timeout, then an empty packet.
        let _ = client.handle_timeout(now);
        let _ = server.handle_timeout(now);
        let _ = client.handle_packet(&[]);
        let mut buf = vec![0; 2048];
        for round in 0..50 {
            let t = now + Duration::from_millis(round);
            let _ = client.handle_timeout(t);
            let _ = server.handle_timeout(t);
            let mut moved = flight(client, server, &mut seen_client, &mut buf);
            moved |= flight(server, client, &mut seen_server, &mut buf);
            if !moved && seen_client.connected && seen_server.connected {
                break;
            }
        }
        (seen_client, seen_server)
    }

    #[test]
    fn rsa_client_connects_to_our_server_and_both_derive_the_same_srtp_keys() {
        let now = Instant::now();
        let ours = OpensslDtls.generate_certificate().unwrap();
        let theirs = rsa_certificate();
        let mut server = instance(&OpensslDtls, &ours);
        let mut client = instance(&OpensslDtls, &theirs);
        let (c, s) = handshake(client.as_mut(), server.as_mut(), now);
        assert!(c.connected && s.connected);
        assert_eq!(s.peer_cert.as_deref(), Some(&theirs.certificate[..]));
        assert_eq!(c.peer_cert.as_deref(), Some(&ours.certificate[..]));
        let (ck, cp) = c.keying.unwrap();
        let (sk, sp) = s.keying.unwrap();
        assert_eq!((ck, cp), (sk, sp));
        assert_eq!(cp, SrtpProfile::AEAD_AES_128_GCM);
        assert_eq!(server.protocol_version(), Some(ProtocolVersion::DTLS1_2));
    }

    /// The SFU seals its own packets with the keys str0m gets: each association leaves
    /// them in the slot its creator takes, with the side it played.
    #[test]
    fn each_association_leaves_its_keys_and_role_in_the_slot_its_creator_took() {
        let now = Instant::now();
        let cert = OpensslDtls.generate_certificate().unwrap();
        let mut server = instance(&OpensslDtls, &cert);
        let server_keys = take_created_keys().expect("a slot per association");
        let mut client = instance(&OpensslDtls, &cert);
        let client_keys = take_created_keys().expect("a slot per association");
        assert!(take_created_keys().is_none(), "taken once");
        assert!(server_keys.get().is_none(), "empty until connected");
        let (c, s) = handshake(client.as_mut(), server.as_mut(), now);
        assert!(c.connected && s.connected);
        let (material, profile) = s.keying.unwrap();
        let (ck, sk) = (client_keys.get().unwrap(), server_keys.get().unwrap());
        assert_eq!((&ck.material, ck.profile), (&material, profile));
        assert_eq!((&sk.material, sk.profile), (&material, profile));
        assert!(ck.dtls_client && !sk.dtls_client);
    }

    #[test]
    fn rsa_server_accepts_us_as_client() {
        let now = Instant::now();
        let theirs = rsa_certificate();
        let ours = OpensslDtls.generate_certificate().unwrap();
        let mut server = instance(&OpensslDtls, &theirs);
        let mut client = instance(&OpensslDtls, &ours);
        let (c, s) = handshake(client.as_mut(), server.as_mut(), now);
        assert!(c.connected && s.connected);
        assert_eq!(c.keying.unwrap(), s.keying.unwrap());
    }

    /// The reason this crate exists: str0m's own DTLS as server refuses an RSA client.
    #[test]
    fn str0m_default_dtls_refuses_the_rsa_client_that_we_accept() {
        let now = Instant::now();
        let dimpl = str0m::crypto::from_feature_flags().dtls_provider;
        let ours = dimpl.generate_certificate().unwrap();
        let mut server = instance(dimpl, &ours);
        let mut client = instance(&OpensslDtls, &rsa_certificate());
        let (c, s) = handshake(client.as_mut(), server.as_mut(), now);
        assert!(!c.connected && !s.connected);
    }

    /// str0m's clients (our load generator, the test peers) are dimpl: ECDSA both ways.
    #[test]
    fn dimpl_client_connects_to_our_server_and_exchanges_data() {
        let now = Instant::now();
        let dimpl = str0m::crypto::from_feature_flags().dtls_provider;
        let mut client = instance(dimpl, &dimpl.generate_certificate().unwrap());
        let mut server = instance(&OpensslDtls, &OpensslDtls.generate_certificate().unwrap());
        let (c, s) = handshake(client.as_mut(), server.as_mut(), now);
        assert!(c.connected && s.connected);
        assert_eq!(c.keying.as_ref().unwrap(), s.keying.as_ref().unwrap());
        // Our preference, not dimpl's (AES-256-GCM): the cheapest seal per forwarded
        // packet (docs/benchmarks.md, "SRTP seal cost").
        assert_eq!(s.keying.as_ref().unwrap().1, SrtpProfile::AEAD_AES_128_GCM);

        assert_eq!(client.send_application_data(b"sctp bytes").unwrap(), 10);
        let mut buf = vec![0; 2048];
        let mut delivered = Vec::new();
        while let DtlsOutput::Packet(p) = client.poll_output(&mut buf) {
            delivered.push(p.to_vec());
        }
        for p in delivered {
            server.handle_packet(&p).unwrap();
        }
        let mut got = None;
        loop {
            match server.poll_output(&mut buf) {
                DtlsOutput::ApplicationData(d) => got = Some(d.to_vec()),
                DtlsOutput::Timeout(_) => break,
                _ => {}
            }
        }
        assert_eq!(got.as_deref(), Some(&b"sctp bytes"[..]));
    }

    /// A lost flight comes again when OpenSSL's timer (1 s at first) runs out, and the
    /// timeout str0m is given says when.
    #[test]
    fn a_lost_client_hello_is_sent_again_when_the_timer_fires() {
        let now = Instant::now();
        let mut client = instance(&OpensslDtls, &OpensslDtls.generate_certificate().unwrap());
        let mut server = instance(&OpensslDtls, &OpensslDtls.generate_certificate().unwrap());
        client.set_active(true);
        server.set_active(false);
        let _ = client.handle_packet(&[]);
        let mut buf = vec![0; 2048];
        let mut lost = 0;
        let wait = loop {
            match client.poll_output(&mut buf) {
                DtlsOutput::Packet(_) => lost += 1,
                DtlsOutput::Timeout(t) => break t - now,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(lost, 1, "one ClientHello, dropped");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_millis(1100),
            "{wait:?}"
        );
        // OpenSSL's timer reads the real clock.
        std::thread::sleep(wait + Duration::from_millis(50));
        client.handle_timeout(now + wait).unwrap();
        let (c, s) = handshake(client.as_mut(), server.as_mut(), now + wait);
        assert!(c.connected && s.connected);
    }

    #[test]
    fn associations_of_one_certificate_share_one_context() {
        let cert = OpensslDtls.generate_certificate().unwrap();
        let first = shared_context(&cert).unwrap();
        assert_eq!(shared_context(&cert).unwrap().as_ptr(), first.as_ptr());
        let other = OpensslDtls.generate_certificate().unwrap();
        assert_ne!(shared_context(&other).unwrap().as_ptr(), first.as_ptr());
        // Two associations of the shared certificate still connect (fresh keys each).
        let now = Instant::now();
        let dimpl = str0m::crypto::from_feature_flags().dtls_provider;
        let mut keys = Vec::new();
        for _ in 0..2 {
            let mut server = instance(&OpensslDtls, &cert);
            let mut client = instance(dimpl, &dimpl.generate_certificate().unwrap());
            let (c, s) = handshake(client.as_mut(), server.as_mut(), now);
            assert!(c.connected && s.connected);
            assert_eq!(c.peer_cert.as_deref(), Some(&cert.certificate[..]));
            keys.push(s.keying.unwrap().0);
        }
        assert_ne!(keys[0], keys[1]);
    }

    #[test]
    fn junk_datagrams_fail_the_handshake_without_panicking() {
        let mut server = instance(&OpensslDtls, &OpensslDtls.generate_certificate().unwrap());
        server.set_active(false);
        for junk in [
            &[][..],
            &[0x16; 13][..],
            &[0xff; 300][..],
            &vec![0x16; MAX_DATAGRAM + 1],
        ] {
            let _ = server.handle_packet(junk);
        }
        let mut buf = vec![0; 2048];
        for _ in 0..10 {
            if let DtlsOutput::Timeout(_) = server.poll_output(&mut buf) {
                break;
            }
        }
        assert!(server.protocol_version().is_none());
    }
}
