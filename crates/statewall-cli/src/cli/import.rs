//! `statewall import`: knockd.conf and access.conf converters.

use super::prelude::*;

#[derive(Subcommand)]
pub enum ImportCmd {
    /// Convert a knockd.conf into statewall config (printed on stdout; notes on stderr).
    Knockd {
        /// The knockd.conf file.
        file: PathBuf,
        /// Ports to protect for doors whose commands do not name them (`tcp/22`).
        #[arg(long)]
        protect: Vec<statewall::config::PortSpec>,
        /// Exit non-zero when a door cannot be converted (by default it is left out and
        /// named on stderr, and the rest is converted).
        #[arg(long)]
        strict: bool,
    },
    /// Convert fwknopd's access.conf into `[[spa.fwknop]]` stanzas (stdout; notes on stderr).
    Fwknop {
        /// The access.conf file.
        file: PathBuf,
    },
}

/// Runs the subcommand.
pub async fn run(cmd: ImportCmd) -> anyhow::Result<i32> {
    match cmd {
        ImportCmd::Knockd {
            file,
            protect,
            strict,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let imp =
                statewall::import::knockd::import(&text, &file.display().to_string(), &protect)
                    .map_err(anyhow::Error::msg)?;
            for n in &imp.notes {
                eprintln!("note: {n}");
            }
            for s in &imp.skipped {
                eprintln!("skipped: {s}");
            }
            print!("{}", toml::to_string(&imp.config)?);
            if strict && !imp.skipped.is_empty() {
                eprintln!(
                    "error: {} door(s) not converted (--strict)",
                    imp.skipped.len()
                );
                return Ok(1);
            }
        }
        ImportCmd::Fwknop { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let imp = statewall::import::fwknop::import(&text, &file.display().to_string())
                .map_err(anyhow::Error::msg)?;
            for n in &imp.notes {
                eprintln!("note: {n}");
            }
            print!("{}", toml::to_string(&imp.config)?);
        }
    }
    Ok(0)
}
