//! Webhooks: signed HTTP callbacks for what happens in creators' rooms.
//!
//! Events are rows of an outbox written in the transaction of the change that causes
//! them ([`outbox::emit`]), with one delivery row per subscribed endpoint. The
//! [`delivery`] task sends them at least once, in order per room and endpoint, with
//! backoff for up to a day; the [`reconciler`] turns the bus's live state into
//! `room.*` and `publisher.*` transitions; [`admission`] asks an operator's hook
//! before a publish is accepted.

pub(crate) mod admission;
pub(crate) mod delivery;
pub(crate) mod guard;
pub(crate) mod outbox;
pub(crate) mod reconciler;

use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// What a webhook can be sent for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum EventType {
    /// The room went live (a publisher's media reached the origin).
    #[serde(rename = "room.live")]
    RoomLive,
    /// The room stopped being live.
    #[serde(rename = "room.offline")]
    RoomOffline,
    /// A publisher session started (`data.protocol`: whip, rtmp, ws or p2p).
    #[serde(rename = "publisher.connected")]
    PublisherConnected,
    /// A publisher session ended or was replaced.
    #[serde(rename = "publisher.disconnected")]
    PublisherDisconnected,
    /// The room's stream key was rotated.
    #[serde(rename = "stream_key.rotated")]
    StreamKeyRotated,
    /// A recording was finalized and is listed (`data.recording_id`, duration, bytes).
    #[serde(rename = "recording.ready")]
    RecordingReady,
    /// Every 30 s while live: the viewer count (opt-in).
    #[serde(rename = "room.viewers")]
    RoomViewers,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::RoomLive,
        Self::RoomOffline,
        Self::PublisherConnected,
        Self::PublisherDisconnected,
        Self::StreamKeyRotated,
        Self::RecordingReady,
        Self::RoomViewers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomLive => "room.live",
            Self::RoomOffline => "room.offline",
            Self::PublisherConnected => "publisher.connected",
            Self::PublisherDisconnected => "publisher.disconnected",
            Self::StreamKeyRotated => "stream_key.rotated",
            Self::RecordingReady => "recording.ready",
            Self::RoomViewers => "room.viewers",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// How the comma-separated `events` column holds a set of types.
pub(crate) fn join_events(events: &[EventType]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn split_events(s: &str) -> Vec<EventType> {
    s.split(',').filter_map(EventType::parse).collect()
}

/// Operators' webhook settings.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    /// Deployment-wide endpoints (`SKYLARK_WEBHOOK_URLS`): every event of every room.
    pub urls: Vec<String>,
    /// Signs deployment-wide deliveries and admission calls (`SKYLARK_WEBHOOK_SECRET`).
    pub secret: Option<String>,
    /// The admission hook (`SKYLARK_ADMISSION_URL`), if any.
    pub admission: Option<AdmissionConfig>,
    /// Whether creators' endpoints may be on private addresses
    /// (`SKYLARK_WEBHOOK_ALLOW_PRIVATE`; see [`guard`]).
    pub allow_private: bool,
}

#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    pub url: String,
    /// `SKYLARK_ADMISSION_TIMEOUT_MS`.
    pub timeout: Duration,
    /// What a timeout or error means (`SKYLARK_ADMISSION_DEFAULT`): allow, or deny.
    pub default_allow: bool,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("urls", &self.urls)
            .field("secret", &self.secret.as_ref().map(|_| "<masked>"))
            .field("admission", &self.admission)
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

impl WebhookConfig {
    /// Checks the operator's settings, saying what to change.
    pub fn new(
        urls: &str,
        secret: &str,
        admission_url: &str,
        admission_timeout: Duration,
        admission_default: &str,
        allow_private: bool,
    ) -> anyhow::Result<Self> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let admission_url = admission_url.trim();
        for u in urls
            .iter()
            .map(String::as_str)
            .chain(Some(admission_url).filter(|u| !u.is_empty()))
        {
            if reqwest::Url::parse(u).map_or(true, |p| !matches!(p.scheme(), "http" | "https")) {
                anyhow::bail!("webhook URL {u:?} is not an http(s) URL: fix SKYLARK_WEBHOOK_URLS / SKYLARK_ADMISSION_URL");
            }
        }
        let secret = Some(secret.trim().to_owned()).filter(|s| !s.is_empty());
        if (!urls.is_empty() || !admission_url.is_empty()) && secret.is_none() {
            anyhow::bail!(
                "SKYLARK_WEBHOOK_URLS and SKYLARK_ADMISSION_URL need SKYLARK_WEBHOOK_SECRET: \
                 the receivers check the signature with it"
            );
        }
        let default_allow = match admission_default {
            "allow" => true,
            "deny" => false,
            o => anyhow::bail!("SKYLARK_ADMISSION_DEFAULT is {o:?}: use `allow` or `deny`"),
        };
        Ok(Self {
            allow_private,
            urls,
            secret,
            admission: (!admission_url.is_empty()).then(|| AdmissionConfig {
                url: admission_url.to_owned(),
                timeout: admission_timeout,
                default_allow,
            }),
        })
    }
}

/// The headers every signed request carries, and its body: shared by deliveries and
/// the admission hook.
pub(crate) fn signed_post(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            "Skylark-Signature",
            skylark_auth::webhook_signature(secret, t, body.as_bytes()),
        )
        .body(body)
}

/// The client of deliveries and admission calls: no redirects (a receiver answers,
/// it does not send us elsewhere, and a redirect could lead past [`guard`]), a 10 s
/// ceiling; `public_only`: connects to public addresses only.
pub(crate) fn http_client(public_only: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder();
    let builder = if public_only {
        builder.dns_resolver(std::sync::Arc::new(guard::PublicOnly))
    } else {
        builder
    };
    builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent("Skylark-Webhooks/1")
        .build()
        .unwrap_or_default()
}
