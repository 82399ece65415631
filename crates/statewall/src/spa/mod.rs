//! Single Packet Authorization, user side: the pkd / nf-pkd and fwknop verifiers, the
//! durable replay cache, and the pkd client packet.
//!
//! The kernel (`statewall_common::spa`) hands candidates over by ring buffer; [`Verifier`]
//! checks them against the configured actions and stanzas and says which grants to make.
//! Every check on a secret compares in constant time; nothing here panics on any input
//! (the fuzz targets feed it arbitrary bytes).
//!
//! Owns the `[spa]` section (`config`) and what it writes into the kernel (`kernel`). May
//! import: `engine`, `gate`, `types`.

pub mod config;
pub mod kernel;

use std::{
    collections::HashMap,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

use base64::{
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
    Engine as _,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

/// pkd payload length.
pub const PKD_LEN: usize = statewall_common::spa::PKD_LEN;

/// The longest grant an fwknop client may ask for when a stanza sets no `max_fw_timeout`,
/// seconds.
pub const DEFAULT_MAX_FW_TIMEOUT: u64 = 300;

/// The longest grant any configuration may give, seconds (a year): every expiry computed
/// from it fits in the kernel clock's 64 bits.
pub const LONGEST_GRANT: u64 = 365 * 86400;

/// Why a candidate was refused (also the counter names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Wrong length, not base64, not the format.
    Malformed,
    /// No action or stanza for the tag / source.
    NoMatch,
    /// The digest or HMAC did not verify (forged, or a wrong key).
    BadDigest,
    /// Seen before (replay cache).
    Replay,
    /// Timestamp outside the allowed clock skew.
    Stale,
    /// The message asks for something the stanza does not allow (ports, a command, the
    /// source address, the user).
    NotAllowed,
    /// The replay cache is full of live entries: refused (fail closed).
    CacheFull,
    /// Valid, but the action's `min_interval` since this source's last accepted knock has
    /// not passed.
    RateLimited,
}

impl Reject {
    /// Counter / event name.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::NoMatch => "no_match",
            Reject::BadDigest => "bad_digest",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
            Reject::NotAllowed => "not_allowed",
            Reject::CacheFull => "cache_full",
            Reject::RateLimited => "rate_limited",
        }
    }

    /// Every reason, in counter order.
    pub const ALL: [Reject; 8] = [
        Reject::Malformed,
        Reject::NoMatch,
        Reject::BadDigest,
        Reject::Replay,
        Reject::Stale,
        Reject::NotAllowed,
        Reject::CacheFull,
        Reject::RateLimited,
    ];
}

/// A pkd action (nf-pkd's `actions.d/*.json` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkdAction {
    /// Name.
    pub name: String,
    /// Port it opens.
    pub port: u16,
    /// Protocols it opens: 6, 17, or both.
    pub protos: Vec<u8>,
    /// Tag, 4 bytes (zero-padded).
    pub tag: [u8; 4],
    /// Key, zero-padded to 40 bytes.
    pub key: [u8; 40],
    /// Seconds the grant lasts.
    pub window: u64,
    /// Allowed clock skew in seconds; `None` = not checked (nf-pkd's -1).
    pub skew: Option<u64>,
    /// Refused SYNs get a reset rather than a silent drop.
    pub reset: bool,
    /// Seconds between two accepted knocks of one source for this action (0 = no limit).
    pub min_interval: u64,
}

/// The digest of a pkd knock (COMPAT.md section 1).
pub fn pkd_digest(
    dport: u16,
    tag: &[u8; 4],
    ts: u64,
    random: &[u8; 12],
    key: &[u8; 40],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(dport.to_be_bytes());
    h.update(dport.to_be_bytes());
    h.update(tag);
    h.update(ts.to_le_bytes());
    h.update(random);
    h.update(key);
    h.finalize().into()
}

/// Builds a pkd knock payload (what `nf-pkd-knock` sends).
pub fn pkd_packet(
    dport: u16,
    tag: &[u8; 4],
    key: &[u8; 40],
    ts: u64,
    random: &[u8; 12],
) -> [u8; PKD_LEN] {
    let mut p = [0u8; PKD_LEN];
    p[..4].copy_from_slice(tag);
    p[4..12].copy_from_slice(&ts.to_le_bytes());
    p[12..24].copy_from_slice(random);
    p[24..].copy_from_slice(&pkd_digest(dport, tag, ts, random, key));
    p
}

/// Parses a tag or key as nf-pkd does: `0x...` = hex, otherwise the bytes, zero-padded to
/// `N`; longer is an error.
pub fn pkd_bytes<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let raw = match s.strip_prefix("0x") {
        Some(h) => decode_hex(h).ok_or_else(|| format!("{s:?}: not hex"))?,
        None => s.as_bytes().to_vec(),
    };
    if raw.len() > N {
        return Err(format!("{s:?}: {} bytes, at most {N}", raw.len()));
    }
    let mut out = [0u8; N];
    out[..raw.len()].copy_from_slice(&raw);
    Ok(out)
}

fn decode_hex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fwknop access stanza (access.conf), resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwknopStanza {
    /// Name (for logs; access.conf stanzas have none: `stanza N`).
    pub name: String,
    /// Source networks (`ANY` = every address): (network, prefix length).
    pub sources: Vec<(IpAddr, u8)>,
    /// Ports it may open; empty = whatever the client asks for (fwknopd's default).
    pub open_ports: Vec<(u8, u16)>,
    /// Ports it never opens.
    pub restrict_ports: Vec<(u8, u16)>,
    /// Rijndael key bytes.
    pub key: Vec<u8>,
    /// HMAC key bytes.
    pub hmac_key: Vec<u8>,
    /// HMAC digest: 256, 384 or 512 (SHA-2).
    pub hmac_bits: u16,
    /// Grant length when the client does not ask.
    pub access_timeout: u64,
    /// Longest grant a client may ask for (types 3, 4, 6); a longer one is cut to this.
    pub max_timeout: u64,
    /// The message's address must be the packet's source (no `0.0.0.0`).
    pub require_source_address: bool,
    /// Only this user (the message's username).
    pub require_username: Option<String>,
    /// Command messages (type 0) accepted (they are logged, never run).
    pub enable_cmd: bool,
    /// Allowed clock skew, seconds.
    pub skew: u64,
}

impl FwknopStanza {
    /// A stanza for any source (IPv4 and IPv6) with these keys and fwknopd's defaults:
    /// SHA-256 HMAC, 30 s access, 120 s skew, any port, no commands.
    pub fn any_source(name: &str, key: Vec<u8>, hmac_key: Vec<u8>) -> FwknopStanza {
        FwknopStanza {
            name: name.into(),
            sources: vec![("0.0.0.0".parse().unwrap(), 0), ("::".parse().unwrap(), 0)],
            open_ports: vec![],
            restrict_ports: vec![],
            key,
            hmac_key,
            hmac_bits: 256,
            access_timeout: 30,
            max_timeout: DEFAULT_MAX_FW_TIMEOUT,
            require_source_address: false,
            require_username: None,
            enable_cmd: false,
            skew: 120,
        }
    }
}

/// A verified fwknop request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwknopRequest {
    /// Stanza index.
    pub stanza: usize,
    /// Username.
    pub user: String,
    /// Client timestamp.
    pub ts: u64,
    /// Message type.
    pub msg_type: u8,
    /// The address to open for (the packet's source when the client said 0.0.0.0).
    pub addr: IpAddr,
    /// (protocol, port)s.
    pub ports: Vec<(u8, u16)>,
    /// Seconds the grant lasts.
    pub seconds: u64,
    /// Replay-cache key.
    pub digest: [u8; 32],
}

/// EVP_BytesToKey with MD5, one round: 32-byte key and 16-byte IV.
pub fn evp_bytes_to_key(pass: &[u8], salt: &[u8; 8]) -> ([u8; 32], [u8; 16]) {
    use md5::Md5;
    let mut out = Vec::with_capacity(48);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < 48 {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(pass);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    let mut k = [0u8; 32];
    let mut iv = [0u8; 16];
    k.copy_from_slice(&out[..32]);
    iv.copy_from_slice(&out[32..48]);
    (k, iv)
}

fn hmac_b64(bits: u16, key: &[u8], data: &[u8]) -> String {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
    let t = match bits {
        384 => run::<Hmac<Sha384>>(key, data),
        512 => run::<Hmac<Sha512>>(key, data),
        _ => run::<Hmac<Sha256>>(key, data),
    };
    STANDARD_NO_PAD.encode(t)
}

/// fwknop's encrypted prefix ("Salted__" in base64), stripped on the wire.
const SALTED_B64: &str = "U2FsdGVkX1";

/// The replay-cache key of a fwknop packet: SHA-256 of the wire string.
pub fn fwknop_digest(wire: &[u8]) -> [u8; 32] {
    Sha256::digest(wire).into()
}

/// Decrypts and checks a fwknop packet for one stanza (no replay or clock check).
fn fwknop_open(wire: &str, s: &FwknopStanza) -> Result<(String, Vec<String>), Reject> {
    let tlen = match s.hmac_bits {
        384 => 64,
        512 => 86,
        _ => 43,
    };
    if wire.len() <= tlen + 16 {
        return Err(Reject::Malformed);
    }
    let (body, tag) = wire.split_at(wire.len() - tlen);
    let e = format!("{SALTED_B64}{body}");
    let want = hmac_b64(s.hmac_bits, &s.hmac_key, e.as_bytes());
    if !bool::from(want.as_bytes().ct_eq(tag.as_bytes())) {
        return Err(Reject::BadDigest);
    }
    let raw = STANDARD_NO_PAD
        .decode(e.trim_end_matches('='))
        .map_err(|_| Reject::Malformed)?;
    if raw.len() < 32 || &raw[..8] != b"Salted__" || !(raw.len() - 16).is_multiple_of(16) {
        return Err(Reject::Malformed);
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&raw[8..16]);
    let (k, iv) = evp_bytes_to_key(&s.key, &salt);
    use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    let mut buf = raw[16..].to_vec();
    let pt = cbc::Decryptor::<aes::Aes256>::new(&k.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .map_err(|_| Reject::BadDigest)?;
    let text = std::str::from_utf8(pt).map_err(|_| Reject::Malformed)?;
    if text.len() < 17
        || !text.as_bytes()[..16].iter().all(u8::is_ascii_digit)
        || text.as_bytes()[16] != b':'
    {
        return Err(Reject::Malformed);
    }
    let (signed, digest) = text.rsplit_once(':').ok_or(Reject::Malformed)?;
    let got = match digest.len() {
        43 => STANDARD_NO_PAD.encode(Sha256::digest(signed.as_bytes())),
        64 => STANDARD_NO_PAD.encode(Sha384::digest(signed.as_bytes())),
        86 => STANDARD_NO_PAD.encode(Sha512::digest(signed.as_bytes())),
        _ => return Err(Reject::Malformed),
    };
    if !bool::from(got.as_bytes().ct_eq(digest.as_bytes())) {
        return Err(Reject::BadDigest);
    }
    Ok((
        text.to_string(),
        signed.split(':').map(str::to_string).collect(),
    ))
}

fn b64(s: &str) -> Result<String, Reject> {
    let b = STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(s))
        .map_err(|_| Reject::Malformed)?;
    String::from_utf8(b).map_err(|_| Reject::Malformed)
}

/// Parses `proto/port`.
pub fn parse_proto_port(s: &str) -> Option<(u8, u16)> {
    let (p, n) = s.trim().split_once('/')?;
    let proto = match p.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        _ => return None,
    };
    let port: u16 = n.trim().parse().ok()?;
    (port != 0).then_some((proto, port))
}

fn in_net(a: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

/// Checks a fwknop packet from `src` at Unix time `now` against the stanzas (in order,
/// first one whose source matches and whose keys verify). The replay cache is the
/// caller's (see [`Verifier`]).
pub fn fwknop_check(
    wire: &[u8],
    src: IpAddr,
    now: u64,
    stanzas: &[FwknopStanza],
) -> Result<FwknopRequest, Reject> {
    if !(140..=1500).contains(&wire.len()) {
        return Err(Reject::Malformed);
    }
    let wire = std::str::from_utf8(wire).map_err(|_| Reject::Malformed)?;
    let wire = wire.trim_end_matches(['\n', '\r', '\0']);
    if wire.starts_with(SALTED_B64)
        || !wire
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return Err(Reject::Malformed);
    }
    let digest = fwknop_digest(wire.as_bytes());
    let mut last = Reject::NoMatch;
    for (i, s) in stanzas.iter().enumerate() {
        if !s.sources.iter().any(|n| in_net(src, *n)) {
            continue;
        }
        let (_, f) = match fwknop_open(wire, s) {
            Ok(x) => x,
            Err(e) => {
                last = e;
                continue;
            }
        };
        // rand, user, ts, version, type, message, [nat], [server auth], [timeout]
        if f.len() < 6 {
            return Err(Reject::Malformed);
        }
        let user = b64(&f[1])?;
        let ts: u64 = f[2].parse().map_err(|_| Reject::Malformed)?;
        let msg_type: u8 = f[4].parse().map_err(|_| Reject::Malformed)?;
        if now.abs_diff(ts) > s.skew {
            return Err(Reject::Stale);
        }
        let msg = b64(&f[5])?;
        let rest = &f[6..];
        // The client's timeout: decimal seconds; one that is no number or does not fit in
        // 64 bits is a malformed message (not a default).
        let timeout = match msg_type {
            3 | 4 | 6 => Some(
                rest.last()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or(Reject::Malformed)?,
            ),
            _ => None,
        };
        if let Some(u) = &s.require_username {
            if *u != user {
                return Err(Reject::NotAllowed);
            }
        }
        let (ip, what) = msg.split_once(',').ok_or(Reject::Malformed)?;
        let asked: IpAddr = ip.trim().parse().map_err(|_| Reject::Malformed)?;
        let addr = if asked.is_unspecified() {
            if s.require_source_address {
                return Err(Reject::NotAllowed);
            }
            src
        } else {
            asked
        };
        if addr != src {
            // fwknopd opens for the address in the message; statewall's grants are for
            // the packet's source, so a message naming another host is refused.
            return Err(Reject::NotAllowed);
        }
        let ports = match msg_type {
            1 | 3 => {
                let ports: Option<Vec<(u8, u16)>> = what.split(',').map(parse_proto_port).collect();
                let ports = ports.ok_or(Reject::Malformed)?;
                if ports.is_empty()
                    || ports.iter().any(|p| {
                        s.restrict_ports.contains(p)
                            || (!s.open_ports.is_empty() && !s.open_ports.contains(p))
                    })
                {
                    return Err(Reject::NotAllowed);
                }
                ports
            }
            0 if s.enable_cmd => Vec::new(),
            _ => return Err(Reject::NotAllowed),
        };
        // 0 asks for the server's default; anything longer than the maximum is cut to it.
        let seconds = match timeout {
            Some(t) if t > 0 => t.min(s.max_timeout),
            _ => s.access_timeout,
        };
        return Ok(FwknopRequest {
            stanza: i,
            user,
            ts,
            msg_type,
            addr,
            ports,
            seconds,
            digest,
        });
    }
    Err(last)
}

/// Checks a pkd knock sent to `dport` at Unix time `now`: the actions whose tag and key
/// verify (several may), or why none did. Returns the replay key (the digest) too.
pub fn pkd_check<'a>(
    payload: &[u8],
    dport: u16,
    now: u64,
    actions: &'a [PkdAction],
) -> Result<(Vec<&'a PkdAction>, [u8; 32]), Reject> {
    if payload.len() != PKD_LEN {
        return Err(Reject::Malformed);
    }
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&payload[..4]);
    let mut tsb = [0u8; 8];
    tsb.copy_from_slice(&payload[4..12]);
    let ts = u64::from_le_bytes(tsb);
    let mut random = [0u8; 12];
    random.copy_from_slice(&payload[12..24]);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&payload[24..]);
    let mut ok = Vec::new();
    let mut reason = Reject::NoMatch;
    for a in actions.iter().filter(|a| a.tag == tag) {
        let want = pkd_digest(dport, &tag, ts, &random, &a.key);
        if !bool::from(want.ct_eq(&digest)) {
            reason = Reject::BadDigest;
            continue;
        }
        if let Some(skew) = a.skew {
            if now.abs_diff(ts) > skew {
                reason = Reject::Stale;
                continue;
            }
        }
        ok.push(a);
    }
    if ok.is_empty() {
        return Err(reason);
    }
    Ok((ok, digest))
}

/// The replay cache: digests with the Unix time until which they are remembered, kept in
/// memory and appended to a file (synced) so that a restart does not reopen the window.
#[derive(Debug)]
pub struct ReplayCache {
    entries: HashMap<[u8; 32], u64>,
    max: usize,
    path: Option<PathBuf>,
    /// The file, where the next line goes, and the file's length: lines overwrite
    /// padding written ahead (newlines, which a reader skips), so that a record's
    /// `fdatasync` does not change the file's size and need a journal commit.
    log: Option<(std::fs::File, u64, u64)>,
}

/// Padding written ahead of the replay cache's lines (about 800 records).
const REPLAY_PAD: usize = 64 << 10;

impl ReplayCache {
    /// A cache of at most `max` live entries, persisted at `path` (loaded now; expired and
    /// unreadable lines are dropped and the file rewritten).
    pub fn open(path: Option<&Path>, max: usize, now: u64) -> std::io::Result<ReplayCache> {
        let mut c = ReplayCache {
            entries: HashMap::new(),
            max,
            path: path.map(Path::to_path_buf),
            log: None,
        };
        if let Some(p) = path {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    for line in text.lines() {
                        let Some((h, t)) = line.split_once(' ') else {
                            continue;
                        };
                        let (Some(d), Ok(t)) = (decode_hex(h), t.trim().parse::<u64>()) else {
                            continue;
                        };
                        if d.len() == 32 && t > now {
                            let mut k = [0u8; 32];
                            k.copy_from_slice(&d);
                            c.entries.insert(k, t);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            c.rewrite()?;
        }
        Ok(c)
    }

    fn line(k: &[u8; 32], t: u64) -> String {
        let h: String = k.iter().map(|b| format!("{b:02x}")).collect();
        format!("{h} {t}\n")
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        let Some(p) = &self.path else { return Ok(()) };
        let tmp = p.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let mut off = 0u64;
        for (k, t) in &self.entries {
            let l = Self::line(k, *t);
            f.write_all(l.as_bytes())?;
            off += l.len() as u64;
        }
        f.write_all(&[b'\n'; REPLAY_PAD])?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)?;
        if let Some(d) = p.parent() {
            std::fs::File::open(d)?.sync_all()?;
        }
        self.log = Some((f, off, off + REPLAY_PAD as u64));
        Ok(())
    }

    /// Writes one record durably (see `log`).
    fn append(&mut self, line: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some((f, off, len)) = self.log.as_mut() else {
            return Err(std::io::Error::other("the replay cache file is not open"));
        };
        let n = line.len() as u64;
        if *off + n > *len {
            // More padding first (the size changes here, once per ~800 records).
            f.write_all_at(&[b'\n'; REPLAY_PAD], *len)?;
            f.sync_data()?;
            *len += REPLAY_PAD as u64;
        }
        f.write_all_at(line.as_bytes(), *off)?;
        f.sync_data()?;
        *off += n;
        Ok(())
    }

    /// Records `digest` until `until`; `Err(Replay)` when it is there and live,
    /// `Err(CacheFull)` when the cache is full of live entries. Durable before it returns.
    pub fn insert(&mut self, digest: [u8; 32], until: u64, now: u64) -> Result<(), Reject> {
        if self.entries.get(&digest).is_some_and(|t| *t > now) {
            return Err(Reject::Replay);
        }
        if self.entries.len() >= self.max {
            self.entries.retain(|_, t| *t > now);
            if self.entries.len() >= self.max {
                return Err(Reject::CacheFull);
            }
            let _ = self.rewrite();
        }
        if self.path.is_some() {
            let ok = self.append(&Self::line(&digest, until));
            if ok.is_err() {
                // Not durable: refuse rather than open a window a restart would reopen.
                return Err(Reject::CacheFull);
            }
        }
        self.entries.insert(digest, until);
        Ok(())
    }

    /// True when `digest` is remembered and live.
    pub fn contains(&self, digest: &[u8; 32], now: u64) -> bool {
        self.entries.get(digest).is_some_and(|t| *t > now)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_writes_in_place_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("sw-replay-pad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("spa-replay");
        let mut c = ReplayCache::open(Some(&p), 100_000, 10).unwrap();
        let size = std::fs::metadata(&p).unwrap().len();
        c.insert([1; 32], 1000, 10).unwrap();
        c.insert([2; 32], 1000, 10).unwrap();
        // Records overwrite padding: the size (and so the journal) is untouched.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
        // Past the padding, more is added and records go on.
        for i in 0..2000u32 {
            let mut d = [3u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(d, 1000, 10).unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() > size);
        drop(c);
        let c = ReplayCache::open(Some(&p), 100_000, 10).unwrap();
        assert_eq!(c.len(), 2002);
        assert!(c.contains(&[1; 32], 10) && c.contains(&[2; 32], 10));
        let mut again = ReplayCache::open(Some(&p), 100_000, 10).unwrap();
        assert_eq!(again.insert([2; 32], 1000, 10), Err(Reject::Replay));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pkd_known_answer() {
        let key = pkd_bytes::<40>("testing test test").unwrap();
        let tag = pkd_bytes::<4>("test").unwrap();
        let d = pkd_digest(1234, &tag, 1539746929, &[0; 12], &key);
        assert_eq!(
            hex::encode(d),
            "14e922278a4d3302ebbb893cf3bab52ea0314d6a582f665b05b867c1a5ad3b97"
        );
        let p = pkd_packet(1234, &tag, &key, 1539746929, &[0; 12]);
        assert_eq!(hex::encode(p), "7465737471acc65b0000000000000000000000000000000014e922278a4d3302ebbb893cf3bab52ea0314d6a582f665b05b867c1a5ad3b97");
        let a = PkdAction {
            name: "a".into(),
            port: 22,
            protos: vec![6],
            tag,
            key,
            window: 60,
            skew: Some(10),
            reset: false,
            min_interval: 0,
        };
        let acts = [a];
        assert!(pkd_check(&p, 1234, 1539746929 + 5, &acts).is_ok());
        assert_eq!(
            pkd_check(&p, 1234, 1539746929 + 11, &acts).unwrap_err(),
            Reject::Stale
        );
        assert_eq!(
            pkd_check(&p, 1235, 1539746929, &acts).unwrap_err(),
            Reject::BadDigest
        );
        assert_eq!(
            pkd_check(&p[..55], 1234, 1539746929, &acts).unwrap_err(),
            Reject::Malformed
        );
        let mut bad = p;
        bad[30] ^= 1;
        assert_eq!(
            pkd_check(&bad, 1234, 1539746929, &acts).unwrap_err(),
            Reject::BadDigest
        );
        assert_eq!(pkd_bytes::<4>("0x53534b48").unwrap(), *b"SSKH");
        assert!(pkd_bytes::<4>("toolong").is_err());
    }

    #[test]
    fn runtime_per_action_interval_and_replay() {
        let tag = *b"SSHK";
        let key = pkd_bytes::<40>("k").unwrap();
        let action = |name: &str, min_interval| PkdAction {
            name: name.into(),
            port: 22,
            protos: vec![6, 17],
            tag,
            key,
            window: 30,
            skew: Some(10),
            reset: false,
            min_interval,
        };
        let setup = crate::spa::config::SpaSetup {
            pkd: vec![action("a", 5), action("b", 0)],
            fwknop: vec![],
        };
        let mut rt = SpaRuntime::new(setup, ReplayCache::open(None, 100, 0).unwrap());
        let src: IpAddr = "10.0.0.1".parse().unwrap();
        let knock = |n: u8, ts: u64, src: IpAddr| Candidate {
            kind: statewall_common::spa::KIND_PKD,
            src,
            dport: 999,
            payload: pkd_packet(999, &tag, &key, ts, &[n; 12]).to_vec(),
        };
        // Two actions share the tag and key: both open (several actions per tag).
        let a = rt.handle(&knock(1, 100, src), 100).unwrap();
        assert_eq!(a.names, ["a", "b"]);
        assert_eq!(a.grants.len(), 4, "tcp and udp for each");
        // Within 5 s only the unlimited action opens; the same packet again is a replay.
        assert_eq!(rt.handle(&knock(2, 102, src), 102).unwrap().names, ["b"]);
        assert_eq!(
            rt.handle(&knock(2, 102, src), 102).unwrap_err(),
            Reject::Replay
        );
        // Another source has its own interval; after 5 s both open again.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            rt.handle(&knock(3, 103, other), 103).unwrap().names,
            ["a", "b"]
        );
        assert_eq!(
            rt.handle(&knock(4, 105, src), 105).unwrap().names,
            ["a", "b"]
        );
        // Only the limited action: rate_limited.
        rt.setup.pkd.truncate(1);
        assert_eq!(
            rt.handle(&knock(5, 106, src), 106).unwrap_err(),
            Reject::RateLimited
        );
        assert_eq!(rt.counts["rate_limited"], 1);
        assert_eq!(rt.counts["replay"], 1);
        assert_eq!(rt.counts["accepted"], 4);
    }

    #[test]
    fn evp_bytes_to_key_known_answer() {
        // `openssl enc -aes-256-cbc -md md5 -P -S 0102030405060708 -k secret`
        let (k, iv) = evp_bytes_to_key(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            hex::encode(k),
            "c9e5a1bd216dbe1317e230cef48f38ee7f0e17ad64022144bccec4a1aa2879ab"
        );
        assert_eq!(hex::encode(iv), "e24b32bbbc4ef02ecbcb6576523ad893");
    }

    #[test]
    fn replay_cache_survives_reopen_and_fills() {
        let dir = std::env::temp_dir().join(format!("sw-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("replay");
        let _ = std::fs::remove_file(&p);
        let mut c = ReplayCache::open(Some(&p), 2, 100).unwrap();
        c.insert([1; 32], 200, 100).unwrap();
        assert_eq!(c.insert([1; 32], 200, 150), Err(Reject::Replay));
        let mut c = ReplayCache::open(Some(&p), 2, 150).unwrap();
        assert_eq!(
            c.insert([1; 32], 300, 150),
            Err(Reject::Replay),
            "after a restart"
        );
        c.insert([2; 32], 300, 150).unwrap();
        assert_eq!(c.insert([3; 32], 300, 150), Err(Reject::CacheFull));
        // Once an entry expires there is room again; then the cache is full again.
        c.insert([3; 32], 400, 250).unwrap();
        assert_eq!(c.insert([4; 32], 400, 250), Err(Reject::CacheFull));
        // Expired entries are dropped on load; an expired digest is new again.
        let mut c = ReplayCache::open(Some(&p), 2, 350).unwrap();
        assert_eq!(c.len(), 1);
        c.insert([2; 32], 500, 350).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A candidate from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `statewall_common::spa::KIND_*`.
    pub kind: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination port of the packet (in the pkd digest).
    pub dport: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
}

impl Candidate {
    /// Decodes a ring-buffer record (`SpaHeader` then the payload); `None` if short.
    pub fn from_record(b: &[u8]) -> Option<Candidate> {
        use statewall_common::spa::SpaHeader;
        let n = std::mem::size_of::<SpaHeader>();
        if b.len() < n {
            return None;
        }
        // SAFETY: the kernel wrote a SpaHeader (repr(C), plain data) at the start.
        let h = unsafe { std::ptr::read_unaligned(b.as_ptr() as *const SpaHeader) };
        let data = b.get(n..n + h.len as usize)?;
        Some(Candidate {
            kind: h.kind,
            src: crate::gate::addr_ip(h.family, &h.saddr),
            dport: h.dport,
            payload: data.to_vec(),
        })
    }
}

/// What to open for an accepted candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Action or stanza name(s), comma-separated.
    pub name: String,
    /// The same, one by one.
    pub names: Vec<String>,
    /// Grants: (key, seconds).
    pub grants: Vec<(statewall_common::maps::GrantKey, u64)>,
}

/// Replay entries of packets whose clock is not checked are kept this long.
const NO_SKEW_KEEP: u64 = 7 * 86400;

/// The verifiers with their configuration, the replay cache and the counters: what the
/// daemon runs every candidate through.
#[derive(Debug)]
pub struct SpaRuntime {
    /// Actions and stanzas.
    pub setup: crate::spa::config::SpaSetup,
    /// Replay cache.
    pub replay: ReplayCache,
    /// Outcomes: `accepted` and every [`Reject::name`].
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Last accepted knock per (pkd action, source), for `min_interval`.
    last: HashMap<(String, IpAddr), u64>,
    /// When each refusal reason was last logged at info level.
    pub last_log: HashMap<&'static str, u64>,
}

impl SpaRuntime {
    /// A runtime with zeroed counters.
    pub fn new(setup: crate::spa::config::SpaSetup, replay: ReplayCache) -> SpaRuntime {
        let mut counts = std::collections::BTreeMap::new();
        counts.insert("accepted", 0);
        for r in Reject::ALL {
            counts.insert(r.name(), 0);
        }
        SpaRuntime {
            setup,
            replay,
            counts,
            last: HashMap::new(),
            last_log: HashMap::new(),
        }
    }

    /// Verifies a candidate at Unix time `now`, records it in the replay cache and says what
    /// to grant; counts the outcome either way.
    pub fn handle(&mut self, c: &Candidate, now: u64) -> Result<Accepted, Reject> {
        let r = self.verify(c, now);
        if r.is_ok() {
            self.count_accepted();
        }
        r
    }

    /// As [`SpaRuntime::handle`], but an accepted candidate is not counted yet: the daemon
    /// counts it ([`SpaRuntime::count_accepted`]) once its grants are in the kernel, so that
    /// whoever sees the count can rely on the grants.
    pub fn verify(&mut self, c: &Candidate, now: u64) -> Result<Accepted, Reject> {
        let r = self.check(c, now);
        if let Err(e) = &r {
            *self.counts.entry(e.name()).or_default() += 1;
        }
        r
    }

    /// Counts an accepted candidate.
    pub fn count_accepted(&mut self) {
        *self.counts.entry("accepted").or_default() += 1;
    }

    fn check(&mut self, c: &Candidate, now: u64) -> Result<Accepted, Reject> {
        use statewall_common::spa::{KIND_FWKNOP, KIND_PKD};
        let key = |proto: u8, port: u16| {
            let (family, addr) = match c.src {
                IpAddr::V4(a) => {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&a.octets());
                    (statewall_common::maps::FAMILY_V4, b)
                }
                IpAddr::V6(a) => (statewall_common::maps::FAMILY_V6, a.octets()),
            };
            statewall_common::maps::GrantKey {
                addr,
                family,
                proto,
                port,
            }
        };
        match c.kind {
            KIND_PKD => {
                let (acts, digest) = pkd_check(&c.payload, c.dport, now, &self.setup.pkd)?;
                // Per-action limit, after the digest (a forgery cannot use it up).
                let acts: Vec<&PkdAction> = acts
                    .into_iter()
                    .filter(|a| {
                        a.min_interval == 0
                            || self
                                .last
                                .get(&(a.name.clone(), c.src))
                                .is_none_or(|t| now.saturating_sub(*t) >= a.min_interval)
                    })
                    .collect();
                if acts.is_empty() {
                    return Err(Reject::RateLimited);
                }
                let keep = acts
                    .iter()
                    .map(|a| a.skew.map_or(NO_SKEW_KEEP, |s| (2 * s).max(60)))
                    .max()
                    .unwrap_or(60);
                let grants = acts
                    .iter()
                    .flat_map(|a| a.protos.iter().map(move |p| (key(*p, a.port), a.window)))
                    .collect();
                let name = acts
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                self.replay.insert(digest, now + keep, now)?;
                let names: Vec<String> = acts.iter().map(|a| a.name.clone()).collect();
                if self.last.len() > 65536 {
                    let horizon = self
                        .setup
                        .pkd
                        .iter()
                        .map(|a| a.min_interval)
                        .max()
                        .unwrap_or(0);
                    self.last.retain(|_, t| now.saturating_sub(*t) < horizon);
                }
                for n in &names {
                    self.last.insert((n.clone(), c.src), now);
                }
                Ok(Accepted {
                    name,
                    names,
                    grants,
                })
            }
            KIND_FWKNOP => {
                let d = fwknop_digest(
                    std::str::from_utf8(&c.payload)
                        .map_err(|_| Reject::Malformed)?
                        .trim_end_matches(['\n', '\r', '\0'])
                        .as_bytes(),
                );
                if self.replay.contains(&d, now) {
                    return Err(Reject::Replay);
                }
                let r = fwknop_check(&c.payload, c.src, now, &self.setup.fwknop)?;
                let s = &self.setup.fwknop[r.stanza];
                self.replay
                    .insert(r.digest, now + (2 * s.skew).max(60), now)?;
                Ok(Accepted {
                    name: s.name.clone(),
                    names: vec![s.name.clone()],
                    grants: r
                        .ports
                        .iter()
                        .map(|(p, n)| (key(*p, *n), r.seconds))
                        .collect(),
                })
            }
            _ => Err(Reject::Malformed),
        }
    }
}

/// Random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// What a fwknop message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwknopMessage {
    /// Username.
    pub user: String,
    /// Unix time.
    pub ts: u64,
    /// The address to open for (`0.0.0.0` = the packet's source).
    pub allow: IpAddr,
    /// `tcp/22` ...
    pub access: Vec<(u8, u16)>,
    /// Client timeout (message type 3), or `None` (type 1). Wider than a server accepts,
    /// so that tests can send what a hostile client would.
    pub timeout: Option<u128>,
}

/// Builds a fwknop SPA packet (default mode: Rijndael + HMAC) as the `fwknop` client does,
/// so that fwknopd and statewall accept it; IPv6 addresses are allowed in the message
/// (fwknop's own client cannot send them).
pub fn fwknop_packet(
    m: &FwknopMessage,
    key: &[u8],
    hmac_key: &[u8],
    hmac_bits: u16,
) -> std::io::Result<String> {
    use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    let rnd = random_bytes::<16>()?;
    let digits: String = rnd.iter().map(|b| char::from(b'0' + b % 10)).collect();
    let digits = match digits.strip_prefix('0') {
        Some(rest) => format!("1{rest}"),
        None => digits,
    };
    let access: Vec<String> = m
        .access
        .iter()
        .map(|(p, n)| format!("{}/{n}", crate::types::proto_name(*p)))
        .collect();
    let msg = format!("{},{}", m.allow, access.join(","));
    let mut text = format!(
        "{digits}:{}:{}:3.0.0:{}:{}",
        STANDARD_NO_PAD.encode(m.user.as_bytes()),
        m.ts,
        if m.timeout.is_some() { 3 } else { 1 },
        STANDARD_NO_PAD.encode(msg.as_bytes())
    );
    if let Some(t) = m.timeout {
        text.push_str(&format!(":{t}"));
    }
    let digest = STANDARD_NO_PAD.encode(Sha256::digest(text.as_bytes()));
    text.push(':');
    text.push_str(&digest);
    let salt = random_bytes::<8>()?;
    let (k, iv) = evp_bytes_to_key(key, &salt);
    let ct = cbc::Encryptor::<aes::Aes256>::new(&k.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(text.as_bytes());
    let mut raw = b"Salted__".to_vec();
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(&ct);
    let e = STANDARD_NO_PAD.encode(&raw);
    let t = hmac_b64(hmac_bits, hmac_key, e.as_bytes());
    Ok(format!("{}{t}", &e[SALTED_B64.len()..]))
}

/// Sends one UDP datagram to `to` from an ephemeral port.
pub fn send_udp(to: std::net::SocketAddr, payload: &[u8]) -> std::io::Result<()> {
    let bind: std::net::SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = std::net::UdpSocket::bind(bind)?;
    s.send_to(payload, to)?;
    Ok(())
}
