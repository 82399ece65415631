//! Scratch directories: where clang's input and output, and an object's pins while it
//! loads, are kept for a moment.

use std::path::PathBuf;

use super::error::DynmonError;

/// A new directory only this process can have made: a random name, created with
/// `mkdir` (which fails on anything already there, a symlink included), mode 0700.
pub(super) fn private_dir(base: &std::path::Path, prefix: &str) -> Result<PathBuf, DynmonError> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..16 {
        let mut r = [0u8; 8];
        // SAFETY: getrandom writes at most r.len() bytes into r.
        let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
        if n != r.len() as isize {
            return Err(DynmonError::Host("getrandom failed".into()));
        }
        let d = base.join(format!("{prefix}-{:016x}", u64::from_le_bytes(r)));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(DynmonError::Host(format!("creating {}: {e}", d.display()))),
        }
    }
    Err(DynmonError::Host(format!(
        "no fresh directory under {}",
        base.display()
    )))
}
