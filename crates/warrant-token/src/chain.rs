//! The audit chain's key: HMAC-SHA-256 with a key derived from the KEK.
//!
//! Each record's hash covers the previous hash and the record, keyed, so
//! someone who can write the database but does not hold the KEK cannot
//! delete, insert or edit a record and re-link the rest.

use aws_lc_rs::{hkdf, hmac};
use warrant_core::audit::{ChainHash, ChainLinker};

use crate::{Kek, KeyError};

/// The chain key. `Debug` prints `[redacted]`.
pub struct AuditChainKey(hmac::Key);

impl std::fmt::Debug for AuditChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditChainKey([redacted])")
    }
}

impl AuditChainKey {
    /// The chain key of `kek` (HKDF-SHA-256, for this purpose only).
    pub fn derive(kek: &Kek) -> Result<Self, KeyError> {
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let mut okm = zeroize::Zeroizing::new([0u8; 32]);
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"warrant")
            .extract(kek.bytes())
            .expand(&[b"audit chain v1"], Len(32))
            .and_then(|k| k.fill(okm.as_mut_slice()))
            .map_err(|_| KeyError::Crypto("deriving the audit chain key"))?;
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, okm.as_slice())))
    }
}

impl ChainLinker for AuditChainKey {
    fn link(&self, prev: &ChainHash, body: &[u8]) -> ChainHash {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&prev.0);
        ctx.update(body);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        ChainHash(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_the_kek_and_differs_from_plain_sha256() {
        let (a, b) = (Kek::generate().unwrap(), Kek::generate().unwrap());
        let (ka, ka2, kb) = (
            AuditChainKey::derive(&a).unwrap(),
            AuditChainKey::derive(&a).unwrap(),
            AuditChainKey::derive(&b).unwrap(),
        );
        let prev = ChainHash::GENESIS;
        assert_eq!(ka.link(&prev, b"x"), ka2.link(&prev, b"x"));
        assert_ne!(ka.link(&prev, b"x"), kb.link(&prev, b"x"));
        assert_ne!(ka.link(&prev, b"x"), ChainHash::link(&prev, b"x"));
        assert_eq!(format!("{ka:?}"), "AuditChainKey([redacted])");
    }
}
