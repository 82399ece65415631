//! A Stratum (v1) mining pool and miner, written after the public protocol, for the mining
//! dataset: Debian ships no miner. Line-delimited JSON-RPC over TCP:
//! - the miner subscribes (`mining.subscribe`: the pool answers with its subscriptions, an
//!   extranonce1 and the extranonce2 size) and authorizes a worker (`mining.authorize`);
//! - the pool sends a difficulty (`mining.set_difficulty`) and a job (`mining.notify`: job
//!   id, previous hash, the two halves of the coinbase, a merkle branch, version, nbits,
//!   ntime, clean-jobs), then a new job every `job` seconds or so, and now and then a new
//!   difficulty;
//! - the miner submits shares (`mining.submit`: worker, job id, extranonce2, ntime, nonce)
//!   at exponentially distributed intervals of mean `share` seconds, as a miner whose
//!   hash rate is steady finds them; the pool accepts each (`result: true`).
//!
//! Nothing is hashed: only the traffic matters. Both ends stop when `stop` is set.

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::rng::Rng;

/// How a pool paces its jobs.
#[derive(Clone, Copy, Debug)]
pub struct PoolTiming {
    /// Mean seconds between jobs (each drawn within +-40%).
    pub job: f64,
    /// Hashes in a job's merkle branch (the notify's size grows with it).
    pub branch: usize,
}

/// How a miner paces its shares.
#[derive(Clone, Copy, Debug)]
pub struct MinerTiming {
    /// Mean seconds between shares.
    pub share: f64,
}

fn hex(rng: &mut Rng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.range(0, 255)))
        .collect()
}

/// Seconds to the next event of a Poisson process of mean interval `mean`.
fn exp_interval(rng: &mut Rng, mean: f64) -> Duration {
    let u = (rng.range(1, 1_000_000) as f64) / 1_000_001.0;
    Duration::from_secs_f64((-u.ln() * mean).min(mean * 8.0))
}

fn within(rng: &mut Rng, mean: f64, spread: f64) -> Duration {
    let f = 1.0 - spread + 2.0 * spread * (rng.range(0, 1000) as f64 / 1000.0);
    Duration::from_secs_f64(mean * f)
}

fn notify(rng: &mut Rng, job: u64, branch: usize, clean: bool) -> String {
    let merkle: Vec<String> = (0..branch)
        .map(|_| format!("\"{}\"", hex(rng, 32)))
        .collect();
    let ntime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (c1, c2) = (
        50 + rng.range(0, 20) as usize,
        40 + rng.range(0, 20) as usize,
    );
    format!(
        "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"{job:x}\",\"{}\",\"{}\",\"{}\",[{}],\"20000000\",\"1703{}\",\"{ntime:08x}\",{clean}]}}\n",
        hex(rng, 32),
        hex(rng, c1),
        hex(rng, c2),
        merkle.join(","),
        hex(rng, 2),
    )
}

/// One miner's connection, on the pool's side.
fn serve(stream: TcpStream, timing: PoolTiming, seed: u64, stop: &AtomicBool) {
    let mut rng = Rng(seed);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_nodelay(true);
    // A connection the pool ends is reset, not closed: nothing of it is retransmitted
    // afterwards (a test that blocks the pool sees its drops end with the miner).
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut input = BufReader::new(stream);
    let mut line = String::new();
    let mut authorized = false;
    let mut job = rng.range(1, 0xffff);
    let mut next_job = Instant::now();
    let mut next_diff = Instant::now() + within(&mut rng, timing.job * 6.0, 0.5);
    while !stop.load(Ordering::Relaxed) {
        if authorized && Instant::now() >= next_job {
            job += 1;
            let clean = rng.range(0, 3) == 0;
            if out
                .write_all(notify(&mut rng, job, timing.branch, clean).as_bytes())
                .is_err()
            {
                return;
            }
            next_job = Instant::now() + within(&mut rng, timing.job, 0.4);
        }
        if authorized && Instant::now() >= next_diff {
            let d = 1u64 << rng.range(10, 16);
            let msg =
                format!("{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{d}]}}\n");
            if out.write_all(msg.as_bytes()).is_err() {
                return;
            }
            next_diff = Instant::now() + within(&mut rng, timing.job * 6.0, 0.5);
        }
        match input.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {}
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        let req: serde_json::Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(_) => return,
        };
        line.clear();
        let id = &req["id"];
        let answer = match req["method"].as_str() {
            Some("mining.subscribe") => format!(
                "{{\"id\":{id},\"result\":[[[\"mining.set_difficulty\",\"{}\"],[\"mining.notify\",\"{}\"]],\"{}\",4],\"error\":null}}\n",
                hex(&mut rng, 16),
                hex(&mut rng, 16),
                hex(&mut rng, 4)
            ),
            Some("mining.authorize") => {
                authorized = true;
                next_job = Instant::now() + Duration::from_millis(50);
                let d = 1u64 << rng.range(10, 16);
                format!(
                    "{{\"id\":{id},\"result\":true,\"error\":null}}\n{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{d}]}}\n"
                )
            }
            Some("mining.submit") => format!("{{\"id\":{id},\"result\":true,\"error\":null}}\n"),
            _ => format!(
                "{{\"id\":{id},\"result\":null,\"error\":[20,\"Unknown method\",null]}}\n"
            ),
        };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Accepts on `listener` until `stop`, each connection served by `serve` on a thread of its
/// own with a seed of its own (drawn from `seed`); returns once every thread has ended.
pub fn serve_each(
    listener: TcpListener,
    seed: u64,
    stop: &AtomicBool,
    serve: impl Fn(TcpStream, u64) + Sync,
) {
    listener
        .set_nonblocking(true)
        .expect("a listener goes non-blocking");
    let serve = &serve;
    std::thread::scope(|s| {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    n += 1;
                    let seed = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    s.spawn(move || serve(stream, seed));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
}

/// Runs a pool on `listener` until `stop`: a thread per miner.
pub fn pool(listener: TcpListener, timing: PoolTiming, seed: u64, stop: &AtomicBool) {
    serve_each(listener, seed, stop, |s, seed| serve(s, timing, seed, stop));
}

/// Connects from `from` (an address of this namespace) to the pool at `pool`.
pub fn connect_from(from: SocketAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.bind(&from.into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(3))?;
    Ok(s.into())
}

/// Mines at the pool `to` from `from` until `stop` (or the pool hangs up), counting the
/// shares the pool accepted in `accepted` as they are.
pub fn miner(
    from: SocketAddr,
    to: SocketAddr,
    worker: &str,
    timing: MinerTiming,
    seed: u64,
    stop: &AtomicBool,
    accepted: &AtomicU64,
) -> std::io::Result<()> {
    let mut rng = Rng(seed);
    let stream = connect_from(from, to)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(
        b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"statewall-miner/1.0\"]}\n",
    )?;
    out.write_all(
        format!("{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"{worker}\",\"x\"]}}\n")
            .as_bytes(),
    )?;
    let mut id = 3u64;
    let mut job: Option<String> = None;
    let mut next_share = Instant::now() + exp_interval(&mut rng, timing.share);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_share {
            if let Some(j) = &job {
                let ntime = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let msg = format!(
                    "{{\"id\":{id},\"method\":\"mining.submit\",\"params\":[\"{worker}\",\"{j}\",\"{}\",\"{ntime:08x}\",\"{}\"]}}\n",
                    hex(&mut rng, 4),
                    hex(&mut rng, 4)
                );
                out.write_all(msg.as_bytes())?;
                id += 1;
            }
            next_share = Instant::now() + exp_interval(&mut rng, timing.share);
        }
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with('\n') => {}
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        }
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
        line.clear();
        if v["method"] == "mining.notify" {
            job = v["params"][0].as_str().map(String::from);
        } else if v["id"].as_u64().is_some_and(|i| i >= 3) && v["result"] == true {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miner_gets_jobs_and_its_shares_are_accepted() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let pool_timing = PoolTiming {
            job: 0.2,
            branch: 3,
        };
        let accepted = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| pool(l, pool_timing, 7, &stop));
            let m = s.spawn(|| {
                miner(
                    "127.0.0.1:0".parse().unwrap(),
                    to,
                    "w.1",
                    MinerTiming { share: 0.05 },
                    9,
                    &stop,
                    &accepted,
                )
            });
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
            // (The pool may reset the connection before the miner sees `stop`.)
            if let Err(e) = m.join().unwrap() {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            }
        });
        let shares = accepted.load(Ordering::Relaxed);
        // About 30 shares in 1.5 s at 20 a second, after the first job (at most 8 means).
        assert!(shares >= 5, "{shares} shares accepted");
    }
}
