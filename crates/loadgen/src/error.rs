//! Errors, and the failure causes a load report counts.

use std::fmt;

use serde::Serialize;

/// Everything that can go wrong when a peer joins or runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WHIP/WHEP server refused: any status other than `201 Created`.
    #[error("server answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body, lossily decoded and cut to 4 KiB.
        body: String,
    },
    /// An HTTP request took longer than the configured timeout.
    #[error("HTTP request timed out")]
    Timeout,
    /// The HTTP server could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Any other HTTP transport error.
    #[error("HTTP error: {0}")]
    Http(String),
    /// A response body exceeded its limit.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A `201` without the `Location` header WHIP requires.
    #[error("201 response without a Location header")]
    MissingLocation,
    /// The SDP answer could not be parsed or applied.
    #[error("bad SDP answer: {0}")]
    BadAnswer(String),
    /// A URL could not be parsed or resolved.
    #[error("bad URL: {0}")]
    Url(String),
    /// str0m refused an operation.
    #[error("WebRTC: {0}")]
    Rtc(String),
    /// Socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The engine task has stopped (cancelled, or all handles dropped).
    #[error("the peer engine has stopped")]
    EngineStopped,
    /// A session failed inside the engine (ICE timeout, disconnect, ...).
    #[error("session failed: {0}")]
    Failed(FailureCause),
}

/// What a refusal's body says to a person: the JSON error's `message`
/// (`{"error": {"message": …}}`), else the body's first 200 characters.
pub fn server_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

impl Error {
    /// What a person is told of this error: the server's message for a refusal.
    ///
    /// ```
    /// use skylark_loadgen::Error;
    /// let body = r#"{"error":{"code":"unavailable","message":"node full: try another"}}"#;
    /// let e = Error::Status { status: 503, body: body.into() };
    /// assert_eq!(e.message(), "node full: try another");
    /// assert_eq!(Error::Timeout.message(), "HTTP request timed out");
    /// ```
    pub fn message(&self) -> String {
        match self {
            Error::Status { body, .. } => server_message(body),
            other => other.to_string(),
        }
    }

    /// The cause under which a load report counts this error.
    ///
    /// ```
    /// use skylark_loadgen::{Error, FailureCause};
    /// let e = Error::Status { status: 503, body: "busy".into() };
    /// assert_eq!(e.cause(), FailureCause::HttpStatus(503));
    /// assert_eq!(e.cause().to_string(), "http_503");
    /// ```
    pub fn cause(&self) -> FailureCause {
        match self {
            Error::Status { status, .. } => FailureCause::HttpStatus(*status),
            Error::Timeout => FailureCause::HttpTimeout,
            Error::Connect(_) => FailureCause::HttpConnect,
            Error::Http(_) | Error::TooLarge { .. } | Error::MissingLocation | Error::Url(_) => {
                FailureCause::Http
            }
            Error::BadAnswer(_) => FailureCause::BadAnswer,
            Error::Rtc(_) | Error::Io(_) => FailureCause::Rtc,
            Error::EngineStopped => FailureCause::EngineStopped,
            Error::Failed(c) => *c,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Error::Timeout
        } else if e.is_connect() {
            Error::Connect(e.to_string())
        } else {
            Error::Http(e.to_string())
        }
    }
}

/// Why a peer failed, as counted in reports (`Display` gives the report key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The server answered this status instead of 201.
    HttpStatus(u16),
    /// The signaling request timed out.
    HttpTimeout,
    /// The signaling server was unreachable.
    HttpConnect,
    /// Another signaling problem (bad URL, oversized or malformed response).
    Http,
    /// The SDP answer was unusable (unparseable, or no H.264/Opus in it).
    BadAnswer,
    /// ICE + DTLS did not connect in time.
    IceTimeout,
    /// The connection was lost after it was up.
    Disconnected,
    /// The server ended the session (DTLS close_notify): a new publisher replaced this
    /// one, or its publish was cut.
    Closed,
    /// Connected, but no keyframe arrived in time.
    NoKeyframe,
    /// str0m reported an error.
    Rtc,
    /// The engine stopped under the session.
    EngineStopped,
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::HttpStatus(s) => write!(f, "http_{s}"),
            FailureCause::HttpTimeout => f.write_str("http_timeout"),
            FailureCause::HttpConnect => f.write_str("http_connect"),
            FailureCause::Http => f.write_str("http_error"),
            FailureCause::BadAnswer => f.write_str("bad_answer"),
            FailureCause::IceTimeout => f.write_str("ice_timeout"),
            FailureCause::Disconnected => f.write_str("disconnected"),
            FailureCause::Closed => f.write_str("closed_by_server"),
            FailureCause::NoKeyframe => f.write_str("no_keyframe"),
            FailureCause::Rtc => f.write_str("rtc_error"),
            FailureCause::EngineStopped => f.write_str("engine_stopped"),
        }
    }
}
