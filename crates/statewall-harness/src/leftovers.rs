//! What test processes that were killed left behind (a cancelled CI run, a ^C) in the
//! bpffs: their roots, named after their process id, each removed only when no process of
//! that id exists. (Their network namespaces are swept by [`crate::netns`], which stays
//! below the library.)

use std::sync::Once;

use crate::netns::{dead, pid_of};

/// The bpffs roots `/sys/fs/bpf/statewall-test-<pid>...` and `statewall-demo-<pid>` of
/// processes that no longer exist: their pinned links detached, their pins removed (the
/// programs and maps they held go with them). Once per process.
pub fn pins() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sweep_pins);
}

fn sweep_pins() {
    let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = pid_of(&n, "statewall-test-").or_else(|| pid_of(&n, "statewall-demo-"));
        if pid.is_some_and(dead) {
            let pins = statewall::engine::pins::Pins::new(e.path());
            if let Err(err) = statewall::engine::teardown(&pins) {
                eprintln!("leftover {}: {err:#}", e.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_pid_is_read_from_the_name() {
        assert_eq!(
            pid_of("statewall-test-2978-sf", "statewall-test-"),
            Some(2978)
        );
        assert_eq!(pid_of("statewall-demo-3234", "statewall-demo-"), Some(3234));
        assert_eq!(pid_of("swt-12-0-demo", "swt-"), Some(12));
        assert_eq!(pid_of("statewall-test-x-1", "statewall-test-"), None);
        assert_eq!(pid_of("statewall", "statewall-test-"), None);
    }

    #[test]
    fn a_root_of_a_dead_process_goes_and_a_live_one_stays() {
        // A process that has exited: its id is free until reused (checked).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        assert!(dead(gone), "pid {gone} was reused at once");
        let stale = format!("/sys/fs/bpf/statewall-test-{gone}-leftover");
        let live = format!("/sys/fs/bpf/statewall-test-{}-leftover", std::process::id());
        for d in [&stale, &live] {
            std::fs::create_dir_all(format!("{d}/maps")).unwrap();
        }
        sweep_pins();
        let (stale_left, live_left) = (Path::new(&stale).exists(), Path::new(&live).exists());
        let _ = std::fs::remove_dir_all(&live);
        let _ = std::fs::remove_dir_all(&stale);
        assert!(!stale_left, "{stale} stayed");
        assert!(live_left, "{live} was removed");
    }
}
