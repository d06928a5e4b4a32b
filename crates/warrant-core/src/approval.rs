//! Step-up approval: a request that a permit marks `@approval("required")`
//! waits for a person.
//!
//! An [`Approval`] covers one exact request, its [`ApprovalSubject`]: what
//! is done (a tool call with a digest of its canonical arguments, an HTTP
//! request with its method, canonical path, query and a digest of its body,
//! or a token exchange with its audiences and scopes) and for whom (agent,
//! instance, user, chain, task, transaction). Its [`binding`] is a digest of
//! all of that: the same call asked again finds the same approval, and any
//! other call (other arguments, another task, another user) finds none.
//! An approval is granted once, used once, and expires.
//!
//! [`binding`]: ApprovalSubject::binding

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admin::Role;
use crate::time::{Timestamp, Ttl};

/// The prefix of every approval id.
pub const APPROVAL_ID_PREFIX: &str = "apr_";

/// The annotation naming who may approve (`approver`, the default, or `admin`).
pub const APPROVAL_ROLE_ANNOTATION: &str = "approval_role";

/// The annotation saying how long a granted approval may wait to be used.
pub const APPROVAL_TTL_ANNOTATION: &str = "approval_ttl";

/// How long a granted approval waits for its use unless a policy says.
pub const DEFAULT_APPROVAL_TTL: Ttl = Ttl::from_secs(600);

/// The `Retry-After` of a pending answer, in seconds.
pub const RETRY_AFTER_SECS: &str = "5";

/// The shortest `@approval_ttl`.
pub const MIN_APPROVAL_TTL: Ttl = Ttl::from_secs(10);

/// The longest `@approval_ttl`.
pub const MAX_APPROVAL_TTL: Ttl = Ttl::from_secs(86_400);

/// What the permits that asked for approval require of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalTerms {
    /// The least role that may decide (`approver` or `admin`).
    pub role: Role,
    /// How long a granted approval stays usable.
    pub ttl: Ttl,
}

impl Default for ApprovalTerms {
    fn default() -> Self {
        Self {
            role: Role::Approver,
            ttl: DEFAULT_APPROVAL_TTL,
        }
    }
}

impl ApprovalTerms {
    /// The stricter of two: `admin` over `approver`, the shorter lifetime.
    pub fn and(self, other: Self) -> Self {
        Self {
            role: if self.role == Role::Admin || other.role == Role::Admin {
                Role::Admin
            } else {
                Role::Approver
            },
            ttl: self.ttl.min(other.ttl),
        }
    }

    /// Whether a principal with `role` may decide.
    pub fn decidable_by(self, role: Role) -> bool {
        match self.role {
            Role::Admin => role == Role::Admin,
            _ => matches!(role, Role::Admin | Role::Approver),
        }
    }

    /// Reads `@approval_role` and `@approval_ttl` values.
    pub fn parse(role: Option<&str>, ttl: Option<&str>) -> Result<Self, String> {
        let mut t = Self::default();
        if let Some(r) = role {
            t.role = match r {
                "approver" => Role::Approver,
                "admin" => Role::Admin,
                other => {
                    return Err(format!(
                        "@approval_role(\"{}\") is not understood; use \"approver\" (the default) or \"admin\"",
                        other.escape_debug()
                    ));
                }
            };
        }
        if let Some(v) = ttl {
            t.ttl = Ttl::from_str(v)
                .map_err(|e| format!("@approval_ttl: {e}"))?
                .within("@approval_ttl", MIN_APPROVAL_TTL, MAX_APPROVAL_TTL)
                .map_err(|e| e.to_string())?;
        }
        Ok(t)
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    /// Waiting for a person.
    Pending,
    /// Granted, not yet used.
    Approved,
    /// Refused by a person.
    Denied,
    /// Granted and spent on its request.
    Used,
    /// Not decided, or not used, in time.
    Expired,
}

impl ApprovalState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
            Self::Expired => "expired",
        }
    }
}

impl FromStr for ApprovalState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "used" => Self::Used,
            "expired" => Self::Expired,
            other => {
                return Err(format!(
                    "approval state `{}` is unknown; use pending, approved, denied, used or expired",
                    other.escape_debug()
                ));
            }
        })
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one request an approval covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSubject {
    /// The Cedar action (`mcp:call_tool`, `http:request`, `token:exchange`, ...).
    pub action: String,
    /// The Cedar resource (`Tool::"server/tool"`, `Route::"r"`, `Audience::"a"`).
    pub resource: String,
    /// What exactly is asked, bound by digest: `{server, tool,
    /// arguments_sha256}`, `{route, method, path, query, body_sha256}` or
    /// `{audiences, scopes}`.
    pub request: Value,
    /// The acting agent.
    pub agent: String,
    /// Its instance.
    pub instance: String,
    /// The user the work is for (`user:<namespace>/<subject>`).
    pub user: Option<String>,
    /// The agents acting, outermost first.
    pub chain: Vec<String>,
    /// The task the request is made under.
    pub task: Option<String>,
    /// Its transaction.
    pub txn: Option<String>,
    /// The digest of the policy set that asked for approval: a policy
    /// change (another role, a shorter lifetime) asks again.
    #[serde(default)]
    pub policy: String,
}

/// Whether a person reading `c` would not see it or would misread what
/// follows it.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
                | 0x200B..=0x200F | 0x2028 | 0x2029 | 0x202A..=0x202E | 0x2060..=0x206F | 0x2800
        | 0x3000 | 0x3164 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0xE0000..=0xE0FFF)
        || c.is_control()
}

/// `s` with every invisible character written `\u{XXXX}`, for a person
/// to read.
pub fn escape_invisible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_invisible(c) {
            out.push_str(&format!("\\u{{{:04X}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `v` holds characters a person reading it would not see or
/// would misread: format and bidirectional controls, zero-width and tag
/// characters, invisible fillers, variation selectors.
pub fn has_invisible(v: &Value) -> bool {
    let bad = |c: char| is_invisible(c) && !matches!(c, '\n' | '\t');
    match v {
        Value::String(s) => s.chars().any(bad),
        Value::Array(a) => a.iter().any(has_invisible),
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.chars().any(bad) || has_invisible(v)),
        _ => false,
    }
}

impl ApprovalSubject {
    /// The subject of the decision request `req`, asking `request`.
    pub fn of(req: &crate::decision::DecisionRequest, request: Value) -> Self {
        Self {
            action: req.action.as_str().to_owned(),
            resource: req.resource.to_string(),
            request,
            agent: req.principal.agent.name.to_string(),
            instance: req.principal.instance.clone(),
            user: req.context.user.as_ref().map(|u| format!("user:{}", u.id)),
            chain: req.context.chain.clone(),
            task: req.context.task.clone(),
            txn: req.context.txn.clone(),
            policy: String::new(),
        }
    }

    /// Who asks, for the per-requester quota: the user the work is for,
    /// else the instance (a fresh task of the same instance is the same
    /// requester).
    pub fn requester(&self) -> String {
        match &self.user {
            Some(u) => u.clone(),
            None => format!("instance:{}", self.instance),
        }
    }

    /// The same request whatever the task and instance: what a person's
    /// refusal covers (a new task token is not a way around a "no").
    pub fn loose_binding(&self) -> String {
        Self {
            task: None,
            txn: None,
            instance: String::new(),
            ..self.clone()
        }
        .binding()
    }

    /// The digest binding an approval to this request (hex SHA-256 of the
    /// subject's canonical JSON).
    pub fn binding(&self) -> String {
        use sha2::Digest as _;
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        hex::encode(sha2::Sha256::digest(crate::mcp::canonical(&v).as_bytes()))
    }
}

/// The hex SHA-256 of a JSON value's canonical form (keys sorted at every
/// level): what tool-call arguments are bound by.
pub fn json_digest(v: &Value) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(crate::mcp::canonical(v).as_bytes()))
}

/// A step-up approval as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// `apr_...`.
    pub id: String,
    /// [`ApprovalSubject::binding`] of `subject`.
    pub binding: String,
    /// The request it covers.
    pub subject: ApprovalSubject,
    /// What an approver is shown besides the subject (a tool call's
    /// canonical arguments, when small enough); not part of the binding.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub shown: Value,
    /// The permits that asked for it.
    pub policies: Vec<String>,
    /// The least role that may decide.
    pub role: Role,
    /// How long it stays usable once granted, in seconds.
    pub ttl_secs: u64,
    /// Where it stands (as stored; see [`Approval::state_at`]).
    pub state: ApprovalState,
    /// When it was asked for.
    pub created_at: Timestamp,
    /// When a pending approval lapses undecided, or a granted one unused.
    pub expires_at: Timestamp,
    /// Who decided it.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<Timestamp>,
    /// Why (as the approver wrote it).
    pub reason: Option<String>,
    /// When it was spent.
    pub used_at: Option<Timestamp>,
}

impl Approval {
    /// The state at `now`: pending or granted past `expires_at` is expired.
    pub fn state_at(&self, now: Timestamp) -> ApprovalState {
        match self.state {
            ApprovalState::Pending | ApprovalState::Approved if now >= self.expires_at => {
                ApprovalState::Expired
            }
            s => s,
        }
    }

    /// The terms it was asked with.
    pub fn terms(&self) -> ApprovalTerms {
        ApprovalTerms {
            role: self.role,
            ttl: Ttl::from_secs(self.ttl_secs),
        }
    }
}

/// What became of a request that needs approval.
#[derive(Debug, Clone)]
pub enum StepUp {
    /// Granted, and spent on this request now: it goes ahead.
    Approved(Approval),
    /// Waiting for a person.
    Pending(Approval),
    /// A person refused it.
    Denied(Approval),
    /// It cannot be asked now (too many pending); the text says why.
    Refused(String),
    /// The store failed; nothing may go ahead.
    Unavailable(String),
}

impl StepUp {
    /// The facts an agent is told about a request that does not go ahead
    /// (`None` when it does): `refused_by`, the approval's id and state,
    /// when it lapses, what to do.
    pub fn refusal(&self) -> Option<(String, Value)> {
        let (message, data) = match self {
            Self::Approved(_) => return None,
            Self::Pending(a) => (
                format!(
                    "approval required: this request waits for a person's approval (approval `{}`, pending until {}); once approved, send the same request again",
                    a.id, a.expires_at
                ),
                serde_json::json!({
                    "refused_by": "approval required",
                    "approval_id": a.id,
                    "approval_state": "pending",
                    "expires_at": a.expires_at,
                    "policies": a.policies,
                    "how_to_get_access": format!("ask an approver to run `warrant approval approve {}`, then send the same request again (it passes once)", a.id),
                }),
            ),
            Self::Denied(a) => (
                format!(
                    "approval denied: approval `{}` was denied{}{}",
                    a.id,
                    a.decided_by
                        .as_deref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default(),
                    a.reason
                        .as_deref()
                        .map(|r| format!(": {}", crate::text::shown(r, 200)))
                        .unwrap_or_default()
                ),
                serde_json::json!({
                    "refused_by": "approval denied",
                    "approval_id": a.id,
                    "approval_state": "denied",
                    "reason": a.reason,
                    "policies": a.policies,
                    "how_to_get_access": format!("the same request is refused until {}; ask an approver why", a.expires_at),
                }),
            ),
            Self::Refused(why) => (
                format!("approval required, but it cannot be asked now: {why}"),
                serde_json::json!({
                    "refused_by": "approval required",
                    "how_to_get_access": why,
                }),
            ),
            Self::Unavailable(_) => (
                "approval required, but the approval store is unavailable; try again later"
                    .to_owned(),
                serde_json::json!({ "refused_by": "store unavailable" }),
            ),
        };
        Some((message, data))
    }
}

/// A person's answer to a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Grant it (once).
    Approve,
    /// Refuse it.
    Deny,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> ApprovalSubject {
        ApprovalSubject {
            action: "mcp:call_tool".into(),
            resource: "Tool::\"fs/delete\"".into(),
            request: serde_json::json!({"server": "fs", "tool": "delete", "arguments_sha256": json_digest(&serde_json::json!({"b": 1, "a": [1, {"y": 2, "x": 1}]}))}),
            agent: "orch".into(),
            instance: "ins_1".into(),
            user: Some("user:acme/alice".into()),
            chain: vec!["orch".into()],
            task: Some("tsk_1".into()),
            txn: Some("txn_1".into()),
            policy: "p1".into(),
        }
    }

    #[test]
    fn the_binding_follows_every_field_and_not_key_order() {
        let s = subject();
        let same = ApprovalSubject {
            request: serde_json::json!({"arguments_sha256": json_digest(&serde_json::json!({"a": [1, {"x": 1, "y": 2}], "b": 1})), "tool": "delete", "server": "fs"}),
            ..s.clone()
        };
        assert_eq!(s.binding(), same.binding());
        let variants = [
            ApprovalSubject {
                task: Some("tsk_2".into()),
                ..s.clone()
            },
            ApprovalSubject {
                user: None,
                ..s.clone()
            },
            ApprovalSubject {
                chain: vec!["orch".into(), "sub".into()],
                ..s.clone()
            },
            ApprovalSubject {
                request: serde_json::json!({"server": "fs", "tool": "delete", "arguments_sha256": json_digest(&serde_json::json!({"b": 2}))}),
                ..s.clone()
            },
            ApprovalSubject {
                instance: "ins_2".into(),
                ..s.clone()
            },
            ApprovalSubject {
                policy: "p2".into(),
                ..s.clone()
            },
        ];
        for v in variants {
            assert_ne!(s.binding(), v.binding(), "{v:?}");
        }
    }

    #[test]
    fn invisible_characters_are_found_anywhere() {
        use serde_json::json;
        assert!(!has_invisible(
            &json!({"to": "acme-supplies", "n": [1, "é ü 漢"]})
        ));
        for hidden in [
            "acme\u{E0049}",
            "a\u{202E}b",
            "x\u{200B}",
            "\u{FEFF}",
            "a\u{3164}",
            "v\u{FE0F}",
            "carol\u{2028}",
            "carol\u{2800}",
            "carol\u{1D173}",
            "ca\u{1BCA0}rol",
        ] {
            assert!(has_invisible(&json!({"to": hidden})), "{hidden:?}");
            assert!(has_invisible(&json!({hidden: 1})), "{hidden:?} as a key");
        }
    }

    #[test]
    fn terms_parse_combine_and_check_roles() {
        let t = ApprovalTerms::parse(Some("admin"), Some("2m")).unwrap();
        assert_eq!((t.role, t.ttl.as_secs()), (Role::Admin, 120));
        assert!(ApprovalTerms::parse(Some("root"), None).is_err());
        assert!(ApprovalTerms::parse(None, Some("1s")).is_err());
        assert!(ApprovalTerms::parse(None, Some("soon")).is_err());
        let both = ApprovalTerms::default().and(t);
        assert_eq!((both.role, both.ttl.as_secs()), (Role::Admin, 120));
        assert!(!both.decidable_by(Role::Approver));
        assert!(both.decidable_by(Role::Admin));
        assert!(ApprovalTerms::default().decidable_by(Role::Approver));
        assert!(!ApprovalTerms::default().decidable_by(Role::Auditor));
    }
}
