//! The little language of extended machines: operands, conditions (`tokens < pkt_len`)
//! and updates (`tokens -= pkt_len`, `rate = ewma(rate, pkt_len, 3)`).
//!
//! Operands: a per-flow or global register by name; `meta`, the packet's 64 bits of
//! metadata (0 when it arrives; an update may write it for the machines after this one);
//! `pkt_len`, `src_port`, `dst_port`,
//! `proto`, `tcp_flags`; `now`; `since(REG)` (nanoseconds since the time held in REG);
//! `hash(FIELD, ...)` over `src_ip`, `dst_ip`, `proto`, `src_port`, `dst_port` (FNV-1a 64,
//! network byte order, in that order); a number (decimal or `0x` hex) or a duration
//! (`250ms`, `10s`, `1m`: nanoseconds).
//!
//! Updates: `R = X`, `R += X` (saturating), `R -= X` (saturating at 0), `R = min(R, X)`,
//! `R = max(R, X)`, `R = ewma(R, X, K)` (`R - (R >> K) + (X >> K)`, K from 0 to 63).

use statewall_common::xfsm::raw::{Cmp, CondDef, Opd, Reg, UpdDef, UpdOp};
use statewall_common::xfsm::regs::hash_field;

/// What is wrong with an operand, condition or update (the config error says where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

fn bad<T>(s: String) -> Result<T, ExprError> {
    Err(ExprError(s))
}

impl From<String> for ExprError {
    fn from(s: String) -> Self {
        ExprError(s)
    }
}

/// Register names of one machine.
pub struct Names<'a> {
    /// Per-flow registers.
    pub flow: &'a [String],
    /// Global registers.
    pub global: &'a [String],
}

impl Names<'_> {
    fn reg(&self, name: &str) -> Option<Reg> {
        if name == "meta" {
            return Some(Reg::Meta);
        }
        if let Some(i) = self.flow.iter().position(|r| r == name) {
            return Some(Reg::Flow(i as u8));
        }
        self.global
            .iter()
            .position(|r| r == name)
            .map(|i| Reg::Global(i as u8))
    }

    fn reg_or_err(&self, name: &str) -> Result<Reg, ExprError> {
        self.reg(name).ok_or_else(|| {
            ExprError(format!(
                "{name:?} is not a register of this machine (registers, globals)"
            ))
        })
    }
}

/// `name(args)` split, or `None` when `s` is not a call.
fn call(s: &str) -> Option<(&str, Vec<&str>)> {
    let open = s.find('(')?;
    let inner = s[open + 1..].strip_suffix(')')?;
    let args = if inner.trim().is_empty() {
        Vec::new()
    } else {
        inner.split(',').map(str::trim).collect()
    };
    Some((s[..open].trim(), args))
}

/// A number or a duration (nanoseconds).
fn number(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok();
    }
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let scale = match &s[digits..] {
        "" => 1,
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Parses an operand with its right shift (`X >> K`, K from 0 to 63; 0 without one).
pub fn operand(s: &str, names: &Names<'_>) -> Result<(Opd, u8), ExprError> {
    match s.rsplit_once(">>") {
        Some((x, k)) => {
            let k: u8 = k
                .trim()
                .parse()
                .ok()
                .filter(|k| *k < 64)
                .ok_or_else(|| ExprError(format!("{s:?}: the shift in X >> K is 0 to 63")))?;
            Ok((plain_operand(x, names)?, k))
        }
        None => Ok((plain_operand(s, names)?, 0)),
    }
}

fn plain_operand(s: &str, names: &Names<'_>) -> Result<Opd, ExprError> {
    let s = s.trim();
    Ok(match s {
        "pkt_len" => Opd::PktLen,
        "src_port" => Opd::SrcPort,
        "dst_port" => Opd::DstPort,
        "proto" => Opd::Proto,
        "tcp_flags" => Opd::TcpFlags,
        "now" => Opd::Now,
        "in_port" => Opd::InPort,
        _ => {
            if let Some((f, args)) = call(s) {
                match (f, args.as_slice()) {
                    ("since", [r]) => match names.reg_or_err(r)? {
                        Reg::Flow(i) => Opd::Since(i),
                        Reg::Global(i) => Opd::GlobalSince(i),
                        Reg::Meta => {
                            return bad(format!("{s:?}: since() takes a register, not meta"))
                        }
                    },
                    ("hash", fields) if !fields.is_empty() => {
                        let mut mask = 0;
                        for f in fields {
                            let bit = match *f {
                                "src_ip" => hash_field::SRC_IP,
                                "dst_ip" => hash_field::DST_IP,
                                "proto" => hash_field::PROTO,
                                "src_port" => hash_field::SPORT,
                                "dst_port" => hash_field::DPORT,
                                other => {
                                    return bad(format!(
                                        "hash({other}): src_ip, dst_ip, proto, src_port or dst_port"
                                    ))
                                }
                            };
                            mask |= bit;
                        }
                        Opd::Hash(mask)
                    }
                    _ => {
                        return bad(format!(
                            "{s:?}: since(REGISTER) or hash(FIELD, ...) are the functions an operand may call"
                        ))
                    }
                }
            } else if let Some(n) = number(s) {
                Opd::Const(n)
            } else if let Some(r) = names.reg(s) {
                match r {
                    Reg::Flow(i) => Opd::Flow(i),
                    Reg::Global(i) => Opd::Global(i),
                    Reg::Meta => Opd::Meta,
                }
            } else {
                return bad(format!(
                    "{s:?}: a register, pkt_len, src_port, dst_port, proto, tcp_flags, now, since(R), hash(...) or a number"
                ));
            }
        }
    })
}

/// Parses a condition `A op B`.
pub fn condition(name: &str, s: &str, names: &Names<'_>) -> Result<CondDef, ExprError> {
    // The comparison: the first operator that is not part of a shift (`>>`).
    let b = s.as_bytes();
    for i in 0..b.len() {
        let next = b.get(i + 1).copied();
        let prev = i.checked_sub(1).map(|j| b[j]);
        let (cmp, len) = match (b[i], next) {
            (b'<', Some(b'=')) => (Cmp::Le, 2),
            (b'>', Some(b'=')) if prev != Some(b'>') => (Cmp::Ge, 2),
            (b'=', Some(b'=')) => (Cmp::Eq, 2),
            (b'!', Some(b'=')) => (Cmp::Ne, 2),
            (b'<', _) => (Cmp::Lt, 1),
            (b'>', n) if n != Some(b'>') && prev != Some(b'>') => (Cmp::Gt, 1),
            _ => continue,
        };
        let (a, bo) = (operand(&s[..i], names)?, operand(&s[i + len..], names)?);
        return Ok(CondDef {
            name: name.to_string(),
            a: a.0,
            cmp,
            b: bo.0,
            shr: [a.1, bo.1],
        });
    }
    bad(format!(
        "{s:?}: a comparison A OP B with OP one of <, <=, ==, !=, >=, >"
    ))
}

/// Parses an update.
pub fn update(s: &str, names: &Names<'_>) -> Result<UpdDef, ExprError> {
    let s = s.trim();
    for (op, u) in [("+=", UpdOp::Add), ("-=", UpdOp::Sub)] {
        if let Some((d, x)) = s.split_once(op) {
            let (src, shr) = operand(x, names)?;
            return Ok(UpdDef {
                dst: names.reg_or_err(d.trim())?,
                op: u,
                src,
                shr,
            });
        }
    }
    let Some((d, rhs)) = s.split_once('=') else {
        return bad(format!(
            "{s:?}: R = X, R += X, R -= X, R = min(R, X), R = max(R, X) or R = ewma(R, X, K)"
        ));
    };
    let (d, rhs) = (d.trim(), rhs.trim());
    let dst = names.reg_or_err(d)?;
    if let Some((f @ ("min" | "max" | "ewma"), args)) = call(rhs) {
        let same = args.first().is_some_and(|a| *a == d);
        let op = match (f, args.len()) {
            ("min", 2) => UpdOp::Min,
            ("max", 2) => UpdOp::Max,
            ("ewma", 3) => {
                let k: u8 = args[2]
                    .parse()
                    .ok()
                    .filter(|k| *k < 64)
                    .ok_or_else(|| format!("{rhs:?}: the EWMA shift K is 0 to 63"))?;
                UpdOp::Ewma(k)
            }
            _ => return bad(format!("{rhs:?}: min(R, X), max(R, X) or ewma(R, X, K)")),
        };
        if !same {
            return bad(format!(
                "{s:?}: the first argument of {f} is the register written ({d})"
            ));
        }
        let (src, shr) = operand(args[1], names)?;
        return Ok(UpdDef { dst, op, src, shr });
    }
    let (src, shr) = operand(rhs, names)?;
    Ok(UpdDef {
        dst,
        op: UpdOp::Set,
        src,
        shr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_docs_show() {
        let flow = ["tokens".to_string(), "stamp".to_string()];
        let global = ["drops".to_string()];
        let n = Names {
            flow: &flow,
            global: &global,
        };
        assert_eq!(
            condition("c", "since(stamp) >= 250ms", &n).unwrap(),
            CondDef {
                name: "c".into(),
                a: Opd::Since(1),
                cmp: Cmp::Ge,
                b: Opd::Const(250_000_000),
                shr: [0, 0],
            }
        );
        assert_eq!(
            update("tokens -= pkt_len", &n).unwrap(),
            UpdDef {
                dst: Reg::Flow(0),
                op: UpdOp::Sub,
                src: Opd::PktLen,
                shr: 0,
            }
        );
        assert_eq!(
            update("drops = ewma(drops, 0x10, 3)", &n).unwrap(),
            UpdDef {
                dst: Reg::Global(0),
                op: UpdOp::Ewma(3),
                src: Opd::Const(16),
                shr: 0,
            }
        );
        assert_eq!(
            update("stamp = hash(src_ip, dst_port)", &n).unwrap().src,
            Opd::Hash(hash_field::SRC_IP | hash_field::DPORT)
        );
        for bad in [
            "nope = 1",
            "tokens = min(stamp, 1)",
            "tokens = ewma(tokens, 1, 64)",
            "tokens",
            "tokens = 12parsecs",
        ] {
            assert!(update(bad, &n).is_err(), "{bad}");
        }
        assert!(condition("c", "tokens ~ 1", &n).is_err());
        let c = condition("c", "since(stamp) >> 10 > tokens >> 2", &n).unwrap();
        assert_eq!(
            (c.a, c.cmp, c.b, c.shr),
            (Opd::Since(1), Cmp::Gt, Opd::Flow(0), [10, 2])
        );
        let u = update("tokens += since(stamp) >> 13", &n).unwrap();
        assert_eq!((u.op, u.src, u.shr), (UpdOp::Add, Opd::Since(1), 13));
        assert!(update("tokens += now >> 64", &n).is_err());
    }
}
