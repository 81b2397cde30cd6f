//! Sends the outbox: claims due deliveries (a lease, so replicas don't both send),
//! POSTs each signed, and records the outcome. 2xx is delivered; anything else, or no
//! answer in 10 s, is retried after 1 s, 2 s, 4 s … (capped at 10 min, with jitter)
//! until the event is 24 h old, then the delivery is marked failed. A room's
//! deliveries to one endpoint go one at a time, oldest first (see `claim_due`).

use super::outbox::Due;
use super::{guard, signed_post, WebhookConfig};
use crate::store::{now_ms, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a claim holds: past the 10 s request timeout, with room to record it.
const LEASE_MS: i64 = 30_000;
/// How long deliveries are retried.
pub(crate) const GIVE_UP_AFTER_MS: i64 = 24 * 3600 * 1000;
const FIRST_RETRY_MS: i64 = 1000;
const MAX_RETRY_MS: i64 = 600_000;
/// Deliveries claimed (and sent concurrently) per round.
const BATCH: i64 = 32;
/// When nothing wakes it, how often the task looks for due deliveries.
const POLL: Duration = Duration::from_secs(1);
/// Delivered and failed events are kept this long (visible in the API), then pruned.
const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

fn notify() -> &'static Notify {
    static WAKE: std::sync::OnceLock<Notify> = std::sync::OnceLock::new();
    WAKE.get_or_init(Notify::new)
}

/// Tells the delivery task that new events were committed.
pub(crate) fn wake() {
    notify().notify_one();
}

/// The delay before retry number `attempts` (1 = after the first failure): doubling
/// from 1 s, capped at 10 min, ±20 % jitter so a recovered receiver isn't hit by every
/// retry at once.
pub(crate) fn backoff_ms(attempts: i64) -> i64 {
    let base = FIRST_RETRY_MS
        .saturating_mul(1_i64 << attempts.clamp(1, 30).saturating_sub(1))
        .min(MAX_RETRY_MS);
    let r = skylark_auth::random_bytes(2);
    let unit = f64::from(u16::from_le_bytes([r[0], r[1]])) / f64::from(u16::MAX);
    (base as f64 * (0.8 + 0.4 * unit)) as i64
}

/// When to try again a delivery that failed its attempt number `attempts + 1`: after
/// [`backoff_ms`], unless that is 24 h or more after the event (`created_at`): `None`,
/// give up (the delivery is `failed`).
fn retry_at(now: i64, created_at: i64, attempts: i64) -> Option<i64> {
    let at = now + backoff_ms(attempts + 1);
    (at - created_at < GIVE_UP_AFTER_MS).then_some(at)
}

pub(crate) async fn run(store: Store, config: WebhookConfig, shutdown: CancellationToken) {
    // Operators' endpoints may be anywhere; creators' only where `guard` allows.
    let clients = Clients {
        operators: super::http_client(false),
        creators: super::http_client(!config.allow_private),
        guard: !config.allow_private,
    };
    let secret: Arc<str> = config.secret.unwrap_or_default().into();
    let mut last_prune = Instant::now();
    loop {
        let claimed = match store.claim_due(now_ms() + LEASE_MS, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook deliveries: database unavailable");
                Vec::new()
            }
        };
        let busy = !claimed.is_empty();
        let sends = claimed.into_iter().map(|due| {
            let (clients, store, secret) = (&clients, store.clone(), secret.clone());
            async move { send(clients, &store, &secret, due).await }
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = futures_util::future::join_all(sends) => {}
        }
        if let Ok(n) = store.pending_deliveries().await {
            metrics::gauge!("skylark_webhook_pending").set(n as f64);
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            if let Err(e) = store.prune_webhooks(now_ms() - KEEP_MS).await {
                tracing::warn!(error = %e, "pruning old webhook events failed");
            }
        }
        if busy {
            continue; // more may be due (the next of a room, once this one is done)
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = notify().notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

struct Clients {
    operators: reqwest::Client,
    creators: reqwest::Client,
    /// Whether creators' endpoints are held to public addresses.
    guard: bool,
}

async fn send(clients: &Clients, store: &Store, config_secret: &str, due: Due) {
    // Deployment-wide endpoints have no secret of their own: the configured one signs.
    let operators = due.secret.is_empty();
    let (client, secret) = if operators {
        (&clients.operators, config_secret)
    } else {
        (&clients.creators, due.secret.as_str())
    };
    let started = Instant::now();
    let refused = if clients.guard && !operators {
        guard::check_literal(&due.url).err()
    } else {
        None
    };
    let res = match refused {
        Some(why) => Err(why),
        None => signed_post(client, &due.url, secret, due.body)
            .header("Skylark-Event-Id", &due.event_id)
            .header("Skylark-Event-Type", &due.kind)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "no answer within 10 s".to_string()
                } else {
                    describe(&e)
                }
            }),
    };
    metrics::histogram!("skylark_webhook_attempt_seconds").record(started.elapsed().as_secs_f64());
    // The response body is never read: the status is the answer.
    let (status, error) = match res {
        Ok(r) if r.status().is_success() => (Some(i64::from(r.status().as_u16())), None),
        Ok(r) => (
            Some(i64::from(r.status().as_u16())),
            Some(format!("HTTP {}: answer 2xx to acknowledge", r.status())),
        ),
        Err(e) => (None, Some(e)),
    };
    let next = error
        .as_ref()
        .map(|_| retry_at(now_ms(), due.created_at_ms, due.attempts));
    let outcome = match next {
        None => "ok",
        Some(Some(_)) => "error",
        Some(None) => "failed",
    };
    metrics::counter!("skylark_webhook_deliveries_total", "result" => outcome).increment(1);
    if let Some(e) = &error {
        tracing::info!(event = %due.event_id, url = %due.url, error = %e, outcome, "webhook delivery failed");
    }
    if let Err(e) = store
        .record_attempt(&due.id, status, error.as_deref(), next)
        .await
    {
        // The lease lapses and the delivery is sent again: at least once.
        tracing::warn!(error = %e, event = %due.event_id, "could not record a webhook attempt");
    }
}

/// The error and its causes, one line (reqwest's own text stops at "error sending request").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_ten_minutes() {
        for (n, base) in [
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (10, 512_000),
            (11, 600_000),
            (60, 600_000),
        ] {
            let d = backoff_ms(n);
            assert!((base * 8 / 10..=base * 12 / 10).contains(&d), "{n}: {d}");
        }
    }

    /// A receiver that never acknowledges: retried ~150 times (doubling, then every
    /// ~10 min), the last try within the 24 h after the event, then given up.
    #[test]
    fn retries_go_on_for_24_h_after_the_event_then_stop() {
        let created = 1_800_000_000_000;
        let (mut now, mut attempts) = (created, 0);
        while let Some(at) = retry_at(now, created, attempts) {
            assert!(at > now, "{at} after {now}");
            (now, attempts) = (at, attempts + 1);
            assert!(attempts < 1000, "never given up");
        }
        let last = now - created;
        assert!(
            last < GIVE_UP_AFTER_MS && last > GIVE_UP_AFTER_MS - 2 * MAX_RETRY_MS,
            "last retry {last} ms after the event"
        );
        assert!((120..=190).contains(&attempts), "{attempts} retries");
        assert_eq!(retry_at(created + GIVE_UP_AFTER_MS, created, 0), None);
    }
}
