//! The one error type of the crate.

use std::time::Duration;

/// What went wrong talking to the bus.
///
/// [`BusError::is_unavailable`] tells transient outages (retry later) from
/// mistakes in the call or the configuration (do not retry).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The Redis URL could not be parsed.
    #[error(
        "invalid Redis URL ({0}); expected redis://[:password@]host:port[/db], check REDIS_URL"
    )]
    InvalidUrl(#[source] redis::RedisError),

    /// Redis could not be reached or did not answer in time.
    ///
    /// Live media does not depend on the bus; callers should fail the current
    /// request (or retry later) rather than wait.
    #[error(
        "Redis at {addr} unreachable ({op}: {detail}); check REDIS_URL and that Redis is running"
    )]
    Unavailable {
        /// `host:port` of the server, without credentials.
        addr: String,
        /// The operation that failed, e.g. `"PUBLISH"`.
        op: &'static str,
        /// Why, e.g. "no answer within 2s" or the socket error.
        detail: String,
    },

    /// Redis answered, but with an error (wrong type, script error, ACL, ...).
    #[error("Redis {op} failed: {source}")]
    Redis {
        /// The operation that failed.
        op: &'static str,
        /// The error Redis reported.
        #[source]
        source: redis::RedisError,
    },

    /// A published payload was larger than [`MAX_PAYLOAD_BYTES`](crate::MAX_PAYLOAD_BYTES).
    #[error("payload of {size} bytes exceeds the {limit}-byte limit for bus events; publish a reference to the data instead")]
    PayloadTooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The call itself was invalid (zero TTL, empty id, ...).
    #[error("invalid bus call: {0}")]
    InvalidArgument(&'static str),

    /// A value could not be encoded for storage.
    #[error("could not encode {what} for the bus: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl BusError {
    /// True for outages worth retrying later (Redis down, slow or restarting).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn timed_out(addr: &str, op: &'static str, after: Duration) -> Self {
        Self::Unavailable {
            addr: addr.to_owned(),
            op,
            detail: format!("no answer within {after:?}"),
        }
    }
}

/// Rejects TTLs Redis would refuse (`PX 0`) or silently round to zero.
pub(crate) fn check_ttl(ttl: Duration) -> Result<(), BusError> {
    if ttl.as_millis() == 0 {
        return Err(BusError::InvalidArgument("TTL must be at least 1 ms"));
    }
    Ok(())
}

/// Empty ids and holders would make every caller look like the same one.
pub(crate) fn check_name(value: &str, what: &'static str) -> Result<(), BusError> {
    if value.is_empty() {
        return Err(BusError::InvalidArgument(what));
    }
    Ok(())
}

/// Enforces the event size limit identically on both backends.
pub(crate) fn check_payload(payload: &str) -> Result<(), BusError> {
    if payload.len() > crate::MAX_PAYLOAD_BYTES {
        return Err(BusError::PayloadTooLarge {
            size: payload.len(),
            limit: crate::MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}
