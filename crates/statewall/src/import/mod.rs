//! Importers of other tools' configurations: knockd.conf ([`knockd`]) and fwknopd's
//! access.conf ([`fwknop`]), converted into a statewall [`crate::config::Config`].
//!
//! Above `config` (they produce one); may import the stages' config types.

pub mod error;
pub mod fwknop;
pub mod knockd;

pub use error::{ImportError, Why};
