//! The `statewall` command: daemon, CLI, demo and benchmarks in one binary.

mod cli;

use std::{net::SocketAddr, path::PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "statewall",
    version,
    about = "Stateful packet processing with eBPF"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
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
        paths: cli::Paths,
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
        paths: cli::Paths,
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
        paths: cli::Paths,
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
        paths: cli::Paths,
    },
    /// Detach every statewall program, remove every pin and the state the config and the
    /// API made (firewall instances, dynamic monitors); the replay cache and used
    /// sequences stay unless --purge. Stop the daemon first.
    Teardown {
        /// The daemon's config file: its `[daemon]` bpffs_root, state_dir and socket are
        /// the ones torn down (the options below still win).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        paths: cli::Paths,
        /// Tear down even though a daemon still answers on the socket.
        #[arg(long)]
        force: bool,
        /// Also remove the reuse protection: the SPA replay cache and the one-time and
        /// counter-based sequences used (old packets and sequences would work again).
        #[arg(long)]
        purge: bool,
    },
    /// Firewall instances, chains and rules (through the daemon's API).
    #[command(alias = "fw")]
    Firewall {
        #[command(subcommand)]
        cmd: cli::firewall::FwCmd,
        #[command(flatten)]
        paths: cli::Paths,
    },
    /// Traffic monitors: list, show, take windows, extract into files.
    Monitor {
        #[command(subcommand)]
        cmd: cli::monitor::MonitorCmd,
        #[command(flatten)]
        paths: cli::Paths,
    },
    /// Dynamic monitors: your own eBPF programs (C source or objects with BTF), their maps
    /// served as metrics.
    Dynmon {
        #[command(subcommand)]
        cmd: cli::dynmon::DynmonCmd,
        #[command(flatten)]
        paths: cli::Paths,
    },
    /// The fleet's shared policy in etcd (`[cluster]`): push a firewall instance's chains,
    /// or the `[[knock]]`, `[[xfsm]]`, `[spa]` or `[detect]` section, to every host of the
    /// group;
    /// withdraw it; list the hosts and the policy revisions they run.
    Cluster {
        #[command(subcommand)]
        cmd: cli::cluster::ClusterCmd,
        /// The config whose `[cluster]` section says where etcd is.
        #[arg(
            long,
            short,
            global = true,
            default_value = "/etc/statewall/statewall.toml"
        )]
        config: PathBuf,
    },
    /// Flood detection and countermeasures: mitigations in force, blocks, release.
    Detect {
        #[command(subcommand)]
        cmd: DetectCmd,
        #[command(flatten)]
        paths: cli::Paths,
    },
    /// Protected ports and grants.
    Gate {
        #[command(subcommand)]
        cmd: cli::gate::GateCmd,
        #[command(flatten)]
        paths: cli::Paths,
    },
    /// Knock doors: list them with open sources and sources part-way through; open or
    /// close one for a source by hand.
    Door {
        #[command(subcommand)]
        cmd: cli::door::DoorCmd,
        #[command(flatten)]
        paths: cli::Paths,
    },
    /// Hand-written state machines (`[[xfsm]]`): list them, or show one machine's flows
    /// with their states and registers, and its global registers.
    Xfsm {
        #[command(subcommand)]
        cmd: cli::xfsm::XfsmCmd,
        #[command(flatten)]
        paths: cli::Paths,
    },
    /// Send a Single Packet Authorization packet: pkd (`--tag`, `--key`, like
    /// nf-pkd-knock) or fwknop (`--fwknop -A tcp/22 --key-base64-rijndael K
    /// --key-base64-hmac H`); IPv4 or IPv6.
    Spa(cli::spa::SpaArgs),
    /// Knock on a host: `statewall knock HOST 7000 8000:udp 9000`.
    Knock(cli::knock::KnockArgs),
    /// Convert other tools' configs.
    Import {
        #[command(subcommand)]
        cmd: cli::import::ImportCmd,
    },
    /// Run the demo in two fresh network namespaces (no daemon needed).
    Demo {
        /// Leave the namespaces and pins in place afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Make labelled captures for the flow classifier: real floods and benign traffic
    /// between two fresh network namespaces (`make dataset`).
    Dataset(cli::learn::DatasetArgs),
    /// Run the benchmarks; print the table, write JSON; exit 1 if a target is missed.
    Bench(cli::bench::BenchArgs),
}

/// `statewall detect`: the daemon's mitigations ([`cli::detect`]) and the learned
/// classifier offline ([`cli::learn`]), which needs no daemon.
#[derive(Subcommand)]
enum DetectCmd {
    #[command(flatten)]
    Daemon(cli::detect::DetectCmd),
    /// Train the flow classifier (or, `--detector mining`, the mining detector) from
    /// labelled captures.
    Train(cli::learn::TrainArgs),
    /// Classify captures offline, window by window as the daemon would live, and count by
    /// flow against their labels.
    Eval(cli::learn::EvalArgs),
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
            let ov = cli::daemon::overrides(paths, listen, token_file, no_auth, metrics_listen);
            statewall::daemon::run(config, ov).await?;
            Ok(0)
        }
        Cmd::Status { paths, json } => cli::status::run(paths, json).await,
        Cmd::Reload { paths } => cli::reload::run(paths).await,
        Cmd::Top { interval, paths } => cli::top::command(interval, paths).await,
        Cmd::CheckConfig { file } => cli::check_config::run(file).await,
        Cmd::Completions { shell } => cli::completions::run(Cli::command(), shell).await,
        Cmd::Manpages { dir } => cli::manpages::run(Cli::command(), dir).await,
        Cmd::Teardown {
            config,
            paths,
            force,
            purge,
        } => cli::teardown::run(config, paths, force, purge).await,
        Cmd::Dynmon { cmd, paths } => cli::dynmon::run(cmd, paths).await,
        Cmd::Monitor { cmd, paths } => cli::monitor::run(cmd, paths).await,
        Cmd::Firewall { cmd, paths } => cli::firewall::run(cmd, paths).await,
        Cmd::Detect { cmd, paths } => match cmd {
            DetectCmd::Daemon(cmd) => cli::detect::run(cmd, paths).await,
            DetectCmd::Train(a) => cli::learn::train(a),
            DetectCmd::Eval(a) => cli::learn::eval(a),
        },
        Cmd::Cluster { cmd, config } => cli::cluster::run(cmd, config).await,
        Cmd::Gate { cmd, paths } => cli::gate::run(cmd, paths).await,
        Cmd::Door { cmd, paths } => cli::door::run(cmd, paths).await,
        Cmd::Xfsm { cmd, paths } => cli::xfsm::run(cmd, paths).await,
        Cmd::Knock(args) => cli::knock::run(args).await,
        Cmd::Spa(args) => cli::spa::run(args).await,
        Cmd::Import { cmd } => cli::import::run(cmd).await,
        Cmd::Demo { keep } => cli::demo::run(keep).await,
        Cmd::Dataset(args) => cli::learn::dataset(args),
        Cmd::Bench(args) => cli::bench::run(args).await,
    }
}

/// Whether the command ends quietly when the reader of its output goes away (`statewall
/// detect eval --flows | head`), as Unix tools do: every command but those that serve or
/// drive sockets and namespaces for long, where a closed peer is an error to report and
/// clean up after, not the end of the run.
fn dies_on_closed_output(cmd: &Cmd) -> bool {
    !matches!(
        cmd,
        Cmd::Daemon { .. }
            | Cmd::Top { .. }
            | Cmd::Cluster { .. }
            | Cmd::Demo { .. }
            | Cmd::Dataset(_)
            | Cmd::Bench(_)
    )
}

fn main() {
    let cli = Cli::parse();
    if dies_on_closed_output(&cli.cmd) {
        // SAFETY: restores the default disposition before any thread starts (Rust's
        // runtime ignores SIGPIPE, so a print to a closed pipe panicked).
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
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
