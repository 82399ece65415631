//! The verifier as the daemon runs it: candidates from the kernel, checked against the
//! configured actions and stanzas and the replay cache, with counts per outcome.

use super::{
    fwknop::{fwknop_check, fwknop_digest},
    pkd::{pkd_check, PkdAction},
    policy::Reject,
    replay::ReplayCache,
};
use std::{collections::HashMap, net::IpAddr};

/// A candidate from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `statewall_common::spa::KIND_*`.
    pub kind: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination port of the packet (in the pkd digest).
    pub dport: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
}

impl Candidate {
    /// Decodes a ring-buffer record (`SpaHeader` then the payload); `None` if short.
    pub fn from_record(b: &[u8]) -> Option<Candidate> {
        use statewall_common::spa::SpaHeader;
        let n = std::mem::size_of::<SpaHeader>();
        if b.len() < n {
            return None;
        }
        // SAFETY: the kernel wrote a SpaHeader (repr(C), plain data) at the start.
        let h = unsafe { std::ptr::read_unaligned(b.as_ptr() as *const SpaHeader) };
        let data = b.get(n..n + h.len as usize)?;
        Some(Candidate {
            kind: h.kind,
            src: statewall_common::maps::addr_ip(h.family, &h.saddr),
            dport: h.dport,
            payload: data.to_vec(),
        })
    }
}

/// What to open for an accepted candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Action or stanza name(s), comma-separated.
    pub name: String,
    /// The same, one by one.
    pub names: Vec<String>,
    /// Grants: (key, seconds).
    pub grants: Vec<(statewall_common::maps::GrantKey, u64)>,
    /// The packet's digest, as the replay cache keeps it.
    pub digest: [u8; 32],
    /// Until when (Unix seconds) the digest is kept: past the packet's acceptance window.
    pub until: u64,
}

/// Replay entries of packets whose clock is not checked are kept this long.
const NO_SKEW_KEEP: u64 = 7 * 86400;

/// The verifiers with their configuration, the replay cache and the counters: what the
/// daemon runs every candidate through.
#[derive(Debug)]
pub struct SpaRuntime {
    /// Actions and stanzas.
    pub setup: super::config::SpaSetup,
    /// Replay cache.
    pub replay: ReplayCache,
    /// Outcomes: `accepted` and every [`Reject::name`].
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Last accepted knock per (pkd action, source), for `min_interval`.
    last: HashMap<(String, IpAddr), u64>,
    /// When each refusal reason was last logged at info level.
    pub last_log: HashMap<&'static str, u64>,
}

impl SpaRuntime {
    /// A runtime with zeroed counters.
    pub fn new(setup: super::config::SpaSetup, replay: ReplayCache) -> SpaRuntime {
        let mut counts = std::collections::BTreeMap::new();
        counts.insert("accepted", 0);
        for r in Reject::ALL {
            counts.insert(r.name(), 0);
        }
        SpaRuntime {
            setup,
            replay,
            counts,
            last: HashMap::new(),
            last_log: HashMap::new(),
        }
    }

    /// Verifies a candidate at Unix time `now`, records it in the replay cache and says what
    /// to grant; counts the outcome either way.
    pub fn handle(&mut self, c: &Candidate, now: u64) -> Result<Accepted, Reject> {
        let r = self.verify(c, now);
        if r.is_ok() {
            self.count_accepted();
        }
        r
    }

    /// As [`SpaRuntime::handle`], but an accepted candidate is not counted yet: the daemon
    /// counts it ([`SpaRuntime::count_accepted`]) once its grants are in the kernel, so that
    /// whoever sees the count can rely on the grants.
    pub fn verify(&mut self, c: &Candidate, now: u64) -> Result<Accepted, Reject> {
        let r = self.check(c, now);
        if let Err(e) = &r {
            *self.counts.entry(e.name()).or_default() += 1;
        }
        r
    }

    /// Counts an accepted candidate.
    pub fn count_accepted(&mut self) {
        *self.counts.entry("accepted").or_default() += 1;
    }

    fn check(&mut self, c: &Candidate, now: u64) -> Result<Accepted, Reject> {
        use statewall_common::spa::{KIND_FWKNOP, KIND_PKD};
        let key = |proto: u8, port: u16| {
            let (family, addr) = match c.src {
                IpAddr::V4(a) => {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&a.octets());
                    (statewall_common::maps::FAMILY_V4, b)
                }
                IpAddr::V6(a) => (statewall_common::maps::FAMILY_V6, a.octets()),
            };
            statewall_common::maps::GrantKey {
                addr,
                family,
                proto,
                port,
            }
        };
        match c.kind {
            KIND_PKD => {
                let (acts, digest) = pkd_check(&c.payload, c.dport, now, &self.setup.pkd)?;
                // Per-action limit, after the digest (a forgery cannot use it up).
                let acts: Vec<&PkdAction> = acts
                    .into_iter()
                    .filter(|a| {
                        a.min_interval == 0
                            || self
                                .last
                                .get(&(a.name.clone(), c.src))
                                .is_none_or(|t| now.saturating_sub(*t) >= a.min_interval)
                    })
                    .collect();
                if acts.is_empty() {
                    return Err(Reject::RateLimited);
                }
                let keep = acts
                    .iter()
                    .map(|a| a.skew.map_or(NO_SKEW_KEEP, |s| (2 * s).max(60)))
                    .max()
                    .unwrap_or(60);
                let grants = acts
                    .iter()
                    .flat_map(|a| a.protos.iter().map(move |p| (key(*p, a.port), a.window)))
                    .collect();
                let name = acts
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                let until = now + keep;
                self.replay.insert(digest, until, now)?;
                let names: Vec<String> = acts.iter().map(|a| a.name.clone()).collect();
                if self.last.len() > 65536 {
                    let horizon = self
                        .setup
                        .pkd
                        .iter()
                        .map(|a| a.min_interval)
                        .max()
                        .unwrap_or(0);
                    self.last.retain(|_, t| now.saturating_sub(*t) < horizon);
                }
                for n in &names {
                    self.last.insert((n.clone(), c.src), now);
                }
                Ok(Accepted {
                    name,
                    names,
                    grants,
                    digest,
                    until,
                })
            }
            KIND_FWKNOP => {
                let d = fwknop_digest(
                    std::str::from_utf8(&c.payload)
                        .map_err(|_| Reject::Malformed)?
                        .trim_end_matches(['\n', '\r', '\0'])
                        .as_bytes(),
                );
                if self.replay.contains(&d, now) {
                    return Err(Reject::Replay);
                }
                let r = fwknop_check(&c.payload, c.src, now, &self.setup.fwknop)?;
                let s = &self.setup.fwknop[r.stanza];
                let until = now + (2 * s.skew).max(60);
                self.replay.insert(r.digest, until, now)?;
                Ok(Accepted {
                    digest: r.digest,
                    until,
                    name: s.name.clone(),
                    names: vec![s.name.clone()],
                    grants: r
                        .ports
                        .iter()
                        .map(|(p, n)| (key(*p, *n), r.seconds))
                        .collect(),
                })
            }
            _ => Err(Reject::Malformed),
        }
    }
}
