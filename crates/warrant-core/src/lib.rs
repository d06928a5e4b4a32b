//! warrant's vocabulary: the types every other crate speaks.
//!
//! Parse, don't validate: each name, selector and duration here has a fallible
//! constructor, so a value of the type is already known to be well formed. This
//! crate does no IO and is not async; it deliberately knows nothing about HTTP,
//! SQL, Cedar or key material.

/// Defines an opaque bearer secret: `PREFIX` + 64 hex digits of randomness,
/// kept by the store only as its SHA-256, printed as `[redacted]`, not
/// `Serialize`. `expose()` is the one place its value can be read.
macro_rules! bearer_secret {
    ($(#[$doc:meta])* $name:ident, $prefix:expr) => {
        $(#[$doc])*
        pub struct $name(String);

        impl $name {
            /// Builds a token from 32 random bytes.
            pub fn from_random(bytes: [u8; 32]) -> Self {
                Self(format!("{}{}", $prefix, hex::encode(bytes)))
            }

            /// Wraps a token presented by a client.
            pub fn presented(token: &str) -> Self {
                Self(token.to_owned())
            }

            /// The SHA-256 the store keeps. Tokens carry 256 random bits, so a
            /// plain hash is enough; a slow password hash would add only latency.
            pub fn hash(&self) -> [u8; 32] {
                use sha2::Digest as _;
                sha2::Sha256::digest(self.0.as_bytes()).into()
            }

            /// The raw token. The only way to read it: shown once at creation.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[redacted]")
            }
        }
    };
}

pub mod admin;
pub mod agent;
pub mod api;
pub mod approval;
pub mod audit;
pub mod decision;
pub mod discovery;
pub mod identity;
pub mod keys;
pub mod mcp;
pub mod name;
pub mod secret;
pub mod selector;
pub mod task;
pub mod text;
pub mod time;
pub mod trust_domain;
pub mod user;

pub use agent::{Agent, AgentStatus, NewAgent, TrustLevel};
pub use name::{AgentName, EnvName, NameError};
pub use selector::{Selector, SelectorError, SelectorSet};
pub use time::{Timestamp, Ttl};
pub use trust_domain::TrustDomain;
