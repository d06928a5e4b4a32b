//! The operator's daily path: answers that say what happened, in words and
//! in exit codes.

use crate::support::{audit, bin, broker, client_credentials, identity, world};

/// `warrant revoke` of an id that names nothing exits non-zero, says what
/// was not found, records the attempt, and revokes nothing.
#[test]
fn revoking_an_id_that_matches_nothing_fails_and_says_so() {
    let b = broker();
    let before = audit(&b, Some("admin.revoke")).len();
    for (flag, id, says) in [
        ("--task", "tsk_0000000000000000000000000000", "task"),
        ("--txn", "txn_nothing", "transaction"),
        ("--jti", "jti-nothing", "task token"),
        ("--instance", "ins_nothing", "instance"),
        ("--agent", "nobody", "agent"),
    ] {
        let r = b.cli(&["revoke", flag, id]);
        assert_ne!(r.code, 0, "{flag} {id}: {}", r.stdout);
        assert!(
            r.stderr.contains(&format!("{says} `{id}` does not exist")),
            "{flag}: {}",
            r.stderr
        );
        // With --output json the error is JSON too, on stderr.
        let j = b.cli(&["revoke", flag, id, "--output", "json"]);
        assert_ne!(j.code, 0);
        assert_eq!(j.stdout, "");
        let e: serde_json::Value = serde_json::from_str(&j.stderr).unwrap();
        assert_eq!(e["error"]["code"], "not_found", "{e}");
        assert_eq!(e["error"]["status"], 404, "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(id), "{e}");
    }
    let records = audit(&b, Some("admin.revoke"));
    assert_eq!(records.len(), before + 10, "every attempt is recorded");
    assert!(
        records[before..].iter().all(|r| r["decision"] != "allow"),
        "{records:?}"
    );
}

/// An expired identity token at the token endpoint is refused as expired,
/// not as a token for another audience.
#[test]
fn an_expired_identity_token_says_it_expired() {
    let w = world(4);
    w.b.cli(&[
        "agent",
        "create",
        "brief",
        "--owner",
        "o",
        "--env",
        "dev",
        "--max-ttl",
        "10s",
    ])
    .ok();
    let brief = identity(&w.b, "brief");
    std::thread::sleep(std::time::Duration::from_secs(11));
    let r = client_credentials(&w.b, &brief, "tickets:read", "https://tickets.example");
    assert_eq!(r.status, 401, "{}", r.body);
    let d = r.json()["error_description"].as_str().unwrap().to_owned();
    assert!(d.contains("expired"), "{d}");
    assert!(!d.contains("audience"), "{d}");
}

/// A data directory that does not exist is named as such, in text and in
/// JSON, rather than as a broker that is not running.
#[test]
fn a_missing_data_directory_says_so() {
    let out = std::process::Command::new(bin())
        .args(["agent", "list", "--data-dir", "/nonexistent/warrant-data"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the data directory `/nonexistent/warrant-data` does not exist"),
        "{err}"
    );
    let out = std::process::Command::new(bin())
        .args([
            "agent",
            "list",
            "--data-dir",
            "/nonexistent/warrant-data",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(e["error"]["code"], "no_broker", "{e}");
}

/// `audit trace` takes a task id as well as a txn, and the human `audit
/// list` shows each record's task and txn, as the trace's hint says.
#[test]
fn a_task_id_traces_its_transaction_and_the_list_shows_both() {
    let w = world(4);
    let orch = identity(&w.b, "orch");
    let r = client_credentials(&w.b, &orch, "tickets:read", "https://tickets.example");
    assert_eq!(r.status, 200, "{}", r.body);
    let claims = crate::support::jwt_claims(r.json()["access_token"].as_str().unwrap());
    let (task, txn) = (
        claims["task"].as_str().unwrap(),
        claims["txn"].as_str().unwrap(),
    );
    let by_task =
        w.b.cli(&["audit", "trace", task, "--output", "json"])
            .json();
    let by_txn = w.b.cli(&["audit", "trace", txn, "--output", "json"]).json();
    assert_eq!(by_task["txn"], txn);
    assert_eq!(by_task, by_txn);
    let listed =
        w.b.cli(&["audit", "list", "--event", "token"])
            .ok()
            .to_owned();
    assert!(
        listed.contains("TASK") && listed.contains("TXN"),
        "{listed}"
    );
    assert!(listed.contains(task) && listed.contains(txn), "{listed}");
    let none = w.b.cli(&["audit", "trace", "tsk_nothing"]);
    assert_ne!(none.code, 0);
    assert!(
        none.stderr.contains("no transaction or task"),
        "{}",
        none.stderr
    );
}

/// A reader that stops reading (`warrant ... | head -1`) ends the CLI
/// quietly, as SIGPIPE would, never with a panic and a backtrace.
#[test]
fn a_closed_output_pipe_ends_the_cli_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(bin())
        .args(["policy", "schema"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
