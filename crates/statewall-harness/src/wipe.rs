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

use aya::maps::{Map, MapData};
use statewall::engine::sys;

const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PROG_ARRAY: u32 = 3;
const PERCPU_HASH: u32 = 5;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const LRU_PERCPU_HASH: u32 = 10;
const LPM_TRIE: u32 = 11;

/// The descriptor inside any kind of map.
fn data(m: &Map) -> &MapData {
    use Map::*;
    match m {
        Array(d)
        | ArrayOfMaps(d)
        | BloomFilter(d)
        | CgroupArray(d)
        | CgroupStorage(d)
        | CgrpStorage(d)
        | CpuMap(d)
        | DevMap(d)
        | DevMapHash(d)
        | HashMap(d)
        | HashOfMaps(d)
        | InodeStorage(d)
        | LpmTrie(d)
        | LruHashMap(d)
        | PerCpuArray(d)
        | PerCpuCgroupStorage(d)
        | PerCpuHashMap(d)
        | PerCpuLruHashMap(d)
        | PerfEventArray(d)
        | ProgramArray(d)
        | Queue(d)
        | ReusePortSockArray(d)
        | RingBuf(d)
        | SockHash(d)
        | SockMap(d)
        | SkStorage(d)
        | Stack(d)
        | StackTraceMap(d)
        | Unsupported(d)
        | XskMap(d) => d,
    }
}

/// The kernel's id of map `m`.
pub(crate) fn id(m: &Map) -> Result<u32, String> {
    data(m).info().map(|i| i.id()).map_err(|e| e.to_string())
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
    let d = data(m);
    let info = d.info().map_err(|e| format!("{name}: {e}"))?;
    let fd = d.fd().as_fd().as_raw_fd();
    let ty = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    let err = |what: &str, e: std::io::Error| format!("{name}: {what}: {e}");
    match ty {
        HASH | PERCPU_HASH | LRU_HASH | LRU_PERCPU_HASH | LPM_TRIE => {
            // Every key first, then the deletions (a key a program run since has evicted
            // is simply gone).
            let keys = sys::keys(fd, info.key_size() as usize).map_err(|e| err("keys", e))?;
            for k in &keys {
                sys::map_delete(fd, k).map_err(|e| err("delete", e))?;
            }
            Ok(())
        }
        _ if !arrays => Ok(()),
        ARRAY | PERCPU_ARRAY => {
            // The kernel's value size for the map's kind (bpf_map_value_size): a per-CPU
            // value is one 8-byte-aligned slot per possible CPU.
            let size = info.value_size() as usize;
            let slot = if ty == PERCPU_ARRAY {
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
        PROG_ARRAY => Ok(()),
        t => Err(format!("{name}: map type {t} cannot be emptied in place")),
    }
}
