//! Versioned schema migrations, applied in order at start-up.
//!
//! INVARIANT (migrations are append-only): a released migration is never edited;
//! changes come as a new version. A database newer than this build is refused.

use rusqlite::{Connection, OptionalExtension};

use crate::StoreError;

/// `(version, name, sql)`, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "inventory, keys, admin tokens, audit log",
        r#"
CREATE TABLE agents (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  owner         TEXT NOT NULL,
  env           TEXT NOT NULL,
  purpose       TEXT NOT NULL,
  trust         TEXT NOT NULL,
  selectors     TEXT NOT NULL,
  max_ttl_secs  INTEGER NOT NULL,
  status        TEXT NOT NULL,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE signing_keys (
  kid                 TEXT PRIMARY KEY,
  alg                 TEXT NOT NULL,
  public_key          BLOB NOT NULL,
  sealed_private_key  BLOB NOT NULL,
  created_at          INTEGER NOT NULL,
  activates_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE admin_tokens (
  id          TEXT PRIMARY KEY,
  token_hash  BLOB NOT NULL UNIQUE,
  role        TEXT NOT NULL,
  name        TEXT,
  created_by  TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  revoked_at  INTEGER
) STRICT;

CREATE TABLE audit_log (
  seq        INTEGER PRIMARY KEY,
  time       INTEGER NOT NULL,
  event      TEXT NOT NULL,
  decision   TEXT NOT NULL,
  agent      TEXT,
  instance   TEXT,
  user       TEXT,
  task       TEXT,
  txn        TEXT,
  body       TEXT NOT NULL,
  prev_hash  BLOB NOT NULL,
  hash       BLOB NOT NULL
) STRICT;
-- No secondary indexes here: every index page a commit dirties lengthens the
-- fsync that durable records wait for. Queries by agent, event, task or txn use
-- the derived index in its own file (see index.rs).

-- Append-only, enforced by the database too: the broker never updates or
-- deletes a record, and neither can anything else using this connection's rules.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#,
    ),
    (
        2,
        "instances and join tokens",
        r#"
CREATE TABLE instances (
  id          TEXT PRIMARY KEY,
  agent       TEXT NOT NULL,
  attestor    TEXT NOT NULL,
  evidence    TEXT NOT NULL,
  first_seen  INTEGER NOT NULL,
  last_seen   INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX instances_by_agent ON instances (agent, last_seen);

CREATE TABLE join_tokens (
  id           TEXT PRIMARY KEY,
  token_hash   BLOB NOT NULL UNIQUE,
  agent        TEXT NOT NULL,
  created_by   TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER NOT NULL,
  redeemed_at  INTEGER
) STRICT;
"#,
    ),
    (
        3,
        "tasks and instance revocations",
        r#"
CREATE TABLE tasks (
  task        TEXT PRIMARY KEY,
  jti         TEXT NOT NULL UNIQUE,
  parent      TEXT,
  txn         TEXT NOT NULL,
  agent       TEXT NOT NULL,
  instance    TEXT NOT NULL,
  subject     TEXT NOT NULL,
  scope       TEXT NOT NULL,
  audience    TEXT NOT NULL,
  depth       INTEGER NOT NULL,
  issued_at   INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  revoked_at  INTEGER
) STRICT;
CREATE INDEX tasks_by_parent ON tasks (parent);
CREATE INDEX tasks_by_txn ON tasks (txn);
CREATE INDEX tasks_by_instance ON tasks (instance);
CREATE INDEX tasks_by_agent ON tasks (agent);

CREATE TABLE revoked_instances (
  instance    TEXT PRIMARY KEY,
  agent       TEXT NOT NULL,
  revoked_at  INTEGER NOT NULL
) STRICT;
"#,
    ),
    (
        4,
        "task groups",
        r#"
ALTER TABLE tasks ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
"#,
    ),
    (
        5,
        "secrets",
        r#"
-- One row per (name, owner): the current version only. A rotation overwrites
-- the sealed value, so an old key cannot be recovered from the database.
-- owner '' is a shared secret; otherwise the user it belongs to.
CREATE TABLE secrets (
  name          TEXT NOT NULL,
  owner         TEXT NOT NULL,
  version       INTEGER NOT NULL,
  description   TEXT,
  wrapped_key   BLOB NOT NULL,
  ciphertext    BLOB NOT NULL,
  created_by    TEXT NOT NULL,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL,
  last_used_at  INTEGER,
  PRIMARY KEY (name, owner)
) STRICT;
"#,
    ),
    (
        6,
        "task attestor",
        r#"
ALTER TABLE tasks ADD COLUMN attestor TEXT;
"#,
    ),
    (
        7,
        "mcp tool pins",
        r#"
CREATE TABLE mcp_tools (
  server              TEXT NOT NULL,
  tool                TEXT NOT NULL,
  digest              TEXT NOT NULL,
  definition          TEXT NOT NULL,
  state               TEXT NOT NULL,
  pending_digest      TEXT,
  pending_definition  TEXT,
  first_seen          INTEGER NOT NULL,
  updated_at          INTEGER NOT NULL,
  approved_by         TEXT,
  PRIMARY KEY (server, tool)
) STRICT;
"#,
    ),
    (
        8,
        "keyed audit chain and checkpoints",
        r#"
CREATE TABLE audit_meta (
  key    TEXT PRIMARY KEY,
  value  BLOB NOT NULL
) STRICT;
CREATE TABLE audit_checkpoints (
  seq     INTEGER PRIMARY KEY,
  hash    BLOB NOT NULL,
  time    INTEGER NOT NULL,
  signed  TEXT NOT NULL
) STRICT;
"#,
    ),
    (
        9,
        "mcp servers listed",
        r#"
CREATE TABLE mcp_servers (
  server        TEXT PRIMARY KEY,
  first_listed  INTEGER NOT NULL
) STRICT;
INSERT INTO mcp_servers (server, first_listed)
  SELECT server, min(first_seen) FROM mcp_tools GROUP BY server;
"#,
    ),
    (
        10,
        "step-up approvals",
        r#"
CREATE TABLE approvals (
  id          TEXT PRIMARY KEY,
  binding     TEXT NOT NULL,
  agent       TEXT NOT NULL,
  state       TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  decided_by  TEXT,
  decided_at  INTEGER,
  reason      TEXT,
  requester   TEXT NOT NULL,
  loose       TEXT NOT NULL,
  used_at     INTEGER,
  record      TEXT NOT NULL
) STRICT;
CREATE INDEX approvals_by_binding ON approvals (binding, created_at);
CREATE INDEX approvals_by_created ON approvals (created_at);
CREATE INDEX approvals_by_expiry ON approvals (expires_at);
CREATE INDEX approvals_by_loose ON approvals (loose, created_at);
CREATE INDEX approvals_by_requester ON approvals (agent, requester, state);
ALTER TABLE admin_tokens ADD COLUMN person TEXT;
"#,
    ),
];

/// The newest schema version this build knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Applies every migration newer than the database's version.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT;",
    )
    .map_err(db_err)?;
    let current: i64 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()
        .map_err(db_err)?
        .flatten()
        .unwrap_or(0);
    if current > latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest(),
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Unavailable(format!("migration {version} ({name}) failed: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                version,
                name,
                warrant_core::time::Timestamp::now().as_millis()
            ],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}
