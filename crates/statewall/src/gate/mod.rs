//! The `gate` stage, user side: how a source and a port become the gate's grant key, and
//! how the kernel's addresses read back. The gate's tables are written through the
//! [`crate::engine::Engine`] (`apply_gate`, `grant`, `revoke`, the sweepers).
//!
//! Owns the `[gate]` section ([`GateConfig`]) and the gate's tables (`kernel`). Shared by
//! the stages that grant (knock doors, SPA) and by the shell. May import: `engine`, `types`.

pub mod kernel;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use statewall_common::maps::{GrantKey, FAMILY_V4, FAMILY_V6};

use crate::types::{Dur, PortSpec};

/// The gate key of a source and (protocol number, port); an IPv4-mapped IPv6 address is
/// the IPv4 host.
pub fn key_for(addr: IpAddr, proto: u8, port: u16) -> GrantKey {
    let (family, addr) = ip_bytes(addr);
    GrantKey {
        proto,
        port,
        family,
        addr,
    }
}

/// An address as the kernel's keys hold it ([`addr_ip`] reads it back): (family,
/// 16 bytes), IPv4 (an IPv4-mapped IPv6 address included) in the first 4 bytes.
pub fn ip_bytes(addr: IpAddr) -> (u8, [u8; 16]) {
    let mut b = [0u8; 16];
    match crate::types::unmapped(addr) {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, b)
        }
        IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    }
}

/// The address in a key.
pub fn key_addr(k: &GrantKey) -> IpAddr {
    addr_ip(k.family, &k.addr)
}

pub use statewall_common::maps::addr_ip;

/// Seconds since the epoch, as a float (events carry it).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `[gate]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Protected ports, `tcp/22`, `udp/9922` (a bare number means TCP): dropped unless the
    /// source holds a grant.
    pub protected: Vec<PortSpec>,
    /// Size of the grant table (preallocated; a full table refuses new grants).
    pub grants_max: u32,
    /// Size of the table of flows opened under a grant (preallocated; when full, a granted
    /// connection still opens but lives only as long as its grant, counted as `flows_full`).
    pub flows_max: u32,
    /// A TCP connection opened under a grant keeps working after the grant ends until it
    /// has been idle this long; `0` = connections live only as long as the grant.
    pub flow_idle_tcp: Dur,
    /// The same after a FIN or RST was seen.
    pub flow_closing_tcp: Dur,
    /// The same for UDP flows.
    pub flow_idle_udp: Dur,
    /// How a packet to a protected port without a grant is refused: `closed` (default)
    /// answers as the host does for a closed port, a TCP reset for a SYN and an ICMP (v6:
    /// ICMPv6) port unreachable for UDP, so that a scan cannot tell protected ports from
    /// closed ones; `drop` drops silently (a scan then sees them `filtered`).
    pub reject: Reject,
    /// Resets per second, over all protected ports and CPUs (Linux itself does not limit
    /// the resets of closed ports: a low limit would make protected ports stand out).
    pub reset_per_sec: u64,
    /// Resets at once.
    pub reset_burst: u64,
}

/// `[gate] reject`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reject {
    /// Answer as a closed port.
    #[default]
    Closed,
    /// Drop silently.
    Drop,
}
impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            protected: Vec::new(),
            grants_max: 4096,
            flows_max: 16384,
            flow_idle_tcp: Dur::secs(7200),
            flow_closing_tcp: Dur::secs(10),
            flow_idle_udp: Dur::secs(60),
            reject: Reject::Closed,
            reset_per_sec: 10_000,
            reset_burst: 1_000,
        }
    }
}
