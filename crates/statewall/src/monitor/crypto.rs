//! The crypto monitor's sessions as user space reads them: the keys' and the per-CPU
//! counts' tables are mapped into the reader's memory (by the monitor), so a read copies a
//! buffer's slots straight out of them, with no system call per session or table, and
//! zeroes the counts it read. Layouts: `statewall_common::monitor::MAP_CRYPTO_KEYS` and
//! `MAP_CRYPTO_VALS`.

use statewall_common::monitor::{crypto_value_index, CryptoVal, SessKey};

use crate::types::Seeded;

/// A crypto session of a window, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoSession {
    /// Its key.
    pub key: SessKey,
    /// The sum (server and method from the CPU that saw the session first).
    pub total: CryptoVal,
    /// Per CPU, as the kernel holds them.
    pub per_cpu: Vec<CryptoVal>,
}

/// Where a crypto monitor's sessions are in its two mapped tables: `sessions` slots per
/// buffer, `ncpus` CPU ids (a buffer's values are one run, CPU after CPU).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slots {
    pub(crate) sessions: usize,
    pub(crate) ncpus: usize,
}

impl Slots {
    /// Where CPU `cpu`'s counts of slot `s` of buffer `b` are
    /// (`statewall_common::monitor::crypto_value_index`); buffer 0's index is also the place
    /// within one buffer's run of values.
    fn at(&self, b: usize, cpu: usize, s: usize) -> usize {
        crypto_value_index(
            b as u32,
            cpu as u32,
            self.ncpus as u32,
            self.sessions as u32,
            s as u32,
        ) as usize
    }

    /// Keys in the keys' table (both buffers).
    pub(crate) fn keys(&self) -> usize {
        2 * self.sessions
    }

    /// Values in the counts' table (both buffers, every CPU).
    pub(crate) fn values(&self) -> usize {
        self.at(2, 0, 0)
    }

    /// Buffer `b`'s keys and values in the two tables: (first key, first value, values).
    pub(crate) fn buffer(&self, b: usize) -> (usize, usize, usize) {
        (b * self.sessions, self.at(b, 0, 0), self.at(1, 0, 0))
    }

    /// The sessions of the first `n` slots of one buffer, whose keys and values (`keys`:
    /// its `sessions` keys; `vals`: its values, CPU after CPU) no program writes any more.
    /// A slot given up (family 0) is skipped; a session that holds two slots (its index
    /// entry was evicted, or two CPUs renewed it at once) is merged into one, CPU by CPU.
    pub(crate) fn read(
        &self,
        keys: &[SessKey],
        vals: &[CryptoVal],
        n: usize,
    ) -> Vec<CryptoSession> {
        let n = n.min(self.sessions);
        let mut out: Vec<CryptoSession> = Vec::with_capacity(n);
        // Seeded: the keys are the traffic's to choose.
        let mut seen: std::collections::HashMap<SessKey, usize, Seeded> =
            std::collections::HashMap::with_capacity_and_hasher(n, Seeded::default());
        for s in 0..n {
            let key = keys[s];
            if key.family == 0 {
                continue;
            }
            let per_cpu: Vec<CryptoVal> = (0..self.ncpus).map(|c| vals[self.at(0, c, s)]).collect();
            match seen.get(&key) {
                Some(&i) => {
                    let o = &mut out[i];
                    for (a, v) in o.per_cpu.iter_mut().zip(&per_cpu) {
                        *a = merge(&[*a, *v]);
                    }
                    o.total = merge(&o.per_cpu);
                }
                None => {
                    seen.insert(key, out.len());
                    out.push(CryptoSession {
                        key,
                        total: merge(&per_cpu),
                        per_cpu,
                    });
                }
            }
        }
        out
    }

    /// Zeroes the counts of the first `n` slots of one buffer (`vals`, as [`Slots::read`]
    /// takes them): the next window that writes it starts from zero.
    pub(crate) fn zero(&self, vals: &mut [CryptoVal], n: usize) {
        let n = n.min(self.sessions);
        for c in 0..self.ncpus {
            vals[self.at(0, c, 0)..][..n].fill(CryptoVal::default());
        }
    }
}

/// Sums a crypto session over CPUs: counts added, first and last times over all, server
/// and method from the CPU that saw the session first.
pub fn merge(per_cpu: &[CryptoVal]) -> CryptoVal {
    let mut t = CryptoVal::default();
    let mut first: Option<&CryptoVal> = None;
    for v in per_cpu.iter().filter(|v| v.start_ts != 0) {
        t.n_packets += v.n_packets;
        t.n_packets_reverse += v.n_packets_reverse;
        t.n_bytes += v.n_bytes;
        t.n_bytes_reverse += v.n_bytes_reverse;
        t.alive_ts = t.alive_ts.max(v.alive_ts);
        if first.is_none_or(|f| v.start_ts < f.start_ts) {
            first = Some(v);
        }
    }
    if let Some(f) = first {
        t.start_ts = f.start_ts;
        t.server = f.server;
        t.method = f.method;
    }
    t
}
