//! Attested identity: evidence, selector matching, instances, identity tokens.
//!
//! An attestor turns what it observed (kernel peer credentials, a verified
//! platform JWT, a redeemed join token) into [`Evidence`]. Evidence is matched
//! against every agent's selectors of that attestor ([`Evidence::matches`]); the
//! one agent that matches gets an [`Instance`] whose id is derived from the
//! attested facts ([`Evidence::instance_id`]), so the same process, pod or join
//! keeps one identity across refreshes.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::agent::Agent;
use crate::name::AgentName;
pub use crate::selector::claim_path;
use crate::selector::{Selector, SelectorKind};
use crate::time::Timestamp;
use crate::trust_domain::TrustDomain;

/// How an instance proved what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attestor {
    /// Kernel peer credentials and the executable, on the agent socket.
    Unix,
    /// A platform JWT from a trusted issuer.
    Oidc,
    /// A one-time join token.
    Join,
}

impl Attestor {
    /// The name used in selectors, policies (`context.attestor`) and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unix => "unix",
            Self::Oidc => "oidc",
            Self::Join => "join",
        }
    }

    /// The selector kinds this attestor proves.
    pub fn selector_kinds(self) -> &'static [SelectorKind] {
        match self {
            Self::Unix => &[SelectorKind::Unix],
            Self::Oidc => &[SelectorKind::Oidc, SelectorKind::K8s],
            Self::Join => &[],
        }
    }

    /// Parses `unix`, `oidc` or `join`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unix" => Some(Self::Unix),
            "oidc" => Some(Self::Oidc),
            "join" => Some(Self::Join),
            _ => None,
        }
    }
}

impl fmt::Display for Attestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the unix attestor observed about the connecting process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFacts {
    /// Peer uid (`SO_PEERCRED`).
    pub uid: u32,
    /// Peer gid.
    pub gid: u32,
    /// The uid's user name, if it has one.
    pub user: Option<String>,
    /// The gid's group name, if it has one.
    pub group: Option<String>,
    /// Peer pid.
    pub pid: u32,
    /// The process's start time (clock ticks since boot), read before and after.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id`, so pid + start time is unique across reboots.
    pub boot_id: String,
    /// The executable, resolved from `/proc/<pid>/exe`.
    pub path: String,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// Its cgroup v2 path (`/proc/<pid>/cgroup`), when the kernel put it
    /// there for it: `None` when the process's own uid may move processes
    /// into that cgroup (a delegated subtree, such as a user's own systemd
    /// units), since then the process could have chosen it.
    pub cgroup: Option<String>,
}

/// What the OIDC attestor verified.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcFacts {
    /// The configured provider whose keys verified the token.
    pub provider: String,
    /// `iss`.
    pub iss: String,
    /// `sub`.
    pub sub: String,
    /// Every claim of the verified token.
    pub claims: Map<String, Value>,
}

/// The claim path behind `k8s:ns`: the nested claim `namespace` of the
/// claim `kubernetes.io`, exactly (never a top-level claim literally named
/// `kubernetes.io.namespace`).
pub const K8S_NAMESPACE: &[&str] = &["kubernetes.io", "namespace"];
/// `k8s:sa`.
pub const K8S_SERVICE_ACCOUNT: &[&str] = &["kubernetes.io", "serviceaccount", "name"];
/// `k8s:pod`.
pub const K8S_POD: &[&str] = &["kubernetes.io", "pod", "name"];
/// The pod's uid: an instance per pod.
pub const K8S_POD_UID: &[&str] = &["kubernetes.io", "pod", "uid"];

impl OidcFacts {
    /// The claim at a path of names, one per nesting level, exactly.
    pub fn claim<S: AsRef<str>>(&self, path: &[S]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut cur = self.claims.get(first.as_ref())?;
        for name in rest {
            cur = cur.as_object()?.get(name.as_ref())?;
        }
        Some(cur)
    }
}

/// What an attestor established, before any agent is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// From the agent socket.
    Unix(UnixFacts),
    /// From a verified platform JWT.
    Oidc(OidcFacts),
    /// From a redeemed join token (the token names its agent).
    Join {
        /// The join token's public id.
        token_id: String,
    },
    /// From a valid identity token of a join instance, presented to renew it:
    /// the instance keeps its id.
    Renewal {
        /// The instance being renewed.
        instance: InstanceId,
        /// What was attested when it joined.
        evidence: String,
    },
}

fn value_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        Value::Array(items) => items.iter().any(|i| value_matches(i, want)),
        _ => false,
    }
}

impl Evidence {
    /// Which attestor produced it.
    pub fn attestor(&self) -> Attestor {
        match self {
            Self::Unix(_) => Attestor::Unix,
            Self::Oidc(_) => Attestor::Oidc,
            Self::Join { .. } | Self::Renewal { .. } => Attestor::Join,
        }
    }

    /// Whether one selector holds for this evidence. Selectors of another
    /// attestor never hold.
    pub fn satisfies(&self, s: &Selector) -> bool {
        let want = s.value();
        match (self, s.kind()) {
            (Self::Unix(u), SelectorKind::Unix) => match s.key() {
                "uid" => u.uid.to_string() == want,
                "gid" => u.gid.to_string() == want,
                "user" => u.user.as_deref() == Some(want),
                "group" => u.group.as_deref() == Some(want),
                "path" => u.path == want,
                "sha256" => u.sha256 == want,
                "cgroup" => u.cgroup.as_deref() == Some(want),
                "systemd_unit" => {
                    u.cgroup
                        .as_deref()
                        .and_then(crate::selector::systemd_unit_of)
                        == Some(want)
                }
                "container" => {
                    u.cgroup.as_deref().and_then(crate::selector::container_of) == Some(want)
                }
                _ => false,
            },
            (Self::Oidc(o), SelectorKind::Oidc) => match s.key() {
                "provider" => o.provider == want,
                "iss" => o.iss == want,
                "sub" => o.sub == want,
                k => claim_path(k)
                    .and_then(|path| o.claim(&path))
                    .is_some_and(|v| value_matches(v, want)),
            },
            (Self::Oidc(o), SelectorKind::K8s) => {
                let path = match s.key() {
                    "ns" => K8S_NAMESPACE,
                    "sa" => K8S_SERVICE_ACCOUNT,
                    "pod" => K8S_POD,
                    _ => return false,
                };
                o.claim(path).is_some_and(|v| value_matches(v, want))
            }
            _ => false,
        }
    }

    /// Whether `agent` matches: it has at least one selector this attestor
    /// proves, and every one of them holds. An agent with none is never chosen
    /// by this attestor (no selectors must not mean "anyone"). For a platform
    /// token, the agent must also name the trust provider it trusts
    /// (`oidc:provider=<name>`): the same namespace and service account in a
    /// dev cluster is not the prod agent.
    pub fn matches(&self, agent: &Agent) -> bool {
        if matches!(self, Self::Oidc(_))
            && !agent
                .selectors
                .iter()
                .any(|s| s.kind() == SelectorKind::Oidc && s.key() == "provider")
        {
            return false;
        }
        let kinds = self.attestor().selector_kinds();
        let mut relevant = agent
            .selectors
            .iter()
            .filter(|s| kinds.contains(&s.kind()))
            .peekable();
        relevant.peek().is_some() && relevant.all(|s| self.satisfies(s))
    }

    /// The instance id for `agent`: a hash of the facts that identify one
    /// execution (boot + pid + start time; the pod uid, else issuer + subject;
    /// the join token), so refreshes keep it and another execution gets another.
    pub fn instance_id(&self, agent: &AgentName) -> InstanceId {
        let facts = match self {
            Self::Unix(u) => format!("unix|{}|{}|{}", u.boot_id, u.pid, u.start_time),
            Self::Oidc(o) => match o.claim(K8S_POD_UID).and_then(Value::as_str) {
                Some(uid) => format!("k8s-pod|{}|{uid}", o.iss),
                None => format!("oidc|{}|{}", o.iss, o.sub),
            },
            Self::Join { token_id } => format!("join|{token_id}"),
            Self::Renewal { instance, .. } => return instance.clone(),
        };
        let digest = Sha256::digest(format!("warrant/instance/v1|{agent}|{facts}").as_bytes());
        InstanceId(hex::encode(&digest[..12]))
    }

    /// A one-line description for operators: never a raw token.
    pub fn summary(&self) -> String {
        match self {
            Self::Unix(u) => {
                let mut s = format!(
                    "uid={} gid={} pid={} exe={} sha256={}",
                    u.uid, u.gid, u.pid, u.path, u.sha256
                );
                if let Some(c) = &u.cgroup {
                    s.push_str(&format!(" cgroup={c}"));
                }
                s.chars().filter(|c| !c.is_control()).take(1024).collect()
            }
            Self::Oidc(o) => {
                let mut s = format!("provider={} iss={} sub={}", o.provider, o.iss, o.sub);
                if let Some(pod) = o.claim(K8S_POD).and_then(Value::as_str) {
                    s.push_str(&format!(" pod={pod}"));
                }
                s.chars().filter(|c| !c.is_control()).take(512).collect()
            }
            Self::Join { token_id } => format!("join token {token_id}"),
            Self::Renewal { evidence, .. } => evidence.clone(),
        }
    }
}

/// An instance id: 24 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// Wraps a stored id.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `spiffe://<trust-domain>/agent/<name>/<instance-id>`.
pub fn spiffe_id(td: &TrustDomain, agent: &AgentName, instance: &InstanceId) -> String {
    format!("spiffe://{td}/agent/{agent}/{instance}")
}

/// One attested execution of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its id.
    pub id: InstanceId,
    /// Its agent.
    pub agent: AgentName,
    /// How it attested.
    pub attestor: Attestor,
    /// What was attested, summarised (never a raw token).
    pub evidence: String,
    /// First attestation.
    pub first_seen: Timestamp,
    /// Latest attestation.
    pub last_seen: Timestamp,
    /// When its latest identity token expires.
    pub expires_at: Timestamp,
}

/// The prefix of every join token, so secret scanners can recognise one.
pub const JOIN_TOKEN_PREFIX: &str = "wjn_";

bearer_secret!(
    /// A raw join token. Never logged, never serialised.
    JoinTokenSecret,
    JOIN_TOKEN_PREFIX
);

/// A join token as the store keeps it (hash only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// Public id (`jt_...`).
    pub id: String,
    /// SHA-256 of the token.
    #[serde(skip)]
    pub token_hash: [u8; 32],
    /// The agent it admits.
    pub agent: AgentName,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// Until when it may be redeemed.
    pub expires_at: Timestamp,
    /// When it was redeemed, if it was.
    pub redeemed_at: Option<Timestamp>,
}

/// The claims of an identity token (JWT-SVID compatible).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityClaims {
    /// The broker's issuer URL.
    pub iss: String,
    /// The SPIFFE ID.
    pub sub: String,
    /// Exactly one audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Unique id.
    pub jti: String,
    /// The agent's name.
    pub agent: String,
    /// The agent's environment.
    pub env: String,
    /// How the instance attested.
    pub attestor: Attestor,
}

/// The `typ` of identity tokens. JWT-SVID allows only `JWT` or `JOSE`; task
/// tokens are `at+jwt` (RFC 9068), so the two kinds never pass for each other.
pub const IDENTITY_TOKEN_TYP: &str = "JWT";

#[cfg(test)]
mod tests;
