//! `statewall knock`: the knock client.

use super::prelude::*;

/// The arguments of `statewall knock`.
#[derive(Args)]
pub struct KnockArgs {
    /// Host to knock on.
    pub host: String,
    /// Steps, knockd's syntax: `PORT[:tcp|:udp]`.
    pub steps: Vec<statewall::config::Step>,
    /// Milliseconds between knocks.
    #[arg(short = 'd', long = "delay", default_value_t = 0)]
    pub delay_ms: u64,
    /// Every step is UDP (like `knock -u`).
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "v6")]
    pub v4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    pub v6: bool,
    /// Payload of UDP knocks (a door's `udp_payload = "TEXT"`).
    #[arg(long)]
    pub payload: Option<String>,
    /// UDP knocks carry the canned payload (a door's `udp_payload = true`).
    #[arg(long, conflicts_with = "payload")]
    pub default_payload: bool,
    /// Knock the time-based sequence of this secret file (current time window).
    #[arg(long, conflicts_with_all = ["steps", "counter_secret"])]
    pub time_secret: Option<PathBuf>,
    /// Length of a time window, seconds (the door's `time_period`).
    #[arg(long, default_value_t = 30)]
    pub period: u64,
    /// Knock the counter-based sequence of this secret file (with --counter).
    #[arg(long, requires = "counter", conflicts_with = "steps")]
    pub counter_secret: Option<PathBuf>,
    /// Counter to knock (the next unused one).
    #[arg(long)]
    pub counter: Option<u64>,
    /// Steps of a derived sequence (the door's `derived_steps`).
    #[arg(long, default_value_t = 4)]
    pub derived_steps: usize,
    /// Protocol of derived steps, tcp or udp (the door's `derived_proto`).
    #[arg(long, default_value = "udp")]
    pub derived_proto: String,
}

/// Runs the subcommand.
pub async fn run(args: KnockArgs) -> anyhow::Result<i32> {
    let KnockArgs {
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
    } = args;
    use statewall::xfsm::knockclient;
    let addr = resolve(&host, v4, v6)?;
    let mut steps = steps;
    let derived = match (&time_secret, &counter_secret) {
        (Some(f), _) => {
            anyhow::ensure!(period > 0, "--period: at least 1 second");
            let now = statewall::engine::clock::unix_secs();
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
        let proto = statewall::config::proto_number(&derived_proto)
            .with_context(|| format!("--derived-proto: {derived_proto:?} is not tcp or udp"))?;
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
    Ok(0)
}
