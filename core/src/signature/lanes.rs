//! Many short BLAKE3 keyed hashes side by side.
//!
//! A signature or hash column hashes one short message per row: a node's
//! input hashes (one or two 64-byte blocks), a value's row encoding (mostly
//! one block). Hashed one at a time, each message runs one compression in a
//! single vector register and pays the hasher's setup. Here [`WIDE`] (with
//! AVX-512) or [`LANES`] (with AVX2) messages are compressed at once,
//! message `l` in lane `l` of every state word: the same arithmetic sixteen
//! or eight times over. Messages of different lengths share a group; a
//! lane whose message has ended computes on, and its result is ignored. The
//! digests are exactly those of `blake3::keyed_hash` (the tests compare
//! every path the CPU has, for every length up to two chunks); messages
//! longer than one chunk (1024 bytes) are rare here and go to the `blake3`
//! crate, as does everything on CPUs without AVX2.
//!
//! The compression function is BLAKE3's, written from its specification: a
//! 16-word state of the chaining value, four IV words, the block counter,
//! the block length and the flags; seven rounds of the G mixing function
//! over columns and diagonals, with the message words permuted between
//! rounds.

/// Messages compressed at once in AVX2 registers.
const LANES: usize = 8;

const BLOCK_LEN: usize = 64;
const CHUNK_LEN: usize = 1024;

const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const ROOT: u32 = 8;
const KEYED_HASH: u32 = 16;

const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];

/// How the message words are reordered between rounds.
const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];

/// One group's messages and the number of 64-byte blocks of each (an
/// empty message has one, empty).
struct Group<'a, const N: usize> {
    msgs: &'a [&'a [u8]],
    blocks: [usize; N],
    most: usize,
}

impl<'a, const N: usize> Group<'a, N> {
    fn new(msgs: &'a [&'a [u8]]) -> Group<'a, N> {
        let mut blocks = [0; N];
        for (n, m) in blocks.iter_mut().zip(msgs) {
            *n = m.len().div_ceil(BLOCK_LEN).max(1);
        }
        let most = blocks.iter().copied().max().unwrap_or(0);
        Group { msgs, blocks, most }
    }

    /// Block `b` of lane `l` (at most 64 bytes; empty once the message has
    /// ended) and its flags.
    fn block(&self, l: usize, b: usize) -> (&'a [u8], u32) {
        let msg = self.msgs.get(l).copied().unwrap_or(&[]);
        let start = (b * BLOCK_LEN).min(msg.len());
        let bytes = &msg[start..(start + BLOCK_LEN).min(msg.len())];
        let mut flags = KEYED_HASH;
        if b == 0 {
            flags |= CHUNK_START;
        }
        if b + 1 == self.blocks[l] {
            flags |= CHUNK_END | ROOT;
        }
        (bytes, flags)
    }
}

/// BLAKE3's seven rounds over the state `s` and message words `m`, with
/// `g` the mixing function of one vector width: columns, then diagonals,
/// and the message words permuted between rounds.
#[cfg(target_arch = "x86_64")]
macro_rules! rounds {
    ($g:ident, $s:ident, $m:ident) => {
        for r in 0..7 {
            if r > 0 {
                $m = std::array::from_fn(|i| $m[PERMUTATION[i]]);
            }
            $g(&mut $s, [0, 4, 8, 12], $m[0], $m[1]);
            $g(&mut $s, [1, 5, 9, 13], $m[2], $m[3]);
            $g(&mut $s, [2, 6, 10, 14], $m[4], $m[5]);
            $g(&mut $s, [3, 7, 11, 15], $m[6], $m[7]);
            $g(&mut $s, [0, 5, 10, 15], $m[8], $m[9]);
            $g(&mut $s, [1, 6, 11, 12], $m[10], $m[11]);
            $g(&mut $s, [2, 7, 8, 13], $m[12], $m[13]);
            $g(&mut $s, [3, 4, 9, 14], $m[14], $m[15]);
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The compression of [`LANES`] blocks in AVX2 registers,
    //! one 32-bit lane per message.

    use std::arch::x86_64::*;

    use super::{Group, IV, LANES, PERMUTATION};

    /// Eight 64-byte blocks (one per lane) as sixteen message words, each
    /// holding that word of every lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn message_words<const N: usize>(
        group: &Group<'_, N>,
        lanes: std::ops::Range<usize>,
        b: usize,
        lens: &mut [i32; N],
        flags: &mut [i32; N],
    ) -> [__m256i; 16] {
        let mut low = [_mm256_setzero_si256(); LANES];
        let mut high = [_mm256_setzero_si256(); LANES];
        let mut pad = [0u8; 32];
        for (k, l) in lanes.enumerate() {
            let (block, flag) = group.block(l, b);
            low[k] = half(block, &mut pad);
            high[k] = half(block.get(32..).unwrap_or(&[]), &mut pad);
            lens[l] = block.len() as i32;
            flags[l] = flag as i32;
        }
        let low = transpose(low);
        let high = transpose(high);
        std::array::from_fn(|i| if i < 8 { low[i] } else { high[i - 8] })
    }

    /// Stores the digests of the lanes whose message ends at block `b`:
    /// `words` are the eight output words of lanes `lanes`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn store_digests<const N: usize>(
        group: &Group<'_, N>,
        lanes: std::ops::Range<usize>,
        b: usize,
        words: [__m256i; 8],
        out: &mut [[u8; 32]],
    ) {
        if !lanes.clone().any(|l| group.blocks[l] == b + 1) {
            return;
        }
        let rows = transpose(words);
        for (row, l) in rows.into_iter().zip(lanes) {
            if let Some(slot) = out.get_mut(l).filter(|_| group.blocks[l] == b + 1) {
                // SAFETY: `slot` is 32 writable bytes; the store is unaligned.
                unsafe { _mm256_storeu_si256(slot.as_mut_ptr().cast(), row) };
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot16(x: __m256i) -> __m256i {
        let order = _mm256_setr_epi8(
            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11,
            8, 9, 14, 15, 12, 13,
        );
        _mm256_shuffle_epi8(x, order)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot8(x: __m256i) -> __m256i {
        let order = _mm256_setr_epi8(
            1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10,
            11, 8, 13, 14, 15, 12,
        );
        _mm256_shuffle_epi8(x, order)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot12(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<12>(x), _mm256_slli_epi32::<20>(x))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot7(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<7>(x), _mm256_slli_epi32::<25>(x))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn g(s: &mut [__m256i; 16], [a, b, c, d]: [usize; 4], x: __m256i, y: __m256i) {
        s[a] = add(add(s[a], s[b]), x);
        s[d] = rot16(_mm256_xor_si256(s[d], s[a]));
        s[c] = add(s[c], s[d]);
        s[b] = rot12(_mm256_xor_si256(s[b], s[c]));
        s[a] = add(add(s[a], s[b]), y);
        s[d] = rot8(_mm256_xor_si256(s[d], s[a]));
        s[c] = add(s[c], s[d]);
        s[b] = rot7(_mm256_xor_si256(s[b], s[c]));
    }

    /// Transposes eight rows of eight words into eight columns.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    /// The first 32 bytes of `bytes` (zero-padded) as eight words; read in
    /// place when there are 32.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn half(bytes: &[u8], pad: &mut [u8; 32]) -> __m256i {
        match bytes.len() {
            0 => _mm256_setzero_si256(),
            n if n >= 32 => load(bytes),
            n => {
                pad.fill(0);
                pad[..n].copy_from_slice(bytes);
                load(pad)
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(bytes: &[u8]) -> __m256i {
        assert!(bytes.len() >= 32);
        // SAFETY: `bytes` holds at least 32 readable bytes (checked above);
        // the load is unaligned.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    }

    /// Hashes one group of at most [`LANES`] messages of one chunk or less.
    #[target_feature(enable = "avx2")]
    pub(super) fn hash_group(key: &[u32; 8], group: &Group<'_, LANES>, out: &mut [[u8; 32]]) {
        let mut cv: [__m256i; 8] = std::array::from_fn(|i| _mm256_set1_epi32(key[i] as i32));
        for b in 0..group.most {
            let mut lens = [0i32; LANES];
            let mut flags = [0i32; LANES];
            let mut m = message_words(group, 0..LANES, b, &mut lens, &mut flags);
            let mut s: [__m256i; 16] = std::array::from_fn(|i| match i {
                0..8 => cv[i],
                8..12 => _mm256_set1_epi32(IV[i - 8] as i32),
                12 | 13 => _mm256_setzero_si256(),
                14 => load_i32(&lens),
                _ => load_i32(&flags),
            });
            rounds!(g, s, m);
            cv = std::array::from_fn(|i| _mm256_xor_si256(s[i], s[i + 8]));
            store_digests(group, 0..LANES, b, cv, out);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load_i32(words: &[i32; LANES]) -> __m256i {
        _mm256_setr_epi32(
            words[0], words[1], words[2], words[3], words[4], words[5], words[6], words[7],
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The compression of [`WIDE`] blocks in AVX-512
    //! registers, one 32-bit lane per message; the message words are
    //! gathered and the digests scattered eight lanes at a time by the AVX2
    //! transposes.

    use std::arch::x86_64::*;

    use super::avx2::{message_words, store_digests};
    use super::{Group, IV, LANES, PERMUTATION, WIDE};

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn g(s: &mut [__m512i; 16], [a, b, c, d]: [usize; 4], x: __m512i, y: __m512i) {
        s[a] = _mm512_add_epi32(_mm512_add_epi32(s[a], s[b]), x);
        s[d] = _mm512_ror_epi32::<16>(_mm512_xor_si512(s[d], s[a]));
        s[c] = _mm512_add_epi32(s[c], s[d]);
        s[b] = _mm512_ror_epi32::<12>(_mm512_xor_si512(s[b], s[c]));
        s[a] = _mm512_add_epi32(_mm512_add_epi32(s[a], s[b]), y);
        s[d] = _mm512_ror_epi32::<8>(_mm512_xor_si512(s[d], s[a]));
        s[c] = _mm512_add_epi32(s[c], s[d]);
        s[b] = _mm512_ror_epi32::<7>(_mm512_xor_si512(s[b], s[c]));
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn join(low: __m256i, high: __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_i32(words: &[i32; WIDE]) -> __m512i {
        // SAFETY: `words` is 64 readable bytes; the load is unaligned.
        unsafe { _mm512_loadu_epi32(words.as_ptr()) }
    }

    /// Hashes one group of at most [`WIDE`] messages of one chunk or less.
    #[target_feature(enable = "avx512f,avx2")]
    pub(super) fn hash_group(key: &[u32; 8], group: &Group<'_, WIDE>, out: &mut [[u8; 32]]) {
        let mut cv: [__m512i; 8] = std::array::from_fn(|i| _mm512_set1_epi32(key[i] as i32));
        for b in 0..group.most {
            let mut lens = [0i32; WIDE];
            let mut flags = [0i32; WIDE];
            let low = message_words(group, 0..LANES, b, &mut lens, &mut flags);
            let high = message_words(group, LANES..WIDE, b, &mut lens, &mut flags);
            let mut m: [__m512i; 16] = std::array::from_fn(|i| join(low[i], high[i]));
            let mut s: [__m512i; 16] = std::array::from_fn(|i| match i {
                0..8 => cv[i],
                8..12 => _mm512_set1_epi32(IV[i - 8] as i32),
                12 | 13 => _mm512_setzero_si512(),
                14 => load_i32(&lens),
                _ => load_i32(&flags),
            });
            rounds!(g, s, m);
            cv = std::array::from_fn(|i| _mm512_xor_si512(s[i], s[i + 8]));
            let low = cv.map(|v| _mm512_castsi512_si256(v));
            let high = cv.map(|v| _mm512_extracti64x4_epi64::<1>(v));
            store_digests(group, 0..LANES, b, low, out);
            store_digests(group, LANES..WIDE, b, high, out);
        }
    }
}

/// Messages compressed at once in AVX-512 registers.
const WIDE: usize = 16;

/// The vector units to use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lanes {
    /// One message at a time, by the `blake3` crate.
    None,
    /// [`LANES`] messages at a time (the CPU has AVX2).
    Avx2,
    /// [`WIDE`] messages at a time (the CPU has AVX-512F and AVX2).
    Avx512,
}

impl Lanes {
    fn detect() -> Lanes {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                return Lanes::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Lanes::Avx2;
            }
        }
        Lanes::None
    }
}

fn hash_all(key: &[u8; 32], msgs: &[&[u8]], out: &mut [[u8; 32]], lanes: Lanes) {
    let mut words = [0u32; 8];
    for (w, bytes) in words.iter_mut().zip(key.chunks_exact(4)) {
        *w = u32::from_le_bytes(bytes.try_into().unwrap());
    }
    let width = match lanes {
        Lanes::Avx512 => WIDE,
        _ => LANES,
    };
    for (group, digests) in msgs.chunks(width).zip(out.chunks_mut(width)) {
        if group.iter().all(|m| m.len() <= CHUNK_LEN) {
            #[cfg(target_arch = "x86_64")]
            match lanes {
                // SAFETY: `detect` found AVX-512F and AVX2 on this CPU.
                Lanes::Avx512 => {
                    unsafe { avx512::hash_group(&words, &Group::new(group), digests) };
                    continue;
                }
                // SAFETY: `detect` found AVX2 on this CPU.
                Lanes::Avx2 => {
                    unsafe { avx2::hash_group(&words, &Group::new(group), digests) };
                    continue;
                }
                Lanes::None => {}
            }
        }
        for (m, d) in group.iter().zip(digests) {
            *d = *blake3::keyed_hash(key, m).as_bytes();
        }
    }
}

/// BLAKE3 in keyed mode over each message: `out[i]` becomes
/// `blake3::keyed_hash(key, msgs[i])`. Sixteen or eight at a time in vector
/// registers when the CPU has AVX-512 or AVX2, else one by one.
///
/// # Panics
/// If `out` is shorter than `msgs`.
pub(crate) fn keyed_hash_many(key: &[u8; 32], msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    assert!(out.len() >= msgs.len(), "one digest slot per message");
    static DETECTED: std::sync::OnceLock<Lanes> = std::sync::OnceLock::new();
    hash_all(key, msgs, out, *DETECTED.get_or_init(Lanes::detect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn equals_blake3_for_every_length_up_to_two_chunks() {
        let key = *blake3::hash(b"a key").as_bytes();
        let owned: Vec<Vec<u8>> = (0..=2 * CHUNK_LEN + 1).map(|n| bytes(n, n as u8)).collect();
        // Lengths side by side in one group, so lanes finish at different
        // blocks, and messages beyond one chunk fall back.
        let msgs: Vec<&[u8]> = owned.iter().map(|m| m.as_slice()).collect();
        let mut out = vec![[0u8; 32]; msgs.len()];
        keyed_hash_many(&key, &msgs, &mut out);
        for (m, d) in msgs.iter().zip(&out) {
            assert_eq!(
                d,
                blake3::keyed_hash(&key, m).as_bytes(),
                "length {}",
                m.len()
            );
        }
        // Every path this CPU has gives the same.
        let mut paths = vec![Lanes::None];
        match Lanes::detect() {
            Lanes::Avx512 => paths.extend([Lanes::Avx2, Lanes::Avx512]),
            Lanes::Avx2 => paths.push(Lanes::Avx2),
            Lanes::None => {}
        }
        for lanes in paths {
            let mut again = vec![[0u8; 32]; msgs.len()];
            hash_all(&key, &msgs, &mut again, lanes);
            assert_eq!(again, out, "{lanes:?}");
        }
    }

    #[test]
    fn groups_of_any_size_and_mixed_lengths() {
        let key = [9u8; 32];
        let owned: Vec<Vec<u8>> = (0..37).map(|i| bytes((i * 29) % 200, i as u8)).collect();
        for take in [0, 1, 7, 8, 9, 37] {
            let msgs: Vec<&[u8]> = owned[..take].iter().map(|m| m.as_slice()).collect();
            let mut out = vec![[0u8; 32]; take];
            keyed_hash_many(&key, &msgs, &mut out);
            for (m, d) in msgs.iter().zip(&out) {
                assert_eq!(d, blake3::keyed_hash(&key, m).as_bytes());
            }
        }
    }
}
