//! `skylark-loadgen`: real WebRTC peers for Skylark's tests and `skylark loadtest`.
//!
//! - [`source`]: synthetic media. H.264 access units cut from a real x264 clip, each
//!   stamped with an SEI marker (sequence number, send time, hash of the frame) and
//!   padded to a target bitrate; constant Opus packets. Receivers check frames with
//!   [`source::inspect_frame`] instead of decoding them.
//! - [`peer`]: WHIP publishers and WHEP viewers on str0m, many per tokio task
//!   ([`peer::Engine`]).
//! - [`swarm`]: one room's load (1 publisher + N viewers, ramp, duration) and its report.
//! - [`run`]: a load run over several rooms, one swarm each.
//! - [`report`]: each room's report, and the rooms' reports merged, as text and JSON.
//! - [`progress`]: live counters of a run and the progress line.
//!
//! ```no_run
//! # async fn demo() -> Result<(), skylark_loadgen::Error> {
//! use std::time::Duration;
//! use skylark_loadgen::peer::{Engine, EngineConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let engine = Engine::start(EngineConfig::default(), CancellationToken::new())?;
//! let publisher = engine.publish("http://127.0.0.1:8080/whip", "stream-key", Default::default()).await?;
//! publisher.wait_connected(Duration::from_secs(5)).await?;
//! let viewer = engine.view("http://127.0.0.1:8080/whep/room", None).await?;
//! let stats = viewer.wait_playing(Duration::from_secs(5)).await?;
//! assert_eq!(stats.frames_bad_hash, 0);
//! let (_stats, deleted) = viewer.close().await;
//! deleted?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
pub mod peer;
pub mod progress;
pub mod report;
pub mod run;
pub mod source;
pub mod stats;
pub mod swarm;

pub use error::{server_message, Error, FailureCause};
pub use peer::{Engine, EngineConfig, Publisher, Viewer};
pub use report::{RunReport, SwarmReport};
pub use run::{LoadRun, RunConfig};
pub use swarm::{Swarm, SwarmConfig};
