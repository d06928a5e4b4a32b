//! The store conformance suite, mounted on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

mod postgres;

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
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, known } if known < 999),
        "{err}"
    );
    assert!(err.to_string().contains("run a newer warrant"));
}

#[tokio::test]
async fn an_older_database_is_migrated_and_keeps_its_data() {
    let (_dir, path, store) = sqlite_at().await;
    store
        .append_audit(AuditEvent::new("broker.start", Outcome::Allow))
        .await
        .unwrap();
    store.close().await;
    // Back to schema version 1, as a database from the first release.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "DROP TABLE instances; DROP TABLE join_tokens; DROP TABLE tasks; DROP TABLE revoked_instances; DROP TABLE secrets; DROP TABLE mcp_tools; DROP TABLE mcp_servers; DROP TABLE audit_meta; DROP TABLE audit_checkpoints; DROP TABLE approvals; ALTER TABLE admin_tokens DROP COLUMN person; DELETE FROM schema_migrations WHERE version > 1;",
    )
    .unwrap();
    drop(c);
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    assert!(
        store
            .list_instances(&"triage".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_secrets().await.unwrap().is_empty());
    assert!(store.list_tool_pins(None).await.unwrap().is_empty());
    assert!(store.verify_audit().await.unwrap().broken.is_none());
    assert_eq!(store.verify_audit().await.unwrap().verified, 1);
}

/// A test chain key (the broker's is warrant-token's, from the KEK).
#[derive(Debug)]
struct TestKey;

impl warrant_core::audit::ChainLinker for TestKey {
    fn link(
        &self,
        prev: &warrant_core::audit::ChainHash,
        body: &[u8],
    ) -> warrant_core::audit::ChainHash {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"test key");
        h.update(prev.0);
        h.update(body);
        warrant_core::audit::ChainHash(h.finalize().into())
    }
}

fn keyed() -> SqliteOptions {
    SqliteOptions {
        chain: Some(Arc::new(TestKey)),
        ..SqliteOptions::default()
    }
}

/// Issue 12 (low): an unkeyed chain (a database from before keying) is
/// continued keyed; its unkeyed records stay verifiable, and from then on
/// deleting a record and re-linking the rest, or removing the note of where
/// keying starts, is detected.
#[tokio::test]
async fn the_chain_is_keyed_from_the_upgrade_on_and_relinking_is_detected() {
    let (_dir, path, store) = sqlite_at().await;
    for i in 0..3 {
        store
            .append_audit(AuditEvent::new(format!("old.{i}"), Outcome::Allow))
            .await
            .unwrap();
    }
    store.close().await;
    let store = SqliteStore::open(&path, keyed()).unwrap();
    for i in 0..3 {
        store
            .append_audit(AuditEvent::new(format!("new.{i}"), Outcome::Allow))
            .await
            .unwrap();
    }
    let r = store.verify_audit().await.unwrap();
    assert_eq!((r.verified, r.broken), (6, None));
    assert_eq!(r.unkeyed, 3, "the records from before keying are reported");
    store.close().await;

    // Someone with the database but not the key deletes record 5 and
    // re-links 6 to 4 (as they could with the plain chain).
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("DROP TRIGGER audit_log_no_delete; DROP TRIGGER audit_log_no_update;")
        .unwrap();
    let (prev4, body6): (Vec<u8>, String) = c
        .query_row(
            "SELECT (SELECT hash FROM audit_log WHERE seq = 4), (SELECT body FROM audit_log WHERE seq = 6)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let body5 = body6.replace("\"seq\":6", "\"seq\":5");
    let forged = warrant_core::audit::ChainHash::link(
        &warrant_core::audit::ChainHash(prev4.clone().try_into().unwrap()),
        body5.as_bytes(),
    );
    c.execute("DELETE FROM audit_log WHERE seq >= 5", [])
        .unwrap();
    c.execute(
        "INSERT INTO audit_log (seq, time, event, decision, body, prev_hash, hash) VALUES (5, (SELECT time FROM audit_log WHERE seq = 4), 'new.2', 'allow', ?1, ?2, ?3)",
        rusqlite::params![body5, prev4, forged.0.to_vec()],
    )
    .unwrap();
    drop(c);
    let store = SqliteStore::open(&path, keyed()).unwrap();
    let r = store.verify_audit().await.unwrap();
    assert_eq!(r.broken.as_ref().map(|b| b.seq), Some(5), "{r:?}");
    store.close().await;
    // Removing the note of where keying starts does not help either.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("DELETE FROM audit_meta", []).unwrap();
    drop(c);
    let store = SqliteStore::open(&path, keyed()).unwrap();
    let r = store.verify_audit().await.unwrap();
    assert_eq!(r.broken.as_ref().map(|b| b.seq), Some(1), "{r:?}");
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

mod index {
    use warrant_core::audit::{AuditEvent, AuditRecord, Outcome};
    use warrant_core::time::Timestamp;
    use warrant_store::{AuditQuery, SqliteOptions, SqliteStore, Store};

    const AGENTS: [&str; 3] = ["a0", "a1", "a2"];
    const EVENTS: [&str; 4] = [
        "admin.agent.create",
        "admin.token.create",
        "policy.decision",
        "adminx.other",
    ];

    async fn fill(s: &SqliteStore, from: usize, n: usize) {
        for i in from..from + n {
            let outcome = if i % 6 == 1 {
                Outcome::Deny
            } else {
                Outcome::Allow
            };
            let mut e = AuditEvent::new(EVENTS[i % 4], outcome);
            if i % 5 != 0 {
                e = e.agent(AGENTS[i % 3]);
            }
            if i % 2 == 0 {
                e = e
                    .user(format!("user:u{}", i % 4))
                    .txn(format!("txn_{}", i % 7));
            }
            if i % 3 == 0 {
                e = e.task(format!("tsk_{}", i % 11));
            }
            s.append_audit(e).await.unwrap();
        }
    }

    /// The answer computed the obvious way: every record, filtered in Rust.
    fn reference(all: &[AuditRecord], q: &AuditQuery) -> Vec<u64> {
        let mut v: Vec<u64> = all
            .iter()
            .filter(|r| {
                q.agent
                    .as_deref()
                    .is_none_or(|a| r.event.agent.as_deref() == Some(a))
            })
            .filter(|r| {
                q.event.as_deref().is_none_or(|e| {
                    r.event.event == e || r.event.event.starts_with(&format!("{e}."))
                })
            })
            .filter(|r| q.since.is_none_or(|t| r.time >= t))
            .filter(|r| {
                q.user
                    .as_deref()
                    .is_none_or(|u| r.event.user.as_deref() == Some(u))
            })
            .filter(|r| {
                q.task
                    .as_deref()
                    .is_none_or(|t| r.event.task.as_deref() == Some(t))
            })
            .filter(|r| {
                q.txn
                    .as_deref()
                    .is_none_or(|x| r.event.txn.as_deref() == Some(x))
            })
            .filter(|r| {
                q.decision
                    .as_deref()
                    .is_none_or(|d| r.event.decision.as_str() == d)
            })
            .map(|r| r.seq)
            .collect();
        let keep = v.len().saturating_sub(q.limit as usize);
        v.drain(..keep);
        v
    }

    async fn check_all(s: &SqliteStore) {
        let all = s
            .list_audit(&AuditQuery {
                limit: 1_000_000,
                ..Default::default()
            })
            .await
            .unwrap();
        let mid = all[all.len() / 2].time;
        for agent in [None, Some("a0"), Some("a2"), Some("nobody")] {
            for event in [
                None,
                Some("admin"),
                Some("admin.agent"),
                Some("policy.decision"),
                Some("adminx"),
                Some("adm"),
            ] {
                for (since, (user, task, txn)) in [None, Some(mid)].into_iter().flat_map(|s| {
                    [
                        (None, None, None),
                        (Some("user:u2"), None, None),
                        (None, Some("tsk_3"), None),
                        (None, None, Some("txn_4")),
                        (Some("user:u0"), None, Some("txn_0")),
                    ]
                    .into_iter()
                    .map(move |f| (s, f))
                }) {
                    for (limit, decision) in [
                        (1, None),
                        (7, Some("deny")),
                        (10_000, None),
                        (10_000, Some("deny")),
                    ] {
                        let q = AuditQuery {
                            decision: decision.map(Into::into),
                            agent: agent.map(Into::into),
                            event: event.map(Into::into),
                            since,
                            limit,
                            user: user.map(Into::into),
                            task: task.map(Into::into),
                            txn: txn.map(Into::into),
                        };
                        let got: Vec<u64> = s
                            .list_audit(&q)
                            .await
                            .unwrap()
                            .iter()
                            .map(|r| r.seq)
                            .collect();
                        assert_eq!(got, reference(&all, &q), "{q:?}");
                    }
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_agree_with_a_full_scan_indexed_partly_indexed_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warrant.db");
        let s = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        fill(&s, 0, 300).await;
        s.flush_index().await;
        check_all(&s).await; // all below the watermark: the index path
        fill(&s, 300, 120).await;
        check_all(&s).await; // a tail above the watermark as well
        s.flush_index().await;
        s.close().await;
        drop(s);

        // A missing index is rebuilt from the log.
        for f in [
            "warrant-audit-index.db",
            "warrant-audit-index.db-wal",
            "warrant-audit-index.db-shm",
        ] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let s = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        s.flush_index().await;
        check_all(&s).await;
        s.close().await;
        drop(s);

        // An index ahead of the log (the database was restored from an older
        // copy) is detected and rebuilt rather than trusted.
        let other = tempfile::tempdir().unwrap();
        let older = other.path().join("warrant.db");
        let o = SqliteStore::open(&older, SqliteOptions::default()).unwrap();
        // A different pattern from the first log, so stale index entries would mislead.
        fill(&o, 1, 50).await;
        o.close().await;
        drop(o);
        let stale = other.path().join("warrant-audit-index.db");
        // Copy the index as a restore would: the file and its write-ahead log.
        std::fs::copy(dir.path().join("warrant-audit-index.db"), &stale).unwrap();
        std::fs::copy(
            dir.path().join("warrant-audit-index.db-wal"),
            other.path().join("warrant-audit-index.db-wal"),
        )
        .unwrap();
        let upto: i64 = rusqlite::Connection::open(&stale)
            .unwrap()
            .query_row("SELECT indexed_upto FROM index_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(upto, 420, "the copied index is ahead of the 50-record log");
        let o = SqliteStore::open(&older, SqliteOptions::default()).unwrap();
        o.flush_index().await;
        check_all(&o).await;
        let since_future = AuditQuery {
            since: Some(Timestamp::now() + std::time::Duration::from_secs(60)),
            limit: 10,
            ..Default::default()
        };
        assert!(o.list_audit(&since_future).await.unwrap().is_empty());
    }
}
