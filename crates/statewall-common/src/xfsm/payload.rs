//! UDP payloads as the machines match them: a transition's pattern, or the bytes a
//! packet carried, compared word by word.

/// Longest UDP payload a transition can match.
pub const PAYLOAD_MAX: usize = 64;
/// Payload patterns per generation.
pub const MAX_PAYLOADS: u32 = 32;
/// A payload length no packet has: the packet's payload was not captured.
pub const PAYLOAD_NONE: u32 = u32::MAX;

/// A UDP payload: a pattern in [`super::MAP_PAYLOADS`], or the packet's payload captured into
/// [`super::Work::snap`]. Bytes past `len` are zero, so that two payloads compare as words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    /// Bytes used.
    pub len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The bytes, in packet order (native-endian words).
    pub words: [u64; PAYLOAD_MAX / 8],
}

impl Payload {
    /// A payload holding `b`; `None` when longer than [`PAYLOAD_MAX`].
    pub fn from_bytes(b: &[u8]) -> Option<Payload> {
        if b.len() > PAYLOAD_MAX {
            return None;
        }
        let mut buf = [0u8; PAYLOAD_MAX];
        buf[..b.len()].copy_from_slice(b);
        let mut p = Payload {
            len: b.len() as u32,
            ..Default::default()
        };
        for (i, w) in p.words.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&buf[i * 8..i * 8 + 8]);
            *w = u64::from_ne_bytes(x);
        }
        Some(p)
    }

    /// Equal length and bytes, compared word by word without an early exit.
    #[inline(always)]
    pub fn same(&self, o: &Payload) -> bool {
        let mut diff = (self.len ^ o.len) as u64;
        let mut i = 0;
        while i < PAYLOAD_MAX / 8 {
            diff |= self.words[i] ^ o.words[i];
            i += 1;
        }
        diff == 0
    }
}
