//! The set of signing keys and their schedule.
//!
//! Keys are ordered by `(activates_at, created_at, kid)`. At time `now`:
//! - the **active** key is the last key in that order with `activates_at <= now`;
//!   it is the only one that signs;
//! - a key after the active one is **next**: published, not yet signing;
//! - a key before the active one is **retired** from the moment its successor
//!   activated, and stays published until `retired_at + MAX_TOKEN_LIFETIME +
//!   CLOCK_SKEW`, after which every token it signed has expired and it is
//!   **expired** (no longer published).
//!
//! INVARIANT (published before signing): a key is in the JWKS from its
//! `created_at`, and `activates_at >= created_at`, so no relying party can meet a
//! signature by a key the JWKS has never shown.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use warrant_core::keys::{Alg, SigningKeyRecord};
use warrant_core::time::{CLOCK_SKEW, MAX_TOKEN_LIFETIME, Timestamp};

use crate::error::KeyError;
use crate::kek::Kek;

fn aad(kid: &str, alg: Alg) -> Vec<u8> {
    format!("warrant/signing-key/v1|{}|{kid}", alg.as_str()).into_bytes()
}

enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A key that can sign. Its private half never leaves this crate.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    signer: Signer,
}

impl SigningKey {
    /// The key id, for the JWS header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm, for the JWS header. It comes from the key, never from input.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Signs `message` (a JWS signing input), returning the JWS signature bytes
    /// (`r || s` for ES256, 64 bytes for EdDSA).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.signer {
            Signer::Es256(k) => {
                let mut sig = k
                    .sign(&SystemRandom::new(), message)
                    .map_err(|_| KeyError::Crypto("signing"))?
                    .as_ref()
                    .to_vec();
                // One valid encoding per token: the low-s twin.
                crate::ecdsa::normalize_p256(&mut sig);
                Ok(sig)
            }
            Signer::EdDsa(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A public key as published in the JWKS (RFC 7517, RFC 7518 §6.2, RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    /// `EC` or `OKP`.
    pub kty: &'static str,
    /// `P-256` or `Ed25519`.
    pub crv: &'static str,
    /// Public x coordinate (or the Ed25519 key), base64url.
    pub x: String,
    /// Public y coordinate for EC keys, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Key id.
    pub kid: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// `ES256` or `EdDSA`.
    pub alg: &'static str,
}

/// A JWK set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwks {
    /// The published keys, the active key first.
    pub keys: Vec<Jwk>,
}

fn jwk_parts(
    alg: Alg,
    public_key: &[u8],
) -> Option<(&'static str, &'static str, String, Option<String>)> {
    match alg {
        Alg::Es256 => {
            // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
            if public_key.len() != 65 || public_key[0] != 4 {
                return None;
            }
            Some((
                "EC",
                "P-256",
                URL_SAFE_NO_PAD.encode(&public_key[1..33]),
                Some(URL_SAFE_NO_PAD.encode(&public_key[33..])),
            ))
        }
        Alg::EdDsa => (public_key.len() == 32)
            .then(|| ("OKP", "Ed25519", URL_SAFE_NO_PAD.encode(public_key), None)),
    }
}

/// The RFC 7638 thumbprint of a public key: the key id warrant gives it, so a kid
/// can be recomputed from the JWKS by anyone.
fn thumbprint(alg: Alg, public_key: &[u8]) -> Option<String> {
    let (kty, crv, x, y) = jwk_parts(alg, public_key)?;
    // Members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = match y {
        Some(y) => format!(r#"{{"crv":"{crv}","kty":"{kty}","x":"{x}","y":"{y}"}}"#),
        None => format!(r#"{{"crv":"{crv}","kty":"{kty}","x":"{x}"}}"#),
    };
    Some(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes())))
}

/// Generates a key of `alg`, sealed under `kek`, published from `created_at` and
/// signing from `activates_at` (clamped to be no earlier than `created_at`).
pub fn generate_key(
    alg: Alg,
    kek: &Kek,
    created_at: Timestamp,
    activates_at: Timestamp,
) -> Result<SigningKeyRecord, KeyError> {
    let rng = SystemRandom::new();
    let (pkcs8, public_key) = match alg {
        Alg::Es256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| KeyError::Crypto("generating an ES256 key"))?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                .map_err(|_| KeyError::Crypto("parsing a new ES256 key"))?;
            let public = pair.public_key().as_ref().to_vec();
            (zeroize::Zeroizing::new(doc.as_ref().to_vec()), public)
        }
        Alg::EdDsa => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| KeyError::Crypto("generating an Ed25519 key"))?;
            let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| KeyError::Crypto("parsing a new Ed25519 key"))?;
            let public = pair.public_key().as_ref().to_vec();
            (zeroize::Zeroizing::new(doc.as_ref().to_vec()), public)
        }
    };
    let kid = thumbprint(alg, &public_key).ok_or(KeyError::Crypto("encoding a new public key"))?;
    let sealed_private_key = kek.seal(&aad(&kid, alg), &pkcs8)?;
    Ok(SigningKeyRecord {
        kid,
        alg,
        public_key,
        sealed_private_key,
        created_at,
        activates_at: activates_at.max(created_at),
    })
}

/// Where a key is in its life at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, will sign from `activates_at`.
    Next,
    /// Published and signing.
    Active,
    /// Published so tokens it signed still verify; no longer signs.
    Retired,
    /// No longer published: every token it signed has expired.
    Expired,
}

/// A key's public facts at some time, for `warrant keys list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: Alg,
    /// State at the time asked.
    pub state: KeyState,
    /// When it was generated and published.
    pub created_at: Timestamp,
    /// When it starts (or started) signing.
    pub activates_at: Timestamp,
    /// When a later key took over signing, if one has.
    pub retired_at: Option<Timestamp>,
    /// When it leaves the JWKS, if it is retired.
    pub published_until: Option<Timestamp>,
}

struct Loaded {
    record: SigningKeyRecord,
    jwk: Jwk,
    key: SigningKey,
}

/// Every signing key, opened, in schedule order.
pub struct KeySet {
    keys: Vec<Loaded>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.key))
            .finish()
    }
}

impl KeySet {
    /// Opens every record with `kek`. Keys are parsed once here, never per token.
    pub fn open(records: Vec<SigningKeyRecord>, kek: &Kek) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(records.len());
        for record in records {
            let pkcs8 = kek
                .open(&aad(&record.kid, record.alg), &record.sealed_private_key)
                .ok_or_else(|| KeyError::Unseal {
                    kid: record.kid.clone(),
                })?;
            let corrupt = || KeyError::Corrupt {
                kid: record.kid.clone(),
                alg: record.alg.as_str(),
            };
            let signer = match record.alg {
                Alg::Es256 => Signer::Es256(
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                        .map_err(|_| corrupt())?,
                ),
                Alg::EdDsa => {
                    Signer::EdDsa(Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| corrupt())?)
                }
            };
            let derived_public = match &signer {
                Signer::Es256(k) => k.public_key().as_ref().to_vec(),
                Signer::EdDsa(k) => k.public_key().as_ref().to_vec(),
            };
            // The stored public half must be the private half's: a row whose public
            // key was swapped would otherwise publish a key that is not ours.
            if derived_public != record.public_key {
                return Err(corrupt());
            }
            let (kty, crv, x, y) = jwk_parts(record.alg, &record.public_key).ok_or_else(corrupt)?;
            let jwk = Jwk {
                kty,
                crv,
                x,
                y,
                kid: record.kid.clone(),
                use_: "sig",
                alg: record.alg.as_str(),
            };
            let key = SigningKey {
                kid: record.kid.clone(),
                alg: record.alg,
                signer,
            };
            keys.push(Loaded { record, jwk, key });
        }
        keys.sort_by(|a, b| {
            (a.record.activates_at, a.record.created_at, &a.record.kid).cmp(&(
                b.record.activates_at,
                b.record.created_at,
                &b.record.kid,
            ))
        });
        Ok(Self { keys })
    }

    /// Index of the active key at `now`.
    fn active_index(&self, now: Timestamp) -> Option<usize> {
        self.keys.iter().rposition(|k| k.record.activates_at <= now)
    }

    /// The key that signs at `now`, if any key has activated.
    pub fn active(&self, now: Timestamp) -> Option<&SigningKey> {
        self.active_index(now).map(|i| &self.keys[i].key)
    }

    /// Every key's state at `now`, in schedule order.
    pub fn status(&self, now: Timestamp) -> Vec<KeyStatus> {
        let active = self.active_index(now);
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let retired_at = match active {
                    Some(a) if i < a => Some(self.keys[i + 1].record.activates_at),
                    _ => None,
                };
                let published_until = retired_at.map(|r| r + MAX_TOKEN_LIFETIME + CLOCK_SKEW);
                let state = match (active, published_until) {
                    (Some(a), _) if i == a => KeyState::Active,
                    (_, Some(until)) if now >= until => KeyState::Expired,
                    (Some(a), Some(_)) if i < a => KeyState::Retired,
                    _ => KeyState::Next,
                };
                KeyStatus {
                    kid: k.record.kid.clone(),
                    alg: k.record.alg,
                    state,
                    created_at: k.record.created_at,
                    activates_at: k.record.activates_at,
                    retired_at,
                    published_until,
                }
            })
            .collect()
    }

    /// The JWKS at `now`: active key first, then next keys, then retired keys
    /// whose tokens may still be live.
    pub fn jwks(&self, now: Timestamp) -> Jwks {
        let status = self.status(now);
        let rank = |s: KeyState| match s {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Retired => 2,
            KeyState::Expired => 3,
        };
        let mut published: Vec<(usize, &Jwk)> = self
            .keys
            .iter()
            .zip(&status)
            .filter(|(_, s)| s.state != KeyState::Expired)
            .map(|(k, s)| (rank(s.state), &k.jwk))
            .collect();
        published.sort_by_key(|(r, _)| *r);
        Jwks {
            keys: published.into_iter().map(|(_, j)| j.clone()).collect(),
        }
    }

    /// Whether there is a key that signs now or will sign later.
    pub fn has_current_or_next(&self, now: Timestamp) -> bool {
        self.status(now)
            .iter()
            .any(|s| matches!(s.state, KeyState::Active | KeyState::Next))
    }

    /// Whether any key exists.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests;
