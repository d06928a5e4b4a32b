//! Mapping PostgreSQL rows to warrant's types. Column lists are shared
//! (`crate::columns`), except the audit log's: `user` is a keyword here.

use postgres::Row;
use postgres::types::FromSql;
use warrant_core::admin::AdminTokenRecord;
use warrant_core::agent::Agent;
use warrant_core::audit::{IndexedColumns, StoredRow};
use warrant_core::identity::{Attestor, Instance, InstanceId, JoinTokenRecord};
use warrant_core::keys::SigningKeyRecord;
use warrant_core::mcp::{PinState, ToolPin};
use warrant_core::name::{AgentName, EnvName};
use warrant_core::secret::{SecretName, SecretRecord};
use warrant_core::selector::SelectorSet;
use warrant_core::task::TaskRecord;
use warrant_core::text::{Owner, Purpose};
use warrant_core::time::{Timestamp, Ttl};

use crate::StoreError;

pub(crate) use crate::columns::*;

pub(crate) const AUDIT_COLUMNS: &str =
    r#"seq, body, prev_hash, hash, time, event, decision, agent, instance, "user", task, txn"#;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i)
        .map_err(|e| corrupt(&format!("column {i}"), super::describe(&e)))
}

fn time(r: &Row, i: usize) -> Result<Timestamp, StoreError> {
    get::<i64>(r, i).map(Timestamp::from_millis)
}

fn time_opt(r: &Row, i: usize) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(r, i)?.map(Timestamp::from_millis))
}

fn hash32(r: &Row, i: usize, what: &str) -> Result<[u8; 32], StoreError> {
    get::<Vec<u8>>(r, i)?
        .try_into()
        .map_err(|_| corrupt(what, "not 32 bytes"))
}

pub(crate) fn agent(r: &Row) -> Result<Agent, StoreError> {
    Ok(Agent {
        id: get(r, 0)?,
        name: AgentName::new(get::<String>(r, 1)?).map_err(|e| corrupt("agent name", e))?,
        owner: Owner::new(get::<String>(r, 2)?).map_err(|e| corrupt("owner", e))?,
        env: EnvName::new(get::<String>(r, 3)?).map_err(|e| corrupt("env", e))?,
        purpose: Purpose::new(get::<String>(r, 4)?).map_err(|e| corrupt("purpose", e))?,
        trust: get::<String>(r, 5)?
            .parse()
            .map_err(|e| corrupt("trust", e))?,
        selectors: serde_json::from_str::<SelectorSet>(&get::<String>(r, 6)?)
            .map_err(|e| corrupt("selectors", e))?,
        max_ttl: Ttl::from_secs(
            u64::try_from(get::<i64>(r, 7)?).map_err(|e| corrupt("max_ttl", e))?,
        ),
        status: get::<String>(r, 8)?
            .parse()
            .map_err(|e| corrupt("status", e))?,
        created_at: time(r, 9)?,
        updated_at: time(r, 10)?,
    })
}

pub(crate) fn signing_key(r: &Row) -> Result<SigningKeyRecord, StoreError> {
    Ok(SigningKeyRecord {
        kid: get(r, 0)?,
        alg: get::<String>(r, 1)?
            .parse()
            .map_err(|e| corrupt("alg", e))?,
        public_key: get(r, 2)?,
        sealed_private_key: get(r, 3)?,
        created_at: time(r, 4)?,
        activates_at: time(r, 5)?,
    })
}

pub(crate) fn admin_token(r: &Row) -> Result<AdminTokenRecord, StoreError> {
    Ok(AdminTokenRecord {
        id: get(r, 0)?,
        token_hash: hash32(r, 1, "token_hash")?,
        role: get::<String>(r, 2)?
            .parse()
            .map_err(|e| corrupt("role", e))?,
        name: get(r, 3)?,
        created_by: get(r, 4)?,
        created_at: time(r, 5)?,
        expires_at: time(r, 6)?,
        revoked_at: time_opt(r, 7)?,
        person: get(r, 8)?,
    })
}

pub(crate) fn audit_row(r: &Row) -> Result<StoredRow, StoreError> {
    Ok(StoredRow {
        seq: u64::try_from(get::<i64>(r, 0)?).map_err(|e| corrupt("seq", e))?,
        body: get(r, 1)?,
        prev_hash: get(r, 2)?,
        hash: get(r, 3)?,
        indexed: IndexedColumns {
            time: time(r, 4)?,
            event: get(r, 5)?,
            decision: get(r, 6)?,
            agent: get(r, 7)?,
            instance: get(r, 8)?,
            user: get(r, 9)?,
            task: get(r, 10)?,
            txn: get(r, 11)?,
        },
    })
}

pub(crate) fn instance(r: &Row) -> Result<Instance, StoreError> {
    let attestor: String = get(r, 2)?;
    Ok(Instance {
        id: InstanceId::from_stored(get(r, 0)?),
        agent: AgentName::new(get::<String>(r, 1)?).map_err(|e| corrupt("agent name", e))?,
        attestor: Attestor::parse(&attestor).ok_or_else(|| corrupt("attestor", &attestor))?,
        evidence: get(r, 3)?,
        first_seen: time(r, 4)?,
        last_seen: time(r, 5)?,
        expires_at: time(r, 6)?,
    })
}

pub(crate) fn task(r: &Row) -> Result<TaskRecord, StoreError> {
    Ok(TaskRecord {
        task: get(r, 0)?,
        jti: get(r, 1)?,
        parent: get(r, 2)?,
        txn: get(r, 3)?,
        agent: get(r, 4)?,
        instance: get(r, 5)?,
        subject: get(r, 6)?,
        scope: get(r, 7)?,
        audience: serde_json::from_str(&get::<String>(r, 8)?)
            .map_err(|e| corrupt("audience", e))?,
        depth: u32::try_from(get::<i64>(r, 9)?).map_err(|e| corrupt("depth", e))?,
        issued_at: time(r, 10)?,
        expires_at: time(r, 11)?,
        revoked_at: time_opt(r, 12)?,
        groups: serde_json::from_str(&get::<String>(r, 13)?).map_err(|e| corrupt("groups", e))?,
        attestor: get(r, 14)?,
    })
}

pub(crate) fn join_token(r: &Row) -> Result<JoinTokenRecord, StoreError> {
    Ok(JoinTokenRecord {
        id: get(r, 0)?,
        token_hash: hash32(r, 1, "join token hash")?,
        agent: AgentName::new(get::<String>(r, 2)?).map_err(|e| corrupt("agent name", e))?,
        created_by: get(r, 3)?,
        created_at: time(r, 4)?,
        expires_at: time(r, 5)?,
        redeemed_at: time_opt(r, 6)?,
    })
}

pub(crate) fn secret(r: &Row) -> Result<SecretRecord, StoreError> {
    let owner: String = get(r, 1)?;
    Ok(SecretRecord {
        name: SecretName::new(get::<String>(r, 0)?).map_err(|e| corrupt("secret name", e))?,
        owner: (!owner.is_empty()).then_some(owner),
        version: u32::try_from(get::<i64>(r, 2)?).map_err(|e| corrupt("version", e))?,
        description: get(r, 3)?,
        wrapped_key: get(r, 4)?,
        ciphertext: get(r, 5)?,
        created_by: get(r, 6)?,
        created_at: time(r, 7)?,
        updated_at: time(r, 8)?,
        last_used_at: time_opt(r, 9)?,
    })
}

pub(crate) fn tool_pin(r: &Row) -> Result<ToolPin, StoreError> {
    let json = |text: &str, what: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(text).map_err(|e| corrupt(what, e))
    };
    let state = match get::<String>(r, 4)?.as_str() {
        "pinned" => PinState::Pinned,
        "changed" => PinState::Changed,
        "new" => PinState::New,
        other => return Err(corrupt("pin state", other)),
    };
    Ok(ToolPin {
        server: get(r, 0)?,
        tool: get(r, 1)?,
        digest: get(r, 2)?,
        definition: json(&get::<String>(r, 3)?, "definition")?,
        state,
        pending_digest: get(r, 5)?,
        pending_definition: get::<Option<String>>(r, 6)?
            .map(|t| json(&t, "pending definition"))
            .transpose()?,
        first_seen: time(r, 7)?,
        updated_at: time(r, 8)?,
        approved_by: get(r, 9)?,
        policy_problems: Vec::new(),
    })
}

pub(crate) fn approval(r: &Row) -> Result<warrant_core::approval::Approval, StoreError> {
    ApprovalRow {
        id: get(r, 0)?,
        binding: get(r, 1)?,
        state: get(r, 3)?,
        created_at: get(r, 4)?,
        expires_at: get(r, 5)?,
        decided_by: get(r, 6)?,
        decided_at: get(r, 7)?,
        reason: get(r, 8)?,
        used_at: get(r, 9)?,
        record: get(r, 10)?,
    }
    .approval()
}
