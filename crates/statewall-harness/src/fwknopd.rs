//! Debian's real fwknopd (fwknop-server) in a namespace, for the interoperability test
//! (statewall's client against the real server) and as the benchmark's baseline: it sniffs
//! the interface with pcap and opens the port with an iptables rule; a DROP rule for the
//! port stands for the closed default.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::netns::NetNs;

/// A running fwknopd; stopped on drop (its iptables rules go with the namespace).
pub struct Fwknopd {
    child: Child,
    /// Its files and log.
    pub dir: PathBuf,
}

impl Fwknopd {
    /// Starts fwknopd in `ns` on `ifname` with one stanza (any source, `tcp/port`, the
    /// given base64 keys), after adding `iptables -A INPUT -p tcp --dport port -j DROP`.
    pub fn start(
        ns: &NetNs,
        ifname: &str,
        dir: &Path,
        port: u16,
        key_b64: &str,
        hmac_b64: &str,
    ) -> anyhow::Result<Fwknopd> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("fwknopd.conf");
        let access = dir.join("access.conf");
        std::fs::write(
            &conf,
            format!("PCAP_INTF {ifname};\nFWKNOP_RUN_DIR {};\n", dir.display()),
        )?;
        std::fs::write(
            &access,
            format!(
                "SOURCE ANY\nOPEN_PORTS tcp/{port}\nKEY_BASE64 {key_b64}\nHMAC_KEY_BASE64 {hmac_b64}\nFW_ACCESS_TIMEOUT 30\n"
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        for f in [&conf, &access] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600))?;
        }
        let port_s = port.to_string();
        let out = ns.exec(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &port_s, "-j", "DROP",
        ]);
        if !out.status.success() {
            bail!(
                "iptables in {}: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = dir.join("fwknopd.log");
        let out_file = std::fs::File::create(&log)?;
        let child = ns
            .command(&[
                "fwknopd",
                "-f",
                "-c",
                conf.to_str().unwrap(),
                "-a",
                access.to_str().unwrap(),
                "-i",
                ifname,
                "--pid-file",
                dir.join("fwknopd.pid").to_str().unwrap(),
                "-d",
                dir.join("digest.cache").to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(out_file.try_clone()?)
            .stderr(out_file)
            .spawn()
            .context("starting fwknopd (Debian package fwknop-server)")?;
        let d = Fwknopd {
            child,
            dir: dir.to_path_buf(),
        };
        // A hang guard, not a performance limit.
        let t0 = Instant::now();
        loop {
            if d.log().contains("main event loop") {
                return Ok(d);
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("fwknopd did not start: {}", d.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fwknopd.log")).unwrap_or_default()
    }
}

impl Drop for Fwknopd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
