//! Signing-key records as the store keeps them: public half in the clear, private
//! half sealed under the key-encryption key. Opening and using them is
//! warrant-token's job; this crate never sees key material in the clear.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A JWS signature algorithm warrant signs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256: the default; every JOSE library and cloud
    /// federation accepts it.
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Alg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }
}

impl FromStr for Alg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" | "es256" => Ok(Self::Es256),
            "EdDSA" | "eddsa" | "ed25519" => Ok(Self::EdDsa),
            _ => Err(format!(
                "signing algorithm `{}` is not supported; use ES256 or EdDSA",
                s.escape_debug()
            )),
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signing key as stored.
///
/// A key's lifecycle is derived from timestamps, never from a mutable state
/// column: it is published from `created_at`, signs from `activates_at` until a
/// later key activates, and stays published until every token it could have
/// signed has expired. See `warrant_token::KeySet`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// Key id, opaque (`kid` in JWS headers and the JWKS).
    pub kid: String,
    /// Algorithm, fixed for the key's life.
    pub alg: Alg,
    /// Public key bytes (P-256 uncompressed point, or Ed25519 32 bytes).
    pub public_key: Vec<u8>,
    /// PKCS#8 private key sealed with AES-256-GCM under the KEK: nonce || ciphertext || tag.
    pub sealed_private_key: Vec<u8>,
    /// When it was generated and first published.
    pub created_at: Timestamp,
    /// When it starts signing.
    pub activates_at: Timestamp,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}
