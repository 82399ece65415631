//! Upgrades keep the on-disk format: the pins of the previous release, as listed in
//! `tests/data/pins-previous.txt` (every pinned map with its type, key and value sizes and
//! entries; every pinned program; every link, by hook and program), are exactly what this
//! build lays out for the same config, so a daemon of this build started on a previous
//! daemon's pins opens every one of them; and a restart adopts every map, program and link
//! with unchanged ids while the same pins stay. The one change allowed is a counter array
//! that grew (a release added a counter): a daemon started on the shorter one carries its
//! counts over into one of this build's size (`engine::migrate`), shown with a shorter
//! array laid out by hand.

mod common;

use std::path::Path;

use common::*;
use statewall_harness::netns::Pair;

const FIXTURE: &str = include_str!("data/pins-previous.txt");

/// The pins under `root`, one line each, with the namespace and interface of `pair`
/// written as `NETNS` and `IF` and the object id as `OBJECT`.
fn layout(root: &Path, pair: &Pair) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    let mut out: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            match parts.as_slice() {
                ["maps", name] => {
                    let i = aya::maps::MapInfo::from_pin(f).unwrap();
                    Some(format!(
                        "maps/{name} {:?} key={} value={} entries={}",
                        i.map_type().unwrap(),
                        i.key_size(),
                        i.value_size(),
                        i.max_entries()
                    ))
                }
                ["progs", _, prog] => Some(format!("progs/OBJECT/{prog}")),
                ["links", ns, ifname, spot] => Some(format!(
                    "links/{}/{}/{spot}",
                    if *ns == pair.server.name { "NETNS" } else { ns },
                    if *ifname == pair.server_if {
                        "IF"
                    } else {
                        ifname
                    },
                )),
                // The daemon's lock file and the like are no pins.
                _ => None,
            }
        })
        .collect();
    out.sort();
    out
}

#[test]
fn previous_release_pins_are_laid_out_and_adopted() {
    let p = Paths::new("upgrade");
    let pair = Pair::new("upgrade");
    // Every stage that pins: a knock door (xfsm), a pkd action (spa), a protected port
    // (gate), and a firewall instance made through the API.
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[gate]\nprotected = [\"udp/9922\"]\n\n[[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/2222\"]\n\n[[spa.pkd]]\nname = \"pkd\"\nport = 2200\ntag = \"SSHK\"\nkey = \"test\"\n",
            pair.server_if, pair.server.name
        ),
    )
    .unwrap();
    let d = Daemon::start(&p, &[]);
    d.firewall_on(
        "fw1",
        &pair,
        r#"[{"l4proto": "TCP", "dport": 22, "action": "ACCEPT"}]"#,
    );
    let want: Vec<String> = FIXTURE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let got = layout(&p.root, &pair);
    same_but_grown_counters(&got, &want);
    let before = status_ids(&d.get("/api/v1/status"));
    assert!(!before.0.is_empty() && !before.2.is_empty());
    assert_eq!(d.stop(), 0);
    let d = Daemon::start(&p, &[]);
    assert_eq!(
        status_ids(&d.get("/api/v1/status")),
        before,
        "maps, programs and links adopted with their ids"
    );
    assert_eq!(layout(&p.root, &pair), got);
    assert_eq!(
        d.get("/api/v1/status")["adopted"],
        serde_json::Value::Bool(true)
    );
    assert_eq!(d.stop(), 0);
}

/// Maps this build pins that the previous release did not: a daemon of this build started
/// on that release's pins makes them (the load pins what is missing and reuses the rest).
const ADDED_SINCE_PREVIOUS: &[&str] = &[
    "SW_GATE_LIMITS",
    "SW_XFSM_CONDS",
    "SW_XFSM_UPD",
    "SW_XFSM_REGS",
    "SW_XFSM_GLOBALS",
    "SW_XFSM_ACTS",
    "SW_SWITCH",
    "SW_SWITCH_IF",
    "SW_XFSM_FSTATES",
    "SW_XFSM_FREGS",
    "SW_DETECT_ALLOW",
    "SW_DETECT_BLOCK",
    "SW_DETECT_COUNT",
    "SW_DETECT_DEST",
    "SW_DETECT_SYNS",
    "SW_FW_RULEID",
    "SW_FW_RANK",
    "SW_FW_GUARD",
    "SW_FW_LINEAR",
    "SW_FW_IFIDX",
    "SW_FW_V4",
];

/// Programs this build pins that the previous release did not (loaded and pinned on top
/// of that release's pins, like a map added since).
const PROGRAMS_ADDED_SINCE_PREVIOUS: &[&str] = &["sw_fw_xdp", "sw_switch", "sw_detect"];

/// `got` (this build's pins) equals `want` (the previous release's) line by line, except a
/// counter array of `engine::migrate::COUNTER_MAPS` that has more entries now, and the maps
/// added since.
fn same_but_grown_counters(got: &[String], want: &[String]) {
    let added = |l: &String| {
        ADDED_SINCE_PREVIOUS
            .iter()
            .any(|m| l.starts_with(&format!("maps/{m} ")))
            || PROGRAMS_ADDED_SINCE_PREVIOUS
                .iter()
                .any(|p| l == &format!("progs/OBJECT/{p}"))
    };
    for m in ADDED_SINCE_PREVIOUS {
        assert!(
            got.iter().any(|l| l.starts_with(&format!("maps/{m} "))),
            "{m} is listed as added but not pinned"
        );
    }
    for p in PROGRAMS_ADDED_SINCE_PREVIOUS {
        assert!(
            got.iter().any(|l| l == &format!("progs/OBJECT/{p}")),
            "{p} is listed as added but not pinned"
        );
    }
    let got: Vec<String> = got.iter().filter(|l| !added(l)).cloned().collect();
    let split = |l: &str| -> (String, Option<u32>) {
        match l.rsplit_once(" entries=") {
            Some((head, n)) => (head.to_string(), n.parse().ok()),
            None => (l.to_string(), None),
        }
    };
    let mismatch = || {
        format!(
            "this build's pins differ from the previous release's (tests/data/pins-previous.txt); \
             a change of the on-disk format needs a migration. This build's:\n{}",
            got.join("\n")
        )
    };
    assert_eq!(got.len(), want.len(), "{}", mismatch());
    for (g, w) in got.iter().zip(want) {
        if g == w {
            continue;
        }
        let ((gh, gn), (wh, wn)) = (split(g), split(w));
        let grown = statewall::engine::migrate::COUNTER_MAPS
            .iter()
            .any(|m| gh.starts_with(&format!("maps/{m} ")))
            && gh == wh
            && gn > wn;
        assert!(grown, "{g} (was {w}): {}", mismatch());
    }
}

/// Pins at `path` a per-CPU counter array of `n` entries, entry `i` of CPU `c` holding
/// `value(i, c)`, as an older build would have left it.
fn pin_counters(path: &Path, n: u32, value: impl Fn(u32, usize) -> u64) {
    use aya::maps::{MapData, PerCpuArray, PerCpuValues};
    let mut a: PerCpuArray<MapData, u64> = PerCpuArray::create(n, 0).unwrap();
    let ncpu = aya::util::nr_cpus().unwrap();
    for i in 0..n {
        let v: Vec<u64> = (0..ncpu).map(|c| value(i, c)).collect();
        a.set(i, PerCpuValues::try_from(v).unwrap(), 0).unwrap();
    }
    a.pin(path).unwrap();
}

/// The per-CPU counter array pinned at `path`: every entry's values, by CPU.
fn pinned_counters(path: &Path) -> Vec<Vec<u64>> {
    use aya::maps::{MapData, PerCpuArray};
    let n = aya::maps::MapInfo::from_pin(path).unwrap().max_entries();
    let md = MapData::from_pin(path).unwrap();
    let a: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(md)).unwrap();
    (0..n)
        .map(|i| a.get(&i, 0).unwrap().iter().copied().collect())
        .collect()
}

/// A counter array pinned shorter by an older build (the previous release's 13 xfsm
/// counters) is carried over: the daemon starts, the pin now has this build's size, and
/// the old counts are in it.
#[test]
fn a_shorter_counter_array_is_carried_over() {
    use statewall_common::xfsm::{COUNTERS, MAP_STATS};
    let p = Paths::new("grown");
    let pins = statewall::engine::pins::Pins::new(&p.root);
    pins.create().unwrap();
    let old = 13u32;
    assert!(
        old < COUNTERS,
        "the test needs this build to have more counters"
    );
    let was = |i: u32, c: usize| 1000 * (i as u64 + 1) + c as u64;
    pin_counters(&pins.map(MAP_STATS), old, was);
    std::fs::write(&p.config, "").unwrap();
    let d = Daemon::start(&p, &[]);
    let got = pinned_counters(&pins.map(MAP_STATS));
    assert_eq!(
        got.len(),
        COUNTERS as usize,
        "the pin has this build's size"
    );
    for (i, per_cpu) in got.iter().enumerate() {
        // (The daemon's own packets may have been counted since: at least the old counts.)
        for (c, v) in per_cpu.iter().enumerate() {
            let was = if (i as u32) < old {
                was(i as u32, c)
            } else {
                0
            };
            assert!(*v >= was, "counter {i} cpu {c}: {v} < {was}");
        }
    }
    assert_eq!(d.stop(), 0, "{}", logs(&p));
}

/// An upgrade refused half-way (here: another pinned map with a layout this build cannot
/// use) leaves the shorter counter array pinned as the older build left it, counts and
/// size, with nothing moved aside; once the obstacle is gone the same start carries it.
#[test]
fn a_refused_upgrade_leaves_the_older_counters_pinned() {
    use aya::maps::{Array, MapData};
    use statewall_common::xfsm::{COUNTERS, MAP_STATS};
    let p = Paths::new("grownrefused");
    let pins = statewall::engine::pins::Pins::new(&p.root);
    pins.create().unwrap();
    let old = 13u32;
    let ncpu = aya::util::nr_cpus().unwrap();
    let value = |i: u32, c: usize| 7000 + 10 * i as u64 + c as u64;
    let want: Vec<Vec<u64>> = (0..old)
        .map(|i| (0..ncpu).map(|c| value(i, c)).collect())
        .collect();
    pin_counters(&pins.map(MAP_STATS), old, value);
    let bad: Array<MapData, u8> = Array::create(3, 0).unwrap();
    let bad_pin = pins.map(statewall_common::maps::MAP_GATE_LIMITS);
    bad.pin(&bad_pin).unwrap();
    let aside = p.root.join("carried").join(MAP_STATS);
    let check_old = || {
        assert_eq!(
            pinned_counters(&pins.map(MAP_STATS)),
            want,
            "the older build's array is pinned again, with its counts"
        );
        assert!(!aside.exists(), "{} left behind", aside.display());
    };
    for _ in 0..2 {
        let e = statewall::engine::Engine::open(&pins, &[]).err();
        assert!(e.is_some(), "the incompatible pin must refuse the start");
        check_old();
    }
    // A start that died after moving the pin aside: the next one puts it back first.
    // (bpffs has no rename: pinned again, then unpinned.)
    let md = MapData::from_pin(pins.map(MAP_STATS)).unwrap();
    std::fs::create_dir_all(p.root.join("carried")).unwrap();
    md.pin(&aside).unwrap();
    std::fs::remove_file(pins.map(MAP_STATS)).unwrap();
    assert!(statewall::engine::Engine::open(&pins, &[]).is_err());
    check_old();
    std::fs::remove_file(&bad_pin).unwrap();
    let eng = statewall::engine::Engine::open(&pins, &[]).unwrap();
    let got = pinned_counters(&pins.map(MAP_STATS));
    assert_eq!(got.len(), COUNTERS as usize);
    assert_eq!(got[..old as usize], want[..], "counters carried over");
    assert!(!p.root.join("carried").exists(), "the moved pins are gone");
    drop(eng);
}
