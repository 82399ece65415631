//! The statewall test, bench, demo and fuzz harness: what the tests, `statewall bench`,
//! `statewall demo` and the fuzz targets share, kept out of the library's public API.
//!
//! - [`testrun`]: BPF_PROG_TEST_RUN on crafted frames against the embedded object;
//! - [`packet`]: a frame builder and the malformed-frame generator;
//! - [`netns`]: network namespaces joined by veth pairs, removed on drop;
//! - [`fwknopd`]: a real fwknopd in a namespace, for comparisons;
//! - [`bench`]: `statewall bench` (per-packet costs, time to open, figures);
//! - [`demo`]: `statewall demo`;
//! - [`etcd`]: a real etcd cluster on loopback for the fleet tests;
//! - [`dataset`]: labelled captures for the learned classifier (`statewall dataset`), with
//!   [`apps`]: its application attacks and DNS;
//! - [`rng`]: SplitMix64 for reproducible choices;
//! - [`fuzzing`]: the entry points the fuzz targets and their corpus replay share;
//! - [`leftovers`]: the bpffs roots killed test processes left behind.
//!
//! ```no_run
//! // Run the real gate program on a crafted SYN.
//! use statewall_harness::{packet::Packet, testrun::TestBed};
//! let mut bed = TestBed::new();
//! let syn = Packet::tcp("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 40000, 22, 0x02).build();
//! let verdict = bed.run_tc(statewall::engine::ebpf::PROG_GATE, &syn);
//! assert_eq!(verdict, statewall_common::TCX_NEXT); // nothing protected yet
//! ```
#![deny(missing_docs)]

pub mod apps;
pub mod bench;
pub mod dataset;
pub mod demo;
pub mod etcd;
pub mod fuzzing;
pub mod fwknopd;
pub mod leftovers;
pub mod mining;
pub mod netns;
pub mod packet;
pub mod rng;
pub mod stratum;
pub mod testrun;
pub mod websocket;
mod wipe;
