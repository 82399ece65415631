//! Knock sequences that change while the daemon runs: knockd's one-time sequences (a file,
//! one sequence a line, each usable once), and sequences derived from a shared secret and
//! a time window or a counter ([`crate::xfsm::knockclient::derive`]).
//!
//! [`expand`] turns a config into doors with every sequence in force. One-time sequences
//! (file lines and counters) carry a key: the kernel opens on such a sequence only by
//! deleting its key from `SW_XFSM_ONCE`, which succeeds once (the map's own atomicity), so
//! two sources racing with the same sequence get one door between them. The engine then
//! sees the key gone, records the use durably ([`consume`]: the line overwritten with `#`,
//! or the counter moved past it) and recompiles without it.
//!
//! Keys are issued once: `<state_dir>/once-issued` lists every key ever put in the map
//! (appended and synced before the insert), so after a restart a key that is listed but no
//! longer in the map is known to be used, while a line added to the file meanwhile is new.

use crate::xfsm::error::XfsmError;
use std::{
    collections::BTreeSet,
    fs::OpenOptions,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::{
    types::{proto_number, step_pairs, Sequence},
    xfsm::{config::KnockConfig, door::KnockDoor, knockclient},
};

/// Most one-time sequences of one door in force at once (the first unused lines of the file).
pub const ONCE_PER_DOOR: usize = 32;

/// A key that marks a map as set up by this scheme (absent: the map is new, the issued
/// list is stale).
pub const SENTINEL: u64 = u64::MAX;

/// Where a one-time sequence came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A line of a one-time sequence file holding `text` (the first unused line with
    /// this text: a sequence written twice is used up by its first use).
    Line {
        /// The file.
        path: PathBuf,
        /// The line as read.
        text: String,
    },
    /// A counter of a counter-based door.
    Counter(u64),
}

/// A one-time sequence in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Once {
    /// Door name.
    pub door: String,
    /// Key in `SW_XFSM_ONCE`.
    pub key: u64,
    /// Where it came from.
    pub origin: Origin,
}

/// The doors with every sequence in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expansion {
    /// Doors, in config order.
    pub doors: Vec<KnockDoor>,
    /// One-time sequences in force.
    pub once: Vec<Once>,
    /// For each door with a time secret: (door, time counter in force).
    pub time_counters: Vec<(String, u64)>,
}

/// A one-time key: 64 bits of SHA-256 over the door, the kind and what identifies the
/// sequence; never 0 (no key) or [`SENTINEL`].
pub fn once_key(door: &str, kind: &str, id: &[u8]) -> u64 {
    let mut h = Sha256::new();
    for part in [door.as_bytes(), kind.as_bytes(), id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let k = u64::from_be_bytes(h.finalize()[..8].try_into().unwrap());
    k.clamp(1, SENTINEL - 1)
}

/// The counter file of a counter-based door.
pub fn counter_path(state_dir: &Path, door: &str) -> PathBuf {
    state_dir.join(format!("knock-counter-{door}"))
}

/// The next unused counter of a door (0 when never used).
pub fn next_counter(state_dir: &Path, door: &str) -> Result<u64, XfsmError> {
    let p = counter_path(state_dir, door);
    match std::fs::read_to_string(&p) {
        Ok(s) => s.trim().parse().map_err(|_| {
            XfsmError::File(format!("{}: not a counter: {:?}", p.display(), s.trim()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(XfsmError::File(format!("{}: {e}", p.display()))),
    }
}

/// Reads a one-time sequence file: the unused lines as (text, sequence), in file order. Blank lines and lines starting with `#` (used, or comments) are skipped;
/// steps are separated by commas or spaces, knockd's way.
pub fn read_one_time(path: &Path) -> Result<Vec<(String, Sequence)>, XfsmError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| XfsmError::File(format!("{}: cannot read: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let t = body.trim();
        if t.is_empty() || body.starts_with('#') {
            continue;
        }
        let norm = t
            .split([',', ' ', '\t'])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        let seq = Sequence::parse(&norm.join(","))
            .map_err(|e| XfsmError::File(format!("{} line {}: {e}", path.display(), i + 1)))?;
        if seq.0.is_empty() || seq.0.len() > 32 {
            return Err(XfsmError::File(format!(
                "{} line {}: {} steps: 1 to 32",
                path.display(),
                i + 1,
                seq.0.len()
            )));
        }
        out.push((body.to_string(), seq));
    }
    Ok(out)
}

/// Adds `seq` to the door unless it is already there, one of the door's sequences is a
/// prefix of the other, it would knock on one of the door's protected ports, or the door's
/// state budget is spent (logged); returns whether it was added.
fn push(
    d: &mut KnockDoor,
    k: &KnockConfig,
    seq: Vec<(u8, u16)>,
    once: u64,
    budget: &mut usize,
) -> bool {
    let clash = d
        .sequences
        .iter()
        .chain(&d.close)
        .any(|s| s.starts_with(&seq) || seq.starts_with(s));
    if clash
        || seq
            .iter()
            .any(|&(p, port)| k.protected.iter().any(|q| q.proto == p && q.port == port))
    {
        return false;
    }
    let need = (seq.len() - 1) * if d.toggle { 2 } else { 1 };
    if need > *budget {
        tracing::warn!(door = %k.name, "too many knock steps in force: a sequence waits for room");
        return false;
    }
    *budget -= need;
    d.once.resize(d.sequences.len(), 0);
    d.sequences.push(seq);
    d.once.push(once);
    true
}

/// The doors `knocks` with every sequence in force at `unix_now` (seconds). Reads the
/// one-time files, the secrets and the counters (under `state_dir`).
pub fn expand(
    knocks: &[KnockConfig],
    state_dir: &Path,
    unix_now: u64,
) -> Result<Expansion, XfsmError> {
    let mut x = Expansion {
        doors: crate::xfsm::config::doors(knocks),
        ..Default::default()
    };
    for (d, k) in x.doors.iter_mut().zip(knocks) {
        // Part-way states the added sequences may use (a door has at most 253; the fixed
        // sequences, close sequences and toggle paths take theirs first).
        let fixed: usize = d
            .sequences
            .iter()
            .chain(&d.close)
            .map(|s| s.len().saturating_sub(1))
            .sum::<usize>()
            * if d.toggle { 2 } else { 1 };
        let mut budget = 250usize.saturating_sub(fixed);
        if let Some(path) = &k.one_time_sequences {
            let mut n = 0;
            for (text, seq) in read_one_time(path)? {
                if n == ONCE_PER_DOOR {
                    break;
                }
                // The key follows the text, not its place: editing other lines (removing
                // used ones) does not make a used sequence new again.
                let id = format!("{}\0{text}", path.display());
                let key = once_key(&k.name, "line", id.as_bytes());
                if push(d, k, step_pairs(&seq.0), key, &mut budget) {
                    x.once.push(Once {
                        door: k.name.clone(),
                        key,
                        origin: Origin::Line {
                            path: path.clone(),
                            text,
                        },
                    });
                    n += 1;
                }
            }
        }
        let proto = proto_number(&k.derived_proto).unwrap_or(17);
        let derived =
            |secret: &[u8], c| step_pairs(&knockclient::derive(secret, c, k.derived_steps, proto));
        if let Some(path) = &k.time_secret {
            let secret = knockclient::read_secret(path)?;
            let c = knockclient::time_counter(unix_now, k.time_period.0.as_secs().max(1));
            for c in [c.saturating_sub(1), c, c + 1] {
                let seq = derived(&secret, c);
                push(d, k, seq, 0, &mut budget);
            }
            x.time_counters.push((k.name.clone(), c));
        }
        if let Some(path) = &k.counter_secret {
            let secret = knockclient::read_secret(path)?;
            let next = next_counter(state_dir, &k.name)?;
            let end = next.checked_add(k.counter_window as u64).ok_or_else(|| {
                XfsmError::File(format!("door {}: the counter {next} is exhausted", k.name))
            })?;
            for c in next..end {
                let seq = derived(&secret, c);
                let key = once_key(&k.name, "counter", &c.to_be_bytes());
                if push(d, k, seq, key, &mut budget) {
                    x.once.push(Once {
                        door: k.name.clone(),
                        key,
                        origin: Origin::Counter(c),
                    });
                }
            }
        }
    }
    Ok(x)
}

/// Records durably that a one-time sequence was used: its line overwritten with `#` (if
/// the line is still what was read), or the door's counter moved past it. Synced before
/// returning.
pub fn consume(state_dir: &Path, o: &Once) -> Result<(), XfsmError> {
    match &o.origin {
        Origin::Line { path, text } => {
            let err = |e: std::io::Error| XfsmError::File(format!("{}: {e}", path.display()));
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(err)?;
            let mut all = String::new();
            f.read_to_string(&mut all).map_err(err)?;
            let mut offset = 0u64;
            let mut at = None;
            for line in all.split_inclusive('\n') {
                if line.trim_end_matches(['\n', '\r']) == text && !line.starts_with('#') {
                    at = Some(offset);
                    break;
                }
                offset += line.len() as u64;
            }
            let Some(offset) = at else {
                return Err(XfsmError::File(format!(
                    "{}: the used sequence {text:?} is no longer in the file (edited?); not marked",
                    path.display()
                )));
            };
            f.seek(SeekFrom::Start(offset)).map_err(err)?;
            f.write_all(b"#").map_err(err)?;
            f.sync_all().map_err(err)
        }
        Origin::Counter(c) => {
            let next = next_counter(state_dir, &o.door)?;
            if *c < next {
                return Ok(());
            }
            let after = c
                .checked_add(1)
                .ok_or_else(|| XfsmError::File("the counter is exhausted".into()))?;
            crate::engine::sys::write_synced(
                &counter_path(state_dir, &o.door),
                format!("{after}\n").as_bytes(),
            )
            .map_err(|e| XfsmError::File(e.to_string()))
        }
    }
}

/// The list of issued keys.
pub fn issued_path(state_dir: &Path) -> PathBuf {
    state_dir.join("once-issued")
}

/// Reads the issued keys (none when the file does not exist). A line that is not a key
/// (a torn append) is skipped: its key reads as never issued, and is issued again.
pub fn read_issued(state_dir: &Path) -> Result<BTreeSet<u64>, XfsmError> {
    let p = issued_path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s
            .lines()
            .filter_map(|l| u64::from_str_radix(l.trim(), 16).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(XfsmError::File(format!("{}: {e}", p.display()))),
    }
}

/// Rewrites the issued list, synced.
pub fn write_issued(state_dir: &Path, keys: &BTreeSet<u64>) -> Result<(), XfsmError> {
    let text: String = keys.iter().map(|k| format!("{k:016x}\n")).collect();
    crate::engine::sys::write_synced(&issued_path(state_dir), text.as_bytes())
        .map_err(|e| XfsmError::File(e.to_string()))
}

/// Appends keys to the issued list, synced.
pub fn append_issued(state_dir: &Path, keys: &[u64]) -> Result<(), XfsmError> {
    let p = issued_path(state_dir);
    let err = |e: std::io::Error| XfsmError::File(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(err)?;
    let text: String = keys.iter().map(|k| format!("{k:016x}\n")).collect();
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_files_read_and_mark_like_knockd() {
        let dir = std::env::temp_dir().join(format!("sw-once-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("otp");
        std::fs::write(
            &f,
            "# comment\n7000,8000:udp,9000\n\n#1,2,3\n1111 2222:udp\t3333\n",
        )
        .unwrap();
        let lines = read_one_time(&f).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, "7000,8000:udp,9000");
        assert_eq!(lines[1].1.to_string(), "1111:tcp,2222:udp,3333:tcp");
        let o = Once {
            door: "d".into(),
            key: 1,
            origin: Origin::Line {
                path: f.clone(),
                text: lines[0].0.clone(),
            },
        };
        consume(&dir, &o).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "# comment\n#000,8000:udp,9000\n\n#1,2,3\n1111 2222:udp\t3333\n",
            "the used line's first byte is overwritten with '#'"
        );
        assert_eq!(read_one_time(&f).unwrap().len(), 1);
        assert!(
            consume(&dir, &o).is_err(),
            "a line marked already is not marked twice"
        );
        std::fs::write(&f, "7000,banana\n").unwrap();
        let e = read_one_time(&f).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");

        // Counters move past the used one, never back.
        assert_eq!(next_counter(&dir, "c").unwrap(), 0);
        let used = |c| Once {
            door: "c".into(),
            key: 2,
            origin: Origin::Counter(c),
        };
        consume(&dir, &used(2)).unwrap();
        assert_eq!(next_counter(&dir, "c").unwrap(), 3);
        consume(&dir, &used(1)).unwrap();
        assert_eq!(next_counter(&dir, "c").unwrap(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_are_distinct_and_never_reserved() {
        let a = once_key("d", "line", b"x");
        assert_ne!(a, once_key("d", "line", b"y"));
        assert_ne!(a, once_key("e", "line", b"x"));
        assert_ne!(once_key("d", "line", b"1"), once_key("d", "counter", b"1"));
        assert!(a != 0 && a != SENTINEL);
    }
}
