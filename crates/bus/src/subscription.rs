//! The receiving end of a channel, shared by both backends.

use std::fmt;

use futures_util::Stream;

use crate::in_process::LocalReceiver;
use crate::redis_bus::RedisReceiver;

/// Messages published on one channel after [`Bus::subscribe`](crate::Bus::subscribe) returned.
///
/// Dropping it unsubscribes. Delivery is at most once: a subscriber that falls
/// far behind, or whose Redis connection drops, misses messages. Treat events
/// as hints and re-read authoritative state (leases, keys) when it matters.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), skylark_bus::BusError> {
/// use skylark_bus::{Bus, InProcessBus};
/// let bus = InProcessBus::new();
/// let mut events = bus.subscribe("room:42").await?;
/// bus.publish("room:42", "live").await?;
/// assert_eq!(events.recv().await.as_deref(), Some("live"));
/// # Ok(()) }
/// ```
pub struct Subscription {
    channel: String,
    receiver: Receiver,
}

enum Receiver {
    Local(LocalReceiver),
    Redis(RedisReceiver),
}

impl Subscription {
    pub(crate) fn local(channel: &str, receiver: LocalReceiver) -> Self {
        Self {
            channel: channel.to_owned(),
            receiver: Receiver::Local(receiver),
        }
    }

    pub(crate) fn redis(channel: &str, receiver: RedisReceiver) -> Self {
        Self {
            channel: channel.to_owned(),
            receiver: Receiver::Redis(receiver),
        }
    }

    /// The channel name as passed to `subscribe` (without the key prefix).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Waits for the next message.
    ///
    /// Returns `None` once the subscription can deliver nothing more (for
    /// Redis: the connection was lost). Subscribe again to resume; messages
    /// published in between are lost.
    pub async fn recv(&mut self) -> Option<String> {
        match &mut self.receiver {
            Receiver::Local(r) => r.recv().await,
            Receiver::Redis(r) => r.recv().await,
        }
    }

    /// Turns the subscription into a [`Stream`] of payloads, e.g. for `select!` loops
    /// or combinators. The stream ends when [`recv`](Self::recv) would return `None`.
    pub fn into_stream(self) -> impl Stream<Item = String> + Send + Unpin {
        Box::pin(futures_util::stream::unfold(self, |mut sub| async move {
            let message = sub.recv().await?;
            Some((message, sub))
        }))
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.receiver {
            Receiver::Local(_) => "in-process",
            Receiver::Redis(_) => "redis",
        };
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .field("backend", &backend)
            .finish()
    }
}
