//! The states conntrack gives a packet, which the firewall's rules match on (re-exported
//! by [`crate::ct`], which decides them).

/// Packet state: a new connection.
pub const NEW: u8 = 0;
/// Packet state: part of a known connection.
pub const ESTABLISHED: u8 = 1;
/// Packet state: related to a known connection (an ICMP error quoting one of its packets).
pub const RELATED: u8 = 2;
/// Packet state: fits no connection (malformed, mid-stream TCP).
pub const INVALID: u8 = 3;
