//! A knock door as the config resolves it, ready for [`compile`](fn@super::compile): its sequences,
//! timers, lockout and payloads.

use std::collections::BTreeMap;

use statewall_common::xfsm::payload::Payload;

/// One knock door.
#[derive(Clone, Debug, PartialEq)]
pub struct KnockDoor {
    /// Name (config section).
    pub name: String,
    /// Open sequences, steps as (protocol, port): usually one (time-based doors have the
    /// neighbouring windows' too).
    pub sequences: Vec<Vec<(u8, u16)>>,
    /// One-time keys of the open sequences, by index (absent or 0 = reusable): the last
    /// knock of such a sequence opens only while its key is in `SW_XFSM_ONCE`, and removes it.
    pub once: Vec<u64>,
    /// Close sequences (revoke the source's grants).
    pub close: Vec<Vec<(u8, u16)>>,
    /// The open sequence knocked while open closes the door.
    pub toggle: bool,
    /// Protected (protocol, port)s the door opens.
    pub protected: Vec<(u8, u16)>,
    /// TCP flags that must be set ...
    pub tcp_mask: u8,
    /// ... to these values (default SYN without ACK: mask SYN|ACK, value SYN).
    pub tcp_value: u8,
    /// Time allowed between consecutive knocks.
    pub step_timeout_ns: u64,
    /// Time allowed for the whole sequence from its first knock.
    pub seq_timeout_ns: u64,
    /// How long the door stays open.
    pub open_for_ns: u64,
    /// Reset on any other knock-like packet while part-way through.
    pub strict: bool,
    /// Lockout: (failures, within ns, lock ns); `None` = off.
    pub lockout: Option<(u32, u64, u64)>,
    /// UDP payload every UDP knock must carry (absent = any payload) ...
    pub payload_all: Option<Payload>,
    /// ... except on these ports, which need their own.
    pub payloads: BTreeMap<u16, Payload>,
}

impl KnockDoor {
    /// A door with one open sequence and the defaults of the config (5 s step timeout,
    /// 25 s sequence timeout, 30 s open, strict, SYN without ACK).
    pub fn new(name: &str, sequence: Vec<(u8, u16)>, protected: Vec<(u8, u16)>) -> KnockDoor {
        KnockDoor {
            name: name.into(),
            sequences: vec![sequence],
            once: Vec::new(),
            close: Vec::new(),
            toggle: false,
            protected,
            tcp_mask: 0x12,
            tcp_value: 0x02,
            step_timeout_ns: 5_000_000_000,
            seq_timeout_ns: 25_000_000_000,
            open_for_ns: 30_000_000_000,
            strict: true,
            lockout: None,
            payload_all: None,
            payloads: BTreeMap::new(),
        }
    }
}
