//! `statewall bench` (and `make bench`): every figure is the median of several runs, shown
//! beside a baseline measured in the same run, with its target marked MET or MISSED.
//! The table is printed and written as JSON to `target/bench/latest.json`; the command
//! exits non-zero when a target is missed.
//!
//! Per-packet costs come from BPF_PROG_TEST_RUN (the kernel's own mean over `repeat` runs),
//! so they measure the program, not the machine's scheduling.
//!
//! One file per group of measurements; what they share sits below them and imports no
//! group: `report` (rows, the report, the table), `daemon` (a daemon started for a group,
//! and the SPA-to-open measurement two groups take), `rulesets` (the firewall's generated
//! rulesets), `nft` (the same rules for nftables), `http`, and in the crate `testrun`
//! (timing a program) and `netns` (a connect). The command line's `bench` runs the groups
//! in order, each between two probes (`perpacket::probe`).

pub mod cluster;
pub mod daemon;
pub mod detect;
pub mod dynmon;
pub mod firewall;
pub mod fwchange;
pub mod fwnft;
pub mod goodput;
pub mod http;
pub mod monitor;
pub mod nft;
pub mod open;
pub mod perpacket;
pub mod plot;
pub mod report;
pub mod rulesets;
pub mod spa;
