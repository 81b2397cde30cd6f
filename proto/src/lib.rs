//! gRPC contracts between Skylark services (tonic + prost).
//!
//! Packages follow `skylark.<service>.v1`; every service has its own module.

/// `skylark.rooms.v1`: the API's room directory (authorize publish/play, look up rooms).
pub mod rooms {
    pub mod v1 {
        tonic::include_proto!("skylark.rooms.v1");
    }
}

/// `skylark.sfu.v1`: the media node (sessions, stats, relay pulls).
pub mod sfu {
    pub mod v1 {
        tonic::include_proto!("skylark.sfu.v1");
    }

    /// gRPC metadata key of an SFU's `RESOURCE_EXHAUSTED` when it refused for CPU (every
    /// worker past its busy threshold), absent when it refused for sessions or relay
    /// links: placement does not ask such a node again for the same viewer.
    pub const REFUSED_FOR_CPU: &str = "skylark-refused-for-cpu";
}
