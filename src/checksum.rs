//! BLAKE3 truncated to 128 bits: message headers, bodies and the journal's hash chain.
//! Identity is at stake in all three (a checksum names a prepare), so a cryptographic hash is used
//! rather than a CRC.

pub fn checksum(bytes: &[u8]) -> u128 {
    let hash = blake3::hash(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_and_stable() {
        assert_eq!(checksum(b"abc"), checksum(b"abc"));
        assert_ne!(checksum(b"abc"), checksum(b"abd"));
        assert_ne!(checksum(&[]), 0);
    }
}
