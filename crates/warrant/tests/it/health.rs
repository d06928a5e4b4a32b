//! Identity health through the real binary: `warrant health` and the
//! `warrant_identity_health` gauges reflect secrets (their age and use, by
//! editing the store's clock-bearing columns while the broker is down),
//! the credential class of upstream requests, grants, inventory hygiene,
//! enforcement times and pending approvals.

use serde_json::Value;
use warrant_testkit::Options;

use crate::support::{
    Upstream, client_credentials, exchange, identity, put_secret, python, world_with,
};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

const POLICY: &str = r#"
@id("ids") permit(principal, action == Action::"identity:issue", resource);
@id("x") permit(principal, action == Action::"token:exchange", resource) unless { resource == Audience::"https://payments.example" };
@id("self") permit(principal, action == Action::"token:self", resource);
@id("egress") permit(principal, action == Action::"http:request", resource);
@id("pay") @approval("required") permit(principal, action == Action::"token:exchange", resource == Audience::"https://payments.example");
"#;

#[test]
fn health_reflects_standing_credentials_grants_hygiene_and_enforcement() {
    let up = Upstream::start(false);
    let config = format!(
        r#"
[[route]]
name = "keyed"
upstream = "{o}"
audience = "https://keyed.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "secret", secret = "static-key" }}

[[route]]
name = "minted"
upstream = "{o}"
audience = "https://minted.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "warrant_jwt" }}
"#,
        o = up.origin("http")
    );
    let mut w = world_with(4, &config, POLICY);
    put_secret(&w, "static-key", "sk-static-0123456789", None);
    put_secret(&w, "forgotten-key", "sk-forgotten-0123456789", None);
    w.b.cli(&[
        "agent", "create", "stray", "--owner", "none", "--env", "dev",
    ])
    .ok();
    let orch = identity(&w.b, "orch");
    let token = |aud: &str| {
        let r = exchange(
            &w.b,
            w.users["alice"].as_str().unwrap(),
            JWT,
            &orch,
            &[("scope", "s"), ("audience", aud)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    };
    let (keyed, minted) = (token("https://keyed.test"), token("https://minted.test"));
    let get = |route: &str, t: &str| {
        let r = warrant_testkit::http(
            w.b.edge,
            "GET",
            &format!("/{route}/x"),
            &[("authorization", &format!("Bearer {t}"))],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    get("keyed", &keyed);
    for _ in 0..3 {
        get("minted", &minted);
    }
    let r = client_credentials(&w.b, &orch, "s", "https://keyed.test");
    assert_eq!(r.status, 200, "{}", r.body);
    // A pending approval, and a revocation.
    let pending = exchange(
        &w.b,
        w.users["alice"].as_str().unwrap(),
        JWT,
        &orch,
        &[("scope", "s"), ("audience", "https://payments.example")],
    );
    assert_eq!(pending.status, 403);
    let jti = crate::support::jwt_claims(&keyed)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    w.b.cli(&["revoke", "--jti", &jti]).ok();

    let h = w.b.cli(&["health", "--output", "json"]).json();
    assert_eq!(h["secrets"]["stored"], 2);
    assert_eq!(h["upstream"]["requests"], 4);
    assert_eq!(h["upstream"]["ephemeral"], 3);
    assert_eq!(h["upstream"]["ephemeral_share"], 0.75);
    assert_eq!(h["upstream"]["by_kind"]["secret"], 1);
    assert_eq!(h["grants"]["delegated"], 2);
    assert_eq!(h["grants"]["self_acting"], 1);
    assert_eq!(h["agents"]["without_owner"], serde_json::json!(["stray"]));
    assert_eq!(h["approvals"]["pending"], 1);
    assert!(h["instances_alive"].as_u64().unwrap() >= 1);
    assert_eq!(h["enforcement"]["revoke"]["count"], 1);
    let human = w.b.cli(&["health"]);
    assert!(
        human.stdout.contains("75% of 4 upstream requests"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("without an owner     1: stray"),
        "{}",
        human.stdout
    );
    let metrics = w.b.http("GET", "/metrics", &[], None).body;
    for line in [
        "warrant_identity_health{state=\"upstream_ephemeral_share_percent\"} 75",
        "warrant_identity_health{state=\"agents_without_owner\"} 1",
        "warrant_identity_health{state=\"approvals_pending\"} 1",
        "warrant_upstream_requests_by_credential_total{kind=\"warrant_jwt\",class=\"ephemeral\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // Forty days later (the store's times moved back while the broker is
    // down): the forgotten key is unused for 30 days, and agents that never
    // attested since are flagged.
    w.b.stop();
    let db = w.b.data_dir.join("warrant.db");
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); d=40*86400000; \
             c.execute('UPDATE secrets SET created_at=created_at-?, updated_at=updated_at-?, last_used_at=last_used_at-?', (d,d,d)); \
             c.execute('UPDATE agents SET created_at=created_at-?', (d,)); \
             c.execute('UPDATE instances SET first_seen=first_seen-?, last_seen=last_seen-?', (d,d)); c.commit()",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.b.restart(Options {
        data_dir: Some(w.b.data_dir.clone()),
        ..Default::default()
    });
    let h: Value = w.b.cli(&["health", "--output", "json"]).json();
    assert_eq!(h["secrets"]["oldest_rotation_days"], 40);
    let unused = h["secrets"]["unused_30d"].as_array().unwrap();
    assert!(unused.iter().any(|s| s == "forgotten-key"), "{h}");
    let stale = h["agents"]["not_attested_30d"].as_array().unwrap();
    for a in ["orch", "stray", "sub"] {
        assert!(stale.iter().any(|s| s == a), "{a}: {h}");
    }
}
