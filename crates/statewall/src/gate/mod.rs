//! The `gate` stage, user side: the `[gate]` section. How a source and a port become the
//! gate's grant key and how the kernel's addresses read back belong to the key's layout
//! (`statewall_common::maps::{key_for, key_addr, ip_bytes, addr_ip}`), which every stage
//! that grants shares. The gate's tables are written through the [`crate::engine::Engine`]
//! (`apply_gate`, `grant`, `revoke`, the sweepers).
//!
//! Owns the `[gate]` section ([`GateConfig`]) and the gate's tables (`kernel`), and the
//! events' clock ([`unix_now`], which the knock doors name). May import: `engine`, `types`.

pub mod kernel;

use serde::{Deserialize, Serialize};

use crate::types::{Dur, PortSpec};

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
