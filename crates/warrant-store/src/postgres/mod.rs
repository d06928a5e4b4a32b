//! The PostgreSQL store, shared by several brokers.
//!
//! Each broker runs the same shape as on SQLite: one writer thread with a
//! group-commit write connection ([`writer`]), a small pool of read
//! connections on tokio's blocking pool, and the agent inventory in memory.
//! What changes with several brokers:
//!
//! - the audit chain's head is a row every writer locks for its whole
//!   transaction, so all brokers extend one chain and it never forks;
//! - every change another broker's memory must follow is numbered under the
//!   same lock and announced with `NOTIFY`; [`feed`] delivers them in order;
//! - migrations run under an advisory lock, so brokers may start together;
//! - every connection has a statement timeout, and a lost connection is
//!   re-opened on next use (the writer, the feed and the readers alike).

mod cached;
mod feed;
mod migrations;
mod rows;
mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use cached::{Cached, Db, Statements};
use tokio::sync::mpsc;
use warrant_core::admin::AdminTokenRecord;
use warrant_core::agent::{Agent, AgentStatus};
use warrant_core::api::ClusterMember;
use warrant_core::approval::{Approval, ApprovalState, Verdict};
use warrant_core::audit::{
    AuditEvent, AuditRecord, ChainBreak, ChainHash, ChainLinker, ChainVerifier, Checkpoint,
};
use warrant_core::identity::{Instance, JoinTokenRecord};
use warrant_core::keys::SigningKeyRecord;
use warrant_core::mcp::{PinOutcome, ToolDefinition, ToolPin};
use warrant_core::name::AgentName;
use warrant_core::secret::{SecretName, SecretRecord};
use warrant_core::task::{RevokeTarget, TaskRecord};
use warrant_core::time::Timestamp;

use crate::agents::AgentCache;
use crate::chain::{LEGACY_KEY, legacy_mac, legacy_until};
use crate::pins::PinStep;
use crate::{AuditQuery, ChainReport, Change, ChangeKind, Store, StoreError};
use writer::{WriteCtx, Writer};

/// The `LISTEN`/`NOTIFY` channel of the change feed.
pub(crate) const CHANNEL: &str = "warrant_changes";

/// Tuning for the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The most jobs committed together.
    pub max_batch: usize,
    /// The chain key (see [`crate::SqliteOptions::chain`]).
    pub chain: Option<Arc<dyn ChainLinker>>,
    /// The longest any statement may run.
    pub statement_timeout: Duration,
    /// The longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// The most read connections.
    pub readers: usize,
    /// PEM CA certificate(s) to trust for the database's TLS certificate
    /// (default: the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("max_batch", &self.max_batch)
            .field("statement_timeout", &self.statement_timeout)
            .field("readers", &self.readers)
            .finish_non_exhaustive()
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            chain: None,
            statement_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            readers: 16,
            ca_file: None,
        }
    }
}

/// Opens connections to one database, set up alike.
#[derive(Clone)]
pub(crate) struct Connector {
    config: postgres::Config,
    shown: Arc<str>,
    statement_timeout: Duration,
    /// With `sslmode=require` (the only mode allowed beyond loopback): TLS,
    /// the certificate verified (chain and host name). Otherwise, on
    /// loopback or a local socket, plain: libpq's `prefer` would try TLS
    /// without verifying, which protects nothing.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The schema warrant's tables live in, fixed at open: every connection
    /// resolves names in `pg_catalog` and there only (temporary objects
    /// last), so an object placed earlier on a role's `search_path` shadows
    /// nothing.
    schema: Option<Arc<str>>,
}

/// A TLS client for the database: rustls on aws-lc-rs, trusting `ca_file`
/// or the system's roots.
pub(crate) fn tls_client(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            let certs = CertificateDer::pem_file_iter(f)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "the store's CA file `{}` cannot be read as PEM: {e}",
                        f.display()
                    ))
                })?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "the store's CA file `{}` holds a certificate that cannot be a root: {e}",
                        f.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "the store's CA file `{}` holds no certificate",
                    f.display()
                )));
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl Connector {
    pub(crate) fn connect(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        };
        let mut client = connected.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot reach PostgreSQL at {}: {}",
                self.shown,
                describe(&e)
            ))
        })?;
        let ms = self.statement_timeout.as_millis();
        let path = match &self.schema {
            Some(s) => format!(
                // pg_catalog is searched first when not named; pg_temp last.
                "SET search_path = \"{}\", pg_temp; ",
                s.replace('"', "\"\"")
            ),
            None => String::new(),
        };
        client
            .batch_execute(&format!(
                "{path}SET statement_timeout = {ms}; SET lock_timeout = {ms}; SET idle_in_transaction_session_timeout = {}",
                ms * 3
            ))
            .map_err(db_err)?;
        Ok(client)
    }
}

/// A PostgreSQL error in the broker's words: the server's message and
/// SQLSTATE (never its DETAIL, which can quote row values).
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    if e.is_closed() {
        return "the connection to PostgreSQL was lost".into();
    }
    e.to_string()
}

pub(crate) fn db_err(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => StoreError::Unavailable(format!(
            "the database is read-only ({}); point the store at the primary",
            describe(&e)
        )),
        Some(c) if *c == SqlState::QUERY_CANCELED => StoreError::Unavailable(format!(
            "a statement ran past the statement timeout and was cancelled ({})",
            describe(&e)
        )),
        _ => StoreError::Unavailable(describe(&e)),
    }
}

/// A unique-constraint failure as `Conflict { what, name }`.
fn conflict(what: &'static str, name: &str) -> impl FnOnce(postgres::Error) -> StoreError {
    let name = name.to_owned();
    move |e| {
        if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
            StoreError::Conflict { what, name }
        } else {
            db_err(e)
        }
    }
}

/// Whether `url` is a PostgreSQL connection URL warrant can use; the
/// problem, in words that never repeat the password, if not.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        // Not shown: a key=value connection string carries its password
        // where no URL rule would hide it.
        return Err(
            "the value is neither `sqlite` nor a `postgres://user:password@host:port/database` URL (not shown: it may hold a password)".into(),
        );
    }
    let config = url.parse::<postgres::Config>().map_err(|e| {
        format!(
            "{} is not a usable PostgreSQL URL: {}",
            shown_postgres_url(url),
            describe(&e)
        )
    })?;
    // INVARIANT (no database credentials in the clear): beyond loopback or
    // a local socket, the connection must be TLS.
    let local_addrs = config.get_hostaddrs().iter().all(|a| a.is_loopback());
    let local = local_addrs
        && config.get_hosts().iter().all(|h| match h {
            postgres::config::Host::Unix(_) => true,
            postgres::config::Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback())
            }
        });
    if !local && config.get_ssl_mode() != postgres::config::SslMode::Require {
        return Err(format!(
            "{}: a database beyond this machine must be reached over TLS: add `?sslmode=require` (the certificate is verified; give its CA with store_ca_file if it is not a public one)",
            shown_postgres_url(url)
        ));
    }
    Ok(())
}

/// `url` with any password hidden, for messages.
pub fn shown_postgres_url(url: &str) -> String {
    warrant_core::text::shown_url(url)
}

fn all<T>(
    c: &mut impl Db,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    f: fn(&postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    c.query(sql, params)
        .map_err(db_err)?
        .iter()
        .map(f)
        .collect()
}

fn one<T>(
    c: &mut impl Db,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    f: fn(&postgres::Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    c.query_opt(sql, params)
        .map_err(db_err)?
        .as_ref()
        .map(f)
        .transpose()
}

/// The approval `id`, if any.
fn approval_row(c: &mut impl Db, id: &str) -> Result<Option<Approval>, StoreError> {
    let sql = format!(
        "SELECT {} FROM approvals WHERE id = $1",
        rows::APPROVAL_COLUMNS
    );
    one(c, &sql, &[&id], rows::approval)
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The triggers warrant creates on `audit_log`, and the function they run.
const OWN_TRIGGERS: [(&str, &str); 2] = [
    (
        "audit_log_no_update",
        "CREATE TRIGGER audit_log_no_update BEFORE DELETE OR UPDATE ON audit_log FOR EACH ROW EXECUTE FUNCTION warrant_audit_append_only()",
    ),
    (
        "audit_log_no_truncate",
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION warrant_audit_append_only()",
    ),
];
const GUARD_BODY: &str = "\nBEGIN\n  RAISE EXCEPTION 'audit_log is append-only';\nEND;\n";
const GUARD_FUNCTION: &str = "CREATE OR REPLACE FUNCTION warrant_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  RAISE EXCEPTION 'audit_log is append-only';\nEND;\n$$";

/// A trigger as the catalogue has it.
struct Trigger {
    name: String,
    table: String,
    /// Its definition, without the schema.
    def: String,
    enabled: bool,
}

/// The triggers in this schema, and the guard function's body.
fn triggers(c: &mut impl Db) -> Result<(Vec<Trigger>, Option<String>), StoreError> {
    let rows = c
        .query(
            "SELECT t.tgname::text, c.relname::text, pg_get_triggerdef(t.oid), t.tgenabled = 'O', n.nspname::text \
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT t.tgisinternal AND n.nspname = current_schema() ORDER BY 1",
            &[],
        )
        .map_err(db_err)?;
    let found = rows
        .iter()
        .map(|r| {
            let schema: String = r.get(4);
            let def: String = r.get(2);
            Trigger {
                name: r.get(0),
                table: r.get(1),
                def: def.replace(&format!(" ON {schema}."), " ON "),
                enabled: r.get(3),
            }
        })
        .collect();
    let body = c
        .query_opt(
            "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE p.proname = 'warrant_audit_append_only' AND n.nspname = current_schema()",
            &[],
        )
        .map_err(db_err)?
        .map(|r| r.get(0));
    Ok((found, body))
}

const TRAIL_ADVICE: &str =
    "find out who changed it, restore it, and check the trail with `warrant audit verify`";

/// Refuses rules (`CREATE RULE ... DO INSTEAD`) and row-level security on
/// warrant's tables: either can make a write report success and store
/// nothing, or hide rows from the broker.
fn refuse_rules_and_row_security(c: &mut impl Db) -> Result<(), StoreError> {
    let found = c
        .query_opt(
            "SELECT cl.relname::text, r.rulename::text FROM pg_rewrite r \
             JOIN pg_class cl ON cl.oid = r.ev_class JOIN pg_namespace n ON n.oid = cl.relnamespace \
             WHERE n.nspname = current_schema() AND r.rulename <> '_RETURN' \
             UNION ALL SELECT cl.relname::text, 'row level security' FROM pg_class cl \
             JOIN pg_namespace n ON n.oid = cl.relnamespace \
             WHERE n.nspname = current_schema() AND (cl.relrowsecurity OR cl.relforcerowsecurity) \
             LIMIT 1",
            &[],
        )
        .map_err(db_err)?;
    if let Some(r) = found {
        let (table, what): (String, String) = (r.get(0), r.get(1));
        return Err(StoreError::AuditUnavailable(format!(
            "the database has a rule or row security warrant did not create (`{}` on `{}`); it could make writes, revocations above all, report success and store nothing: {TRAIL_ADVICE}",
            what.escape_debug(),
            table.escape_debug()
        )));
    }
    Ok(())
}

/// Refuses a database whose triggers are not exactly warrant's own, or
/// whose guard function was replaced or disabled, or that has rules or row
/// security on warrant's tables.
pub(crate) fn refuse_foreign_triggers(c: &mut impl Db) -> Result<(), StoreError> {
    refuse_rules_and_row_security(c)?;
    let (found, body) = triggers(c)?;
    if let Some(Trigger { name, table, .. }) = found.iter().find(|t| {
        !t.enabled
            || !OWN_TRIGGERS
                .iter()
                .any(|(own, want)| t.name == *own && t.def == *want)
    }) {
        return Err(StoreError::AuditUnavailable(format!(
            "the database has a trigger warrant did not create, or one of its own changed or disabled (`{}` on `{}`); it could alter what is stored, the audit trail above all: {TRAIL_ADVICE}",
            name.escape_debug(),
            table.escape_debug()
        )));
    }
    if let Some((own, _)) = OWN_TRIGGERS
        .iter()
        .find(|(own, _)| !found.iter().any(|t| t.name == *own))
    {
        return Err(StoreError::AuditUnavailable(format!(
            "the database lacks warrant's trigger `{own}`, which keeps the audit trail append-only: {TRAIL_ADVICE}"
        )));
    }
    if body.as_deref() != Some(GUARD_BODY) {
        return Err(StoreError::AuditUnavailable(format!(
            "warrant's function `warrant_audit_append_only`, which keeps the audit trail append-only, was changed: {TRAIL_ADVICE}"
        )));
    }
    Ok(())
}

/// Puts back warrant's guards that were dropped, disabled or replaced (at
/// open only; what was done meanwhile shows in `warrant audit verify`),
/// then refuses anything else.
fn restore_own_triggers(c: &mut impl Db) -> Result<(), StoreError> {
    let (found, body) = triggers(c)?;
    if body.as_deref() != Some(GUARD_BODY) {
        tracing::warn!(
            "warrant's audit trail guard function was changed and is restored; check the trail with `warrant audit verify`"
        );
        c.batch_execute(GUARD_FUNCTION).map_err(db_err)?;
    }
    for (name, sql) in OWN_TRIGGERS {
        match found.iter().find(|t| t.name == name) {
            None => {
                tracing::warn!(
                    trigger = name,
                    "warrant's audit trail guard was missing from the database and is restored; check the trail with `warrant audit verify`"
                );
                c.batch_execute(sql).map_err(db_err)?;
            }
            Some(t) if !t.enabled => {
                tracing::warn!(
                    trigger = name,
                    "warrant's audit trail guard was disabled and is enabled again; check the trail with `warrant audit verify`"
                );
                c.batch_execute(&format!("ALTER TABLE audit_log ENABLE TRIGGER {name}"))
                    .map_err(db_err)?;
            }
            Some(_) => {}
        }
    }
    refuse_foreign_triggers(c)
}

/// Whether record `seq`, stored with `hash`, links; `None` if it is not
/// stored with that hash.
fn record_links(
    c: &mut impl Db,
    linker: Option<&dyn ChainLinker>,
    seq: u64,
    hash: &ChainHash,
) -> Result<Option<bool>, StoreError> {
    let Some(row) = c
        .query_opt(
            "SELECT hash, prev_hash, body FROM audit_log WHERE seq = $1",
            &[&i64_of(seq)],
        )
        .map_err(db_err)?
    else {
        return Ok(None);
    };
    let (stored, prev, body): (Vec<u8>, Vec<u8>, String) = (row.get(0), row.get(1), row.get(2));
    if stored != hash.0.as_slice() {
        return Ok(None);
    }
    let Ok(prev) = <[u8; 32]>::try_from(prev.as_slice()).map(ChainHash) else {
        return Ok(Some(false));
    };
    let Some(l) = linker else {
        return Ok(Some(ChainHash::link(&prev, body.as_bytes()) == *hash));
    };
    if l.link(&prev, body.as_bytes()) == *hash {
        return Ok(Some(true));
    }
    if ChainHash::link(&prev, body.as_bytes()) != *hash {
        return Ok(Some(false));
    }
    Ok(Some(
        legacy_marker(c)?
            .and_then(|m| legacy_until(&m, l))
            .is_some_and(|n| seq <= n),
    ))
}

fn legacy_marker(c: &mut impl Db) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(c.query_opt(
        "SELECT value FROM audit_meta WHERE key = $1",
        &[&LEGACY_KEY],
    )
    .map_err(db_err)?
    .map(|r| r.get(0)))
}

/// Notes, once, up to which record the chain is not keyed (none, for a
/// database warrant created keyed), and refuses a key the note was not
/// made with: every broker sharing a store must have the same KEK.
fn ensure_legacy_marker(client: &mut Client, linker: &dyn ChainLinker) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(db_err)?;
    tx.execute("LOCK TABLE audit_meta IN EXCLUSIVE MODE", &[])
        .map_err(db_err)?;
    let marker = match legacy_marker(&mut Cached::new(&mut tx, &mut Statements::new()))? {
        Some(m) => m,
        None => {
            let last = tx
                .query_opt(
                    "SELECT seq, body FROM audit_log ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .map_err(db_err)?;
            let until = match last {
                None => 0,
                Some(row) => {
                    let body: String = row.get(1);
                    let keyed = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("keyed").and_then(serde_json::Value::as_bool))
                        .unwrap_or(false);
                    if keyed {
                        return tx.commit().map_err(db_err);
                    }
                    u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
                }
            };
            let mut value = until.to_be_bytes().to_vec();
            value.extend(legacy_mac(linker, until));
            tx.execute(
                "INSERT INTO audit_meta (key, value) VALUES ($1, $2)",
                &[&LEGACY_KEY, &value],
            )
            .map_err(db_err)?;
            value
        }
    };
    if legacy_until(&marker, linker).is_none() {
        return Err(StoreError::AuditUnavailable(
            "this broker's key-encryption key is not the one this store's audit trail is keyed with: every broker sharing a store needs the same WARRANT_KEK (or the note of where keying starts was altered)".into(),
        ));
    }
    tx.commit().map_err(db_err)
}

/// Checks, inside a write transaction holding the chain head, that the
/// trail is as the head says: the triggers are warrant's own, the newest
/// record is the head and links, and the last record this broker wrote is
/// still there as written. Returns the head (`None`: empty).
fn audit_intact(ctx: &mut WriteCtx<'_, '_>) -> Result<Option<(u64, ChainHash)>, StoreError> {
    refuse_foreign_triggers(&mut ctx.tx)?;
    let (seq, hash) = ctx.head();
    let max: i64 = ctx
        .tx
        .query_one("SELECT coalesce(max(seq), 0) FROM audit_log", &[])
        .map_err(db_err)?
        .get(0);
    if u64::try_from(max).unwrap_or(u64::MAX) != seq {
        return Err(StoreError::AuditUnavailable(format!(
            "the audit trail's newest record is {max}, but the chain head says {seq}: records were added or removed behind the brokers' backs; find out who did, and check the trail with `warrant audit verify` against exported checkpoints"
        )));
    }
    // The change feed holds nothing past the version the head has given
    // out: a row planted past it would stall every broker's feed.
    let (planted, max_version): (bool, i64) = {
        let r = ctx
            .tx
            .query_one(
                "SELECT coalesce(max(version), 0) > (SELECT changes FROM audit_head WHERE id = 1), coalesce(max(version), 0) FROM changes",
                &[],
            )
            .map_err(db_err)?;
        (r.get(0), r.get(1))
    };
    if planted {
        return Err(StoreError::AuditUnavailable(format!(
            "the change feed holds a change (version {max_version}) no broker wrote; brokers would miss revocations made after it: find out who wrote it and remove it"
        )));
    }
    if seq == 0 {
        return Ok(None);
    }
    let linker = ctx.linker;
    if record_links(&mut ctx.tx, linker, seq, &hash)? != Some(true) {
        return Err(StoreError::AuditUnavailable(format!(
            "audit record {seq}, the newest, does not verify: it was rewritten or planted; find out who did, and check the trail with `warrant audit verify` against exported checkpoints"
        )));
    }
    if let Some((wseq, whash)) = ctx.written
        && record_links(&mut ctx.tx, linker, wseq, &whash)? != Some(true)
    {
        return Err(StoreError::AuditUnavailable(format!(
            "audit record {wseq}, the last this broker wrote, is no longer in the database as written: records were removed or replaced; find out who did, and check the trail with `warrant audit verify` against exported checkpoints"
        )));
    }
    Ok(Some((seq, hash)))
}

fn refuse_revoked_instance(c: &mut impl Db, instance: &str) -> Result<(), StoreError> {
    let found = c
        .query_opt(
            "SELECT 1 FROM revoked_instances WHERE instance = $1",
            &[&instance],
        )
        .map_err(db_err)?;
    match found {
        Some(_) => Err(StoreError::Revoked {
            what: "instance",
            id: instance.to_owned(),
        }),
        None => Ok(()),
    }
}

/// A write that reported success but is not in the database as written.
fn not_stored(what: &str) -> StoreError {
    StoreError::AuditUnavailable(format!(
        "the {what} did not read back as written (is there a rule or trigger on warrant's tables?); nothing was changed"
    ))
}

/// `agent`'s status reads back as `want`, or nothing is committed.
fn require_status(c: &mut impl Db, agent: &str, want: AgentStatus) -> Result<(), StoreError> {
    let status: Option<String> = c
        .query_opt("SELECT status FROM agents WHERE name = $1", &[&agent])
        .map_err(db_err)?
        .map(|r| r.get(0));
    if status.as_deref() == Some(want.as_str()) {
        Ok(())
    } else {
        Err(not_stored("agent status change"))
    }
}

/// `Revoked { what: "agent" }` unless `agent` exists and is active, as the
/// database has it now. A broker's snapshot may be a few milliseconds
/// behind a disable through another broker; what is recorded is checked
/// against the database.
fn require_active_agent(c: &mut impl Db, agent: &str) -> Result<(), StoreError> {
    let status: Option<String> = c
        .query_opt("SELECT status FROM agents WHERE name = $1", &[&agent])
        .map_err(db_err)?
        .map(|r| r.get(0));
    if status.as_deref() == Some(AgentStatus::Active.as_str()) {
        Ok(())
    } else {
        Err(StoreError::Revoked {
            what: "agent",
            id: agent.to_owned(),
        })
    }
}

fn upsert_instance(c: &mut impl Db, i: &Instance) -> Result<Instance, StoreError> {
    // INVARIANT (revocation is never outrun): checked in the same
    // transaction that records the issuance, which holds the chain head's
    // lock as every write does, so a block or disable through any broker
    // is either seen here or committed after this.
    require_active_agent(c, i.agent.as_str())?;
    refuse_revoked_instance(c, i.id.as_str())?;
    let sql = format!(
        "INSERT INTO instances ({}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE SET evidence = excluded.evidence, \
         last_seen = excluded.last_seen, expires_at = excluded.expires_at \
         RETURNING {}",
        rows::INSTANCE_COLUMNS,
        rows::INSTANCE_COLUMNS
    );
    let row = c
        .query_one(
            &sql,
            &[
                &i.id.as_str(),
                &i.agent.as_str(),
                &i.attestor.as_str(),
                &i.evidence,
                &i.first_seen.as_millis(),
                &i.last_seen.as_millis(),
                &i.expires_at.as_millis(),
            ],
        )
        .map_err(db_err)?;
    rows::instance(&row)
}

fn secret_row(
    c: &mut impl Db,
    name: &SecretName,
    owner: &str,
) -> Result<Option<SecretRecord>, StoreError> {
    let sql = format!(
        "SELECT {} FROM secrets WHERE name = $1 AND owner = $2",
        rows::SECRET_COLUMNS
    );
    one(c, &sql, &[&name.as_str(), &owner], rows::secret)
}

fn pin_row(c: &mut impl Db, server: &str, tool: &str) -> Result<Option<ToolPin>, StoreError> {
    let sql = format!(
        "SELECT {} FROM mcp_tools WHERE server = $1 AND tool = $2",
        rows::PIN_COLUMNS
    );
    one(c, &sql, &[&server, &tool], rows::tool_pin)
}

fn secret_key(name: &SecretName, owner: Option<&str>) -> String {
    match owner {
        Some(o) if !o.is_empty() => format!("{name}@{o}"),
        _ => name.to_string(),
    }
}

/// Idle read connections.
#[derive(Default)]
struct Pool(Mutex<Vec<(Client, Statements)>>);

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.0.lock());
        if !idle.is_empty() {
            // Closing a client blocks on its runtime: not on an async thread.
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

fn insert_key(
    ctx: &mut WriteCtx<'_, '_>,
    key: &SigningKeyRecord,
    audit: AuditEvent,
) -> Result<(), StoreError> {
    ctx.tx
        .execute(
            &format!(
                "INSERT INTO signing_keys ({}) VALUES ($1, $2, $3, $4, $5, $6)",
                rows::KEY_COLUMNS
            ),
            &[
                &key.kid,
                &key.alg.as_str(),
                &key.public_key,
                &key.sealed_private_key,
                &key.created_at.as_millis(),
                &key.activates_at.as_millis(),
            ],
        )
        .map_err(conflict("signing key", &key.kid))?;
    ctx.changed(ChangeKind::SigningKey, &key.kid)?;
    ctx.append(audit)?;
    Ok(())
}

/// The one schema holding warrant's chain head table, or, in a new
/// database, the one tables are created in. Refused when there are several:
/// a second copy of warrant's tables could shadow the first.
fn warrant_schema(c: &mut Client) -> Result<String, StoreError> {
    let found: Vec<String> = c
        .query(
            "SELECT n.nspname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = 'audit_head' AND c.relkind = 'r'",
            &[],
        )
        .map_err(db_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => c
            .query_one("SELECT pg_catalog.current_schema()::text", &[])
            .map_err(db_err)?
            .get::<_, Option<String>>(0)
            .ok_or_else(|| {
                StoreError::Unavailable(
                    "the database role has no schema to create warrant's tables in (its search_path names none that exists)".into(),
                )
            }),
        several => Err(StoreError::AuditUnavailable(format!(
            "warrant's tables appear in several schemas ({}); one could shadow the other: find out who made them, and keep one",
            several.join(", ")
        ))),
    }
}

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    connector: Connector,
    chain: Option<Arc<dyn ChainLinker>>,
    writer: Writer,
    readers: Arc<Pool>,
    permits: tokio::sync::Semaphore,
    agents: Arc<AgentCache>,
    feed: Arc<feed::FeedState>,
    follower: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    feed_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.connector.shown)
            .finish_non_exhaustive()
    }
}

/// Where the feed stands, for `/metrics` and `warrant status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStatus {
    /// The last change version applied.
    pub position: u64,
    /// Whether the listening connection is up.
    pub connected: bool,
    /// Milliseconds from the last change's commit to its delivery here.
    pub last_lag_ms: i64,
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or key=value string), applies
    /// migrations and starts the writer and the change feed. Blocking: call
    /// it off the async threads.
    pub fn open(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let shown: Arc<str> = shown_postgres_url(url).into();
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            StoreError::Unavailable(format!(
                "the store URL {shown} is not a PostgreSQL connection string: {}",
                describe(&e)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        config.application_name("warrant");
        // A link that stops carrying packets (not closed) is noticed within
        // seconds rather than at the next statement timeout.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .tcp_user_timeout(Duration::from_secs(10));
        let connector = Connector {
            config: config.clone(),
            shown,
            statement_timeout: options.statement_timeout,
            tls: match config.get_ssl_mode() {
                postgres::config::SslMode::Require => Some(tls_client(options.ca_file.as_deref())?),
                _ => None,
            },
            schema: None,
        };
        let connector = Connector {
            schema: Some(warrant_schema(&mut connector.connect()?)?.into()),
            ..connector
        };
        let mut client = connector.connect()?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on', current_setting('server_version_num')::int",
                &[],
            )
            .map_err(db_err)?;
        let (standby, read_only, version): (bool, bool, i32) = (row.get(0), row.get(1), row.get(2));
        if standby || read_only {
            return Err(StoreError::Unavailable(format!(
                "the database at {} is read-only ({}); point the store at the primary",
                connector.shown,
                if standby {
                    "a standby in recovery"
                } else {
                    "default_transaction_read_only is on"
                }
            )));
        }
        if version < 130_000 {
            return Err(StoreError::Unavailable(format!(
                "the database at {} runs PostgreSQL {}, and warrant needs 13 or newer",
                connector.shown,
                version / 10_000
            )));
        }
        migrations::apply(&mut client)?;
        {
            let mut tx = client.transaction().map_err(db_err)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&0x0077_6172_7261_6e75_i64],
            )
            .map_err(db_err)?;
            restore_own_triggers(&mut Cached::new(&mut tx, &mut Statements::new()))?;
            tx.commit().map_err(db_err)?;
        }
        if let Some(l) = &options.chain {
            ensure_legacy_marker(&mut client, l.as_ref())?;
        }
        // The feed starts where the store is now: what the broker loads
        // next is at least this fresh, and every later change is delivered.
        let position: i64 = client
            .query_one("SELECT changes FROM audit_head WHERE id = 1", &[])
            .map_err(db_err)?
            .get(0);
        let agents = Arc::new(AgentCache::default());
        let feed = Arc::new(feed::FeedState::default());
        feed.position
            .store(u64::try_from(position).unwrap_or(0), Ordering::Release);
        feed.applied
            .store(u64::try_from(position).unwrap_or(0), Ordering::Release);
        let writer = Writer::start(
            connector.clone(),
            client,
            options.max_batch,
            options.chain.clone(),
            Box::new(|_| {}),
        )?;
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = {
            let (connector, feed, agents) = (connector.clone(), feed.clone(), agents.clone());
            std::thread::Builder::new()
                .name("warrant-pg-feed".into())
                .spawn(move || {
                    feed::run(
                        connector,
                        feed,
                        tx,
                        Box::new(move |c: &Change| {
                            if matches!(
                                c.kind,
                                ChangeKind::Agent | ChangeKind::BlocksLifted | ChangeKind::Resync
                            ) {
                                agents.invalidate();
                            }
                        }),
                    )
                })
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start the change feed: {e}"))
                })?
        };
        Ok(Self {
            connector,
            chain: options.chain,
            writer,
            readers: Arc::new(Pool::default()),
            permits: tokio::sync::Semaphore::new(options.readers.max(1)),
            agents,
            feed,
            follower: Mutex::new(Some(rx)),
            feed_thread: Mutex::new(Some(thread)),
        })
    }

    /// The database, for messages (no password).
    pub fn shown(&self) -> &str {
        &self.connector.shown
    }

    /// Where the change feed stands.
    pub fn feed_status(&self) -> FeedStatus {
        FeedStatus {
            position: self.feed.position.load(Ordering::Acquire),
            connected: self.feed.connected.load(Ordering::Acquire),
            last_lag_ms: self.feed.last_lag_ms.load(Ordering::Acquire),
        }
    }

    /// Runs a read on a pooled connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Cached<'_, Client>) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = self.readers.clone();
        let connector = self.connector.clone();
        // A client is only ever used and dropped on a blocking thread: it
        // runs its own runtime, which must not start inside tokio's.
        tokio::task::spawn_blocking(move || {
            let pooled = pool.0.lock().pop();
            let fresh = pooled.is_none();
            let (mut client, mut stmts) = match pooled {
                Some((c, s)) if !c.is_closed() => (c, s),
                _ => (connector.connect()?, Statements::new()),
            };
            let mut out = f(&mut Cached::new(&mut client, &mut stmts));
            if out.is_err() && client.is_closed() && !fresh {
                // The pooled connection had died (a database restart, a
                // dropped link): reads change nothing, so once more on a
                // new one.
                (client, stmts) = (connector.connect()?, Statements::new());
                out = f(&mut Cached::new(&mut client, &mut stmts));
            }
            if !client.is_closed() {
                pool.0.lock().push((client, stmts));
            }
            out
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Every agent, by name: the in-memory snapshot, loaded if a write (by
    /// any broker) made it stale.
    async fn agents(&self) -> Result<Arc<std::collections::BTreeMap<String, Agent>>, StoreError> {
        if let Some(s) = self.agents.get() {
            return Ok(s);
        }
        let generation = self.agents.begin();
        let all = self
            .read(|c| {
                let sql = format!("SELECT {} FROM agents", rows::AGENT_COLUMNS);
                all(c, &sql, &[], rows::agent)
            })
            .await?;
        Ok(self.agents.install(generation, all))
    }

    /// Submits a write that changes `agents`, invalidating the snapshot once
    /// it has committed (or failed).
    async fn write_agents<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_, '_>) -> Result<T, StoreError> + Send + 'static,
    {
        let _guard = self.agents.invalidate_on_drop();
        self.writer.submit(f).await
    }
}

fn audit_query(q: &AuditQuery) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut sql = format!("SELECT {} FROM audit_log WHERE true", rows::AUDIT_COLUMNS);
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut eq = |column: &str, value: &Option<String>, sql: &mut String| {
        if let Some(v) = value {
            params.push(Box::new(v.clone()));
            sql.push_str(&format!(" AND {column} = ${}", params.len()));
        }
    };
    eq("agent", &q.agent, &mut sql);
    eq(r#""user""#, &q.user, &mut sql);
    eq("task", &q.task, &mut sql);
    eq("txn", &q.txn, &mut sql);
    eq("decision", &q.decision, &mut sql);
    if let Some(e) = &q.event {
        params.push(Box::new(e.clone()));
        let n = params.len();
        // Sub-kinds by prefix, without LIKE's wildcards.
        sql.push_str(&format!(
            " AND (event = ${n} OR left(event, length(${n}) + 1) = ${n} || '.')"
        ));
    }
    if let Some(t) = q.since {
        params.push(Box::new(t.as_millis()));
        sql.push_str(&format!(" AND time >= ${}", params.len()));
    }
    params.push(Box::new(i64::from(q.limit)));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", params.len()));
    (sql, params)
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.audit_written_head().await?;
        if !self.feed_fresh() {
            return Err(StoreError::Unavailable(
                "the shared store's change feed has not been read lately; this broker cannot rule out changes made through other brokers".into(),
            ));
        }
        Ok(())
    }

    async fn audit_written_head(&self) -> Result<Option<(u64, ChainHash)>, StoreError> {
        self.writer.submit(audit_intact).await
    }

    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<Agent, StoreError> {
        self.write_agents(move |ctx| {
            let selectors = crate::columns::selectors_json(&agent.selectors)?;
            ctx.tx
                .execute(
                    &format!(
                        "INSERT INTO agents ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        rows::AGENT_COLUMNS
                    ),
                    &[
                        &agent.id,
                        &agent.name.as_str(),
                        &agent.owner.as_str(),
                        &agent.env.as_str(),
                        &agent.purpose.as_str(),
                        &agent.trust.as_str(),
                        &selectors,
                        &i64_of(agent.max_ttl.as_secs()),
                        &agent.status.as_str(),
                        &agent.created_at.as_millis(),
                        &agent.updated_at.as_millis(),
                    ],
                )
                .map_err(conflict("agent", agent.name.as_str()))?;
            ctx.changed(ChangeKind::Agent, agent.name.as_str())?;
            ctx.append(audit)?;
            Ok(agent)
        })
        .await
    }

    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        if let Some(a) = self.agents().await?.get(name.as_str()) {
            return Ok(Some(a.clone()));
        }
        // Not in the snapshot: perhaps registered through another broker a
        // moment ago, before the feed said so. The database decides.
        let wanted = name.to_string();
        let found = self
            .read(move |c| {
                let sql = format!("SELECT {} FROM agents WHERE name = $1", rows::AGENT_COLUMNS);
                one(c, &sql, &[&wanted], rows::agent)
            })
            .await?;
        if found.is_some() {
            self.agents.invalidate();
        }
        Ok(found)
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
            let agent = one(
                &mut ctx.tx,
                &format!(
                    "UPDATE agents SET status = $1, updated_at = $2 WHERE name = $3 RETURNING {}",
                    rows::AGENT_COLUMNS
                ),
                &[&status.as_str(), &now.as_millis(), &name],
                rows::agent,
            )?
            .ok_or_else(|| StoreError::NotFound {
                what: "agent",
                name: name.clone(),
            })?;
            require_status(&mut ctx.tx, &name, status)?;
            ctx.changed(ChangeKind::Agent, &name)?;
            if status == AgentStatus::Active {
                // Re-enabling lifts the blocks `revoke --instance` put on its instances.
                ctx.tx
                    .execute("DELETE FROM revoked_instances WHERE agent = $1", &[&name])
                    .map_err(db_err)?;
                ctx.changed(ChangeKind::BlocksLifted, &name)?;
            }
            ctx.append(audit)?;
            Ok(agent)
        })
        .await
    }

    async fn delete_agent(&self, name: &AgentName, audit: AuditEvent) -> Result<Agent, StoreError> {
        let name = name.to_string();
        self.write_agents(move |ctx| {
            let agent = one(
                &mut ctx.tx,
                &format!(
                    "DELETE FROM agents WHERE name = $1 RETURNING {}",
                    rows::AGENT_COLUMNS
                ),
                &[&name],
                rows::agent,
            )?
            .ok_or_else(|| StoreError::NotFound {
                what: "agent",
                name: name.clone(),
            })?;
            // Its instances and unredeemed join tokens go with it: a later
            // agent of the same name must not inherit them.
            for sql in [
                "DELETE FROM instances WHERE agent = $1",
                "DELETE FROM join_tokens WHERE agent = $1 AND redeemed_at IS NULL",
                "DELETE FROM revoked_instances WHERE agent = $1",
            ] {
                ctx.tx.execute(sql, &[&name]).map_err(db_err)?;
            }
            ctx.changed(ChangeKind::Agent, &name)?;
            ctx.changed(ChangeKind::BlocksLifted, &name)?;
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
                // Every writer holds the chain head's lock: brokers starting
                // together check and insert one at a time.
                let any: i64 = ctx
                    .tx
                    .query_one("SELECT count(*) FROM signing_keys", &[])
                    .map_err(db_err)?
                    .get(0);
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
            all(c, &sql, &[], rows::signing_key)
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
                ctx.tx
                    .execute(
                        &format!(
                            "INSERT INTO admin_tokens ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                            rows::TOKEN_COLUMNS
                        ),
                        &[
                            &token.id,
                            &token.token_hash.as_slice(),
                            &token.role.as_str(),
                            &token.name,
                            &token.created_by,
                            &token.created_at.as_millis(),
                            &token.expires_at.as_millis(),
                            &token.revoked_at.map(Timestamp::as_millis),
                            &token.person,
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
            let sql = format!(
                "SELECT {} FROM admin_tokens WHERE token_hash = $1",
                rows::TOKEN_COLUMNS
            );
            one(c, &sql, &[&hash], rows::admin_token)
        })
        .await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT {} FROM admin_tokens ORDER BY created_at DESC, id",
                rows::TOKEN_COLUMNS
            );
            all(c, &sql, &[], rows::admin_token)
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
                let token = one(&mut ctx.tx,
                    &format!(
                        "UPDATE admin_tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2 RETURNING {}",
                        rows::TOKEN_COLUMNS
                    ),
                    &[&now.as_millis(), &id],
                    rows::admin_token,
                )?
                .ok_or_else(|| StoreError::NotFound {
                    what: "admin token",
                    name: id.clone(),
                })?;
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
                let stored = upsert_instance(&mut ctx.tx, &instance)?;
                ctx.append(audit)?;
                Ok(stored)
            })
            .await
    }

    async fn list_instances(&self, agent: &AgentName) -> Result<Vec<Instance>, StoreError> {
        let agent = agent.to_string();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM instances WHERE agent = $1 ORDER BY last_seen DESC, id",
                rows::INSTANCE_COLUMNS
            );
            all(c, &sql, &[&agent], rows::instance)
        })
        .await
    }

    async fn live_instances(&self, now: Timestamp) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(move |c| {
            c.query(
                "SELECT agent, count(*) FROM instances WHERE expires_at > $1 GROUP BY agent ORDER BY agent",
                &[&now.as_millis()],
            )
            .map_err(db_err)
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).unsigned_abs()))
                    .collect()
            })
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
                ctx.tx
                    .execute(
                        &format!(
                            "INSERT INTO join_tokens ({}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            rows::JOIN_COLUMNS
                        ),
                        &[
                            &token.id,
                            &token.token_hash.as_slice(),
                            &token.agent.as_str(),
                            &token.created_by,
                            &token.created_at.as_millis(),
                            &token.expires_at.as_millis(),
                            &token.redeemed_at.map(Timestamp::as_millis),
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
            let sql = format!(
                "SELECT {} FROM join_tokens WHERE token_hash = $1",
                rows::JOIN_COLUMNS
            );
            one(c, &sql, &[&hash], rows::join_token)
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
                // One statement checks and sets; the row lock it takes makes
                // any concurrent redemption, through any broker, wait and
                // then find it redeemed: exactly one wins.
                let changed = ctx
                    .tx
                    .execute(
                        "UPDATE join_tokens SET redeemed_at = $1 WHERE token_hash = $2 AND redeemed_at IS NULL AND expires_at > $1",
                        &[&now.as_millis(), &hash],
                    )
                    .map_err(db_err)?;
                if changed != 1 {
                    return Err(StoreError::Precondition {
                        what: "join token",
                        why: "already redeemed or expired".into(),
                    });
                }
                let stored = upsert_instance(&mut ctx.tx, &instance)?;
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
                // Brokers asking for the same request at once take turns:
                // the second finds the first's approval.
                ctx.tx
                    .execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                        &[&a.binding],
                    )
                    .map_err(db_err)?;
                let existing = one(
                    &mut ctx.tx,
                    &format!(
                        "SELECT {} FROM approvals WHERE binding = $1 AND state IN ('pending', 'approved') AND expires_at > $2 ORDER BY created_at DESC LIMIT 1",
                        rows::APPROVAL_COLUMNS
                    ),
                    &[&a.binding, &now],
                    rows::approval,
                )?;
                if let Some(e) = existing {
                    return Ok((e, false));
                }
                // Counted under the agent's lock, so brokers asking at once
                // cannot both take the last place.
                ctx.tx
                    .execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 1))",
                        &[&a.subject.agent],
                    )
                    .map_err(db_err)?;
                let requester = a.subject.requester();
                let counts = ctx
                    .tx
                    .query_one(
                        "SELECT count(*), count(*) FILTER (WHERE requester = $3) FROM approvals WHERE agent = $1 AND state = 'pending' AND expires_at > $2",
                        &[&a.subject.agent, &now, &requester],
                    )
                    .map_err(db_err)?;
                crate::columns::approval_quota(&a, &requester, counts.get(0), counts.get(1), limits)?;
                ctx.tx
                    .execute(
                        "DELETE FROM approvals WHERE expires_at < $1",
                        &[&(now - rows::APPROVAL_KEEP_MS)],
                    )
                    .map_err(db_err)?;
                ctx.tx
                    .execute(
                        &format!(
                            "INSERT INTO approvals ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                            rows::APPROVAL_COLUMNS
                        ),
                        &[
                            &a.id,
                            &a.binding,
                            &a.subject.agent,
                            &a.state.as_str(),
                            &now,
                            &a.expires_at.as_millis(),
                            &a.decided_by,
                            &a.decided_at.map(Timestamp::as_millis),
                            &a.reason,
                            &a.used_at.map(Timestamp::as_millis),
                            &rows::approval_record(&a)?,
                            &requester,
                            &a.subject.loose_binding(),
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
            let sql = format!(
                "SELECT {} FROM approvals WHERE loose = $1 AND state = 'denied' AND expires_at > $2 ORDER BY created_at DESC LIMIT 1",
                rows::APPROVAL_COLUMNS
            );
            one(c, &sql, &[&loose, &now.as_millis()], rows::approval)
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
                "SELECT {} FROM approvals WHERE {} ORDER BY created_at DESC LIMIT $2",
                rows::APPROVAL_COLUMNS,
                rows::approval_state_filter(state, "$1::BIGINT")
            );
            all(
                c,
                &sql,
                &[&now.as_millis(), &i64::from(limit)],
                rows::approval,
            )
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
                // The row lock makes a concurrent decision, through any
                // broker, wait and then find it decided: exactly one wins.
                let current = one(
                    &mut ctx.tx,
                    &format!(
                        "SELECT {} FROM approvals WHERE id = $1 FOR UPDATE",
                        rows::APPROVAL_COLUMNS
                    ),
                    &[&id],
                    rows::approval,
                )?;
                let Some(a) = current
                    .as_ref()
                    .filter(|a| a.state_at(now) == ApprovalState::Pending)
                else {
                    return Err(rows::approval_refusal(
                        "approval decision",
                        &id,
                        current.as_ref(),
                        now,
                    ));
                };
                let (state, expires) = match verdict {
                    Verdict::Approve => (
                        ApprovalState::Approved,
                        now + a.terms().ttl.as_duration(),
                    ),
                    Verdict::Deny => (ApprovalState::Denied, a.expires_at),
                };
                ctx.tx
                    .execute(
                        "UPDATE approvals SET state = $1, decided_by = $2, decided_at = $3, reason = $4, expires_at = $5 WHERE id = $6",
                        &[
                            &state.as_str(),
                            &by,
                            &now.as_millis(),
                            &reason,
                            &expires.as_millis(),
                            &id,
                        ],
                    )
                    .map_err(db_err)?;
                ctx.append(audit)?;
                approval_row(&mut ctx.tx, &id)?.ok_or(StoreError::NotFound {
                    what: "approval",
                    name: id,
                })
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
                // One statement checks and sets; its row lock makes a
                // concurrent use through any broker wait and then find it
                // spent: exactly one use wins.
                let changed = ctx
                    .tx
                    .execute(
                        "UPDATE approvals SET state = 'used', used_at = $1 WHERE id = $2 AND state = 'approved' AND expires_at > $1",
                        &[&now.as_millis(), &id],
                    )
                    .map_err(db_err)?;
                let current = approval_row(&mut ctx.tx, &id)?;
                if changed != 1 {
                    return Err(rows::approval_refusal(
                        "approval use",
                        &id,
                        current.as_ref(),
                        now,
                    ));
                }
                ctx.append(audit)?;
                current.ok_or(StoreError::NotFound {
                    what: "approval",
                    name: id,
                })
            })
            .await
    }

    async fn record_task(&self, t: TaskRecord, audit: AuditEvent) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                // Every writer holds the chain head's lock, and revocations
                // are written under it too: the checks below and the insert
                // are serialised with any revocation, on any broker.
                if let Some(parent) = &t.parent {
                    let revoked = ctx
                        .tx
                        .query_opt("SELECT revoked_at FROM tasks WHERE task = $1", &[parent])
                        .map_err(db_err)?
                        .and_then(|r| r.get::<_, Option<i64>>(0));
                    if revoked.is_some() {
                        return Err(StoreError::Revoked {
                            what: "task",
                            id: parent.clone(),
                        });
                    }
                }
                refuse_revoked_instance(&mut ctx.tx, &t.instance)?;
                require_active_agent(&mut ctx.tx, &t.agent)?;
                ctx.tx
                    .execute(
                        &format!(
                            "INSERT INTO tasks ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                            rows::TASK_COLUMNS
                        ),
                        &[
                            &t.task,
                            &t.jti,
                            &t.parent,
                            &t.txn,
                            &t.agent,
                            &t.instance,
                            &t.subject,
                            &t.scope,
                            &serde_json::to_string(&t.audience).unwrap_or_else(|_| "[]".into()),
                            &i64::from(t.depth),
                            &t.issued_at.as_millis(),
                            &t.expires_at.as_millis(),
                            &t.revoked_at.map(Timestamp::as_millis),
                            &serde_json::to_string(&t.groups).unwrap_or_else(|_| "[]".into()),
                            &t.attestor,
                        ],
                    )
                    .map_err(conflict("task", &t.task))?;
                ctx.append(audit)?;
                Ok(())
            })
            .await
    }

    async fn get_task(&self, task: &str) -> Result<Option<TaskRecord>, StoreError> {
        let task = task.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {} FROM tasks WHERE task = $1", rows::TASK_COLUMNS);
            one(c, &sql, &[&task], rows::task)
        })
        .await
    }

    async fn tasks_of_txn(&self, txn: &str) -> Result<Vec<TaskRecord>, StoreError> {
        let txn = txn.to_owned();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM tasks WHERE txn = $1 ORDER BY issued_at, task",
                rows::TASK_COLUMNS
            );
            all(c, &sql, &[&txn], rows::task)
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
            let (roots, key) = match &target {
                RevokeTarget::Jti(v) => ("SELECT task FROM tasks WHERE jti = $1", v),
                RevokeTarget::Task(v) => ("SELECT task FROM tasks WHERE task = $1", v),
                RevokeTarget::Txn(v) => ("SELECT task FROM tasks WHERE txn = $1", v),
                RevokeTarget::Instance(v) => ("SELECT task FROM tasks WHERE instance = $1", v),
                RevokeTarget::Agent(v) => ("SELECT task FROM tasks WHERE agent = $1", v),
            };
            let tree = format!(
                "WITH RECURSIVE tree(task) AS ({roots} \
                 UNION SELECT t.task FROM tasks t JOIN tree ON t.parent = tree.task) \
                 SELECT task FROM tree"
            );
            let all_tasks: Vec<String> = ctx
                .tx
                .query(&tree, &[key])
                .map_err(db_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let none = |what: &'static str| StoreError::NotFound {
                what,
                name: key.clone(),
            };
            match &target {
                RevokeTarget::Jti(_) if all_tasks.is_empty() => return Err(none("task token")),
                RevokeTarget::Task(_) if all_tasks.is_empty() => return Err(none("task")),
                RevokeTarget::Txn(_) if all_tasks.is_empty() => return Err(none("transaction")),
                _ => {}
            }
            let revoked: Vec<String> = ctx
                .tx
                .query(
                    "UPDATE tasks SET revoked_at = $1 WHERE task = ANY($2) AND revoked_at IS NULL RETURNING task",
                    &[&now.as_millis(), &all_tasks],
                )
                .map_err(db_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // INVARIANT (a revocation is stored, not just accepted): a rule
            // or trigger could make the update report rows and store none.
            let left: i64 = ctx
                .tx
                .query_one(
                    "SELECT count(*) FROM tasks WHERE task = ANY($1) AND revoked_at IS NULL",
                    &[&all_tasks],
                )
                .map_err(db_err)?
                .get(0);
            if left > 0 {
                return Err(not_stored("revocation"));
            }
            match &target {
                RevokeTarget::Instance(i) => {
                    let agent: Option<String> = ctx
                        .tx
                        .query_opt("SELECT agent FROM instances WHERE id = $1", &[i])
                        .map_err(db_err)?
                        .map(|r| r.get(0));
                    let Some(agent) = agent else {
                        return Err(StoreError::NotFound {
                            what: "instance",
                            name: i.clone(),
                        });
                    };
                    ctx.tx
                        .execute(
                            "INSERT INTO revoked_instances (instance, agent, revoked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                            &[i, &agent, &now.as_millis()],
                        )
                        .map_err(db_err)?;
                    if ctx
                        .tx
                        .query_opt("SELECT 1 FROM revoked_instances WHERE instance = $1", &[i])
                        .map_err(db_err)?
                        .is_none()
                    {
                        return Err(not_stored("instance block"));
                    }
                    ctx.changed(ChangeKind::InstanceBlocked, i)?;
                }
                RevokeTarget::Agent(a) => {
                    let n = ctx
                        .tx
                        .execute(
                            "UPDATE agents SET status = 'disabled', updated_at = $1 WHERE name = $2",
                            &[&now.as_millis(), a],
                        )
                        .map_err(db_err)?;
                    if n == 0 {
                        return Err(StoreError::NotFound {
                            what: "agent",
                            name: a.clone(),
                        });
                    }
                    require_status(&mut ctx.tx, a, AgentStatus::Disabled)?;
                    ctx.changed(ChangeKind::Agent, a)?;
                }
                _ => {}
            }
            for t in &revoked {
                ctx.changed(ChangeKind::TaskRevoked, t)?;
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
            let tasks = c
                .query(
                    "SELECT task FROM tasks WHERE revoked_at IS NOT NULL AND expires_at > $1",
                    &[&now.as_millis()],
                )
                .map_err(db_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let instances = c
                .query("SELECT instance FROM revoked_instances", &[])
                .map_err(db_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok((tasks, instances))
        })
        .await
    }

    async fn create_secret(&self, s: SecretRecord, audit: AuditEvent) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                let shown = s.credential_id();
                ctx.tx
                    .execute(
                        &format!(
                            "INSERT INTO secrets ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                            rows::SECRET_COLUMNS
                        ),
                        &[
                            &s.name.as_str(),
                            &s.owner.as_deref().unwrap_or(""),
                            &i64::from(s.version),
                            &s.description,
                            &s.wrapped_key,
                            &s.ciphertext,
                            &s.created_by,
                            &s.created_at.as_millis(),
                            &s.updated_at.as_millis(),
                            &s.last_used_at.map(Timestamp::as_millis),
                        ],
                    )
                    .map_err(conflict("secret", &shown))?;
                ctx.changed(ChangeKind::Secret, &secret_key(&s.name, s.owner.as_deref()))?;
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
                    .tx
                    .execute(
                        "UPDATE secrets SET version = $3::bigint, wrapped_key = $4, ciphertext = $5, updated_at = $6, \
                         description = coalesce($7, description) \
                         WHERE name = $1 AND owner = $2 AND version = $3::bigint - 1",
                        &[
                            &s.name.as_str(),
                            &owner,
                            &i64::from(s.version),
                            &s.wrapped_key,
                            &s.ciphertext,
                            &s.updated_at.as_millis(),
                            &s.description,
                        ],
                    )
                    .map_err(db_err)?;
                if changed == 0 {
                    return Err(match secret_row(&mut ctx.tx, &s.name, owner)? {
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
                ctx.changed(ChangeKind::Secret, &secret_key(&s.name, s.owner.as_deref()))?;
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
                let found = one(
                    &mut ctx.tx,
                    &format!(
                        "DELETE FROM secrets WHERE name = $1 AND owner = $2 RETURNING {}",
                        rows::SECRET_COLUMNS
                    ),
                    &[&name.as_str(), &owner],
                    rows::secret,
                )?
                .ok_or_else(|| StoreError::NotFound {
                    what: "secret",
                    name: name.to_string(),
                })?;
                ctx.changed(ChangeKind::Secret, &secret_key(&name, Some(&owner)))?;
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
            all(c, &sql, &[], rows::secret)
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
                for (name, owner, at) in &used {
                    ctx.tx
                        .execute(
                            "UPDATE secrets SET last_used_at = greatest(coalesce(last_used_at, 0), $3) \
                             WHERE name = $1 AND owner = $2",
                            &[
                                &name.as_str(),
                                &owner.as_deref().unwrap_or(""),
                                &at.as_millis(),
                            ],
                        )
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
                let now = now.as_millis();
                let found = ctx
                    .tx
                    .query_opt(
                        "SELECT digest, state, pending_digest FROM mcp_tools WHERE server = $1 AND tool = $2 FOR UPDATE",
                        &[&server, &def.name],
                    )
                    .map_err(db_err)?
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, Option<String>>(2)));
                let step = PinStep::decide(
                    found.as_ref().map(|(d, st, p)| (d.as_str(), st.as_str(), p.as_deref())),
                    &digest,
                    hold_new,
                );
                let sql = match step {
                    PinStep::InsertHeld => Some(format!(
                        "INSERT INTO mcp_tools ({}) VALUES ($1, $2, '', 'null', 'new', $3, $4, $5, $5, NULL)",
                        rows::PIN_COLUMNS
                    )),
                    PinStep::InsertPinned => Some(format!(
                        "INSERT INTO mcp_tools ({}) VALUES ($1, $2, $3, $4, 'pinned', NULL, NULL, $5, $5, NULL)",
                        rows::PIN_COLUMNS
                    )),
                    PinStep::ReplaceHeld => Some(
                        "UPDATE mcp_tools SET pending_digest = $3, pending_definition = $4, updated_at = $5 \
                         WHERE server = $1 AND tool = $2"
                            .into(),
                    ),
                    PinStep::MarkChanged => Some(
                        "UPDATE mcp_tools SET state = 'changed', pending_digest = $3, pending_definition = $4, updated_at = $5 \
                         WHERE server = $1 AND tool = $2"
                            .into(),
                    ),
                    PinStep::Repin | PinStep::StillHeld | PinStep::StillChanged => None,
                };
                if let Some(sql) = sql {
                    ctx.tx
                        .execute(&sql, &[&server, &def.name, &digest, &text, &now])
                        .map_err(db_err)?;
                } else if step == PinStep::Repin {
                    ctx.tx
                        .execute(
                            "UPDATE mcp_tools SET state = 'pinned', pending_digest = NULL, pending_definition = NULL \
                             WHERE server = $1 AND tool = $2 AND state != 'pinned'",
                            &[&server, &def.name],
                        )
                        .map_err(db_err)?;
                }
                let (outcome, kind) = step.outcome();
                if let Some(kind) = kind {
                    ctx.changed(ChangeKind::ToolPin, &server)?;
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
                let not_found = || StoreError::NotFound {
                    what: "tool",
                    name: format!("{server}/{tool}"),
                };
                let pin = pin_row(&mut ctx.tx, &server, &tool)?.ok_or_else(not_found)?;
                let Some(pending) = pin.pending_digest.as_deref() else {
                    return Err(StoreError::Precondition {
                        what: "tool approval",
                        why: format!("{server}/{tool} has no new or changed definition waiting"),
                    });
                };
                // INVARIANT (approve what was reviewed): checked and set in
                // one statement, so a definition announced through another
                // broker meanwhile is never approved unseen.
                let n = ctx
                    .tx
                    .execute(
                        "UPDATE mcp_tools SET digest = pending_digest, definition = pending_definition, state = 'pinned', \
                         pending_digest = NULL, pending_definition = NULL, updated_at = $3, approved_by = $4 \
                         WHERE server = $1 AND tool = $2 AND pending_digest = $5",
                        &[&server, &tool, &now.as_millis(), &by, &digest],
                    )
                    .map_err(db_err)?;
                if n != 1 {
                    return Err(StoreError::Precondition {
                        what: "tool approval",
                        why: format!(
                            "the definition of {server}/{tool} waiting is {pending}, not the reviewed {}; review it again",
                            warrant_core::text::shown(&digest, 64)
                        ),
                    });
                }
                ctx.changed(ChangeKind::ToolPin, &server)?;
                ctx.append(audit)?;
                pin_row(&mut ctx.tx, &server, &tool)?.ok_or_else(not_found)
            })
            .await
    }

    async fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError> {
        let server = server.map(str::to_owned);
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM mcp_tools WHERE $1::text IS NULL OR server = $1 ORDER BY server, tool",
                rows::PIN_COLUMNS
            );
            all(c, &sql, &[&server], rows::tool_pin)
        })
        .await
    }

    async fn note_server_listed(&self, server: &str, now: Timestamp) -> Result<bool, StoreError> {
        let server = server.to_owned();
        self.writer
            .submit(move |ctx| {
                let added = ctx
                    .tx
                    .execute(
                        "INSERT INTO mcp_servers (server, first_listed) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&server, &now.as_millis()],
                    )
                    .map_err(db_err)?;
                Ok(added == 0)
            })
            .await
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        self.writer.submit(move |ctx| ctx.append(event)).await
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

    async fn audit_after(
        &self,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<warrant_core::audit::StoredRow>, StoreError> {
        let seq = i64_of(seq);
        self.read(move |c| {
            // Only what the chain head says is written: a record being
            // committed by another broker is read once it is whole.
            let sql = format!(
                "SELECT {} FROM audit_log WHERE seq > $1 AND seq <= (SELECT seq FROM audit_head WHERE id = 1) ORDER BY seq LIMIT $2",
                rows::AUDIT_COLUMNS
            );
            c.query(&sql, &[&seq, &i64::from(limit)])
                .map_err(db_err)?
                .iter()
                .map(rows::audit_row)
                .collect()
        })
        .await
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let (sql, params) = audit_query(q);
        self.read(move |c| {
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let mut out = c
                .query(&sql, &refs)
                .map_err(db_err)?
                .iter()
                .map(|r| {
                    let row = rows::audit_row(r)?;
                    row.to_record().map_err(|e| {
                        StoreError::Corrupt(format!(
                            "audit record {} does not parse ({e}); run `warrant audit verify`",
                            row.seq
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn verify_audit(&self) -> Result<ChainReport, StoreError> {
        let chain = self.chain.clone();
        self.read(move |c| {
            let report = |v: &ChainVerifier, broken| ChainReport {
                verified: v.verified(),
                unkeyed: v.unkeyed(),
                head: v.head(),
                broken,
            };
            let mut v = match &chain {
                None => ChainVerifier::default(),
                Some(l) => {
                    let until = match legacy_marker(c)? {
                        None => 0,
                        Some(m) => match legacy_until(&m, l.as_ref()) {
                            Some(n) => n,
                            None => {
                                return Ok(report(
                                    &ChainVerifier::default(),
                                    Some(ChainBreak {
                                        seq: 0,
                                        why: "the note of where the chain's keying starts was altered, or this broker's key is not the trail's".into(),
                                    }),
                                ));
                            }
                        },
                    };
                    ChainVerifier::keyed(l.clone(), until)
                }
            };
            // One snapshot for the whole walk, streamed: the trail may be
            // long, and other brokers keep appending.
            let mut tx = c
                .c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(db_err)?;
            tx.batch_execute("SET LOCAL statement_timeout = 0")
                .map_err(db_err)?;
            let mut it = tx
                .query_raw(
                    &format!("SELECT {} FROM audit_log ORDER BY seq", rows::AUDIT_COLUMNS),
                    std::iter::empty::<&(dyn ToSql + Sync)>(),
                )
                .map_err(db_err)?;
            while let Some(row) = it.next().map_err(db_err)? {
                let stored = match rows::audit_row(&row) {
                    Ok(s) => s,
                    Err(e) => {
                        let seq = row
                            .try_get::<_, i64>(0)
                            .ok()
                            .and_then(|s| u64::try_from(s).ok())
                            .unwrap_or(v.verified() + 1);
                        return Ok(report(
                            &v,
                            Some(ChainBreak {
                                seq,
                                why: format!("its columns do not parse: {e}"),
                            }),
                        ));
                    }
                };
                if let Err(b) = v.push(&stored) {
                    return Ok(report(&v, Some(b)));
                }
            }
            Ok(report(&v, None))
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(u64, ChainHash)>, StoreError> {
        self.read(move |c| {
            let row = c
                .query_opt(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .map_err(db_err)?;
            Ok(row.and_then(|r| {
                let (seq, h): (i64, Vec<u8>) = (r.get(0), r.get(1));
                Some((u64::try_from(seq).ok()?, ChainHash(h.try_into().ok()?)))
            }))
        })
        .await
    }

    async fn audit_hash(&self, seq: u64) -> Result<Option<ChainHash>, StoreError> {
        let seq = i64_of(seq);
        self.read(move |c| {
            let h: Option<Vec<u8>> = c
                .query_opt("SELECT hash FROM audit_log WHERE seq = $1", &[&seq])
                .map_err(db_err)?
                .map(|r| r.get(0));
            Ok(h.and_then(|h| Some(ChainHash(h.try_into().ok()?))))
        })
        .await
    }

    async fn add_checkpoint(&self, cp: Checkpoint) -> Result<(), StoreError> {
        self.writer
            .submit(move |ctx| {
                ctx.tx
                    .execute(
                        "INSERT INTO audit_checkpoints (seq, hash, time, signed) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&i64_of(cp.seq), &cp.hash.0.as_slice(), &cp.time.as_millis(), &cp.signed],
                    )
                    .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn list_checkpoints(&self, limit: usize) -> Result<Vec<Checkpoint>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            Ok(c.query(
                "SELECT seq, hash, time, signed FROM audit_checkpoints ORDER BY seq DESC LIMIT $1",
                &[&limit],
            )
            .map_err(db_err)?
            .iter()
            .map(|r| {
                let hash: Vec<u8> = r.get(1);
                Checkpoint {
                    seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                    hash: ChainHash(hash.try_into().unwrap_or([0; 32])),
                    time: Timestamp::from_millis(r.get(2)),
                    signed: r.get(3),
                }
            })
            .collect())
        })
        .await
    }

    async fn heartbeat(&self, me: &ClusterMember) -> Result<(), StoreError> {
        let me = me.clone();
        self.read(move |c| {
            c.execute(
                "INSERT INTO brokers (broker, version, api_addr, policy_digest, config_digest, feed_position, feed_lag_ms, feed_connected, started_at, seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (broker) DO UPDATE SET version = excluded.version, api_addr = excluded.api_addr, \
                 policy_digest = excluded.policy_digest, config_digest = excluded.config_digest, \
                 feed_position = excluded.feed_position, feed_lag_ms = excluded.feed_lag_ms, \
                 feed_connected = excluded.feed_connected, seen_at = excluded.seen_at",
                &[
                    &me.broker,
                    &me.version,
                    &me.api_addr,
                    &me.policy_digest,
                    &me.config_digest,
                    &i64_of(me.feed_position),
                    &me.feed_lag_ms,
                    &me.feed_connected,
                    &me.started_at.as_millis(),
                    &me.seen_at.as_millis(),
                ],
            )
            .map(drop)
            .map_err(db_err)
        })
        .await
    }

    async fn leave(&self, broker: &str) -> Result<(), StoreError> {
        let broker = broker.to_owned();
        self.read(move |c| {
            c.execute("DELETE FROM brokers WHERE broker = $1", &[&broker])
                .map(drop)
                .map_err(db_err)
        })
        .await
    }

    async fn brokers(&self) -> Result<Vec<ClusterMember>, StoreError> {
        self.read(|c| {
            // Reports older than a day are of brokers long gone.
            let day_ago = Timestamp::now().as_millis() - 86_400_000;
            c.execute("DELETE FROM brokers WHERE seen_at < $1", &[&day_ago])
                .map_err(db_err)?;
            Ok(c.query(
                "SELECT broker, version, api_addr, policy_digest, config_digest, feed_position, feed_lag_ms, feed_connected, started_at, seen_at \
                 FROM brokers ORDER BY seen_at DESC",
                &[],
            )
            .map_err(db_err)?
            .iter()
            .map(|r| ClusterMember {
                broker: r.get(0),
                version: r.get(1),
                api_addr: r.get(2),
                policy_digest: r.get(3),
                config_digest: r.get(4),
                feed_position: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
                feed_lag_ms: r.get(6),
                feed_connected: r.get(7),
                started_at: Timestamp::from_millis(r.get(8)),
                seen_at: Timestamp::from_millis(r.get(9)),
            })
            .collect())
        })
        .await
    }

    fn feed_connected(&self) -> bool {
        self.feed.connected.load(Ordering::Acquire)
    }

    fn feed_fresh(&self) -> bool {
        let age = Timestamp::now().as_millis() - self.feed.last_read_ms.load(Ordering::Acquire);
        // INVARIANT (revocation through any broker is seen): read lately,
        // and everything read is applied (a revocation delivered but still
        // queued for the broker's memory is not yet known to it).
        let applied = !self.feed.followed.load(Ordering::Acquire)
            || self.feed.applied.load(Ordering::Acquire)
                >= self.feed.position.load(Ordering::Acquire);
        self.feed.connected.load(Ordering::Acquire)
            && applied
            && u128::try_from(age).is_ok_and(|a| a <= crate::FEED_STALE.as_millis())
    }

    fn follow(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        let taken = self.follower.lock().take();
        if taken.is_some() {
            self.feed.followed.store(true, Ordering::Release);
        }
        taken
    }

    fn feed_applied(&self, version: u64) {
        self.feed.applied.fetch_max(version, Ordering::AcqRel);
    }

    async fn announce_reload(&self, digests: &str) -> Result<(), StoreError> {
        let digests = digests.to_owned();
        self.writer
            .submit(move |ctx| ctx.changed(ChangeKind::Reload, &digests))
            .await
    }

    async fn close(&self) {
        self.writer.shutdown().await;
        self.feed.stop.store(true, Ordering::Release);
        let handle = self.feed_thread.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        let idle = std::mem::take(&mut *self.readers.0.lock());
        let _ = tokio::task::spawn_blocking(move || drop(idle)).await;
    }
}
