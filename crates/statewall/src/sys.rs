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

/// Counts the keys of a hash-type map by walking it with `BPF_MAP_GET_NEXT_KEY`.
pub fn count_keys(fd: RawFd, key_size: usize) -> io::Result<u32> {
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
                std::mem::swap(&mut cur, &mut next);
                first = false;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(n),
            Err(e) => return Err(e),
        }
        if n > 100_000_000 {
            return Err(io::Error::other("map walk did not terminate"));
        }
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
