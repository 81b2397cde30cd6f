//! SRTP and SRTCP for the SFU's forwarded packets (RFC 3711, RFC 7714): the SFU seals
//! each subscriber's copy itself, in the buffer it sends, instead of handing the packet
//! to str0m's per-session machinery. Sans-IO; aws-lc-rs, the workspace's one crypto
//! stack.
//!
//! Key schedules (AES, GHASH, HMAC pads) are built once per [`Sender`]/[`Receiver`];
//! sealing RTP allocates nothing as long as the caller's `Vec` has room for the tag
//! ([`Sender::rtp_overhead`] bytes past the packet).
//!
//! No replay protection here: a [`Receiver`] opens whatever authenticates. The SFU only
//! opens a subscriber's RTCP with it, where a replay changes nothing that matters.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use thiserror::Error;

/// The SRTP protection profiles the SFU's DTLS negotiates (`crates/dtls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// AEAD_AES_128_GCM (RFC 7714): 16-byte key, 12-byte salt, 16-byte tag.
    Aes128Gcm,
    /// AEAD_AES_256_GCM (RFC 7714): 32-byte key, 12-byte salt, 16-byte tag.
    Aes256Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711): 16-byte key, 14-byte salt, 10-byte tag.
    Aes128CmSha1_80,
}

impl Profile {
    /// Master (and session encryption) key bytes.
    pub fn key_len(self) -> usize {
        match self {
            Profile::Aes128Gcm | Profile::Aes128CmSha1_80 => 16,
            Profile::Aes256Gcm => 32,
        }
    }

    /// Master (and session) salt bytes.
    pub fn salt_len(self) -> usize {
        match self {
            Profile::Aes128Gcm | Profile::Aes256Gcm => GCM_SALT_LEN,
            Profile::Aes128CmSha1_80 => CM_SALT_LEN,
        }
    }

    /// DTLS-SRTP keying material bytes: both directions' keys and salts.
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// Authentication tag bytes appended to each packet.
    pub fn tag_len(self) -> usize {
        match self {
            Profile::Aes128Gcm | Profile::Aes256Gcm => GCM_TAG_LEN,
            Profile::Aes128CmSha1_80 => HMAC_TAG_LEN,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SrtpError {
    #[error("keying material is {got} bytes, the profile needs {want}")]
    KeyingLength { got: usize, want: usize },
    #[error("packet too short for its header")]
    Short,
    #[error("authentication failed")]
    Auth,
    #[error("crypto backend failed")]
    Crypto,
}

/// One direction's master key and salt (RFC 3711 §8.2), as exported by DTLS-SRTP.
#[derive(Clone)]
pub struct MasterKey {
    pub profile: Profile,
    pub key: Vec<u8>,
    pub salt: Vec<u8>,
}

/// Bytes an SRTCP packet grows by beyond its tag: the E flag and SRTCP index.
pub const SRTCP_INDEX_LEN: usize = 4;
/// The GCM profiles' tag (RFC 7714 §12).
pub const GCM_TAG_LEN: usize = 16;
/// AES_CM_HMAC_SHA1_80's tag: HMAC-SHA1 truncated to 80 bits (RFC 3711 §5.2).
pub const HMAC_TAG_LEN: usize = 10;

const GCM_SALT_LEN: usize = 12;
const CM_SALT_LEN: usize = 14;
const HMAC_KEY_LEN: usize = 20;
const RTP_MIN_HEADER: usize = 12;
/// RTCP header and sender SSRC, left in the clear (RFC 3711 §3.4).
const SRTCP_CLEAR_LEN: usize = 8;
const E_FLAG: u32 = 0x8000_0000;
const SRTCP_INDEX_MASK: u32 = 0x7fff_ffff;

// RFC 3711 §4.3.2 key derivation labels.
const LABEL_RTP_ENC: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_ENC: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

/// Splits DTLS-SRTP keying material (RFC 5764 §4.2: client key, server key, client
/// salt, server salt) into (what we send with, what the peer sends with).
pub fn split_keying(
    material: &[u8],
    profile: Profile,
    dtls_client: bool,
) -> Result<(MasterKey, MasterKey), SrtpError> {
    let want = profile.keying_material_len();
    if material.len() != want {
        return Err(SrtpError::KeyingLength {
            got: material.len(),
            want,
        });
    }
    let (keys, salts) = material.split_at(2 * profile.key_len());
    let (client_key, server_key) = keys.split_at(profile.key_len());
    let (client_salt, server_salt) = salts.split_at(profile.salt_len());
    let client = MasterKey {
        profile,
        key: client_key.to_vec(),
        salt: client_salt.to_vec(),
    };
    let server = MasterKey {
        profile,
        key: server_key.to_vec(),
        salt: server_salt.to_vec(),
    };
    Ok(if dtls_client {
        (client, server)
    } else {
        (server, client)
    })
}

/// One stream kind's (RTP or RTCP) session keys, schedules expanded.
enum SessionKeys {
    Gcm {
        aead: LessSafeKey,
        salt: [u8; GCM_SALT_LEN],
    },
    // Boxed: the HMAC state is ~1.7 KB, and GCM sessions (the common case) stay small.
    Cm(Box<CmKeys>),
}

struct CmKeys {
    // CTR is its own inverse: one key schedule encrypts and decrypts.
    ctr: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; CM_SALT_LEN],
}

/// RTP and RTCP session keys of one direction.
struct Session {
    profile: Profile,
    rtp: SessionKeys,
    rtcp: SessionKeys,
}

impl Session {
    fn derive(master: &MasterKey) -> Result<Self, SrtpError> {
        let profile = master.profile;
        if master.key.len() != profile.key_len() || master.salt.len() != profile.salt_len() {
            return Err(SrtpError::KeyingLength {
                got: master.key.len() + master.salt.len(),
                want: profile.key_len() + profile.salt_len(),
            });
        }
        let prf = Prf::new(master)?;
        Ok(Session {
            profile,
            rtp: prf.session(LABEL_RTP_ENC, LABEL_RTP_AUTH, LABEL_RTP_SALT)?,
            rtcp: prf.session(LABEL_RTCP_ENC, LABEL_RTCP_AUTH, LABEL_RTCP_SALT)?,
        })
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3, key_derivation_rate 0: AES in counter mode keyed
/// by the master key, counter block (master_salt XOR label at byte 7) · 2^16.
struct Prf {
    profile: Profile,
    aes: EncryptingKey,
    salt: [u8; CM_SALT_LEN],
}

impl Prf {
    fn new(master: &MasterKey) -> Result<Self, SrtpError> {
        // The GCM profiles' 96-bit salt fills the first 12 bytes of the 112-bit KDF
        // input, the last two zero: what libsrtp and str0m do (RFC 7714 §11).
        let mut salt = [0; CM_SALT_LEN];
        salt[..master.salt.len()].copy_from_slice(&master.salt);
        Ok(Prf {
            profile: master.profile,
            aes: ctr_key(&master.key)?,
            salt,
        })
    }

    fn derive(&self, label: u8, out: &mut [u8]) -> Result<(), SrtpError> {
        let mut block = [0; 16];
        block[..CM_SALT_LEN].copy_from_slice(&self.salt);
        block[7] ^= label;
        out.fill(0);
        ctr_apply(&self.aes, block, out)
    }

    fn session(&self, enc: u8, auth: u8, salt: u8) -> Result<SessionKeys, SrtpError> {
        let mut key = [0; 32];
        let key = &mut key[..self.profile.key_len()];
        self.derive(enc, key)?;
        match self.profile {
            Profile::Aes128Gcm | Profile::Aes256Gcm => {
                let alg = if self.profile == Profile::Aes128Gcm {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let unbound = UnboundKey::new(alg, key).map_err(|_| SrtpError::Crypto)?;
                let mut session_salt = [0; GCM_SALT_LEN];
                self.derive(salt, &mut session_salt)?;
                Ok(SessionKeys::Gcm {
                    aead: LessSafeKey::new(unbound),
                    salt: session_salt,
                })
            }
            Profile::Aes128CmSha1_80 => {
                let mut auth_key = [0; HMAC_KEY_LEN];
                self.derive(auth, &mut auth_key)?;
                let mut session_salt = [0; CM_SALT_LEN];
                self.derive(salt, &mut session_salt)?;
                Ok(SessionKeys::Cm(Box::new(CmKeys {
                    ctr: ctr_key(key)?,
                    auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth_key),
                    salt: session_salt,
                })))
            }
        }
    }
}

fn ctr_key(key: &[u8]) -> Result<EncryptingKey, SrtpError> {
    let alg = if key.len() == 32 { &AES_256 } else { &AES_128 };
    let unbound = UnboundCipherKey::new(alg, key).map_err(|_| SrtpError::Crypto)?;
    EncryptingKey::ctr(unbound).map_err(|_| SrtpError::Crypto)
}

/// XORs `data` with the AES-CTR keystream starting at counter block `iv`.
fn ctr_apply(key: &EncryptingKey, iv: [u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
    key.less_safe_encrypt(data, EncryptionContext::Iv128(iv.into()))
        .map(|_| ())
        .map_err(|_| SrtpError::Crypto)
}

/// AES-CM counter block (RFC 3711 §4.1.1): salt·2^16 XOR SSRC·2^64 XOR index·2^16.
fn cm_iv(salt: &[u8; CM_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0; 16];
    iv[..CM_SALT_LEN].copy_from_slice(salt);
    xor(&mut iv[4..8], &ssrc.to_be_bytes());
    // The index is 48 bits: its low six bytes.
    xor(&mut iv[8..14], &index.to_be_bytes()[2..]);
    iv
}

/// GCM RTP IV (RFC 7714 §8.1): (00 00 || SSRC || ROC || SEQ) XOR salt.
fn gcm_rtp_nonce(salt: &[u8; GCM_SALT_LEN], ssrc: u32, roc: u32, seq: u16) -> Nonce {
    let mut iv = [0; GCM_SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    xor(&mut iv, salt);
    Nonce::assume_unique_for_key(iv)
}

/// GCM SRTCP IV (RFC 7714 §9.1): (00 00 || SSRC || 00 00 || 0 || index31) XOR salt.
fn gcm_rtcp_nonce(salt: &[u8; GCM_SALT_LEN], ssrc: u32, index: u32) -> Nonce {
    let mut iv = [0; GCM_SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & SRTCP_INDEX_MASK).to_be_bytes());
    xor(&mut iv, salt);
    Nonce::assume_unique_for_key(iv)
}

fn xor(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SSRC and sequence number of an RTP packet whose header is `header_len` bytes.
fn rtp_ids(packet: &[u8], header_len: usize) -> Result<(u32, u16), SrtpError> {
    if header_len < RTP_MIN_HEADER || packet.len() < header_len {
        return Err(SrtpError::Short);
    }
    Ok((
        be_u32(&packet[8..12]),
        u16::from_be_bytes([packet[2], packet[3]]),
    ))
}

/// HMAC-SHA1 over `parts`, truncated to the 80-bit tag.
fn hmac_tag(key: &hmac::Key, parts: &[&[u8]]) -> [u8; HMAC_TAG_LEN] {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(p);
    }
    let mut tag = [0; HMAC_TAG_LEN];
    tag.copy_from_slice(&ctx.sign().as_ref()[..HMAC_TAG_LEN]);
    tag
}

fn check_hmac(key: &hmac::Key, parts: &[&[u8]], tag: &[u8]) -> Result<(), SrtpError> {
    verify_slices_are_equal(&hmac_tag(key, parts), tag).map_err(|_| SrtpError::Auth)
}

/// Seals what one session sends: RTP on any SSRC (the caller tracks each SSRC's
/// rollover counter), RTCP with its own SRTCP index.
pub struct Sender {
    session: Session,
    /// The next SRTCP index (31 bits; 0 first, RFC 3711 §3.3.1).
    srtcp_index: u32,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("profile", &self.session.profile)
            .field("srtcp_index", &self.srtcp_index)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub fn new(key: &MasterKey) -> Result<Self, SrtpError> {
        Ok(Sender {
            session: Session::derive(key)?,
            srtcp_index: 0,
        })
    }

    /// Bytes a sealed RTP packet grows by (the tag).
    pub fn rtp_overhead(&self) -> usize {
        self.session.profile.tag_len()
    }

    /// Sets the SRTCP index the next sealed RTCP packet takes (modulo 2^31; 0 after
    /// `new`). For a key another sealer also uses (str0m seals the session's own RTCP
    /// with it): starting far from its indices keeps any one IV from being used twice.
    pub fn set_rtcp_index(&mut self, index: u32) {
        self.srtcp_index = index & SRTCP_INDEX_MASK;
    }

    /// Bytes a sealed RTCP packet grows by (tag, E flag and index).
    pub fn rtcp_overhead(&self) -> usize {
        self.session.profile.tag_len() + SRTCP_INDEX_LEN
    }

    /// Seals the plain RTP packet in `packet` in place: its first `header_len` bytes are
    /// the header (SSRC and sequence number read from it), the rest the payload; the
    /// tag is appended. `roc`: the SSRC's rollover counter.
    ///
    /// Allocates only if `packet` lacks capacity for [`Sender::rtp_overhead`] more bytes.
    pub fn seal_rtp(
        &self,
        packet: &mut Vec<u8>,
        header_len: usize,
        roc: u32,
    ) -> Result<(), SrtpError> {
        let (ssrc, seq) = rtp_ids(packet, header_len)?;
        match &self.session.rtp {
            SessionKeys::Gcm { aead, salt } => {
                let nonce = gcm_rtp_nonce(salt, ssrc, roc, seq);
                let (header, payload) = packet.split_at_mut(header_len);
                let tag = aead
                    .seal_in_place_separate_tag(nonce, Aad::from(&*header), payload)
                    .map_err(|_| SrtpError::Crypto)?;
                packet.extend_from_slice(tag.as_ref());
            }
            SessionKeys::Cm(cm) => {
                let CmKeys { ctr, auth, salt } = cm.as_ref();
                let index = u64::from(roc) << 16 | u64::from(seq);
                ctr_apply(ctr, cm_iv(salt, ssrc, index), &mut packet[header_len..])?;
                // RFC 3711 §4.2: the authenticated portion, then the ROC.
                let tag = hmac_tag(auth, &[packet, &roc.to_be_bytes()]);
                packet.extend_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Seals a plain compound RTCP packet in place, taking the next SRTCP index
    /// (E flag set, index and tag appended).
    pub fn seal_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < SRTCP_CLEAR_LEN {
            return Err(SrtpError::Short);
        }
        let index = self.srtcp_index;
        let trailer = (E_FLAG | index).to_be_bytes();
        let ssrc = be_u32(&packet[4..8]);
        match &self.session.rtcp {
            SessionKeys::Gcm { aead, salt } => {
                // RFC 7714 §9.2: AAD is the clear header and SSRC, then E|index; the
                // packet ends ciphertext || tag || E|index (§17's vector).
                let mut aad = [0; SRTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
                aad[..SRTCP_CLEAR_LEN].copy_from_slice(&packet[..SRTCP_CLEAR_LEN]);
                aad[SRTCP_CLEAR_LEN..].copy_from_slice(&trailer);
                let nonce = gcm_rtcp_nonce(salt, ssrc, index);
                let tag = aead
                    .seal_in_place_separate_tag(
                        nonce,
                        Aad::from(aad),
                        &mut packet[SRTCP_CLEAR_LEN..],
                    )
                    .map_err(|_| SrtpError::Crypto)?;
                packet.extend_from_slice(tag.as_ref());
                packet.extend_from_slice(&trailer);
            }
            SessionKeys::Cm(cm) => {
                let CmKeys { ctr, auth, salt } = cm.as_ref();
                let iv = cm_iv(salt, ssrc, u64::from(index));
                ctr_apply(ctr, iv, &mut packet[SRTCP_CLEAR_LEN..])?;
                packet.extend_from_slice(&trailer);
                // RFC 3711 §3.4: the tag covers everything before it, E|index included.
                let tag = hmac_tag(auth, &[packet]);
                packet.extend_from_slice(&tag);
            }
        }
        self.srtcp_index = (index + 1) & SRTCP_INDEX_MASK;
        Ok(())
    }
}

/// Opens what a peer sent (tests, and reading a subscriber's RTCP).
pub struct Receiver {
    session: Session,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("profile", &self.session.profile)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    pub fn new(key: &MasterKey) -> Result<Self, SrtpError> {
        Ok(Receiver {
            session: Session::derive(key)?,
        })
    }

    /// The plain RTP packet (header + payload) of a sealed one; `roc` as sent.
    pub fn open_rtp(
        &self,
        packet: &[u8],
        header_len: usize,
        roc: u32,
    ) -> Result<Vec<u8>, SrtpError> {
        let tag_len = self.session.profile.tag_len();
        let (ssrc, seq) = rtp_ids(packet, header_len)?;
        if packet.len() < header_len + tag_len {
            return Err(SrtpError::Short);
        }
        match &self.session.rtp {
            SessionKeys::Gcm { aead, salt } => {
                let nonce = gcm_rtp_nonce(salt, ssrc, roc, seq);
                let mut out = packet.to_vec();
                let (header, body) = out.split_at_mut(header_len);
                let plain_len = aead
                    .open_in_place(nonce, Aad::from(&*header), body)
                    .map_err(|_| SrtpError::Auth)?
                    .len();
                out.truncate(header_len + plain_len);
                Ok(out)
            }
            SessionKeys::Cm(cm) => {
                let CmKeys { ctr, auth, salt } = cm.as_ref();
                let (sealed, tag) = packet.split_at(packet.len() - tag_len);
                check_hmac(auth, &[sealed, &roc.to_be_bytes()], tag)?;
                let index = u64::from(roc) << 16 | u64::from(seq);
                let mut out = sealed.to_vec();
                ctr_apply(ctr, cm_iv(salt, ssrc, index), &mut out[header_len..])?;
                Ok(out)
            }
        }
    }

    /// The plain compound RTCP packet of a sealed one.
    pub fn open_rtcp(&self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let tag_len = self.session.profile.tag_len();
        if packet.len() < SRTCP_CLEAR_LEN + SRTCP_INDEX_LEN + tag_len {
            return Err(SrtpError::Short);
        }
        let ssrc = be_u32(&packet[4..8]);
        match &self.session.rtcp {
            SessionKeys::Gcm { aead, salt } => {
                let (body, trailer) = packet.split_at(packet.len() - SRTCP_INDEX_LEN);
                let e_index = be_u32(trailer);
                let nonce = gcm_rtcp_nonce(salt, ssrc, e_index);
                if e_index & E_FLAG == 0 {
                    // Authenticated only (RFC 7714 §9.2): the whole packet and the
                    // trailer are AAD, the plaintext empty.
                    let (plain, tag) = body.split_at(body.len() - GCM_TAG_LEN);
                    let aad = [plain, trailer].concat();
                    aead.open_in_place_separate_tag(nonce, Aad::from(aad), tag, &mut [])
                        .map_err(|_| SrtpError::Auth)?;
                    return Ok(plain.to_vec());
                }
                let mut aad = [0; SRTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
                aad[..SRTCP_CLEAR_LEN].copy_from_slice(&body[..SRTCP_CLEAR_LEN]);
                aad[SRTCP_CLEAR_LEN..].copy_from_slice(trailer);
                let mut out = body.to_vec();
                let plain_len = aead
                    .open_in_place(nonce, Aad::from(aad), &mut out[SRTCP_CLEAR_LEN..])
                    .map_err(|_| SrtpError::Auth)?
                    .len();
                out.truncate(SRTCP_CLEAR_LEN + plain_len);
                Ok(out)
            }
            SessionKeys::Cm(cm) => {
                let CmKeys { ctr, auth, salt } = cm.as_ref();
                let (signed, tag) = packet.split_at(packet.len() - tag_len);
                check_hmac(auth, &[signed], tag)?;
                let (body, trailer) = signed.split_at(signed.len() - SRTCP_INDEX_LEN);
                let e_index = be_u32(trailer);
                let mut out = body.to_vec();
                if e_index & E_FLAG != 0 {
                    let iv = cm_iv(salt, ssrc, u64::from(e_index & SRTCP_INDEX_MASK));
                    ctr_apply(ctr, iv, &mut out[SRTCP_CLEAR_LEN..])?;
                }
                Ok(out)
            }
        }
    }
}
#[cfg(test)]
mod tests;
