//! Raw `bpf()` calls that aya 0.14 does not wrap.

use std::{io, os::fd::RawFd};

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut MapElemAttr) -> io::Result<()> {
    // SAFETY: attr is a valid bpf_attr prefix for the map element commands.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Walks the keys of a hash-type map or trie with `BPF_MAP_GET_NEXT_KEY` (each from the
/// one before: one pass over the buckets), handing each to `f`.
fn walk_keys(fd: RawFd, key_size: usize, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let mut cur = vec![0u8; key_size.max(1)];
    let mut next = vec![0u8; key_size.max(1)];
    let mut n = 0u32;
    let mut first = true;
    loop {
        let mut a = MapElemAttr {
            map_fd: fd as u32,
            key: if first { 0 } else { cur.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
            Ok(()) => {
                n += 1;
                f(&next[..key_size]);
                std::mem::swap(&mut cur, &mut next);
                first = false;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
        if n > 100_000_000 {
            return Err(io::Error::other("map walk did not terminate"));
        }
    }
}

/// Counts the keys of a hash-type map by walking it with `BPF_MAP_GET_NEXT_KEY`.
pub fn count_keys(fd: RawFd, key_size: usize) -> io::Result<u32> {
    let mut n = 0u32;
    walk_keys(fd, key_size, |_| n += 1)?;
    Ok(n)
}

/// The keys of a hash-type map or trie, in the kernel's walk order.
pub fn keys(fd: RawFd, key_size: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut v = Vec::new();
    walk_keys(fd, key_size, |k| v.push(k.to_vec()))?;
    Ok(v)
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// Deletes `key` (`BPF_MAP_DELETE_ELEM`); false when it was not there.
pub fn map_delete(fd: RawFd, key: &[u8]) -> io::Result<bool> {
    let mut a = MapElemAttr {
        map_fd: fd as u32,
        key: key.as_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_DELETE_ELEM, &mut a) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The interface index a tcx or XDP link is attached to (`bpf_link_info.tcx.ifindex` /
/// `.xdp.ifindex`); 0 when the link is defunct (its interface was removed).
pub fn link_ifindex(fd: RawFd) -> io::Result<u32> {
    // struct bpf_link_info: type, id, prog_id, then an 8-byte aligned union at offset 16
    // whose tcx and xdp members both start with the ifindex.
    let mut buf = [0u64; 32];
    let mut a = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of_val(&buf) as u32,
        info: buf.as_mut_ptr() as u64,
    };
    // SAFETY: valid attr and buffer for BPF_OBJ_GET_INFO_BY_FD.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut a as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((buf[2] & 0xffff_ffff) as u32)
}

/// Takes an exclusive, non-blocking `flock` on `path` (a directory or file); the lock lives
/// as long as the returned file.
pub fn lock_exclusive(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

const BPF_OBJ_GET: libc::c_long = 7;

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens a pinned BPF object (`BPF_OBJ_GET`).
pub fn obj_get(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd, unix::ffi::OsStrExt};
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut a = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: valid attr with a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut a as *mut ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) })
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

fn map_create(attr: &MapCreateAttr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: attr is a valid bpf_attr prefix for BPF_MAP_CREATE.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr as *const MapCreateAttr,
            std::mem::size_of::<MapCreateAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) })
}

/// A one-slot `ARRAY_OF_MAPS` (and the inner array it holds) whose only use is
/// [`Grace::wait`]: an update of an outer map returns only after `synchronize_rcu()`
/// (`maybe_wait_bpf_programs()` in `kernel/bpf/syscall.c`), so every program that started
/// before the call has finished when it returns.
pub struct Grace {
    outer: std::os::fd::OwnedFd,
    inner: std::os::fd::OwnedFd,
}

impl Grace {
    /// Creates the two maps.
    pub fn new() -> io::Result<Grace> {
        use std::os::fd::AsRawFd;
        let mut name = [0u8; 16];
        name[..8].copy_from_slice(b"sw_grace");
        let inner = map_create(&MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_name: name,
            ..Default::default()
        })?;
        let outer = map_create(&MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            map_name: name,
            ..Default::default()
        })?;
        Ok(Grace { outer, inner })
    }

    /// Waits until every BPF program running now has finished (one RCU grace period).
    pub fn wait(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        let mut a = MapElemAttr {
            map_fd: self.outer.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            next_key: &value as *const u32 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut a)
    }
}

#[repr(C)]
#[derive(Default)]
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

/// Runs one batch command (`BPF_MAP_*_BATCH`); its error, if any (`a.count` then says how
/// many entries it did).
///
/// # Safety
/// `a`'s key and value pointers cover `a.count` keys and values of the map's sizes.
unsafe fn batch(cmd: libc::c_long, a: &mut BatchAttr) -> Option<io::Error> {
    // SAFETY: the attr is a bpf_attr prefix; the buffers are the caller's promise.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            a as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    (r < 0).then(io::Error::last_os_error)
}

/// Every entry of a map by `BPF_MAP_LOOKUP_BATCH` (or `..._AND_DELETE_BATCH` with
/// `delete`, which empties a hash map as it reads it): keys and values, `value_size`
/// bytes each (per-CPU maps: the value rounded up to 8 bytes, times the possible CPUs).
pub fn lookup_batch(
    fd: RawFd,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
    delete: bool,
) -> io::Result<(Vec<u8>, Vec<u8>, usize)> {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    // Batches of at most 4096 entries: the buffers are made for this read alone.
    let n = lookup_batch_into(
        fd,
        (key_size, value_size),
        max_entries.min(4096),
        delete,
        &mut keys,
        &mut values,
    )?;
    keys.truncate(n * key_size);
    values.truncate(n * value_size);
    Ok((keys, values, n))
}

/// [`lookup_batch`] into buffers the caller keeps from one read to the next (a window
/// read then touches no fresh memory): returns the entries read, the first `n` keys and
/// values of `keys` and `values` (which may be longer). `sizes` is (key size, value
/// size). Batches hold `max_entries` entries (at least 64, at most 16 MiB): a map read
/// with its own size is read in one call, which never fails with ENOSPC (that needs a
/// bucket holding more entries than the batch's room).
pub fn lookup_batch_into(
    fd: RawFd,
    (key_size, value_size): (usize, usize),
    max_entries: u32,
    delete: bool,
    keys: &mut Vec<u8>,
    values: &mut Vec<u8>,
) -> io::Result<usize> {
    let per = (key_size + value_size).max(1);
    let chunk = ((16usize << 20) / per).clamp(64, max_entries.max(64) as usize);
    let mut n = 0usize;
    let (mut inb, mut outb) = ([0u8; 8], [0u8; 8]);
    let mut first = true;
    let cmd = if delete {
        BPF_MAP_LOOKUP_AND_DELETE_BATCH
    } else {
        BPF_MAP_LOOKUP_BATCH
    };
    loop {
        // (Grows only: a kept buffer is not zeroed again.)
        if keys.len() < (n + chunk) * key_size {
            keys.resize((n + chunk) * key_size, 0);
        }
        if values.len() < (n + chunk) * value_size {
            values.resize((n + chunk) * value_size, 0);
        }
        let mut a = BatchAttr {
            in_batch: if first { 0 } else { inb.as_ptr() as u64 },
            out_batch: outb.as_mut_ptr() as u64,
            keys: keys[n * key_size..].as_mut_ptr() as u64,
            values: values[n * value_size..].as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: the buffers hold `count` keys and values.
        let err = unsafe { batch(cmd, &mut a) };
        n += a.count as usize;
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => return Err(e),
        }
        inb = outb;
        first = false;
    }
    Ok(n)
}

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// Pops one value from a queue or stack map (`BPF_MAP_LOOKUP_AND_DELETE_ELEM` without a
/// key); `None` when it is empty.
pub fn map_pop(fd: RawFd, value_size: usize) -> io::Result<Option<Vec<u8>>> {
    let mut v = vec![0u8; value_size];
    let mut a = MapElemAttr {
        map_fd: fd as u32,
        key: 0,
        next_key: v.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut a) {
        Ok(()) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `value` at `key` (`BPF_MAP_UPDATE_ELEM`, any flag).
pub fn map_update(fd: RawFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: fd as u32,
        key: key.as_ptr() as u64,
        next_key: value.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a)
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Points a link at another program (`BPF_LINK_UPDATE`): the switch is atomic for new
/// packets, and does not wait for runs of the old program that have already started.
pub fn link_update(link_fd: RawFd, new_prog_fd: RawFd) -> io::Result<()> {
    let mut a = LinkUpdateAttr {
        link_fd: link_fd as u32,
        new_prog_fd: new_prog_fd as u32,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_LINK_UPDATE.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &mut a as *mut LinkUpdateAttr,
            std::mem::size_of::<LinkUpdateAttr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes a file durably: a synced temporary file renamed over it, then the directory
/// synced. Readable by its owner only (state may hold keys). Errors name the file.
pub fn write_synced(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let err = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    // A failure past this point leaves no temporary file behind.
    let written = f
        .write_all(data)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Writes `count` entries at once (`BPF_MAP_UPDATE_BATCH`): `keys` and `values` packed at
/// the map's key and value sizes.
pub fn update_batch(fd: RawFd, keys: &[u8], values: &[u8], count: usize) -> io::Result<()> {
    let mut done = 0usize;
    let (ks, vs) = (keys.len() / count.max(1), values.len() / count.max(1));
    while done < count {
        let mut a = BatchAttr {
            keys: keys[done * ks..].as_ptr() as u64,
            values: values[done * vs..].as_ptr() as u64,
            count: (count - done) as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: the buffers hold `count` keys and values from `done` on.
        if let Some(e) = unsafe { batch(BPF_MAP_UPDATE_BATCH, &mut a) } {
            return Err(e);
        }
        if a.count == 0 {
            return Err(io::Error::other("batch update wrote nothing"));
        }
        done += a.count as usize;
    }
    Ok(())
}

/// Values of `count` consecutive entries of an array map from index `start`
/// (`BPF_MAP_LOOKUP_BATCH`), `value_size` bytes each.
pub fn lookup_range(fd: RawFd, start: u32, count: u32, value_size: usize) -> io::Result<Vec<u8>> {
    let mut keys = vec![0u8; count as usize * 4];
    let mut values = vec![0u8; count as usize * value_size];
    let mut n = 0usize;
    let mut inb = start.wrapping_sub(1).to_ne_bytes();
    let mut outb = [0u8; 4];
    while n < count as usize {
        let mut a = BatchAttr {
            in_batch: if n == 0 && start == 0 {
                0
            } else {
                inb.as_ptr() as u64
            },
            out_batch: outb.as_mut_ptr() as u64,
            keys: keys[n * 4..].as_mut_ptr() as u64,
            values: values[n * value_size..].as_mut_ptr() as u64,
            count: (count as usize - n) as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: the buffers hold `count` keys and values from `n` on.
        let err = unsafe { batch(BPF_MAP_LOOKUP_BATCH, &mut a) };
        n += a.count as usize;
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => return Err(e),
        }
        if a.count == 0 {
            break;
        }
        inb = outb;
    }
    values.truncate(n * value_size);
    Ok(values)
}

/// A memory map of a `BPF_F_MMAPABLE` array's values (offset 0, shared with the kernel:
/// element `i` at `i` times the value size rounded up to 8 bytes).
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value.
unsafe impl Send for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping what `Mapped::new` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

impl Mapped {
    /// Maps the first `bytes` (rounded up to pages) of array `fd`'s values, for reading or
    /// also for writing. Fails on a map made without `BPF_F_MMAPABLE`.
    pub fn new(fd: RawFd, bytes: usize, writable: bool) -> io::Result<Mapped> {
        let page = 4096;
        let len = bytes.div_ceil(page).max(1) * page;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping a BPF array fd as its documentation says (offset 0, shared).
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    /// The start of the values.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr as *mut u8
    }
}

/// Arrays mapped into memory once and kept (mapping a large array puts every page of it
/// in place, so a mapping made for each write would cost more than the writes): by map
/// name, with the id of the map mapped, so that a map made again under its name is
/// mapped again.
#[derive(Default)]
pub struct Mappings(std::collections::HashMap<String, Mapping>);

/// One kept mapping of an array's values.
pub struct Mapping {
    id: u32,
    /// Bytes from one element to the next (the value size rounded up to 8).
    pub stride: usize,
    /// The array's value size.
    pub value_size: usize,
    /// The array's entries.
    pub entries: u32,
    m: Mapped,
}

impl Mapping {
    /// The start of the values.
    pub fn as_ptr(&self) -> *mut u8 {
        self.m.as_ptr()
    }
}

impl Mappings {
    /// The writable mapping of array `name` (`map`, whose info is `info`): the kept one
    /// while it is of the same map, else a new one; `None` when the array was not made
    /// `BPF_F_MMAPABLE`.
    pub fn writable(
        &mut self,
        name: &str,
        map: &aya::maps::MapData,
        info: &aya::maps::MapInfo,
    ) -> io::Result<Option<&Mapping>> {
        use std::os::fd::{AsFd, AsRawFd};
        if !matches!(self.0.get(name), Some(m) if m.id == info.id()) {
            self.0.remove(name);
            if info.map_flags() & statewall_common::maps::BPF_F_MMAPABLE == 0 {
                return Ok(None);
            }
            let value_size = info.value_size() as usize;
            let stride = value_size.div_ceil(8) * 8;
            let entries = info.max_entries();
            let fd = map.fd().as_fd().as_raw_fd();
            let m = Mapped::new(fd, entries as usize * stride, true)?;
            let id = info.id();
            self.0.insert(
                name.to_string(),
                Mapping {
                    id,
                    stride,
                    value_size,
                    entries,
                    m,
                },
            );
        }
        Ok(self.0.get(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    /// A new array of `n` u64 values (`flags`: map flags), opened as aya opens pins.
    fn array(n: u32, flags: u32) -> aya::maps::MapData {
        let attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: n,
            map_flags: flags,
            ..Default::default()
        };
        aya::maps::MapData::from_fd(map_create(&attr).expect("BPF_MAP_CREATE"))
            .expect("the new array")
    }

    /// Writes `v` at `i` through `m`'s kept mapping of `map`.
    fn write(m: &mut Mappings, map: &aya::maps::MapData, i: u32, v: u64) {
        let info = map.info().expect("map info");
        let w = m.writable("a", map, &info).unwrap().expect("mappable");
        assert!(i < w.entries && w.stride == 8 && w.value_size == 8);
        // SAFETY: `i` < entries, each an aligned u64.
        unsafe { (w.as_ptr().add(i as usize * w.stride) as *mut u64).write(v) };
    }

    fn read(map: &aya::maps::MapData, i: u32) -> u64 {
        let fd = map.fd().as_fd().as_raw_fd();
        let b = lookup_range(fd, i, 1, 8).expect("lookup");
        u64::from_ne_bytes(b[..8].try_into().unwrap())
    }

    #[test]
    fn a_kept_mapping_writes_the_map_now_under_its_name() {
        let mmapable = statewall_common::maps::BPF_F_MMAPABLE;
        let mut m = Mappings::default();
        let a = array(4, mmapable);
        write(&mut m, &a, 2, 7);
        write(&mut m, &a, 3, 9);
        assert_eq!((read(&a, 2), read(&a, 3)), (7, 9));
        // Another map under the same name (a map made again): mapped again, the first
        // one left as it was.
        let b = array(8, mmapable);
        write(&mut m, &b, 6, 5);
        assert_eq!((read(&b, 6), read(&a, 2), read(&a, 3)), (5, 7, 9));
        // Back to the first: its own memory again, not the second's.
        write(&mut m, &a, 1, 11);
        assert_eq!((read(&a, 1), read(&b, 1)), (11, 0));
        // An array made without BPF_F_MMAPABLE (as an older release pinned): no mapping.
        let c = array(4, 0);
        let info = c.info().unwrap();
        assert!(m.writable("a", &c, &info).unwrap().is_none());
    }
}
