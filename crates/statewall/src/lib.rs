//! statewall: stateful packet processing with eBPF.
//!
//! This crate is the user side: the library that the `statewall` binary, the tests and the
//! benchmarks share. The kernel programs live in `crates/statewall-ebpf` and are embedded
//! here ([`ebpf::OBJECT`]); the types and reference logic both sides share live in
//! `statewall-common`.
//!
//! - [`engine`]: the kernel side as the daemon holds it (pins, attach, adopt, teardown).
//! - [`daemon`], [`api`], [`metrics`], [`client`]: the daemon, its REST API, `/metrics`,
//!   and the client the CLI uses.
//! - [`config`]: the TOML config.
//! - [`testrun`], [`packet`], [`netns`]: test harnesses (BPF_PROG_TEST_RUN on crafted
//!   frames; network namespaces joined by veth pairs).
//! - [`xfsm`]: knock doors compiled to OpenState tables, the table writer, the reference tables.
//! - [`knockd`]: converts a knockd.conf into a statewall config (doors, protected ports).
//! - [`knockclient`]: the knock client (TCP SYNs, UDP datagrams) and derived sequences
//!   (time- and counter-based knocking) shared by the client and the daemon.
//! - [`doors`]: knock doors in the daemon (events, open sources, trigger commands).
//! - [`bench`], [`bench_open`], [`demo`]: `statewall bench` (per-packet costs, time to
//!   open against knockd) and `statewall demo`.
//!
//! ```no_run
//! // Run the real gate program on a crafted SYN.
//! use statewall::{packet::Packet, testrun::TestBed};
//! let mut bed = TestBed::new();
//! let syn = Packet::tcp("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 40000, 22, 0x02).build();
//! let verdict = bed.run_tc(statewall::ebpf::PROG_GATE, &syn);
//! assert_eq!(verdict, statewall_common::TCX_NEXT); // nothing protected yet
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod api_dynmon;
pub mod api_fw;
pub mod api_monitor;
pub mod bench;
pub mod bench_dynmon;
pub mod bench_fw;
pub mod bench_fwnft;
pub mod bench_monitor;
pub mod bench_open;
pub mod bench_plot;
pub mod bench_spa;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod doors;
pub mod dynmon;
pub mod ebpf;
pub mod engine;
pub mod firewall;
pub mod fuzzing;
pub mod fw;
pub mod fwknopconf;
pub mod fwknopd;
pub mod knockclient;
pub mod knockd;
pub mod metrics;
pub mod monitor;
pub mod monitor_files;
pub mod netns;
pub mod packet;
pub mod pins;
pub mod sequences;
pub mod spa;
pub mod spaconfig;
pub mod sys;
pub mod testrun;
pub mod top;
pub mod xfsm;
