//! What every subcommand file imports: the shared helpers and the crates' names they all
//! use. Neither the command line's root (`crate::Cli`) nor the daemon: the subcommands
//! that need those name them, so the others sit below both.

pub use super::{api_call, read_json, resolve, Paths};
pub use anyhow::Context;
pub use clap::{Args, Subcommand};
pub use statewall::{client, config::proto_name};
pub use std::{net::SocketAddr, path::PathBuf};
