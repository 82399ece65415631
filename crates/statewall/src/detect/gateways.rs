//! The gateways of the namespaces the detect stage watches: the next hops of their routing
//! tables (IPv4 and IPv6). With `[detect] allow_gateways` (the default) they join the
//! allowlist when the config is applied (at start and on each reload), so that a flood
//! spoofing the gateway's address cannot get the host cut off from its way out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Prefix;

/// The next hops in `/proc/net/route`'s text: its `Gateway` column, the address's bytes
/// as one 32-bit word in the host's order, printed in hex (zero: no gateway).
pub fn v4_next_hops(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|h| u32::from_str_radix(h, 16).ok())
        .filter(|v| *v != 0)
        .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
        .collect()
}

/// The next hops in `/proc/net/ipv6_route`'s text: its fifth column, 32 hex digits in
/// the address's order (all zero: no gateway).
pub fn v6_next_hops(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|h| h.len() == 32)
        .filter_map(|h| u128::from_str_radix(h, 16).ok())
        .filter(|v| *v != 0)
        .map(Ipv6Addr::from)
        .collect()
}

/// The gateways of namespaces `netns` (`None`: the daemon's own), each as a host
/// prefix, in order, once each. A namespace that cannot be entered or read gives none.
pub fn gateways(netns: &[Option<String>]) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = Vec::new();
    for ns in netns {
        // (`thread-self`: `/proc/net` names the process's first thread's namespace, not
        // the one this thread entered.)
        let read = crate::engine::netns::in_netns(ns.as_deref(), || {
            let v4 = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
            let v6 =
                std::fs::read_to_string("/proc/thread-self/net/ipv6_route").unwrap_or_default();
            (v4_next_hops(&v4), v6_next_hops(&v6))
        });
        let Ok((v4, v6)) = read else { continue };
        let hops = v4
            .into_iter()
            .map(IpAddr::V4)
            .chain(v6.into_iter().map(IpAddr::V6));
        Prefix::join(&mut out, hops.map(Prefix::host));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_are_read_from_the_route_tables() {
        // An on-link route, a default route through 192.168.1.254 and a route through
        // 10.77.0.254 (as the kernel prints them on a little-endian host).
        let word = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let v4 = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t{}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t0000C80A\t{}\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n",
            word([192, 168, 1, 254]),
            word([10, 77, 0, 254])
        );
        assert_eq!(
            v4_next_hops(&v4),
            [
                Ipv4Addr::new(192, 168, 1, 254),
                Ipv4Addr::new(10, 77, 0, 254)
            ]
        );
        let v6 = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n";
        assert_eq!(v6_next_hops(v6), ["fe80::1".parse::<Ipv6Addr>().unwrap()]);
        assert!(v4_next_hops("").is_empty() && v6_next_hops("garbage").is_empty());
    }
}
