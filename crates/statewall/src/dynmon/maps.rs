//! A loaded path's maps as its object declares them: type, sizes, BTF types, and the map
//! type numbers statewall reads differently. Imports nothing.

/// A map of a loaded path.
#[derive(Clone, Debug)]
pub struct MapMeta {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Sizes.
    pub key_size: u32,
    /// Value size as declared.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// BTF key type (0: unknown).
    pub key_ty: u32,
    /// BTF value type (0: unknown).
    pub value_ty: u32,
    /// Whether each copy has its own instance.
    pub swapped: bool,
    /// Global data (`.data`, `.bss`): the initial contents an emptied map gets back.
    pub init: Vec<u8>,
}
pub(crate) const T_HASH: u32 = 1;
pub(crate) const T_ARRAY: u32 = 2;
pub(crate) const T_PERCPU_HASH: u32 = 5;
pub(crate) const T_PERCPU_ARRAY: u32 = 6;
pub(crate) const T_LRU_HASH: u32 = 9;
pub(crate) const T_LRU_PERCPU_HASH: u32 = 10;
pub(crate) const T_QUEUE: u32 = 22;
pub(crate) const T_STACK: u32 = 23;
pub(crate) const T_RINGBUF: u32 = 27;
