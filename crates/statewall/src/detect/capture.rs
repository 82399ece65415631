//! Captures read as the ddos monitor records packets: pcap and pcapng files, Ethernet,
//! Linux cooked (v1 and v2) and raw IP link types, each frame turned into the same
//! [`PktRec`] the kernel writes (the common crate's parser, session key and record), so
//! that offline evaluation and the live daemon build their samples from one kind of
//! record.
//!
//! Lengths come from the headers: a frame cut by the capture's snap length is padded with
//! zeros to its length on the wire before it is parsed (the headers are all there; the
//! payload's bytes are never read), and its record's `pkt_len` is that length as an
//! Ethernet frame (a cooked or raw-IP frame gets a 14-byte Ethernet header in place of
//! its own).
//!
//! For mining detection ([`read_sessions`]) the parsed TCP and UDP packets are kept too:
//! the crypto monitor's session values are made from them by the kernel's own function
//! ([`super::sessions`]).

use statewall_common::{
    monitor::{
        packet::{crypto_wants, ddos_wants, fill_rec, key_into},
        PktRec,
    },
    parse::{parse_packet, PacketInfo},
};

use super::error::CaptureError;

fn err<T>(offset: usize, msg: impl Into<String>) -> Result<T, CaptureError> {
    Err(CaptureError {
        offset,
        msg: msg.into(),
    })
}

/// The longest frame a record is padded to: an IPv6 jumbo-free packet (65,535 bytes of
/// payload and its 40-byte header) behind 2 VLAN tags and Ethernet.
const MAX_WIRE: usize = 65_535 + 40 + 8 + 20;

/// Link types read (the pcap `LINKTYPE_*` numbers).
pub const LINK_ETHERNET: u32 = 1;
/// Raw IPv4 or IPv6 (`LINKTYPE_RAW`).
pub const LINK_RAW: u32 = 101;
/// Linux cooked capture v1 (`tcpdump -i any`).
pub const LINK_SLL: u32 = 113;
/// Linux cooked capture v2.
pub const LINK_SLL2: u32 = 276;

/// What a capture held.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// The records of its IP packets the ddos monitor would record (TCP, UDP, ICMP,
    /// ICMPv6), in file order, `ts` in Unix ns.
    pub packets: Vec<PktRec>,
    /// Frames read.
    pub frames: usize,
    /// Frames that are not TCP, UDP or ICMP over IP (ARP, other protocols): not flows.
    pub skipped: usize,
    /// Frames whose headers did not parse.
    pub malformed: usize,
    /// The TCP and UDP packets the crypto monitor would count, with their Unix ns (only
    /// from [`read_sessions`]: the session features of mining detection start here).
    pub sessions: Vec<(u64, PacketInfo)>,
    keep_sessions: bool,
}

impl Capture {
    fn frame(&mut self, link: u32, ts_ns: u64, data: &[u8], orig_len: usize) {
        self.frames += 1;
        let Some(frame) = ethernet(link, data, orig_len) else {
            self.skipped += 1;
            return;
        };
        let p = parse_packet(&frame);
        if p.status == statewall_common::parse::Status::Malformed as u8 {
            self.malformed += 1;
            return;
        }
        if !ddos_wants(&p) {
            self.skipped += 1;
            return;
        }
        if self.keep_sessions && crypto_wants(&p) {
            self.sessions.push((ts_ns, p));
        }
        let mut r = PktRec::default();
        key_into(&p, &mut r.key);
        fill_rec(&p, ts_ns, &mut r);
        self.packets.push(r);
    }
}

/// The frame as an Ethernet frame of its length on the wire (`None`: a link type or
/// protocol that carries no IP).
fn ethernet(link: u32, data: &[u8], orig_len: usize) -> Option<Vec<u8>> {
    // A length on the wire past what an IP packet can be is the file's claim, not the
    // packet's: no frame is padded beyond the largest IP packet and its headers.
    let orig_len = orig_len.min(data.len().max(MAX_WIRE));
    let (hdr, proto) = match link {
        LINK_ETHERNET => {
            let mut f = data.to_vec();
            f.resize(orig_len.max(data.len()), 0);
            return Some(f);
        }
        LINK_SLL => (16, u16::from_be_bytes([*data.get(14)?, *data.get(15)?])),
        LINK_SLL2 => (20, u16::from_be_bytes([*data.first()?, *data.get(1)?])),
        LINK_RAW => match data.first()? >> 4 {
            4 => (0, 0x0800),
            6 => (0, 0x86dd),
            _ => return None,
        },
        _ => return None,
    };
    if data.len() < hdr {
        return None;
    }
    let mut f = Vec::with_capacity(14 + orig_len.saturating_sub(hdr));
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(&proto.to_be_bytes());
    f.extend_from_slice(&data[hdr..]);
    f.resize(14 + orig_len.max(data.len()) - hdr, 0);
    Some(f)
}

/// Reads a pcap or pcapng capture.
pub fn read(b: &[u8]) -> Result<Capture, CaptureError> {
    read_into(b, Capture::default())
}

/// Reads a pcap or pcapng capture, keeping its TCP and UDP packets whole as well
/// ([`Capture::sessions`]).
pub fn read_sessions(b: &[u8]) -> Result<Capture, CaptureError> {
    read_into(
        b,
        Capture {
            keep_sessions: true,
            ..Capture::default()
        },
    )
}

fn read_into(b: &[u8], c: Capture) -> Result<Capture, CaptureError> {
    if b.len() < 4 {
        return err(0, "too short for a capture");
    }
    match u32::from_le_bytes([b[0], b[1], b[2], b[3]]) {
        0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => read_pcap(b, c),
        0x0a0d_0d0a => read_pcapng(b, c),
        m => err(0, format!("not pcap or pcapng (magic {m:#010x})")),
    }
}

fn u32_at(b: &[u8], off: usize, be: bool) -> Option<u32> {
    let w: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
    Some(if be {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    })
}

fn u16_at(b: &[u8], off: usize, be: bool) -> Option<u16> {
    let w: [u8; 2] = b.get(off..off + 2)?.try_into().ok()?;
    Some(if be {
        u16::from_be_bytes(w)
    } else {
        u16::from_le_bytes(w)
    })
}

fn read_pcap(b: &[u8], mut c: Capture) -> Result<Capture, CaptureError> {
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = matches!(magic, 0xd4c3_b2a1 | 0x4d3c_b2a1);
    let nano = matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1);
    let Some(link) = u32_at(b, 20, be) else {
        return err(b.len(), "file header cut short (24 bytes)");
    };
    let link = link & 0x0fff_ffff;
    if ![LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_SLL2].contains(&link) {
        return err(
            20,
            format!(
                "link type {link}: Ethernet (1), raw IP (101), Linux cooked (113, 276) are read"
            ),
        );
    }
    let mut off = 24;
    while off < b.len() {
        let (Some(sec), Some(frac), Some(incl), Some(orig)) = (
            u32_at(b, off, be),
            u32_at(b, off + 4, be),
            u32_at(b, off + 8, be),
            u32_at(b, off + 12, be),
        ) else {
            return err(off, "record header cut short");
        };
        let start = off + 16;
        let Some(data) = b.get(start..start + incl as usize) else {
            return err(off, format!("record of {incl} bytes runs past the end"));
        };
        let ns = sec as u64 * 1_000_000_000
            + if nano {
                frac as u64
            } else {
                frac as u64 * 1000
            };
        c.frame(link, ns, data, orig as usize);
        off = start + incl as usize;
    }
    Ok(c)
}

/// A pcapng interface: link type and timestamp units per second.
struct Iface {
    link: u32,
    per_sec: u64,
}

fn read_pcapng(b: &[u8], mut c: Capture) -> Result<Capture, CaptureError> {
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut be = false;
    let mut off = 0;
    while off < b.len() {
        let Some(kind) = u32_at(b, off, be) else {
            return err(off, "block header cut short");
        };
        if kind == 0x0a0d_0d0a {
            // Section header: its byte-order magic sets the endianness of what follows.
            be = match b.get(off + 8..off + 12) {
                Some([0x1a, 0x2b, 0x3c, 0x4d]) => true,
                Some([0x4d, 0x3c, 0x2b, 0x1a]) => false,
                _ => return err(off + 8, "section header without its byte-order magic"),
            };
            ifaces.clear();
        }
        let Some(len) = u32_at(b, off + 4, be).map(|l| l as usize) else {
            return err(off, "block header cut short");
        };
        if len < 12 || len % 4 != 0 || off + len > b.len() {
            return err(
                off,
                format!("block of length {len} (a multiple of 4, at least 12, inside the file)"),
            );
        }
        let body = &b[off + 8..off + len - 4];
        match kind {
            1 => ifaces.push(interface(body, be).ok_or(CaptureError {
                offset: off,
                msg: "interface description cut short".into(),
            })?),
            6 => {
                let (Some(id), Some(hi), Some(lo), Some(incl), Some(orig)) = (
                    u32_at(body, 0, be),
                    u32_at(body, 4, be),
                    u32_at(body, 8, be),
                    u32_at(body, 12, be),
                    u32_at(body, 16, be),
                ) else {
                    return err(off, "enhanced packet block cut short");
                };
                let Some(i) = ifaces.get(id as usize) else {
                    return err(
                        off,
                        format!("packet of interface {id}, which no block described"),
                    );
                };
                let Some(data) = body.get(20..20 + incl as usize) else {
                    return err(off, format!("packet of {incl} bytes runs past its block"));
                };
                let units = (hi as u64) << 32 | lo as u64;
                let ns = (units as u128 * 1_000_000_000 / i.per_sec as u128) as u64;
                if [LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_SLL2].contains(&i.link) {
                    c.frame(i.link, ns, data, orig as usize);
                } else {
                    c.frames += 1;
                    c.skipped += 1;
                }
            }
            // Simple packet blocks carry no timestamp; other blocks carry no packet.
            3 => {
                c.frames += 1;
                c.skipped += 1;
            }
            _ => {}
        }
        off += len;
    }
    Ok(c)
}

fn interface(body: &[u8], be: bool) -> Option<Iface> {
    let link = u16_at(body, 0, be)? as u32;
    let mut per_sec = 1_000_000u64;
    let mut o = 8;
    while o + 4 <= body.len() {
        let code = u16_at(body, o, be)?;
        let len = u16_at(body, o + 2, be)? as usize;
        if code == 0 {
            break;
        }
        if code == 9 && len == 1 {
            let r = *body.get(o + 4)?;
            per_sec = if r & 0x80 != 0 {
                1u64.checked_shl((r & 0x7f) as u32)?
            } else {
                10u64.checked_pow(r as u32)?
            };
        }
        o += 4 + len.div_ceil(4) * 4;
    }
    Some(Iface { link, per_sec })
}

/// Writes frames as a pcap file (Ethernet, microseconds), each `(Unix ns, bytes)`: for
/// tests and the dataset's own frames.
pub fn write_pcap(frames: &[(u64, Vec<u8>)], snap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for w in [0, 0, snap as u32, LINK_ETHERNET] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for (ns, f) in frames {
        let incl = f.len().min(snap);
        for w in [
            (ns / 1_000_000_000) as u32,
            (ns % 1_000_000_000 / 1000) as u32,
            incl as u32,
            f.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&f[..incl]);
    }
    out
}
