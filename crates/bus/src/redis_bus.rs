//! The Redis backend: what lets several signaling, SFU and packager processes
//! share placement and events.
//!
//! Key layout under the prefix `P` (default `skylark:`):
//! - `P nodes:{kind}:expiry` sorted set id → expiry (ms, Redis clock), and
//!   `P nodes:{kind}:info` hash id → JSON [`NodeInfo`];
//! - `P map:{key}:expiry` sorted set field → expiry and `P map:{key}:values` hash
//!   field → value, for the expiring maps (same scheme as the node registry);
//! - `P lease:{key}` string holder with `PX` TTL;
//! - `P kv:{key}` string value with optional `PX` TTL;
//! - pub/sub channel `P chan:{channel}`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Client, RedisError, RedisResult, Script, Value};

use crate::error::{check_name, check_payload, check_ttl};
use crate::{Bus, BusError, NodeInfo, NodeKind, Subscription};

// Node expiry uses the Redis server's clock (TIME) so that processes with
// skewed clocks agree on who is alive.
const NOW_MS: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

// One field of an expiring map (the node registry, per-node room figures): its
// expiry in a sorted set, its value in a hash. Both keys outlive their longest field.
static MAP_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
return 1"
    ))
});

// Drops expired fields, then returns the live ones as field, value, field, value…
// Entries are removed here rather than by key TTL so one sorted set can hold
// per-field expiries.
static MAP_LIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
for _, f in ipairs(dead) do redis.call('HDEL', KEYS[2], f) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now)) end
local out = {{}}
for _, f in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HGET', KEYS[2], f)
  if v then out[#out + 1] = f; out[#out + 1] = v end
end
return out"
    ))
});

// Free, expired (Redis already deleted it) or ours: take it and reset the TTL.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0",
    )
});

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

/// A [`Bus`] on Redis; clones share one auto-reconnecting connection.
///
/// Every call is bounded by the operation timeout (default 2 s), so a dead or
/// stalled Redis yields [`BusError::Unavailable`] instead of a hang.
/// Each [`Subscription`] has its own pub/sub connection.
#[derive(Clone)]
pub struct RedisBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    manager_config: ConnectionManagerConfig,
    conn: Mutex<Generation>,
    prefix: String,
    /// `host:port` only: the URL may carry a password.
    addr: String,
    timeout: Duration,
    /// The one pub/sub connection every subscription of this bus shares.
    hub: tokio::sync::Mutex<Option<Arc<HubConn>>>,
}

/// The current command connection, numbered so that concurrent timeouts
/// replace it only once.
struct Generation {
    number: u64,
    manager: ConnectionManager,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("addr", &self.shared.addr)
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects to `url`, namespacing every key and channel with `prefix`.
    ///
    /// Fails within `timeout` if Redis cannot be reached, so a
    /// misconfigured service stops at startup with a clear message.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, BusError> {
        check_ttl(timeout)?;
        let client = Client::open(url).map_err(BusError::InvalidUrl)?;
        let addr = client.get_connection_info().addr().to_string();
        // Few, short reconnect retries: callers give up after `timeout` anyway,
        // and every later command triggers a fresh attempt.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout / 4);
        let manager = match tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config.clone()),
        )
        .await
        {
            Ok(Ok(manager)) => manager,
            Ok(Err(e)) => return Err(unavailable(&addr, "CONNECT", &e)),
            Err(_) => return Err(BusError::timed_out(&addr, "CONNECT", timeout)),
        };
        tracing::debug!(%addr, prefix, "connected to Redis bus");
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                manager_config,
                conn: Mutex::new(Generation { number: 0, manager }),
                prefix: prefix.to_owned(),
                addr,
                timeout,
                hub: tokio::sync::Mutex::new(None),
            }),
        })
    }

    fn key(&self, space: &str, name: &str) -> String {
        format!("{}{space}:{name}", self.shared.prefix)
    }

    fn node_keys(&self, kind: NodeKind) -> (String, String) {
        let prefix = &self.shared.prefix;
        (
            format!("{prefix}nodes:{kind}:expiry"),
            format!("{prefix}nodes:{kind}:info"),
        )
    }

    fn map_keys(&self, key: &str) -> (String, String) {
        let prefix = &self.shared.prefix;
        (
            format!("{prefix}map:{key}:expiry"),
            format!("{prefix}map:{key}:values"),
        )
    }

    async fn map_set_in(
        &self,
        (expiry, values): (String, String),
        field: &str,
        value: &str,
        ttl: Duration,
        op: &'static str,
    ) -> Result<(), BusError> {
        self.run(op, |mut conn| async move {
            MAP_SET
                .key(expiry)
                .key(values)
                .arg(field)
                .arg(value)
                .arg(millis(ttl))
                .invoke_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn map_remove_in(
        &self,
        (expiry, values): (String, String),
        field: &str,
        op: &'static str,
    ) -> Result<(), BusError> {
        self.run(op, |mut conn| async move {
            redis::pipe()
                .atomic()
                .cmd("ZREM")
                .arg(expiry)
                .arg(field)
                .ignore()
                .cmd("HDEL")
                .arg(values)
                .arg(field)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn map_live_in(
        &self,
        (expiry, values): (String, String),
        op: &'static str,
    ) -> Result<Vec<(String, String)>, BusError> {
        let flat: Vec<String> = self
            .run(op, |mut conn| async move {
                MAP_LIVE
                    .key(expiry)
                    .key(values)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let mut pairs = flat.into_iter();
        let mut out = Vec::new();
        while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
            out.push((field, value));
        }
        Ok(out)
    }

    fn connection(&self) -> (u64, ConnectionManager) {
        let conn = self
            .shared
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (conn.number, conn.manager.clone())
    }

    /// ConnectionManager only reconnects on errors that look like a closed
    /// socket. A peer that vanished without a reset (host down, partition)
    /// just times out, forever; so after a timeout start over on a fresh
    /// connection, which connects lazily on the next call.
    fn replace_connection(&self, timed_out: u64) {
        let shared = &self.shared;
        let mut conn = shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.number != timed_out {
            return; // another caller already replaced it
        }
        match ConnectionManager::new_lazy_with_config(
            shared.client.clone(),
            shared.manager_config.clone(),
        ) {
            Ok(manager) => {
                *conn = Generation {
                    number: timed_out + 1,
                    manager,
                };
                tracing::warn!(addr = %shared.addr, "Redis stopped answering; reconnecting");
            }
            Err(error) => {
                tracing::warn!(addr = %shared.addr, %error, "cannot recreate Redis connection")
            }
        }
    }

    /// Runs `call` under the operation timeout; `Err(None)` means it timed out.
    async fn within<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Option<RedisError>> {
        match tokio::time::timeout(self.shared.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => Err(None),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    }

    fn error(&self, op: &'static str, failure: Option<RedisError>) -> BusError {
        let addr = &self.shared.addr;
        match failure {
            None => BusError::timed_out(addr, op, self.shared.timeout),
            Some(e) if is_connection_error(&e) => unavailable(addr, op, &e),
            Some(source) => BusError::Redis { op, source },
        }
    }

    /// Runs one command on the shared connection, bounded and with errors mapped.
    async fn run<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, BusError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, manager) = self.connection();
        self.within(call(manager)).await.map_err(|failure| {
            if failure.is_none() {
                self.replace_connection(generation);
            }
            self.error(op, failure)
        })
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn unavailable(addr: &str, op: &'static str, e: &RedisError) -> BusError {
    BusError::Unavailable {
        addr: addr.to_owned(),
        op,
        detail: e.to_string(),
    }
}

/// Milliseconds for `PX`/`PEXPIRE`; TTLs are validated non-zero before this.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

impl Bus for RedisBus {
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), BusError> {
        check_ttl(ttl)?;
        check_name(&node.id, "node id must not be empty")?;
        let info = serde_json::to_string(node).map_err(|source| BusError::Encode {
            what: "node info",
            source,
        })?;
        self.map_set_in(self.node_keys(node.kind), &node.id, &info, ttl, "HEARTBEAT")
            .await
    }

    async fn remove_node(&self, kind: NodeKind, id: &str) -> Result<(), BusError> {
        self.map_remove_in(self.node_keys(kind), id, "REMOVE NODE")
            .await
    }

    async fn nodes(&self, kind: NodeKind) -> Result<Vec<NodeInfo>, BusError> {
        let raw = self.map_live_in(self.node_keys(kind), "NODES").await?;
        let mut nodes: Vec<NodeInfo> = raw
            .iter()
            .filter_map(|(_, json)| match serde_json::from_str::<NodeInfo>(json) {
                Ok(node) => Some(node),
                Err(error) => {
                    // One bad entry (e.g. a newer node during a rolling upgrade)
                    // must not hide every other node from placement.
                    tracing::warn!(%kind, %error, "skipping unreadable node registry entry");
                    None
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
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
        self.map_set_in(self.map_keys(key), field, value, ttl, "MAP SET")
            .await
    }

    async fn map_remove(&self, key: &str, field: &str) -> Result<(), BusError> {
        self.map_remove_in(self.map_keys(key), field, "MAP REMOVE")
            .await
    }

    async fn map_entries(&self, key: &str) -> Result<Vec<(String, String)>, BusError> {
        let mut entries = self.map_live_in(self.map_keys(key), "MAP ENTRIES").await?;
        entries.sort();
        Ok(entries)
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BusError> {
        check_ttl(ttl)?;
        check_name(holder, "lease holder must not be empty")?;
        let key = self.key("lease", key);
        let won: i64 = self
            .run("ACQUIRE LEASE", |mut conn| async move {
                ACQUIRE
                    .key(key)
                    .arg(holder)
                    .arg(millis(ttl))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(won == 1)
    }

    async fn renew_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        check_ttl(ttl)?;
        let key = self.key("lease", key);
        let renewed: i64 = self
            .run("RENEW LEASE", |mut conn| async move {
                RENEW
                    .key(key)
                    .arg(holder)
                    .arg(millis(ttl))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), BusError> {
        let key = self.key("lease", key);
        self.run("RELEASE LEASE", |mut conn| async move {
            RELEASE
                .key(key)
                .arg(holder)
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await?;
        Ok(())
    }

    async fn lease_holder(&self, key: &str) -> Result<Option<String>, BusError> {
        let key = self.key("lease", key);
        self.run("GET LEASE", |mut conn| async move {
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        })
        .await
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), BusError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("kv", key)).arg(value);
        if let Some(ttl) = ttl {
            check_ttl(ttl)?;
            cmd.arg("PX").arg(millis(ttl));
        }
        self.run("SET", |mut conn| async move {
            cmd.query_async::<()>(&mut conn).await
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<String>, BusError> {
        let key = self.key("kv", key);
        self.run("GET", |mut conn| async move {
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        })
        .await
    }

    async fn del(&self, key: &str) -> Result<(), BusError> {
        let key = self.key("kv", key);
        self.run("DEL", |mut conn| async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<usize, BusError> {
        check_payload(payload)?;
        let channel = self.key("chan", channel);
        let receivers: u64 = self
            .run("PUBLISH", |mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(usize::try_from(receivers).unwrap_or(usize::MAX))
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BusError> {
        let full = self.key("chan", channel);
        // Held across the SUBSCRIBE round trip: a second subscriber of a channel whose
        // SUBSCRIBE is still in flight waits for it, so for every subscriber a publish
        // that follows `subscribe` returning is guaranteed to reach it.
        let mut hub = self.shared.hub.lock().await;
        let conn = match hub.as_ref().filter(|c| !c.dead.is_cancelled()) {
            Some(c) => c.clone(),
            None => {
                let client = &self.shared.client;
                let pubsub = self
                    .within(client.get_async_pubsub())
                    .await
                    .map_err(|failure| self.error("SUBSCRIBE", failure))?;
                let conn = HubConn::start(pubsub, self.shared.timeout);
                *hub = Some(conn.clone());
                conn
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE);
        let id = conn
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ops = conn.ops.lock().await;
        let first = {
            let mut routes = conn.routes.lock().unwrap_or_else(PoisonError::into_inner);
            let subscribers = routes.entry(full.clone()).or_default();
            subscribers.insert(id, tx);
            subscribers.len() == 1
        };
        if first {
            let mut sink = conn.sink.clone();
            if let Err(failure) = self.within(sink.subscribe(&full)).await {
                conn.remove(&full, id);
                conn.dead.cancel();
                return Err(self.error("SUBSCRIBE", failure));
            }
        }
        drop(ops);
        drop(hub);
        metrics::gauge!("skylark_bus_subscriptions").increment(1.0);
        Ok(Subscription::redis(
            channel,
            RedisReceiver {
                rx,
                route: Some((conn, full, id)),
            },
        ))
    }
}

/// Messages queued for one subscriber; a subscriber that falls this far behind loses
/// messages rather than holding up the others.
const SUBSCRIBER_QUEUE: usize = 1024;

/// The shared pub/sub connection: one per bus (per process), however many channels
/// and subscribers — Redis serves any number of channels on one connection. A driver
/// task reads it and hands each message to the channel's subscribers; when the
/// connection fails every subscription ends (`recv` → `None`) and the next `subscribe`
/// opens a new one.
struct HubConn {
    sink: PubSubSink,
    /// Full channel name → subscriber id → its queue.
    routes: Mutex<HashMap<String, HashMap<u64, tokio::sync::mpsc::Sender<String>>>>,
    next_id: std::sync::atomic::AtomicU64,
    /// SUBSCRIBE and UNSUBSCRIBE one at a time, each with the routes it acts on.
    ops: tokio::sync::Mutex<()>,
    dead: Dead,
}

/// Set once the connection failed; wakes its driver.
#[derive(Default)]
struct Dead {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Dead {
    fn cancel(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }
    fn is_cancelled(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }
    async fn cancelled(&self) {
        while !self.is_cancelled() {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

impl HubConn {
    fn start(pubsub: redis::aio::PubSub, timeout: Duration) -> Arc<Self> {
        let (sink, stream) = pubsub.split();
        let conn = Arc::new(Self {
            sink,
            routes: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            ops: tokio::sync::Mutex::new(()),
            dead: Dead::default(),
        });
        tokio::spawn(conn.clone().drive(stream, timeout));
        conn
    }

    /// Hands messages to subscribers until the connection fails or stops answering.
    async fn drive(self: Arc<Self>, mut stream: PubSubStream, timeout: Duration) {
        loop {
            let idle = tokio::time::sleep(timeout * KEEPALIVE_TIMEOUTS);
            tokio::select! {
                _ = self.dead.cancelled() => break,
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
                        // Only a foreign publisher can send this; skip it.
                        tracing::warn!(channel = message.get_channel_name(), "dropping non-UTF-8 bus message");
                        continue;
                    };
                    let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
                    for tx in routes.get(message.get_channel_name()).into_iter().flat_map(|s| s.values()) {
                        if tx.try_send(text.to_owned()).is_err() && !tx.is_closed() {
                            metrics::counter!("skylark_bus_messages_dropped_total").increment(1);
                        }
                    }
                }
                () = idle => {
                    let mut sink = self.sink.clone();
                    let ping = tokio::time::timeout(timeout, sink.ping::<Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        tracing::warn!("Redis pub/sub connection stopped answering; ending its subscriptions");
                        break;
                    }
                }
            }
        }
        self.dead.cancel();
        // Dropping the queues ends every subscription; they subscribe again.
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Removes subscriber `id` of `channel`; whether the channel has none left.
    fn remove(&self, channel: &str, id: u64) -> bool {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(subscribers) = routes.get_mut(channel) else {
            return false;
        };
        subscribers.remove(&id);
        if subscribers.is_empty() {
            routes.remove(channel);
            return true;
        }
        false
    }
}

/// Idle subscriptions ping Redis after this many operation timeouts without
/// a message, so a connection to a vanished server does not wait forever.
const KEEPALIVE_TIMEOUTS: u32 = 5;

/// Redis half of [`Subscription`]: a queue fed by the shared connection. Dropping it
/// unsubscribes the channel when it was the channel's last subscriber.
pub(crate) struct RedisReceiver {
    rx: tokio::sync::mpsc::Receiver<String>,
    /// The connection, full channel name and subscriber id, for the unsubscribe.
    route: Option<(Arc<HubConn>, String, u64)>,
}

impl RedisReceiver {
    pub(crate) async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

impl Drop for RedisReceiver {
    fn drop(&mut self) {
        metrics::gauge!("skylark_bus_subscriptions").decrement(1.0);
        let Some((conn, channel, id)) = self.route.take() else {
            return;
        };
        if !conn.remove(&channel, id) || conn.dead.is_cancelled() {
            return;
        }
        // The channel's last subscriber: tell Redis, unless a new subscriber took the
        // channel meanwhile (both happen under `ops`, so they can't cross).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ops = conn.ops.lock().await;
                let resubscribed = conn
                    .routes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains_key(&channel);
                if !resubscribed {
                    let mut sink = conn.sink.clone();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), sink.unsubscribe(&channel))
                            .await;
                }
            });
        }
    }
}
