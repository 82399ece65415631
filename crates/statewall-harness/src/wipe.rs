//! Emptying a loaded object's maps in place, so that a [`crate::testrun::TestBed`] can be
//! used again as if just loaded, without verifying its programs again (the verifier takes
//! most of a property test's time: half a second to two seconds per program).
//!
//! Through the raw `bpf(2)` commands on the map's descriptor: hash tables (plain, LRU,
//! per-CPU) and tries lose every key; arrays (plain and per-CPU) get zeroes in every slot,
//! in batches; ring buffers are drained. The object's global-data maps (`.rodata`, `.data`,
//! `.bss`) keep what the loader put there, and program arrays are left alone (nothing in
//! the object fills one). A map of another kind is an error: it cannot be made new in
//! place, and the caller needs a fresh load. One difference from a fresh load remains: an
//! LRU table's free lists keep the order its entries were deleted in, so which entry it
//! evicts first when full again may differ.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapData};

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PROG_ARRAY: u32 = 3;
const PERCPU_HASH: u32 = 5;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const LRU_PERCPU_HASH: u32 = 10;
const LPM_TRIE: u32 = 11;

/// `union bpf_attr` for the element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<()> {
    // SAFETY: `attr` is a live, properly laid out bpf_attr of its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

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
    let fd = d.fd().as_fd().as_raw_fd() as u32;
    let ty = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    let err = |what: &str, e: std::io::Error| format!("{name}: {what}: {e}");
    match ty {
        HASH | PERCPU_HASH | LRU_HASH | LRU_PERCPU_HASH | LPM_TRIE => {
            // Every key first (each from the one before: one pass over the buckets), then
            // the deletions.
            let size = info.key_size() as usize;
            let mut keys: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut next = vec![0u8; size];
                let mut a = ElemAttr {
                    map_fd: fd,
                    _pad: 0,
                    key: keys.last().map_or(0, |k| k.as_ptr() as u64),
                    value: next.as_mut_ptr() as u64,
                    flags: 0,
                };
                match bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
                    Ok(()) => keys.push(next),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                    Err(e) => return Err(err("next key", e)),
                }
            }
            for key in &keys {
                let mut a = ElemAttr {
                    map_fd: fd,
                    _pad: 0,
                    key: key.as_ptr() as u64,
                    value: 0,
                    flags: 0,
                };
                match bpf(BPF_MAP_DELETE_ELEM, &mut a) {
                    // (A program run since may have evicted it.)
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(err("delete", e)),
                }
            }
            Ok(())
        }
        _ if !arrays => Ok(()),
        ARRAY | PERCPU_ARRAY => {
            let cpus = if ty == PERCPU_ARRAY {
                aya::util::nr_cpus().map_err(|(f, e)| format!("{name}: {f}: {e}"))?
            } else {
                1
            };
            let slot = (info.value_size() as usize).div_ceil(8) * 8 * cpus;
            let n = info.max_entries();
            const CHUNK: u32 = 4096;
            let mut start = 0u32;
            while start < n {
                let count = CHUNK.min(n - start);
                let keys: Vec<u32> = (start..start + count).collect();
                let values = vec![0u8; slot * count as usize];
                let mut a = BatchAttr {
                    in_batch: 0,
                    out_batch: 0,
                    keys: keys.as_ptr() as u64,
                    values: values.as_ptr() as u64,
                    count,
                    map_fd: fd,
                    elem_flags: 0,
                    flags: 0,
                };
                bpf(BPF_MAP_UPDATE_BATCH, &mut a).map_err(|e| err("zeroing", e))?;
                start += count;
            }
            Ok(())
        }
        // Filled by nothing (the object makes no tail calls): nothing to undo.
        PROG_ARRAY => Ok(()),
        t => Err(format!("{name}: map type {t} cannot be emptied in place")),
    }
}
