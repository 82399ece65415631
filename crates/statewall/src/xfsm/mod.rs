//! User side of the `xfsm` stage: compiling knock doors into OpenState tables, writing
//! tables into the kernel (shadow generation, then one switch), and `reference::RefTables`, the
//! plain-map implementation of [`Tables`](statewall_common::xfsm::Tables) that runs the reference model in tests.
//!
//! A knock door compiles to one machine keyed by source address. Its sequences form a trie
//! from DEFAULT: DEFAULT --s1--> a --s2--> b ... --sn--> OPEN, where the last step of an open
//! sequence opens the door's grant set in the gate, and the last step of a close sequence
//! revokes it (back to DEFAULT). The first step arms the sequence timer (`seq_timeout`,
//! kept by later steps), every step arms the step timer (`step_timeout`); both roll back
//! to where the path started. OPEN lasts `open_for`; from OPEN the first steps work as from
//! DEFAULT (knocking again while open), except in toggle mode, where the open sequence
//! knocked again from OPEN is the close path (its timeouts roll back to OPEN, whose own
//! deadline keeps running). A repeated packet of the step just taken (a retransmitted SYN)
//! keeps the state and its timers. In strict mode, any other knock-like packet (UDP, or TCP
//! with the door's flags) from a source part-way through resets it and counts a failure.
//!
//! Owns the `[[knock]]` and `[[xfsm]]` sections (`config`, a door's resolved form `door`,
//! the `[[switch]]` checks `switch_check`), compiling them into tables (`compile`: no
//! kernel needed) and writing the tables (`write`, and `kernel`), one-time and derived
//! sequences, door bookkeeping and the knock client. May import: `engine`, `gate`, `types`.

pub mod compile;
pub mod config;
pub mod door;
pub mod doors;
pub mod encode;
pub mod error;
pub mod expr;
pub mod kernel;
pub mod knockclient;
pub mod reference;
pub mod sequences;
pub mod switch;
pub mod switch_check;
pub mod tables;
pub mod write;

pub use door::KnockDoor;
pub use tables::{Compiled, TKey};

pub use compile::{compile, OPEN, TRANS_PER_GEN};
pub use statewall_common::xfsm::raw::{RawMachine, RawTrans};

pub use write::write_tables;
