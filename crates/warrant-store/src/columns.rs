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
    "id, token_hash, role, name, created_by, created_at, expires_at, revoked_at";

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
