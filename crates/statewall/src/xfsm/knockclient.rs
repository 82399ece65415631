//! The knock client, and derived knock sequences.
//!
//! [`knock`] sends a sequence the way knockd's `knock` client does: one TCP SYN per TCP
//! step (a non-blocking connect on a socket that is closed at once, so no handshake
//! completes and no data is sent), one UDP datagram per UDP step.
//!
//! [`derive()`] turns a shared secret and a counter into a sequence, so that the ports to
//! knock change over time ([`time_counter`]) or with every use (a counter both sides keep).
//! The client and the daemon call the same function, so they agree by construction.

use crate::xfsm::error::XfsmError;
use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::types::{PortSpec, Step};

/// Domain separation prefix of the derived-sequence MAC (its version is part of it).
const DERIVE_LABEL: &[u8] = b"statewall-knock-v1";

/// Longest derived sequence: a SHA-256 output gives 16 two-byte ports.
pub const DERIVE_MAX_STEPS: usize = 16;

/// Lowest derived port; derived ports are never privileged ones.
const DERIVE_PORT_BASE: u32 = 1024;

/// Number of derivable ports (1024..=65535).
const DERIVE_PORT_SPAN: u32 = 65536 - DERIVE_PORT_BASE;

/// Knocks `steps` on `host` in order, waiting `delay` between two steps.
///
/// A TCP step is one SYN (non-blocking connect, then close); a UDP step is one datagram
/// carrying `udp_payload` (empty when `None`). A refused or pending connection is the
/// expected outcome of a knock, not an error; an error is returned when a packet could
/// not be sent at all (no route, no socket), naming the step.
pub fn knock(
    host: IpAddr,
    steps: &[Step],
    delay: Duration,
    udp_payload: Option<&[u8]>,
) -> io::Result<()> {
    for (i, step) in steps.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let target = SocketAddr::new(host, step.0.port);
        let sent = if step.0.proto == 17 {
            send_udp(target, udp_payload.unwrap_or(&[]))
        } else {
            send_syn(target)
        };
        sent.map_err(|e| io::Error::new(e.kind(), format!("knock {step} on {host}: {e}")))?;
    }
    Ok(())
}

/// Sends one datagram from an ephemeral port.
fn send_udp(target: SocketAddr, payload: &[u8]) -> io::Result<()> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    sock.send_to(payload, target)?;
    Ok(())
}

/// Starts a TCP connection without waiting for it and drops the socket: the kernel sends
/// the SYN during `connect` and forgets the connection on `close` (no RST, no retransmit).
fn send_syn(target: SocketAddr) -> io::Result<()> {
    // Build the address in the storage type the kernel expects for the family.
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let (family, len) = match target {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            (libc::AF_INET, std::mem::size_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            (libc::AF_INET6, std::mem::size_of::<libc::sockaddr_in6>())
        }
    };
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we own; storage holds a valid address of `len` bytes.
    let r = unsafe {
        libc::connect(
            fd,
            (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    let err = (r != 0).then(io::Error::last_os_error);
    // SAFETY: fd is ours and closed exactly once.
    unsafe { libc::close(fd) };
    match err {
        None => Ok(()),
        Some(e) => match e.raw_os_error() {
            // The SYN is out (pending) or was answered (refused, or already connected on
            // loopback): the knock happened.
            Some(libc::EINPROGRESS | libc::ECONNREFUSED | libc::EALREADY | libc::EINTR) => Ok(()),
            _ => Err(e),
        },
    }
}

/// Derives a knock sequence from a shared secret and a counter.
///
/// `d = HMAC-SHA256(key = secret, message = "statewall-knock-v1" || counter as 8 bytes
/// big-endian)`; step `i` is port `1024 + (u16 from d[2i], d[2i+1] big-endian) % 64512`
/// with protocol `proto` (6 = TCP, 17 = UDP). Ports are therefore in 1024..=65535.
///
/// # Panics
///
/// If `steps` is above [`DERIVE_MAX_STEPS`] or `proto` is neither 6 nor 17 (callers
/// validate both first: they come from the configuration or the command line).
pub fn derive(secret: &[u8], counter: u64, steps: usize, proto: u8) -> Vec<Step> {
    assert!(
        steps <= DERIVE_MAX_STEPS,
        "derive: {steps} steps, at most {DERIVE_MAX_STEPS}"
    );
    assert!(
        proto == 6 || proto == 17,
        "derive: protocol {proto}, 6 (tcp) or 17 (udp)"
    );
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts a key of any length");
    mac.update(DERIVE_LABEL);
    mac.update(&counter.to_be_bytes());
    let d = mac.finalize().into_bytes();
    (0..steps)
        .map(|i| {
            let raw = u16::from_be_bytes([d[2 * i], d[2 * i + 1]]) as u32;
            let port = (DERIVE_PORT_BASE + raw % DERIVE_PORT_SPAN) as u16;
            Step(PortSpec { proto, port })
        })
        .collect()
}

/// The counter of time-based knocking: the number of whole periods since the Unix epoch.
///
/// # Panics
///
/// If `period_secs` is zero.
pub fn time_counter(unix_secs: u64, period_secs: u64) -> u64 {
    assert!(period_secs > 0, "time_counter: a period of 0 seconds");
    unix_secs / period_secs
}

/// Reads a shared secret: the file's bytes with leading and trailing whitespace removed.
/// An unreadable or empty file is an error naming the file.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, XfsmError> {
    let raw = std::fs::read(path)
        .map_err(|e| XfsmError::File(format!("{}: cannot read: {e}", path.display())))?;
    let secret = raw.trim_ascii();
    if secret.is_empty() {
        return Err(XfsmError::File(format!(
            "{}: the secret is empty",
            path.display()
        )));
    }
    Ok(secret.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(v: &[Step]) -> Vec<u16> {
        v.iter().map(|s| s.0.port).collect()
    }

    #[test]
    fn derive_is_deterministic() {
        let a = derive(b"secret", 42, 8, 6);
        let b = derive(b"secret", 42, 8, 6);
        assert_eq!(a, b);
        assert_ne!(ports(&a), ports(&derive(b"secret", 43, 8, 6)));
        assert_ne!(ports(&a), ports(&derive(b"secreT", 42, 8, 6)));
        // A shorter sequence is a prefix of a longer one.
        assert_eq!(derive(b"secret", 42, 3, 6)[..], a[..3]);
        assert!(derive(b"secret", 42, 0, 6).is_empty());
    }

    #[test]
    fn derive_known_answers() {
        // Computed independently with Python's hmac and hashlib.
        assert_eq!(
            ports(&derive(b"statewall-test-secret", 1_234_567, 4, 6)),
            [56333, 39841, 33748, 28344]
        );
        assert_eq!(
            ports(&derive(b"statewall-test-secret", 0, 16, 17)),
            [
                24565, 32324, 45567, 1075, 9278, 14697, 40324, 4161, 9469, 22829, 38492, 24484,
                61520, 20103, 8023, 39166
            ]
        );
        assert_eq!(ports(&derive(b"k", u64::MAX, 3, 6)), [54094, 9536, 20108]);
        assert!(derive(b"k", 7, 5, 17).iter().all(|s| s.0.proto == 17));
        assert!(derive(b"k", 7, 5, 6).iter().all(|s| s.0.proto == 6));
    }

    #[test]
    fn derived_ports_in_range() {
        for counter in 0..2000u64 {
            for s in derive(b"range", counter, DERIVE_MAX_STEPS, 6) {
                assert!(s.0.port >= 1024, "{s}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "at most 16")]
    fn derive_refuses_long_sequences() {
        derive(b"k", 0, 17, 6);
    }

    #[test]
    fn time_counter_divides() {
        assert_eq!(time_counter(0, 30), 0);
        assert_eq!(time_counter(29, 30), 0);
        assert_eq!(time_counter(30, 30), 1);
        assert_eq!(time_counter(1_700_000_000, 60), 28_333_333);
    }

    #[test]
    fn secret_files() {
        let dir = std::env::temp_dir().join(format!("statewall-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "  s3cret value\n").unwrap();
        assert_eq!(read_secret(&f).unwrap(), b"s3cret value");
        std::fs::write(&f, " \n\t").unwrap();
        let e = read_secret(&f).unwrap_err().to_string();
        assert!(
            e.contains(&f.display().to_string()) && e.contains("empty"),
            "{e}"
        );
        let missing = dir.join("missing");
        let e = read_secret(&missing).unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn knocks_reach_loopback() {
        // A UDP listener sees the datagram; a TCP step to a listener is a SYN whose
        // connection is abandoned.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let udp_port = rx.local_addr().unwrap().port();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        let steps = [
            Step(PortSpec {
                proto: 6,
                port: tcp_port,
            }),
            Step(PortSpec {
                proto: 17,
                port: udp_port,
            }),
        ];
        knock(
            "127.0.0.1".parse().unwrap(),
            &steps,
            Duration::from_millis(1),
            Some(b"hi"),
        )
        .unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        drop(tcp);
        // Nothing listens any more: the SYN is refused, which is still a knock sent.
        knock(
            "127.0.0.1".parse().unwrap(),
            &steps[..1],
            Duration::ZERO,
            None,
        )
        .unwrap();
    }
}
