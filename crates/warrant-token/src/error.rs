//! Errors of key handling. None of them carries key material.

/// What went wrong with a key or the key-encryption key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `WARRANT_KEK` or the kek file does not hold 32 bytes of base64.
    #[error(
        "the key-encryption key is not valid: {0}; it must be 32 random bytes in base64 (generate one with `openssl rand -base64 32`)"
    )]
    BadKek(&'static str),
    /// A sealed key did not open: the KEK differs from the one that sealed it, or
    /// the stored bytes were altered or moved to another key's row.
    #[error(
        "signing key `{kid}` cannot be decrypted with this key-encryption key; WARRANT_KEK (or <data-dir>/kek) differs from the one in use when the key was created, or the stored key was altered"
    )]
    Unseal {
        /// The key that failed.
        kid: String,
    },
    /// A decrypted key is not a valid key of its algorithm.
    #[error("signing key `{kid}` is corrupt: its private key does not parse as {alg}")]
    Corrupt {
        /// The key that failed.
        kid: String,
        /// Its algorithm.
        alg: &'static str,
    },
    /// The system's random generator or the crypto library failed.
    #[error("the cryptographic library failed while {0}")]
    Crypto(&'static str),
}
