//! statewall: stateful packet processing with eBPF.
//!
//! This crate is the user side as someone embedding statewall would use it: the kernel
//! programs (built from `crates/statewall-ebpf` and embedded, [`engine::ebpf::OBJECT`]), the
//! stages that configure them, and the daemon shell. The types and reference logic both
//! sides share live in `statewall-common`; the test, bench, demo and fuzz harness lives in
//! `statewall-harness`; the `statewall` command in `statewall-cli`.
//!
//! Layers, each importing only those below it:
//! - [`daemon`] and [`client`]: the shell (lifecycle, REST router, `/metrics`) and the client
//!   the CLI uses;
//! - [`config`]: the TOML config, composed of the stages' sections;
//! - the stages, one folder each, named as in the kernel crate: [`xfsm`] (state machines and
//!   knock doors), [`detect`] (flood detectors, blocks), [`spa`], [`firewall`], [`monitor`], [`dynmon`]; the gate's grants are
//!   written through the [`engine`]; [`cluster`] holds what a fleet shares through etcd
//!   (replay claims, grants);
//! - [`engine`]: loading, pinning, attaching, adopting and tearing down the kernel side.
//!
//! ```no_run
//! // Adopt (or load) the kernel side under a bpffs root, as the daemon does.
//! use statewall::{config::Config, engine::{pins::Pins, Engine}};
//! let cfg = Config::default();
//! let engine = Engine::open(&Pins::new("/sys/fs/bpf/statewall"), &cfg.map_sizes()).unwrap();
//! println!("adopted: {}", engine.adopted);
//! ```
#![deny(missing_docs)]

pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod dynmon;
pub mod engine;

pub mod firewall;
pub mod gate;
pub mod import;
pub mod monitor;
pub mod spa;
pub mod types;
pub mod xfsm;
