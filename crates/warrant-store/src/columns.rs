//! The column lists both stores read and write in the same order, and the
//! stored form of an agent's selectors. Audit columns differ (`user` is a
//! keyword in PostgreSQL) and live with each store's rows.

use warrant_core::selector::SelectorSet;

use crate::StoreError;

pub(crate) const AGENT_COLUMNS: &str =
    "id, name, owner, env, purpose, trust, selectors, max_ttl_secs, status, created_at, updated_at";

pub(crate) const KEY_COLUMNS: &str =
    "kid, alg, public_key, sealed_private_key, created_at, activates_at";

pub(crate) const TOKEN_COLUMNS: &str =
    "id, token_hash, role, name, created_by, created_at, expires_at, revoked_at, person";

pub(crate) const INSTANCE_COLUMNS: &str =
    "id, agent, attestor, evidence, first_seen, last_seen, expires_at";

pub(crate) const TASK_COLUMNS: &str = "task, jti, parent, txn, agent, instance, subject, scope, audience, depth, issued_at, expires_at, revoked_at, groups, attestor";

pub(crate) const JOIN_COLUMNS: &str =
    "id, token_hash, agent, created_by, created_at, expires_at, redeemed_at";

pub(crate) const SECRET_COLUMNS: &str = "name, owner, version, description, wrapped_key, ciphertext, created_by, created_at, updated_at, last_used_at";

pub(crate) const PIN_COLUMNS: &str = "server, tool, digest, definition, state, pending_digest, pending_definition, first_seen, updated_at, approved_by";

pub(crate) fn selectors_json(s: &SelectorSet) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) const APPROVAL_COLUMNS: &str = "id, binding, agent, state, created_at, expires_at, decided_by, decided_at, reason, used_at, record, requester, loose";

/// What an approval row holds besides its columns: the request it covers
/// and the terms it was asked with (written once, never updated).
#[derive(serde::Serialize, serde::Deserialize)]
struct ApprovalBody {
    subject: warrant_core::approval::ApprovalSubject,
    #[serde(default)]
    shown: serde_json::Value,
    policies: Vec<String>,
    role: warrant_core::admin::Role,
    ttl_secs: u64,
}

/// An approval's `record` column.
pub(crate) fn approval_record(a: &warrant_core::approval::Approval) -> Result<String, StoreError> {
    serde_json::to_string(&ApprovalBody {
        subject: a.subject.clone(),
        shown: a.shown.clone(),
        policies: a.policies.clone(),
        role: a.role,
        ttl_secs: a.ttl_secs,
    })
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An approval row's values, in [`APPROVAL_COLUMNS`] order, as both stores
/// read them.
pub(crate) struct ApprovalRow {
    pub(crate) id: String,
    pub(crate) binding: String,
    pub(crate) state: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) decided_by: Option<String>,
    pub(crate) decided_at: Option<i64>,
    pub(crate) reason: Option<String>,
    pub(crate) used_at: Option<i64>,
    pub(crate) record: String,
}

impl ApprovalRow {
    pub(crate) fn approval(self) -> Result<warrant_core::approval::Approval, StoreError> {
        use warrant_core::time::Timestamp;
        let body: ApprovalBody = serde_json::from_str(&self.record)
            .map_err(|e| StoreError::Corrupt(format!("approval {}: {e}", self.id)))?;
        Ok(warrant_core::approval::Approval {
            state: self
                .state
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("approval {}: {e}", self.id)))?,
            id: self.id,
            binding: self.binding,
            subject: body.subject,
            shown: body.shown,
            policies: body.policies,
            role: body.role,
            ttl_secs: body.ttl_secs,
            created_at: Timestamp::from_millis(self.created_at),
            expires_at: Timestamp::from_millis(self.expires_at),
            decided_by: self.decided_by,
            decided_at: self.decided_at.map(Timestamp::from_millis),
            reason: self.reason,
            used_at: self.used_at.map(Timestamp::from_millis),
        })
    }
}

/// The `WHERE` condition listing approvals in `state` at the time bound
/// to the first parameter (`?1` or `$1`, as `p1` says).
pub(crate) fn approval_state_filter(
    state: Option<warrant_core::approval::ApprovalState>,
    p1: &str,
) -> String {
    use warrant_core::approval::ApprovalState as S;
    match state {
        None => format!("{p1} = {p1}"),
        Some(S::Pending) => format!("state = 'pending' AND expires_at > {p1}"),
        Some(S::Approved) => format!("state = 'approved' AND expires_at > {p1}"),
        Some(S::Expired) => {
            format!("state IN ('pending', 'approved') AND expires_at <= {p1}")
        }
        Some(S::Denied) => format!("state = 'denied' AND {p1} = {p1}"),
        Some(S::Used) => format!("state = 'used' AND {p1} = {p1}"),
    }
}

/// How long an approval's row is kept after it expired (its records stay
/// in the audit trail).
pub(crate) const APPROVAL_KEEP_MS: i64 = 30 * 86_400_000;

/// Why the approval `a` (as read, or `None` when there is none) cannot be
/// decided or used at `now`.
pub(crate) fn approval_refusal(
    what: &'static str,
    id: &str,
    a: Option<&warrant_core::approval::Approval>,
    now: warrant_core::time::Timestamp,
) -> StoreError {
    let Some(a) = a else {
        return StoreError::NotFound {
            what: "approval",
            name: id.to_owned(),
        };
    };
    let state = a.state_at(now);
    let by = a
        .decided_by
        .as_deref()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    StoreError::Precondition {
        what,
        why: format!("approval `{id}` is {state}{by}"),
    }
}

/// Refuses a new approval past the agent's or its requester's share.
pub(crate) fn approval_quota(
    a: &warrant_core::approval::Approval,
    requester: &str,
    agent_pending: i64,
    requester_pending: i64,
    limits: crate::ApprovalLimits,
) -> Result<(), StoreError> {
    if requester_pending >= i64::from(limits.per_requester) {
        return Err(StoreError::Precondition {
            what: "approval",
            why: format!(
                "{requester_pending} approvals are pending already for agent `{}` acting for {requester}; decide them or let them expire first",
                a.subject.agent
            ),
        });
    }
    if agent_pending >= i64::from(limits.per_agent) {
        return Err(StoreError::Precondition {
            what: "approval",
            why: format!(
                "agent `{}` has {agent_pending} approvals pending already; decide them or let them expire first",
                a.subject.agent
            ),
        });
    }
    Ok(())
}
