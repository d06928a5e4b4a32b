//! Several brokers on one PostgreSQL store: what one changes, every other
//! enforces; one audit trail; exactly one winner across brokers.

use std::time::{Duration, Instant};

use warrant_testkit::postgres::Database;
use warrant_testkit::{Broker, Options};

use crate::support::*;

/// A test KEK every broker of a cluster shares (32 bytes, base64).
const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Cluster {
    nodes: Vec<Broker>,
    _db: Database,
}

fn cluster(n: usize) -> Cluster {
    let db = Database::new();
    let nodes = (0..n)
        .map(|_| {
            let b = Broker::start_with(
                bin(),
                Options {
                    // One issuer for all, as behind a load balancer.
                    args: vec![
                        "--store".into(),
                        db.url.clone(),
                        "--issuer".into(),
                        "http://warrant.cluster.test".into(),
                    ],
                    env: vec![("WARRANT_KEK".into(), KEK.into())],
                    ..Default::default()
                },
            );
            std::fs::write(
                b.data_dir.join("policies/delegation.cedar"),
                DELEGATION_POLICY,
            )
            .unwrap();
            b
        })
        .collect();
    Cluster { nodes, _db: db }
}

fn policy_digest(b: &Broker) -> String {
    b.cli(&["status", "--output", "json"]).json()["policy_digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `f` every 2 ms until it holds; the time it took.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

#[test]
fn what_one_broker_changes_every_other_enforces() {
    let c = cluster(3);
    let (a, b, x) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);

    // A reload on one broker reloads the others (each from its own files).
    let empty = policy_digest(b);
    a.cli(&["policy", "reload"]).ok();
    let want = policy_digest(a);
    assert_ne!(want, empty);
    until("B follows A's reload", Duration::from_secs(10), || {
        policy_digest(b) == want
    });
    until("X follows A's reload", Duration::from_secs(10), || {
        policy_digest(x) == want
    });

    // An agent registered on A is known to B at once; its join token,
    // made on A, is redeemed at B.
    a.cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    let id = identity_across(a, b, "orch");
    // X grants it a task token; B and A both see it active.
    let r = client_credentials(x, &id, "tickets:read", "https://tickets.example");
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(b, &id, &task)["active"], true);

    // Revoked on A: B refuses it, without a restart or a reload.
    let jti = jwt_claims(&task)["jti"].as_str().unwrap().to_owned();
    a.cli(&["revoke", "--jti", &jti]).ok();
    let took = until("B refuses the revoked task", Duration::from_secs(2), || {
        introspect(b, &id, &task)["active"] == false
    });
    eprintln!("revocation reached B in {took:?}");
    assert_eq!(introspect(x, &id, &task)["active"], false);

    // Disabled on A: X issues it nothing more.
    a.cli(&["agent", "disable", "orch"]).ok();
    until(
        "X refuses the disabled agent",
        Duration::from_secs(2),
        || client_credentials(x, &id, "tickets:read", "https://tickets.example").status != 200,
    );

    // One trail: every broker verifies the whole of it, records from all.
    let v = x.cli(&["audit", "verify", "--output", "json"]).json();
    assert_eq!(v["ok"], true, "{v}");
    let records = audit(b, None);
    assert!(
        records.len() as u64 >= v["verified"].as_u64().unwrap(),
        "B lists at least what X verified"
    );
    let starts = audit(a, Some("broker.start"));
    assert_eq!(starts.len(), 3, "each broker's start is in the one trail");
}

/// An identity for `agent` by a join token made on `made` and redeemed at `at`.
fn identity_across(made: &Broker, at: &Broker, agent: &str) -> String {
    let jt = made
        .cli(&["agent", "join-token", agent])
        .ok()
        .trim()
        .to_owned();
    let r = post_json(at, "/v1/attest/join", &serde_json::json!({ "token": jt }));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["identity_token"].as_str().unwrap().to_owned()
}

#[test]
fn a_join_token_redeemed_through_three_brokers_admits_one_instance() {
    let c = cluster(3);
    let a = &c.nodes[0];
    a.cli(&["policy", "reload"]).ok();
    a.cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    let jt = a
        .cli(&["agent", "join-token", "orch"])
        .ok()
        .trim()
        .to_owned();
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.api).collect();
    let tries: Vec<_> = (0..12)
        .map(|i| {
            let (addr, jt) = (addrs[i % 3], jt.clone());
            std::thread::spawn(move || {
                let body = serde_json::json!({ "token": jt }).to_string();
                warrant_testkit::http(
                    addr,
                    "POST",
                    "/v1/attest/join",
                    &[("content-type", "application/json")],
                    Some(&body),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = tries.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        audit(a, Some("attest.join"))
            .iter()
            .filter(|r| r["decision"] == "allow")
            .count(),
        1
    );
}
