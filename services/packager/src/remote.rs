//! Requests for rooms another packager holds are passed on to it, so a load balancer
//! may send any `/hls` request to any packager.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, Uri};
use skylark_bus::{placement, AnyBus};
use std::time::Duration;

/// Marks a forwarded request, so two packagers never bounce one between them.
pub const FORWARDED: &str = "x-skylark-forwarded";
/// Largest body passed on (a segment of a high-bitrate stream fits easily).
const MAX_BODY: usize = 32 * 1024 * 1024;

pub struct Remote {
    bus: AnyBus,
    me: String,
    client: reqwest::Client,
}

impl Remote {
    /// `answer_timeout`: the longest a holder may take to answer (a blocking playlist
    /// request waits for new media before it answers).
    pub fn new(bus: AnyBus, me: String, answer_timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(answer_timeout)
            .build()
            .unwrap_or_default();
        Self { bus, me, client }
    }

    /// The holder's live FLV stream passed through chunk by chunk, or `None`.
    pub async fn forward_stream(
        &self,
        room: &str,
        uri: &Uri,
        already_forwarded: bool,
    ) -> Option<Response<Body>> {
        let (url, _) = self.holder_url(room, uri, already_forwarded).await?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let mut resp = client.get(url).header(FORWARDED, "1").send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = resp.chunk().await {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        let mut out = Response::new(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("video/x-flv"),
        );
        Some(out)
    }

    /// Where the room's holding packager serves `uri`, and its id; `None` when this
    /// packager holds the room, nobody does, or the request was already passed on once.
    /// Whether the room is live at an SFU node (a packager takes it up shortly).
    pub async fn is_live(&self, room: &str) -> bool {
        matches!(placement::origin_node(&self.bus, room).await, Ok(Some(_)))
    }

    async fn holder_url(
        &self,
        room: &str,
        uri: &Uri,
        already_forwarded: bool,
    ) -> Option<(String, String)> {
        if already_forwarded {
            return None;
        }
        let node = placement::packager_node(&self.bus, room).await.ok()??;
        if node.id == self.me {
            return None;
        }
        let url = format!(
            "http://{}{}",
            node.http_addr,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        Some((url, node.id))
    }

    /// The holder's answer, or `None` when no other live packager holds the room.
    pub async fn forward(
        &self,
        room: &str,
        uri: &Uri,
        already_forwarded: bool,
    ) -> Option<Response<Body>> {
        let (url, holder) = self.holder_url(room, uri, already_forwarded).await?;
        let resp = self
            .client
            .get(url)
            .header(FORWARDED, "1")
            .send()
            .await
            .ok()?;
        if resp.content_length().is_some_and(|l| l as usize > MAX_BODY) {
            return None;
        }
        let status = resp.status();
        let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
        let cache = resp.headers().get(header::CACHE_CONTROL).cloned();
        let body = resp.bytes().await.ok()?;
        let mut out = Response::new(Body::from(body));
        *out.status_mut() = status;
        if let Some(c) = ctype {
            out.headers_mut().insert(header::CONTENT_TYPE, c);
        }
        if let Some(c) = cache {
            out.headers_mut().insert(header::CACHE_CONTROL, c);
        }
        out.headers_mut()
            .insert("x-skylark-packager", HeaderValue::from_str(&holder).ok()?);
        Some(out)
    }
}
