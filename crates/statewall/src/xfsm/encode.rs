//! Kernel encodings of extended machines' conditions, updates (`statewall_common::xfsm::regs`)
//! and actions (`statewall_common::xfsm::acts`), from their definitions.

use statewall_common::{
    xfsm::acts::{act, ActSet},
    xfsm::raw::{Acts, Cmp, CondDef, Forward, Opd, Reg, UpdDef, UpdOp},
    xfsm::regs::{cmp, opnd, upd, Cond, CondSet, Operand, UpdSet, Update},
};

fn operand(o: &Opd, shr: u8) -> Operand {
    let (kind, idx, k) = match *o {
        Opd::Const(k) => (opnd::CONST, 0, k),
        Opd::Flow(i) => (opnd::REG, i, 0),
        Opd::Global(i) => (opnd::GLOBAL, i, 0),
        Opd::PktLen => (opnd::PKT_LEN, 0, 0),
        Opd::SrcPort => (opnd::SPORT, 0, 0),
        Opd::DstPort => (opnd::DPORT, 0, 0),
        Opd::Proto => (opnd::PROTO, 0, 0),
        Opd::TcpFlags => (opnd::TCP_FLAGS, 0, 0),
        Opd::Since(i) => (opnd::SINCE, i, 0),
        Opd::GlobalSince(i) => (opnd::GSINCE, i, 0),
        Opd::Now => (opnd::NOW, 0, 0),
        Opd::Hash(f) => (opnd::HASH, 0, f),
        Opd::Meta => (opnd::META, 0, 0),
        Opd::InPort => (opnd::IN_PORT, 0, 0),
        Opd::TableFull => (opnd::TABLE_FULL, 0, 0),
    };
    Operand {
        kind,
        idx,
        shr,
        _pad: [0; 5],
        k,
    }
}

/// The kernel's form of a machine's conditions.
pub fn conds(conds: &[CondDef]) -> CondSet {
    let mut cs = CondSet {
        n: conds.len() as u32,
        ..Default::default()
    };
    for (slot, c) in cs.c.iter_mut().zip(conds) {
        *slot = Cond {
            op: match c.cmp {
                Cmp::Lt => cmp::LT,
                Cmp::Le => cmp::LE,
                Cmp::Eq => cmp::EQ,
                Cmp::Ne => cmp::NE,
                Cmp::Ge => cmp::GE,
                Cmp::Gt => cmp::GT,
            },
            _pad: [0; 7],
            a: operand(&c.a, c.shr[0]),
            b: operand(&c.b, c.shr[1]),
        };
    }
    cs
}

/// The kernel's form of a transition's updates.
pub fn updates(ups: &[UpdDef]) -> UpdSet {
    let reads_global = |o: &Opd| matches!(o, Opd::Global(_) | Opd::GlobalSince(_));
    let mut us = UpdSet {
        n: ups.len() as u32,
        globals: ups
            .iter()
            .any(|u| matches!(u.dst, Reg::Global(_)) || reads_global(&u.src))
            as u32,
        ..Default::default()
    };
    for (slot, u) in us.u.iter_mut().zip(ups) {
        let (dst_kind, dst) = match u.dst {
            Reg::Flow(i) => (opnd::REG, i),
            Reg::Global(i) => (opnd::GLOBAL, i),
            Reg::Meta => (opnd::META, 0),
        };
        let (op, shift) = match u.op {
            UpdOp::Set => (upd::SET, 0),
            UpdOp::Add => (upd::ADD, 0),
            UpdOp::Sub => (upd::SUB, 0),
            UpdOp::Min => (upd::MIN, 0),
            UpdOp::Max => (upd::MAX, 0),
            UpdOp::Ewma(k) => (upd::EWMA, k),
        };
        *slot = Update {
            op,
            dst_kind,
            dst,
            shift,
            _pad: [0; 4],
            src: operand(&u.src, u.shr),
        };
    }
    us
}

/// A transition's actions besides pass and drop.
pub fn acts(a: &Acts) -> ActSet {
    let mut s = ActSet::default();
    if let Some(m) = a.mark {
        s.flags |= act::MARK;
        s.mark = m;
    }
    if let Some(d) = a.dscp {
        s.flags |= act::DSCP;
        s.dscp = d;
    }
    if a.event {
        s.flags |= act::EVENT;
    }
    match a.forward {
        Some(Forward::Reg(r)) => {
            s.flags |= act::FWD_REG;
            s.reg = r;
        }
        Some(Forward::Flood) => s.flags |= act::FLOOD,
        None => {}
    }
    s
}

/// What a machine's any-port DEFAULT transitions can match
/// (`statewall_common::xfsm::Machine::any_protos`): protocol classes, and whether every
/// TCP one needs SYN.
pub(crate) fn any_protos(r: &statewall_common::xfsm::raw::RawMachine) -> u8 {
    use statewall_common::xfsm::{ANY_OTHER, ANY_TCP, ANY_TCP_SYN, ANY_UDP, STATE_DEFAULT};
    let syn = statewall_common::parse::tcp::SYN;
    let (mut any, mut all_syn) = (0u8, true);
    for t in r
        .transitions
        .iter()
        .filter(|t| t.state == STATE_DEFAULT && t.port == 0)
    {
        any |= match t.proto {
            0 => ANY_TCP | ANY_UDP | ANY_OTHER,
            6 => ANY_TCP,
            17 => ANY_UDP,
            _ => ANY_OTHER,
        };
        if matches!(t.proto, 0 | 6) && t.tcp_flags.0 & t.tcp_flags.1 & syn == 0 {
            all_syn = false;
        }
    }
    if all_syn && any & ANY_TCP != 0 {
        any | ANY_TCP_SYN
    } else {
        any
    }
}
