//! A message's bit vector of finished recipients.

/// One bit per recipient, set when that recipient is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bits {
    words: Box<[u64]>,
    len: u32,
    set: u32,
}

impl Bits {
    pub(crate) fn new(len: u32) -> Self {
        Bits {
            words: vec![0; (len as usize).div_ceil(64)].into_boxed_slice(),
            len,
            set: 0,
        }
    }

    pub(crate) fn byte_len(len: u32) -> usize {
        (len as usize).div_ceil(8)
    }

    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    pub(crate) fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; answers whether it was newly set (false when out of
    /// range or already set).
    pub(crate) fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.set += 1;
        true
    }

    pub(crate) fn all(&self) -> bool {
        self.set == self.len
    }

    pub(crate) fn write_bytes(&self, out: &mut Vec<u8>) {
        let n = Self::byte_len(self.len);
        let mut bytes = self.words.iter().flat_map(|w| w.to_le_bytes());
        out.extend((&mut bytes).take(n));
    }

    /// The inverse of `write_bytes`; `None` when bits beyond `len` are set.
    pub(crate) fn from_bytes(len: u32, bytes: &[u8]) -> Option<Self> {
        let mut b = Bits::new(len);
        for (i, byte) in bytes.iter().enumerate() {
            for j in 0..8 {
                if byte & (1 << j) != 0 && !b.set((i * 8 + j) as u32) {
                    return None;
                }
            }
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_bytes() {
        let mut b = Bits::new(70);
        assert!(b.set(0));
        assert!(b.set(69));
        assert!(!b.set(69));
        assert!(!b.set(70));
        assert!(b.get(69) && !b.get(68));
        let mut out = Vec::new();
        b.write_bytes(&mut out);
        assert_eq!(out.len(), 9);
        assert_eq!(Bits::from_bytes(70, &out), Some(b.clone()));
        out[8] |= 0x80; // bit 71: beyond the length
        assert_eq!(Bits::from_bytes(70, &out), None);
    }

    #[test]
    fn all_when_every_bit_is_set() {
        let mut b = Bits::new(2);
        assert!(!b.all());
        b.set(1);
        b.set(0);
        assert!(b.all());
        assert!(Bits::new(0).all());
    }
}
