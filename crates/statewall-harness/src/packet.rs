//! Crafting frames for BPF_PROG_TEST_RUN: Ethernet, VLAN tags, IPv4 (with options) or IPv6
//! (with extension headers), fragments, TCP, UDP, ICMP and ICMPv6, with correct lengths
//! and checksums.
//!
//! ```
//! use statewall_harness::packet::Packet;
//! let frame = Packet::tcp("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 40000, 22, 0x02)
//!     .vlan(0x8100, 7)
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 20 + 20);
//! ```

use std::net::IpAddr;

use statewall_common::parse::proto;

/// The L4 part of a crafted packet.
#[derive(Clone, Debug)]
pub enum L4 {
    /// TCP header (no options) with these fields.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flag byte.
        flags: u8,
        /// Sequence number.
        seq: u32,
        /// Acknowledgement number.
        ack: u32,
        /// Window.
        win: u16,
    },
    /// UDP header.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6) header of 8 bytes.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Identifier (echo).
        id: u16,
        /// Sequence (echo).
        seq: u16,
    },
    /// Any other protocol: the payload follows the IP header(s) directly.
    Raw(u8),
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Packet {
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
    vlans: Vec<(u16, u16)>,
    ipv4_options: Vec<u8>,
    ipv6_ext: Vec<(u8, Vec<u8>)>,
    frag: Option<(u16, bool)>,
    payload: Vec<u8>,
    ttl: u8,
}

fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Packet {
    /// A packet from `src` to `dst` (same family) with the given L4 header.
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "source and destination of different families"
        );
        Packet {
            src,
            dst,
            l4,
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv6_ext: Vec::new(),
            frag: None,
            payload: Vec::new(),
            ttl: 64,
        }
    }

    /// TCP packet with the given flag byte.
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
                seq: 1000,
                ack: 0,
                win: 64240,
            },
        )
    }

    /// UDP packet.
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    /// ICMP/ICMPv6 echo request.
    pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        let ty = if src.is_ipv4() { 8 } else { 128 };
        Self::new(
            src,
            dst,
            L4::Icmp {
                ty,
                code: 0,
                id,
                seq: 1,
            },
        )
    }

    /// Adds a VLAN tag (outer first) with this TPID (0x8100 or 0x88a8) and TCI.
    pub fn vlan(mut self, tpid: u16, tci: u16) -> Self {
        self.vlans.push((tpid, tci));
        self
    }

    /// IPv4 options bytes (padded to a multiple of 4 with zeros).
    pub fn ipv4_options(mut self, opts: &[u8]) -> Self {
        let mut o = opts.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        self.ipv4_options = o;
        self
    }

    /// Appends an IPv6 extension header of type `nh` (0, 43, 60, 51, ...) with `units`
    /// length units beyond the first (its length byte). The fragment header is added by
    /// [`Packet::fragment`].
    pub fn ipv6_ext(mut self, nh: u8, units: u8) -> Self {
        let total = if nh == 51 {
            (units as usize + 2) * 4
        } else {
            (units as usize + 1) * 8
        };
        let mut body = vec![0u8; total];
        body[1] = units;
        if nh == 43 {
            body[2] = 4; // routing type (RPL source route, unused here)
        }
        self.ipv6_ext.push((nh, body));
        self
    }

    /// Makes the packet a fragment: `offset` in 8-byte units, `more` = MF / M flag.
    /// For IPv6 this appends a fragment header after the other extension headers.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.frag = Some((offset, more));
        self
    }

    /// Payload after the L4 header.
    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    /// TTL / hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        let v6 = self.src.is_ipv6();
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                win,
            } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..8].copy_from_slice(&seq.to_be_bytes());
                h[8..12].copy_from_slice(&ack.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = *flags;
                h[14..16].copy_from_slice(&win.to_be_bytes());
                h.extend_from_slice(&self.payload);
                (proto::TCP, h)
            }
            L4::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&self.payload);
                (proto::UDP, h)
            }
            L4::Icmp { ty, code, id, seq } => {
                let mut h = vec![*ty, *code, 0, 0];
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(&self.payload);
                (if v6 { proto::ICMPV6 } else { proto::ICMP }, h)
            }
            L4::Raw(p) => (*p, self.payload.clone()),
        }
    }

    fn pseudo_sum(&self, proto: u8, len: usize) -> u32 {
        let mut s = 0u32;
        match (self.src, self.dst) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                s = csum_add(s, &a.octets());
                s = csum_add(s, &b.octets());
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                s = csum_add(s, &a.octets());
                s = csum_add(s, &b.octets());
            }
            _ => unreachable!(),
        }
        s + proto as u32 + len as u32
    }

    /// The finished frame.
    pub fn build(&self) -> Vec<u8> {
        let (l4proto, mut l4) = self.l4_bytes();
        // L4 checksum (not for non-first fragments, where it is meaningless here).
        // Raw payloads are written as given, whatever protocol number they carry.
        let ck_off = match self.l4 {
            L4::Tcp { .. } => Some(16),
            L4::Udp { .. } => Some(6),
            L4::Icmp { .. } => Some(2),
            L4::Raw(_) => None,
        };
        if let Some(o) = ck_off {
            let mut s = if l4proto == proto::ICMP {
                0
            } else {
                self.pseudo_sum(l4proto, l4.len())
            };
            s = csum_add(s, &l4);
            let mut c = csum_fold(s);
            if l4proto == proto::UDP && c == 0 {
                c = 0xffff;
            }
            l4[o..o + 2].copy_from_slice(&c.to_be_bytes());
        }
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        for (tpid, tci) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let hlen = 20 + self.ipv4_options.len();
                let mut h = vec![0u8; 20];
                h[0] = 0x40 | (hlen / 4) as u8;
                h[2..4].copy_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
                if let Some((off, more)) = self.frag {
                    let v = (off & 0x1fff) | if more { 0x2000 } else { 0 };
                    h[6..8].copy_from_slice(&v.to_be_bytes());
                }
                h[8] = self.ttl;
                h[9] = l4proto;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h.extend_from_slice(&self.ipv4_options);
                let c = csum_fold(csum_add(0, &h));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut exts = self.ipv6_ext.clone();
                if let Some((off, more)) = self.frag {
                    let mut b = vec![0u8; 8];
                    let v = (off << 3) | more as u16;
                    b[2..4].copy_from_slice(&v.to_be_bytes());
                    b[4..8].copy_from_slice(&0xabcdu32.to_be_bytes());
                    exts.push((44, b));
                }
                let ext_len: usize = exts.iter().map(|(_, b)| b.len()).sum();
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&((ext_len + l4.len()) as u16).to_be_bytes());
                h[6] = exts.first().map(|e| e.0).unwrap_or(l4proto);
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                f.extend_from_slice(&h);
                for i in 0..exts.len() {
                    let next = exts.get(i + 1).map(|e| e.0).unwrap_or(l4proto);
                    let mut b = exts[i].1.clone();
                    b[0] = next;
                    f.extend_from_slice(&b);
                }
            }
            _ => unreachable!(),
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// Ethernet frame with a non-IP ethertype (ARP-sized).
pub fn non_ip(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f
}

/// The kinds of damage [`malform`] does, by name.
pub const MALFORM_KINDS: [&str; 10] = [
    "truncated",
    "bad ihl",
    "ip length",
    "tcp doff < 5",
    "udp length",
    "ipv6 ext chain past the bound",
    "vlan stack past the bound",
    "later fragment",
    "zero-length payload",
    "header byte flipped",
];

/// A malformed (or borderline) version of `frame`, an Ethernet frame of at least 14 bytes
/// (one [`Packet::build`] made, say): one of [`MALFORM_KINDS`] that applies to it, chosen
/// and parameterised by `r`. Returns the kind's name and the frame. The frame's layout is
/// read with the parser's twin ([`parse_packet`](statewall_common::parse::parse_packet)),
/// so VLAN tags, IPv4 options and IPv6 extension headers are where the parser sees them,
/// and a later fragment gets no L4 damage. Truncations keep what BPF_PROG_TEST_RUN takes
/// for tc (an IPv4 header after Ethernet, or an IPv6 one); shorter cuts are for tests
/// that send on the wire.
///
/// ```
/// use statewall_harness::packet::{malform, Packet};
/// let f = Packet::udp("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 1, 2)
///     .payload(&[0; 40])
///     .build();
/// let (kind, g) = malform(&f, 7);
/// assert!(statewall_harness::packet::MALFORM_KINDS.contains(&kind));
/// assert_ne!(f, g);
/// ```
pub fn malform(frame: &[u8], r: u64) -> (&'static str, Vec<u8>) {
    use statewall_common::parse::{
        parse_packet, Status, FLAG_L4, FLAG_NONFIRST_FRAG, MAX_IPV6_EXT, MAX_VLAN,
    };
    assert!(frame.len() >= 14, "malform: not an Ethernet frame");
    // A small xorshift on r: each draw is independent enough for choosing.
    let mut s = r | 1;
    let mut draw = |n: usize| -> usize {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n.max(1) as u64) as usize
    };
    let p = parse_packet(frame);
    let ip_ok = p.status == Status::Ip as u8;
    let (v4, v6) = (ip_ok && p.family == 4, ip_ok && p.family == 6);
    let ip = p.l3_off as usize;
    let l4 = p.l4_off as usize;
    let has_l4 = ip_ok && p.flags & FLAG_L4 != 0 && p.flags & FLAG_NONFIRST_FRAG == 0;
    let tcp = has_l4 && p.l4proto == proto::TCP && frame.len() >= l4 + 20;
    let udp = has_l4 && p.l4proto == proto::UDP && frame.len() >= l4 + 8;
    // The least test-run takes for tc.
    let min = if v4 { ip + 20 } else { ip + 40 };
    let mut kinds: Vec<&'static str> = vec!["vlan stack past the bound", "header byte flipped"];
    if (v4 || v6) && frame.len() > min + 1 {
        kinds.push("truncated");
    }
    if v4 {
        kinds.extend(["bad ihl", "ip length"]);
    }
    if v6 {
        kinds.extend(["ip length", "ipv6 ext chain past the bound"]);
    }
    if (v4 || v6) && p.flags & FLAG_NONFIRST_FRAG == 0 {
        kinds.push("later fragment");
    }
    if tcp {
        kinds.push("tcp doff < 5");
    }
    if udp {
        kinds.push("udp length");
    }
    if (tcp && frame.len() > l4 + 20) || (udp && frame.len() > l4 + 8) {
        kinds.push("zero-length payload");
    }
    let kind = kinds[draw(kinds.len())];
    let mut f = frame.to_vec();
    // Rewrites the IP length fields for a frame whose IP packet now ends at `end`.
    let set_len = |f: &mut Vec<u8>, end: usize| {
        if v4 {
            f[ip + 2..ip + 4].copy_from_slice(&((end - ip) as u16).to_be_bytes());
        } else if v6 {
            f[ip + 4..ip + 6].copy_from_slice(&((end - ip - 40) as u16).to_be_bytes());
        }
    };
    match kind {
        "truncated" => f.truncate(min + draw(frame.len() - min)),
        // Below 5 (20 bytes): always too short for the header.
        "bad ihl" => f[ip] = 0x40 | draw(5) as u8,
        "ip length" => {
            // IPv4: shorter than the header, or longer than the frame; IPv6: longer.
            let v = if v4 && draw(2) == 0 {
                draw(20)
            } else {
                frame.len() - ip + 1 + draw(1000)
            } as u16;
            let at = if v4 { ip + 2 } else { ip + 4 };
            f[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
        "tcp doff < 5" => f[l4 + 12] = ((draw(5) as u8) << 4) | (f[l4 + 12] & 15),
        "udp length" => {
            // Below the header, or past the datagram.
            let v = if draw(2) == 0 {
                draw(8)
            } else {
                frame.len() - l4 + 1 + draw(100)
            } as u16;
            f[l4 + 4..l4 + 6].copy_from_slice(&v.to_be_bytes());
        }
        "ipv6 ext chain past the bound" => {
            // MAX_IPV6_EXT + 1.. destination-options headers (8 bytes each, some of them
            // routing headers) in front of whatever followed the IPv6 header.
            let n = MAX_IPV6_EXT + 1 + draw(3);
            let mut ext = Vec::with_capacity(n * 8);
            let first = f[ip + 6];
            for i in 0..n {
                let next = if i + 1 == n {
                    first
                } else if draw(4) == 0 {
                    43
                } else {
                    60
                };
                ext.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
            }
            f[ip + 6] = 60;
            f.splice(ip + 40..ip + 40, ext);
            let end = f.len();
            set_len(&mut f, end);
        }
        "vlan stack past the bound" => {
            let n = MAX_VLAN + 1 + draw(2);
            let tags: Vec<u8> = (0..n)
                .flat_map(|i| {
                    let tpid: u16 = if i == 0 && draw(2) == 0 {
                        0x88a8
                    } else {
                        0x8100
                    };
                    let mut t = tpid.to_be_bytes().to_vec();
                    t.extend_from_slice(&(10 + i as u16).to_be_bytes());
                    t
                })
                .collect();
            f.splice(12..12, tags);
        }
        "later fragment" => {
            let off = 1 + draw(0x1ffe) as u16;
            if v4 {
                let more = if draw(2) == 0 { 0x2000 } else { 0 };
                f[ip + 6..ip + 8].copy_from_slice(&(off | more).to_be_bytes());
            } else {
                // A fragment header right after the IPv6 header.
                let mut h = [0u8; 8];
                h[0] = f[ip + 6];
                h[2..4].copy_from_slice(&((off << 3) | draw(2) as u16).to_be_bytes());
                f[ip + 6] = 44;
                f.splice(ip + 40..ip + 40, h);
                let end = f.len();
                set_len(&mut f, end);
            }
        }
        "zero-length payload" => {
            let end = l4 + if tcp { 20 } else { 8 };
            f.truncate(end);
            if udp {
                f[l4 + 4..l4 + 6].copy_from_slice(&8u16.to_be_bytes());
            }
            set_len(&mut f, end);
        }
        _ => {
            // "header byte flipped": one byte from the Ethernet type to the end of the
            // first 20 bytes after the IP header(s) (L4 header, or payload after a short
            // one) gets random bits.
            let end = if ip_ok { l4 + 20 } else { ip + 20 }.min(f.len());
            let at = 12 + draw(end.max(13) - 12);
            f[at] ^= 1 + draw(255) as u8;
        }
    }
    (kind, f)
}

/// Splits a built frame (Ethernet, no VLAN tag; IPv4 without options or IPv6 without
/// extension headers) into the fragments a host with link MTU `mtu` sends: every fragment's
/// payload a multiple of 8 bytes but the last, IPv4 with MF and offsets (identification
/// kept), IPv6 with a fragment header (identification `id6`). A frame that fits is
/// returned whole.
pub fn fragments(frame: &[u8], mtu: usize, id6: u32) -> Vec<Vec<u8>> {
    let v4 = u16::from_be_bytes([frame[12], frame[13]]) == 0x0800;
    let hlen = if v4 { 20 } else { 40 };
    let (eth, ip, body) = (&frame[..14], &frame[14..14 + hlen], &frame[14 + hlen..]);
    if hlen + body.len() <= mtu {
        return vec![frame.to_vec()];
    }
    let room = if v4 { mtu - 20 } else { mtu - 48 } & !7;
    let mut out = Vec::new();
    let mut off = 0;
    while off < body.len() {
        let end = (off + room).min(body.len());
        let more = end < body.len();
        let mut f = eth.to_vec();
        let mut h = ip.to_vec();
        if v4 {
            h[2..4].copy_from_slice(&((20 + end - off) as u16).to_be_bytes());
            let v = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&v.to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = csum_fold(csum_add(0, &h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
        } else {
            let nh = h[6];
            h[4..6].copy_from_slice(&((8 + end - off) as u16).to_be_bytes());
            h[6] = 44;
            f.extend_from_slice(&h);
            let v = ((off / 8) as u16) << 3 | more as u16;
            f.extend_from_slice(&[nh, 0]);
            f.extend_from_slice(&v.to_be_bytes());
            f.extend_from_slice(&id6.to_be_bytes());
        }
        f.extend_from_slice(&body[off..end]);
        out.push(f);
        off = end;
    }
    out
}
