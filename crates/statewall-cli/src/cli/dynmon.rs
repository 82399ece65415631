//! `statewall dynmon`: dynamic monitors.

use super::prelude::*;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DynDirection {
    Ingress,
    Egress,
    Both,
}

#[derive(Subcommand)]
pub enum DynmonCmd {
    /// Load a program and attach it (last in statewall's chain on the interface).
    Load {
        /// Instance name.
        name: String,
        /// libbpf-style C source (compiled with clang) or an eBPF object with BTF.
        file: PathBuf,
        /// Interface to attach to.
        #[arg(long)]
        interface: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
        /// Hooks: ingress, egress or both (one program, one set of maps).
        #[arg(long, value_enum, default_value = "ingress")]
        direction: DynDirection,
        /// Metric declarations (TOML, `[[metric]]` tables as Dynmon's metric-configs).
        #[arg(long)]
        metrics: PathBuf,
        /// The program to attach, when the object has several that fit.
        #[arg(long)]
        program: Option<String>,
    },
    /// Print the libbpf-style C that a program in Polycube's BCC dialect is compiled as
    /// (its lines keep their numbers after the `#line 1` directive).
    Translate {
        /// The program (Polycube Dynmon `code`).
        file: PathBuf,
        /// The path it runs on: ingress or egress (its POLYCUBE_PROGRAM_TYPE and hook).
        #[arg(long, value_enum, default_value = "ingress")]
        direction: DynDirection,
        /// For XDP (Polycube's XDP_SKB/XDP_DRV cubes; ingress only) rather than tc.
        #[arg(long)]
        xdp: bool,
    },
    /// Every instance.
    List,
    /// One instance (JSON).
    Show {
        /// Instance name.
        name: String,
    },
    /// Read every metric (JSON; swap-on-read and empty-on-read apply).
    Read {
        /// Instance name.
        name: String,
    },
    /// Detach and unload.
    Unload {
        /// Instance name.
        name: String,
    },
}

/// Runs the subcommand.
pub async fn run(cmd: DynmonCmd, paths: Paths) -> anyhow::Result<i32> {
    let s = paths.socket();
    match cmd {
        DynmonCmd::Load {
            name,
            file,
            interface,
            netns,
            direction,
            metrics,
            program,
        } => {
            use base64::Engine;
            use statewall::dynmon::{Direction, DynmonSpec, MetricsFile, PathSpec};
            let code =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (source, object) = if code.starts_with(b"\x7fELF") {
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&code)),
                )
            } else {
                let src = String::from_utf8(code).map_err(|_| {
                    anyhow::anyhow!(
                        "{}: neither an ELF object nor UTF-8 C source",
                        file.display()
                    )
                })?;
                (Some(src), None)
            };
            let text = std::fs::read_to_string(&metrics)
                .with_context(|| format!("reading {}", metrics.display()))?;
            let m: MetricsFile =
                toml::from_str(&text).with_context(|| format!("in {}", metrics.display()))?;
            let spec = DynmonSpec {
                interface: Some(interface),
                netns,
                paths: vec![PathSpec {
                    name: file.display().to_string(),
                    direction: match direction {
                        DynDirection::Ingress => Direction::Ingress,
                        DynDirection::Egress => Direction::Egress,
                        DynDirection::Both => Direction::Both,
                    },
                    source,
                    object,
                    program,
                    shared: vec![],
                    xdp: false,
                    metrics: m.metric,
                }],
            };
            let body = serde_json::to_value(&spec)?;
            let v = api_call(&s, "POST", &format!("/api/v1/dynmon/{name}"), Some(body)).await?;
            println!(
                "{name}: {} attached to {} ({}), loaded in {} ms",
                v["paths"][0]["program"].as_str().unwrap_or("?"),
                v["interface"].as_str().unwrap_or("?"),
                v["hooks"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(|h| h["hook"].as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                v["load_us"].as_u64().unwrap_or(0) / 1000
            );
        }
        DynmonCmd::Translate {
            file,
            direction,
            xdp,
        } => {
            use statewall::dynmon::Direction;
            let src = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            if !statewall::dynmon::is_bcc(&src) {
                anyhow::bail!(
                    "{}: not in Polycube's BCC dialect (no table macro, handle_rx or pcn_ \
                     helper): it is compiled as it is",
                    file.display()
                );
            }
            let dir = match direction {
                DynDirection::Ingress => Direction::Ingress,
                DynDirection::Egress => Direction::Egress,
                DynDirection::Both => Direction::Both,
            };
            let out = statewall::dynmon::translate_bcc(&src, dir, xdp)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print!("{out}");
        }
        DynmonCmd::List => {
            let v = api_call(&s, "GET", "/api/v1/dynmon", None).await?;
            for d in v.as_array().into_iter().flatten() {
                let metrics: Vec<&str> = d["paths"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|p| p["metrics"].as_array().into_iter().flatten())
                    .filter_map(|m| m["name"].as_str())
                    .collect();
                println!(
                    "{} on {}: {} reads, metrics {}",
                    d["name"].as_str().unwrap_or("?"),
                    d["interface"].as_str().unwrap_or("(not attached)"),
                    d["reads"],
                    metrics.join(",")
                );
            }
        }
        DynmonCmd::Show { name } => {
            let v = api_call(&s, "GET", &format!("/api/v1/dynmon/{name}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DynmonCmd::Read { name } => {
            let v = api_call(&s, "POST", &format!("/api/v1/dynmon/{name}/read"), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DynmonCmd::Unload { name } => {
            api_call(&s, "DELETE", &format!("/api/v1/dynmon/{name}"), None).await?;
            println!("{name}: unloaded");
        }
    }
    Ok(0)
}
