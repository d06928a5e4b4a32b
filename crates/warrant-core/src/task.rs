//! Task tokens: the credential for one task, for one user, through a chain of agents.
//!
//! A task token (RFC 9068 `at+jwt`) names the user the work is for (`sub`), the
//! agents acting (`act`, the current actor outermost, earlier actors nested
//! inside, RFC 8693 §4.1), what it may do (`scope`), where (`aud`) and until
//! when (`exp`). Every exchange opens a child task of its subject's task; all of
//! them share the `txn` of the first. Each hop can only narrow: [`ScopeSet`] and
//! audience sets shrink, `exp` never grows, the chain never revisits an agent.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The most scopes a request or token may carry.
pub const MAX_SCOPES: usize = 64;
/// The longest scope token.
pub const MAX_SCOPE_LEN: usize = 128;

/// The `typ` of task tokens (RFC 9068).
pub const TASK_TOKEN_TYP: &str = "at+jwt";

/// Token type URIs (RFC 8693 §3).
pub mod token_type {
    /// An OAuth access token (a warrant task token).
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// A JWT (a warrant identity token, or a user's token).
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    /// An OpenID Connect ID token (a user's token).
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Too many.
    #[error("at most {MAX_SCOPES} scopes may be requested")]
    TooMany,
    /// A token has characters RFC 6749 §3.3 does not allow, or is too long.
    #[error(
        "scope `{0}` is not valid: scopes are printable ASCII without spaces, quotes or backslashes, at most 128 characters"
    )]
    Invalid(String),
}

/// A set of scopes (RFC 6749 §3.3: space-delimited, case-sensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(BTreeSet<String>);

impl ScopeSet {
    /// Parses a space-delimited scope string.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for item in s.split(' ').filter(|i| !i.is_empty()) {
            let ok = item.len() <= MAX_SCOPE_LEN
                && item
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if !ok {
                return Err(ScopeError::Invalid(
                    item.chars().take(40).flat_map(char::escape_debug).collect(),
                ));
            }
            set.insert(item.to_owned());
            if set.len() > MAX_SCOPES {
                return Err(ScopeError::TooMany);
            }
        }
        Ok(Self(set))
    }

    /// The scopes in both.
    pub fn intersection(&self, other: &Self) -> Self {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// Whether every scope here is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes here that are not in `other`.
    pub fn beyond(&self, other: &Self) -> Vec<String> {
        self.0.difference(&other.0).cloned().collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<&str> = self.iter().collect();
        f.write_str(&v.join(" "))
    }
}

/// An actor in a delegation chain (RFC 8693 §4.1): the current actor, and
/// inside it the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    /// The actor's SPIFFE ID.
    pub sub: String,
    /// The actor before it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Act>>,
}

impl Act {
    /// The chain, current actor first.
    pub fn chain(&self) -> Vec<&str> {
        let mut out = vec![self.sub.as_str()];
        let mut cur = self.act.as_deref();
        while let Some(a) = cur {
            out.push(&a.sub);
            cur = a.act.as_deref();
        }
        out
    }

    /// A new outermost actor in front of `prior`.
    pub fn push(sub: String, prior: Option<Act>) -> Self {
        Self {
            sub,
            act: prior.map(Box::new),
        }
    }
}

/// The agent name in a warrant SPIFFE ID (`spiffe://td/agent/<name>/<instance>`).
pub fn agent_of(spiffe_id: &str) -> Option<&str> {
    let rest = spiffe_id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/');
    let _td = parts.next()?;
    (parts.next()? == "agent").then_some(())?;
    parts.next()
}

/// The claims of a task token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskClaims {
    /// The broker.
    pub iss: String,
    /// The user (`user:<subject>`), or the agent's SPIFFE ID when it acts for itself.
    pub sub: String,
    /// Where it may be used.
    pub aud: Vec<String>,
    /// What it may do, space-delimited.
    pub scope: String,
    /// Who acts, current actor first (absent when an agent acts for itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
    /// The acting agent's name.
    pub client_id: String,
    /// This task.
    pub task: String,
    /// The task it was delegated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The tree it belongs to.
    pub txn: String,
    /// Unique id.
    pub jti: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Who may act for the user (RFC 8693 §4.4), as the user's token said:
    /// carried to every child token, so every hop is checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<serde_json::Value>,
}

impl TaskClaims {
    /// Delegation depth: how many agents act (0 when an agent acts for itself).
    pub fn depth(&self) -> usize {
        self.act.as_ref().map_or(0, |a| a.chain().len())
    }
}

/// A task as the store keeps it (for revocation and the trace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id.
    pub task: String,
    /// Its token's `jti`.
    pub jti: String,
    /// Parent task.
    pub parent: Option<String>,
    /// Transaction.
    pub txn: String,
    /// The acting agent.
    pub agent: String,
    /// The acting instance.
    pub instance: String,
    /// The token's `sub`.
    pub subject: String,
    /// Scopes granted.
    pub scope: String,
    /// Audiences granted.
    pub audience: Vec<String>,
    /// Delegation depth.
    pub depth: u32,
    /// Issued.
    pub issued_at: Timestamp,
    /// Expires.
    pub expires_at: Timestamp,
    /// Revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// The user's groups as the user issuer asserted them at the first hop,
    /// inherited by every descendant, so policy sees them at any depth.
    #[serde(default)]
    pub groups: Vec<String>,
    /// How the acting instance was attested (`unix`, `oidc`, `join`), so a
    /// policy at the edge sees `context.attestor` without another read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestor: Option<String>,
}

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "id")]
pub enum RevokeTarget {
    /// The task whose token has this `jti`, and its descendants.
    Jti(String),
    /// A task and its descendants.
    Task(String),
    /// Every task of a transaction.
    Txn(String),
    /// Every task an instance acted in, and their descendants; the instance gets nothing more.
    Instance(String),
    /// Every task an agent acted in, and their descendants; the agent is disabled.
    Agent(String),
}

impl fmt::Display for RevokeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jti(v) => write!(f, "jti {v}"),
            Self::Task(v) => write!(f, "task {v}"),
            Self::Txn(v) => write!(f, "txn {v}"),
            Self::Instance(v) => write!(f, "instance {v}"),
            Self::Agent(v) => write!(f, "agent {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_narrow() {
        let parent = ScopeSet::parse("tickets:read llm:chat").unwrap();
        let child = ScopeSet::parse("tickets:read").unwrap();
        assert!(child.is_subset(&parent));
        let wide = ScopeSet::parse("tickets:read tickets:write").unwrap();
        assert!(!wide.is_subset(&parent));
        assert_eq!(wide.beyond(&parent), vec!["tickets:write"]);
        assert_eq!(ScopeSet::parse("b  a").unwrap().to_string(), "a b");
        assert!(ScopeSet::parse("a\"b").is_err());
        assert!(ScopeSet::parse("caf\u{e9}").is_err());
        let many: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
        assert_eq!(ScopeSet::parse(&many.join(" ")), Err(ScopeError::TooMany));
    }

    #[test]
    fn act_chains_nest_current_actor_first() {
        let a = Act::push("spiffe://td/agent/orch/1".into(), None);
        let b = Act::push("spiffe://td/agent/sub/2".into(), Some(a));
        assert_eq!(
            b.chain(),
            vec!["spiffe://td/agent/sub/2", "spiffe://td/agent/orch/1"]
        );
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["act"]["sub"], "spiffe://td/agent/orch/1");
        assert!(json["act"].get("act").is_none());
        assert_eq!(agent_of("spiffe://td/agent/orch/1"), Some("orch"));
        assert_eq!(agent_of("spiffe://td/user/orch/1"), None);
    }
}

/// A task token checked for one use at the edge.
#[derive(Debug, Clone)]
pub struct TaskUse {
    /// What the token says.
    pub claims: TaskClaims,
    /// The acting agent, as the inventory has it now.
    pub agent: crate::agent::Agent,
    /// The acting instance.
    pub instance: String,
    /// How that instance was attested.
    pub attestor: String,
    /// The user's groups (empty when the agent acts for itself).
    pub groups: Vec<String>,
}

/// Why a task token is not accepted at the edge.
#[derive(Debug, Clone)]
pub enum UseError {
    /// Missing, malformed or forged (nothing in it can be believed): a 401
    /// saying which.
    Invalid(String),
    /// A token warrant issued (its signature verified) that may not be used
    /// now: expired, not yet valid, for another audience, its task revoked
    /// or unknown, an agent or instance of its chain no longer allowed. A
    /// 401 saying which; what the token says attributes the refusal, so the
    /// audit trail shows who kept trying.
    Refused {
        /// Why, for the caller and the record.
        why: String,
        /// What the token says.
        claims: Box<TaskClaims>,
    },
    /// The store could not be read.
    Unavailable,
}
