//! The fuzz targets' saved corpora (`fuzz/corpus/<target>/`: real client packets, example
//! configs, knockd.conf and access.conf files, and whatever the fuzzers kept) replayed
//! through the same entry points (`statewall_harness::fuzzing`), as an ordinary test. The fuzzers
//! themselves run in `make soak`.

use std::path::Path;

#[test]
fn corpora_replay_without_findings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, f) in statewall_harness::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{name}: {} makes the target panic", p.display());
            n += 1;
        }
        assert!(n >= 2, "{name}: only {n} corpus files");
    }
}

/// The seeds are what they claim: the KAT pkd knock and the real fwknop packets verify,
/// the configs parse (so the fuzzers start from inputs that reach deep).
#[test]
fn seeds_reach_the_accepting_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let kat = std::fs::read(root.join("spa_pkd/kat")).unwrap();
    let (port, payload) = kat.split_at(2);
    let port = u16::from_be_bytes([port[0], port[1]]);
    assert!(statewall::spa::pkd_check(
        payload,
        port,
        0,
        &[statewall_harness::fuzzing::pkd_action()]
    )
    .is_ok());
    let pkt = std::fs::read(root.join("spa_fwknop/access.pkt")).unwrap();
    assert!(statewall::spa::fwknop_check(
        &pkt,
        "10.1.0.2".parse().unwrap(),
        statewall_harness::fuzzing::NOW,
        &[statewall_harness::fuzzing::fwknop_stanza()]
    )
    .is_ok());
    for f in ["statewall.toml", "full.toml", "xfsm-udp-return.toml"] {
        let text = std::fs::read_to_string(root.join("config").join(f)).unwrap();
        statewall::config::Config::parse(&text, f).unwrap();
    }
    let text = std::fs::read_to_string(root.join("import_fwknop/access.conf")).unwrap();
    assert_eq!(
        statewall::import::fwknop::import(&text, "a")
            .unwrap()
            .config
            .spa
            .fwknop
            .len(),
        2
    );
}

/// The dynmon seeds are real objects: they normalise (the C ones have `tcx/ingress`
/// sections) and their BTF names the maps' key and value types.
#[test]
fn dynmon_seeds_are_objects_with_map_types() {
    use statewall::dynmon::{btf::Btf, elf};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/dynmon_object");
    for (f, map) in [
        ("flows.o", "flows"),
        ("hold.o", "counts"),
        ("rust-ports.o", "PORTS"),
    ] {
        let data = std::fs::read(root.join(f)).unwrap();
        let out = elf::normalise(&data).unwrap();
        let names: Vec<String> = elf::sections(&out)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("classifier")),
            "{f}: {names:?}"
        );
        let btf = Btf::parse(elf::btf(&out).unwrap().unwrap()).unwrap();
        let t = btf.map_types(map).unwrap();
        assert!(t.key != 0 && t.value != 0, "{f}: {map}: {t:?}");
    }
}

/// The capture seeds read: a pcap of Ethernet frames and a pcapng of Linux cooked v2
/// frames, three packets each (a TCP handshake's first two and a DNS query).
#[test]
fn capture_seeds_read_their_packets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/capture");
    for f in ["pcap_eth", "pcapng_sll2"] {
        let c = statewall::detect::capture::read(&std::fs::read(root.join(f)).unwrap()).unwrap();
        assert_eq!((c.frames, c.packets.len(), c.malformed), (3, 3, 0), "{f}");
        assert_eq!(c.packets[2].key.proto, 17, "{f}");
    }
}
