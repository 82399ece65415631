//! Later fragments take the ports of their datagram's first fragment
//! (`statewall_common::frag`, whose `track` this runs over the kernel's table).

use aya_ebpf::{macros::map, maps::LruHashMap};
use statewall_common::{
    frag::{track, FragKey, FragPorts, FragTable, FRAGS_MAX},
    parse::{PacketInfo, FLAG_FRAG},
};

#[map(name = "SW_FRAGS")]
static SW_FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::with_max_entries(FRAGS_MAX, 0);

struct Table;

impl FragTable for Table {
    #[inline(always)]
    fn get(&self, k: &FragKey) -> Option<FragPorts> {
        // SAFETY: the value is copied out at once.
        unsafe { SW_FRAGS.get(k) }.copied()
    }

    #[inline(always)]
    fn put(&mut self, k: &FragKey, v: &FragPorts) {
        let _ = SW_FRAGS.insert(k, v, 0);
    }
}

/// Runs `track` on a parsed packet (a no-op for everything but fragments).
#[inline(always)]
pub(crate) fn ports(p: &mut PacketInfo) {
    if p.flags & FLAG_FRAG != 0 {
        fragment(p);
    }
}

/// Out of line: its key's stack is not added to the deepest call chain of the stages.
#[inline(never)]
fn fragment(p: &mut PacketInfo) {
    let mut k = FragKey::default();
    track(p, &mut Table, &mut k, crate::clock::now_ns());
}
