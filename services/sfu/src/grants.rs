//! Publish grants: the credential generation (`key_id`) each local publisher was admitted
//! on. It is checked with the room directory when the publisher arrives and every few
//! seconds after, so a rotated key or a deleted room cuts the publisher even when the
//! `end_publish` event that normally does it is lost.

use crate::workers::Workers;
use skylark_proto::rooms::v1 as rooms;
use skylark_proto::rooms::v1::room_directory_client::RoomDirectoryClient;
use skylark_telemetry::{grpc_channel, GrpcClientInterceptor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;

type Directory = RoomDirectoryClient<InterceptedService<Channel, GrpcClientInterceptor>>;

/// How often live publishers' grants are checked: the longest a stale publisher lives
/// when the `end_publish` event is lost.
pub const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Grants per directory call (the directory takes at most 1,000).
const BATCH: usize = 500;

/// What a publisher session was admitted on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    room: String,
    key_id: String,
}

/// The grants of this node's publishers, and the directory that judges them.
#[derive(Clone)]
pub struct Grants {
    /// `None`: no directory (an SFU run alone by a test): every grant is taken as given.
    directory: Option<Directory>,
    sessions: Arc<Mutex<HashMap<String, Grant>>>,
}

impl Grants {
    /// `api_grpc_url` reaches the RoomDirectory; connects lazily.
    pub fn new(api_grpc_url: Option<&str>) -> anyhow::Result<Self> {
        let directory = match api_grpc_url {
            Some(url) => Some(
                RoomDirectoryClient::with_interceptor(grpc_channel(url)?, GrpcClientInterceptor)
                    .max_decoding_message_size(64 * 1024),
            ),
            None => None,
        };
        Ok(Self {
            directory,
            sessions: Arc::default(),
        })
    }

    /// Refuses a publisher whose grant is no longer current (its key was rotated or its
    /// room deleted since signaling authorized it).
    pub async fn admit(&self, room: &str, key_id: &str) -> Result<(), Status> {
        let Some(directory) = &self.directory else {
            return Ok(());
        };
        if key_id.is_empty() {
            return Err(Status::unauthenticated(
                "publish without a grant (`key_id`): authorize through signaling",
            ));
        }
        let grant = Grant {
            room: room.to_owned(),
            key_id: key_id.to_owned(),
        };
        match check(directory.clone(), std::slice::from_ref(&grant)).await {
            Ok(current) if current.first() == Some(&true) => Ok(()),
            Ok(_) => Err(Status::unauthenticated(
                "the stream key was rotated or the room deleted: publish with the current key",
            )),
            Err(e) => Err(Status::unavailable(format!(
                "room directory unavailable ({}): retry",
                e.message()
            ))),
        }
    }

    /// Remembers what `session` was admitted on.
    pub fn record(&self, session: &str, room: &str, key_id: &str) {
        self.lock().insert(
            session.to_owned(),
            Grant {
                room: room.to_owned(),
                key_id: key_id.to_owned(),
            },
        );
    }

    /// Forgets an ended session.
    pub fn forget(&self, session: &str) {
        self.lock().remove(session);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every [`CHECK_EVERY`], cuts the publishers whose grants the directory no longer
    /// honours. A directory that cannot be reached cuts no one: live media outlasts an
    /// API outage, and admission still checks.
    pub async fn run(self, worker: Workers, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Some(directory) = self.directory.clone() else {
            return Ok(());
        };
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let live: Vec<(String, Grant)> = self
                .lock()
                .iter()
                .map(|(s, g)| (s.clone(), g.clone()))
                .collect();
            for chunk in live.chunks(BATCH) {
                let grants: Vec<Grant> = chunk.iter().map(|(_, g)| g.clone()).collect();
                let current = match check(directory.clone(), &grants).await {
                    Ok(c) if c.len() == grants.len() => c,
                    Ok(_) => {
                        tracing::warn!(
                            "room directory answered a grant check with the wrong count"
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "grant check failed; publishers keep going");
                        continue;
                    }
                };
                for ((session, grant), ok) in chunk.iter().zip(current) {
                    if ok {
                        continue;
                    }
                    tracing::info!(room_id = %grant.room, %session, "publisher cut: its grant is stale (key rotated or room deleted)");
                    metrics::counter!("skylark_sfu_publishers_cut_total", "reason" => "stale_grant")
                        .increment(1);
                    let _ = worker.close(session.clone()).await;
                    self.forget(session);
                }
            }
        }
    }
}

async fn check(mut directory: Directory, grants: &[Grant]) -> Result<Vec<bool>, Status> {
    let req = rooms::CheckPublishGrantsRequest {
        grants: grants
            .iter()
            .map(|g| rooms::PublishGrantRef {
                room_id: g.room.clone(),
                key_id: g.key_id.clone(),
            })
            .collect(),
    };
    Ok(directory
        .check_publish_grants(req)
        .await?
        .into_inner()
        .current)
}
