//! The operator's daily path: answers that say what happened, in words and
//! in exit codes.

use crate::delegation::{form, identity, world};
use crate::{audit, broker};

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
        let j = b.cli(&["revoke", flag, id, "--output", "json"]);
        assert_ne!(j.code, 0);
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
    let r = form(
        &w.b,
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &brief),
            ("scope", "tickets:read"),
            ("audience", "https://tickets.example"),
        ],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let d = r.json()["error_description"].as_str().unwrap().to_owned();
    assert!(d.contains("expired"), "{d}");
    assert!(!d.contains("audience"), "{d}");
}
