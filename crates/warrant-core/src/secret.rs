//! Stored secrets: names, the value type, and the record the store keeps.
//!
//! A secret's value is a [`SecretValue`]: it prints as `[redacted]`, is not
//! `Serialize`, is wiped on drop, and [`SecretValue::expose`] is the one way
//! to read it (grep for it). The store keeps only [`SecretRecord`]s, whose
//! value is sealed (warrant-token); this crate never sees a key.
//!
//! A secret is shared (owner `None`) or belongs to one user (`--for-user`),
//! for routes that inject per-user downstream credentials.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::time::Timestamp;

/// The longest secret value accepted.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret's name: 1 to 64 characters of lower-case letters, digits, `-`,
/// `_` and `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

/// Why a secret name or owner was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretNameError {
    /// The name has the wrong shape.
    #[error(
        "secret name `{0}` is not valid: use 1 to 64 lower-case letters, digits, `-`, `_` or `.`, starting with a letter or digit"
    )]
    Name(String),
    /// The owner is not an issuer-qualified user id (the text says why).
    #[error("{0}")]
    Owner(String),
}

impl SecretName {
    /// Parses a name.
    pub fn new(s: impl Into<String>) -> Result<Self, SecretNameError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(Self(s))
        } else {
            Err(SecretNameError::Name(s.escape_debug().take(100).collect()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretName {
    type Error = SecretNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<SecretName> for String {
    fn from(n: SecretName) -> Self {
        n.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a user a secret belongs to (the plain subject; a `user:` prefix,
/// as task tokens write it, is removed).
pub fn secret_owner(user: &str) -> Result<String, SecretNameError> {
    let u = user.strip_prefix("user:").unwrap_or(user);
    crate::user::UserId::parse(u)
        .map(|id| id.to_string())
        .map_err(|e| SecretNameError::Owner(e.to_string()))
}

/// A secret's value. `Debug` and `Display` print `[redacted]`; not
/// `Serialize`; wiped on drop.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The value. The one place it can be read: into a sealed record, an
    /// outbound request, or a spawned server's environment.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    /// From a JSON string (the admin API's wire form).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        Ok(Self::new(s.as_bytes().to_vec()))
    }
}

/// One stored secret: the current version of `name` for `owner`, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// The name.
    pub name: SecretName,
    /// The user it belongs to; `None` for a shared secret.
    pub owner: Option<String>,
    /// 1 at creation, +1 per rotation.
    pub version: u32,
    /// What it is for.
    pub description: Option<String>,
    /// The data key, sealed under the KEK.
    pub wrapped_key: Vec<u8>,
    /// The value, sealed under the data key.
    pub ciphertext: Vec<u8>,
    /// Who stored the first version.
    pub created_by: String,
    /// When the first version was stored.
    pub created_at: Timestamp,
    /// When the current version was stored.
    pub updated_at: Timestamp,
    /// When a request last used it, if ever (recorded lazily).
    pub last_used_at: Option<Timestamp>,
}

impl SecretRecord {
    /// The associated data both seals bind to: the name, the owner and the
    /// version, so a sealed value moved to another row or version fails to open.
    pub fn aad(name: &SecretName, owner: Option<&str>, version: u32) -> Vec<u8> {
        let mut a = b"warrant-secret-v1\0".to_vec();
        a.extend_from_slice(name.as_str().as_bytes());
        a.push(0);
        a.extend_from_slice(owner.unwrap_or("").as_bytes());
        a.push(0);
        a.extend_from_slice(version.to_string().as_bytes());
        a
    }

    /// How the audit trail and errors name this secret: `name@vN` or
    /// `name[user]@vN`. Never the value.
    pub fn credential_id(&self) -> String {
        match &self.owner {
            Some(o) => format!("{}[{}]@v{}", self.name, o, self.version),
            None => format!("{}@v{}", self.name, self.version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_owners_parse() {
        for ok in ["openai-key", "a", "gh.token_2"] {
            assert!(SecretName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "Upper", "a b", "a/b", &"x".repeat(65)] {
            assert!(SecretName::new(bad).is_err(), "{bad}");
        }
        assert_eq!(secret_owner("user:corp/alice").unwrap(), "corp/alice");
        assert_eq!(
            secret_owner("login.example.org/alice@example.org").unwrap(),
            "login.example.org/alice@example.org"
        );
        for bad in ["", "alice", "user:alice", "corp/a\nb", "/alice"] {
            let e = secret_owner(bad).unwrap_err().to_string();
            assert!(
                e.contains("qualified") || e.contains("subject"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn values_never_print() {
        let v = SecretValue::new(b"sk-live-123".to_vec());
        assert_eq!(format!("{v:?}"), "SecretValue([redacted])");
        assert_eq!(format!("{v}"), "[redacted]");
        let v: SecretValue = serde_json::from_str("\"sk-live-123\"").unwrap();
        assert_eq!(v.expose(), b"sk-live-123");
    }

    #[test]
    fn aad_binds_name_owner_and_version() {
        let n = SecretName::new("k").unwrap();
        let a = SecretRecord::aad(&n, None, 1);
        assert_ne!(a, SecretRecord::aad(&n, None, 2));
        assert_ne!(a, SecretRecord::aad(&n, Some("alice"), 1));
        assert_ne!(
            a,
            SecretRecord::aad(&SecretName::new("k2").unwrap(), None, 1)
        );
    }
}

/// A secret opened for use at the last hop.
#[derive(Debug)]
pub struct Resolved {
    /// `name@vN` (or `name[user]@vN`), for the audit trail.
    pub id: String,
    /// The value.
    pub value: SecretValue,
}
