//! Emptying a loaded object's maps in place, so that a [`crate::testrun::TestBed`] can be
//! used again as if just loaded, without verifying its programs again (the verifier takes
//! most of a property test's time: half a second to two seconds per program).
//!
//! Through the engine's raw `bpf(2)` calls on the map's descriptor: hash tables (plain, LRU,
//! per-CPU) and tries lose every key; arrays (plain and per-CPU) get zeroes in every slot,
//! in batches; ring buffers are drained. The object's global-data maps (`.rodata`, `.data`,
//! `.bss`) keep what the loader put there, and program arrays are left alone (nothing in
//! the object fills one). A map of another kind is an error: it cannot be made new in
//! place, and the caller needs a fresh load. One difference from a fresh load remains: an
//! LRU table's free lists keep the order its entries were deleted in, so which entry it
//! evicts first when full again may differ.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapType};
use statewall::engine::{access::map_data, sys};

/// The kernel's id of map `m`.
pub(crate) fn id(m: &Map) -> Result<u32, String> {
    map_data(m)
        .info()
        .map(|i| i.id())
        .map_err(|e| e.to_string())
}

/// Empties map `name` in place (module doc); says what failed and where. Arrays are
/// zeroed only with `arrays` (the object's largest arrays take longer to zero than its
/// programs take to verify).
pub(crate) fn wipe(name: &str, m: &mut Map, arrays: bool) -> Result<(), String> {
    if name.starts_with('.') {
        return Ok(());
    }
    if let Map::RingBuf(_) = m {
        let mut rb = aya::maps::RingBuf::try_from(m).map_err(|e| format!("{name}: {e}"))?;
        while rb.next().is_some() {}
        return Ok(());
    }
    let d = map_data(m);
    let info = d.info().map_err(|e| format!("{name}: {e}"))?;
    let fd = d.fd().as_fd().as_raw_fd();
    let ty = info.map_type().map_err(|e| format!("{name}: {e}"))?;
    let err = |what: &str, e: std::io::Error| format!("{name}: {what}: {e}");
    match ty {
        MapType::Hash
        | MapType::PerCpuHash
        | MapType::LruHash
        | MapType::LruPerCpuHash
        | MapType::LpmTrie => {
            // Every key first, then the deletions (a key a program run since has evicted
            // is simply gone).
            let keys = sys::keys(fd, info.key_size() as usize).map_err(|e| err("keys", e))?;
            for k in &keys {
                sys::map_delete(fd, k).map_err(|e| err("delete", e))?;
            }
            Ok(())
        }
        _ if !arrays => Ok(()),
        MapType::Array | MapType::PerCpuArray => {
            // The kernel's value size for the map's kind (bpf_map_value_size): a per-CPU
            // value is one 8-byte-aligned slot per possible CPU.
            let size = info.value_size() as usize;
            let slot = if ty == MapType::PerCpuArray {
                let cpus = aya::util::nr_cpus().map_err(|(f, e)| format!("{name}: {f}: {e}"))?;
                size.div_ceil(8) * 8 * cpus
            } else {
                size
            };
            let n = info.max_entries();
            const CHUNK: u32 = 4096;
            let mut start = 0u32;
            while start < n {
                let count = CHUNK.min(n - start);
                let keys: Vec<u8> = (start..start + count).flat_map(u32::to_ne_bytes).collect();
                let values = vec![0u8; slot * count as usize];
                sys::update_batch(fd, &keys, &values, count as usize)
                    .map_err(|e| err("zeroing", e))?;
                start += count;
            }
            Ok(())
        }
        // Filled by nothing (the object makes no tail calls): nothing to undo.
        MapType::ProgramArray => Ok(()),
        t => Err(format!("{name}: map type {t:?} cannot be emptied in place")),
    }
}
