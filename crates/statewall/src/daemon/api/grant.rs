//! The body of a grant request (`POST /api/v1/gate/grants`), apart from its handler so
//! that what reads it without a daemon (the fuzz targets) need not sit above the API.

use std::net::IpAddr;

use serde::Deserialize;

/// Body of `POST /api/v1/gate/grants`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Source address to let in.
    pub addr: IpAddr,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Protected port.
    pub port: u16,
    /// How long the source may open new connections to the port (those it opened keep
    /// working after that until idle, see `[gate] flow_idle_tcp`).
    pub seconds: u64,
}
