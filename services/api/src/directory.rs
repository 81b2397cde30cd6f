//! `skylark.rooms.v1.RoomDirectory`: authorization and room lookup for other services.

use crate::http::check_visible;
use crate::store::{self, Room, StoreError};
use crate::webhooks::admission::Decision;
use crate::ApiState;
use skylark_auth::{hash_stream_key, Role, TokenError};
use skylark_proto::rooms::v1 as pb;
use skylark_proto::rooms::v1::authorize_publish_request::Credential;
use skylark_proto::rooms::v1::room_directory_server::{RoomDirectory, RoomDirectoryServer};
use tonic::{Request, Response, Status};

/// The gRPC face of the API.
#[derive(Clone)]
pub struct RoomDirectoryService {
    state: ApiState,
}

impl RoomDirectoryService {
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }

    pub fn into_server(self) -> RoomDirectoryServer<Self> {
        RoomDirectoryServer::new(self)
            .max_decoding_message_size(512 * 1024)
            .max_encoding_message_size(64 * 1024)
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => Status::unavailable(format!("database unavailable: {m}")),
        other => Status::internal(other.to_string()),
    }
}

pub(crate) fn to_pb(r: &Room) -> pb::Room {
    pb::Room {
        id: r.id.clone(),
        owner_id: r.owner_id.clone(),
        title: r.title.clone(),
        slug: r.slug.clone(),
        visibility: match r.visibility {
            store::Visibility::Public => pb::Visibility::Public,
            store::Visibility::Unlisted => pb::Visibility::Unlisted,
            store::Visibility::Private => pb::Visibility::Private,
        } as i32,
        mode: match r.mode {
            store::Mode::Sfu => pb::Mode::Sfu,
            store::Mode::P2p => pb::Mode::P2p,
        } as i32,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        viewer_generation: r.viewer_generation,
        record: r.record,
    }
}

/// Grants of the room's owner (an access token, not a stream key) are named after them:
/// they stay current while the room exists and is theirs, whatever the token's expiry.
const OWNER_GRANT: &str = "owner:";

/// Grants one `CheckPublishGrants` call may ask about.
const MAX_GRANTS_PER_CHECK: usize = 1000;

impl RoomDirectoryService {
    /// Whether a grant `AuthorizePublish` gave is still current.
    async fn grant_is_current(&self, g: &pb::PublishGrantRef) -> Result<bool, Status> {
        if g.room_id.is_empty() || g.room_id.len() > 128 || g.key_id.len() > 256 {
            return Ok(false);
        }
        if let Some(owner) = g.key_id.strip_prefix(OWNER_GRANT) {
            let room = self
                .state
                .store
                .room(&g.room_id)
                .await
                .map_err(store_status)?;
            return Ok(room.is_some_and(|r| r.owner_id == owner));
        }
        self.state
            .store
            .key_is_active(&g.room_id, &g.key_id)
            .await
            .map_err(store_status)
    }

    /// The operator's admission hook, when configured: its refusal is the publisher's.
    async fn admit(&self, room: &Room, protocol: &str, client_ip: &str) -> Result<(), Status> {
        let Some(admission) = &self.state.admission else {
            return Ok(());
        };
        // Only short, printable values are passed on to the operator's hook.
        let clean = |s: &str| {
            if s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()) {
                s.to_owned()
            } else {
                String::new()
            }
        };
        let room_json = crate::webhooks::outbox::room_json(room);
        match admission
            .decide(room_json, &clean(protocol), &clean(client_ip))
            .await
        {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => {
                tracing::info!(room_id = %room.id, "publish refused by the admission hook");
                Err(Status::permission_denied(why))
            }
        }
    }

    async fn room(&self, id: &str) -> Result<Room, Status> {
        self.state
            .store
            .room(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found("no such room"))
    }
}

#[tonic::async_trait]
impl RoomDirectory for RoomDirectoryService {
    async fn authorize_publish(
        &self,
        req: Request<pb::AuthorizePublishRequest>,
    ) -> Result<Response<pb::AuthorizePublishResponse>, Status> {
        let req = req.into_inner();
        match req.credential {
            Some(Credential::StreamKey(key)) => {
                if key.is_empty() || key.len() > 256 {
                    return Err(Status::unauthenticated("invalid stream key"));
                }
                let row = self
                    .state
                    .store
                    .active_key(&hash_stream_key(&key))
                    .await
                    .map_err(store_status)?
                    .ok_or_else(|| {
                        Status::unauthenticated(
                            "invalid or rotated stream key: copy the current key from the studio",
                        )
                    })?;
                if !req.room_id.is_empty() {
                    let named = self.room(&req.room_id).await?;
                    if named.id != row.room_id {
                        return Err(Status::permission_denied(
                            "this stream key belongs to another room",
                        ));
                    }
                }
                let room = self.room(&row.room_id).await?;
                self.admit(&room, &req.protocol, &req.client_ip).await?;
                tracing::info!(room_id = %room.id, "publish authorized by stream key");
                Ok(Response::new(pb::AuthorizePublishResponse {
                    room: Some(to_pb(&room)),
                    key_id: row.id,
                }))
            }
            Some(Credential::AccessToken(token)) => {
                let claims = self.state.tokens.verify(&token).map_err(|e| match e {
                    TokenError::Expired => Status::unauthenticated("access token expired"),
                    TokenError::Invalid => Status::unauthenticated("invalid access token"),
                })?;
                let room = self.room(&req.room_id).await?;
                if claims.role != Role::Creator || claims.sub != room.owner_id {
                    return Err(Status::permission_denied(
                        "only the room's owner may publish with an access token",
                    ));
                }
                self.admit(&room, &req.protocol, &req.client_ip).await?;
                Ok(Response::new(pb::AuthorizePublishResponse {
                    room: Some(to_pb(&room)),
                    key_id: format!("{OWNER_GRANT}{}", claims.sub),
                }))
            }
            None => Err(Status::unauthenticated(
                "send a stream key or an access token",
            )),
        }
    }

    async fn authorize_play(
        &self,
        req: Request<pb::AuthorizePlayRequest>,
    ) -> Result<Response<pb::AuthorizePlayResponse>, Status> {
        let req = req.into_inner();
        let room = self.room(&req.room_id).await?;
        let claims = if req.token.is_empty() {
            None
        } else {
            Some(self.state.tokens.verify(&req.token).map_err(|e| match e {
                TokenError::Expired => Status::unauthenticated("viewer token expired"),
                TokenError::Invalid => Status::unauthenticated("invalid viewer token"),
            })?)
        };
        check_visible(&room, claims.as_ref()).map_err(|e| {
            if e.status == axum::http::StatusCode::UNAUTHORIZED {
                Status::unauthenticated(e.message)
            } else {
                Status::permission_denied(e.message)
            }
        })?;
        Ok(Response::new(pb::AuthorizePlayResponse {
            room: Some(to_pb(&room)),
        }))
    }

    async fn check_publish_grants(
        &self,
        req: Request<pb::CheckPublishGrantsRequest>,
    ) -> Result<Response<pb::CheckPublishGrantsResponse>, Status> {
        let grants = req.into_inner().grants;
        if grants.len() > MAX_GRANTS_PER_CHECK {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_GRANTS_PER_CHECK} grants per call: split the check"
            )));
        }
        let mut current = Vec::with_capacity(grants.len());
        for g in &grants {
            current.push(self.grant_is_current(g).await?);
        }
        Ok(Response::new(pb::CheckPublishGrantsResponse { current }))
    }

    async fn recording_finished(
        &self,
        req: Request<pb::RecordingFinishedRequest>,
    ) -> Result<Response<pb::RecordingFinishedResponse>, Status> {
        let r = req.into_inner();
        let valid = crate::recordings::could_name_a_recording(&r.recording_id)
            && crate::recordings::could_name_a_recording(&r.room_id)
            && r.path == format!("{}/{}", r.room_id, r.recording_id)
            && r.started_at_ms <= r.ended_at_ms
            && r.duration_ms >= 0
            && r.bytes >= 0;
        if !valid {
            return Err(Status::invalid_argument(
                "a recording needs an id, its room, path `{room}/{id}`, and times in order",
            ));
        }
        let rec = crate::recordings::Recording {
            id: r.recording_id,
            room_id: r.room_id,
            owner_id: String::new(),
            status: crate::recordings::RecordingStatus::Ready,
            started_at_ms: r.started_at_ms,
            ended_at_ms: Some(r.ended_at_ms),
            duration_ms: r.duration_ms,
            bytes: r.bytes,
            path: r.path,
        };
        let stored = self
            .state
            .store
            .finish_recording(&rec)
            .await
            .map_err(store_status)?;
        if stored {
            tracing::info!(recording_id = %rec.id, room_id = %rec.room_id, "recording stored");
        }
        Ok(Response::new(pb::RecordingFinishedResponse { stored }))
    }

    async fn recording_started(
        &self,
        req: Request<pb::RecordingStartedRequest>,
    ) -> Result<Response<pb::RecordingStartedResponse>, Status> {
        let r = req.into_inner();
        let valid = crate::recordings::could_name_a_recording(&r.recording_id)
            && crate::recordings::could_name_a_recording(&r.room_id)
            && r.path == format!("{}/{}", r.room_id, r.recording_id)
            && r.started_at_ms >= 0
            && r.bytes >= 0;
        if !valid {
            return Err(Status::invalid_argument(
                "a recording needs an id, its room, path `{room}/{id}` and its start",
            ));
        }
        let rec = crate::recordings::StartedRecording {
            id: r.recording_id,
            room_id: r.room_id,
            started_at_ms: r.started_at_ms,
            path: r.path,
            bytes: r.bytes,
        };
        let stored = self
            .state
            .store
            .start_recording(&rec)
            .await
            .map_err(store_status)?;
        if stored {
            tracing::debug!(recording_id = %rec.id, room_id = %rec.room_id, bytes = rec.bytes, "recording in progress listed");
        }
        Ok(Response::new(pb::RecordingStartedResponse { stored }))
    }

    async fn get_recording(
        &self,
        req: Request<pb::GetRecordingRequest>,
    ) -> Result<Response<pb::GetRecordingResponse>, Status> {
        let id = req.into_inner().recording_id;
        let rec = self
            .state
            .store
            .recording(&id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found("no such recording"))?;
        Ok(Response::new(pb::GetRecordingResponse {
            room_id: rec.room_id,
            path: rec.path,
        }))
    }

    async fn get_room(
        &self,
        req: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let room = self.room(&req.into_inner().room_id).await?;
        Ok(Response::new(to_pb(&room)))
    }
}
