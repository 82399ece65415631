//! The client side: building and sending fwknop packets (`statewall spa`).

use super::fwknop::{evp_bytes_to_key, hmac_b64, SALTED_B64};
use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine as _};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

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
