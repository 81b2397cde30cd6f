//! Real WebRTC peers on str0m: WHIP publishers and WHEP viewers, many per task.
//!
//! An [`Engine`] is one tokio task owning many `Rtc`s, each with its own UDP socket
//! (servers such as the Skylark SFU tell sessions apart by the client's address),
//! woken only by the socket that has data or by the earliest str0m/media deadline.
//! Signaling (the WHIP/WHEP POST and DELETE) runs in the caller's task, so slow HTTP
//! never stalls media.

mod engine;
mod http;
mod rejoin;
mod session;

pub use engine::{rtc_config, Engine, EngineConfig, Publisher, Viewer};
pub use http::MAX_SDP_BYTES;
pub use rejoin::{Rejoin, RejoinPolicy, RejoinReason, RejoinReport, RejoinStats, RejoiningViewer};
/// The URL type of session resources (`Location`).
pub use reqwest::Url;
pub use session::{CounterSnapshot, LayerStats, LiveCounters, PublisherStats, ViewerStats};
