//! SRTP and SRTCP for the SFU's forwarded packets (RFC 3711, RFC 7714): the SFU seals
//! each subscriber's copy itself, in the buffer it sends, instead of handing the packet
//! to str0m's per-session machinery. Sans-IO; aws-lc-rs, the workspace's one crypto
//! stack.

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

/// Splits DTLS-SRTP keying material (RFC 5764 §4.2: client key, server key, client
/// salt, server salt) into (what we send with, what the peer sends with).
pub fn split_keying(
    material: &[u8],
    profile: Profile,
    dtls_client: bool,
) -> Result<(MasterKey, MasterKey), SrtpError> {
    let _ = (material, profile, dtls_client);
    todo!("helper srtp")
}

/// Seals what one session sends: RTP on any SSRC (the caller tracks each SSRC's
/// rollover counter), RTCP with its own SRTCP index.
pub struct Sender {}

impl Sender {
    pub fn new(key: &MasterKey) -> Result<Self, SrtpError> {
        let _ = key;
        todo!("helper srtp")
    }

    /// Bytes a sealed RTP packet grows by (the tag).
    pub fn rtp_overhead(&self) -> usize {
        todo!("helper srtp")
    }

    /// Seals the plain RTP packet in `packet` in place: its first `header_len` bytes are
    /// the header (SSRC and sequence number read from it), the rest the payload; the
    /// tag is appended. `roc`: the SSRC's rollover counter.
    pub fn seal_rtp(
        &self,
        packet: &mut Vec<u8>,
        header_len: usize,
        roc: u32,
    ) -> Result<(), SrtpError> {
        let _ = (packet, header_len, roc);
        todo!("helper srtp")
    }

    /// Seals a plain compound RTCP packet in place, taking the next SRTCP index
    /// (E flag set, index and tag appended).
    pub fn seal_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let _ = packet;
        todo!("helper srtp")
    }
}

/// Opens what a peer sent (tests, and reading a subscriber's RTCP).
pub struct Receiver {}

impl Receiver {
    pub fn new(key: &MasterKey) -> Result<Self, SrtpError> {
        let _ = key;
        todo!("helper srtp")
    }

    /// The plain RTP packet (header + payload) of a sealed one; `roc` as sent.
    pub fn open_rtp(
        &self,
        packet: &[u8],
        header_len: usize,
        roc: u32,
    ) -> Result<Vec<u8>, SrtpError> {
        let _ = (packet, header_len, roc);
        todo!("helper srtp")
    }

    /// The plain compound RTCP packet of a sealed one.
    pub fn open_rtcp(&self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let _ = packet;
        todo!("helper srtp")
    }
}
