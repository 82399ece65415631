//! [`MapAccess`]: maps by name, whoever holds them. Imports only the engine's error.

use aya::maps::Map;

use super::error::Result;

/// Maps by name: the daemon's `Engine`, or a test bed with private maps. The table
/// writers of the stages take either.
pub trait MapAccess {
    /// The map called `name` (an error when this build has no such map).
    fn map_mut(&mut self, name: &str) -> Result<&mut Map>;
}
