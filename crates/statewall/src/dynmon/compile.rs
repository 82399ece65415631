//! From the user's code to an object: C compiled with clang (bounded in time, in a private
//! directory), Polycube's BCC dialect translated first ([`super::bcc`]), objects passed
//! through.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{
    error::{BadObject, DynmonError},
    scratch::private_dir,
    spec::PathSpec,
};
use crate::types::Direction;

/// The clang statewall compiles with: `STATEWALL_CLANG`, else `clang`, else `clang-NN`.
pub fn find_clang() -> Option<PathBuf> {
    if let Ok(c) = std::env::var("STATEWALL_CLANG") {
        return Some(PathBuf::from(c));
    }
    let path = std::env::var_os("PATH")?;
    let names =
        std::iter::once("clang".to_string()).chain((14..=30).rev().map(|v| format!("clang-{v}")));
    for n in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(&n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}
/// Compiles libbpf-style C to an eBPF object with BTF (`clang -target bpf -g -O2`); a
/// program in Polycube's BCC dialect is translated first, for a path on `dir`.
pub fn compile_c(src: &str, dir: Direction) -> Result<Vec<u8>, DynmonError> {
    compile_path(src, dir, None, false).map(|(o, _)| o)
}

/// [`compile_c`] for one path of a monitor whose other path has source `other`: also the
/// names of its `"extern"` tables (the other path's, to be shared with it).
pub(super) fn compile_path(
    src: &str,
    dir: Direction,
    other: Option<&str>,
    xdp: bool,
) -> Result<(Vec<u8>, Vec<String>), DynmonError> {
    let (src, externs) = if super::bcc::is_bcc(src) {
        let t = super::bcc::translate_with(src, dir, other, xdp)?;
        (t.c, t.externs)
    } else {
        (src.to_string(), Vec::new())
    };
    clang(&src).map(|o| (o, externs))
}

fn clang(src: &str) -> Result<Vec<u8>, DynmonError> {
    let clang = find_clang().ok_or(
        "C source needs clang, which is not installed here: install it (Debian: `apt-get install \
         clang-22 libbpf-dev`; statewall's scripts/setup.sh does), or load an object built \
         elsewhere with `clang -target bpf -g -O2 -c prog.c`",
    )
    .map_err(|m| DynmonError::Compile(m.into()))?;
    let dir = private_dir(&std::env::temp_dir(), "statewall-dynmon")?;
    let (c, o) = (dir.join("prog.c"), dir.join("prog.o"));
    let run = || -> Result<Vec<u8>, DynmonError> {
        std::fs::write(&c, src)
            .map_err(|e| DynmonError::Host(format!("writing {}: {e}", c.display())))?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "x86_64-linux-gnu",
            "aarch64" => "aarch64-linux-gnu",
            other => other,
        };
        let out = std::process::Command::new(&clang)
            .args([
                "-target",
                "bpf",
                "-g",
                "-O2",
                "-Wall",
                "-Wno-unused-function",
            ])
            .arg(format!("-I/usr/include/{arch}"))
            .arg("-c")
            .arg(&c)
            .arg("-o")
            .arg(&o)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| DynmonError::Host(format!("running {}: {e}", clang.display())))?;
        let out = wait_bounded(out, CLANG_TIMEOUT)
            .map_err(|e| DynmonError::Host(format!("running {}: {e}", clang.display())))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).replace(&*c.to_string_lossy(), "prog.c");
            return Err(DynmonError::Compile(format!(
                "clang could not compile the source:\n{err}"
            )));
        }
        std::fs::read(&o).map_err(|e| DynmonError::Host(format!("reading {}: {e}", o.display())))
    };
    let r = run();
    let _ = std::fs::remove_dir_all(&dir);
    r
}
/// The object bytes of a path: its object (base64, or raw ELF bytes handed over as a
/// latin-1 string is not accepted), or its source compiled.
pub fn object_of(p: &PathSpec) -> Result<Vec<u8>, DynmonError> {
    path_object(p, None).map(|(o, _)| o)
}

/// [`object_of`] for a path of a monitor whose other path has source `other`; with the
/// path's `"extern"` tables.
pub(super) fn path_object(
    p: &PathSpec,
    other: Option<&str>,
) -> Result<(Vec<u8>, Vec<String>), DynmonError> {
    use base64::Engine;
    match (&p.source, &p.object) {
        (Some(_), Some(_)) => Err(DynmonError::Spec(
            "give `source` or `object`, not both".into(),
        )),
        (None, None) => Err(DynmonError::Spec(
            "no code: give `source` (C) or `object` (base64 ELF)".into(),
        )),
        (Some(s), None) => compile_path(s, p.direction, other, p.xdp),
        (None, Some(b)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| DynmonError::Spec(format!("`object` is not base64: {e}")))?;
            if !bytes.starts_with(b"\x7fELF") {
                return Err(BadObject("`object` is not an ELF file".into()).into());
            }
            Ok((bytes, Vec::new()))
        }
    }
}
/// Code as Dynmon's `code` field carries it: C source, or a base64 object.
pub fn code_field(code: &str) -> (Option<String>, Option<String>) {
    use base64::Engine;
    let t = code.trim();
    let is_obj = !t.contains(char::is_whitespace)
        && base64::engine::general_purpose::STANDARD
            .decode(t)
            .is_ok_and(|b| b.starts_with(b"\x7fELF"));
    if is_obj {
        (None, Some(t.to_string()))
    } else {
        (Some(code.to_string()), None)
    }
}
/// How long clang may take on one source.
pub(super) const CLANG_TIMEOUT: Duration = Duration::from_secs(120);
/// Waits for `child` at most `limit`, killing it after; its stderr is collected.
pub(super) fn wait_bounded(
    mut child: std::process::Child,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.take(1 << 20).read_to_end(&mut b);
        }
        b
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "clang took more than {} s and was stopped",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap_or_default(),
    })
}
