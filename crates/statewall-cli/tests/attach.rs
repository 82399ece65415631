//! Attachment with real traffic: XDP mode, and tcx ordering next to a program statewall
//! does not own (statewall's stages go first; the foreign program keeps running after).

mod common;

use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};
use common::*;
use statewall::{config::Config, engine::pins::Pins, engine::Engine};
use statewall_harness::netns::Pair;

fn cfg(pair: &Pair, ingress: &str) -> Config {
    Config::parse(
        &format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\ningress = \"{ingress}\"\n[gate]\nprotected = [\"udp/9922\"]\n",
            pair.server_if, pair.server.name
        ),
        "test",
    )
    .unwrap()
}

#[test]
fn xdp_ingress_enforces_and_switches_back_to_tcx() {
    let pair = Pair::new("xdp");
    let p = Paths::new("xdp");
    let pins = Pins::new(&p.root);
    let c = cfg(&pair, "xdp");
    let mut eng = Engine::open(&pins, &c.map_sizes()).unwrap();
    eng.reconcile(&c.links()).unwrap();
    eng.apply_gate(&c.protected_ports(), &c.spa.reset_ports(), &c.gate)
        .unwrap();
    let links = eng.link_states();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].spot.hook, "xdp");

    let mut udp = Udp::new(&pair, &[9922, 9923]);
    assert!(udp.passes(9923, b"a"));
    assert!(!udp.passes(9922, b"b"));
    let k = statewall::daemon::api::grant_key(pair.client_v4.into(), "udp", 9922).unwrap();
    eng.grant(k, 60, 1).unwrap();
    assert!(udp.passes(9922, b"c"));

    // Reconcile to tcx: the XDP link goes, the tcx link comes, enforcement holds.
    let c2 = cfg(&pair, "tcx");
    eng.reconcile(&c2.links()).unwrap();
    let links = eng.link_states();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].spot.hook, "ingress");
    eng.revoke(&k).unwrap();
    assert!(
        udp.passes(9922, b"d"),
        "the flow opened under the grant lives on"
    );
    udp.new_flow(&pair);
    assert!(!udp.passes(9922, b"e"), "a new flow needs a grant");
    statewall::engine::teardown(&pins).unwrap();
}

#[test]
fn statewall_goes_first_before_foreign_programs() {
    let pair = Pair::new("order");
    let p = Paths::new("order");
    // A foreign program already on the hook.
    let mut bed = statewall_harness::testrun::TestBed::new();
    let foreign: &mut SchedClassifier = bed
        .ebpf
        .program_mut(statewall::engine::ebpf::PROG_EMPTY_TC)
        .unwrap()
        .try_into()
        .unwrap();
    foreign.load().unwrap();
    let ifname = pair.server_if.clone();
    pair.server.run(|| {
        foreign
            .attach_with_options(
                &ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .unwrap()
    });

    let pins = Pins::new(&p.root);
    let c = cfg(&pair, "tcx");
    let mut eng = Engine::open(&pins, &c.map_sizes()).unwrap();
    eng.reconcile(&c.links()).unwrap();
    eng.apply_gate(&c.protected_ports(), &c.spa.reset_ports(), &c.gate)
        .unwrap();
    let hooks = eng.hook_states(&c.interface_names());
    let ingress = hooks.iter().find(|h| h.hook == "ingress").unwrap();
    let names: Vec<&str> = ingress.programs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sw_gate", "sw_empty_tc"], "run order");

    // The gate still drops (SHOT ends the chain) and passes the rest (NEXT runs the foreign one).
    let udp = Udp::new(&pair, &[9922, 9923]);
    assert!(!udp.passes(9922, b"x"));
    assert!(udp.passes(9923, b"y"));
    statewall::engine::teardown(&pins).unwrap();
    drop(bed);
}

#[test]
fn egress_hook_attach_enforce_and_detach() {
    use statewall::engine::pins::LinkSpot;
    let pair = Pair::new("egr");
    let p = Paths::new("egr");
    let pins = Pins::new(&p.root);
    let c = cfg(&pair, "off");
    let mut eng = Engine::open(&pins, &c.map_sizes()).unwrap();
    eng.apply_gate(&c.protected_ports(), &c.spa.reset_ports(), &c.gate)
        .unwrap();
    // The gate on the client's egress: packets leaving the client for udp/9922 are dropped.
    let spot = LinkSpot {
        netns: Some(pair.client.name.clone()),
        ifname: pair.client_if.clone(),
        hook: "egress".into(),
        program: statewall::engine::ebpf::PROG_GATE.into(),
    };
    eng.reconcile_links(std::slice::from_ref(&spot)).unwrap();
    assert!(pins.link(&spot).exists());
    let ifname = pair.client_if.clone();
    let names: Vec<String> = pair.client.run(|| {
        SchedClassifier::query_tcx(&ifname, TcAttachType::Egress)
            .unwrap()
            .1
            .iter()
            .map(|i| i.name_as_str().unwrap().to_string())
            .collect()
    });
    assert_eq!(names, ["sw_gate"]);
    let udp = Udp::new(&pair, &[9922, 9923]);
    assert!(!udp.passes(9922, b"e1"));
    assert!(udp.passes(9923, b"e2"));
    // Detach by reconciling to nothing: traffic flows again.
    eng.reconcile_links(&[]).unwrap();
    assert!(!pins.link(&spot).exists());
    assert!(udp.passes(9922, b"e3"));
    statewall::engine::teardown(&pins).unwrap();
}

/// Pins from a build whose counter array is longer than this build's (a newer release's,
/// started on by an older one) are refused with a pointer to `statewall teardown`, instead
/// of adopted and read in part. (A shorter one, an older release's, is carried over:
/// tests/upgrade.rs.)
#[test]
fn pinned_array_of_another_size_is_refused() {
    let cfg = Config::parse("", "test").unwrap();
    let k = Kernel::new("pinsize", &cfg);
    let path = k.pins.map(statewall_common::firewall::MAP_FW_COUNTERS);
    std::fs::remove_file(&path).unwrap();
    // BPF_MAP_CREATE of a PERCPU_ARRAY u32 -> u64 with 9 entries, then BPF_OBJ_PIN.
    let mut attr = [0u32; 16];
    attr[..4].copy_from_slice(&[6, 4, 8, 9]);
    // SAFETY: attr is a bpf_attr for BPF_MAP_CREATE (type, key, value, entries; rest 0).
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 64) };
    assert!(fd >= 0, "map create: {}", std::io::Error::last_os_error());
    let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut pin = [0u64; 2];
    pin[0] = cpath.as_ptr() as u64;
    pin[1] = fd as u64;
    // SAFETY: pin is a bpf_attr for BPF_OBJ_PIN (pathname, bpf_fd, file_flags 0).
    let r = unsafe { libc::syscall(libc::SYS_bpf, 6, pin.as_ptr(), 16) };
    assert_eq!(r, 0, "pin: {}", std::io::Error::last_os_error());
    // SAFETY: closing the fd made above (the pin keeps the map).
    unsafe { libc::close(fd as i32) };
    let err = Engine::open(&k.pins, &cfg.map_sizes())
        .err()
        .expect("a pinned array of another size was adopted")
        .to_string();
    assert!(
        err.contains("SW_FW_COUNTERS") && err.contains("9 entries") && err.contains("teardown"),
        "{err}"
    );
}
