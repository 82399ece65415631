//! `statewall spa`: the SPA client (pkd and fwknop formats).

use super::prelude::*;

/// The arguments of `statewall spa`.
#[derive(Args)]
pub struct SpaArgs {
    /// Host to open (or `--host`, as nf-pkd-knock takes it).
    #[arg(required_unless_present = "host_flag")]
    pub host: Option<String>,
    /// Host to open (nf-pkd-knock's flag).
    #[arg(long = "host", conflicts_with = "host")]
    pub host_flag: Option<String>,
    /// pkd: the tag (up to 4 bytes, 0x... = hex).
    #[arg(long, required_unless_present = "fwknop")]
    pub tag: Option<String>,
    /// pkd: the key (up to 40 bytes, 0x... = hex).
    #[arg(long, required_unless_present = "fwknop")]
    pub key: Option<String>,
    /// UDP port to send to (pkd: random 1-65535 by default; fwknop: 62201).
    #[arg(long)]
    pub port: Option<u16>,
    /// Send a fwknop packet instead of a pkd knock.
    #[arg(long, conflicts_with_all = ["tag", "key"])]
    pub fwknop: bool,
    /// fwknop: what to open, `tcp/22[,udp/53...]`.
    #[arg(short = 'A', long = "access", requires = "fwknop")]
    pub access: Option<String>,
    /// fwknop: the address to open for (default: 0.0.0.0, the packet's source).
    #[arg(short = 'a', long = "allow-ip", requires = "fwknop")]
    pub allow_ip: Option<std::net::IpAddr>,
    /// fwknop: Rijndael key, base64.
    #[arg(long = "key-base64-rijndael", requires = "fwknop")]
    pub key_base64: Option<String>,
    /// fwknop: HMAC key, base64.
    #[arg(long = "key-base64-hmac", requires = "fwknop")]
    pub hmac_key_base64: Option<String>,
    /// fwknop: HMAC digest (sha256, sha384, sha512).
    #[arg(
        long = "hmac-digest-type",
        default_value = "sha256",
        requires = "fwknop"
    )]
    pub hmac_digest: String,
    /// fwknop: ask for this many seconds of access (message type 3).
    #[arg(long = "fw-timeout", requires = "fwknop")]
    pub fw_timeout: Option<u64>,
    /// fwknop: username in the message.
    #[arg(long, default_value = "statewall", requires = "fwknop")]
    pub user: String,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "v6")]
    pub v4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    pub v6: bool,
}

/// Runs the subcommand.
pub async fn run(args: SpaArgs) -> anyhow::Result<i32> {
    let SpaArgs {
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
    } = args;
    use base64::Engine as _;
    use statewall::spa;
    let host = host.or(host_flag).context("give HOST or --host")?;
    let addr = resolve(&host, v4, v6)?;
    let now = statewall::engine::clock::unix_secs();
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
        let ports: Option<Vec<(u8, u16)>> = access.split(',').map(spa::parse_proto_port).collect();
        let ports = ports.with_context(|| format!("-A {access:?}: tcp/PORT[,udp/PORT...]"))?;
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
            timeout: fw_timeout.map(u128::from),
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
    Ok(0)
}
