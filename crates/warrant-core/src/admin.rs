//! Administrative roles and admin bearer tokens.
//!
//! An admin token is an opaque random string shown once at creation; the store
//! keeps only its SHA-256. The raw token lives in [`AdminTokenSecret`], whose
//! `Debug`/`Display` print `[redacted]` and which is not `Serialize`: the one
//! place that reveals it is [`AdminTokenSecret::expose`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What an admin principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read inventory, keys, policy status and the audit trail; change nothing.
    Auditor,
    /// Read, and decide pending approvals (approvals arrive with a later issue).
    Approver,
}

/// A capability an admin endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read-only access.
    Read,
    /// Changes to inventory, keys, tokens, policy.
    Write,
    /// Deciding approvals.
    Approve,
}

impl Role {
    /// The role as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
            Self::Approver => "approver",
        }
    }

    /// Whether the role grants `p`.
    pub fn allows(self, p: Permission) -> bool {
        matches!(
            (self, p),
            (Self::Admin, _)
                | (Self::Auditor, Permission::Read)
                | (Self::Approver, Permission::Read | Permission::Approve)
        )
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "auditor" => Ok(Self::Auditor),
            "approver" => Ok(Self::Approver),
            _ => Err(format!(
                "role `{}` is unknown; use admin, auditor or approver",
                s.escape_debug()
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix of every admin token, so secret scanners can recognise one.
pub const ADMIN_TOKEN_PREFIX: &str = "wadm_";

bearer_secret!(
    /// A raw admin bearer token. Never logged, never serialised.
    AdminTokenSecret,
    ADMIN_TOKEN_PREFIX
);

/// An admin token as the store keeps it (hash only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTokenRecord {
    /// Public id (`adt_...`), used to list and revoke.
    pub id: String,
    /// SHA-256 of the token; not serialised to clients.
    #[serde(skip)]
    pub token_hash: [u8; 32],
    /// What it may do.
    pub role: Role,
    /// A label to tell tokens apart.
    pub name: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// The person who holds it (`user:<namespace>/<subject>`, as users
    /// are recorded), if named: what separation of duties compares with
    /// the user a request is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

impl AdminTokenRecord {
    /// Whether the token is usable at `now`.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert!(Role::Admin.allows(Permission::Write));
        assert!(Role::Auditor.allows(Permission::Read));
        assert!(!Role::Auditor.allows(Permission::Write));
        assert!(!Role::Auditor.allows(Permission::Approve));
        assert!(Role::Approver.allows(Permission::Approve));
        assert!(!Role::Approver.allows(Permission::Write));
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .contains("admin, auditor or approver")
        );
    }

    #[test]
    fn secret_is_redacted() {
        let t = AdminTokenSecret::from_random([7; 32]);
        assert!(t.expose().starts_with("wadm_"));
        assert_eq!(t.expose().len(), 5 + 64);
        assert_eq!(format!("{t}"), "[redacted]");
        assert!(!format!("{t:?}").contains("0707"));
        assert_eq!(t.hash(), AdminTokenSecret::presented(t.expose()).hash());
    }
}
