//! `statewall import fwknop access.conf`: fwknopd's access stanzas as `[[spa.fwknop]]`.
//!
//! access.conf is `KEY value` lines; `#` starts a comment; every `SOURCE` line starts a
//! stanza. The keys statewall honours (COMPAT.md) are copied; the rest are named in the
//! notes, as are stanzas that cannot be converted (no HMAC key: statewall requires HMAC;
//! GPG keys).

use crate::import::error::ImportError;
use crate::{config::Config, import::Import, spa::config::FwknopConfig};

fn yes(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "Y" | "YES" | "1" | "TRUE"
    )
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Converts access.conf text; errors name `origin:line`.
pub fn import(text: &str, origin: &str) -> Result<Import, ImportError> {
    let mut notes = Vec::new();
    let mut stanzas: Vec<(usize, FwknopConfig, bool)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = match line.split_once(char::is_whitespace) {
            Some((k, v)) => (k.trim().to_ascii_uppercase(), v.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        if key.starts_with('%') {
            notes.push(format!(
                "{origin}:{line_no}: {key} is not followed; convert the included files too"
            ));
            continue;
        }
        if key == "SOURCE" {
            stanzas.push((
                line_no,
                FwknopConfig {
                    name: Some(format!("{origin}:{line_no}")),
                    source: list(&value),
                    ..Default::default()
                },
                true,
            ));
            continue;
        }
        let Some((_, s, ok)) = stanzas.last_mut() else {
            return Err(ImportError::At {
                origin: origin.to_string(),
                line: line_no,
                msg: format!("{key} before any SOURCE line (a stanza starts with SOURCE)"),
            });
        };
        let num = |v: &str| -> Result<u64, ImportError> {
            v.trim().parse().map_err(|_| ImportError::At {
                origin: origin.to_string(),
                line: line_no,
                msg: format!("{key} {v:?} is not a number"),
            })
        };
        match key.as_str() {
            "OPEN_PORTS" => s.open_ports = list(&value),
            "RESTRICT_PORTS" => s.restrict_ports = list(&value),
            "KEY" => s.key = Some(value),
            "KEY_BASE64" => s.key_base64 = Some(value),
            "HMAC_KEY" => s.hmac_key = Some(value),
            "HMAC_KEY_BASE64" => s.hmac_key_base64 = Some(value),
            "HMAC_DIGEST_TYPE" => s.hmac_digest_type = Some(value.to_ascii_lowercase()),
            "FW_ACCESS_TIMEOUT" => s.fw_access_timeout = Some(num(&value)?),
            "MAX_FW_TIMEOUT" => s.max_fw_timeout = Some(num(&value)?),
            "REQUIRE_SOURCE_ADDRESS" => s.require_source_address = yes(&value),
            "REQUIRE_USERNAME" => s.require_username = Some(value),
            "ENABLE_CMD_EXEC" => {
                s.enable_cmd_exec = yes(&value);
                if s.enable_cmd_exec {
                    notes.push(format!(
                        "{origin}:{line_no}: ENABLE_CMD_EXEC: command messages are accepted and logged, never run"
                    ));
                }
            }
            "ENCRYPTION_MODE" => s.encryption_mode = Some(value.to_ascii_lowercase()),
            k if k.starts_with("GPG_") => {
                *ok = false;
                notes.push(format!(
                    "{origin}:{line_no}: {k}: GPG mode is not supported; the stanza is left out"
                ));
            }
            k => notes.push(format!("{origin}:{line_no}: {k} is not converted")),
        }
    }
    let mut cfg = Config::default();
    for (line_no, s, ok) in stanzas {
        if !ok {
            continue;
        }
        if s.hmac_key.is_none() && s.hmac_key_base64.is_none() {
            notes.push(format!(
                "{origin}:{line_no}: the stanza has no HMAC key; statewall requires HMAC (fwknop --use-hmac), so it is left out"
            ));
            continue;
        }
        if s.open_ports.is_empty() {
            notes.push(format!(
                "{origin}:{line_no}: no OPEN_PORTS: clients may ask for any port, but only protected ports are shut; list the ports to protect them"
            ));
        }
        cfg.spa.fwknop.push(s);
    }
    let text = toml::to_string(&cfg).map_err(|e| ImportError::Config(e.to_string()))?;
    let cfg = Config::parse(&text, origin).map_err(|e| ImportError::Config(e.to_string()))?;
    Ok(Import {
        config: cfg,
        notes,
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_stanzas_and_says_what_it_left() {
        let text = "# fwknopd access.conf\nSOURCE ANY\nOPEN_PORTS tcp/22, udp/53\nKEY_BASE64 Toe6r3nv+JnMD6CE9bdcXl9qrFuJ6PB8DXcY/fNm+Uw=\nHMAC_KEY_BASE64 Pb3qth89EgpqbYUgIjXvKnd4ENXC0bBBnohof500GLEJK7zwxWpFrtwVx9Y3otV8zPi/rIVigsuRPF2bwzemZg==\nFW_ACCESS_TIMEOUT 45\nREQUIRE_SOURCE_ADDRESS Y\nCMD_CYCLE_OPEN /bin/true\n\nSOURCE 10.0.0.0/8\nKEY secret\n\nSOURCE 192.168.0.0/16\nGPG_REMOTE_ID 1234\nHMAC_KEY x\n%include_folder /etc/fwknop/access.d\n";
        let imp = import(text, "access.conf").unwrap();
        assert_eq!(imp.config.spa.fwknop.len(), 1);
        let s = &imp.config.spa.fwknop[0];
        assert_eq!(s.source, ["ANY"]);
        assert_eq!(s.open_ports, ["tcp/22", "udp/53"]);
        assert_eq!(s.fw_access_timeout, Some(45));
        assert!(s.require_source_address);
        let notes = imp.notes.join("\n");
        assert!(
            notes.contains("access.conf:8: CMD_CYCLE_OPEN is not converted"),
            "{notes}"
        );
        assert!(
            notes.contains("access.conf:10: the stanza has no HMAC key"),
            "{notes}"
        );
        assert!(notes.contains("access.conf:14: GPG_REMOTE_ID"), "{notes}");
        assert!(notes.contains("%INCLUDE_FOLDER"), "{notes}");
        let e = import("KEY x\n", "a.conf").unwrap_err().to_string();
        assert!(
            e.contains("a.conf:1") && e.contains("before any SOURCE"),
            "{e}"
        );
        let e = import(
            "SOURCE ANY\nFW_ACCESS_TIMEOUT soon\nHMAC_KEY h\nKEY k\n",
            "a.conf",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a.conf:2"), "{e}");
        let e = import("SOURCE 10.0.0.0/99\nHMAC_KEY h\nKEY k\n", "a.conf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source"), "{e}");
    }
}
