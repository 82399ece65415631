//! Layout of statewall's pins under the bpffs root (default `/sys/fs/bpf/statewall`):
//!
//! ```text
//! <root>/maps/<MAP_NAME>                      every map, by its name in the object
//! <root>/progs/<program>                      every program the daemon loaded
//! <root>/links/<netns>/<ifname>/<hook>-<program>   one per attachment
//! ```
//! `<netns>` is the network namespace name under `/run/netns`, or `-` for the daemon's own;
//! `<hook>` is `ingress`, `egress` (tcx) or `xdp`. bpffs refuses `.` in names, so `.` in
//! interface and namespace names (`eth0.100`) is written `%2E` (and `%` as `%25`). An operator can inspect them all with
//! `bpftool map show pinned ...`.

use std::path::{Path, PathBuf};

/// Default bpffs root.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/statewall";

/// The pin directories of one statewall instance.
#[derive(Clone, Debug)]
pub struct Pins {
    /// The root directory.
    pub root: PathBuf,
}

/// Where a program is attached.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct LinkSpot {
    /// Network namespace name, or `None` for the daemon's own.
    pub netns: Option<String>,
    /// Interface name.
    pub ifname: String,
    /// `ingress`, `egress` or `xdp`.
    pub hook: String,
    /// Program name.
    pub program: String,
}

impl Pins {
    /// Pins under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Pins { root: root.into() }
    }
    /// `<root>/maps`.
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    /// `<root>/maps/<name>`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }
    /// `<root>/progs`.
    pub fn progs(&self) -> PathBuf {
        self.root.join("progs")
    }
    /// `<root>/progs/<name>`.
    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs().join(name)
    }
    /// `<root>/links`.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    /// The pin of one attachment.
    pub fn link(&self, s: &LinkSpot) -> PathBuf {
        self.links()
            .join(s.netns.as_deref().map(encode).unwrap_or_else(|| "-".into()))
            .join(encode(&s.ifname))
            .join(format!("{}-{}", s.hook, s.program))
    }

    /// Creates the directories.
    pub fn create(&self) -> std::io::Result<()> {
        for d in [self.maps(), self.progs(), self.links()] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// Every pinned attachment found under `links/`.
    pub fn list_links(&self) -> Vec<LinkSpot> {
        let mut out = Vec::new();
        let Ok(nss) = std::fs::read_dir(self.links()) else {
            return out;
        };
        for ns in nss.flatten() {
            let nsname = decode(&ns.file_name().to_string_lossy());
            let Ok(ifs) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for i in ifs.flatten() {
                let ifname = decode(&i.file_name().to_string_lossy());
                let Ok(ls) = std::fs::read_dir(i.path()) else {
                    continue;
                };
                for l in ls.flatten() {
                    let n = l.file_name().to_string_lossy().into_owned();
                    if let Some((hook, prog)) = n.split_once('-') {
                        out.push(LinkSpot {
                            netns: if nsname == "-" {
                                None
                            } else {
                                Some(nsname.clone())
                            },
                            ifname: ifname.clone(),
                            hook: hook.into(),
                            program: prog.into(),
                        });
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// True when a bpffs is mounted at or above the root's parent.
    pub fn on_bpffs(&self) -> bool {
        let mut p: &Path = &self.root;
        loop {
            if let Some(parent) = p.parent() {
                if parent.exists() {
                    return is_bpffs(parent);
                }
                p = parent;
            } else {
                return false;
            }
        }
    }
}

/// True when `p` lies on a bpf filesystem.
pub fn is_bpffs(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid path.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    r == 0 && s.f_type as u64 == 0xcafe4a11
}

/// Encodes a name for bpffs (`%` -> `%25`, `.` -> `%2E`).
pub fn encode(s: &str) -> String {
    s.replace('%', "%25").replace('.', "%2E")
}

/// Reverses [`encode`].
pub fn decode(s: &str) -> String {
    s.replace("%2E", ".").replace("%25", "%")
}
