//! Crafting frames for BPF_PROG_TEST_RUN: Ethernet, VLAN tags, IPv4 (with options) or IPv6
//! (with extension headers), fragments, TCP, UDP, ICMP and ICMPv6, with correct lengths
//! and checksums.
//!
//! ```
//! use statewall::packet::Packet;
//! let frame = Packet::tcp("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 40000, 22, 0x02)
//!     .vlan(0x8100, 7)
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 20 + 20);
//! ```

use std::net::IpAddr;

use statewall_common::proto;

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
