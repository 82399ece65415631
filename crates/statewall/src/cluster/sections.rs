//! Config sections a cluster pushes: `[[knock]]`, `[[xfsm]]`, `[spa]` and `[detect]`, each
//! stored as TOML text under `policy/{knock|xfsm|spa|detect}`. A host runs its own config file with the
//! pushed sections in place of its own ([`Sections::over`]): a pushed `knock` with no
//! `[[knock]]` table means no doors (`xfsm` likewise, no machines written by hand), a pushed `detect` without `[detect]` turns the stage
//! off. The rest of the file (`[daemon]`, interfaces, `[gate]`, `[cluster]`...) stays
//! local. What a host runs is kept under its state directory, so that a restart while
//! etcd is away runs the last pushed sections, not the file's.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

/// The sections a cluster may push, by their key under the policy prefix (also their
/// name in the config file).
pub const SECTIONS: [&str; 4] = ["knock", "xfsm", "spa", "detect"];

/// How a section is written in a config file.
pub fn header(name: &str) -> String {
    if name == "knock" || name == "xfsm" {
        format!("[[{name}]]")
    } else {
        format!("[{name}]")
    }
}

/// Why a pushed section was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    /// Not one of [`SECTIONS`].
    #[error("{0:?} is not a section a cluster pushes (knock, xfsm, spa, detect)")]
    Unknown(String),
    /// Not TOML.
    #[error("{what} does not read as TOML: {msg}")]
    Toml {
        /// What was read.
        what: String,
        /// The parser's message.
        msg: String,
    },
    /// The text holds more than the section.
    #[error("a push of {header} holds that section only, not `{found}`")]
    Other {
        /// The section pushed.
        header: String,
        /// The key found beside it.
        found: String,
    },
    /// The kept copy could not be written (the error names the file).
    #[error("keeping the pushed sections: {0}")]
    Save(std::io::Error),
    /// The kept copy could not be read.
    #[error("the pushed sections kept in {path}: {msg}")]
    Kept {
        /// The file.
        path: String,
        /// What went wrong.
        msg: String,
    },
}

/// Reads a pushed section: TOML text holding only the section `name` (or nothing).
/// Returns its value, `None` when the text leaves the section out.
pub fn read_section(name: &str, text: &str) -> Result<Option<toml::Value>, SectionError> {
    if !SECTIONS.contains(&name) {
        return Err(SectionError::Unknown(name.into()));
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|e| SectionError::Toml {
        what: format!("the pushed {}", header(name)),
        msg: e.to_string().trim_end().into(),
    })?;
    if let Some(found) = table.keys().find(|k| k.as_str() != name) {
        return Err(SectionError::Other {
            header: header(name),
            found: found.clone(),
        });
    }
    Ok(table.remove(name))
}

/// One pushed section as a host runs it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Pushed {
    /// The etcd revision it was pushed at.
    pub revision: i64,
    /// Its text.
    pub text: String,
}

/// The pushed sections a host runs, by name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Sections {
    /// Section name to what was pushed.
    pub by_name: BTreeMap<String, Pushed>,
}

impl Sections {
    /// Whether no section is pushed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// `base` (a config file's text) with the pushed sections in place of its own.
    pub fn over(&self, base: &str, origin: &str) -> Result<String, SectionError> {
        let mut table: toml::Table = toml::from_str(base).map_err(|e| SectionError::Toml {
            what: origin.into(),
            msg: e.to_string().trim_end().into(),
        })?;
        for (name, p) in &self.by_name {
            match read_section(name, &p.text)? {
                Some(v) => table.insert(name.clone(), v),
                None => table.remove(name),
            };
        }
        toml::to_string(&table).map_err(|e| SectionError::Toml {
            what: format!("{origin} with the pushed sections"),
            msg: e.to_string(),
        })
    }

    /// Names the pushed sections with their revisions, for errors and logs:
    /// `[[knock]] (revision 12), [spa] (revision 14)`.
    pub fn describe(&self) -> String {
        self.by_name
            .iter()
            .map(|(n, p)| format!("{} (revision {})", header(n), p.revision))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The kept copy (none yet: nothing pushed).
    pub fn load(path: &Path) -> Result<Sections, SectionError> {
        let kept = |msg: String| SectionError::Kept {
            path: path.display().to_string(),
            msg,
        };
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| kept(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sections::default()),
            Err(e) => Err(kept(e.to_string())),
        }
    }

    /// Keeps a copy (written whole and synced).
    pub fn save(&self, path: &Path) -> Result<(), SectionError> {
        let text = serde_json::to_vec(self).unwrap_or_default();
        crate::engine::sys::write_synced(path, &text).map_err(SectionError::Save)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(name: &str, text: &str) -> Sections {
        let mut s = Sections::default();
        s.by_name.insert(
            name.into(),
            Pushed {
                revision: 7,
                text: text.into(),
            },
        );
        s
    }

    const BASE: &str = r#"
[gate]
protected = ["tcp/24"]

[[knock]]
name = "door"
sequence = "7000,8000,9000"
protected = ["tcp/23"]

[detect]
mode = "monitor"
"#;

    #[test]
    fn a_pushed_section_replaces_the_files_and_leaves_the_rest() {
        let s = pushed(
            "knock",
            "[[knock]]\nname = \"a\"\nsequence = \"1,2\"\nprotected = [\"tcp/23\"]\n\n[[knock]]\nname = \"b\"\nsequence = \"3,4\"\nprotected = [\"tcp/25\"]\n",
        );
        let t: toml::Table = toml::from_str(&s.over(BASE, "f").unwrap()).unwrap();
        let names: Vec<&str> = t["knock"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(t["gate"]["protected"][0].as_str(), Some("tcp/24"));
        assert_eq!(t["detect"]["mode"].as_str(), Some("monitor"));
        assert_eq!(s.describe(), "[[knock]] (revision 7)");
    }

    #[test]
    fn a_pushed_text_without_the_section_removes_it() {
        let t: toml::Table =
            toml::from_str(&pushed("detect", "").over(BASE, "f").unwrap()).unwrap();
        assert!(!t.contains_key("detect"));
        assert!(t.contains_key("knock"));
        let t: toml::Table =
            toml::from_str(&pushed("knock", "# none\n").over(BASE, "f").unwrap()).unwrap();
        assert!(!t.contains_key("knock"));
    }

    #[test]
    fn a_push_holds_its_section_only() {
        let e = read_section("spa", "[spa]\nrate_burst = 5\n[gate]\nprotected = []\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a push of [spa] holds that section only, not `gate`"
        );
        let e = read_section("gate", "").unwrap_err();
        assert!(e.to_string().contains("not a section"), "{e}");
        let e = read_section("knock", "[[knock]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the pushed [[knock]] does not read as TOML"),
            "{e}"
        );
        assert!(read_section("spa", "[spa]\nrate_burst = 5\n")
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_kept_copy_reads_back() {
        let dir = std::env::temp_dir().join(format!("sw-sections-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster-sections.json");
        assert!(Sections::load(&path).unwrap().is_empty());
        let s = pushed("spa", "[spa]\nrate_burst = 5\n");
        s.save(&path).unwrap();
        assert_eq!(Sections::load(&path).unwrap(), s);
        // It may hold SPA keys: its owner's only.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        s.save(&path).unwrap();
        std::fs::write(&path, "{").unwrap();
        assert!(Sections::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
