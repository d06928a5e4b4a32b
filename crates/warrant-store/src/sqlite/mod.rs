//! The embedded SQLite store.
//!
//! One write connection, owned by the group-commit [`writer`] thread, with
//! `journal_mode=WAL` and `synchronous=FULL`: a commit is on disk before any
//! caller hears of it. Reads use separate read-only connections (WAL lets them
//! run beside the writer) on tokio's blocking pool.

mod index;
mod migrations;
mod rows;
mod writer;

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use warrant_core::admin::AdminTokenRecord;
use warrant_core::agent::{Agent, AgentStatus};
use warrant_core::approval::{Approval, ApprovalState, Verdict};
use warrant_core::audit::{
    AuditEvent, AuditRecord, ChainHash, ChainLinker, ChainVerifier, Checkpoint,
};
use warrant_core::identity::{Instance, JoinTokenRecord};
use warrant_core::keys::SigningKeyRecord;
use warrant_core::mcp::{PinOutcome, ToolDefinition, ToolPin};
use warrant_core::name::AgentName;
use warrant_core::secret::{SecretName, SecretRecord};
use warrant_core::task::{RevokeTarget, TaskRecord};
use warrant_core::time::Timestamp;

use crate::agents;
use crate::chain::{LEGACY_KEY, legacy_mac, legacy_until};
use crate::pins::PinStep;
use crate::{AuditQuery, ChainReport, Store, StoreError};
use writer::Writer;

/// Tuning for the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The most jobs committed together. 1 makes every job its own transaction
    /// (the benchmark's baseline).
    pub max_batch: usize,
    /// The chain key: records are keyed with it (and checked with it). Without
    /// one, the chain is plain SHA-256 (tests, benchmarks).
    pub chain: Option<Arc<dyn ChainLinker>>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            chain: None,
        }
    }
}

/// The triggers warrant's migrations create; any other is someone else's.
/// The triggers warrant creates, as it creates them (whitespace aside).
const OWN_TRIGGERS: [(&str, &str); 2] = [
    (
        "audit_log_no_update",
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    ),
    (
        "audit_log_no_delete",
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    ),
];

fn squeeze(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(';')
        .to_owned()
}

/// Refuses a database whose triggers are not exactly warrant's own: one
/// added, or one of warrant's dropped or replaced under its name, could
/// drop or alter audit records as they are written.
fn refuse_foreign_triggers(conn: &Connection) -> Result<(), StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE type = 'trigger' ORDER BY name",
        )
        .map_err(db_err)?;
    let found: Vec<(String, String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(db_err)?
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
    let advice =
        "find out who changed it, restore it, and check the trail with `warrant audit verify`";
    if let Some((name, table, _)) = found.iter().find(|(n, _, sql)| {
        !OWN_TRIGGERS
            .iter()
            .any(|(own, want)| n == own && squeeze(sql) == *want)
    }) {
        return Err(StoreError::AuditUnavailable(format!(
            "the database has a trigger warrant did not create, or one of its own changed (`{}` on `{}`); it could alter what is stored, the audit trail above all: {advice}",
            name.escape_debug(),
            table.escape_debug()
        )));
    }
    if let Some((own, _)) = OWN_TRIGGERS
        .iter()
        .find(|(own, _)| !found.iter().any(|(n, _, _)| n == own))
    {
        return Err(StoreError::AuditUnavailable(format!(
            "the database lacks warrant's trigger `{own}`, which keeps the audit trail append-only: {advice}"
        )));
    }
    Ok(())
}

/// Puts back a guard of warrant's that was dropped (at open only; what was
/// done meanwhile shows in `warrant audit verify`), then refuses anything
/// else that is not exactly warrant's own.
fn restore_own_triggers(conn: &Connection) -> Result<(), StoreError> {
    for (name, sql) in OWN_TRIGGERS {
        let present: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if !present {
            tracing::warn!(
                trigger = name,
                "warrant's audit trail guard was missing from the database and is restored; check the trail with `warrant audit verify`"
            );
            conn.execute_batch(&format!("{sql};")).map_err(db_err)?;
        }
    }
    refuse_foreign_triggers(conn)
}

/// Checks, on the writer (so no commit runs meanwhile), that the audit
/// trail is as the writer left it: the triggers are warrant's own, the last
/// record it wrote is there with the hash it was written with, and nothing
/// is stored past it. Returns that record's sequence and hash (`None`: the
/// trail is empty). Checkpoints are signed for it, and `/readyz` answers
/// ready, only when it is.
fn audit_intact(ctx: &writer::WriteCtx<'_>) -> Result<Option<(u64, ChainHash)>, StoreError> {
    let c = ctx.conn;
    refuse_foreign_triggers(c)?;
    let (seq, hash) = ctx.head();
    let max: i64 = c
        .query_row("SELECT coalesce(max(seq), 0) FROM audit_log", [], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    if u64::try_from(max).unwrap_or(u64::MAX) != seq {
        return Err(StoreError::AuditUnavailable(format!(
            "the audit trail's newest record is {max}, but the last this broker wrote is {seq}: records were added, removed or replaced behind its back; find out who did, and check the trail with `warrant audit verify` against exported checkpoints"
        )));
    }
    if seq == 0 {
        return Ok(None);
    }
    // Its body and link as well: a record rewritten under its old hash
    // does not link.
    match record_links(c, ctx.linker(), seq, &hash)? {
        Some(true) => {}
        Some(false) => {
            return Err(StoreError::AuditUnavailable(format!(
                "audit record {seq}, the newest, does not verify: it was rewritten or planted; find out who did, and check the trail with `warrant audit verify` against exported checkpoints"
            )));
        }
        None => {
            return Err(StoreError::AuditUnavailable(format!(
                "audit record {seq}, the last this broker wrote, is no longer in the database as written: records were removed or replaced; find out who did, and check the trail with `warrant audit verify` against exported checkpoints"
            )));
        }
    }
    // And the head the writer started from, when the broker started: one
    // planted while it was stopped links nothing on top of it.
    if let Some(from) = ctx.tainted() {
        return Err(StoreError::AuditUnavailable(format!(
            "audit record {from}, the newest when the broker started, does not verify: it was planted or rewritten while the broker was stopped; find out who did, and check the trail with `warrant audit verify` against exported checkpoints"
        )));
    }
    Ok(Some((seq, hash)))
}

/// Whether record `seq`, stored with `hash`, links (keyed, or unkeyed
/// where the keyed note says the chain was not keyed yet); `None` if it is
/// not stored with that hash.
pub(crate) fn record_links(
    c: &Connection,
    linker: Option<&dyn ChainLinker>,
    seq: u64,
    hash: &ChainHash,
) -> Result<Option<bool>, StoreError> {
    let stored: Option<(Vec<u8>, Vec<u8>, String)> = c
        .query_row(
            "SELECT hash, prev_hash, body FROM audit_log WHERE seq = ?1",
            [i64::try_from(seq).unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db_err)?;
    let Some((stored_hash, prev, body)) = stored else {
        return Ok(None);
    };
    if stored_hash != hash.0.as_slice() {
        return Ok(None);
    }
    let Ok(prev) = <[u8; 32]>::try_from(prev.as_slice()).map(ChainHash) else {
        return Ok(Some(false));
    };
    links(c, linker, seq, &prev, hash, &body).map(Some)
}

fn links(
    c: &Connection,
    linker: Option<&dyn ChainLinker>,
    seq: u64,
    prev: &ChainHash,
    hash: &ChainHash,
    body: &str,
) -> Result<bool, StoreError> {
    let Some(l) = linker else {
        return Ok(ChainHash::link(prev, body.as_bytes()) == *hash);
    };
    if l.link(prev, body.as_bytes()) == *hash {
        return Ok(true);
    }
    if ChainHash::link(prev, body.as_bytes()) != *hash {
        return Ok(false);
    }
    Ok(legacy_marker(c)?
        .and_then(|m| legacy_until(&m, l))
        .is_some_and(|n| seq <= n))
}

/// The stored note of where the chain's keying starts, as stored.
fn legacy_marker(c: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    c.query_row(
        "SELECT value FROM audit_meta WHERE key = ?1",
        [LEGACY_KEY],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_err)
}

/// Notes, once, up to which record the chain is not keyed: every record
/// after it must be. The note is keyed, so it cannot be moved; without it,
/// every record must be keyed.
fn ensure_legacy_marker(conn: &Connection, linker: &dyn ChainLinker) -> Result<(), StoreError> {
    if legacy_marker(conn)?.is_some() {
        return Ok(());
    }
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, body FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    let until = match last {
        None => 0,
        Some((seq, body)) => {
            let keyed = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("keyed").and_then(serde_json::Value::as_bool))
                .unwrap_or(false);
            if keyed {
                // Keyed records and no marker: it was removed. Leave it so;
                // verification then needs every record keyed.
                return Ok(());
            }
            u64::try_from(seq).unwrap_or(0)
        }
    };
    if until > 0 {
        tracing::warn!(
            unkeyed = until,
            "keying the audit chain from here on: records 1 to {until} were written before it was keyed and stay hash-chained only. This should happen once, on the upgrade; seen again, someone rewrote the trail"
        );
    }
    let mut value = until.to_be_bytes().to_vec();
    value.extend(legacy_mac(linker, until));
    conn.execute(
        "INSERT INTO audit_meta (key, value) VALUES (?1, ?2)",
        params![LEGACY_KEY, value],
    )
    .map_err(db_err)?;
    Ok(())
}

fn insert_key(
    ctx: &mut writer::WriteCtx<'_>,
    key: &SigningKeyRecord,
    audit: AuditEvent,
) -> Result<(), StoreError> {
    ctx.conn
        .execute(
            &format!(
                "INSERT INTO signing_keys ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rows::KEY_COLUMNS
            ),
            params![
                key.kid,
                key.alg.as_str(),
                key.public_key,
                key.sealed_private_key,
                key.created_at.as_millis(),
                key.activates_at.as_millis()
            ],
        )
        .map_err(conflict("signing key", &key.kid))?;
    ctx.append(audit)?;
    Ok(())
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    /// The chain key, if the chain is keyed.
    chain: Option<Arc<dyn ChainLinker>>,
    writer: Writer,
    indexer: Arc<index::Indexer>,
    /// Idle read connections. A std mutex: held only to push or pop, never
    /// across an await or a query.
    readers: Mutex<Vec<Connection>>,
    agents: agents::AgentCache,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn read_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
            StoreError::Corrupt(inner.to_string())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// A unique-constraint failure as `Conflict { what, name }`; anything else as
/// the store being unavailable.
fn conflict(what: &'static str, name: &str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let name = name.to_owned();
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Conflict { what, name }
        } else {
            db_err(e)
        }
    }
}

/// Every row `sql` returns for `params`, each mapped by `f`.
fn all_rows<T, P, F>(c: &Connection, sql: &str, params: P, f: F) -> Result<Vec<T>, StoreError>
where
    P: rusqlite::Params,
    F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    let mut st = c.prepare_cached(sql).map_err(db_err)?;
    st.query_map(params, f)
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)
}

/// The one row `sql` returns for `params`, if any, mapped by `f`.
fn one_row<T, P, F>(c: &Connection, sql: &str, params: P, f: F) -> Result<Option<T>, StoreError>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    c.prepare_cached(sql)
        .and_then(|mut st| st.query_row(params, f).optional())
        .map_err(read_err)
}

/// The approval `id`, if any.
fn approval_row(c: &Connection, id: &str) -> Result<Option<Approval>, StoreError> {
    one_row(
        c,
        &format!(
            "SELECT {} FROM approvals WHERE id = ?1",
            rows::APPROVAL_COLUMNS
        ),
        [id],
        rows::approval,
    )?
    .map(rows::ApprovalRow::approval)
    .transpose()
}

/// The secret `name` of `owner` (`""` for a shared one).
fn secret_row(
    c: &Connection,
    name: &SecretName,
    owner: &str,
) -> Result<Option<SecretRecord>, StoreError> {
    let sql = format!(
        "SELECT {} FROM secrets WHERE name = ?1 AND owner = ?2",
        rows::SECRET_COLUMNS
    );
    one_row(c, &sql, params![name.as_str(), owner], rows::secret)
}

/// The pin of `server`'s `tool`.
fn pin_row(c: &Connection, server: &str, tool: &str) -> Result<Option<ToolPin>, StoreError> {
    let sql = format!(
        "SELECT {} FROM mcp_tools WHERE server = ?1 AND tool = ?2",
        rows::PIN_COLUMNS
    );
    one_row(c, &sql, params![server, tool], rows::tool_pin)
}

/// `Revoked` if `instance` was revoked: nothing more is issued to it.
fn refuse_revoked_instance(conn: &Connection, instance: &str) -> Result<(), StoreError> {
    let revoked: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM revoked_instances WHERE instance = ?1")
        .and_then(|mut st| st.query_row([instance], |r| r.get(0)))
        .optional()
        .map_err(read_err)?;
    match revoked {
        Some(_) => Err(StoreError::Revoked {
            what: "instance",
            id: instance.to_owned(),
        }),
        None => Ok(()),
    }
}

/// `Revoked { what: "agent" }` unless `agent` exists and is active, as the
/// database has it (the writer's transaction sees every earlier write).
fn require_active_agent(conn: &Connection, agent: &str) -> Result<(), StoreError> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM agents WHERE name = ?1")
        .and_then(|mut st| st.query_row([agent], |r| r.get(0)).optional())
        .map_err(read_err)?;
    if status.as_deref() == Some(AgentStatus::Active.as_str()) {
        Ok(())
    } else {
        Err(StoreError::Revoked {
            what: "agent",
            id: agent.to_owned(),
        })
    }
}

fn upsert_instance(conn: &Connection, i: &Instance) -> Result<Instance, StoreError> {
    // INVARIANT (revocation is never outrun): checked in the same
    // transaction that records the issuance.
    require_active_agent(conn, i.agent.as_str())?;
    refuse_revoked_instance(conn, i.id.as_str())?;
    conn.prepare_cached(&format!(
        "INSERT INTO instances ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (id) DO UPDATE SET evidence = excluded.evidence, \
             last_seen = excluded.last_seen, expires_at = excluded.expires_at",
        rows::INSTANCE_COLUMNS
    ))
    .and_then(|mut st| {
        st.execute(params![
            i.id.as_str(),
            i.agent.as_str(),
            i.attestor.as_str(),
            i.evidence,
            i.first_seen.as_millis(),
            i.last_seen.as_millis(),
            i.expires_at.as_millis(),
        ])
    })
    .map_err(db_err)?;
    conn.prepare_cached(&format!(
        "SELECT {} FROM instances WHERE id = ?1",
        rows::INSTANCE_COLUMNS
    ))
    .and_then(|mut st| st.query_row([i.id.as_str()], rows::instance))
    .map_err(read_err)
}

/// Statements prepared once per connection and kept.
///
/// Plans are fixed when a statement is prepared: without the query planner
/// stability guarantee, SQLite re-prepares a cached statement whenever a
/// value bound to its `LIMIT` changes (or, with the STAT4 statistics this
/// build enables, a value in an indexed range), which on the audit
/// follower's `LIMIT ?2` was a re-parse of the query on every read: 7% of
/// a proxied request's instructions.
///
/// And room for every statement a connection runs in turn: rusqlite keeps
/// 16 by default, fewer than the distinct queries a reader serves, so the
/// least recent were parsed again each time their turn came.
pub(crate) fn configure_statements(c: &Connection) -> Result<(), StoreError> {
    c.set_prepared_statement_cache_capacity(256);
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(drop)
    .map_err(db_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot open `{}`: {e}", path.display())))?;
        configure_statements(&conn)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(db_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "`{}` cannot use WAL journaling (got `{mode}`)",
                path.display()
            )));
        }
        migrations::apply(&mut conn)?;
        restore_own_triggers(&conn)?;
        if let Some(l) = &options.chain {
            ensure_legacy_marker(&conn, l.as_ref())?;
        }
        let head: i64 = conn
            .query_row("SELECT coalesce(max(seq), 0) FROM audit_log", [], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        let indexer = Arc::new(index::Indexer::start(path, head)?);
        let notify = indexer.clone();
        let writer = Writer::start(
            conn,
            options.max_batch,
            options.chain.clone(),
            Box::new(move || notify.notify()),
        )?;
        Ok(Self {
            chain: options.chain,
            path: path.to_owned(),
            writer,
            indexer,
            readers: Mutex::new(Vec::new()),
            agents: agents::AgentCache::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until the audit query index has caught up with every committed
    /// record. Queries are complete without it; tests and benchmarks use it to
    /// exercise the indexed path.
    pub async fn flush_index(&self) {
        let indexer = self.indexer.clone();
        let _ = tokio::task::spawn_blocking(move || indexer.flush()).await;
    }

    fn checkout(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.readers.lock().pop() {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        configure_statements(&c)?;
        c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
            .map_err(db_err)?;
        let idx = index::index_path(&self.path);
        c.execute("ATTACH DATABASE ?1 AS idx", [idx.to_string_lossy()])
            .map_err(db_err)?;
        Ok(c)
    }

    fn checkin(&self, c: Connection) {
        let mut r = self.readers.lock();
        if r.len() < 8 {
            r.push(c);
        }
    }

    /// Every agent, by name: the in-memory snapshot, loaded if a write made
    /// it stale.
    async fn agents(&self) -> Result<Arc<std::collections::BTreeMap<String, Agent>>, StoreError> {
        if let Some(s) = self.agents.get() {
            return Ok(s);
        }
        let generation = self.agents.begin();
        let all = self
            .read(|c| {
                let sql = format!("SELECT {} FROM agents", rows::AGENT_COLUMNS);
                all_rows(c, &sql, [], rows::agent)
            })
            .await?;
        Ok(self.agents.install(generation, all))
    }

    /// Submits a write that changes `agents`, invalidating the snapshot once
    /// it has committed (or failed).
    async fn write_agents<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut writer::WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        // Invalidated on drop: if the caller goes away mid-write the job
        // still commits, and the snapshot must not outlive it.
        let _guard = self.agents.invalidate_on_drop();
        self.writer.submit(f).await
    }

    /// Runs a read on a read-only connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.checkout()?;
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            (conn, out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?;
        self.checkin(conn);
        out
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.audit_written_head().await.map(drop)
    }

    async fn audit_written_head(&self) -> Result<Option<(u64, ChainHash)>, StoreError> {
        self.writer.submit_single(|ctx| audit_intact(ctx)).await
    }

    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<Agent, StoreError> {
        self.write_agents(move |ctx| {
            let selectors = rows::selectors_json(&agent.selectors)?;
            ctx.conn
                .prepare_cached(&format!(
                    "INSERT INTO agents ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    rows::AGENT_COLUMNS
                ))
                .and_then(|mut st| {
                    st.execute(params![
                        agent.id,
                        agent.name.as_str(),
                        agent.owner.as_str(),
                        agent.env.as_str(),
                        agent.purpose.as_str(),
                        agent.trust.as_str(),
                        selectors,
                        i64::try_from(agent.max_ttl.as_secs()).unwrap_or(i64::MAX),
                        agent.status.as_str(),
                        agent.created_at.as_millis(),
                        agent.updated_at.as_millis(),
                    ])
                })
                .map_err(conflict("agent", agent.name.as_str()))?;
            ctx.append(audit)?;
            Ok(agent)
        })
        .await
    }

    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        Ok(self.agents().await?.get(name.as_str()).cloned())
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        Ok(self.agents().await?.values().cloned().collect())
    }

    async fn set_agent_status(
        &self,
        name: &AgentName,
        status: AgentStatus,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Agent, StoreError> {
        let name = name.to_string();
        self.write_agents(move |ctx| {
            let n = ctx
                .conn
                .execute(
                    "UPDATE agents SET status = ?1, updated_at = ?2 WHERE name = ?3",
                    params![status.as_str(), now.as_millis(), name],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "agent",
                    name,
                });
            }
            if status == AgentStatus::Active {
                // Re-enabling lifts the blocks `revoke --instance` put on its instances.
                ctx.conn
                    .execute("DELETE FROM revoked_instances WHERE agent = ?1", [&name])
                    .map_err(db_err)?;
            }
            let agent = ctx
                .conn
                .query_row(
                    &format!("SELECT {} FROM agents WHERE name = ?1", rows::AGENT_COLUMNS),
                    [&name],
                    rows::agent,
                )
                .map_err(read_err)?;
            ctx.append(audit)?;
            Ok(agent)
        })
        .await
    }

    async fn delete_agent(&self, name: &AgentName, audit: AuditEvent) -> Result<Agent, StoreError> {
        let name = name.to_string();
        self.write_agents(move |ctx| {
            let agent = ctx
                .conn
                .query_row(
                    &format!("SELECT {} FROM agents WHERE name = ?1", rows::AGENT_COLUMNS),
                    [&name],
                    rows::agent,
                )
                .optional()
                .map_err(read_err)?
                .ok_or_else(|| StoreError::NotFound {
                    what: "agent",
                    name: name.clone(),
                })?;
            ctx.conn
                .execute("DELETE FROM agents WHERE name = ?1", [&name])
                .map_err(db_err)?;
            // Its instances and unredeemed join tokens go with it: a later
            // agent of the same name must not inherit them.
            ctx.conn
                .execute("DELETE FROM instances WHERE agent = ?1", [&name])
                .map_err(db_err)?;
            ctx.conn
                .execute(
                    "DELETE FROM join_tokens WHERE agent = ?1 AND redeemed_at IS NULL",
                    [&name],
                )
                .map_err(db_err)?;
            ctx.conn
                .execute("DELETE FROM revoked_instances WHERE agent = ?1", [&name])
                .map_err(db_err)?;
            ctx.append(audit)?;
            Ok(agent)
        })
        .await
    }

    async fn insert_signing_key(
        &self,
        key: SigningKeyRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| insert_key(ctx, &key, audit))
            .await
    }

    async fn insert_first_signing_key(
        &self,
        key: SigningKeyRecord,
        audit: AuditEvent,
    ) -> Result<bool, StoreError> {
        self.writer
            .submit(move |ctx| {
                // One writer: the check and the insert cannot interleave.
                let any: i64 = ctx
                    .conn
                    .query_row("SELECT count(*) FROM signing_keys", [], |r| r.get(0))
                    .map_err(db_err)?;
                if any > 0 {
                    return Ok(false);
                }
                insert_key(ctx, &key, audit).map(|()| true)
            })
            .await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT {} FROM signing_keys ORDER BY activates_at, created_at",
                rows::KEY_COLUMNS
            );
            all_rows(c, &sql, [], rows::signing_key)
        })
        .await
    }

    async fn create_admin_token(
        &self,
        token: AdminTokenRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                ctx.conn
                    .execute(
                        &format!(
                            "INSERT INTO admin_tokens ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                            rows::TOKEN_COLUMNS
                        ),
                        params![
                            token.id,
                            token.token_hash.as_slice(),
                            token.role.as_str(),
                            token.name,
                            token.created_by,
                            token.created_at.as_millis(),
                            token.expires_at.as_millis(),
                            token.revoked_at.map(Timestamp::as_millis),
                            token.person,
                        ],
                    )
                    .map_err(conflict("admin token", &token.id))?;
                ctx.append(audit)?;
                Ok(())
            })
            .await
    }

    async fn admin_token_by_hash(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        let hash = hash.to_vec();
        self.read(move |c| {
            one_row(
                c,
                &format!(
                    "SELECT {} FROM admin_tokens WHERE token_hash = ?1",
                    rows::TOKEN_COLUMNS
                ),
                [hash],
                rows::admin_token,
            )
        })
        .await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT {} FROM admin_tokens ORDER BY created_at DESC, id",
                rows::TOKEN_COLUMNS
            );
            all_rows(c, &sql, [], rows::admin_token)
        })
        .await
    }

    async fn revoke_admin_token(
        &self,
        id: &str,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<AdminTokenRecord, StoreError> {
        let id = id.to_owned();
        self.writer
            .submit(move |ctx| {
                ctx.conn
                    .execute("UPDATE admin_tokens SET revoked_at = coalesce(revoked_at, ?1) WHERE id = ?2", params![now.as_millis(), id])
                    .map_err(db_err)?;
                let token = ctx
                    .conn
                    .query_row(&format!("SELECT {} FROM admin_tokens WHERE id = ?1", rows::TOKEN_COLUMNS), [&id], rows::admin_token)
                    .optional()
                    .map_err(read_err)?
                    .ok_or_else(|| StoreError::NotFound { what: "admin token", name: id.clone() })?;
                ctx.append(audit)?;
                Ok(token)
            })
            .await
    }

    async fn record_instance(
        &self,
        instance: Instance,
        audit: AuditEvent,
    ) -> Result<Instance, StoreError> {
        self.writer
            .submit(move |ctx| {
                let stored = upsert_instance(ctx.conn, &instance)?;
                ctx.append(audit)?;
                Ok(stored)
            })
            .await
    }

    async fn list_instances(&self, agent: &AgentName) -> Result<Vec<Instance>, StoreError> {
        let agent = agent.to_string();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM instances WHERE agent = ?1 ORDER BY last_seen DESC, id",
                rows::INSTANCE_COLUMNS
            );
            all_rows(c, &sql, [agent], rows::instance)
        })
        .await
    }

    async fn live_instances(&self, now: Timestamp) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(move |c| {
            all_rows(
                c,
                "SELECT agent, count(*) FROM instances WHERE expires_at > ?1 GROUP BY agent ORDER BY agent",
                [now.as_millis()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.unsigned_abs())),
            )
        })
        .await
    }

    async fn create_join_token(
        &self,
        token: JoinTokenRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                ctx.conn
                    .execute(
                        &format!(
                            "INSERT INTO join_tokens ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            rows::JOIN_COLUMNS
                        ),
                        params![
                            token.id,
                            token.token_hash.as_slice(),
                            token.agent.as_str(),
                            token.created_by,
                            token.created_at.as_millis(),
                            token.expires_at.as_millis(),
                            token.redeemed_at.map(Timestamp::as_millis),
                        ],
                    )
                    .map_err(conflict("join token", &token.id))?;
                ctx.append(audit)?;
                Ok(())
            })
            .await
    }

    async fn join_token_by_hash(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<JoinTokenRecord>, StoreError> {
        let hash = hash.to_vec();
        self.read(move |c| {
            one_row(
                c,
                &format!(
                    "SELECT {} FROM join_tokens WHERE token_hash = ?1",
                    rows::JOIN_COLUMNS
                ),
                [hash],
                rows::join_token,
            )
        })
        .await
    }

    async fn redeem_join_token(
        &self,
        hash: &[u8; 32],
        now: Timestamp,
        instance: Instance,
        audit: AuditEvent,
    ) -> Result<Instance, StoreError> {
        let hash = hash.to_vec();
        self.writer
            .submit(move |ctx| {
                // The single writer runs jobs one at a time, and the condition
                // is checked and set in one statement: exactly one redemption wins.
                let changed = ctx
                    .conn
                    .execute(
                        "UPDATE join_tokens SET redeemed_at = ?1 WHERE token_hash = ?2 AND redeemed_at IS NULL AND expires_at > ?1",
                        params![now.as_millis(), hash],
                    )
                    .map_err(db_err)?;
                if changed != 1 {
                    return Err(StoreError::Precondition {
                        what: "join token",
                        why: "already redeemed or expired".into(),
                    });
                }
                let stored = upsert_instance(ctx.conn, &instance)?;
                ctx.append(audit)?;
                Ok(stored)
            })
            .await
    }

    async fn request_approval(
        &self,
        a: Approval,
        limits: crate::ApprovalLimits,
        audit: AuditEvent,
    ) -> Result<(Approval, bool), StoreError> {
        self.writer
            .submit(move |ctx| {
                let now = a.created_at.as_millis();
                // One writer runs jobs one at a time: the look-up and the
                // insert cannot interleave with another request's.
                let existing = one_row(
                    ctx.conn,
                    &format!(
                        "SELECT {} FROM approvals WHERE binding = ?1 AND state IN ('pending', 'approved') AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1",
                        rows::APPROVAL_COLUMNS
                    ),
                    params![a.binding, now],
                    rows::approval,
                )?
                .map(rows::ApprovalRow::approval)
                .transpose()?;
                if let Some(e) = existing {
                    return Ok((e, false));
                }
                let requester = a.subject.requester();
                let (agent_pending, requester_pending): (i64, i64) = ctx
                    .conn
                    .prepare_cached("SELECT count(*), count(*) FILTER (WHERE requester = ?3) FROM approvals WHERE agent = ?1 AND state = 'pending' AND expires_at > ?2")
                    .and_then(|mut st| {
                        st.query_row(params![a.subject.agent, now, requester], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                    })
                    .map_err(db_err)?;
                crate::columns::approval_quota(&a, &requester, agent_pending, requester_pending, limits)?;
                ctx.conn
                    .execute(
                        "DELETE FROM approvals WHERE expires_at < ?1",
                        [now - rows::APPROVAL_KEEP_MS],
                    )
                    .map_err(db_err)?;
                ctx.conn
                    .execute(
                        &format!(
                            "INSERT INTO approvals ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                            rows::APPROVAL_COLUMNS
                        ),
                        params![
                            a.id,
                            a.binding,
                            a.subject.agent,
                            a.state.as_str(),
                            now,
                            a.expires_at.as_millis(),
                            a.decided_by,
                            a.decided_at.map(Timestamp::as_millis),
                            a.reason,
                            a.used_at.map(Timestamp::as_millis),
                            rows::approval_record(&a)?,
                            requester,
                            a.subject.loose_binding(),
                        ],
                    )
                    .map_err(conflict("approval", &a.id))?;
                ctx.append(audit)?;
                Ok((a, true))
            })
            .await
    }

    async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| approval_row(c, &id)).await
    }

    async fn standing_denial(
        &self,
        loose: &str,
        now: Timestamp,
    ) -> Result<Option<Approval>, StoreError> {
        let loose = loose.to_owned();
        self.read(move |c| {
            one_row(
                c,
                &format!(
                    "SELECT {} FROM approvals WHERE loose = ?1 AND state = 'denied' AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1",
                    rows::APPROVAL_COLUMNS
                ),
                params![loose, now.as_millis()],
                rows::approval,
            )?
            .map(rows::ApprovalRow::approval)
            .transpose()
        })
        .await
    }

    async fn list_approvals(
        &self,
        state: Option<ApprovalState>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM approvals WHERE {} ORDER BY created_at DESC LIMIT ?2",
                rows::APPROVAL_COLUMNS,
                rows::approval_state_filter(state, "?1")
            );
            all_rows(
                c,
                &sql,
                params![now.as_millis(), i64::from(limit)],
                rows::approval,
            )?
            .into_iter()
            .map(rows::ApprovalRow::approval)
            .collect()
        })
        .await
    }

    async fn decide_approval(
        &self,
        id: &str,
        verdict: Verdict,
        by: &str,
        reason: Option<String>,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Approval, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.writer
            .submit(move |ctx| {
                let current = approval_row(ctx.conn, &id)?;
                let Some(a) = current.as_ref().filter(|a| a.state_at(now) == ApprovalState::Pending) else {
                    return Err(rows::approval_refusal("approval decision", &id, current.as_ref(), now));
                };
                let (state, expires) = match verdict {
                    Verdict::Approve => (
                        ApprovalState::Approved,
                        now + a.terms().ttl.as_duration(),
                    ),
                    Verdict::Deny => (ApprovalState::Denied, a.expires_at),
                };
                let changed = ctx
                    .conn
                    .execute(
                        "UPDATE approvals SET state = ?1, decided_by = ?2, decided_at = ?3, reason = ?4, expires_at = ?5 WHERE id = ?6 AND state = 'pending' AND expires_at > ?3",
                        params![state.as_str(), by, now.as_millis(), reason, expires.as_millis(), id],
                    )
                    .map_err(db_err)?;
                if changed != 1 {
                    return Err(rows::approval_refusal("approval decision", &id, current.as_ref(), now));
                }
                ctx.append(audit)?;
                approval_row(ctx.conn, &id)?.ok_or(StoreError::NotFound { what: "approval", name: id })
            })
            .await
    }

    async fn use_approval(
        &self,
        id: &str,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Approval, StoreError> {
        let id = id.to_owned();
        self.writer
            .submit(move |ctx| {
                // Checked and set in one statement: exactly one use wins.
                let changed = ctx
                    .conn
                    .execute(
                        "UPDATE approvals SET state = 'used', used_at = ?1 WHERE id = ?2 AND state = 'approved' AND expires_at > ?1",
                        params![now.as_millis(), id],
                    )
                    .map_err(db_err)?;
                let current = approval_row(ctx.conn, &id)?;
                if changed != 1 {
                    return Err(rows::approval_refusal("approval use", &id, current.as_ref(), now));
                }
                ctx.append(audit)?;
                current.ok_or(StoreError::NotFound { what: "approval", name: id })
            })
            .await
    }

    async fn record_task(&self, t: TaskRecord, audit: AuditEvent) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                if let Some(parent) = &t.parent {
                    let revoked: Option<Option<i64>> = ctx
                        .conn
                        .prepare_cached("SELECT revoked_at FROM tasks WHERE task = ?1")
                        .and_then(|mut st| st.query_row([parent], |r| r.get(0)))
                        .optional()
                        .map_err(db_err)?;
                    if matches!(revoked, Some(Some(_))) {
                        return Err(StoreError::Revoked { what: "task", id: parent.clone() });
                    }
                }
                let blocked: Option<i64> = ctx
                    .conn
                    .prepare_cached("SELECT revoked_at FROM revoked_instances WHERE instance = ?1")
                    .and_then(|mut st| st.query_row([&t.instance], |r| r.get(0)))
                    .optional()
                    .map_err(db_err)?;
                if blocked.is_some() {
                    return Err(StoreError::Revoked { what: "instance", id: t.instance.clone() });
                }
                require_active_agent(ctx.conn, &t.agent)?;
                ctx.conn
                    .prepare_cached(&format!(
                        "INSERT INTO tasks ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                        rows::TASK_COLUMNS
                    ))
                    .and_then(|mut st| {
                        st.execute(params![
                            t.task,
                            t.jti,
                            t.parent,
                            t.txn,
                            t.agent,
                            t.instance,
                            t.subject,
                            t.scope,
                            serde_json::to_string(&t.audience).unwrap_or_else(|_| "[]".into()),
                            i64::from(t.depth),
                            t.issued_at.as_millis(),
                            t.expires_at.as_millis(),
                            t.revoked_at.map(Timestamp::as_millis),
                            serde_json::to_string(&t.groups).unwrap_or_else(|_| "[]".into()),
                            t.attestor,
                        ])
                    })
                    .map_err(conflict("task", &t.task))?;
                ctx.append(audit)?;
                Ok(())
            })
            .await
    }

    async fn get_task(&self, task: &str) -> Result<Option<TaskRecord>, StoreError> {
        let task = task.to_owned();
        self.read(move |c| {
            // Cached: read the first time each task token is presented.
            one_row(
                c,
                &format!("SELECT {} FROM tasks WHERE task = ?1", rows::TASK_COLUMNS),
                [task],
                rows::task,
            )
        })
        .await
    }

    async fn tasks_of_txn(&self, txn: &str) -> Result<Vec<TaskRecord>, StoreError> {
        let txn = txn.to_owned();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM tasks WHERE txn = ?1 ORDER BY issued_at, task",
                rows::TASK_COLUMNS
            );
            all_rows(c, &sql, [txn], rows::task)
        })
        .await
    }

    async fn revoke(
        &self,
        target: RevokeTarget,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Vec<String>, StoreError> {
        self.write_agents(move |ctx| {
                let (roots_sql, key) = match &target {
                    RevokeTarget::Jti(v) => ("SELECT task FROM tasks WHERE jti = ?1", v),
                    RevokeTarget::Task(v) => ("SELECT task FROM tasks WHERE task = ?1", v),
                    RevokeTarget::Txn(v) => ("SELECT task FROM tasks WHERE txn = ?1", v),
                    RevokeTarget::Instance(v) => ("SELECT task FROM tasks WHERE instance = ?1", v),
                    RevokeTarget::Agent(v) => ("SELECT task FROM tasks WHERE agent = ?1", v),
                };
                let sql = format!(
                    "WITH RECURSIVE tree(task) AS ({roots_sql} \
                     UNION SELECT t.task FROM tasks t JOIN tree ON t.parent = tree.task) \
                     SELECT task FROM tree"
                );
                let all: Vec<String> = all_rows(ctx.conn, &sql, [key], |r| r.get(0))?;
                // An id that names no task is a mistake to report, not a
                // revocation that succeeded (instances and agents are checked
                // below, since they can be revoked before they hold a task).
                let none = |what: &'static str| StoreError::NotFound { what, name: key.clone() };
                match &target {
                    RevokeTarget::Jti(_) if all.is_empty() => return Err(none("task token")),
                    RevokeTarget::Task(_) if all.is_empty() => return Err(none("task")),
                    RevokeTarget::Txn(_) if all.is_empty() => return Err(none("transaction")),
                    _ => {}
                }
                let mut revoked = Vec::new();
                {
                    let mut st = ctx
                        .conn
                        .prepare("UPDATE tasks SET revoked_at = ?1 WHERE task = ?2 AND revoked_at IS NULL")
                        .map_err(db_err)?;
                    for t in all {
                        if st.execute(params![now.as_millis(), t]).map_err(db_err)? == 1 {
                            revoked.push(t);
                        }
                    }
                }
                match &target {
                    RevokeTarget::Instance(i) => {
                        let agent: Option<String> = ctx
                            .conn
                            .query_row("SELECT agent FROM instances WHERE id = ?1", [i], |r| r.get(0))
                            .optional()
                            .map_err(db_err)?;
                        let Some(agent) = agent else {
                            return Err(StoreError::NotFound { what: "instance", name: i.clone() });
                        };
                        ctx.conn
                            .execute(
                                "INSERT OR IGNORE INTO revoked_instances (instance, agent, revoked_at) VALUES (?1, ?2, ?3)",
                                params![i, agent, now.as_millis()],
                            )
                            .map_err(db_err)?;
                    }
                    RevokeTarget::Agent(a) => {
                        let n = ctx
                            .conn
                            .execute(
                                "UPDATE agents SET status = 'disabled', updated_at = ?1 WHERE name = ?2",
                                params![now.as_millis(), a],
                            )
                            .map_err(db_err)?;
                        if n == 0 {
                            return Err(StoreError::NotFound { what: "agent", name: a.clone() });
                        }
                    }
                    _ => {}
                }
                ctx.append(audit)?;
                Ok(revoked)
            })
            .await
    }

    async fn revoked_state(
        &self,
        now: Timestamp,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        self.read(move |c| {
            let tasks = all_rows(
                c,
                "SELECT task FROM tasks WHERE revoked_at IS NOT NULL AND expires_at > ?1",
                [now.as_millis()],
                |r| r.get(0),
            )?;
            let instances = all_rows(c, "SELECT instance FROM revoked_instances", [], |r| {
                r.get(0)
            })?;
            Ok((tasks, instances))
        })
        .await
    }

    async fn create_secret(&self, s: SecretRecord, audit: AuditEvent) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                let shown = s.credential_id();
                ctx.conn
                    .prepare_cached(&format!(
                        "INSERT INTO secrets ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                        rows::SECRET_COLUMNS
                    ))
                    .and_then(|mut st| {
                        st.execute(params![
                            s.name.as_str(),
                            s.owner.as_deref().unwrap_or(""),
                            s.version,
                            s.description,
                            s.wrapped_key,
                            s.ciphertext,
                            s.created_by,
                            s.created_at.as_millis(),
                            s.updated_at.as_millis(),
                            s.last_used_at.map(Timestamp::as_millis),
                        ])
                    })
                    .map_err(conflict("secret", &shown))?;
                ctx.append(audit)?;
                Ok(())
            })
            .await
    }

    async fn rotate_secret(&self, s: SecretRecord, audit: AuditEvent) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                let owner = s.owner.as_deref().unwrap_or("");
                let changed = ctx
                    .conn
                    .execute(
                        "UPDATE secrets SET version = ?3, wrapped_key = ?4, ciphertext = ?5, updated_at = ?6, \
                         description = coalesce(?7, description) \
                         WHERE name = ?1 AND owner = ?2 AND version = ?3 - 1",
                        params![
                            s.name.as_str(),
                            owner,
                            s.version,
                            s.wrapped_key,
                            s.ciphertext,
                            s.updated_at.as_millis(),
                            s.description,
                        ],
                    )
                    .map_err(db_err)?;
                if changed == 0 {
                    return Err(match secret_row(ctx.conn, &s.name, owner)? {
                        Some(_) => StoreError::Conflict {
                            what: "secret version",
                            name: s.credential_id(),
                        },
                        None => StoreError::NotFound {
                            what: "secret",
                            name: s.name.to_string(),
                        },
                    });
                }
                ctx.append(audit)?;
                Ok(())
            })
            .await
    }

    async fn delete_secret(
        &self,
        name: &SecretName,
        owner: Option<&str>,
        audit: AuditEvent,
    ) -> Result<SecretRecord, StoreError> {
        let (name, owner) = (name.clone(), owner.unwrap_or("").to_owned());
        self.writer
            .submit(move |ctx| {
                let found =
                    secret_row(ctx.conn, &name, &owner)?.ok_or_else(|| StoreError::NotFound {
                        what: "secret",
                        name: name.to_string(),
                    })?;
                ctx.conn
                    .execute(
                        "DELETE FROM secrets WHERE name = ?1 AND owner = ?2",
                        params![name.as_str(), owner],
                    )
                    .map_err(db_err)?;
                ctx.append(audit)?;
                Ok(found)
            })
            .await
    }

    async fn get_secret(
        &self,
        name: &SecretName,
        owner: Option<&str>,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let (name, owner) = (name.clone(), owner.unwrap_or("").to_owned());
        self.read(move |c| secret_row(c, &name, &owner)).await
    }

    async fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT {} FROM secrets ORDER BY name, owner",
                rows::SECRET_COLUMNS
            );
            all_rows(c, &sql, [], rows::secret)
        })
        .await
    }

    async fn touch_secrets(
        &self,
        used: Vec<(SecretName, Option<String>, Timestamp)>,
    ) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.writer
            .submit(move |ctx| {
                let mut st = ctx
                    .conn
                    .prepare_cached(
                        "UPDATE secrets SET last_used_at = max(coalesce(last_used_at, 0), ?3) \
                         WHERE name = ?1 AND owner = ?2",
                    )
                    .map_err(db_err)?;
                for (name, owner, at) in &used {
                    st.execute(params![
                        name.as_str(),
                        owner.as_deref().unwrap_or(""),
                        at.as_millis()
                    ])
                    .map_err(db_err)?;
                }
                Ok(())
            })
            .await
    }

    async fn observe_tool(
        &self,
        server: &str,
        def: ToolDefinition,
        hold_new: bool,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<PinOutcome, StoreError> {
        let server = server.to_owned();
        self.writer
            .submit(move |ctx| {
                let digest = def.digest();
                let text = def.pinned.to_string();
                let found: Option<(String, String, Option<String>)> = ctx
                    .conn
                    .query_row(
                        "SELECT digest, state, pending_digest FROM mcp_tools WHERE server = ?1 AND tool = ?2",
                        params![server, def.name],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .map_err(read_err)?;
                let step = PinStep::decide(
                    found.as_ref().map(|(d, st, p)| (d.as_str(), st.as_str(), p.as_deref())),
                    &digest,
                    hold_new,
                );
                let at = now.as_millis();
                let sql = match step {
                    // No approved definition: the announced one waits.
                    PinStep::InsertHeld => Some(format!(
                        "INSERT INTO mcp_tools ({}) VALUES (?1, ?2, '', 'null', 'new', ?3, ?4, ?5, ?5, NULL)",
                        rows::PIN_COLUMNS
                    )),
                    PinStep::InsertPinned => Some(format!(
                        "INSERT INTO mcp_tools ({}) VALUES (?1, ?2, ?3, ?4, 'pinned', NULL, NULL, ?5, ?5, NULL)",
                        rows::PIN_COLUMNS
                    )),
                    PinStep::ReplaceHeld => Some(
                        "UPDATE mcp_tools SET pending_digest = ?3, pending_definition = ?4, updated_at = ?5 \
                         WHERE server = ?1 AND tool = ?2"
                            .into(),
                    ),
                    PinStep::MarkChanged => Some(
                        "UPDATE mcp_tools SET state = 'changed', pending_digest = ?3, pending_definition = ?4, updated_at = ?5 \
                         WHERE server = ?1 AND tool = ?2"
                            .into(),
                    ),
                    PinStep::Repin | PinStep::StillHeld | PinStep::StillChanged => None,
                };
                if let Some(sql) = sql {
                    ctx.conn
                        .execute(&sql, params![server, def.name, digest, text, at])
                        .map_err(db_err)?;
                } else if step == PinStep::Repin {
                    ctx.conn
                        .execute(
                            "UPDATE mcp_tools SET state = 'pinned', pending_digest = NULL, pending_definition = NULL \
                             WHERE server = ?1 AND tool = ?2 AND state != 'pinned'",
                            params![server, def.name],
                        )
                        .map_err(db_err)?;
                }
                let (outcome, kind) = step.outcome();
                if let Some(kind) = kind {
                    let mut event = audit;
                    event.event = kind.into();
                    ctx.append(event)?;
                }
                Ok(outcome)
            })
            .await
    }

    async fn approve_tool(
        &self,
        server: &str,
        tool: &str,
        digest: &str,
        approved_by: &str,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<ToolPin, StoreError> {
        let (server, tool, by) = (server.to_owned(), tool.to_owned(), approved_by.to_owned());
        let digest = digest.to_ascii_lowercase();
        self.writer
            .submit(move |ctx| {
                let pin = pin_row(ctx.conn, &server, &tool)?.ok_or_else(|| StoreError::NotFound {
                    what: "tool",
                    name: format!("{server}/{tool}"),
                })?;
                let Some(pending) = pin.pending_digest.as_deref() else {
                    return Err(StoreError::Precondition {
                        what: "tool approval",
                        why: format!("{server}/{tool} has no new or changed definition waiting"),
                    });
                };
                // INVARIANT (approve what was reviewed): a server may announce
                // another definition between review and approval.
                if pending != digest {
                    return Err(StoreError::Precondition {
                        what: "tool approval",
                        why: format!(
                            "the definition of {server}/{tool} waiting is {pending}, not the reviewed {}; review it again",
                            warrant_core::text::shown(&digest, 64)
                        ),
                    });
                }
                ctx.conn
                    .execute(
                        "UPDATE mcp_tools SET digest = pending_digest, definition = pending_definition, state = 'pinned', \
                         pending_digest = NULL, pending_definition = NULL, updated_at = ?3, approved_by = ?4 \
                         WHERE server = ?1 AND tool = ?2",
                        params![server, tool, now.as_millis(), by],
                    )
                    .map_err(db_err)?;
                ctx.append(audit)?;
                pin_row(ctx.conn, &server, &tool)?.ok_or_else(|| StoreError::NotFound {
                    what: "tool",
                    name: format!("{server}/{tool}"),
                })
            })
            .await
    }

    async fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError> {
        let server = server.map(str::to_owned);
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM mcp_tools WHERE ?1 IS NULL OR server = ?1 ORDER BY server, tool",
                rows::PIN_COLUMNS
            );
            all_rows(c, &sql, [server], rows::tool_pin)
        })
        .await
    }

    async fn note_server_listed(&self, server: &str, now: Timestamp) -> Result<bool, StoreError> {
        let server = server.to_owned();
        self.writer
            .submit(move |ctx| {
                let added = ctx
                    .conn
                    .execute(
                        "INSERT OR IGNORE INTO mcp_servers (server, first_listed) VALUES (?1, ?2)",
                        params![server, now.as_millis()],
                    )
                    .map_err(db_err)?;
                Ok(added == 0)
            })
            .await
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        self.writer
            .submit_single(move |ctx| ctx.append(event))
            .await
    }

    async fn append_audits(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.writer
            .submit(move |ctx| {
                for e in events {
                    ctx.append(e)?;
                }
                Ok(())
            })
            .await
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let q = q.clone();
        self.read(move |c| {
            c.execute_batch("BEGIN").map_err(db_err)?;
            let rows = query_audit(c, &q);
            let _ = c.execute_batch("COMMIT");
            let mut out = rows?
                .iter()
                .map(|r| {
                    r.to_record().map_err(|e| {
                        StoreError::Corrupt(format!(
                            "audit record {} does not parse ({e}); run `warrant audit verify`",
                            r.seq
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn audit_after(
        &self,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<warrant_core::audit::StoredRow>, StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.read(move |c| {
            all_rows(
                c,
                &format!(
                    "SELECT {} FROM audit_log l WHERE l.seq > ?1 ORDER BY l.seq LIMIT ?2",
                    rows::AUDIT_COLUMNS_L
                ),
                params![seq, i64::from(limit)],
                rows::audit_row,
            )
        })
        .await
    }

    async fn verify_audit(&self) -> Result<ChainReport, StoreError> {
        let chain = self.chain.clone();
        self.read(move |c| {
            let mut v = match &chain {
                None => ChainVerifier::default(),
                Some(l) => {
                    let until = match legacy_marker(c)? {
                        None => 0,
                        Some(m) => {
                            match legacy_until(&m, l.as_ref()) {
                                Some(n) => n,
                                _ => {
                                    return Ok(ChainReport {
                                        verified: 0,
                                        unkeyed: 0,
                                        head: ChainHash::GENESIS,
                                        broken: Some(warrant_core::audit::ChainBreak {
                                            seq: 0,
                                            why: "the note of where the chain's keying starts was altered".into(),
                                        }),
                                    });
                                }
                            }
                        }
                    };
                    ChainVerifier::keyed(l.clone(), until)
                }
            };
            let mut st = c
                .prepare(&format!(
                    "SELECT {} FROM audit_log ORDER BY seq",
                    rows::AUDIT_COLUMNS
                ))
                .map_err(db_err)?;
            let mut it = st.query([]).map_err(db_err)?;
            while let Some(row) = it.next().map_err(db_err)? {
                let stored = match rows::audit_row(row) {
                    Ok(s) => s,
                    Err(e) => {
                        let seq = row
                            .get::<_, i64>(0)
                            .ok()
                            .and_then(|s| u64::try_from(s).ok())
                            .unwrap_or(v.verified() + 1);
                        return Ok(ChainReport {
                            verified: v.verified(),
                            unkeyed: v.unkeyed(),
                            head: v.head(),
                            broken: Some(warrant_core::audit::ChainBreak {
                                seq,
                                why: format!("its columns do not parse: {e}"),
                            }),
                        });
                    }
                };
                if let Err(b) = v.push(&stored) {
                    return Ok(ChainReport {
                        verified: v.verified(),
                        unkeyed: v.unkeyed(),
                        head: v.head(),
                        broken: Some(b),
                    });
                }
            }
            Ok(ChainReport {
                verified: v.verified(),
                unkeyed: v.unkeyed(),
                head: v.head(),
                broken: None,
            })
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(u64, ChainHash)>, StoreError> {
        self.read(move |c| {
            let row: Option<(i64, Vec<u8>)> = c
                .query_row(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(read_err)?;
            Ok(row.and_then(|(seq, h)| {
                Some((u64::try_from(seq).ok()?, ChainHash(h.try_into().ok()?)))
            }))
        })
        .await
    }

    async fn audit_hash(&self, seq: u64) -> Result<Option<ChainHash>, StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.read(move |c| {
            let h: Option<Vec<u8>> = c
                .query_row("SELECT hash FROM audit_log WHERE seq = ?1", [seq], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(read_err)?;
            Ok(h.and_then(|h| Some(ChainHash(h.try_into().ok()?))))
        })
        .await
    }

    async fn add_checkpoint(&self, cp: Checkpoint) -> Result<(), StoreError> {
        self.writer
            .submit_single(move |ctx| {
                ctx.conn
                    .execute(
                        "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time, signed) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            i64::try_from(cp.seq).unwrap_or(i64::MAX),
                            cp.hash.0.to_vec(),
                            cp.time.as_millis(),
                            cp.signed
                        ],
                    )
                    .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn list_checkpoints(&self, limit: usize) -> Result<Vec<Checkpoint>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            all_rows(
                c,
                "SELECT seq, hash, time, signed FROM audit_checkpoints ORDER BY seq DESC LIMIT ?1",
                [limit],
                |r| {
                    let hash: Vec<u8> = r.get(1)?;
                    Ok(Checkpoint {
                        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        hash: ChainHash(hash.try_into().unwrap_or([0; 32])),
                        time: Timestamp::from_millis(r.get(2)?),
                        signed: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    async fn close(&self) {
        self.writer.shutdown().await;
        let indexer = self.indexer.clone();
        let _ = tokio::task::spawn_blocking(move || indexer.stop()).await;
    }
}

/// The first sequence number whose time is at or after `t` (or head + 1). Binary
/// search on the primary key: time never decreases along the chain.
fn first_seq_at_or_after(c: &Connection, t: Timestamp) -> Result<i64, StoreError> {
    let head: i64 = c
        .query_row("SELECT coalesce(max(seq), 0) FROM audit_log", [], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    let (mut lo, mut hi) = (1_i64, head + 1);
    let mut probe = c
        .prepare_cached("SELECT time FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT 1")
        .map_err(db_err)?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match probe
            .query_row([mid], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(db_err)?
        {
            Some(time) if time < t.as_millis() => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// Newest-first rows matching `q`, inside the caller's read transaction: the
/// log above the index watermark, then the index below it (see `index`).
fn query_audit(
    c: &Connection,
    q: &AuditQuery,
) -> Result<Vec<warrant_core::audit::StoredRow>, StoreError> {
    let wm = index::watermark(c)?;
    let low = match q.since {
        Some(t) => first_seq_at_or_after(c, t)?,
        None => 1,
    };
    let limit = i64::from(q.limit);
    // Filters are always applied to the log's own columns, also for rows found through the index.
    let filters = "(?1 IS NULL OR l.agent = ?1) AND (?2 IS NULL OR l.event = ?2 OR substr(l.event, 1, length(?2) + 1) = ?2 || '.') \
        AND (?7 IS NULL OR l.user = ?7) AND (?8 IS NULL OR l.task = ?8) AND (?9 IS NULL OR l.txn = ?9) \
        AND (?10 IS NULL OR l.decision = ?10)";
    let cols = rows::AUDIT_COLUMNS_L;
    let collect = |sql: &str,
                   p: &[&dyn rusqlite::ToSql]|
     -> Result<Vec<warrant_core::audit::StoredRow>, StoreError> {
        all_rows(c, sql, p, rows::audit_row)
    };
    let mut out = collect(
        &format!(
            "SELECT {cols} FROM audit_log l WHERE l.seq > ?3 AND l.seq >= ?4 AND ?6 IS ?6 AND {filters} ORDER BY l.seq DESC LIMIT ?5"
        ),
        params![
            q.agent,
            q.event,
            wm,
            low,
            limit,
            Option::<String>::None,
            q.user,
            q.task,
            q.txn,
            q.decision
        ],
    )?;
    let rest = limit - i64::try_from(out.len()).unwrap_or(limit);
    if rest > 0 && wm >= low {
        // The most selective key first.
        let key = q
            .task
            .as_ref()
            .map(|t| format!("t:{t}"))
            .or_else(|| q.txn.as_ref().map(|x| format!("x:{x}")))
            .or_else(|| q.agent.as_ref().map(|a| format!("a:{a}")))
            .or_else(|| q.user.as_ref().map(|u| format!("u:{u}")))
            .or_else(|| q.event.as_ref().map(|e| format!("e:{e}")));
        let older = match key {
            Some(k) => collect(
                &format!(
                    "SELECT {cols} FROM idx.audit_index i JOIN audit_log l ON l.seq = i.seq
                     WHERE i.key = ?6 AND i.seq <= ?3 AND i.seq >= ?4 AND {filters} ORDER BY i.seq DESC LIMIT ?5"
                ),
                params![q.agent, q.event, wm, low, rest, k, q.user, q.task, q.txn, q.decision],
            )?,
            None => collect(
                &format!("SELECT {cols} FROM audit_log l WHERE l.seq <= ?3 AND l.seq >= ?4 AND ?6 IS ?6 AND {filters} ORDER BY l.seq DESC LIMIT ?5"),
                params![q.agent, q.event, wm, low, rest, Option::<String>::None, q.user, q.task, q.txn, q.decision],
            )?,
        };
        out.extend(older);
    }
    Ok(out)
}
