//! The SPIFFE trust domain this broker issues identities in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A SPIFFE trust domain name, e.g. `example.org`: lower-case letters, digits,
/// `.`, `-` and `_` (SPIFFE ID spec §2.1), at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

/// Why a trust domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "trust domain `{0}` is not valid; use lower-case letters, digits, `.`, `-` and `_` (for example `example.org`)"
)]
pub struct TrustDomainError(String);

impl TrustDomain {
    /// Validates a trust domain.
    pub fn new(s: impl Into<String>) -> Result<Self, TrustDomainError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(s))
        } else {
            Err(TrustDomainError(s.escape_debug().to_string()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrustDomain {
    type Err = TrustDomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = TrustDomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<TrustDomain> for String {
    fn from(t: TrustDomain) -> String {
        t.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domains() {
        assert!(TrustDomain::new("warrant.local").is_ok());
        assert!(TrustDomain::new("example_org-1.test").is_ok());
        for bad in ["", "Example.org", "spiffe://x", "a/b", "a:8080"] {
            assert!(TrustDomain::new(bad).is_err(), "{bad}");
        }
    }
}
