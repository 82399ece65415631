//! The `statewall` command: daemon, CLI, demo and benchmarks in one binary.

use std::{net::SocketAddr, path::PathBuf};

use statewall::config::proto_name;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use statewall::{client, daemon};

#[derive(Parser)]
#[command(
    name = "statewall",
    version,
    about = "Stateful packet processing with eBPF"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Paths {
    /// bpffs directory holding statewall's pins.
    #[arg(long, global = true, env = "STATEWALL_BPFFS_ROOT")]
    bpffs_root: Option<PathBuf>,
    /// Directory for durable state (replay cache, used one-time sequences).
    #[arg(long, global = true, env = "STATEWALL_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The daemon's API socket.
    #[arg(long, global = true, env = "STATEWALL_SOCKET")]
    socket: Option<PathBuf>,
}

impl Paths {
    fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| "/run/statewall/api.sock".into())
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: attach, serve the API, enforce. SIGHUP reloads; SIGTERM exits and
    /// leaves enforcement in place.
    Daemon {
        /// Config file (TOML); without it the documented defaults apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        paths: Paths,
        /// Also serve the API on this TCP address (loopback advised).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// File holding the bearer token the TCP listener requires.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve the TCP listener without a token.
        #[arg(long)]
        no_auth: bool,
        /// Serve /metrics on this TCP address.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Interfaces, attached programs in run order, links and map fill levels.
    Status {
        #[command(flatten)]
        paths: Paths,
        /// Print the JSON the API returns.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the daemon: doors and their sources, grants with time left, firewall
    /// rule hits and rates, monitors and their busiest sessions, drops (q quits).
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        paths: Paths,
    },
    /// Check a config file without running anything: prints what it configures, or the
    /// error (file, line, key) and exits 1.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell), generated from this
    /// command line's definition.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (statewall.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Manpages {
        /// Output directory.
        dir: PathBuf,
    },
    /// Ask the daemon to re-read its config (same as SIGHUP, but reports errors).
    Reload {
        #[command(flatten)]
        paths: Paths,
    },
    /// Detach every statewall program and remove every pin. Stop the daemon first.
    Teardown {
        #[command(flatten)]
        paths: Paths,
        /// Tear down even though a daemon still answers on the socket.
        #[arg(long)]
        force: bool,
    },
    /// Firewall instances, chains and rules (through the daemon's API).
    #[command(alias = "fw")]
    Firewall {
        #[command(subcommand)]
        cmd: FwCmd,
        #[command(flatten)]
        paths: Paths,
    },
    /// Traffic monitors: list, show, take windows, extract into files.
    Monitor {
        #[command(subcommand)]
        cmd: MonitorCmd,
        #[command(flatten)]
        paths: Paths,
    },
    /// Dynamic monitors: your own eBPF programs (C source or objects with BTF), their maps
    /// served as metrics.
    Dynmon {
        #[command(subcommand)]
        cmd: DynmonCmd,
        #[command(flatten)]
        paths: Paths,
    },
    /// Protected ports and grants.
    Gate {
        #[command(subcommand)]
        cmd: GateCmd,
        #[command(flatten)]
        paths: Paths,
    },
    /// Knock doors: list them with open sources and sources part-way through; open or
    /// close one for a source by hand.
    Door {
        #[command(subcommand)]
        cmd: DoorCmd,
        #[command(flatten)]
        paths: Paths,
    },
    /// Send a Single Packet Authorization packet: pkd (`--tag`, `--key`, like
    /// nf-pkd-knock) or fwknop (`--fwknop -A tcp/22 --key-base64-rijndael K
    /// --key-base64-hmac H`); IPv4 or IPv6.
    Spa {
        /// Host to open (or `--host`, as nf-pkd-knock takes it).
        #[arg(required_unless_present = "host_flag")]
        host: Option<String>,
        /// Host to open (nf-pkd-knock's flag).
        #[arg(long = "host", conflicts_with = "host")]
        host_flag: Option<String>,
        /// pkd: the tag (up to 4 bytes, 0x... = hex).
        #[arg(long, required_unless_present = "fwknop")]
        tag: Option<String>,
        /// pkd: the key (up to 40 bytes, 0x... = hex).
        #[arg(long, required_unless_present = "fwknop")]
        key: Option<String>,
        /// UDP port to send to (pkd: random 1-65535 by default; fwknop: 62201).
        #[arg(long)]
        port: Option<u16>,
        /// Send a fwknop packet instead of a pkd knock.
        #[arg(long, conflicts_with_all = ["tag", "key"])]
        fwknop: bool,
        /// fwknop: what to open, `tcp/22[,udp/53...]`.
        #[arg(short = 'A', long = "access", requires = "fwknop")]
        access: Option<String>,
        /// fwknop: the address to open for (default: 0.0.0.0, the packet's source).
        #[arg(short = 'a', long = "allow-ip", requires = "fwknop")]
        allow_ip: Option<std::net::IpAddr>,
        /// fwknop: Rijndael key, base64.
        #[arg(long = "key-base64-rijndael", requires = "fwknop")]
        key_base64: Option<String>,
        /// fwknop: HMAC key, base64.
        #[arg(long = "key-base64-hmac", requires = "fwknop")]
        hmac_key_base64: Option<String>,
        /// fwknop: HMAC digest (sha256, sha384, sha512).
        #[arg(
            long = "hmac-digest-type",
            default_value = "sha256",
            requires = "fwknop"
        )]
        hmac_digest: String,
        /// fwknop: ask for this many seconds of access (message type 3).
        #[arg(long = "fw-timeout", requires = "fwknop")]
        fw_timeout: Option<u64>,
        /// fwknop: username in the message.
        #[arg(long, default_value = "statewall", requires = "fwknop")]
        user: String,
        /// Use IPv4 only.
        #[arg(short = '4', conflicts_with = "v6")]
        v4: bool,
        /// Use IPv6 only.
        #[arg(short = '6')]
        v6: bool,
    },
    /// Knock on a host: `statewall knock HOST 7000 8000:udp 9000`.
    Knock {
        /// Host to knock on.
        host: String,
        /// Steps, knockd's syntax: `PORT[:tcp|:udp]`.
        steps: Vec<statewall::config::Step>,
        /// Milliseconds between knocks.
        #[arg(short = 'd', long = "delay", default_value_t = 0)]
        delay_ms: u64,
        /// Every step is UDP (like `knock -u`).
        #[arg(short = 'u', long)]
        udp: bool,
        /// Use IPv4 only.
        #[arg(short = '4', conflicts_with = "v6")]
        v4: bool,
        /// Use IPv6 only.
        #[arg(short = '6')]
        v6: bool,
        /// Payload of UDP knocks (a door's `udp_payload = "TEXT"`).
        #[arg(long)]
        payload: Option<String>,
        /// UDP knocks carry the canned payload (a door's `udp_payload = true`).
        #[arg(long, conflicts_with = "payload")]
        default_payload: bool,
        /// Knock the time-based sequence of this secret file (current time window).
        #[arg(long, conflicts_with_all = ["steps", "counter_secret"])]
        time_secret: Option<PathBuf>,
        /// Length of a time window, seconds (the door's `time_period`).
        #[arg(long, default_value_t = 30)]
        period: u64,
        /// Knock the counter-based sequence of this secret file (with --counter).
        #[arg(long, requires = "counter", conflicts_with = "steps")]
        counter_secret: Option<PathBuf>,
        /// Counter to knock (the next unused one).
        #[arg(long)]
        counter: Option<u64>,
        /// Steps of a derived sequence (the door's `derived_steps`).
        #[arg(long, default_value_t = 4)]
        derived_steps: usize,
        /// Protocol of derived steps, tcp or udp (the door's `derived_proto`).
        #[arg(long, default_value = "udp")]
        derived_proto: String,
    },
    /// Convert other tools' configs.
    Import {
        #[command(subcommand)]
        cmd: ImportCmd,
    },
    /// Run the demo in two fresh network namespaces (no daemon needed).
    Demo {
        /// Leave the namespaces and pins in place afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Run the benchmarks; print the table, write JSON; exit 1 if a target is missed.
    Bench {
        /// Where to write the JSON report.
        #[arg(long, default_value = "target/bench/latest.json")]
        out: PathBuf,
        /// Test-run repetitions per measurement.
        #[arg(long, default_value_t = statewall::bench::REPEAT)]
        repeat: u32,
        /// Only the per-packet test-run figures (skips time-to-open, which starts knockd).
        #[arg(long)]
        testrun_only: bool,
        /// Only this group: open, spa-open, testrun, firewall, monitor, dynmon, spa-verify,
        /// firewall-nft, monitor-iperf.
        #[arg(long)]
        only: Option<String>,
        /// Measure nothing: draw the figures again from the JSON report at --out.
        #[arg(long)]
        redraw: bool,
    },
}

#[derive(Subcommand)]
enum DoorCmd {
    /// Doors, open sources, sources part-way through, lockouts.
    List,
    /// Open DOOR for ADDR (its protected ports, for `open_for` or --for seconds).
    Open {
        /// Door name.
        door: String,
        /// Source address.
        addr: std::net::IpAddr,
        /// How long, in seconds (default: the door's open_for).
        #[arg(long = "for")]
        seconds: Option<u64>,
    },
    /// Close DOOR for ADDR (revoke its grants, run the stop command).
    Close {
        /// Door name.
        door: String,
        /// Source address.
        addr: std::net::IpAddr,
    },
    /// Follow door events (server-sent events) until interrupted.
    Events,
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Convert a knockd.conf into statewall config (printed on stdout; notes on stderr).
    Knockd {
        /// The knockd.conf file.
        file: PathBuf,
        /// Ports to protect for doors whose commands do not name them (`tcp/22`).
        #[arg(long)]
        protect: Vec<statewall::config::PortSpec>,
    },
    /// Convert fwknopd's access.conf into `[[spa.fwknop]]` stanzas (stdout; notes on stderr).
    Fwknop {
        /// The access.conf file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum FwCmd {
    /// Every instance, or one with its rules.
    Show {
        /// Instance.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an instance.
    Create {
        /// Name.
        name: String,
    },
    /// Delete an instance (detaching it).
    Delete {
        /// Name.
        name: String,
    },
    /// Attach an instance to an interface.
    Attach {
        /// Instance.
        name: String,
        /// Interface.
        ifname: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Detach an instance from an interface.
    Detach {
        /// Instance.
        name: String,
        /// Interface.
        ifname: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Apply a batch file in Polycube's shape (`{"rules": [{"operation": ...}]}`).
    Batch {
        /// Instance.
        name: String,
        /// INGRESS or EGRESS.
        #[arg(long)]
        chain: String,
        /// The file.
        file: PathBuf,
    },
    /// One operation, polycubectl style: `rule fw1 INGRESS append l4proto=TCP dport=22
    /// action=accept`.
    Rule {
        /// Instance.
        name: String,
        /// INGRESS or EGRESS.
        chain: String,
        /// append, insert, update or delete.
        operation: String,
        /// Fields as key=value (id, src, dst, l4proto, sport, dport, tcpflags, conntrack,
        /// action, description).
        fields: Vec<String>,
    },
    /// Replace chains from FILE (`{"INGRESS": {"default": "DROP", "rules": [...]},
    /// "EGRESS": ...}`); with `--confirm 30s` it is reverted by itself unless `statewall fw
    /// confirm NAME` arrives in time (lockout safety for remote admins).
    Apply {
        /// Instance.
        name: String,
        /// The ruleset file.
        file: PathBuf,
        /// Revert unless confirmed within this long.
        #[arg(long)]
        confirm: Option<statewall::config::Dur>,
    },
    /// Keep what `apply --confirm` set.
    Confirm {
        /// Instance.
        name: String,
    },
    /// Set a chain's default action (DROP or ACCEPT).
    Default {
        /// Instance.
        name: String,
        /// INGRESS or EGRESS.
        chain: String,
        /// DROP or ACCEPT.
        action: String,
    },
    /// Tracked connections.
    Sessions {
        /// Instance.
        name: String,
    },
    /// Per-rule counters of both chains.
    Stats {
        /// Instance.
        name: String,
    },
    /// The latest LOG rule hits (kept by the daemon, at most 4096 across instances).
    Log {
        /// Instance.
        name: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MonitorCmd {
    /// Every monitor with its counters.
    List,
    /// One monitor (JSON).
    Show {
        /// Monitor name.
        name: String,
    },
    /// Take one window and print it (JSON).
    Read {
        /// Monitor name.
        name: String,
    },
    /// Take a window every INTERVAL seconds and write it into files.
    Extract {
        /// Monitor name.
        name: String,
        /// Seconds between windows.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Directory for the files.
        #[arg(long)]
        output: PathBuf,
        /// Compat format: JSON files (`result_{n}.json`) instead of CSV.
        #[arg(long)]
        json: bool,
        /// compat: the original monitors' files; tidy: one CSV row per packet or session.
        #[arg(long, value_enum, default_value = "compat")]
        format: statewall::monitor_files::Format,
        /// Stop after this many windows (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Subcommand)]
enum DynmonCmd {
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum DynDirection {
    Ingress,
    Egress,
    Both,
}

#[derive(Subcommand)]
enum GateCmd {
    /// Protected ports and counters.
    Show,
    /// List live grants.
    Grants,
    /// Let ADDR open new connections to PROTO/PORT for SECONDS.
    Grant {
        /// Source address.
        addr: std::net::IpAddr,
        /// `tcp/22` or `udp/9922`.
        port: statewall::config::PortSpec,
        /// How long, in seconds.
        #[arg(long = "for", default_value_t = 30)]
        seconds: u64,
    },
    /// Remove a grant.
    Revoke {
        /// Source address.
        addr: std::net::IpAddr,
        /// `tcp/22` or `udp/9922`.
        port: statewall::config::PortSpec,
    },
}

fn print_status(v: &serde_json::Value) {
    println!(
        "statewall {} (object {}), pins under {}",
        v["version"].as_str().unwrap_or("?"),
        v["object_id"].as_str().unwrap_or("?"),
        v["bpffs_root"].as_str().unwrap_or("?")
    );
    println!(
        "programs {}",
        if v["adopted"].as_bool() == Some(true) {
            "adopted from pins"
        } else {
            "loaded at start"
        }
    );
    println!("\nhooks (programs in the order the kernel runs them):");
    for h in v["hooks"].as_array().into_iter().flatten() {
        let ns = h["netns"]
            .as_str()
            .map(|n| format!(" (netns {n})"))
            .unwrap_or_default();
        let progs: Vec<String> = h["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}#{}", p[0].as_str().unwrap_or("?"), p[1]))
            .collect();
        println!(
            "  {}{} {}: {}",
            h["ifname"].as_str().unwrap_or("?"),
            ns,
            h["hook"].as_str().unwrap_or("?"),
            if progs.is_empty() {
                "-".into()
            } else {
                progs.join(" -> ")
            }
        );
    }
    println!("\nmaps:");
    println!(
        "  {:<20} {:>6} {:<14} {:>10} {:>10}",
        "name", "id", "type", "entries", "max"
    );
    for m in v["maps"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} {:>6} {:<14} {:>10} {:>10}",
            m["name"].as_str().unwrap_or("?"),
            m["id"],
            m["kind"].as_str().unwrap_or("?"),
            m["entries"],
            m["max_entries"]
        );
    }
}

async fn cli_main(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Daemon {
            config,
            paths,
            listen,
            token_file,
            no_auth,
            metrics_listen,
        } => {
            let ov = daemon::Overrides {
                bpffs_root: paths.bpffs_root,
                state_dir: paths.state_dir,
                socket: paths.socket,
                listen,
                token_file,
                no_auth,
                metrics_listen,
            };
            daemon::run(config, ov).await?;
        }
        Cmd::Status { paths, json } => {
            let r = client::request(&paths.socket(), "GET", "/api/v1/status", None)
                .await?
                .ok()?;
            let v = r.json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
        }
        Cmd::Reload { paths } => {
            client::request(&paths.socket(), "POST", "/api/v1/reload", None)
                .await?
                .ok()?;
            println!("reloaded");
        }
        Cmd::Top { interval, paths } => {
            if !(0.1..=3600.0).contains(&interval) {
                anyhow::bail!("--interval: from 0.1 to 3600 seconds");
            }
            let socket = paths.socket();
            // A thread of its own, outside the runtime: the API client blocks.
            std::thread::spawn(move || {
                statewall::top::run(socket, std::time::Duration::from_secs_f64(interval))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("statewall top panicked"))??;
        }
        Cmd::CheckConfig { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let cfg = statewall::config::Config::parse(&text, &file.display().to_string())?;
            println!(
                "{}: ok ({} interfaces, {} knock doors, {} monitors)",
                file.display(),
                cfg.interfaces.len(),
                cfg.knocks.len(),
                cfg.monitors.len()
            );
        }
        Cmd::Completions { shell } => {
            let mut c = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut c, "statewall", &mut buf);
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(&buf);
        }
        Cmd::Manpages { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
        }
        Cmd::Teardown { paths, force } => {
            let root = paths
                .bpffs_root
                .clone()
                .unwrap_or_else(|| statewall::pins::DEFAULT_ROOT.into());
            if std::os::unix::net::UnixStream::connect(paths.socket()).is_ok() && !force {
                anyhow::bail!(
                    "a daemon still answers on {}: stop it first (it would attach again and start with empty tables), or pass --force",
                    paths.socket().display()
                );
            }
            let n = statewall::engine::teardown(&statewall::pins::Pins::new(&root))
                .with_context(|| format!("tearing down {}", root.display()))?;
            println!("detached {n} link(s), removed {}", root.display());
        }
        Cmd::Dynmon { cmd, paths } => {
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
                    let code = std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
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
                    let m: MetricsFile = toml::from_str(&text)
                        .with_context(|| format!("in {}", metrics.display()))?;
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
                            metrics: m.metric,
                        }],
                    };
                    let body = serde_json::to_value(&spec)?;
                    let v =
                        api_call(&s, "POST", &format!("/api/v1/dynmon/{name}"), Some(body)).await?;
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
                    let v =
                        api_call(&s, "POST", &format!("/api/v1/dynmon/{name}/read"), None).await?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                DynmonCmd::Unload { name } => {
                    api_call(&s, "DELETE", &format!("/api/v1/dynmon/{name}"), None).await?;
                    println!("{name}: unloaded");
                }
            }
        }
        Cmd::Monitor { cmd, paths } => {
            let s = paths.socket();
            match cmd {
                MonitorCmd::List => {
                    let v = api_call(&s, "GET", "/api/v1/monitor", None).await?;
                    for m in v.as_array().into_iter().flatten() {
                        let c = &m["counters"];
                        println!(
                            "{} {} on {} ({}): {} packets, {} captured, {} sessions, {} turned away, {} windows",
                            m["name"].as_str().unwrap_or("?"),
                            m["kind"].as_str().unwrap_or("?"),
                            m["interfaces"]
                                .as_array()
                                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
                                .unwrap_or_default(),
                            m["direction"].as_str().unwrap_or("?"),
                            c["packets"],
                            c["captured"],
                            c["sessions"],
                            c["turned_away"],
                            m["windows"]
                        );
                    }
                }
                MonitorCmd::Show { name } => {
                    let v = api_call(&s, "GET", &format!("/api/v1/monitor/{name}"), None).await?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                MonitorCmd::Read { name } => {
                    let v =
                        api_call(&s, "POST", &format!("/api/v1/monitor/{name}/read"), None).await?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                MonitorCmd::Extract {
                    name,
                    interval,
                    output,
                    json,
                    format,
                    count,
                } => {
                    anyhow::ensure!(
                        interval > 0.0 && interval.is_finite(),
                        "--interval: a number of seconds above 0"
                    );
                    let mut tick =
                        tokio::time::interval(std::time::Duration::from_secs_f64(interval));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    let mut iter = 0u64;
                    while count.is_none_or(|c| iter < c) {
                        tick.tick().await;
                        let w = api_call(&s, "POST", &format!("/api/v1/monitor/{name}/read"), None)
                            .await?;
                        let files = statewall::monitor_files::write_window(
                            &output, &w, iter, format, json,
                        )?;
                        eprintln!(
                            "window {}: {} sessions, {} packet records, {} files",
                            w["window"],
                            w["sessions"].as_array().map_or(0, |a| a.len()),
                            w["packets"].as_array().map_or(0, |a| a.len()),
                            files.len()
                        );
                        iter += 1;
                    }
                }
            }
        }
        Cmd::Firewall { cmd, paths } => {
            let s = paths.socket();
            let call = |method: &'static str, path: String, body: Option<serde_json::Value>| {
                let s = s.clone();
                async move { api_call(&s, method, &path, body).await }
            };
            let base = "/api/v1/firewall";
            // A chain batch (from a file or one `rule` operation), and the chain's new size.
            let batch = |name: String, chain: String, body: serde_json::Value| {
                let call = &call;
                async move {
                    let v = call(
                        "POST",
                        format!("{base}/{name}/chain/{chain}/batch"),
                        Some(body),
                    )
                    .await?;
                    println!("{name} {chain}: {} rules", v["rules"]);
                    anyhow::Ok(())
                }
            };
            let attaching = matches!(cmd, FwCmd::Attach { .. });
            match cmd {
                FwCmd::Show { name: None, json } => {
                    let v = call("GET", base.into(), None).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        for i in v.as_array().into_iter().flatten() {
                            println!(
                                "{} ports {} ingress {} ({} rules) egress {} ({} rules)",
                                i["name"].as_str().unwrap_or("?"),
                                i["ports"],
                                i["chain"][0]["default"].as_str().unwrap_or("?"),
                                i["chain"][0]["rules"],
                                i["chain"][1]["default"].as_str().unwrap_or("?"),
                                i["chain"][1]["rules"],
                            );
                        }
                    }
                }
                FwCmd::Show {
                    name: Some(n),
                    json,
                } => {
                    let mut out = serde_json::Map::new();
                    for chain in ["INGRESS", "EGRESS"] {
                        let v = call("GET", format!("{base}/{n}/chain/{chain}/rule"), None).await?;
                        out.insert(chain.into(), v);
                    }
                    if json {
                        println!("{}", serde_json::to_string_pretty(&out)?);
                    } else {
                        for (chain, rules) in &out {
                            println!("{chain}:");
                            for r in rules.as_array().into_iter().flatten() {
                                let mut line = format!("  {:>4}", r["id"]);
                                for k in [
                                    "src",
                                    "dst",
                                    "l4proto",
                                    "sport",
                                    "dport",
                                    "tcpflags",
                                    "conntrack",
                                    "action",
                                    "description",
                                ] {
                                    if let Some(v) = r.get(k) {
                                        line.push_str(&format!(
                                            " {k}={}",
                                            v.as_str().map(str::to_string).unwrap_or(v.to_string())
                                        ));
                                    }
                                }
                                println!("{line}");
                            }
                        }
                    }
                }
                FwCmd::Create { name } => {
                    call(
                        "POST",
                        format!("{base}/{name}"),
                        Some(serde_json::json!({})),
                    )
                    .await?;
                    println!("created {name}");
                }
                FwCmd::Delete { name } => {
                    call("DELETE", format!("{base}/{name}"), None).await?;
                    println!("deleted {name}");
                }
                FwCmd::Attach {
                    name,
                    ifname,
                    netns,
                }
                | FwCmd::Detach {
                    name,
                    ifname,
                    netns,
                } => {
                    let what = if attaching { "attach" } else { "detach" };
                    call(
                        "POST",
                        format!("{base}/{name}/{what}"),
                        Some(serde_json::json!({"port": ifname, "netns": netns})),
                    )
                    .await?;
                    println!("{what}ed {name} {ifname}");
                }
                FwCmd::Batch { name, chain, file } => {
                    batch(name, chain, read_json(&file)?).await?;
                }
                FwCmd::Rule {
                    name,
                    chain,
                    operation,
                    fields,
                } => {
                    let mut op = serde_json::Map::new();
                    op.insert("operation".into(), operation.into());
                    for f in fields {
                        let (k, v) = f
                            .split_once('=')
                            .with_context(|| format!("{f:?}: write key=value"))?;
                        let v = if k == "id" {
                            serde_json::Value::from(
                                v.parse::<u64>()
                                    .with_context(|| format!("id={v}: a number"))?,
                            )
                        } else {
                            serde_json::Value::from(v)
                        };
                        op.insert(k.into(), v);
                    }
                    batch(name, chain, serde_json::json!({"rules": [op]})).await?;
                }
                FwCmd::Apply {
                    name,
                    file,
                    confirm,
                } => {
                    let mut body = read_json(&file)?;
                    if let Some(d) = confirm {
                        body["confirm"] = d.0.as_secs().max(1).into();
                    }
                    call("POST", format!("{base}/{name}/apply"), Some(body)).await?;
                    match confirm {
                        Some(d) => println!(
                            "applied to {name}: confirm within {d} (statewall fw confirm {name}) or it is reverted"
                        ),
                        None => println!("applied to {name}"),
                    }
                }
                FwCmd::Confirm { name } => {
                    call("POST", format!("{base}/{name}/confirm"), None).await?;
                    println!("confirmed {name}");
                }
                FwCmd::Default {
                    name,
                    chain,
                    action,
                } => {
                    call(
                        "PATCH",
                        format!("{base}/{name}/chain/{chain}"),
                        Some(serde_json::json!({"default": action})),
                    )
                    .await?;
                    println!("{name} {chain}: default {action}");
                }
                FwCmd::Log { name, since, json } => {
                    let v = call("GET", format!("{base}/{name}/log?since={since}"), None).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    }
                    for r in v.as_array().into_iter().flatten().filter(|_| !json) {
                        println!(
                            "#{} {} rule {} {} {} {}:{} -> {}:{} {} len {}{}",
                            r["seq"],
                            r["chain"].as_str().unwrap_or("?"),
                            r["rule"],
                            r["conntrack"].as_str().unwrap_or("?"),
                            r["l4proto"].as_str().unwrap_or("?"),
                            r["src"].as_str().unwrap_or("?"),
                            r["sport"],
                            r["dst"].as_str().unwrap_or("?"),
                            r["dport"],
                            r["tcpflags"].as_str().unwrap_or(""),
                            r["len"],
                            r["description"]
                                .as_str()
                                .filter(|d| !d.is_empty())
                                .map(|d| format!(" ({d})"))
                                .unwrap_or_default()
                        );
                    }
                }
                FwCmd::Sessions { name } => {
                    let v = call("GET", format!("{base}/{name}/sessions"), None).await?;
                    for r in v.as_array().into_iter().flatten() {
                        println!(
                            "{} {}:{} -> {}:{} {} {}s",
                            r["l4proto"].as_str().unwrap_or("?"),
                            r["src"].as_str().unwrap_or("?"),
                            r["sport"],
                            r["dst"].as_str().unwrap_or("?"),
                            r["dport"],
                            r["state"].as_str().unwrap_or("?"),
                            r["eta"]
                        );
                    }
                }
                FwCmd::Stats { name } => {
                    for chain in ["INGRESS", "EGRESS"] {
                        let v =
                            call("GET", format!("{base}/{name}/chain/{chain}/stats"), None).await?;
                        for r in v.as_array().into_iter().flatten() {
                            println!(
                                "{chain} {:>4} pkts={} bytes={} {}",
                                r["id"],
                                r["pkts"],
                                r["bytes"],
                                r["description"].as_str().unwrap_or("")
                            );
                        }
                    }
                }
            }
        }
        Cmd::Gate { cmd, paths } => {
            let s = paths.socket();
            match cmd {
                GateCmd::Show => {
                    let v = client::request(&s, "GET", "/api/v1/gate", None)
                        .await?
                        .ok()?
                        .json()?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                GateCmd::Grants => {
                    let v = client::request(&s, "GET", "/api/v1/gate/grants", None)
                        .await?
                        .ok()?
                        .json()?;
                    for g in v.as_array().into_iter().flatten() {
                        println!(
                            "{} {}/{} {:.0}s left",
                            g["addr"].as_str().unwrap_or("?"),
                            g["proto"].as_str().unwrap_or("?"),
                            g["port"],
                            g["seconds_left"].as_f64().unwrap_or(0.0)
                        );
                    }
                }
                GateCmd::Grant {
                    addr,
                    port,
                    seconds,
                } => {
                    let body = serde_json::json!({"addr": addr, "proto": proto_name(port.proto), "port": port.port, "seconds": seconds});
                    client::request(&s, "POST", "/api/v1/gate/grants", Some(body.to_string()))
                        .await?
                        .ok()?;
                    println!("granted {addr} {port} for {seconds}s");
                }
                GateCmd::Revoke { addr, port } => {
                    let q = format!(
                        "/api/v1/gate/grants?addr={addr}&proto={}&port={}",
                        proto_name(port.proto),
                        port.port
                    );
                    client::request(&s, "DELETE", &q, None).await?.ok()?;
                    println!("revoked {addr} {port}");
                }
            }
        }
        Cmd::Door { cmd, paths } => {
            let s = paths.socket();
            match cmd {
                DoorCmd::List => {
                    let v = client::request(&s, "GET", "/api/v1/doors", None)
                        .await?
                        .ok()?
                        .json()?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                DoorCmd::Open {
                    door,
                    addr,
                    seconds,
                } => {
                    let body = serde_json::json!({"source": addr, "seconds": seconds});
                    let v = client::request(
                        &s,
                        "POST",
                        &format!("/api/v1/doors/{door}/open"),
                        Some(body.to_string()),
                    )
                    .await?
                    .ok()?
                    .json()?;
                    println!("door {door} open for {addr} ({}s)", v["seconds"]);
                }
                DoorCmd::Close { door, addr } => {
                    let body = serde_json::json!({ "source": addr });
                    client::request(
                        &s,
                        "POST",
                        &format!("/api/v1/doors/{door}/close"),
                        Some(body.to_string()),
                    )
                    .await?
                    .ok()?;
                    println!("door {door} closed for {addr}");
                }
                DoorCmd::Events => {
                    client::stream_lines(&s, "/api/v1/xfsm/events", |line| {
                        if let Some(d) = line.strip_prefix("data: ") {
                            println!("{d}");
                        }
                    })
                    .await?;
                }
            }
        }
        Cmd::Knock {
            host,
            steps,
            delay_ms,
            udp,
            v4,
            v6,
            payload,
            default_payload,
            time_secret,
            period,
            counter_secret,
            counter,
            derived_steps,
            derived_proto,
        } => {
            use statewall::knockclient;
            let addr = resolve(&host, v4, v6)?;
            let mut steps = steps;
            let derived = match (&time_secret, &counter_secret) {
                (Some(f), _) => {
                    anyhow::ensure!(period > 0, "--period: at least 1 second");
                    let now = statewall::clock::unix_secs();
                    Some((f, knockclient::time_counter(now, period)))
                }
                (None, Some(f)) => Some((f, counter.unwrap_or_default())),
                (None, None) => None,
            };
            if let Some((file, c)) = derived {
                let max = knockclient::DERIVE_MAX_STEPS;
                anyhow::ensure!(
                    (2..=max).contains(&derived_steps),
                    "--derived-steps: 2 to {max}"
                );
                let proto = statewall::config::proto_number(&derived_proto).with_context(|| {
                    format!("--derived-proto: {derived_proto:?} is not tcp or udp")
                })?;
                let secret = knockclient::read_secret(file).map_err(anyhow::Error::msg)?;
                steps = knockclient::derive(&secret, c, derived_steps, proto);
            }
            if udp {
                for s in &mut steps {
                    s.0.proto = 17;
                }
            }
            if steps.is_empty() {
                anyhow::bail!("no knock steps: give PORT[:proto]...");
            }
            let payload = match payload {
                Some(p) => Some(p.into_bytes()),
                None if default_payload => Some(statewall::config::DEFAULT_KNOCK_PAYLOAD.to_vec()),
                None => None,
            };
            knockclient::knock(
                addr,
                &steps,
                std::time::Duration::from_millis(delay_ms),
                payload.as_deref(),
            )
            .with_context(|| format!("knocking on {addr}"))?;
            let list: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
            println!("knocked on {addr}: {}", list.join(" "));
        }
        Cmd::Spa {
            host,
            host_flag,
            tag,
            key,
            port,
            fwknop,
            access,
            allow_ip,
            key_base64,
            hmac_key_base64,
            hmac_digest,
            fw_timeout,
            user,
            v4,
            v6,
        } => {
            use base64::Engine as _;
            use statewall::spa;
            let host = host.or(host_flag).context("give HOST or --host")?;
            let addr = resolve(&host, v4, v6)?;
            let now = statewall::clock::unix_secs();
            if fwknop {
                let b64 = |what: &str, v: Option<String>| -> anyhow::Result<Vec<u8>> {
                    let v = v.with_context(|| format!("--{what} is required"))?;
                    base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .with_context(|| format!("--{what}: not base64"))
                };
                let key = b64("key-base64-rijndael", key_base64)?;
                let hkey = b64("key-base64-hmac", hmac_key_base64)?;
                let bits = match hmac_digest.to_ascii_lowercase().as_str() {
                    "sha256" => 256,
                    "sha384" => 384,
                    "sha512" => 512,
                    o => anyhow::bail!("--hmac-digest-type {o:?}: sha256, sha384 or sha512"),
                };
                let access = access.context("-A/--access is required, e.g. -A tcp/22")?;
                let ports: Option<Vec<(u8, u16)>> =
                    access.split(',').map(spa::parse_proto_port).collect();
                let ports =
                    ports.with_context(|| format!("-A {access:?}: tcp/PORT[,udp/PORT...]"))?;
                let allow = allow_ip.unwrap_or(if addr.is_ipv4() {
                    std::net::IpAddr::from([0u8, 0, 0, 0])
                } else {
                    std::net::IpAddr::from([0u16; 8])
                });
                let m = spa::FwknopMessage {
                    user,
                    ts: now,
                    allow,
                    access: ports,
                    timeout: fw_timeout,
                };
                let pkt = spa::fwknop_packet(&m, &key, &hkey, bits)?;
                let to = std::net::SocketAddr::new(addr, port.unwrap_or(62201));
                spa::send_udp(to, pkt.as_bytes()).with_context(|| format!("sending to {to}"))?;
                println!("sent fwknop SPA to {to}");
            } else {
                let tag = spa::pkd_bytes::<4>(&tag.unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("--tag {e}"))?;
                let key = spa::pkd_bytes::<40>(&key.unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("--key {e}"))?;
                let dport = match port {
                    Some(p) => p,
                    None => (u16::from_ne_bytes(spa::random_bytes::<2>()?) % 65535) + 1,
                };
                let random = spa::random_bytes::<12>()?;
                let pkt = spa::pkd_packet(dport, &tag, &key, now, &random);
                let to = std::net::SocketAddr::new(addr, dport);
                spa::send_udp(to, &pkt).with_context(|| format!("sending to {to}"))?;
                println!("sent pkd knock to {to}");
            }
        }
        Cmd::Import { cmd } => match cmd {
            ImportCmd::Knockd { file, protect } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let imp = statewall::knockd::import(&text, &file.display().to_string(), &protect)
                    .map_err(anyhow::Error::msg)?;
                for n in &imp.notes {
                    eprintln!("note: {n}");
                }
                print!("{}", toml::to_string(&imp.config)?);
            }
            ImportCmd::Fwknop { file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let imp = statewall::fwknopconf::import(&text, &file.display().to_string())
                    .map_err(anyhow::Error::msg)?;
                for n in &imp.notes {
                    eprintln!("note: {n}");
                }
                print!("{}", toml::to_string(&imp.config)?);
            }
        },
        Cmd::Demo { keep } => {
            tokio::task::spawn_blocking(move || statewall::demo::run(keep)).await??;
        }
        Cmd::Bench {
            out,
            repeat,
            testrun_only,
            only,
            redraw,
        } => {
            if redraw {
                let text = std::fs::read_to_string(&out)
                    .with_context(|| format!("reading {}", out.display()))?;
                let report: statewall::bench::Report =
                    serde_json::from_str(&text).with_context(|| format!("in {}", out.display()))?;
                let dir = out.parent().unwrap_or(std::path::Path::new("."));
                for f in statewall::bench_plot::draw(&report, dir)? {
                    println!("figure: {}", f.display());
                }
                return Ok(0);
            }
            let report = tokio::task::spawn_blocking(move || {
                statewall::bench::run(&out, repeat, !testrun_only, only.as_deref())
            })
            .await??;
            statewall::bench::print(&report);
            if report.rows.iter().any(|r| r.met == Some(false)) {
                eprintln!("\nsome targets were MISSED");
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// One API call: the JSON answer, or an error with the API's message.
async fn api_call(
    socket: &std::path::Path,
    method: &'static str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let r = client::request(socket, method, path, body.map(|b| b.to_string())).await?;
    if r.status >= 400 {
        let msg = r
            .json()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| r.body.clone());
        anyhow::bail!("{method} {path}: {msg}");
    }
    r.json()
}

/// Resolves a host name or address, honouring -4 / -6.
/// A JSON file, with the file named in errors.
fn read_json(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))
}

fn resolve(host: &str, v4: bool, v6: bool) -> anyhow::Result<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::IpAddr> = (host, 0)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .map(|a| a.ip())
        .collect();
    addrs
        .into_iter()
        .find(|a| (!v4 || a.is_ipv4()) && (!v6 || a.is_ipv6()))
        .ok_or_else(|| {
            anyhow::anyhow!("{host} has no {} address", if v6 { "IPv6" } else { "IPv4" })
        })
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(cli_main(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("statewall: {e:#}");
            std::process::exit(1);
        }
    }
}
