//! The admins' addresses: where the users logged in to this host came from. With
//! `[detect] allow_admins` (the default) the remote addresses of the login records in
//! utmp (`/run/utmp`: sshd writes one for each session with a terminal, and removes it at
//! logout) join the allowlist when the config is applied and, while the daemon runs, within
//! a second of a login; a reload lets go of those that logged out. So an admin's own
//! address cannot be blocked by a flood spoofing it, nor cut off by a mistaken detection
//! while they work.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Prefix;

/// Where login records are.
pub const UTMP: &str = "/run/utmp";

/// The remote addresses of the user sessions in utmp's bytes `data` (records of
/// `struct utmpx`, `ut_type` USER_PROCESS), each as a host prefix, once each, in order:
/// `ut_addr_v6` (an IPv4 address in its first word, the others zero), else `ut_host`
/// when it is an address (a name is not resolved: a session from a name gives none).
pub fn logged_in(data: &[u8]) -> Vec<Prefix> {
    let size = std::mem::size_of::<libc::utmpx>();
    let mut out: Vec<Prefix> = Vec::new();
    for rec in data.chunks_exact(size) {
        // SAFETY: `rec` holds `size` bytes; utmpx is plain data (read unaligned).
        let u: libc::utmpx = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
        if u.ut_type != libc::USER_PROCESS {
            continue;
        }
        let mut b = [0u8; 16];
        for (i, w) in u.ut_addr_v6.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let addr = if b == [0; 16] {
            let host: Vec<u8> = u
                .ut_host
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            match String::from_utf8_lossy(&host).parse::<IpAddr>() {
                Ok(a) => a,
                Err(_) => continue,
            }
        } else if b[4..] == [0; 12] {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(b))
        };
        // (An IPv4-mapped address is its IPv4 address.)
        let p = Prefix::host(addr);
        // A local login (the loopback) is no address a packet of the watched interfaces
        // comes from.
        if p.addr.is_loopback() || p.addr.is_unspecified() {
            continue;
        }
        Prefix::join(&mut out, [p]);
    }
    out
}

/// The admins' addresses now ([`logged_in`] of [`UTMP`]); none when there is no utmp.
pub fn admins() -> Vec<Prefix> {
    std::fs::read(UTMP)
        .map(|d| logged_in(&d))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ty: i16, addr: [u8; 16], host: &str) -> Vec<u8> {
        // SAFETY: utmpx is plain data; all zero is a valid (empty) record.
        let mut u: libc::utmpx = unsafe { std::mem::zeroed() };
        u.ut_type = ty;
        for (i, w) in u.ut_addr_v6.iter_mut().enumerate() {
            *w = i32::from_ne_bytes(addr[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for (d, s) in u.ut_host.iter_mut().zip(host.bytes()) {
            *d = s as libc::c_char;
        }
        let p = &u as *const libc::utmpx as *const u8;
        // SAFETY: the record's bytes.
        unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<libc::utmpx>()) }.to_vec()
    }

    #[test]
    fn user_sessions_give_their_remote_addresses() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[192, 0, 2, 7]);
        let v6: [u8; 16] = "2001:db8::9".parse::<Ipv6Addr>().unwrap().octets();
        let mut lo = [0u8; 16];
        lo[..4].copy_from_slice(&[127, 0, 0, 1]);
        let data: Vec<u8> = [
            record(libc::USER_PROCESS, v4, "192.0.2.7"),
            record(libc::DEAD_PROCESS, [9; 16], "198.51.100.1"),
            record(libc::USER_PROCESS, v6, "admin.example"),
            record(libc::USER_PROCESS, [0; 16], "198.51.100.20"),
            record(libc::USER_PROCESS, [0; 16], "admin.example"),
            record(libc::USER_PROCESS, lo, ""),
            record(libc::LOGIN_PROCESS, v4, ""),
            record(libc::USER_PROCESS, v4, "again"),
        ]
        .concat();
        let got: Vec<String> = logged_in(&data).iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["192.0.2.7/32", "2001:db8::9/128", "198.51.100.20/32"]);
        // A cut record is not read.
        assert!(logged_in(&data[..100]).is_empty());
    }
}
