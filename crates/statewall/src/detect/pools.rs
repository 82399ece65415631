//! Known miners, for mining detection: a host the model has found mining at a pool (a
//! session of it to the server, taken for mining) stays a miner at that pool for the next
//! `n` windows (the model's history), and each of its sessions to that pool (the same
//! address, port and protocol) is mining in that time, its first window included. The
//! model needs a session's own pattern over at least two windows; a miner that has just
//! reconnected, and whose hash rate finds no share for a minute or more, shows only the
//! pool's job pushes, which a server pushing updates to a quiet client can show too. Its
//! earlier sessions told the model what it is doing.
//!
//! A pair is remembered per host, not per pool: a pool's other hosts are judged on their
//! own sessions, so that one benign session taken for mining does not take the server's
//! other clients along (the block of `enforce` does drop what the server sends to all).
//! Only the model's verdicts make a pair known or keep it known: one the model stops
//! finding is forgotten `n` windows later, whatever sessions of it remain.
//!
//! Live ([`super::live::Live::window`]) and offline (`statewall detect eval`, through
//! [`super::learn::evaluate`]) go through [`Pools::window`] alike.

use std::collections::HashMap;

use statewall_common::monitor::SessKey;

use super::windows::Sample;
use crate::types::Seeded;

/// A client and the server's end of a session: family, client address, server address,
/// server port, protocol.
type Pair = (u8, [u8; 16], [u8; 16], u16, u8);

/// The pair of session `k` whose server address is `server`.
fn pair(k: &SessKey, server: &[u8; 16]) -> Pair {
    let (client, port) = if *server == k.saddr {
        (k.daddr, k.sport)
    } else {
        (k.saddr, k.dport)
    };
    (k.family, client, *server, port, k.proto)
}

/// The (host, pool) pairs the model found in the last windows.
pub struct Pools {
    /// Windows a pair stays known after the model last found a session of it.
    memory: u64,
    /// Each known pair and the window the model last found it in.
    known: HashMap<Pair, u64, Seeded>,
}

impl Pools {
    /// No pair known yet; pairs are remembered for `memory` windows (at least 1).
    pub fn new(memory: usize) -> Pools {
        Pools {
            memory: memory.max(1) as u64,
            known: HashMap::default(),
        }
    }

    /// Pairs it knows.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// One window's samples (all of window `w`) and the model's verdicts on them: the
    /// verdicts are kept, and a sample the model passed whose client and server are a
    /// known pair becomes mining. Returns the samples turned (by index). `server` gives a
    /// session's server address (the key's `daddr` when it gives none).
    pub fn window(
        &mut self,
        w: u64,
        samples: &[Sample],
        server: impl Fn(&SessKey) -> Option<[u8; 16]>,
        verdicts: &mut [bool],
    ) -> Vec<usize> {
        let end = |k: &SessKey| pair(k, &server(k).unwrap_or(k.daddr));
        for (s, v) in samples.iter().zip(verdicts.iter()) {
            if *v {
                self.known.insert(end(&s.key), w);
            }
        }
        let memory = self.memory;
        self.known
            .retain(|_, last| w.saturating_sub(*last) <= memory);
        let mut turned = Vec::new();
        for (i, (s, v)) in samples.iter().zip(verdicts.iter_mut()).enumerate() {
            if !*v && self.known.contains_key(&end(&s.key)) {
                *v = true;
                turned.push(i);
            }
        }
        turned
    }
}

/// Runs [`Pools::window`] over samples in window order (as `from_packets` makes them),
/// a window at a time; `memory` as for [`Pools::new`]; `server` gives a session's server
/// address in a window, as the monitor found it there (live, each window's read decides
/// it anew). Returns the samples turned.
pub fn over_windows(
    samples: &[Sample],
    memory: usize,
    server: impl Fn(usize, &SessKey) -> Option<[u8; 16]>,
    verdicts: &mut [bool],
) -> Vec<usize> {
    let mut pools = Pools::new(memory);
    let mut turned = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let w = samples[i].window;
        let mut j = i;
        while j < samples.len() && samples[j].window == w {
            j += 1;
        }
        let t = pools.window(
            w as u64,
            &samples[i..j],
            |k| server(w, k),
            &mut verdicts[i..j],
        );
        turned.extend(t.into_iter().map(|t| t + i));
        i = j;
    }
    turned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: u8, sport: u16, pool: u8, dport: u16) -> SessKey {
        let mut k = SessKey {
            family: 4,
            proto: 6,
            sport,
            dport,
            ..Default::default()
        };
        k.saddr[..4].copy_from_slice(&[10, 0, 0, client]);
        k.daddr[..4].copy_from_slice(&[10, 0, 0, pool]);
        k
    }

    fn sample(key: SessKey, window: usize) -> Sample {
        Sample {
            key,
            window,
            packets: 3,
            x: Vec::new(),
        }
    }

    #[test]
    fn a_miner_the_model_found_takes_its_sessions_to_that_pool_for_its_memory() {
        let found = key(1, 40000, 3, 3333);
        let again = key(1, 40001, 3, 3333);
        let other_client = key(2, 41000, 3, 3333);
        let other_port = key(1, 41001, 3, 8080);
        let other_host = key(1, 41002, 4, 3333);
        // The pool's address is the key's saddr here: its port is then sport, the client
        // the daddr.
        let reversed = key(3, 3333, 1, 42000);
        let server = |k: &SessKey| {
            let mut s = [0u8; 16];
            s[..4].copy_from_slice(&[10, 0, 0, 3]);
            if k.saddr == s || k.daddr == s {
                Some(s)
            } else {
                None
            }
        };
        let mut p = Pools::new(2);
        // Window 0: the model finds the miner; its other session in the same window is
        // turned, another client's to the same pool is not.
        let w0 = [sample(found, 0), sample(again, 0), sample(other_client, 0)];
        let mut v = [true, false, false];
        assert_eq!(p.window(0, &w0, server, &mut v), [1]);
        assert_eq!(v, [true, true, false]);
        assert_eq!(p.len(), 1);
        // Windows 1 and 2: the model finds nothing; still known (memory 2); another port
        // or host is not the pool; the pool's port on the saddr side is.
        let w1 = [
            sample(again, 1),
            sample(other_port, 1),
            sample(other_host, 1),
            sample(reversed, 1),
        ];
        let mut v = [false; 4];
        assert_eq!(p.window(1, &w1, server, &mut v), [0, 3]);
        let mut v = [false; 4];
        assert_eq!(p.window(2, &w1, server, &mut v), [0, 3]);
        // Window 3: three windows since the model last found it: forgotten (turned samples
        // never kept it known).
        let mut v = [false; 4];
        assert!(p.window(3, &w1, server, &mut v).is_empty());
        assert!(p.is_empty());
        assert_eq!(v, [false; 4]);
    }

    #[test]
    fn over_windows_goes_a_window_at_a_time() {
        let pool = key(1, 40000, 3, 3333);
        let late = key(1, 41000, 3, 3333);
        // The late session's window 0 comes before the model's verdict on the pool's
        // window 1: not turned; its window 1 is.
        let s = [
            sample(late, 0),
            sample(pool, 1),
            sample(late, 1),
            sample(late, 9),
        ];
        let mut v = [false, true, false, false];
        let turned = over_windows(&s, 3, |_, _| None, &mut v);
        assert_eq!(turned, [2]);
        assert_eq!(v, [false, true, true, false]);
    }
}
