//! HTTP goodput for the goodput-under-attack rows: a minimal HTTP/1.1 server in the server
//! namespace that answers every request with the same 1 MiB body and closes the
//! connection, and a client in the client namespace that fetches it over and over (a new
//! connection each time, as browsers and API clients do) for a fixed time. The goodput is
//! the body bytes received per second; a connection the flood starves (no answer within
//! a second) counts nothing.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::netns::Pair;

/// The server's port.
pub const HTTP_PORT: u16 = 8080;
/// Bytes of every answer's body.
const BODY: usize = 1 << 20;

/// The server thread, stopped (and joined) when dropped.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Starts the server on the pair's server address (inside its namespace).
    pub fn start(pair: &Pair) -> anyhow::Result<Self> {
        let (ns, addr) = (pair.server.name.clone(), pair.server_v4);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let r = statewall::engine::netns::in_netns(Some(&ns), || {
                let l = TcpListener::bind((addr, HTTP_PORT))?;
                l.set_nonblocking(true)?;
                let _ = tx.send(Ok(()));
                serve(&l, &st);
                Ok::<(), std::io::Error>(())
            });
            if let Err(e) | Ok(Err(e)) = r {
                let _ = tx.send(Err(e));
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("the HTTP server did not start")?
            .context("binding the HTTP server")?;
        Ok(HttpServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers connections one at a time until `stop`.
fn serve(l: &TcpListener, stop: &AtomicBool) {
    let body = vec![b'x'; BODY];
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY}\r\nConnection: close\r\n\r\n"
    );
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                // The request: read up to the blank line.
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(head.as_bytes())
                    .and_then(|_| s.write_all(&body));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// One GET: the body bytes received (0 when the connection or the answer failed).
fn fetch(to: SocketAddr) -> u64 {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: server\r\n\r\n")
        .is_err()
    {
        return 0;
    }
    let mut got = Vec::with_capacity(BODY + 256);
    let _ = s.read_to_end(&mut got);
    match got.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (got.len() - at - 4) as u64,
        None => 0,
    }
}

/// HTTP goodput in Gbit/s: GETs one after another for `secs` from the client namespace.
pub fn goodput(pair: &Pair, secs: u32) -> anyhow::Result<f64> {
    let to = SocketAddr::from((pair.server_v4, HTTP_PORT));
    let bytes = pair.client.run(|| {
        let t0 = Instant::now();
        let mut bytes = 0u64;
        while t0.elapsed() < Duration::from_secs(secs as u64) {
            bytes += fetch(to);
        }
        (bytes, t0.elapsed().as_secs_f64())
    });
    Ok(bytes.0 as f64 * 8.0 / bytes.1 / 1e9)
}
