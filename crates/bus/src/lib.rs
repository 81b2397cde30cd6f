//! Shared state between Skylark services: a node registry with TTL heartbeats,
//! leases, expiring maps and a small key/value store, per-room events — and, on
//! top of them, the typed views every service reads and writes: [`placement`]
//! (where a room's media lives) and [`events`] (what happens in a room).
//!
//! One contract, the [`Bus`] trait, with two backends that pass the same test
//! suite:
//! - [`InProcessBus`]: the default, for the all-in-one binary;
//! - [`RedisBus`]: when `REDIS_URL` is set, so several processes (e.g. two
//!   signaling pods) see the same leases and events.
//!
//! [`connect`] picks one at runtime and returns an [`AnyBus`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), skylark_bus::BusError> {
//! use std::time::Duration;
//! use skylark_bus::{connect, Bus};
//!
//! let bus = connect(None).await?; // in-process; Some("redis://…") for Redis
//! let ttl = Duration::from_secs(5);
//! assert!(bus.acquire_lease("room:42:origin", "sfu-a", ttl).await?);
//! assert!(!bus.acquire_lease("room:42:origin", "sfu-b", ttl).await?);
//!
//! let mut events = bus.subscribe("room:42").await?;
//! bus.publish("room:42", r#"{"type":"live"}"#).await?;
//! assert_eq!(events.recv().await.as_deref(), Some(r#"{"type":"live"}"#));
//! # Ok(()) }
//! ```

mod any;
mod error;
pub mod events;
mod in_process;
mod keys;
mod node;
pub mod peers;
pub mod placement;
mod redis_bus;
mod subscription;

use std::future::Future;
use std::time::Duration;

pub use any::{connect, connect_with, AnyBus, BusConfig};
pub use error::BusError;
pub use in_process::InProcessBus;
pub use node::{publisher_reserve, NodeCapacity, NodeInfo, NodeKind, NodeLoad};
pub use redis_bus::RedisBus;
pub use subscription::Subscription;

/// Largest payload [`Bus::publish`] accepts: events are signals, not media.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Shared state contract; see the [crate docs](crate) for an example.
///
/// Leases, key/value entries and channels are separate namespaces: a lease and
/// a key may share a name. All TTLs must be at least 1 ms.
pub trait Bus: Send + Sync + 'static {
    /// Registers `node`, or refreshes it, for `ttl`. A node that stops
    /// heartbeating disappears from [`nodes`](Bus::nodes) once `ttl` passes.
    fn heartbeat(
        &self,
        node: &NodeInfo,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Removes a node at once (clean shutdown). Unknown nodes are ignored.
    fn remove_node(
        &self,
        kind: NodeKind,
        id: &str,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// The live nodes of `kind`, sorted by id.
    fn nodes(&self, kind: NodeKind)
        -> impl Future<Output = Result<Vec<NodeInfo>, BusError>> + Send;

    /// Takes the lease `key` for `holder` for `ttl`. Succeeds if the lease is
    /// free, expired, or already held by `holder` (then it is renewed).
    fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BusError>> + Send;

    /// Extends the lease to `ttl` from now if `holder` still holds it;
    /// `false` means it expired or someone else has it: stop acting as holder.
    fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BusError>> + Send;

    /// Frees the lease if `holder` holds it; otherwise does nothing.
    fn release_lease(
        &self,
        key: &str,
        holder: &str,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// The current holder of the lease, if it has not expired.
    fn lease_holder(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, BusError>> + Send;

    /// Stores `value` under `key`, replacing any previous value and TTL;
    /// `None` keeps it until [`del`](Bus::del).
    fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// The value under `key`, if any and not expired.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<String>, BusError>> + Send;

    /// Deletes `key`; a missing key is not an error.
    fn del(&self, key: &str) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Sets `field` of the map `key` to `value` for `ttl`. Each field expires on
    /// its own, so several writers (one field each, e.g. one per node) never
    /// overwrite each other and a writer that dies drops out by itself.
    fn map_set(
        &self,
        key: &str,
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Removes `field` from the map `key`; a missing one is not an error.
    fn map_remove(
        &self,
        key: &str,
        field: &str,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// The live fields of the map `key` with their values, sorted by field.
    fn map_entries(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, BusError>> + Send;

    /// Sends `payload` to every current subscription of `channel` and returns
    /// how many listeners there were: subscriptions in-process; for Redis, processes
    /// (each process's subscriptions share one connection). 0: nobody listens. Payloads over
    /// [`MAX_PAYLOAD_BYTES`] are refused with [`BusError::PayloadTooLarge`].
    fn publish(
        &self,
        channel: &str,
        payload: &str,
    ) -> impl Future<Output = Result<usize, BusError>> + Send;

    /// Subscribes to `channel`; every message published after this returns is
    /// delivered. Drop the [`Subscription`] to unsubscribe.
    fn subscribe(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Subscription, BusError>> + Send;
}
