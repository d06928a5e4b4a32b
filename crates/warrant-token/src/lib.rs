//! Signing keys and the key-encryption key.
//!
//! This is the only crate that holds private key material in the clear: it
//! generates signing keys, seals them under the key-encryption key ([`Kek`]) for
//! the store, opens them once at load, signs, and publishes the public halves as
//! a JWKS. It does no IO and is not async: callers hand it records and the time.
//!
//! A key's lifecycle is a pure function of its timestamps and of the keys that
//! follow it (see [`KeySet`]), so every broker sharing a store agrees on which
//! key signs and which are published without coordinating.
//!
//! [`secret`] seals stored secrets (API keys for the egress proxy) the same
//! way: a fresh data key per version, wrapped by the KEK.

mod cache;
mod chain;
pub mod ecdsa;
mod error;
pub mod jwt;
mod kek;
mod keyset;
pub mod secret;
pub mod x509;

pub use cache::VerifiedCache;
pub use chain::AuditChainKey;
pub use error::KeyError;
pub use kek::Kek;
pub use keyset::{Jwk, Jwks, KeySet, KeyState, KeyStatus, SigningKey, generate_key};
