//! A fast hasher for maps keyed by words (pid and atom keys, seqs): one multiply-xor mix per
//! word instead of SipHash. Keys come from the VM or from a trace being loaded; a crafted trace
//! can at worst make its own loading slower, never wrong.

use crate::capture::policy::mix64;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes `u64` words with [`mix64`]; other input is folded in eight bytes at a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = mix64(self.0 ^ x);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`WordHasher`].
pub type WordMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_every_key() {
        let mut m: WordMap<u64, u64> = WordMap::default();
        for k in 0..10_000u64 {
            m.insert(k << 4 | 3, k);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u64).all(|k| m[&(k << 4 | 3)] == k));
        let mut t: WordMap<(u64, u64), u8> = WordMap::default();
        t.insert((1, 2), 1);
        t.insert((2, 1), 2);
        assert_eq!((t[&(1, 2)], t[&(2, 1)]), (1, 2));
    }
}
