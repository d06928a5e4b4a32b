//! Moving a single-node installation to PostgreSQL: `warrant store copy`.
//!
//! Every table of the SQLite store is copied into an empty PostgreSQL
//! database in one transaction, the audit trail verbatim (its sequence
//! numbers, bodies and keyed hashes, so it verifies with the same key), and
//! the chain head set to its last record. The trail is verified on both
//! sides, before and after, and must end at the same record with the same
//! hash; otherwise nothing is kept.

use std::path::Path;

use postgres::types::{ToSql, Type};
use rusqlite::types::Value;

use crate::postgres::{PostgresOptions, PostgresStore, db_err};
use crate::{SqliteOptions, SqliteStore, Store, StoreError};

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// Audit records verified on both sides.
    pub audit_records: u64,
    /// The chain head's hash (hex), the same on both sides.
    pub head: String,
}

/// Tables in an order that needs no deferred constraints, the audit trail
/// last.
const TABLES: [&str; 14] = [
    "agents",
    "signing_keys",
    "admin_tokens",
    "instances",
    "join_tokens",
    "tasks",
    "revoked_instances",
    "secrets",
    "mcp_tools",
    "mcp_servers",
    "approvals",
    "audit_meta",
    "audit_checkpoints",
    "audit_log",
];

/// A SQLite value as the PostgreSQL column type wants it.
fn bind(
    v: &Value,
    ty: &Type,
    table: &str,
    column: &str,
) -> Result<Box<dyn ToSql + Sync>, StoreError> {
    let wrong = || {
        StoreError::Corrupt(format!(
            "{table}.{column} holds a value PostgreSQL's {ty} column cannot take"
        ))
    };
    Ok(match (v, ty) {
        (Value::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (Value::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (Value::Null, _) => Box::new(None::<String>),
        (Value::Integer(i), t) if *t == Type::INT8 => Box::new(*i),
        (Value::Text(s), t) if *t == Type::TEXT => Box::new(s.clone()),
        (Value::Blob(b), t) if *t == Type::BYTEA => Box::new(b.clone()),
        _ => return Err(wrong()),
    })
}

fn sqlite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Copies the SQLite store at `from` into the empty PostgreSQL database at
/// `to`, verifying the audit trail with `chain` (the key both are keyed
/// with) on both sides. Blocking; the source must not be in use.
pub fn sqlite_to_postgres(
    from: &Path,
    to: &str,
    chain: std::sync::Arc<dyn warrant_core::audit::ChainLinker>,
    ca_file: Option<&Path>,
    runtime: &tokio::runtime::Handle,
) -> Result<CopyReport, StoreError> {
    // The source, opened as the broker would (migrated to this version,
    // its guards checked), and verified before anything is written.
    let source = SqliteStore::open(
        from,
        SqliteOptions {
            chain: Some(chain.clone()),
            ..SqliteOptions::default()
        },
    )?;
    let before = runtime.block_on(source.verify_audit())?;
    runtime.block_on(source.close());
    if let Some(b) = before.broken {
        return Err(StoreError::AuditUnavailable(format!(
            "the SQLite trail does not verify ({b}); nothing was copied. Find out what happened first (`warrant audit verify`)"
        )));
    }

    // The destination's schema (no key yet: the source's note of where
    // keying starts is copied as it is).
    let options = PostgresOptions {
        ca_file: ca_file.map(Path::to_owned),
        ..PostgresOptions::default()
    };
    let schema = PostgresStore::open(to, options.clone())?;
    runtime.block_on(schema.close());
    let config: postgres::Config = to
        .parse()
        .map_err(|e: postgres::Error| StoreError::Unavailable(crate::postgres::describe(&e)))?;
    let connected = if config.get_ssl_mode() == postgres::config::SslMode::Require {
        config.connect(crate::postgres::tls_client(ca_file)?)
    } else {
        config.connect(postgres::NoTls)
    };
    let mut pg = connected.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot reach PostgreSQL at {}: {}",
            crate::shown_postgres_url(to),
            crate::postgres::describe(&e)
        ))
    })?;
    let src =
        rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite_err)?;

    let mut tx = pg.transaction().map_err(db_err)?;
    tx.batch_execute("SET LOCAL statement_timeout = 0; LOCK TABLE audit_head IN EXCLUSIVE MODE")
        .map_err(db_err)?;
    for t in TABLES {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .map_err(db_err)?
            .get(0);
        if n > 0 {
            return Err(StoreError::Precondition {
                what: "store copy",
                why: format!(
                    "the PostgreSQL database is not empty ({t} has {n} rows); copy into a new database"
                ),
            });
        }
    }
    let mut tables = Vec::new();
    for t in TABLES {
        let columns: Vec<String> = {
            let mut st = src
                .prepare(&format!(
                    "SELECT name FROM pragma_table_info('{t}') ORDER BY cid"
                ))
                .map_err(sqlite_err)?;
            st.query_map([], |r| r.get(0))
                .map_err(sqlite_err)?
                .collect::<Result<_, _>>()
                .map_err(sqlite_err)?
        };
        let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {t} ({}) VALUES ({})",
                quoted.join(", "),
                marks.join(", ")
            ))
            .map_err(db_err)?;
        let types = insert.params().to_vec();
        let mut st = src
            .prepare(&format!("SELECT {} FROM {t}", quoted.join(", ")))
            .map_err(sqlite_err)?;
        let mut rows = st.query([]).map_err(sqlite_err)?;
        let mut n = 0_u64;
        while let Some(row) = rows.next().map_err(sqlite_err)? {
            let values = (0..columns.len())
                .map(|i| {
                    let v: Value = row.get(i).map_err(sqlite_err)?;
                    bind(&v, &types[i], t, &columns[i])
                })
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(AsRef::as_ref).collect();
            tx.execute(&insert, &refs).map_err(db_err)?;
            n += 1;
        }
        tables.push((t, n));
    }
    if let Some(last) = tx
        .query_opt(
            "SELECT seq, hash, time FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .map_err(db_err)?
    {
        let (seq, hash, time): (i64, Vec<u8>, i64) = (last.get(0), last.get(1), last.get(2));
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2, time = $3 WHERE id = 1",
            &[&seq, &hash, &time],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    drop(pg);

    // Verified where it now is, with the same key, to the same head.
    let dest = PostgresStore::open(
        to,
        PostgresOptions {
            chain: Some(chain),
            ..options
        },
    )?;
    let after = runtime.block_on(dest.verify_audit());
    runtime.block_on(dest.close());
    let after = after?;
    if after.broken.is_some() || after.verified != before.verified || after.head != before.head {
        return Err(StoreError::AuditUnavailable(format!(
            "the copied trail does not verify as the original did ({} of {} records, {}); drop the PostgreSQL database and copy again",
            after.verified,
            before.verified,
            after
                .broken
                .map_or_else(|| "another head".to_owned(), |b| b.to_string())
        )));
    }
    Ok(CopyReport {
        tables,
        audit_records: after.verified,
        head: after.head.to_string(),
    })
}
