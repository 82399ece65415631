//! The durable replay cache: the digests of packets already accepted, kept until they
//! could no longer pass the clock check, fsynced before a grant is made.

use super::{pkd::decode_hex, policy::Reject};
use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

/// The replay cache: digests with the Unix time until which they are remembered, kept in
/// memory and appended to a file (synced) so that a restart does not reopen the window.
#[derive(Debug)]
pub struct ReplayCache {
    entries: HashMap<[u8; 32], u64>,
    max: usize,
    path: Option<PathBuf>,
    /// The file, where the next line goes, and the file's length: lines overwrite
    /// padding written ahead (newlines, which a reader skips), so that a record's
    /// `fdatasync` does not change the file's size and need a journal commit.
    log: Option<(std::fs::File, u64, u64)>,
}

/// Padding written ahead of the replay cache's lines (about 800 records).
const REPLAY_PAD: usize = 64 << 10;

impl ReplayCache {
    /// A cache of at most `max` live entries, persisted at `path` (loaded now; expired and
    /// unreadable lines are dropped and the file rewritten).
    pub fn open(path: Option<&Path>, max: usize, now: u64) -> std::io::Result<ReplayCache> {
        let mut c = ReplayCache {
            entries: HashMap::new(),
            max,
            path: path.map(Path::to_path_buf),
            log: None,
        };
        if let Some(p) = path {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    for line in text.lines() {
                        let Some((h, t)) = line.split_once(' ') else {
                            continue;
                        };
                        let (Some(d), Ok(t)) = (decode_hex(h), t.trim().parse::<u64>()) else {
                            continue;
                        };
                        if d.len() == 32 && t > now {
                            let mut k = [0u8; 32];
                            k.copy_from_slice(&d);
                            c.entries.insert(k, t);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            c.rewrite()?;
        }
        Ok(c)
    }

    fn line(k: &[u8; 32], t: u64) -> String {
        let h: String = k.iter().map(|b| format!("{b:02x}")).collect();
        format!("{h} {t}\n")
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        let Some(p) = &self.path else { return Ok(()) };
        let tmp = p.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let mut off = 0u64;
        for (k, t) in &self.entries {
            let l = Self::line(k, *t);
            f.write_all(l.as_bytes())?;
            off += l.len() as u64;
        }
        f.write_all(&[b'\n'; REPLAY_PAD])?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)?;
        if let Some(d) = p.parent() {
            std::fs::File::open(d)?.sync_all()?;
        }
        self.log = Some((f, off, off + REPLAY_PAD as u64));
        Ok(())
    }

    /// Writes one record durably (see `log`).
    fn append(&mut self, line: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some((f, off, len)) = self.log.as_mut() else {
            return Err(std::io::Error::other("the replay cache file is not open"));
        };
        let n = line.len() as u64;
        if *off + n > *len {
            // More padding first (the size changes here, once per ~800 records).
            f.write_all_at(&[b'\n'; REPLAY_PAD], *len)?;
            f.sync_data()?;
            *len += REPLAY_PAD as u64;
        }
        f.write_all_at(line.as_bytes(), *off)?;
        f.sync_data()?;
        *off += n;
        Ok(())
    }

    /// Records `digest` until `until`; `Err(Replay)` when it is there and live,
    /// `Err(CacheFull)` when the cache is full of live entries. Durable before it returns.
    pub fn insert(&mut self, digest: [u8; 32], until: u64, now: u64) -> Result<(), Reject> {
        if self.entries.get(&digest).is_some_and(|t| *t > now) {
            return Err(Reject::Replay);
        }
        if self.entries.len() >= self.max {
            self.entries.retain(|_, t| *t > now);
            if self.entries.len() >= self.max {
                return Err(Reject::CacheFull);
            }
            let _ = self.rewrite();
        }
        if self.path.is_some() {
            let ok = self.append(&Self::line(&digest, until));
            if ok.is_err() {
                // Not durable: refuse rather than open a window a restart would reopen.
                return Err(Reject::CacheFull);
            }
        }
        self.entries.insert(digest, until);
        Ok(())
    }

    /// True when `digest` is remembered and live.
    pub fn contains(&self, digest: &[u8; 32], now: u64) -> bool {
        self.entries.get(digest).is_some_and(|t| *t > now)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
