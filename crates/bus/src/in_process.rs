//! The in-process backend: all services of one binary share a single map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::error::{check_name, check_payload, check_ttl};
use crate::{Bus, BusError, NodeInfo, NodeKind, Subscription};

/// Messages a subscriber may fall behind by before it starts losing them.
const CHANNEL_CAPACITY: usize = 256;

/// How often writes sweep out expired entries that nobody reads again.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A [`Bus`] that lives in this process; clones share the same state.
///
/// This is the default for the all-in-one binary. Expiry follows
/// [`tokio::time::Instant`], so tests may run it under paused time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), skylark_bus::BusError> {
/// use std::time::Duration;
/// use skylark_bus::{Bus, InProcessBus};
/// let bus = InProcessBus::new();
/// let other_handle = bus.clone();
/// assert!(bus.acquire_lease("room:1:origin", "sfu-a", Duration::from_secs(5)).await?);
/// assert_eq!(other_handle.lease_holder("room:1:origin").await?.as_deref(), Some("sfu-a"));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    // std Mutex: never held across an await, and Subscription's Drop needs a sync lock.
    state: Mutex<State>,
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<(NodeKind, String), Timed<NodeInfo>>,
    leases: HashMap<String, Timed<String>>,
    kv: HashMap<String, Timed<String>>,
    maps: HashMap<String, HashMap<String, Timed<String>>>,
    next_sweep: Option<Instant>,
}

struct Timed<T> {
    value: T,
    expires: Option<Instant>,
}

impl<T> Timed<T> {
    fn new(value: T, now: Instant, ttl: Option<Duration>) -> Self {
        Self {
            value,
            expires: ttl.map(|ttl| now + ttl),
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

impl State {
    /// Expiry is lazy on read; this bounds memory for keys nobody reads again.
    fn sweep_if_due(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.nodes.retain(|_, n| n.live(now));
        self.leases.retain(|_, l| l.live(now));
        self.kv.retain(|_, v| v.live(now));
        self.maps.retain(|_, m| {
            m.retain(|_, v| v.live(now));
            !m.is_empty()
        });
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.len() + self.leases.len() + self.kv.len() + self.maps.len()
    }
}

/// A poisoned lock only means another thread panicked mid-update; the maps
/// stay structurally valid, so keep serving rather than cascade the panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InProcessBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus").finish_non_exhaustive()
    }
}

impl Bus for InProcessBus {
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), BusError> {
        check_ttl(ttl)?;
        check_name(&node.id, "node id must not be empty")?;
        let now = Instant::now();
        let mut state = self.state();
        state.sweep_if_due(now);
        state.nodes.insert(
            (node.kind, node.id.clone()),
            Timed::new(node.clone(), now, Some(ttl)),
        );
        Ok(())
    }

    async fn remove_node(&self, kind: NodeKind, id: &str) -> Result<(), BusError> {
        self.state().nodes.remove(&(kind, id.to_owned()));
        Ok(())
    }

    async fn nodes(&self, kind: NodeKind) -> Result<Vec<NodeInfo>, BusError> {
        let now = Instant::now();
        let mut state = self.state();
        state.nodes.retain(|_, n| n.live(now));
        let mut nodes: Vec<NodeInfo> = state
            .nodes
            .values()
            .filter(|n| n.value.kind == kind)
            .map(|n| n.value.clone())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BusError> {
        check_ttl(ttl)?;
        check_name(holder, "lease holder must not be empty")?;
        let now = Instant::now();
        let mut state = self.state();
        state.sweep_if_due(now);
        if let Some(lease) = state.leases.get(key) {
            if lease.live(now) && lease.value != holder {
                return Ok(false);
            }
        }
        state.leases.insert(
            key.to_owned(),
            Timed::new(holder.to_owned(), now, Some(ttl)),
        );
        Ok(true)
    }

    async fn renew_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        check_ttl(ttl)?;
        let now = Instant::now();
        let mut state = self.state();
        match state.leases.get_mut(key) {
            Some(lease) if lease.live(now) && lease.value == holder => {
                lease.expires = Some(now + ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), BusError> {
        let mut state = self.state();
        if state.leases.get(key).is_some_and(|l| l.value == holder) {
            state.leases.remove(key);
        }
        Ok(())
    }

    async fn lease_holder(&self, key: &str) -> Result<Option<String>, BusError> {
        let now = Instant::now();
        let state = self.state();
        Ok(state
            .leases
            .get(key)
            .filter(|l| l.live(now))
            .map(|l| l.value.clone()))
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), BusError> {
        if let Some(ttl) = ttl {
            check_ttl(ttl)?;
        }
        let now = Instant::now();
        let mut state = self.state();
        state.sweep_if_due(now);
        state
            .kv
            .insert(key.to_owned(), Timed::new(value.to_owned(), now, ttl));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, BusError> {
        let now = Instant::now();
        let state = self.state();
        Ok(state
            .kv
            .get(key)
            .filter(|v| v.live(now))
            .map(|v| v.value.clone()))
    }

    async fn del(&self, key: &str) -> Result<(), BusError> {
        self.state().kv.remove(key);
        Ok(())
    }

    async fn map_set(
        &self,
        key: &str,
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), BusError> {
        check_ttl(ttl)?;
        check_name(field, "map field must not be empty")?;
        let now = Instant::now();
        let mut state = self.state();
        state.sweep_if_due(now);
        state.maps.entry(key.to_owned()).or_default().insert(
            field.to_owned(),
            Timed::new(value.to_owned(), now, Some(ttl)),
        );
        Ok(())
    }

    async fn map_remove(&self, key: &str, field: &str) -> Result<(), BusError> {
        let mut state = self.state();
        if let Some(map) = state.maps.get_mut(key) {
            map.remove(field);
            if map.is_empty() {
                state.maps.remove(key);
            }
        }
        Ok(())
    }

    async fn map_entries(&self, key: &str) -> Result<Vec<(String, String)>, BusError> {
        let now = Instant::now();
        let state = self.state();
        let mut entries: Vec<(String, String)> = state
            .maps
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.live(now))
            .map(|(f, v)| (f.clone(), v.value.clone()))
            .collect();
        entries.sort();
        Ok(entries)
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<usize, BusError> {
        check_payload(payload)?;
        let mut channels = lock(&self.shared.channels);
        let Some(sender) = channels.get(channel) else {
            return Ok(0);
        };
        match sender.send(Arc::from(payload)) {
            Ok(receivers) => Ok(receivers),
            Err(_) => {
                // Unreachable while LocalReceiver::drop cleans up, kept as a safety net.
                channels.remove(channel);
                Ok(0)
            }
        }
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BusError> {
        let receiver = lock(&self.shared.channels)
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Ok(Subscription::local(
            channel,
            LocalReceiver {
                receiver,
                channel: channel.to_owned(),
                shared: Arc::clone(&self.shared),
            },
        ))
    }
}

/// In-process half of [`Subscription`]; removes its channel when it is the last one.
pub(crate) struct LocalReceiver {
    receiver: broadcast::Receiver<Arc<str>>,
    channel: String,
    shared: Arc<Shared>,
}

impl LocalReceiver {
    pub(crate) async fn recv(&mut self) -> Option<String> {
        loop {
            match self.receiver.recv().await {
                Ok(message) => return Some(message.to_string()),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Same contract as Redis pub/sub: a slow subscriber loses messages, not the channel.
                    tracing::warn!(channel = %self.channel, missed, "bus subscriber fell behind; messages dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for LocalReceiver {
    fn drop(&mut self) {
        let mut channels = lock(&self.shared.channels);
        // Our own receiver is still counted here, so 1 means nobody else listens.
        let last = channels
            .get(&self.channel)
            .is_some_and(|sender| sender.receiver_count() <= 1);
        if last {
            channels.remove(&self.channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_without_reads() {
        let bus = InProcessBus::new();
        for i in 0..100 {
            let key = format!("viewers:{i}");
            bus.set(&key, "1", Some(Duration::from_secs(1)))
                .await
                .unwrap();
            bus.acquire_lease(&key, "a", Duration::from_secs(1))
                .await
                .unwrap();
        }
        assert_eq!(bus.state().len(), 200);
        tokio::time::advance(SWEEP_EVERY + Duration::from_secs(1)).await;
        // Any write past the sweep deadline drops everything expired.
        bus.set("fresh", "1", None).await.unwrap();
        assert_eq!(bus.state().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_follows_tokio_time() {
        let bus = InProcessBus::new();
        let ttl = Duration::from_secs(30);
        assert!(bus.acquire_lease("k", "a", ttl).await.unwrap());
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(bus.lease_holder("k").await.unwrap().as_deref(), Some("a"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(bus.lease_holder("k").await.unwrap(), None);
        assert!(bus.acquire_lease("k", "b", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn channels_without_subscribers_are_removed() {
        let bus = InProcessBus::new();
        let first = bus.subscribe("room:1").await.unwrap();
        let second = bus.subscribe("room:1").await.unwrap();
        drop(first);
        assert_eq!(lock(&bus.shared.channels).len(), 1);
        drop(second);
        assert!(lock(&bus.shared.channels).is_empty());
        // Publishing to nobody must not recreate the channel.
        assert_eq!(bus.publish("room:1", "x").await.unwrap(), 0);
        assert!(lock(&bus.shared.channels).is_empty());
    }
}
