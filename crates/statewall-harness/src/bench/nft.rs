//! nftables beside statewall: a rule as the firewall's API takes it ([`spec`]) and as an
//! nft script writes it, and running `nft` in a namespace.

use std::net::IpAddr;

use anyhow::{bail, Context};

use crate::netns::Pair;
use statewall::firewall::{rules::Rule, PortArg, RuleSpec};
use statewall_common::firewall::{ACT_ACCEPT, ACT_DROP};

/// The rule in the API's form.
pub fn spec(r: &Rule) -> RuleSpec {
    let cidr = |c: &Option<(IpAddr, u8)>| c.map(|(a, l)| format!("{a}/{l}"));
    RuleSpec {
        src: cidr(&r.src),
        dst: cidr(&r.dst),
        l4proto: r.proto.map(|p| if p == 6 { "TCP" } else { "UDP" }.into()),
        dport: r.dport.map(|(a, b)| {
            if a == b {
                PortArg::N(a as u64)
            } else {
                PortArg::S(format!("{a}-{b}"))
            }
        }),
        action: Some(
            if r.action == ACT_ACCEPT {
                "ACCEPT"
            } else {
                "DROP"
            }
            .into(),
        ),
        ..Default::default()
    }
}

/// The rule as one nftables rule (netdev family: nft adds the protocol dependencies).
fn nft_rule(r: &Rule, last: bool) -> String {
    let mut s = String::new();
    if let Some((a, l)) = r.src {
        s += &format!("ip saddr {a}/{l} ");
    }
    if let Some((a, l)) = r.dst {
        s += &format!("ip daddr {a}/{l} ");
    }
    let proto = if r.proto == Some(6) { "tcp" } else { "udp" };
    match r.dport {
        Some((a, b)) if a == b => s += &format!("{proto} dport {a} "),
        Some((a, b)) => s += &format!("{proto} dport {a}-{b} "),
        None => s += &format!("meta l4proto {proto} "),
    }
    if last {
        s += "counter ";
    }
    s += if r.action == ACT_DROP {
        "drop"
    } else {
        "accept"
    };
    s
}

/// The ruleset in a regular chain `rules` of table `netdev swbench`; the base chain that
/// jumps to it is added and removed by [`nft_hook`].
pub fn nft_script(rules: &[Rule]) -> String {
    let mut s = String::from("table netdev swbench {\n  chain rules {\n");
    for (i, r) in rules.iter().enumerate() {
        s += "    ";
        s += &nft_rule(r, i + 1 == rules.len());
        s += "\n";
    }
    s += "  }\n}\n";
    s
}

/// `nft ARGS` in the server's namespace: its output, or an error with its stderr.
pub fn nft(pair: &Pair, args: &[&str]) -> anyhow::Result<String> {
    let mut a = vec!["nft"];
    a.extend_from_slice(args);
    let out = pair.server.exec(&a);
    if !out.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Hooks the ruleset into netdev ingress of the server's veth, or unhooks it.
pub fn nft_hook(pair: &Pair, on: bool) -> anyhow::Result<()> {
    if on {
        nft(
            pair,
            &[
                "add chain netdev swbench base { type filter hook ingress device",
                &format!("\"{}\"", pair.server_if),
                "priority 0; policy accept; }",
            ],
        )?;
        nft(pair, &["add rule netdev swbench base jump rules"])?;
    } else {
        nft(pair, &["delete chain netdev swbench base"])?;
    }
    Ok(())
}

/// Packets counted by the nftables ruleset's last rule.
pub fn nft_counted(pair: &Pair) -> anyhow::Result<u64> {
    let out = nft(pair, &["list chain netdev swbench rules"])?;
    let n = out
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no counter on the nftables ruleset's last rule")?;
    Ok(n)
}
