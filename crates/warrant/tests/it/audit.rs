//! The audit trail: listing, verification, tampering, fail-closed writes.

use crate::support::{audit, broker};

fn db(b: &crate::support::Broker) -> rusqlite::Connection {
    rusqlite::Connection::open(b.data_dir.join("warrant.db")).unwrap()
}

#[test]
fn audit_list_filters_and_formats() {
    let b = broker();
    for name in ["a1", "a2"] {
        b.cli(&["agent", "create", name, "--owner", "o", "--env", "dev"])
            .ok();
    }
    b.cli(&["agent", "disable", "a1"]).ok();
    let by_agent = audit(&b, None)
        .into_iter()
        .filter(|r| r["agent"] == "a1")
        .count();
    let filtered = b
        .cli(&["audit", "list", "--agent", "a1", "--output", "json"])
        .json();
    assert_eq!(filtered.as_array().unwrap().len(), by_agent);
    assert_eq!(by_agent, 2);
    let admin = b
        .cli(&["audit", "list", "--event", "admin", "--output", "json"])
        .json();
    assert_eq!(
        admin.as_array().unwrap().len(),
        3,
        "`admin` matches admin.agent.*"
    );
    let last = b
        .cli(&["audit", "list", "--limit", "2", "--output", "json"])
        .json();
    let seqs: Vec<u64> = last
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4, 5], "the newest records, oldest first");
    let recent = b
        .cli(&["audit", "list", "--since", "1h", "--output", "json"])
        .json();
    assert_eq!(recent.as_array().unwrap().len(), 5);
    let future = b
        .cli(&[
            "audit",
            "list",
            "--since",
            "2999-01-01T00:00:00Z",
            "--output",
            "json",
        ])
        .json();
    assert!(future.as_array().unwrap().is_empty());
    let r = b.cli(&["audit", "list", "--since", "last tuesday"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("neither an RFC 3339 time"),
        "{}",
        r.stderr
    );

    let rec = &audit(&b, Some("admin.agent.disable"))[0];
    for key in [
        "seq",
        "time",
        "event",
        "decision",
        "actor",
        "agent",
        "protocol",
        "resource",
        "action",
        "prev_hash",
        "hash",
    ] {
        assert!(rec.get(key).is_some(), "record lacks `{key}`: {rec}");
    }
    let table = b.cli(&["audit", "list"]).ok().to_owned();
    assert!(
        table.lines().next().unwrap().starts_with("SEQ  TIME"),
        "{table}"
    );
}

#[test]
fn verify_names_the_first_tampered_record() {
    let b = broker();
    for name in ["a1", "a2", "a3"] {
        b.cli(&["agent", "create", name, "--owner", "o", "--env", "dev"])
            .ok();
    }
    let ok = b.cli(&["audit", "verify"]);
    assert!(
        ok.ok().starts_with("ok: 5 audit records verified"),
        "{}",
        ok.stdout
    );

    // The database refuses edits of the trail...
    let c = db(&b);
    let e = c
        .execute(
            "UPDATE audit_log SET body = replace(body, 'a2', 'zz') WHERE agent = 'a2'",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("append-only"));
    // ...but someone with the file can drop the guard; verification still catches it.
    c.execute_batch("DROP TRIGGER audit_log_no_update;")
        .unwrap();
    let seq: i64 = c
        .query_row("SELECT seq FROM audit_log WHERE agent = 'a2'", [], |r| {
            r.get(0)
        })
        .unwrap();
    c.execute(
        "UPDATE audit_log SET body = replace(body, '\"o\"', '\"mallory\"') WHERE seq = ?1",
        [seq],
    )
    .unwrap();

    let bad = b.cli(&["audit", "verify"]);
    assert_eq!(bad.code, 4, "{}{}", bad.stdout, bad.stderr);
    assert!(
        bad.stdout
            .contains(&format!("TAMPERED: audit record {seq} fails verification")),
        "{}",
        bad.stdout
    );
    assert!(bad.stdout.contains("altered"), "{}", bad.stdout);
    let json = b.cli(&["audit", "verify", "--output", "json"]);
    assert_eq!(json.code, 4);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken"]["seq"], seq);
    assert_eq!(v["verified"], seq - 1);

    // Deleting a record is caught too.
    c.execute_batch("DROP TRIGGER audit_log_no_delete;")
        .unwrap();
    c.execute(
        "UPDATE audit_log SET body = replace(body, '\"mallory\"', '\"o\"') WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    assert_eq!(b.cli(&["audit", "verify"]).code, 0, "restored");
    c.execute("DELETE FROM audit_log WHERE seq = 2", [])
        .unwrap();
    let gone = b.cli(&["audit", "verify"]);
    assert_eq!(gone.code, 4);
    assert!(
        gone.stdout
            .contains("audit record 2 fails verification: records 2..2 are missing"),
        "{}",
        gone.stdout
    );
}

#[test]
fn when_the_trail_cannot_be_written_nothing_changes() {
    let b = broker();
    b.cli(&["agent", "create", "keep", "--owner", "o", "--env", "dev"])
        .ok();
    // Simulate a trail that can't be written (a full disk, a broken table).
    db(&b).execute_batch("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(FAIL, 'disk full (simulated)'); END;").unwrap();

    let r = b.cli(&["agent", "create", "new", "--owner", "o", "--env", "dev"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("the audit trail cannot be written"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    let r = b.cli(&["agent", "disable", "keep"]);
    assert_eq!(r.code, 1);
    let r = b.cli(&["admin-token", "create", "--role", "admin"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty(), "no token is handed out unrecorded");
    let r = b.cli(&["keys", "rotate"]);
    assert_eq!(r.code, 1);

    db(&b).execute_batch("DROP TRIGGER fail_audit;").unwrap();
    let agents = b.cli(&["agent", "list", "--output", "json"]).json();
    assert_eq!(agents.as_array().unwrap().len(), 1);
    assert_eq!(agents[0]["status"], "active");
    assert!(
        b.cli(&["admin-token", "list", "--output", "json"])
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        b.cli(&["keys", "list", "--output", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(b.cli(&["audit", "verify"]).ok().starts_with("ok:"));
    let m = b.http("GET", "/metrics", &[], None).body;
    assert!(
        m.lines()
            .any(|l| l.starts_with("warrant_audit_write_failures_total ") && !l.ends_with(" 0")),
        "{m}"
    );
}
