//! Builds the kernel crate (`crates/statewall-ebpf`) for `bpfel-unknown-none` with Debian's
//! rustc and bpf-linker (see `scripts/setup.sh`), and hands the object to the library
//! through `OUT_DIR/statewall.bpf.o`, and the monitor object (one load per monitor
//! instance) through `OUT_DIR/statewall-monitor.bpf.o`, and the Rust example of a dynamic
//! monitor (`examples/dynmon/rust`, a bin of the same crate) through
//! `OUT_DIR/dynmon-ports.bpf.o`, and the tests' monitor with a hold through
//! `OUT_DIR/statewall-monitor-held.bpf.o` (its path only is in the library).
//!
//! `STATEWALL_EBPF_OBJECT=/path/to/object` and `STATEWALL_MONITOR_OBJECT=/path` use
//! prebuilt objects instead.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("statewall.bpf.o");
    let out_mon = PathBuf::from(env::var("OUT_DIR").unwrap()).join("statewall-monitor.bpf.o");
    let out_example = PathBuf::from(env::var("OUT_DIR").unwrap()).join("dynmon-ports.bpf.o");
    let out_held = PathBuf::from(env::var("OUT_DIR").unwrap()).join("statewall-monitor-held.bpf.o");
    let ebpf = manifest.join("../statewall-ebpf");
    let common = manifest.join("../statewall-common");
    for p in [
        ebpf.join("src"),
        ebpf.join("Cargo.toml"),
        ebpf.join("Cargo.lock"),
        ebpf.join(".cargo/config.toml"),
        common.join("src"),
        common.join("Cargo.toml"),
        manifest.join("../../examples/dynmon/rust/src"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=STATEWALL_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=STATEWALL_MONITOR_OBJECT");

    if let (Ok(prebuilt), Ok(mon)) = (
        env::var("STATEWALL_EBPF_OBJECT"),
        env::var("STATEWALL_MONITOR_OBJECT"),
    ) {
        std::fs::copy(&prebuilt, &out)
            .unwrap_or_else(|e| panic!("STATEWALL_EBPF_OBJECT={prebuilt}: {e}"));
        std::fs::copy(&mon, &out_mon)
            .unwrap_or_else(|e| panic!("STATEWALL_MONITOR_OBJECT={mon}: {e}"));
        // The Rust dynmon example: only its tests need it.
        match env::var("STATEWALL_DYNMON_EXAMPLE_OBJECT") {
            Ok(p) => std::fs::copy(&p, &out_example)
                .map(|_| ())
                .unwrap_or_else(|e| panic!("STATEWALL_DYNMON_EXAMPLE_OBJECT={p}: {e}")),
            Err(_) => std::fs::write(&out_example, b"").unwrap(),
        }
        match env::var("STATEWALL_MONITOR_HELD_OBJECT") {
            Ok(p) => std::fs::copy(&p, &out_held)
                .map(|_| ())
                .unwrap_or_else(|e| panic!("STATEWALL_MONITOR_HELD_OBJECT={p}: {e}")),
            Err(_) => std::fs::write(&out_held, b"").unwrap(),
        }
        return;
    }

    let rustc = Path::new("/usr/bin/rustc");
    if !rustc.exists() {
        panic!(
            "building the eBPF programs needs Debian's rustc at /usr/bin/rustc \
             (package rustc-web) and bpf-linker: run `sudo scripts/setup.sh` first"
        );
    }
    // A target dir of its own: the outer build holds the workspace target lock.
    let target_dir = manifest.join("../../target/ebpf");
    let cargo_home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env::var("HOME").unwrap_or_default()).join(".cargo"));
    let path = format!(
        "{}:{}",
        cargo_home.join("bin").display(),
        env::var("PATH").unwrap_or_default()
    );
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&ebpf)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTC", rustc)
        .env(
            "RUSTC_BOOTSTRAP",
            "aya_ebpf,statewall_monitor,statewall_monitor_held,statewall",
        )
        .env("PATH", path)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cannot run cargo for the eBPF crate");
    if !output.status.success() {
        panic!(
            "building crates/statewall-ebpf failed (run `sudo scripts/setup.sh` if bpf-linker \
             or the BPF core library is missing):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for (name, to) in [
        ("statewall", &out),
        ("statewall-monitor", &out_mon),
        ("dynmon-ports", &out_example),
        ("statewall-monitor-held", &out_held),
    ] {
        let obj = target_dir.join("bpfel-unknown-none/release").join(name);
        std::fs::copy(&obj, to).unwrap_or_else(|e| panic!("copy {}: {e}", obj.display()));
    }
}
