//! A WebSocket (RFC 6455) server and client, small, for the mining dataset's long-lived
//! benign sessions: a dashboard that pushes updates every few seconds and a client that
//! sends a message now and then and answers pings; the server pings as keepalive.
//!
//! The handshake is the RFC's (`Sec-WebSocket-Accept` is the base64 SHA-1 of the key and
//! the RFC's GUID, checked by the client); frames are unfragmented text, ping, pong and
//! close, client frames masked, payloads under 64 KiB.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use base64::Engine;
use sha1::Digest;

use crate::rng::Rng;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// The `Sec-WebSocket-Accept` of a key.
pub fn accept_of(key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// One frame, masked with `mask` when given (client to server).
pub fn frame(op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | op];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n => {
            assert!(
                n < 1 << 16,
                "a frame of {n} bytes: this module sends less than 64 KiB"
            );
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Reads frames out of `buf`: each (opcode, unmasked payload); the bytes of an incomplete
/// frame stay in `buf`.
pub fn frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 2 {
            return out;
        }
        let op = buf[0] & 0x0f;
        let masked = buf[1] & 0x80 != 0;
        let (len, mut at) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            126 => return out,
            127 => {
                // Larger than this module ever sends: drop what is buffered.
                buf.clear();
                return out;
            }
            n => (n as usize, 2),
        };
        let key = if masked {
            if buf.len() < at + 4 {
                return out;
            }
            at += 4;
            Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
        } else {
            None
        };
        if buf.len() < at + len {
            return out;
        }
        let mut p = buf[at..at + len].to_vec();
        if let Some(k) = key {
            p.iter_mut().enumerate().for_each(|(i, b)| *b ^= k[i % 4]);
        }
        buf.drain(..at + len);
        out.push((op, p));
    }
}

fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut b = [0u8; 4096];
    match s.read(&mut b) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&b[..n]);
            Ok(true)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(true),
        Err(e) => Err(e),
    }
}

fn jitter(rng: &mut Rng, mean: f64) -> Duration {
    Duration::from_secs_f64(mean * (0.6 + 0.8 * rng.range(0, 1000) as f64 / 1000.0))
}

/// How a session paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Mean seconds between the server's updates.
    pub update: f64,
    /// Seconds between the server's pings.
    pub ping: f64,
    /// Mean seconds between the client's messages.
    pub message: f64,
}

fn serve(mut s: TcpStream, timing: Timing, seed: u64, stop: &AtomicBool) -> std::io::Result<()> {
    let mut rng = Rng(seed);
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if !read_some(&mut s, &mut buf)? || stop.load(Ordering::Relaxed) || buf.len() > 8192 {
            return Ok(());
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    // (Frames the client sent right behind its request stay.)
    buf.drain(..end);
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "no Sec-WebSocket-Key"))?;
    write!(
        s,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_of(&key)
    )?;
    let mut next_update = Instant::now() + jitter(&mut rng, timing.update);
    let mut next_ping = Instant::now() + Duration::from_secs_f64(timing.ping);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_update {
            seq += 1;
            let fill = "x".repeat(rng.range(20, 400) as usize);
            let msg = format!(
                "{{\"seq\":{seq},\"cpu\":{},\"note\":\"{fill}\"}}",
                rng.range(0, 100)
            );
            s.write_all(&frame(TEXT, msg.as_bytes(), None))?;
            next_update = now + jitter(&mut rng, timing.update);
        }
        if now >= next_ping {
            s.write_all(&frame(PING, b"keepalive", None))?;
            next_ping = now + Duration::from_secs_f64(timing.ping);
        }
        if !read_some(&mut s, &mut buf)? {
            return Ok(());
        }
        for (op, p) in frames(&mut buf) {
            match op {
                PING => s.write_all(&frame(PONG, &p, None))?,
                CLOSE => {
                    // The RFC's closing handshake: a Close answers a Close.
                    let _ = s.write_all(&frame(CLOSE, &p, None));
                    return Ok(());
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs a server on `listener` until `stop`: a thread per client.
pub fn server(listener: TcpListener, timing: Timing, seed: u64, stop: &AtomicBool) {
    crate::stratum::serve_each(listener, seed, stop, |s, seed| {
        let _ = serve(s, timing, seed, stop);
    });
}

/// A client from `from` to the server at `to` until `stop`, counting the updates it
/// receives in `updates` as they come.
pub fn client(
    from: SocketAddr,
    to: SocketAddr,
    timing: Timing,
    seed: u64,
    stop: &AtomicBool,
    updates: &AtomicU64,
) -> std::io::Result<()> {
    let mut rng = Rng(seed);
    let mut s = crate::stratum::connect_from(from, to)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let key_bytes: Vec<u8> = (0..16).map(|_| rng.range(0, 255) as u8).collect();
    let key = base64::engine::general_purpose::STANDARD.encode(&key_bytes);
    write!(
        s,
        "GET /live HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !read_some(&mut s, &mut buf)? || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let want = accept_of(&key);
    if !head.starts_with("HTTP/1.1 101") || !head.contains(&want) {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("not a WebSocket answer: {head:?}"),
        ));
    }
    buf.drain(..end);
    let mut next = Instant::now() + jitter(&mut rng, timing.message);
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            let msg = format!(
                "{{\"ack\":{},\"view\":\"{}\"}}",
                updates.load(Ordering::Relaxed),
                "y".repeat(rng.range(5, 60) as usize)
            );
            let mask = (rng.next_u64() as u32).to_be_bytes();
            s.write_all(&frame(TEXT, msg.as_bytes(), Some(mask)))?;
            next = Instant::now() + jitter(&mut rng, timing.message);
        }
        if !read_some(&mut s, &mut buf)? {
            break;
        }
        for (op, p) in frames(&mut buf) {
            match op {
                TEXT => {
                    updates.fetch_add(1, Ordering::Relaxed);
                }
                PING => {
                    let mask = (rng.next_u64() as u32).to_be_bytes();
                    s.write_all(&frame(PONG, &p, Some(mask)))?;
                }
                CLOSE => return Ok(()),
                _ => {}
            }
        }
    }
    let _ = s.write_all(&frame(CLOSE, &[], Some([1, 2, 3, 4])));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfcs_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            accept_of("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_round_trip_masked_or_not_and_wait_for_the_rest() {
        let long = vec![b'z'; 300];
        let mut buf = frame(TEXT, b"hello", Some([9, 8, 7, 6]));
        buf.extend(frame(PING, &long, None));
        let cut = buf.len() - 10;
        let rest = buf.split_off(cut);
        let got = frames(&mut buf);
        assert_eq!(got, vec![(TEXT, b"hello".to_vec())]);
        buf.extend(rest);
        assert_eq!(frames(&mut buf), vec![(PING, long)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_client_receives_updates_over_a_real_handshake() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let t = Timing {
            update: 0.05,
            ping: 0.1,
            message: 0.05,
        };
        let updates = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| server(l, t, 3, &stop));
            let c = s.spawn(|| client("127.0.0.1:0".parse().unwrap(), to, t, 4, &stop, &updates));
            std::thread::sleep(Duration::from_millis(1000));
            stop.store(true, Ordering::Relaxed);
            c.join().unwrap().unwrap()
        });
        let got = updates.load(Ordering::Relaxed);
        assert!(got >= 3, "{got} updates");
    }
}
