//! BPF_PROG_TEST_RUN harness: runs the real kernel programs on frames built in Rust.
//!
//! [`TestBed`] loads the embedded object with private maps (nothing pinned, nothing
//! attached), so tests run side by side. Programs are loaded (verified) on first use.
//!
//! ```no_run
//! use statewall::engine::ebpf::PROG_GATE;
//! use statewall_harness::{packet::Packet, testrun::TestBed};
//! let mut bed = TestBed::new();
//! let frame = Packet::tcp("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 1, 22, 2).build();
//! assert_eq!(bed.run_tc(PROG_GATE, &frame), statewall_common::TCX_NEXT);
//! ```

use std::time::Duration;

use aya::{
    maps::{Array, Map, MapData},
    programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
    Ebpf,
};
use statewall_common::{
    maps::{CLOCK_SLOT_FROZEN, CLOCK_SLOT_TEST_OFFSET, MAP_CLOCK, MAP_PARSE_OUT},
    parse::PacketInfo,
};

use crate::bench::report::RUNS;
use statewall::engine::ebpf;

/// A privately loaded copy of the kernel object.
pub struct TestBed {
    /// The loaded object: maps by name through [`TestBed::map`].
    pub ebpf: Ebpf,
    /// The maps handed out by name since the load ([`TestBed::reset`] empties them).
    touched: std::collections::BTreeSet<String>,
}

impl Default for TestBed {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBed {
    /// Loads the object. Panics with the loader's error (and verifier log) on failure.
    pub fn new() -> Self {
        Self::with_sizes(&[])
    }

    /// Loads the object with some maps resized (`(name, max_entries)`), e.g. a small table
    /// to test what happens when it is full.
    pub fn with_sizes(sizes: &[(&str, u32)]) -> Self {
        Self::with_loader(ebpf::loader(), sizes)
    }

    /// Loads the object with loader `l` (globals set) and some maps resized.
    pub fn with_loader<'a>(l: aya::EbpfLoader<'a>, sizes: &[(&'a str, u32)]) -> Self {
        let ebpf = ebpf::load_private_with(l, sizes)
            .unwrap_or_else(|e| panic!("loading the eBPF object: {e:#?}"));
        TestBed {
            ebpf,
            touched: Default::default(),
        }
    }

    /// Empties the maps: every hash table and trie loses its keys and every ring buffer is
    /// drained; the arrays that can differ from a fresh load's are zeroed, those the
    /// programs loaded so far use and those handed out by name ([`TestBed::map`], the map
    /// access of the table writers). (Zeroing every array of the object would take longer
    /// than verifying the programs again: the firewall's alone hold hundreds of thousands
    /// of slots.) The object's global data is kept. The bed then runs as if just loaded
    /// (but for the order in which a full LRU table evicts: `wipe`'s doc), with the
    /// programs it has verified kept: for tests that go through many scenarios. Panics on a
    /// map that cannot be emptied in place.
    pub fn reset(&mut self) {
        let mut used = std::collections::BTreeSet::new();
        for (name, p) in self.ebpf.programs() {
            if p.fd().is_err() {
                continue;
            }
            let ids = p.info().and_then(|i| i.map_ids());
            match ids {
                Ok(ids) => used.extend(ids.unwrap_or_default()),
                Err(e) => panic!("resetting the test bed: the maps of {name}: {e}"),
            }
        }
        let touched = std::mem::take(&mut self.touched);
        for (name, m) in self.ebpf.maps_mut() {
            let id = crate::wipe::id(m).unwrap_or_else(|e| panic!("resetting the test bed: {e}"));
            let arrays = used.contains(&id) || touched.contains(name);
            crate::wipe::wipe(name, m, arrays)
                .unwrap_or_else(|e| panic!("resetting the test bed: {e}"));
        }
    }

    /// Loads (verifies) program `name` on first use and runs it `repeat` times on `frame`.
    fn exec(
        &mut self,
        name: &str,
        xdp: bool,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, aya::programs::ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        if xdp {
            self.xdp(name).test_run(opts)
        } else {
            self.tc(name).test_run(opts)
        }
    }

    /// Runs a tc program once; returns its verdict as the program returned it
    /// (`TCX_NEXT` = -1, `TC_ACT_SHOT` = 2).
    pub fn run_tc(&mut self, name: &str, frame: &[u8]) -> i32 {
        self.try_run_tc(name, frame)
            .unwrap_or_else(|e| panic!("test-run of {name}: {e}"))
    }

    /// Like [`TestBed::run_tc`], returning the syscall error (e.g. frames under 14 bytes).
    pub fn try_run_tc(
        &mut self,
        name: &str,
        frame: &[u8],
    ) -> Result<i32, aya::programs::ProgramError> {
        Ok(self.exec(name, false, frame, 1)?.return_value as i32)
    }

    /// Runs a program once and returns its verdict and the frame as it left the program
    /// (rewritten, trimmed).
    pub fn run_out(&mut self, name: &str, xdp: bool, frame: &[u8]) -> (i32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let r = if xdp {
            self.xdp(name).test_run(opts)
        } else {
            self.tc(name).test_run(opts)
        }
        .unwrap_or_else(|e| panic!("test-run of {name}: {e}"));
        out.truncate(r.data_size_out as usize);
        (r.return_value as i32, out)
    }

    /// Runs a tc program once on a packet of interface `ifindex` (0: loopback); returns its
    /// verdict, the packet mark it left, and the frame as it left the program.
    pub fn run_skb(&mut self, name: &str, frame: &[u8], ifindex: u32) -> (i32, u32, Vec<u8>) {
        // struct __sk_buff (192 bytes): mark at 8, ifindex at 40.
        let mut skb_in = [0u8; 192];
        skb_in[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut skb_out = [0u8; 192];
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&skb_in),
            ctx_out: Some(&mut skb_out),
            ..TestRunOptions::new()
        };
        let r = self
            .tc(name)
            .test_run(opts)
            .unwrap_or_else(|e| panic!("test-run of {name}: {e}"));
        out.truncate(r.data_size_out as usize);
        let mark = u32::from_ne_bytes(skb_out[8..12].try_into().unwrap());
        (r.return_value as i32, mark, out)
    }

    /// Runs an XDP program once; returns its action.
    pub fn run_xdp(&mut self, name: &str, frame: &[u8]) -> u32 {
        self.exec(name, true, frame, 1)
            .unwrap_or_else(|e| panic!("test-run of {name}: {e}"))
            .return_value
    }

    /// Mean run time of a tc program over `repeat` runs inside the kernel.
    pub fn time_tc(&mut self, name: &str, frame: &[u8], repeat: u32) -> Duration {
        self.exec(name, false, frame, repeat)
            .unwrap_or_else(|e| panic!("test-run of {name}: {e}"))
            .duration
    }

    /// tc program `name`, loaded (verified) on first use.
    fn tc(&mut self, name: &str) -> &mut SchedClassifier {
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not a tc program: {e}"));
        if p.fd().is_err() {
            p.load()
                .unwrap_or_else(|e| panic!("verifier rejected {name}: {e:#?}"));
        }
        p
    }

    /// XDP program `name`, loaded (verified) on first use.
    fn xdp(&mut self, name: &str) -> &mut Xdp {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"));
        if p.fd().is_err() {
            p.load()
                .unwrap_or_else(|e| panic!("verifier rejected {name}: {e:#?}"));
        }
        p
    }

    /// Runs an XDP program over `repeat` copies of `frame` as live frames received on
    /// interface `ifindex` of the calling thread's namespace (BPF_F_TEST_XDP_LIVE_FRAMES,
    /// batches of 64): what it returns happens for real (`XDP_TX` sends each copy out of
    /// that interface). Returns the time the kernel took.
    pub fn live_xdp(
        &mut self,
        name: &str,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<Duration, aya::programs::ProgramError> {
        let p = self.xdp(name);
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let mut md = [0u8; 24];
        md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&md),
            repeat,
            attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        };
        p.test_run(opts).map(|r| r.duration)
    }

    /// Mean run time of an XDP program over `repeat` runs inside the kernel.
    pub fn time_xdp(&mut self, name: &str, frame: &[u8], repeat: u32) -> Duration {
        self.exec(name, true, frame, repeat)
            .unwrap_or_else(|e| panic!("test-run of {name}: {e}"))
            .duration
    }

    /// A map of the object, by name.
    pub fn map(&mut self, name: &str) -> &mut Map {
        self.touched.insert(name.to_string());
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("no map {name}"))
    }

    /// Puts interface `ifindex` under the firewall with entry `v` (instance and flags), as
    /// the daemon does: in the interface hash, and in the array the programs read for
    /// indexes below its size.
    pub fn fw_iface(&mut self, ifindex: u32, v: u32) {
        use statewall_common::firewall::{ifidx_slot, IFACE_PRESENT, MAP_FW_IFACES, MAP_FW_IFIDX};
        let mut h: aya::maps::HashMap<&mut MapData, u32, u32> =
            self.map(MAP_FW_IFACES).try_into().unwrap();
        h.insert(ifindex, v, 0).unwrap();
        if let Some(slot) = ifidx_slot(ifindex) {
            let mut a: Array<&mut MapData, u32> = self.map(MAP_FW_IFIDX).try_into().unwrap();
            a.set(slot, v | IFACE_PRESENT, 0).unwrap();
        }
    }

    /// Sets the kernel clock's test offset (ns added to `bpf_ktime_get_ns`).
    pub fn set_clock_offset(&mut self, ns: u64) {
        let mut a: Array<&mut MapData, u64> = self.map(MAP_CLOCK).try_into().unwrap();
        a.set(CLOCK_SLOT_TEST_OFFSET, ns, 0).unwrap();
    }

    /// Freezes the kernel clock at `t` (0 lets it run again): tests that compare the kernel
    /// with the reference need both to see the same instant.
    pub fn freeze(&mut self, t: u64) {
        let mut a: Array<&mut MapData, u64> = self.map(MAP_CLOCK).try_into().unwrap();
        a.set(CLOCK_SLOT_FROZEN, t, 0).unwrap();
    }

    /// Moves the kernel clock forward by `d`.
    pub fn advance(&mut self, d: Duration) {
        let cur = self.clock_offset();
        self.set_clock_offset(cur + d.as_nanos() as u64);
    }

    /// The current test offset.
    pub fn clock_offset(&mut self) -> u64 {
        let a: Array<&MapData, u64> = (&*self.map(MAP_CLOCK)).try_into().unwrap();
        a.get(&CLOCK_SLOT_TEST_OFFSET, 0).unwrap()
    }

    /// The kernel clock as the programs see it now.
    pub fn kernel_now(&mut self) -> u64 {
        statewall::engine::clock::monotonic_ns() + self.clock_offset()
    }

    /// Runs the kernel parser (tc flavour) on a frame and returns what it produced.
    pub fn parse_tc(&mut self, frame: &[u8]) -> PacketInfo {
        self.run_tc(ebpf::PROG_PARSE_TC, frame);
        self.parse_out()
    }

    /// Runs the kernel parser (XDP flavour) on a frame and returns what it produced.
    pub fn parse_xdp(&mut self, frame: &[u8]) -> PacketInfo {
        self.run_xdp(ebpf::PROG_PARSE_XDP, frame);
        self.parse_out()
    }

    fn parse_out(&mut self) -> PacketInfo {
        let a: Array<&MapData, PacketInfo> = (&*self.map(MAP_PARSE_OUT)).try_into().unwrap();
        a.get(&0, 0).unwrap()
    }
}

impl statewall::engine::access::MapAccess for TestBed {
    fn map_mut(&mut self, name: &str) -> statewall::engine::Result<&mut aya::maps::Map> {
        self.touched.insert(name.to_string());
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| statewall::engine::EngineError::Map {
                map: name.to_string(),
                msg: "not in the object".into(),
            })
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// A program to time: tc or XDP, its name, the frame.
pub type Subject<'a> = (bool, &'a str, &'a [u8]);

/// One run of `prog` on `frame`: the kernel's mean over `repeat` test runs, ns per packet.
pub fn time(bed: &mut TestBed, (xdp, prog, frame): Subject<'_>, repeat: u32) -> f64 {
    if xdp {
        ns(bed.time_xdp(prog, frame, repeat))
    } else {
        ns(bed.time_tc(prog, frame, repeat))
    }
}

/// Interleaves [`RUNS`] runs of a baseline and a subject; returns (baseline runs, subject
/// runs).
pub fn interleave(
    bed: &mut TestBed,
    repeat: u32,
    base: Subject<'_>,
    subj: Subject<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        b.push(time(bed, base, repeat));
        s.push(time(bed, subj, repeat));
    }
    (b, s)
}
