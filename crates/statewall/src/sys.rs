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
