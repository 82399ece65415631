//! [`MapAccess`]: maps by name, whoever holds them; [`map_data`]: the descriptor inside any
//! map. Imports only the engine's error.

use aya::maps::{Map, MapData};

use super::error::Result;

/// Maps by name: the daemon's `Engine`, or a test bed with private maps. The table
/// writers of the stages take either.
pub trait MapAccess {
    /// The map called `name` (an error when this build has no such map).
    fn map_mut(&mut self, name: &str) -> Result<&mut Map>;
}

/// The descriptor inside a map of any kind (aya keeps one in every variant).
pub fn map_data(m: &Map) -> &MapData {
    match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::Queue(d)
        | Map::Stack(d)
        | Map::RingBuf(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::ReusePortSockArray(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    }
}
