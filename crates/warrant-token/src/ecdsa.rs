//! ECDSA signature malleability: `(r, s)` and `(r, n - s)` both verify.
//!
//! warrant signs with the low `s` (at most half the group order) and, for
//! its own tokens, refuses the high twin, so a token has exactly one valid
//! encoding. Tokens of other issuers are verified as their libraries make
//! them (many do not normalise); a twin of such a token carries nothing its
//! holder did not already have.

/// Half the order of P-256, big-endian.
const P256_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];
/// The order of P-256, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// Half the order of P-384, big-endian.
const P384_HALF_N: [u8; 48] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xe3, 0xb1, 0xa6, 0xc0, 0xfa, 0x1b, 0x96, 0xef,
    0xac, 0x0d, 0x06, 0xd9, 0x24, 0x58, 0x53, 0xbd, 0x76, 0x76, 0x0c, 0xb5, 0x66, 0x62, 0x94, 0xb9,
];

/// Whether a fixed-size `r || s` signature has a high `s` (P-256 or P-384,
/// told by its length). Other lengths are not ECDSA signatures here.
pub fn is_high_s(sig: &[u8]) -> bool {
    match sig.len() {
        64 => sig[32..] > P256_HALF_N[..],
        96 => sig[48..] > P384_HALF_N[..],
        _ => false,
    }
}

/// Replaces a P-256 signature's high `s` by `n - s` (its low twin).
pub fn normalize_p256(sig: &mut [u8]) {
    if sig.len() != 64 || !is_high_s(sig) {
        return;
    }
    let s = &mut sig[32..];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        s[i] = u8::try_from(d.rem_euclid(256)).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_and_twins() {
        let mut low = [0u8; 64];
        low[32..].copy_from_slice(&P256_HALF_N);
        assert!(!is_high_s(&low), "exactly half is low");
        let mut high = [0u8; 64];
        high[32..].copy_from_slice(&P256_N);
        high[63] -= 1; // n - 1
        assert!(is_high_s(&high));
        normalize_p256(&mut high);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(&high[32..], &one, "n - (n - 1) = 1");
        assert!(!is_high_s(&high));
    }
}
