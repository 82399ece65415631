//! The gate in the kernel: the protected-port table, grants and granted flows, counters.
//! Written through the [`Engine`].

use aya::maps::{Array, HashMap as BpfHashMap, MapData};

use crate::engine::{map_err, Engine, EngineError, Result};
use crate::{gate::GateConfig, types::PortSpec};
use statewall_common::maps::{
    FlowKey, FlowValue, GateConf, GateLimits, GrantKey, GrantValue, GATE_COUNTERS,
    GATE_COUNTER_NAMES, GATE_SUMMARY_SLOT, GATE_TCP, GATE_UDP, MAP_GATE_CONF, MAP_GATE_FLOWS,
    MAP_GATE_GRANTS, MAP_GATE_LIMITS, MAP_GATE_PORTS, MAP_GATE_STATS,
};

impl Engine {
    /// Writes the protected-port table from the config: additions first, then removals, so
    /// no port that stays protected is ever open in between; the summary slot last.
    pub fn apply_gate(
        &mut self,
        protected: &[PortSpec],
        reset_ports: &[u16],
        gate: &GateConfig,
    ) -> Result<()> {
        let mut want = vec![0u8; 65536];
        for PortSpec { proto, port } in protected {
            want[*port as usize] |= if *proto == 17 { GATE_UDP } else { GATE_TCP };
        }
        for &port in reset_ports {
            if want[port as usize] & GATE_TCP != 0 {
                want[port as usize] |= statewall_common::maps::GATE_RESET;
            }
        }
        if gate.reject == crate::gate::Reject::Closed {
            for w in want.iter_mut() {
                if *w & GATE_TCP != 0 {
                    *w |= statewall_common::maps::GATE_RESET;
                }
                if *w & GATE_UDP != 0 {
                    *w |= statewall_common::maps::GATE_UNREACH;
                }
            }
        }
        let summary = want.iter().fold(0u8, |a, b| a | b);
        let md = self.map_mut_checked(MAP_GATE_PORTS)?;
        let mut arr: Array<&mut MapData, u8> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        let cur_summary = arr.get(&GATE_SUMMARY_SLOT, 0).unwrap_or(0);
        arr.set(GATE_SUMMARY_SLOT, cur_summary | summary, 0)
            .map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        for pass in 0..2 {
            for port in 0..65536u32 {
                let cur = arr.get(&port, 0).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
                let w = want[port as usize];
                let adding = w & !cur != 0;
                if cur != w && ((pass == 0 && adding) || (pass == 1 && !adding)) {
                    let v = if pass == 0 { cur | w } else { w };
                    arr.set(port, v, 0)
                        .map_err(|e| map_err(MAP_GATE_PORTS, e))?;
                }
            }
        }
        arr.set(GATE_SUMMARY_SLOT, summary, 0)
            .map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        let g = gate;
        let conf = GateConf {
            tcp_idle_ns: g.flow_idle_tcp.0.as_nanos() as u64,
            tcp_closing_ns: g.flow_closing_tcp.0.as_nanos() as u64,
            udp_idle_ns: g.flow_idle_udp.0.as_nanos() as u64,
        };
        let md = self.map_mut_checked(MAP_GATE_CONF)?;
        let mut arr: Array<&mut MapData, GateConf> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_CONF, e))?;
        arr.set(0, conf, 0).map_err(|e| map_err(MAP_GATE_CONF, e))?;
        self.apply_gate_limits(gate)
    }

    /// Writes the answer buckets: resets as `[gate]` says, ICMP messages as the host's
    /// `net.ipv4.icmp_msgs_per_sec` and `icmp_msgs_burst` (which Linux applies to ICMP and
    /// ICMPv6 alike; 1000 and 50 when they cannot be read). Only the rates are written
    /// when they change: the buckets' state carries on.
    fn apply_gate_limits(&mut self, gate: &GateConfig) -> Result<()> {
        let sysctl = |name: &str, default: u64| -> u64 {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(default)
        };
        let interval = |per_sec: u64| 1_000_000_000u64.checked_div(per_sec).unwrap_or(0);
        let icmp_per_sec = sysctl("icmp_msgs_per_sec", 1000);
        let md = self.map_mut_checked(MAP_GATE_LIMITS)?;
        let mut arr: Array<&mut MapData, GateLimits> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_LIMITS, e))?;
        let mut l = arr.get(&0, 0).unwrap_or_default();
        l.rst_interval_ns = interval(gate.reset_per_sec).max(1);
        l.rst_burst = gate.reset_burst.max(1);
        // A host that sends no ICMP errors (0 per second) answers about none here either
        // (one in a thousand seconds). Bursts stay below a million: interval x burst
        // fits in the kernel's 64 bits.
        l.icmp_interval_ns = if icmp_per_sec == 0 {
            1_000_000_000_000
        } else {
            interval(icmp_per_sec).max(1)
        };
        l.icmp_burst = sysctl("icmp_msgs_burst", 50).clamp(1, 1_000_000);
        arr.set(0, l, 0).map_err(|e| map_err(MAP_GATE_LIMITS, e))?;
        Ok(())
    }

    /// Whether the kernel protects `port` of protocol `proto` (6 or 17): one lookup, where
    /// [`Engine::protected`] reads all 65,535 ports.
    pub fn is_protected(&self, proto: u8, port: u16) -> Result<bool> {
        let md = self.map_checked(MAP_GATE_PORTS)?;
        let arr: Array<&MapData, u8> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        let b = arr
            .get(&u32::from(port), 0)
            .map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        Ok(b & if proto == 17 { GATE_UDP } else { GATE_TCP } != 0)
    }

    /// The protected ports as the kernel has them.
    pub fn protected(&self) -> Result<Vec<PortSpec>> {
        let md = self.map_checked(MAP_GATE_PORTS)?;
        let arr: Array<&MapData, u8> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        let mut v = Vec::new();
        for port in 1..65536u32 {
            let b = arr.get(&port, 0).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
            if b & GATE_TCP != 0 {
                v.push(PortSpec {
                    proto: 6,
                    port: port as u16,
                });
            }
            if b & GATE_UDP != 0 {
                v.push(PortSpec {
                    proto: 17,
                    port: port as u16,
                });
            }
        }
        Ok(v)
    }

    /// Adds or extends a grant. A full table refuses it, and so does a length whose expiry
    /// does not fit in the kernel clock.
    pub fn grant(&mut self, key: GrantKey, seconds: u64, origin: u32) -> Result<u64> {
        let expires_ns = seconds
            .checked_mul(1_000_000_000)
            .and_then(|ns| ns.checked_add(self.kernel_now()))
            .ok_or_else(|| EngineError::Map {
                map: MAP_GATE_GRANTS.into(),
                msg: format!("a grant of {seconds} s ends past the kernel clock's range"),
            })?;
        self.grant_until(key, expires_ns, origin)
    }

    /// Adds or extends a grant until `expires_ns` (kernel clock); returns the expiry in
    /// force (a later one already there stays: extending never shortens). A full table
    /// refuses it.
    pub fn grant_until(&mut self, key: GrantKey, expires_ns: u64, origin: u32) -> Result<u64> {
        let mut expires_ns = expires_ns;
        let md = self.map_mut_checked(MAP_GATE_GRANTS)?;
        let mut h: BpfHashMap<&mut MapData, GrantKey, GrantValue> =
            BpfHashMap::try_from(md).map_err(|e| map_err(MAP_GATE_GRANTS, e))?;
        let mut origin = origin;
        if let Ok(cur) = h.get(&key, 0) {
            if cur.expires_ns >= expires_ns {
                // Nothing to extend: the grant in force stays as it is, origin included.
                return Ok(cur.expires_ns);
            }
            expires_ns = expires_ns.max(cur.expires_ns);
            origin = if origin == statewall_common::maps::GRANT_BY_CLUSTER {
                cur.origin
            } else {
                origin
            };
        }
        h.insert(
            key,
            GrantValue {
                expires_ns,
                origin,
                _pad: 0,
            },
            0,
        )
        .map_err(|e| match e {
            aya::maps::MapError::SyscallError(ref s)
                if s.io_error.raw_os_error() == Some(libc::E2BIG) =>
            {
                EngineError::TableFull {
                    map: MAP_GATE_GRANTS.into(),
                }
            }
            e => map_err(MAP_GATE_GRANTS, e),
        })?;
        Ok(expires_ns)
    }

    /// The grant of `key`, when there is one (expired or not).
    pub fn grant_of(&self, key: &GrantKey) -> Result<Option<GrantValue>> {
        let h: BpfHashMap<&MapData, GrantKey, GrantValue> =
            BpfHashMap::try_from(self.pinned(MAP_GATE_GRANTS)?)
                .map_err(|e| map_err(MAP_GATE_GRANTS, e))?;
        match h.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(MAP_GATE_GRANTS, e)),
        }
    }

    /// Removes a grant; false when there was none.
    pub fn revoke(&mut self, key: &GrantKey) -> Result<bool> {
        let md = self.map_mut_checked(MAP_GATE_GRANTS)?;
        let mut h: BpfHashMap<&mut MapData, GrantKey, GrantValue> =
            BpfHashMap::try_from(md).map_err(|e| map_err(MAP_GATE_GRANTS, e))?;
        match h.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(s))
                if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(map_err(MAP_GATE_GRANTS, e)),
        }
    }

    /// Every grant with its expiry (kernel clock).
    pub fn grants(&self) -> Result<Vec<(GrantKey, GrantValue)>> {
        self.hash_entries(MAP_GATE_GRANTS)
    }

    /// Removes the grants of `grants` (a dump of the table) that had expired at `now`;
    /// returns how many. A grant extended since the dump stays.
    pub fn sweep_grants(&mut self, grants: &[(GrantKey, GrantValue)], now: u64) -> Result<usize> {
        let dead = grants
            .iter()
            .filter(|(_, v)| v.expires_ns <= now)
            .map(|(k, _)| *k);
        self.remove_expired(MAP_GATE_GRANTS, dead, |v: &GrantValue| v.expires_ns <= now)
    }

    /// Every flow opened under a grant, with its expiry (kernel clock).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>> {
        self.hash_entries(MAP_GATE_FLOWS)
    }

    /// Removes flows that idled out; returns how many. (The gate ignores them already; this
    /// frees their room.)
    pub fn sweep_flows(&mut self) -> Result<usize> {
        let now = self.kernel_now();
        let flows = self.flows()?;
        let dead = flows
            .iter()
            .filter(|(_, v)| v.expires_ns <= now)
            .map(|(k, _)| *k);
        self.remove_expired(MAP_GATE_FLOWS, dead, |v: &FlowValue| v.expires_ns <= now)
    }

    /// Gate counters summed over CPUs, by name.
    pub fn gate_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let sums = self.percpu_sums(MAP_GATE_STATS, GATE_COUNTERS)?;
        Ok(GATE_COUNTER_NAMES.into_iter().zip(sums).collect())
    }
}
