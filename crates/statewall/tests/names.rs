//! One name per map on both sides of the boundary: every map in the kernel objects this
//! build embeds is named by a constant of the common crate, and every map the common crate
//! names is in one of those objects. The objects are read as built (their ELF map
//! sections), the constants from the common crate's sources, so a rename on one side only
//! fails here.

use std::{collections::BTreeSet, path::Path};

/// Every `"SW_..."` string literal in the common crate's sources.
fn common_names() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../statewall-common/src");
    let mut out = BTreeSet::new();
    let mut files = Vec::new();
    let mut dirs = vec![dir];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("\"SW_") {
            let rest = &text[i + 1..];
            let end = rest.find('"').unwrap();
            out.insert(rest[..end].to_string());
        }
    }
    out
}

fn object_maps(bytes: &[u8]) -> BTreeSet<String> {
    let obj = aya_obj::Object::parse(bytes).expect("parse the embedded object");
    obj.maps
        .keys()
        .filter(|k| !k.starts_with('.'))
        .cloned()
        .collect()
}

#[test]
fn kernel_map_names_equal_the_common_constants() {
    let common = common_names();
    let main = object_maps(statewall::engine::ebpf::OBJECT);
    let monitor = object_maps(statewall::monitor::OBJECT);
    assert!(main.len() > 20 && monitor.len() > 4, "{main:?} {monitor:?}");
    let kernel: BTreeSet<String> = main.union(&monitor).cloned().collect();
    let unnamed: Vec<_> = kernel.difference(&common).collect();
    assert!(
        unnamed.is_empty(),
        "kernel maps without a constant in statewall-common: {unnamed:?}"
    );
    // Names the common crate gives that are no map must be loader-set globals of an
    // object (the tests' held monitor included): their symbol names are in its string
    // table.
    let held = std::fs::read(statewall::monitor::HELD_OBJECT_PATH).unwrap();
    let in_object = |n: &str| {
        [
            statewall::engine::ebpf::OBJECT,
            statewall::monitor::OBJECT,
            &held[..],
        ]
        .iter()
        .any(|b| {
            b.windows(n.len() + 1)
                .any(|w| &w[..n.len()] == n.as_bytes() && w[n.len()] == 0)
        })
    };
    let dangling: Vec<_> = common
        .iter()
        .filter(|n| !kernel.contains(*n) && !in_object(n))
        .collect();
    assert!(
        dangling.is_empty(),
        "constants in statewall-common naming nothing in the kernel objects: {dangling:?}"
    );
    // Every pinned map is one of them.
    for m in statewall::engine::ebpf::PINNED_MAPS {
        assert!(main.contains(*m), "pinned map {m} is not in the object");
    }
}
