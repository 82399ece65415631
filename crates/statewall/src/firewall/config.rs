//! The `[firewall]` section: sizes of the firewall's tables and conntrack timeouts
//! (instances and rules are managed through the API and kept under the state directory).

use serde::{Deserialize, Serialize};

use crate::types::Dur;

/// The most `bitsets_max` may be: bit-set ids are 16 bits in the kernel's port and
/// small-value tables, and the top 10,240 of them name one-position sets
/// ([`statewall_common::firewall::SINGLE`]), so 55,296 ids in all.
pub const BITSETS_MAX_LIMIT: u32 = statewall_common::firewall::SINGLE;

/// `[firewall]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Distinct rule sets the classifier can hold (shared by both table generations; the
    /// first 128 ids are the fields' wild sets); each takes 1.3 KB of kernel memory. Set at
    /// the first start (a change needs `statewall teardown`).
    pub bitsets_max: u32,
    /// Connection table size (LRU: when full, the least recently seen connections go
    /// first). Set at the first start.
    pub conntrack_max: u32,
    /// Idle timeouts of tracked connections: TCP during the handshake ...
    pub ct_tcp_syn: Dur,
    /// ... TCP established ...
    pub ct_tcp_established: Dur,
    /// ... TCP after a FIN ...
    pub ct_tcp_closing: Dur,
    /// ... UDP and ICMP echo.
    pub ct_udp: Dur,
}
impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            bitsets_max: 4096,
            conntrack_max: 65536,
            ct_tcp_syn: Dur::secs(60),
            ct_tcp_established: Dur::secs(86400),
            ct_tcp_closing: Dur::secs(10),
            ct_udp: Dur::secs(60),
        }
    }
}
