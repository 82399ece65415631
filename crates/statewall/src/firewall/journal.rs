//! The firewall's state on disk: `firewall.json`, a snapshot, and beside it
//! `firewall.journal`, one line per batch applied since (`{"seq", "firewall", "chain",
//! "ops"}`), appended and synced before the batch's answer: a one-rule change writes one
//! short line, not the whole ruleset. Loading replays the lines the snapshot does not
//! hold yet (a torn last line, from a crash while writing it, is left out: its batch was
//! never answered). The snapshot is rewritten, and the journal emptied, by every change
//! other than a batch, and when the journal has grown past [`COMPACT_BYTES`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    batch::{apply_batch, BatchOp},
    FirewallError, FwResult, FwState,
};

/// Journal size past which the next batch rewrites the snapshot instead.
pub const COMPACT_BYTES: u64 = 4 << 20;

/// One journal line.
#[derive(Debug, Deserialize)]
struct Record {
    seq: u64,
    firewall: String,
    chain: String,
    ops: Vec<BatchOp>,
}

/// One journal line as it is written (the batch's operations borrowed, not copied).
#[derive(Serialize)]
struct RecordOut<'a> {
    seq: u64,
    firewall: &'a str,
    chain: &'a str,
    ops: &'a [BatchOp],
}

/// The journal beside a snapshot.
pub fn journal_path(snapshot: &Path) -> PathBuf {
    snapshot.with_extension("journal")
}

fn store(path: &Path, msg: impl std::fmt::Display) -> FirewallError {
    FirewallError::Store {
        path: path.into(),
        msg: msg.to_string(),
    }
}

impl FwState {
    /// Loads the state (empty when the file does not exist), with the journal's later
    /// batches replayed.
    pub fn load(path: &Path) -> FwResult<FwState> {
        // No snapshot, no state: a journal is only ever written beside one (what is left
        // of a removed snapshot's journal is not replayed).
        let mut st: FwState = match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| store(path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FwState::default()),
            Err(e) => return Err(store(path, e)),
        };
        let jpath = journal_path(path);
        let text = match std::fs::read_to_string(&jpath) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(st),
            Err(e) => return Err(store(&jpath, e)),
        };
        // Only whole lines: a last line without its newline was never synced whole.
        let whole = text.rfind('\n').map_or("", |i| &text[..i]);
        for (n, line) in whole.lines().enumerate() {
            let at = |msg: String| store(&jpath, format!("line {}: {msg}", n + 1));
            let r: Record = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
            if r.seq <= st.seq {
                continue;
            }
            let inst = st
                .instances
                .get_mut(&r.firewall)
                .ok_or_else(|| at(format!("no firewall {:?}", r.firewall)))?;
            let c = inst.chain_mut(&r.chain).map_err(|e| at(e.to_string()))?;
            let (rules, _) =
                apply_batch(&c.rules, &r.ops).map_err(|(i, e)| at(format!("ops[{i}]: {e}")))?;
            c.rules = rules;
            st.seq = r.seq;
        }
        Ok(st)
    }

    /// Writes the snapshot durably (temporary file, fsync, rename), then empties the
    /// journal (every record of it is in the snapshot).
    pub fn save(&self, path: &Path) -> FwResult<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| store(path, e))?;
        crate::engine::sys::write_synced(path, text.as_bytes()).map_err(|e| store(path, e))?;
        let jpath = journal_path(path);
        match std::fs::remove_file(&jpath) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(store(&jpath, e)),
            _ => Ok(()),
        }
    }

    /// Makes a batch just applied to this state durable: one journal line, synced (or,
    /// past [`COMPACT_BYTES`] of journal, a new snapshot).
    pub fn journal(
        &mut self,
        path: &Path,
        firewall: &str,
        chain: &str,
        ops: &[BatchOp],
    ) -> FwResult<()> {
        self.seq += 1;
        let jpath = journal_path(path);
        let big = std::fs::metadata(&jpath).map_or(0, |m| m.len()) > COMPACT_BYTES;
        if big || !path.exists() {
            return self.save(path);
        }
        let r = RecordOut {
            seq: self.seq,
            firewall,
            chain,
            ops,
        };
        let mut line = serde_json::to_vec(&r).map_err(|e| store(&jpath, e))?;
        line.push(b'\n');
        let new = !jpath.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jpath)
            .map_err(|e| store(&jpath, e))?;
        f.write_all(&line).map_err(|e| store(&jpath, e))?;
        f.sync_data().map_err(|e| store(&jpath, e))?;
        if new {
            // The new file's name, durable too.
            if let Some(d) = jpath.parent().and_then(|d| std::fs::File::open(d).ok()) {
                d.sync_all().map_err(|e| store(&jpath, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("statewall-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ops(port: u64) -> Vec<BatchOp> {
        serde_json::from_value(json!([
            {"operation": "append", "l4proto": "TCP", "dport": port, "action": "ACCEPT"}
        ]))
        .unwrap()
    }

    #[test]
    fn batches_replay_over_the_snapshot_and_a_torn_line_is_left_out() {
        let d = dir("replay");
        let path = d.join("firewall.json");
        let mut st = FwState::default();
        st.create("fw", "TC").unwrap();
        st.save(&path).unwrap();
        let mut want = st.clone();
        for port in [22, 80] {
            let c = &mut want.instances.get_mut("fw").unwrap().ingress;
            c.rules = apply_batch(&c.rules, &ops(port)).unwrap().0;
            st.journal(&path, "fw", "INGRESS", &ops(port)).unwrap();
        }
        want.seq = 2;
        assert_eq!(FwState::load(&path).unwrap(), want);
        // A crash while writing a third line: no newline, not replayed.
        let j = journal_path(&path);
        let mut f = std::fs::OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(br#"{"seq":3,"firewall":"fw","chain":"INGRESS","ops":[{"operation""#)
            .unwrap();
        assert_eq!(FwState::load(&path).unwrap(), want);
        // A snapshot holds what the journal held: the journal goes, nothing twice.
        want.save(&path).unwrap();
        assert!(!j.exists());
        assert_eq!(FwState::load(&path).unwrap(), want);
        // A journal without its snapshot (removed by hand) is not replayed.
        st.journal(&path, "fw", "INGRESS", &ops(443)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(FwState::load(&path).unwrap(), FwState::default());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_bad_line_is_an_error_that_names_it() {
        let d = dir("bad");
        let path = d.join("firewall.json");
        let mut st = FwState::default();
        st.create("fw", "TC").unwrap();
        st.save(&path).unwrap();
        st.journal(&path, "fw", "INGRESS", &ops(22)).unwrap();
        let j = journal_path(&path);
        let mut f = std::fs::OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(b"{\"seq\":2,\"firewall\":\"nope\",\"chain\":\"INGRESS\",\"ops\":[]}\n")
            .unwrap();
        let e = FwState::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("nope"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
