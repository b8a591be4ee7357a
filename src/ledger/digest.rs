//! The ledger's state digest: an order-independent sum, modulo 2^128, of a hash of every piece
//! of state (each account, transfer, pending status, remembered failed id and balance record).
//! Changing an object subtracts its old hash and adds its new one, so the digest is kept up to
//! date in O(1) per change and `digest()` costs nothing, yet it is a function of the state alone
//! (not of the history that produced it): `Ledger::digest_recompute` rebuilds it from scratch.
//!
//! The per-object hash is a keyed multiply-accumulate (NH) over 64-bit words followed by a
//! nonlinear finalizer. It is fast, not cryptographic: it detects divergence between replicas,
//! not an adversary.

use super::table::fmix64;

/// Kinds of objects in the digest; each gets its own key offset so equal bytes of different
/// kinds hash differently.
pub const KIND_ACCOUNT: u64 = 1;
pub const KIND_TRANSFER: u64 = 2;
pub const KIND_PENDING_STATUS: u64 = 3;
pub const KIND_ORPHAN: u64 = 4;
pub const KIND_BALANCE: u64 = 5;

const KEYS: [u64; 20] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
    0x4528_21E6_38D0_1377,
    0xBE54_66CF_34E9_0C6C,
    0xC0AC_29B7_C97C_50DD,
    0x3F84_D5B5_B547_0917,
    0x9216_D5D9_8979_FB1B,
    0xD131_0BA6_98DF_B5AC,
    0x2FFD_72DB_D01A_DFB7,
    0xB8E1_AFED_6A26_7E96,
    0xBA7C_9045_F12C_7F99,
    0x24A1_9947_B391_6CF7,
    0x0801_F2E2_858E_FC16,
    0x6369_20D8_7157_4E69,
    0xA458_FEA3_F493_3D7E,
    0x0D95_748F_728E_B658,
    0x718B_CD58_8215_4AEE,
    0x7B54_A41D_C25A_59B5,
];

/// Hashes up to 16 words of an object of `kind`.
#[inline]
pub fn hash_words(kind: u64, words: &[u64]) -> u128 {
    debug_assert!(words.len() <= 16);
    let offset = kind as usize & 3;
    let mut acc: u128 = u128::from(kind);
    let mut pairs = words.chunks_exact(2);
    for (i, pair) in pairs.by_ref().enumerate() {
        let a = pair[0].wrapping_add(KEYS[offset + 2 * i]);
        let b = pair[1].wrapping_add(KEYS[offset + 2 * i + 1]);
        // The linear term keeps every word significant even when the other factor is zero.
        let linear = (u128::from(b) << 64) | u128::from(a);
        acc = acc
            .wrapping_add(u128::from(a) * u128::from(b))
            .wrapping_add(linear);
    }
    if let [last] = pairs.remainder() {
        let i = words.len() / 2;
        let a = last.wrapping_add(KEYS[offset + 2 * i]);
        acc = acc
            .wrapping_add(u128::from(a) * u128::from(KEYS[offset + 2 * i + 1]))
            .wrapping_add(u128::from(*last));
    }
    finalize(acc ^ (u128::from(kind) << 64))
}

/// Hashes a 128-byte record (an account or a transfer).
#[inline]
pub fn hash_record(kind: u64, bytes: &[u8; 128]) -> u128 {
    let mut words = [0u64; 16];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
    hash_words(kind, &words)
}

#[inline]
pub fn finalize(x: u128) -> u128 {
    let lo = x as u64;
    let hi = (x >> 64) as u64;
    let a = fmix64(lo ^ hi.rotate_left(23));
    let b = fmix64(hi ^ a);
    (u128::from(b) << 64) | u128::from(a ^ lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguishes_kinds_and_single_bit_changes() {
        let words = [1u64, 2, 3, 4, 5];
        let h = hash_words(KIND_ACCOUNT, &words);
        assert_ne!(h, hash_words(KIND_TRANSFER, &words));
        for i in 0..words.len() {
            for bit in [0, 17, 63] {
                let mut w = words;
                w[i] ^= 1 << bit;
                assert_ne!(h, hash_words(KIND_ACCOUNT, &w));
            }
        }
    }
}
