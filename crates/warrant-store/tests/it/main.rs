//! The store conformance suite, mounted on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use warrant_core::audit::{AuditEvent, Outcome};
use warrant_store::conformance::Fixture;
use warrant_store::{SqliteOptions, SqliteStore, Store, StoreError};

struct SqliteFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Arc<SqliteStore>,
}

#[async_trait]
impl Fixture for SqliteFixture {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::new(SqliteStore::open(&self.path, SqliteOptions::default()).unwrap());
    }

    async fn break_audit_writes(&self) {
        // A trigger that refuses every insert, as a full disk would.
        let c = rusqlite::Connection::open(&self.path).unwrap();
        c.execute_batch("CREATE TRIGGER broken BEFORE INSERT ON audit_log BEGIN SELECT RAISE(FAIL, 'disk full (simulated)'); END;").unwrap();
    }

    async fn tamper_audit_body(&self, seq: u64, find: &str, replace: &str) {
        // An attacker with file access can drop the append-only trigger first.
        let c = rusqlite::Connection::open(&self.path).unwrap();
        c.execute_batch("DROP TRIGGER audit_log_no_update;")
            .unwrap();
        let n = c
            .execute(
                "UPDATE audit_log SET body = replace(body, ?1, ?2) WHERE seq = ?3",
                rusqlite::params![find, replace, seq as i64],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}

async fn sqlite() -> Box<dyn Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warrant.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    Box::new(SqliteFixture {
        _dir: dir,
        path,
        store,
    })
}

warrant_store::conformance_tests!(sqlite());

async fn sqlite_at() -> (tempfile::TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warrant.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    (dir, path, store)
}

#[tokio::test]
async fn the_audit_log_is_append_only_in_the_database_too() {
    let (_dir, path, store) = sqlite_at().await;
    store
        .append_audit(AuditEvent::new("policy.reload", Outcome::Allow))
        .await
        .unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let upd = c
        .execute("UPDATE audit_log SET event = 'x'", [])
        .unwrap_err()
        .to_string();
    assert!(upd.contains("append-only"), "{upd}");
    let del = c
        .execute("DELETE FROM audit_log", [])
        .unwrap_err()
        .to_string();
    assert!(del.contains("append-only"), "{del}");
}

#[tokio::test]
async fn a_database_from_a_newer_warrant_is_refused() {
    let (_dir, path, store) = sqlite_at().await;
    store.close().await;
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        [],
    )
    .unwrap();
    drop(c);
    let err = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
    assert_eq!(
        err,
        StoreError::SchemaTooNew {
            found: 999,
            known: 1
        }
    );
    assert!(err.to_string().contains("run a newer warrant"));
}

#[tokio::test]
async fn writes_after_close_are_refused() {
    let (_dir, _path, store) = sqlite_at().await;
    store.close().await;
    let e = store
        .append_audit(AuditEvent::new("x", Outcome::Allow))
        .await
        .unwrap_err();
    assert_eq!(e, StoreError::Closed);
}
