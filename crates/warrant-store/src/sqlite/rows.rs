//! Mapping rows to warrant's types and back.

use rusqlite::Row;
use warrant_core::admin::AdminTokenRecord;
use warrant_core::agent::{Agent, AgentStatus, TrustLevel};
use warrant_core::audit::{IndexedColumns, StoredRow};
use warrant_core::keys::{Alg, SigningKeyRecord};
use warrant_core::name::{AgentName, EnvName};
use warrant_core::selector::SelectorSet;
use warrant_core::text::{Owner, Purpose};
use warrant_core::time::{Timestamp, Ttl};

pub(crate) use crate::columns::*;

fn corrupt(what: &str, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("{what}: {e}").into(),
    )
}

pub(crate) fn agent(r: &Row<'_>) -> rusqlite::Result<Agent> {
    let name: String = r.get(1)?;
    let selectors: String = r.get(6)?;
    Ok(Agent {
        id: r.get(0)?,
        name: AgentName::new(name).map_err(|e| corrupt("agent name", e))?,
        owner: Owner::new(r.get::<_, String>(2)?).map_err(|e| corrupt("owner", e))?,
        env: EnvName::new(r.get::<_, String>(3)?).map_err(|e| corrupt("env", e))?,
        purpose: Purpose::new(r.get::<_, String>(4)?).map_err(|e| corrupt("purpose", e))?,
        trust: r
            .get::<_, String>(5)?
            .parse::<TrustLevel>()
            .map_err(|e| corrupt("trust", e))?,
        selectors: serde_json::from_str::<SelectorSet>(&selectors)
            .map_err(|e| corrupt("selectors", e))?,
        max_ttl: Ttl::from_secs(
            u64::try_from(r.get::<_, i64>(7)?).map_err(|e| corrupt("max_ttl", e))?,
        ),
        status: r
            .get::<_, String>(8)?
            .parse::<AgentStatus>()
            .map_err(|e| corrupt("status", e))?,
        created_at: Timestamp::from_millis(r.get(9)?),
        updated_at: Timestamp::from_millis(r.get(10)?),
    })
}

pub(crate) fn signing_key(r: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.get(0)?,
        alg: r
            .get::<_, String>(1)?
            .parse::<Alg>()
            .map_err(|e| corrupt("alg", e))?,
        public_key: r.get(2)?,
        sealed_private_key: r.get(3)?,
        created_at: Timestamp::from_millis(r.get(4)?),
        activates_at: Timestamp::from_millis(r.get(5)?),
    })
}

pub(crate) fn admin_token(r: &Row<'_>) -> rusqlite::Result<AdminTokenRecord> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(AdminTokenRecord {
        id: r.get(0)?,
        token_hash: hash
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("token_hash", "not 32 bytes"))?,
        role: r
            .get::<_, String>(2)?
            .parse()
            .map_err(|e| corrupt("role", e))?,
        name: r.get(3)?,
        created_by: r.get(4)?,
        created_at: Timestamp::from_millis(r.get(5)?),
        expires_at: Timestamp::from_millis(r.get(6)?),
        revoked_at: r.get::<_, Option<i64>>(7)?.map(Timestamp::from_millis),
        person: r.get(8)?,
    })
}

/// The same columns qualified with the alias `l`, for joins.
pub(crate) const AUDIT_COLUMNS_L: &str = "l.seq, l.body, l.prev_hash, l.hash, l.time, l.event, l.decision, l.agent, l.instance, l.user, l.task, l.txn";

pub(crate) const AUDIT_COLUMNS: &str =
    "seq, body, prev_hash, hash, time, event, decision, agent, instance, user, task, txn";

pub(crate) fn audit_row(r: &Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        seq: u64::try_from(r.get::<_, i64>(0)?).map_err(|e| corrupt("seq", e))?,
        body: r.get(1)?,
        prev_hash: r.get(2)?,
        hash: r.get(3)?,
        indexed: IndexedColumns {
            time: Timestamp::from_millis(r.get(4)?),
            event: r.get(5)?,
            decision: r.get(6)?,
            agent: r.get(7)?,
            instance: r.get(8)?,
            user: r.get(9)?,
            task: r.get(10)?,
            txn: r.get(11)?,
        },
    })
}

pub(crate) fn instance(r: &Row<'_>) -> rusqlite::Result<warrant_core::identity::Instance> {
    use warrant_core::identity::{Attestor, Instance, InstanceId};
    let attestor: String = r.get(2)?;
    Ok(Instance {
        id: InstanceId::from_stored(r.get(0)?),
        agent: AgentName::new(r.get::<_, String>(1)?).map_err(|e| corrupt("agent name", e))?,
        attestor: Attestor::parse(&attestor).ok_or_else(|| corrupt("attestor", &attestor))?,
        evidence: r.get(3)?,
        first_seen: Timestamp::from_millis(r.get(4)?),
        last_seen: Timestamp::from_millis(r.get(5)?),
        expires_at: Timestamp::from_millis(r.get(6)?),
    })
}

pub(crate) fn task(r: &Row<'_>) -> rusqlite::Result<warrant_core::task::TaskRecord> {
    let audience: String = r.get(8)?;
    Ok(warrant_core::task::TaskRecord {
        task: r.get(0)?,
        jti: r.get(1)?,
        parent: r.get(2)?,
        txn: r.get(3)?,
        agent: r.get(4)?,
        instance: r.get(5)?,
        subject: r.get(6)?,
        scope: r.get(7)?,
        audience: serde_json::from_str(&audience).map_err(|e| corrupt("audience", e))?,
        depth: u32::try_from(r.get::<_, i64>(9)?).map_err(|e| corrupt("depth", e))?,
        issued_at: Timestamp::from_millis(r.get(10)?),
        expires_at: Timestamp::from_millis(r.get(11)?),
        revoked_at: r.get::<_, Option<i64>>(12)?.map(Timestamp::from_millis),
        groups: serde_json::from_str(&r.get::<_, String>(13)?).map_err(|e| corrupt("groups", e))?,
        attestor: r.get(14)?,
    })
}

pub(crate) fn join_token(r: &Row<'_>) -> rusqlite::Result<warrant_core::identity::JoinTokenRecord> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(warrant_core::identity::JoinTokenRecord {
        id: r.get(0)?,
        token_hash: hash
            .try_into()
            .map_err(|_| corrupt("join token hash", "not 32 bytes"))?,
        agent: AgentName::new(r.get::<_, String>(2)?).map_err(|e| corrupt("agent name", e))?,
        created_by: r.get(3)?,
        created_at: Timestamp::from_millis(r.get(4)?),
        expires_at: Timestamp::from_millis(r.get(5)?),
        redeemed_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
    })
}

pub(crate) fn secret(r: &Row<'_>) -> rusqlite::Result<warrant_core::secret::SecretRecord> {
    let owner: String = r.get(1)?;
    Ok(warrant_core::secret::SecretRecord {
        name: warrant_core::secret::SecretName::new(r.get::<_, String>(0)?)
            .map_err(|e| corrupt("secret name", e))?,
        owner: (!owner.is_empty()).then_some(owner),
        version: u32::try_from(r.get::<_, i64>(2)?).map_err(|e| corrupt("version", e))?,
        description: r.get(3)?,
        wrapped_key: r.get(4)?,
        ciphertext: r.get(5)?,
        created_by: r.get(6)?,
        created_at: Timestamp::from_millis(r.get(7)?),
        updated_at: Timestamp::from_millis(r.get(8)?),
        last_used_at: r.get::<_, Option<i64>>(9)?.map(Timestamp::from_millis),
    })
}

pub(crate) fn tool_pin(r: &Row<'_>) -> rusqlite::Result<warrant_core::mcp::ToolPin> {
    let json = |i: usize, what: &str| -> rusqlite::Result<serde_json::Value> {
        serde_json::from_str(&r.get::<_, String>(i)?).map_err(|e| corrupt(what, e))
    };
    let state = match r.get::<_, String>(4)?.as_str() {
        "pinned" => warrant_core::mcp::PinState::Pinned,
        "changed" => warrant_core::mcp::PinState::Changed,
        "new" => warrant_core::mcp::PinState::New,
        other => return Err(corrupt("pin state", other)),
    };
    Ok(warrant_core::mcp::ToolPin {
        server: r.get(0)?,
        tool: r.get(1)?,
        digest: r.get(2)?,
        definition: json(3, "definition")?,
        state,
        pending_digest: r.get(5)?,
        pending_definition: match r.get::<_, Option<String>>(6)? {
            Some(t) => {
                Some(serde_json::from_str(&t).map_err(|e| corrupt("pending definition", e))?)
            }
            None => None,
        },
        first_seen: Timestamp::from_millis(r.get(7)?),
        updated_at: Timestamp::from_millis(r.get(8)?),
        approved_by: r.get(9)?,
        policy_problems: Vec::new(),
    })
}

pub(crate) fn approval(r: &Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: r.get(0)?,
        binding: r.get(1)?,
        state: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        decided_by: r.get(6)?,
        decided_at: r.get(7)?,
        reason: r.get(8)?,
        used_at: r.get(9)?,
        record: r.get(10)?,
    })
}
