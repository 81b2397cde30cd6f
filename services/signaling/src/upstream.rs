//! Clients of the services signaling talks to: the API's RoomDirectory and SFU nodes.

use skylark_proto::rooms::v1::room_directory_client::RoomDirectoryClient;
use skylark_proto::sfu::v1::sfu_node_client::SfuNodeClient;
use skylark_telemetry::{grpc_channel as channel, GrpcClientInterceptor};
use std::collections::HashMap;
use std::sync::Mutex;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Directory = RoomDirectoryClient<InterceptedService<Channel, GrpcClientInterceptor>>;
pub type Sfu = SfuNodeClient<InterceptedService<Channel, GrpcClientInterceptor>>;

/// Lazily connected clients, shared by every request.
pub struct Upstreams {
    directory: Directory,
    sfus: Mutex<HashMap<String, Sfu>>,
}

impl Upstreams {
    pub fn new(api_grpc_url: &str) -> anyhow::Result<Self> {
        let directory =
            RoomDirectoryClient::with_interceptor(channel(api_grpc_url)?, GrpcClientInterceptor)
                .max_decoding_message_size(64 * 1024);
        Ok(Self {
            directory,
            sfus: Mutex::new(HashMap::new()),
        })
    }

    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// The client of the SFU at `url` (from the node registry).
    pub fn sfu(&self, url: &str) -> anyhow::Result<Sfu> {
        let mut map = self.sfus.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let c = SfuNodeClient::with_interceptor(channel(url)?, GrpcClientInterceptor)
            .max_decoding_message_size(128 * 1024);
        if map.len() > 1024 {
            map.clear();
        }
        map.insert(url.to_string(), c.clone());
        Ok(c)
    }
}
