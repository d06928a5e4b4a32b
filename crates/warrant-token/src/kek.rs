//! The key-encryption key and AEAD sealing under it.
//!
//! Sealed blobs are `nonce (12) || ciphertext || tag (16)` under AES-256-GCM with
//! a random nonce. The associated data names what the blob is (e.g. the signing
//! key's kid), so a blob copied into another row fails to open.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::error::KeyError;

/// The key-encryption key: 32 bytes from `WARRANT_KEK` or `<data-dir>/kek`.
/// `Debug` prints `[redacted]`; the bytes are wiped on drop.
pub struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    /// Parses base64 (standard alphabet, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::BadKek("it is not base64"))?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::BadKek("it does not decode to exactly 32 bytes"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// A fresh random KEK.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut_slice())
            .map_err(|_| KeyError::Crypto("generating a key-encryption key"))?;
        Ok(Self(k))
    }

    /// The raw bytes, for deriving keys within this crate.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// The base64 form, for writing the kek file. Wiped on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_slice()))
    }

    fn aead(&self) -> Result<RandomizedNonceKey, KeyError> {
        RandomizedNonceKey::new(&AES_256_GCM, self.0.as_slice())
            .map_err(|_| KeyError::Crypto("loading the key-encryption key"))
    }

    /// Seals `plaintext`, binding it to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.aead()?;
        let mut buf = plaintext.to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(aad), &mut buf)
            .map_err(|_| KeyError::Crypto("sealing"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a sealed blob; `None` if the KEK, the AAD or the bytes are wrong.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let key = self.aead().ok()?;
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = key
            .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal(b"row-1", b"private").unwrap();
        assert_eq!(kek.open(b"row-1", &sealed).unwrap().as_slice(), b"private");
        assert!(
            kek.open(b"row-2", &sealed).is_none(),
            "moved to another row"
        );
        let other = Kek::generate().unwrap();
        assert!(other.open(b"row-1", &sealed).is_none(), "another KEK");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(kek.open(b"row-1", &flipped).is_none(), "altered");
        assert!(kek.open(b"row-1", &sealed[..5]).is_none(), "truncated");
    }

    #[test]
    fn parse_errors_say_what_to_do() {
        let e = Kek::from_base64("not base64!").unwrap_err().to_string();
        assert!(e.contains("openssl rand -base64 32"), "{e}");
        let e = Kek::from_base64("AAAA").unwrap_err().to_string();
        assert!(e.contains("exactly 32 bytes"), "{e}");
        let k = Kek::generate().unwrap();
        let again = Kek::from_base64(&format!("  {}\n", k.to_base64().as_str())).unwrap();
        assert_eq!(again.0.as_slice(), k.0.as_slice());
        assert_eq!(format!("{k:?}"), "Kek([redacted])");
    }
}
