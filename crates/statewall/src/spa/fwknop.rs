//! fwknop: access stanzas, the encrypted message (salted AES with EVP_BytesToKey, an
//! HMAC over the base64 text) and its check against a stanza.

use super::policy::{in_net, parse_proto_port, Reject, DEFAULT_MAX_FW_TIMEOUT};
use base64::{
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
    Engine as _,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

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

pub(super) fn hmac_b64(bits: u16, key: &[u8], data: &[u8]) -> String {
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
pub(super) const SALTED_B64: &str = "U2FsdGVkX1";

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

pub(super) fn b64(s: &str) -> Result<String, Reject> {
    let b = STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(s))
        .map_err(|_| Reject::Malformed)?;
    String::from_utf8(b).map_err(|_| Reject::Malformed)
}

/// Checks a fwknop packet from `src` at Unix time `now` against the stanzas (in order,
/// first one whose source matches and whose keys verify). The replay cache is the
/// caller's (see [`super::runtime::SpaRuntime`]).
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
