//! Choosing a backend at runtime.

use std::time::Duration;

use crate::{Bus, BusError, InProcessBus, NodeInfo, NodeKind, RedisBus, Subscription};

/// How to reach the bus.
///
/// ```
/// use skylark_bus::BusConfig;
/// let config = BusConfig {
///     redis_url: Some("redis://127.0.0.1:6379".into()),
///     key_prefix: "staging:".into(),
///     ..BusConfig::default()
/// };
/// assert_eq!(config.op_timeout.as_secs(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Redis URL (`redis://[:password@]host:port[/db]`); `None` or empty
    /// selects the in-process bus.
    pub redis_url: Option<String>,
    /// Prepended to every Redis key and channel, so deployments (or test
    /// runs) sharing one Redis do not collide. Default `skylark:`.
    pub key_prefix: String,
    /// Upper bound on every Redis call, connecting included. Default 2 s.
    pub op_timeout: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            key_prefix: "skylark:".to_owned(),
            op_timeout: Duration::from_secs(2),
        }
    }
}

/// Connects with default settings: Redis if `redis_url` is given and not
/// empty, in-process otherwise.
///
/// Typically fed straight from the `REDIS_URL` environment variable.
pub async fn connect(redis_url: Option<&str>) -> Result<AnyBus, BusError> {
    connect_with(&BusConfig {
        redis_url: redis_url.map(str::to_owned),
        ..BusConfig::default()
    })
    .await
}

/// Connects as described by `config`. A Redis that cannot be reached fails
/// here, within [`BusConfig::op_timeout`], rather than on first use.
pub async fn connect_with(config: &BusConfig) -> Result<AnyBus, BusError> {
    match config.redis_url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => Ok(AnyBus::Redis(
            RedisBus::connect(url, &config.key_prefix, config.op_timeout).await?,
        )),
        _ => Ok(AnyBus::InProcess(InProcessBus::new())),
    }
}

/// Either backend, chosen at runtime; cheap to clone, clones share state.
///
/// An enum rather than `Arc<dyn Bus>` because [`Bus`] has async methods,
/// which are not object safe.
#[derive(Debug, Clone)]
pub enum AnyBus {
    /// State lives in this process.
    InProcess(InProcessBus),
    /// State lives in Redis.
    Redis(RedisBus),
}

impl AnyBus {
    /// `"in-process"` or `"redis"`, for logs and readiness output.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::InProcess(_) => "in-process",
            Self::Redis(_) => "redis",
        }
    }
}

/// Forwards one call to whichever backend `self` holds.
macro_rules! dispatch {
    ($self:ident, $bus:ident => $call:expr) => {
        match $self {
            AnyBus::InProcess($bus) => $call.await,
            AnyBus::Redis($bus) => $call.await,
        }
    };
}

impl Bus for AnyBus {
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), BusError> {
        dispatch!(self, bus => bus.heartbeat(node, ttl))
    }

    async fn remove_node(&self, kind: NodeKind, id: &str) -> Result<(), BusError> {
        dispatch!(self, bus => bus.remove_node(kind, id))
    }

    async fn nodes(&self, kind: NodeKind) -> Result<Vec<NodeInfo>, BusError> {
        dispatch!(self, bus => bus.nodes(kind))
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BusError> {
        dispatch!(self, bus => bus.acquire_lease(key, holder, ttl))
    }

    async fn map_set(
        &self,
        key: &str,
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), BusError> {
        dispatch!(self, bus => bus.map_set(key, field, value, ttl))
    }

    async fn map_remove(&self, key: &str, field: &str) -> Result<(), BusError> {
        dispatch!(self, bus => bus.map_remove(key, field))
    }

    async fn map_entries(&self, key: &str) -> Result<Vec<(String, String)>, BusError> {
        dispatch!(self, bus => bus.map_entries(key))
    }

    async fn renew_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        dispatch!(self, bus => bus.renew_lease(key, holder, ttl))
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), BusError> {
        dispatch!(self, bus => bus.release_lease(key, holder))
    }

    async fn lease_holder(&self, key: &str) -> Result<Option<String>, BusError> {
        dispatch!(self, bus => bus.lease_holder(key))
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), BusError> {
        dispatch!(self, bus => bus.set(key, value, ttl))
    }

    async fn get(&self, key: &str) -> Result<Option<String>, BusError> {
        dispatch!(self, bus => bus.get(key))
    }

    async fn del(&self, key: &str) -> Result<(), BusError> {
        dispatch!(self, bus => bus.del(key))
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<usize, BusError> {
        dispatch!(self, bus => bus.publish(channel, payload))
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BusError> {
        dispatch!(self, bus => bus.subscribe(channel))
    }
}
