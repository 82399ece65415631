//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `make soak`), also
//! replayed over the saved corpora by an ordinary test in `make test`. Each takes arbitrary
//! bytes, must not panic, and checks what must hold of whatever it accepts (a panic here is
//! a finding).

use std::net::IpAddr;

use statewall::{
    config::Config,
    spa::config::PkdConfig,
    spa::{self, Candidate, FwknopStanza, PkdAction},
};

/// Unix time the SPA targets run at (the fwknop seed packets' timestamp).
pub const NOW: u64 = 1795259832;

/// The keys of `crates/statewall-cli/tests/data/fwknop/keys.txt`.
const KEY_B64: &str = "Toe6r3nv+JnMD6CE9bdcXl9qrFuJ6PB8DXcY/fNm+Uw=";
const HMAC_B64: &str =
    "Pb3qth89EgpqbYUgIjXvKnd4ENXC0bBBnohof500GLEJK7zwxWpFrtwVx9Y3otV8zPi/rIVigsuRPF2bwzemZg==";

/// The pkd action the pkd target checks against (COMPAT.md's known-answer key and tag).
pub fn pkd_action() -> PkdAction {
    PkdAction {
        name: "fuzz".into(),
        port: 22,
        protos: vec![6],
        tag: *b"test",
        key: spa::pkd_bytes::<40>("testing test test").unwrap(),
        window: 60,
        skew: None,
        reset: false,
        min_interval: 0,
    }
}

/// The fwknop stanza the fwknop target checks against.
pub fn fwknop_stanza() -> FwknopStanza {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    FwknopStanza {
        enable_cmd: true,
        ..FwknopStanza::any_source(
            "fuzz",
            STANDARD.decode(KEY_B64).unwrap(),
            STANDARD.decode(HMAC_B64).unwrap(),
        )
    }
}

/// pkd: the first two bytes are the knock's destination port, the rest the payload.
pub fn spa_pkd(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let dport = u16::from_be_bytes([data[0], data[1]]);
    let payload = &data[2..];
    let acts = [pkd_action()];
    if let Ok((ok, digest)) = spa::pkd_check(payload, dport, NOW, &acts) {
        // Accepted means: 56 bytes, the tag, and the digest recomputed from the fields.
        assert_eq!(payload.len(), spa::PKD_LEN);
        assert_eq!(ok.len(), 1);
        let ts = u64::from_le_bytes(payload[4..12].try_into().unwrap());
        let random: [u8; 12] = payload[12..24].try_into().unwrap();
        assert_eq!(
            spa::pkd_digest(dport, b"test", ts, &random, &acts[0].key),
            digest
        );
    }
}

/// fwknop: the bytes are the UDP payload, from 10.1.0.2.
pub fn spa_fwknop(data: &[u8]) {
    let src: IpAddr = "10.1.0.2".parse().unwrap();
    let s = [fwknop_stanza()];
    if let Ok(r) = spa::fwknop_check(data, src, NOW, &s) {
        assert_eq!(r.addr, src, "a grant for another address");
        assert!(r.msg_type == 0 || !r.ports.is_empty());
        assert!(r.ts.abs_diff(NOW) <= 120);
        assert!(r.seconds > 0);
    }
    // The ring-buffer record decoder and the runtime must take any bytes too.
    if let Some(c) = Candidate::from_record(data) {
        assert!(
            c.payload.len() + std::mem::size_of::<statewall_common::spa::SpaHeader>() <= data.len()
        );
    }
}

/// The config parser: whatever it accepts serialises and parses again.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::parse(text, "fuzz.toml") {
        let again = toml::to_string(&c).expect("a valid config serialises");
        if let Err(e) = Config::parse(&again, "again.toml") {
            panic!("an accepted config does not parse again: {e}\n{again}");
        }
    }
}

/// knockd.conf import: whatever it converts is a valid config.
pub fn import_knockd(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imp) = statewall::import::knockd::import(text, "knockd.conf", &[]) {
        imp.config.validate("imported").expect("an import is valid");
    }
}

/// access.conf import: whatever it converts is a valid config.
pub fn import_fwknop(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imp) = statewall::import::fwknop::import(text, "access.conf") {
        imp.config.validate("imported").expect("an import is valid");
    }
}

/// nf-pkd action files: every action that resolves has a tag and a port.
pub fn actions_json(data: &[u8]) {
    if let Ok(list) = serde_json::from_slice::<Vec<PkdConfig>>(data) {
        for a in list {
            if let Ok(r) = a.resolve() {
                assert!(r.port != 0 && r.tag != [0; 4] && !r.protos.is_empty());
            }
        }
    }
}

/// REST bodies: a grant, a monitor, a firewall chain batch (`{"rules": [...]}`) applied to
/// a fixed chain, and an `apply` body, all from the same bytes. A grant that parses has a
/// protocol the gate knows or is refused; a monitor that validates has room for a session;
/// for the firewall bodies see below. An accepted batch gives rules that are normalised
/// (normalising again changes nothing) and compile, with origins that point at old rules;
/// a refused one names an operation that exists.
pub fn rest_bodies(data: &[u8]) {
    use statewall::daemon::api::{call::parse_body, grant::GrantRequest};
    use statewall::firewall::{
        batch::{apply_batch, BatchOp},
        ChainState, Instance, RuleSpec,
    };
    if let Ok(g) = parse_body::<GrantRequest>(data) {
        // What the grant handler does with it: a port spec, or a clear refusal.
        let r: Result<statewall::config::PortSpec, _> =
            format!("{}/{}", g.proto, g.port.max(1)).parse();
        if let Ok(ps) = r {
            assert!(ps.proto == 6 || ps.proto == 17);
        }
    }
    if let Ok(m) = parse_body::<statewall::monitor::MonitorSpec>(data) {
        if m.validate().is_ok() {
            assert!(
                m.sessions() > 0 && (m.kind != statewall::monitor::Kind::Ddos || m.total() > 0)
            );
        }
    }
    let start: Vec<Box<RuleSpec>> = ["10.0.0.0/8", "2001:db8::/32"]
        .iter()
        .map(|src| {
            Box::new(RuleSpec {
                src: Some(src.to_string()),
                l4proto: Some("TCP".into()),
                action: Some("DROP".into()),
                ..Default::default()
            })
        })
        .collect();
    let ops = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("rules").cloned())
        .and_then(|r| serde_json::from_value::<Vec<BatchOp>>(r).ok());
    if let Some(ops) = ops {
        {
            // The journal writes the operations as read, and replays them from that text.
            let text = serde_json::to_vec(&ops).expect("operations serialise");
            let again: Vec<BatchOp> = serde_json::from_slice(&text).expect("and read back");
            assert_eq!(again, ops, "a journal line replays the batch it holds");
            match apply_batch(&start, &ops) {
                Ok((rules, origin)) => {
                    assert_eq!(rules.len(), origin.len());
                    assert!(origin.iter().flatten().all(|&o| o < start.len()));
                    for r in &rules {
                        let (n, rule) = r.checked().expect("a kept rule is valid");
                        assert_eq!(n.normalise().as_ref(), Ok(&n), "normalising is idempotent");
                        assert_eq!(rule, n.rule(), "checked once, the same classifier rule");
                    }
                    let mut chains = std::collections::BTreeMap::new();
                    chains.insert(
                        0,
                        statewall::firewall::rules::Chain {
                            rules: rules.iter().map(|r| r.rule()).collect(),
                            default_action: statewall_common::firewall::ACT_ACCEPT,
                            accept_established: false,
                        },
                    );
                    statewall::firewall::tables::Tables::new(1 << 16)
                        .set_chains(&chains, &[])
                        .expect("an accepted batch compiles");
                }
                Err((i, msg)) => {
                    assert!(
                        i < ops.len().max(1) && !msg.to_string().is_empty(),
                        "{i}: {msg}"
                    );
                }
            }
        }
    }
    if let Ok(spec) = serde_json::from_slice::<statewall::firewall::ApplySpec>(data) {
        let inst = Instance {
            slot: 0,
            kind: "TC".into(),
            ports: Vec::new(),
            ingress: ChainState::default(),
            egress: ChainState::default(),
        };
        if let Ok(n) = inst.with(&spec) {
            for r in n.ingress.rules.iter().chain(&n.egress.rules) {
                r.normalise().expect("an applied rule is valid");
            }
        }
    }
}

/// A user's eBPF object as dynmon reads it: the ELF section table, the section renaming
/// (whose output must read back with the same sections, renamed ones only changing name),
/// and the BTF, every type of which is then decoded from the input's first bytes.
pub fn dynmon_object(data: &[u8]) {
    use statewall::dynmon::{btf::Btf, elf};
    if let Ok(secs) = elf::sections(data) {
        if let Ok(out) = elf::normalise(data) {
            let again = elf::sections(&out).expect("a normalised object reads back");
            assert_eq!(again.len(), secs.len());
            for (a, b) in secs.iter().zip(&again) {
                assert!(
                    a.name == b.name
                        || elf::normalised(&a.name).as_deref() == Some(b.name.as_str()),
                    "{} became {}",
                    a.name,
                    b.name
                );
            }
        }
    }
    let btf = elf::btf(data).ok().flatten().unwrap_or(data);
    if let Ok(b) = Btf::parse(btf) {
        let sample = &data[..data.len().min(256)];
        for id in 0..b.len().min(4096) as u32 {
            let _ = b.decode(id, sample);
            let _ = b.type_name(id);
            let _ = b.map_types(&b.type_name(id));
        }
    }
}

/// A capture file: read (pcap or pcapng), then its packets into the classifier's samples.
pub fn capture(data: &[u8]) {
    use statewall::detect::{capture, sessions, windows};
    if let Ok(c) = capture::read_sessions(data) {
        let shape = windows::Shape {
            t_ns: 1_000_000_000,
            n: 4,
            max_flows: 64,
            ..windows::Shape::default()
        };
        let s = sessions::from_packets(&c.sessions, shape);
        assert!(s
            .samples
            .iter()
            .all(|s| s.x.len() == windows::session::FEATURES && s.x.iter().all(|v| v.is_finite())));
        let w = windows::samples(&c.packets, shape);
        assert!(w
            .samples
            .iter()
            .all(|s| s.x.iter().all(|v| (0.0..=1.0).contains(v))));
    }
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The targets by name (the fuzz crate's and the corpus directories' names).
pub const TARGETS: [(&str, Target); 9] = [
    ("spa_pkd", spa_pkd),
    ("spa_fwknop", spa_fwknop),
    ("config", config),
    ("import_knockd", import_knockd),
    ("import_fwknop", import_fwknop),
    ("actions_json", actions_json),
    ("rest_bodies", rest_bodies),
    ("dynmon_object", dynmon_object),
    ("capture", capture),
];
