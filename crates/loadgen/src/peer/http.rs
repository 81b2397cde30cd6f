//! WHIP/WHEP signaling over HTTP: POST an offer, DELETE the session. Bounded in time
//! (one timeout per request) and size (response bodies are read up to a limit).

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Client, StatusCode, Url};

use crate::Error;

/// Largest SDP answer accepted (the SFU's own limit for offers).
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// How much of an error body is kept in [`Error::Status`].
const MAX_ERROR_TEXT: usize = 4 * 1024;

/// An accepted offer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub sdp: String,
    /// The session resource, resolved against the request URL.
    pub location: Option<Url>,
    /// The SFU node serving the session (`Skylark-Node`), where the server says.
    pub serving_node: Option<String>,
}

/// HTTP client for the signaling exchange; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Signaling {
    client: Client,
}

impl Signaling {
    pub(crate) fn new(timeout: Duration) -> Result<Self, Error> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A load generator talks to its target directly; an environment proxy
            // would measure the proxy (and break loopback tests).
            .no_proxy()
            .build()?;
        Ok(Signaling { client })
    }

    /// POSTs an SDP offer; `201` with an answer is success, anything else an error.
    pub(crate) async fn post_offer(
        &self,
        url: &Url,
        bearer: Option<&str>,
        offer: String,
    ) -> Result<Answer, Error> {
        let mut req = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer);
        if let Some(token) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut resp = req.send().await?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|loc| {
                url.join(loc)
                    .map_err(|e| Error::Url(format!("Location {loc:?}: {e}")))
            })
            .transpose()?;
        let serving_node = resp
            .headers()
            .get("skylark-node")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_string);
        let body = read_limited(&mut resp, MAX_SDP_BYTES).await;
        if status != StatusCode::CREATED {
            return Err(status_error(status, body));
        }
        let body = body?;
        let sdp = String::from_utf8(body)
            .map_err(|_| Error::BadAnswer("the answer is not UTF-8".into()))?;
        Ok(Answer {
            sdp,
            location,
            serving_node,
        })
    }

    /// DELETEs a session resource; 2xx and 404 (already gone) are success.
    pub(crate) async fn delete(&self, url: &Url, bearer: Option<&str>) -> Result<(), Error> {
        let mut req = self.client.delete(url.clone());
        if let Some(token) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut resp = req.send().await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = read_limited(&mut resp, MAX_ERROR_TEXT).await;
        Err(status_error(status, body))
    }
}

fn status_error(status: StatusCode, body: Result<Vec<u8>, Error>) -> Error {
    let body = match body {
        Ok(b) => String::from_utf8_lossy(&b[..b.len().min(MAX_ERROR_TEXT)]).into_owned(),
        Err(e) => format!("<body unreadable: {e}>"),
    };
    Error::Status {
        status: status.as_u16(),
        body,
    }
}

/// Reads a body chunk by chunk, failing as soon as it passes `limit`.
async fn read_limited(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Error::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a URL with a clear error.
pub(crate) fn parse_url(s: &str) -> Result<Url, Error> {
    Url::parse(s).map_err(|e| Error::Url(format!("{s:?}: {e}")))
}
