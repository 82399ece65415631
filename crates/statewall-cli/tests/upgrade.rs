//! Upgrades keep the on-disk format: the pins of the previous release, as listed in
//! `tests/data/pins-previous.txt` (every pinned map with its type, key and value sizes and
//! entries; every pinned program; every link, by hook and program), are exactly what this
//! build lays out for the same config, so a daemon of this build started on a previous
//! daemon's pins opens every one of them; and a restart adopts every map, program and link
//! with unchanged ids while the same pins stay.

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
    assert_eq!(
        got,
        want,
        "this build's pins differ from the previous release's (tests/data/pins-previous.txt); \
         a change of the on-disk format needs a migration. This build's:\n{}",
        got.join("\n")
    );
    let before = status_ids(&d.get("/api/v1/status"));
    assert!(!before.0.is_empty() && !before.2.is_empty());
    assert_eq!(d.stop(), 0);
    let d = Daemon::start(&p, &[]);
    assert_eq!(
        status_ids(&d.get("/api/v1/status")),
        before,
        "maps, programs and links adopted with their ids"
    );
    assert_eq!(layout(&p.root, &pair), want);
    assert_eq!(
        d.get("/api/v1/status")["adopted"],
        serde_json::Value::Bool(true)
    );
    assert_eq!(d.stop(), 0);
}
