//! Importers of other tools' configurations: knockd.conf ([`knockd`]) and fwknopd's
//! access.conf ([`fwknop`]), converted into a statewall [`crate::config::Config`].
//!
//! Above `config` (they produce one); may import the stages' config types.

pub mod error;
pub mod fwknop;
pub mod knockd;

pub use error::{ImportError, Why};

use crate::config::sections::Config;

/// A converted configuration (knockd's or fwknopd's).
#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    /// The statewall configuration (already validated).
    pub config: Config,
    /// What was converted differently from a one-to-one copy, dropped or defaulted, one
    /// sentence each, in file order.
    pub notes: Vec<String>,
    /// Doors left out, each with why (`origin:LINE: message`), in file order.
    pub skipped: Vec<String>,
}
