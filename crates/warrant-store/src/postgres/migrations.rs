//! Versioned schema migrations for PostgreSQL, applied in order at start-up.
//!
//! INVARIANT (migrations are append-only): a released migration is never edited;
//! changes come as a new version. A database newer than this build is refused.
//! Several brokers may start at once: the first takes an advisory lock and
//! migrates, the others wait for it and find nothing left to do.

use postgres::Client;

use super::db_err;
use crate::StoreError;

/// `(version, name, sql)`, in order. Version 1 is the schema SQLite reached
/// in its ninth migration, plus what several brokers need: the chain head
/// row every writer locks, and the change feed.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "inventory, keys, tokens, instances, tasks, secrets, tool pins, audit chain, change feed",
        r#"
CREATE TABLE agents (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  owner         TEXT NOT NULL,
  env           TEXT NOT NULL,
  purpose       TEXT NOT NULL,
  trust         TEXT NOT NULL,
  selectors     TEXT NOT NULL,
  max_ttl_secs  BIGINT NOT NULL,
  status        TEXT NOT NULL,
  created_at    BIGINT NOT NULL,
  updated_at    BIGINT NOT NULL
);

CREATE TABLE signing_keys (
  kid                 TEXT PRIMARY KEY,
  alg                 TEXT NOT NULL,
  public_key          BYTEA NOT NULL,
  sealed_private_key  BYTEA NOT NULL,
  created_at          BIGINT NOT NULL,
  activates_at        BIGINT NOT NULL
);

CREATE TABLE admin_tokens (
  id          TEXT PRIMARY KEY,
  token_hash  BYTEA NOT NULL UNIQUE,
  role        TEXT NOT NULL,
  name        TEXT,
  created_by  TEXT NOT NULL,
  created_at  BIGINT NOT NULL,
  expires_at  BIGINT NOT NULL,
  revoked_at  BIGINT
);

CREATE TABLE instances (
  id          TEXT PRIMARY KEY,
  agent       TEXT NOT NULL,
  attestor    TEXT NOT NULL,
  evidence    TEXT NOT NULL,
  first_seen  BIGINT NOT NULL,
  last_seen   BIGINT NOT NULL,
  expires_at  BIGINT NOT NULL
);
CREATE INDEX instances_by_agent ON instances (agent, last_seen);

CREATE TABLE join_tokens (
  id           TEXT PRIMARY KEY,
  token_hash   BYTEA NOT NULL UNIQUE,
  agent        TEXT NOT NULL,
  created_by   TEXT NOT NULL,
  created_at   BIGINT NOT NULL,
  expires_at   BIGINT NOT NULL,
  redeemed_at  BIGINT
);

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
  depth       BIGINT NOT NULL,
  issued_at   BIGINT NOT NULL,
  expires_at  BIGINT NOT NULL,
  revoked_at  BIGINT,
  groups      TEXT NOT NULL DEFAULT '[]',
  attestor    TEXT
);
CREATE INDEX tasks_by_parent ON tasks (parent);
CREATE INDEX tasks_by_txn ON tasks (txn);
CREATE INDEX tasks_by_instance ON tasks (instance);
CREATE INDEX tasks_by_agent ON tasks (agent);
CREATE INDEX tasks_revoked ON tasks (expires_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE revoked_instances (
  instance    TEXT PRIMARY KEY,
  agent       TEXT NOT NULL,
  revoked_at  BIGINT NOT NULL
);

CREATE TABLE secrets (
  name          TEXT NOT NULL,
  owner         TEXT NOT NULL,
  version       BIGINT NOT NULL,
  description   TEXT,
  wrapped_key   BYTEA NOT NULL,
  ciphertext    BYTEA NOT NULL,
  created_by    TEXT NOT NULL,
  created_at    BIGINT NOT NULL,
  updated_at    BIGINT NOT NULL,
  last_used_at  BIGINT,
  PRIMARY KEY (name, owner)
);

CREATE TABLE mcp_tools (
  server              TEXT NOT NULL,
  tool                TEXT NOT NULL,
  digest              TEXT NOT NULL,
  definition          TEXT NOT NULL,
  state               TEXT NOT NULL,
  pending_digest      TEXT,
  pending_definition  TEXT,
  first_seen          BIGINT NOT NULL,
  updated_at          BIGINT NOT NULL,
  approved_by         TEXT,
  PRIMARY KEY (server, tool)
);

CREATE TABLE mcp_servers (
  server        TEXT PRIMARY KEY,
  first_listed  BIGINT NOT NULL
);

CREATE TABLE audit_log (
  seq        BIGINT PRIMARY KEY,
  time       BIGINT NOT NULL,
  event      TEXT NOT NULL,
  decision   TEXT NOT NULL,
  agent      TEXT,
  instance   TEXT,
  "user"     TEXT,
  task       TEXT,
  txn        TEXT,
  body       TEXT NOT NULL,
  prev_hash  BYTEA NOT NULL,
  hash       BYTEA NOT NULL
);
CREATE INDEX audit_by_agent ON audit_log (agent, seq) WHERE agent IS NOT NULL;
CREATE INDEX audit_by_user ON audit_log ("user", seq) WHERE "user" IS NOT NULL;
CREATE INDEX audit_by_task ON audit_log (task, seq) WHERE task IS NOT NULL;
CREATE INDEX audit_by_txn ON audit_log (txn, seq) WHERE txn IS NOT NULL;
CREATE INDEX audit_by_event ON audit_log (event, seq);

-- The chain's head, one row every writer locks (`FOR UPDATE`) for its whole
-- transaction: records from every broker get consecutive sequence numbers
-- in commit order, each linked to the one before, so the chain cannot fork.
-- `changes` numbers the change feed under the same lock.
CREATE TABLE audit_head (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  seq      BIGINT NOT NULL,
  hash     BYTEA NOT NULL,
  time     BIGINT NOT NULL,
  changes  BIGINT NOT NULL
);
INSERT INTO audit_head (id, seq, hash, time, changes)
  VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0, 0);

CREATE TABLE audit_meta (
  key    TEXT PRIMARY KEY,
  value  BYTEA NOT NULL
);
CREATE TABLE audit_checkpoints (
  seq     BIGINT PRIMARY KEY,
  hash    BYTEA NOT NULL,
  time    BIGINT NOT NULL,
  signed  TEXT NOT NULL
);

-- What each broker must drop or re-read from memory, in commit order.
CREATE TABLE changes (
  version  BIGINT PRIMARY KEY,
  kind     TEXT NOT NULL,
  key      TEXT NOT NULL,
  time     BIGINT NOT NULL
);

-- Append-only, enforced by the database too.
CREATE FUNCTION warrant_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION warrant_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION warrant_audit_append_only();
"#,
    ),
    (
        2,
        "broker reports",
        r#"
-- Each broker's last report of itself, for `warrant status --all`. Not
-- audited: it records nothing a broker decided.
CREATE TABLE brokers (
  broker          TEXT PRIMARY KEY,
  version         TEXT NOT NULL,
  api_addr        TEXT NOT NULL,
  policy_digest   TEXT NOT NULL,
  config_digest   TEXT,
  feed_position   BIGINT NOT NULL,
  feed_lag_ms     BIGINT NOT NULL,
  feed_connected  BOOLEAN NOT NULL,
  started_at      BIGINT NOT NULL,
  seen_at         BIGINT NOT NULL
);
"#,
    ),
    (
        3,
        "step-up approvals",
        r#"
CREATE TABLE approvals (
  id          TEXT PRIMARY KEY,
  binding     TEXT NOT NULL,
  agent       TEXT NOT NULL,
  state       TEXT NOT NULL,
  created_at  BIGINT NOT NULL,
  expires_at  BIGINT NOT NULL,
  decided_by  TEXT,
  decided_at  BIGINT,
  reason      TEXT,
  requester   TEXT NOT NULL,
  loose       TEXT NOT NULL,
  used_at     BIGINT,
  record      TEXT NOT NULL
);
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

/// The advisory lock key brokers migrate under ("warrant" in ASCII).
const MIGRATION_LOCK: i64 = 0x0077_6172_7261_6e74;

/// Applies every migration newer than the database's version, one broker
/// at a time.
pub(crate) fn apply(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .map_err(db_err)?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(db_err)?
        .get(0);
    if current > latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest(),
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Unavailable(format!(
                "migration {version} ({name}) failed: {}",
                super::describe(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[
                version,
                name,
                &warrant_core::time::Timestamp::now().as_millis(),
            ],
        )
        .map_err(db_err)?;
        tracing::info!(version, name, "applied database migration");
    }
    tx.commit().map_err(db_err)
}
