//! The store conformance suite, mounted on PostgreSQL, and what only a
//! shared store must do: one chain and exactly-once across brokers, the
//! change feed. Needs `WARRANT_TEST_POSTGRES` (scripts/test starts a
//! server and sets it; see scripts/postgres).

use std::sync::Arc;

use async_trait::async_trait;
use warrant_core::audit::{AuditEvent, Outcome};
use warrant_store::conformance::Fixture;
use warrant_store::{PostgresOptions, PostgresStore, Store};

/// The server's URL: `WARRANT_TEST_POSTGRES`, or the one scripts/postgres
/// started last.
pub fn server_url() -> String {
    std::env::var("WARRANT_TEST_POSTGRES")
        .ok()
        .or_else(|| {
            let f = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/test-postgres.url");
            std::fs::read_to_string(f).ok().map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server for the tests: run the suite with scripts/test, or start one with `scripts/postgres start`"
            )
        })
}

/// Runs blocking PostgreSQL work off the async threads.
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

/// A fresh, empty database on the test server; dropped with it.
pub struct Database {
    pub url: String,
    name: String,
}

impl Database {
    pub fn new() -> Self {
        let server = server_url();
        let name = format!("w_{}", hex_id());
        let (base, _) = server.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        let n = name.clone();
        blocking(move || {
            let mut c = postgres::Client::connect(&server, postgres::NoTls).unwrap();
            c.batch_execute(&format!("CREATE DATABASE {n}")).unwrap();
        });
        Self { url, name }
    }

    /// A direct connection, as an operator (or an attacker) would have.
    pub fn sql(&self, sql: &str) {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(&sql).unwrap();
        });
    }

    pub fn open(&self, options: PostgresOptions) -> PostgresStore {
        let url = self.url.clone();
        blocking(move || PostgresStore::open(&url, options)).unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (server, name) = (server_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&server, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

fn hex_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:x}_{}_{}",
        t,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct PgFixture {
    db: Database,
    store: Arc<PostgresStore>,
}

#[async_trait]
impl Fixture for PgFixture {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::new(self.db.open(PostgresOptions::default()));
    }

    async fn break_audit_writes(&self) {
        self.db.sql(
            "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END; $$;
             CREATE TRIGGER broken BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION broken();",
        );
    }

    async fn tamper_audit_body(&self, seq: u64, find: &str, replace: &str) {
        // Someone with the database's owner role can disable the guard first.
        self.db.sql(&format!(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
             UPDATE audit_log SET body = replace(body, '{}', '{}') WHERE seq = {seq};",
            find.replace('\'', "''"),
            replace.replace('\'', "''")
        ));
    }
}

async fn pg() -> Box<dyn Fixture> {
    let db = Database::new();
    let store = Arc::new(db.open(PostgresOptions::default()));
    Box::new(PgFixture { db, store })
}

warrant_store::conformance_tests!(pg());

#[tokio::test]
async fn the_audit_log_is_append_only_in_the_database_too() {
    let db = Database::new();
    let store = db.open(PostgresOptions::default());
    store
        .append_audit(AuditEvent::new("policy.reload", Outcome::Allow))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_log SET event = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let (url, sql) = (db.url.clone(), sql.to_owned());
        let err = blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(&sql).unwrap_err().to_string()
        });
        assert!(err.contains("db error"), "{err}");
    }
    assert_eq!(store.verify_audit().await.unwrap().verified, 1);
    store.close().await;
}

/// Three brokers' stores on one database.
fn three(db: &Database, options: PostgresOptions) -> Vec<Arc<PostgresStore>> {
    (0..3).map(|_| Arc::new(db.open(options.clone()))).collect()
}

async fn close_all(stores: &[Arc<PostgresStore>]) {
    for s in stores {
        s.close().await;
    }
}

#[derive(Debug)]
struct TestKey(&'static [u8]);

impl warrant_core::audit::ChainLinker for TestKey {
    fn link(
        &self,
        prev: &warrant_core::audit::ChainHash,
        body: &[u8],
    ) -> warrant_core::audit::ChainHash {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.0);
        h.update(prev.0);
        h.update(body);
        warrant_core::audit::ChainHash(h.finalize().into())
    }
}

fn keyed(key: &'static [u8]) -> PostgresOptions {
    PostgresOptions {
        chain: Some(Arc::new(TestKey(key))),
        ..PostgresOptions::default()
    }
}

/// Records written concurrently through three brokers form one keyed
/// chain: consecutive, each linked to the one before, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_write_one_chain_that_never_forks() {
    let db = Database::new();
    let stores = three(&db, keyed(b"kek one"));
    let mut writers = Vec::new();
    for (b, s) in stores.iter().enumerate() {
        for w in 0..8 {
            let s = s.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..25 {
                    s.append_audit(AuditEvent::new(format!("t.b{b}.w{w}.{i}"), Outcome::Allow))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    for s in &stores {
        let r = s.verify_audit().await.unwrap();
        assert_eq!((r.verified, r.broken.clone(), r.unkeyed), (600, None, 0));
        assert_eq!(s.audit_head().await.unwrap().unwrap().0, 600);
        // Each broker vouches for the shared head, which links.
        assert_eq!(s.audit_written_head().await.unwrap().unwrap().0, 600);
    }
    close_all(&stores).await;
}

/// A broker whose KEK is not the one the store's chain is keyed with is
/// refused at open, in words that say what to fix.
#[tokio::test]
async fn a_broker_with_another_kek_is_refused() {
    let db = Database::new();
    let first = db.open(keyed(b"kek one"));
    first.close().await;
    let url = db.url.clone();
    let err = blocking(move || PostgresStore::open(&url, keyed(b"kek two"))).unwrap_err();
    assert!(err.to_string().contains("same WARRANT_KEK"), "{err}");
}

/// A join token redeemed at once through three brokers admits exactly one
/// instance; the others change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_is_redeemed_once_across_brokers() {
    use warrant_core::identity::JoinTokenRecord;
    use warrant_core::time::Timestamp;
    let db = Database::new();
    let stores = three(&db, PostgresOptions::default());
    let conf = warrant_store::conformance::ev;
    stores[0]
        .create_agent(
            warrant_store::conformance::agent("triage"),
            conf("admin.agent.create", "triage"),
        )
        .await
        .unwrap();
    stores[0]
        .create_join_token(
            JoinTokenRecord {
                id: "jt_a".into(),
                token_hash: [7; 32],
                agent: "triage".parse().unwrap(),
                created_by: "local:uid=0".into(),
                created_at: Timestamp::from_millis(0),
                expires_at: Timestamp::from_millis(Timestamp::now().as_millis() + 600_000),
                redeemed_at: None,
            },
            conf("admin.agent.join-token", "triage"),
        )
        .await
        .unwrap();
    let mut tries = Vec::new();
    for i in 0..30 {
        let s = stores[i % 3].clone();
        tries.push(tokio::spawn(async move {
            s.redeem_join_token(
                &[7; 32],
                Timestamp::now(),
                warrant_store::conformance::instance("triage", &format!("jt_a{i}"), 1_000),
                conf("attest.join", "triage"),
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(warrant_store::StoreError::Precondition { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(won, 1);
    let r = stores[1].verify_audit().await.unwrap();
    assert_eq!((r.verified, r.broken), (3, None), "one record per success");
    close_all(&stores).await;
}

/// What one broker revokes, blocks or disables reaches the others' feeds in
/// commit order, and their agent snapshots follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_other_broker_in_order() {
    use warrant_core::agent::AgentStatus;
    use warrant_core::task::RevokeTarget;
    use warrant_core::time::Timestamp;
    use warrant_store::conformance::{agent, ev, instance, task};
    use warrant_store::{Change, ChangeKind};
    let db = Database::new();
    let stores = three(&db, PostgresOptions::default());
    let (a, b) = (&stores[0], &stores[1]);
    let mut feed = b.follow().expect("a shared store has a feed");
    assert!(b.follow().is_none(), "taken once");

    a.create_agent(agent("triage"), ev("admin.agent.create", "triage"))
        .await
        .unwrap();
    let name = "triage".parse().unwrap();
    assert_eq!(
        b.get_agent(&name).await.unwrap().unwrap().status,
        AgentStatus::Active
    );
    let inst = instance("triage", "jt", 1_000);
    a.record_instance(inst.clone(), ev("attest.join", "triage"))
        .await
        .unwrap();
    let t = task("t1", None, "x1", "triage", inst.id.as_str());
    a.record_task(t.clone(), ev("token.exchange", "triage"))
        .await
        .unwrap();
    a.revoke(
        RevokeTarget::Task("t1".into()),
        Timestamp::now(),
        ev("admin.revoke", "triage"),
    )
    .await
    .unwrap();
    a.set_agent_status(
        &name,
        AgentStatus::Disabled,
        Timestamp::now(),
        ev("admin.agent.disable", "triage"),
    )
    .await
    .unwrap();

    let mut got: Vec<Change> = Vec::new();
    while got.len() < 3 {
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
            .await
            .expect("the change arrives")
            .unwrap();
        got.push(c);
    }
    let kinds: Vec<(ChangeKind, &str)> = got.iter().map(|c| (c.kind, c.key.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (ChangeKind::Agent, "triage"),
            (ChangeKind::TaskRevoked, "t1"),
            (ChangeKind::Agent, "triage"),
        ]
    );
    assert!(got.windows(2).all(|w| w[0].version < w[1].version));
    // B's snapshot was dropped by the feed: it reads what A wrote.
    assert_eq!(
        b.get_agent(&name).await.unwrap().unwrap().status,
        AgentStatus::Disabled
    );
    assert!(b.feed_status().connected);
    assert_eq!(b.feed_status().position, got[2].version);
    close_all(&stores).await;
}

/// The errors an operator meets first say what is wrong, and never show
/// the password.
#[tokio::test]
async fn unreachable_read_only_and_newer_databases_are_refused_clearly() {
    let err = blocking(|| {
        PostgresStore::open(
            "postgres://warrant:hunter2-secret@127.0.0.1:1/warrant",
            PostgresOptions::default(),
        )
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot reach PostgreSQL at postgres://[redacted]@127.0.0.1:1/warrant"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let db = Database::new();
    db.open(PostgresOptions::default()).close().await;
    db.sql("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)");
    let url = db.url.clone();
    let err = blocking(move || PostgresStore::open(&url, PostgresOptions::default())).unwrap_err();
    assert!(err.to_string().contains("run a newer warrant"), "{err}");

    let ro = Database::new();
    ro.sql(&format!(
        "ALTER DATABASE {} SET default_transaction_read_only = on",
        ro.url.rsplit_once('/').unwrap().1
    ));
    let url = ro.url.clone();
    let err = blocking(move || PostgresStore::open(&url, PostgresOptions::default()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only"), "{err}");
}

/// Brokers starting together on an empty store make one first signing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_starting_together_make_one_first_key() {
    use warrant_core::keys::{Alg, SigningKeyRecord};
    use warrant_core::time::Timestamp;
    let db = Database::new();
    let stores = three(&db, PostgresOptions::default());
    let tries: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            tokio::spawn(async move {
                let key = SigningKeyRecord {
                    kid: format!("kid-{i}"),
                    alg: Alg::Es256,
                    public_key: vec![i as u8],
                    sealed_private_key: vec![i as u8],
                    created_at: Timestamp::from_millis(1),
                    activates_at: Timestamp::from_millis(1),
                };
                s.insert_first_signing_key(
                    key,
                    warrant_store::conformance::ev("key.generate", "broker"),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for t in tries {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(stores[2].list_signing_keys().await.unwrap().len(), 1);
    close_all(&stores).await;
}

/// The same secret version rotated through three brokers at once, and the
/// same tool approval given through three: one outcome each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_and_approvals_have_one_outcome_across_brokers() {
    use warrant_core::mcp::{PinOutcome, ToolDefinition};
    use warrant_core::secret::{SecretName, SecretRecord};
    use warrant_core::time::Timestamp;
    use warrant_store::StoreError;
    let db = Database::new();
    let stores = three(&db, PostgresOptions::default());
    let ev = warrant_store::conformance::ev;
    let secret = |version: u32, blob: u8| SecretRecord {
        name: SecretName::new("openai-key").unwrap(),
        owner: None,
        version,
        description: None,
        wrapped_key: vec![blob],
        ciphertext: vec![blob],
        created_by: "test".into(),
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(1),
        last_used_at: None,
    };
    stores[0]
        .create_secret(secret(1, 0), ev("admin.secret.put", "x"))
        .await
        .unwrap();
    let tries: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, rec) = (s.clone(), secret(2, i as u8 + 1));
            tokio::spawn(async move { s.rotate_secret(rec, ev("admin.secret.rotate", "x")).await })
        })
        .collect();
    let mut won = Vec::new();
    for t in tries {
        match t.await.unwrap() {
            Ok(()) => won.push(()),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "one rotation to version 2");
    let stored = stores[1]
        .get_secret(&SecretName::new("openai-key").unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 2);

    let def = |d: &str| {
        ToolDefinition::from_listing(&serde_json::json!({"name": "search", "description": d, "inputSchema": {"type": "object"}})).unwrap()
    };
    let now = Timestamp::from_millis(1);
    assert_eq!(
        stores[0]
            .observe_tool("files", def("v1"), false, now, ev("mcp.tool.pin", "x"))
            .await
            .unwrap(),
        PinOutcome::New
    );
    stores[1]
        .observe_tool("files", def("v2"), false, now, ev("mcp.tool.change", "x"))
        .await
        .unwrap();
    let digest = def("v2").digest();
    let tries: Vec<_> = stores
        .iter()
        .map(|s| {
            let (s, digest) = (s.clone(), digest.clone());
            tokio::spawn(async move {
                s.approve_tool(
                    "files",
                    "search",
                    &digest,
                    "admin",
                    now,
                    ev("admin.mcp.approve", "x"),
                )
                .await
            })
        })
        .collect();
    let mut approved = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(_) => approved += 1,
            Err(StoreError::Precondition { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(approved, 1, "one approval");
    let r = stores[2].verify_audit().await.unwrap();
    assert_eq!((r.verified, r.broken), (5, None), "one record per outcome");
    close_all(&stores).await;
}

/// Issue 14 review: someone with the database's owner role plants a change
/// past the head's counter (which would stall every broker's feed), a
/// huge key (memory), a rule that swallows instance blocks, a trigger that
/// clears revocations, or removes the trail's end and sets the head back.
/// Each is refused or detected, and nothing is recorded as if it held.
mod tampering {
    use super::*;
    use warrant_core::task::RevokeTarget;
    use warrant_core::time::Timestamp;
    use warrant_store::ChangeKind;
    use warrant_store::conformance::{agent, ev, instance, task};

    async fn with_task(s: &PostgresStore) -> String {
        s.create_agent(agent("orch"), ev("admin.agent.create", "orch"))
            .await
            .unwrap();
        let inst = s
            .record_instance(instance("orch", "jt", 1_000), ev("attest", "orch"))
            .await
            .unwrap();
        s.record_task(
            task("t1", None, "x1", "orch", inst.id.as_str()),
            ev("token.self", "orch"),
        )
        .await
        .unwrap();
        inst.id.to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_planted_change_neither_stalls_the_feed_nor_goes_unnoticed() {
        let db = Database::new();
        let stores = three(&db, PostgresOptions::default());
        let (a, b) = (&stores[0], &stores[1]);
        let mut feed = b.follow().unwrap();
        db.sql(
            "INSERT INTO changes VALUES (1000000000, 'agent', 'zzz', 0); INSERT INTO changes VALUES (999999999, 'task.revoked', repeat('A', 100000), 0)",
        );
        let err = a.ping().await.unwrap_err().to_string();
        assert!(err.contains("no broker wrote"), "{err}");
        // Still, what A commits reaches B, in order, past the planted rows.
        db.sql("DELETE FROM changes WHERE version >= 999999999");
        a.create_agent(agent("orch"), ev("admin.agent.create", "orch"))
            .await
            .unwrap();
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.kind, c.key.as_str()), (ChangeKind::Agent, "orch"));
        a.ping().await.unwrap();
        close_all(&stores).await;
    }

    /// A revocation the feed delivered but the broker has not yet applied
    /// to its memory is not known to it: until the broker acknowledges it,
    /// the feed is not fresh (and no task token is vouched for).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivered_revocation_counts_only_once_applied() {
        let db = Database::new();
        let stores = three(&db, PostgresOptions::default());
        let (a, b) = (&stores[0], &stores[1]);
        let mut feed = b.follow().unwrap();
        with_task(a).await;
        a.revoke(
            RevokeTarget::Task("t1".into()),
            Timestamp::now(),
            ev("admin.revoke", "orch"),
        )
        .await
        .unwrap();
        let revoked = loop {
            let c = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
                .await
                .unwrap()
                .unwrap();
            if c.kind == ChangeKind::TaskRevoked {
                break c;
            }
        };
        assert!(!b.feed_fresh(), "delivered, not yet applied");
        b.feed_applied(revoked.version - 1);
        assert!(!b.feed_fresh(), "applied up to the change before it");
        b.feed_applied(revoked.version);
        assert!(b.feed_fresh(), "applied");
        close_all(&stores).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_key_is_a_resync_not_a_key() {
        let db = Database::new();
        let s = db.open(PostgresOptions::default());
        let mut feed = s.follow().unwrap();
        db.sql("UPDATE audit_head SET changes = 1; INSERT INTO changes VALUES (1, 'task.revoked', repeat('A', 100000), 0)");
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.kind, c.key.len()), (ChangeKind::Resync, 0));
        s.close().await;
    }

    #[tokio::test]
    async fn a_rule_that_swallows_blocks_is_refused_and_the_block_not_reported() {
        let db = Database::new();
        let s = db.open(PostgresOptions::default());
        let inst = with_task(&s).await;
        db.sql("CREATE RULE noblock AS ON INSERT TO revoked_instances DO INSTEAD NOTHING");
        let e = s
            .revoke(
                RevokeTarget::Instance(inst.clone()),
                Timestamp::now(),
                ev("admin.revoke", "orch"),
            )
            .await
            .unwrap_err();
        // Refused before the write by the guard check, or after it by the
        // read-back: either way nothing is committed.
        assert!(
            matches!(e, warrant_store::StoreError::AuditUnavailable(_)),
            "{e}"
        );
        assert!(
            s.get_task("t1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none(),
            "nothing committed"
        );
        let err = s.ping().await.unwrap_err().to_string();
        assert!(err.contains("rule or row security"), "{err}");
        s.close().await;
        let url = db.url.clone();
        let refused = blocking(move || PostgresStore::open(&url, PostgresOptions::default()));
        assert!(
            refused.is_err(),
            "a store with a foreign rule is not opened"
        );
    }

    #[tokio::test]
    async fn a_trigger_that_clears_revocations_makes_the_revocation_fail() {
        let db = Database::new();
        let s = db.open(PostgresOptions::default());
        with_task(&s).await;
        db.sql(
            "CREATE FUNCTION unrevoke() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.revoked_at := NULL; RETURN NEW; END; $$;
             CREATE TRIGGER unrevoke BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION unrevoke();",
        );
        let e = s
            .revoke(
                RevokeTarget::Task("t1".into()),
                Timestamp::now(),
                ev("admin.revoke", "orch"),
            )
            .await
            .unwrap_err();
        // Refused before the write by the guard check, or after it by the
        // read-back: either way nothing is committed.
        assert!(
            matches!(e, warrant_store::StoreError::AuditUnavailable(_)),
            "{e}"
        );
        s.close().await;
    }

    #[tokio::test]
    async fn the_trail_cut_back_with_its_head_is_noticed_by_a_broker_that_saw_it() {
        let db = Database::new();
        let s = db.open(PostgresOptions::default());
        for i in 0..5 {
            s.append_audit(ev(&format!("t.{i}"), "x")).await.unwrap();
        }
        db.sql(
            "BEGIN; ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
             DELETE FROM audit_log WHERE seq > 2;
             UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_log WHERE seq = 2);
             ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update; COMMIT;",
        );
        let e = s.append_audit(ev("t.after", "x")).await.unwrap_err();
        assert!(
            e.to_string().contains("went back from record 5 to 2"),
            "{e}"
        );
        assert!(s.ping().await.is_err());
        s.close().await;
    }
}

/// The test server's CA (scripts/postgres makes one when it can).
fn server_ca() -> std::path::PathBuf {
    let f = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/test-postgres.ca"
    ))
    .to_owned();
    assert!(
        f.exists(),
        "the test PostgreSQL has no TLS: run scripts/setup-test-deps, then scripts/postgres start"
    );
    f
}

/// With `sslmode=require` every connection of the store is TLS, the
/// server's certificate verified against the given CA; a certificate no
/// trusted CA signed is refused.
#[tokio::test]
async fn tls_to_the_database_is_verified_and_used() {
    let db = Database::new();
    let url = format!(
        "{}?sslmode=require",
        db.url.replace("127.0.0.1", "localhost")
    );
    let ca = server_ca();
    let (u, c) = (url.clone(), ca.clone());
    let s = blocking(move || {
        PostgresStore::open(
            &u,
            PostgresOptions {
                ca_file: Some(c),
                ..PostgresOptions::default()
            },
        )
    })
    .unwrap();
    s.append_audit(AuditEvent::new("t.tls", Outcome::Allow))
        .await
        .unwrap();
    assert_eq!(s.verify_audit().await.unwrap().verified, 1);
    let name = db.url.rsplit_once('/').unwrap().1.to_owned();
    let (admin, n) = (server_url(), name.clone());
    let plain: i64 = blocking(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.datname = $1 AND a.application_name = 'warrant' AND NOT s.ssl",
            &[&n],
        )
        .unwrap()
        .get(0)
    });
    let (admin, n) = (server_url(), name);
    let tls: i64 = blocking(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.datname = $1 AND a.application_name = 'warrant' AND s.ssl",
            &[&n],
        )
        .unwrap()
        .get(0)
    });
    assert_eq!(plain, 0, "no connection in the clear");
    assert!(tls >= 2, "the writer, the feed and a reader: {tls}");
    s.close().await;

    // The system's roots do not vouch for the test CA's certificate.
    let err = blocking(move || PostgresStore::open(&url, PostgresOptions::default()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot reach PostgreSQL"), "{err}");
    assert!(!err.contains(db.url.rsplit_once('@').unwrap().0), "{err}");
}

/// Issue 14 review, second round: the change counter set back (so the next
/// revocation would reuse a version other brokers have read), a view on an
/// earlier schema of the role's search_path, a trigger on `changes` added
/// while running.
mod tampering_again {
    use super::*;
    use warrant_core::task::RevokeTarget;
    use warrant_core::time::Timestamp;
    use warrant_store::conformance::{agent, ev, instance, task};
    use warrant_store::{ChangeKind, Store};

    async fn with_task(s: &PostgresStore) {
        s.create_agent(agent("orch"), ev("admin.agent.create", "orch"))
            .await
            .unwrap();
        let inst = s
            .record_instance(instance("orch", "jt", 1_000), ev("attest", "orch"))
            .await
            .unwrap();
        s.record_task(
            task("t1", None, "x1", "orch", inst.id.as_str()),
            ev("token.self", "orch"),
        )
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_counter_set_back_stops_writes_and_vouching() {
        let db = Database::new();
        let stores = three(&db, PostgresOptions::default());
        let (a, b) = (&stores[0], &stores[1]);
        with_task(a).await;
        // Both have seen the counter where it is.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        a.ping().await.unwrap();
        db.sql("BEGIN; DELETE FROM changes WHERE version = (SELECT changes FROM audit_head); UPDATE audit_head SET changes = changes - 1; COMMIT;");
        let e = a
            .revoke(
                RevokeTarget::Task("t1".into()),
                Timestamp::now(),
                ev("admin.revoke", "orch"),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("counter went back"), "{e}");
        assert!(
            a.get_task("t1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while b.feed_fresh() {
            assert!(std::time::Instant::now() < deadline, "B keeps vouching");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        close_all(&stores).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_view_earlier_on_the_search_path_shadows_nothing() {
        let db = Database::new();
        let stores = three(&db, PostgresOptions::default());
        let (a, b) = (&stores[0], &stores[1]);
        with_task(a).await;
        let mut feed = b.follow().unwrap();
        let name = db.url.rsplit_once('/').unwrap().1.to_owned();
        db.sql(&format!(
            "CREATE SCHEMA evil; CREATE VIEW evil.audit_head AS SELECT id, seq, hash, time, 0::bigint AS changes FROM public.audit_head;
             CREATE VIEW evil.changes AS SELECT * FROM public.changes WHERE false;
             ALTER ROLE warrant IN DATABASE {name} SET search_path = evil, public;"
        ));
        // Every connection of every broker dropped: they come back on the
        // role's new search_path, as after a database restart.
        db.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut revoked = None;
        for _ in 0..20 {
            match a
                .revoke(
                    RevokeTarget::Task("t1".into()),
                    Timestamp::now(),
                    ev("admin.revoke", "orch"),
                )
                .await
            {
                Ok(r) => {
                    revoked = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        assert_eq!(revoked, Some(vec!["t1".to_owned()]));
        let seen = loop {
            let c = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
                .await
                .expect("B hears the revocation")
                .unwrap();
            if c.kind == ChangeKind::TaskRevoked {
                break c;
            }
        };
        assert_eq!(seen.key, "t1");
        db.sql(&format!(
            "ALTER ROLE warrant IN DATABASE {name} RESET search_path"
        ));
        close_all(&stores).await;
    }

    #[tokio::test]
    async fn a_trigger_on_the_feed_added_while_running_stops_every_write() {
        let db = Database::new();
        let s = db.open(PostgresOptions::default());
        with_task(&s).await;
        db.sql(
            "CREATE FUNCTION evil() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.kind := 'reload'; RETURN NEW; END; $$;
             CREATE TRIGGER z BEFORE INSERT ON changes FOR EACH ROW EXECUTE FUNCTION evil();",
        );
        let e = s
            .revoke(
                RevokeTarget::Task("t1".into()),
                Timestamp::now(),
                ev("admin.revoke", "orch"),
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("trigger warrant did not create"),
            "{e}"
        );
        assert!(
            s.get_task("t1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        s.close().await;
    }
}
