//! The rulesets the firewall's groups measure: the same deterministic random rules for
//! statewall and for nftables, at each size.

use statewall::firewall::rules::Rule;
use statewall_common::firewall::{ACT_ACCEPT, ACT_DROP};

/// Blocks of the IPv4 direct table (1 KiB each) the benchmark gives the kernel: its
/// 10,000 rules take about 7,250 a generation (the default holds 2,560).
pub const V4_BLOCKS: u32 = 2 + 2 * 8704;

/// Rule counts measured.
pub const SIZES: [usize; 6] = [1, 10, 100, 1000, 2048, 10000];

/// A deterministic random ruleset of `n` rules whose last rule alone matches the packet
/// 192.168.1.1 -> 172.16.5.5 to port 443 of `proto` (6 or 17).
pub fn ruleset(n: usize, proto: u8) -> Vec<Rule> {
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ n as u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut rules: Vec<Rule> = (0..n.saturating_sub(1))
        .map(|_| {
            let r = next();
            let src_len = 16 + (r % 17) as u8;
            let src = statewall::firewall::rules::mask(
                std::net::IpAddr::from([10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8]),
                src_len,
            );
            let dst = (r >> 32) % 3 != 0;
            let dst_len = 12 + ((r >> 36) % 21) as u8;
            let dport = 1 + ((r >> 40) % 65000) as u16;
            Rule {
                src: Some((src, src_len)),
                dst: dst.then(|| {
                    (
                        statewall::firewall::rules::mask(
                            std::net::IpAddr::from([
                                172,
                                16 + ((r >> 44) % 16) as u8,
                                (r >> 48) as u8,
                                1,
                            ]),
                            dst_len,
                        ),
                        dst_len,
                    )
                }),
                proto: Some(if r >> 56 & 1 == 0 { 6 } else { 17 }),
                sport: None,
                dport: Some((dport, dport.saturating_add(((r >> 57) % 4) as u16 * 100))),
                tcpflags: None,
                ct: None,
                action: ACT_DROP,
            }
        })
        .collect();
    rules.push(Rule {
        src: Some(("192.168.1.1".parse().unwrap(), 32)),
        dst: Some(("172.16.5.5".parse().unwrap(), 32)),
        proto: Some(proto),
        sport: None,
        dport: Some((443, 443)),
        tcpflags: None,
        ct: None,
        action: ACT_ACCEPT,
    });
    rules
}
