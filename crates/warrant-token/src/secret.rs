//! Envelope encryption of stored secrets.
//!
//! Each secret version gets a fresh 256-bit data key. The value is sealed
//! under the data key and the data key under the KEK, both with AES-256-GCM
//! and the same associated data (name, owner, version; see
//! `SecretRecord::aad`), so neither blob opens in another row or version, and
//! rotating the KEK later means re-wrapping data keys, not re-encrypting values.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use warrant_core::secret::SecretValue;
use zeroize::Zeroizing;

use crate::Kek;
use crate::error::KeyError;

/// A sealed secret version: `(wrapped data key, sealed value)`.
pub type Sealed = (Vec<u8>, Vec<u8>);

/// Seals `value` under a fresh data key wrapped by `kek`, bound to `aad`.
pub fn seal_secret(kek: &Kek, aad: &[u8], value: &SecretValue) -> Result<Sealed, KeyError> {
    let mut dek = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(dek.as_mut_slice())
        .map_err(|_| KeyError::Crypto("generating a data key"))?;
    let key = RandomizedNonceKey::new(&AES_256_GCM, dek.as_slice())
        .map_err(|_| KeyError::Crypto("loading a data key"))?;
    let mut buf = value.expose().to_vec();
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad), &mut buf)
        .map_err(|_| KeyError::Crypto("sealing a secret"))?;
    let mut sealed = Vec::with_capacity(NONCE_LEN + buf.len());
    sealed.extend_from_slice(nonce.as_ref());
    sealed.extend_from_slice(&buf);
    let wrapped = kek.seal(aad, dek.as_slice())?;
    Ok((wrapped, sealed))
}

/// Opens a sealed secret; `None` if the KEK, the associated data or either
/// blob is wrong.
pub fn open_secret(kek: &Kek, aad: &[u8], wrapped: &[u8], sealed: &[u8]) -> Option<SecretValue> {
    let dek = kek.open(aad, wrapped)?;
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let key = RandomizedNonceKey::new(&AES_256_GCM, dek.as_slice()).ok()?;
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = ct.to_vec();
    let len = key
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .ok()?
        .len();
    buf.truncate(len);
    Some(SecretValue::new(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_where_they_were_sealed() {
        let kek = Kek::generate().unwrap();
        let v = SecretValue::new(b"sk-live-abc".to_vec());
        let (w, s) = seal_secret(&kek, b"a", &v).unwrap();
        assert_eq!(
            open_secret(&kek, b"a", &w, &s).unwrap().expose(),
            b"sk-live-abc"
        );
        assert!(
            !s.windows(11).any(|x| x == b"sk-live-abc"),
            "not in the clear"
        );
        assert!(open_secret(&kek, b"b", &w, &s).is_none(), "other row");
        assert!(
            open_secret(&Kek::generate().unwrap(), b"a", &w, &s).is_none(),
            "other KEK"
        );
        let (w2, s2) = seal_secret(&kek, b"a", &v).unwrap();
        assert_ne!(w, w2, "a fresh data key per version");
        assert!(
            open_secret(&kek, b"a", &w2, &s).is_none(),
            "mixed data key and value"
        );
        assert!(
            open_secret(&kek, b"a", &w, &s2).is_none(),
            "mixed data key and value"
        );
        let mut t = s.clone();
        t[NONCE_LEN] ^= 1;
        assert!(open_secret(&kek, b"a", &w, &t).is_none(), "altered");
        assert!(open_secret(&kek, b"a", &w, &s[..4]).is_none(), "truncated");
    }
}
