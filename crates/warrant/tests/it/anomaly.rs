//! Anomaly detection through the real binary: an agent that starts
//! probing is scored, policy sees the score, the detector alerts (audited,
//! webhook) and, past its threshold, quarantines the agent; its live task
//! tokens stop working, the state survives a restart, and release lifts it.

use std::time::{Duration, Instant};

use serde_json::Value;
use warrant_testkit::{Broker, Options};

use crate::support::{Receiver, audit, bin, client_credentials, identity, introspect};

const POLICY: &str = r#"
@id("ids") permit(principal, action == Action::"identity:issue", resource);
@id("tickets") permit(principal in Agent::"orch", action == Action::"token:self", resource == Audience::"https://tickets.example");
@id("calm-only") forbid(principal, action == Action::"token:self", resource == Audience::"https://tickets.example")
when { context.anomaly_score >= 30 };
"#;

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn score(b: &Broker, agent: &str) -> i64 {
    let v: Value = warrant_testkit::http(
        b.api,
        "GET",
        "/admin/v1/anomalies",
        &[("authorization", &format!("Bearer {}", admin(b)))],
        None,
    )
    .json();
    v.as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == agent)
        .and_then(|a| a["score"].as_i64())
        .unwrap_or(0)
}

fn admin(b: &Broker) -> String {
    b.cli(&["admin-token", "create", "--role", "auditor", "--ttl", "1h"])
        .ok()
        .trim()
        .to_owned()
}

fn config(port: u16, quarantine: bool) -> String {
    format!(
        "[anomaly]\nwarmup = 5\nalert_at = 30\n{}\n[[anomaly.webhook]]\nurl = \"http://127.0.0.1:{port}/anomaly\"\n",
        if quarantine {
            "quarantine_agent_at = 50"
        } else {
            ""
        }
    )
}

#[test]
fn a_probing_agent_is_scored_alerted_quarantined_and_released() {
    let hooks = Receiver::start(&[], 0);
    let port = hooks.port;
    let mut b = Broker::start_with(
        bin(),
        Options {
            config: Some(config(port, false)),
            ..Default::default()
        },
    );
    std::fs::write(b.data_dir.join("policies/p.cedar"), POLICY).unwrap();
    b.cli(&["policy", "reload"]).ok();
    for a in ["orch", "watcher"] {
        b.cli(&["agent", "create", a, "--owner", "o", "--env", "dev"])
            .ok();
    }
    let id = identity(&b, "orch");
    let ask = |aud: &str| client_credentials(&b, &id, "tickets:read", aud);

    // Normal work: the usual audience, again and again.
    let mut task = String::new();
    for _ in 0..8 {
        let r = ask("https://tickets.example");
        assert_eq!(r.status, 200, "{}", r.body);
        task = r.json()["access_token"].as_str().unwrap().to_owned();
    }
    assert_eq!(score(&b, "orch"), 0, "normal work raises nothing");

    // Probing: audiences it never used, all refused.
    for i in 0..12 {
        assert_eq!(ask(&format!("https://probe{i}.example")).status, 403);
    }
    let alert = until("the detector to alert", || {
        audit(&b, Some("anomaly")).into_iter().next()
    });
    assert_eq!(alert["agent"], "orch");
    assert_eq!(alert["actor"], "anomaly-detector");
    assert_eq!(alert["detail"]["action"], "alert");
    assert!(alert["detail"]["score"].as_i64().unwrap() >= 30);
    assert!(
        alert["reasons"].to_string().contains("refused")
            || alert["reasons"].to_string().contains("first use"),
        "{alert}"
    );
    let hook = until("the webhook", || hooks.bodies("/anomaly").first().cloned());
    assert_eq!(hook["type"], "anomaly");
    assert_eq!(hook["agent"], "orch");
    // Policy sees the score: the usual request is refused while it is high.
    let r = ask("https://tickets.example");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("calm-only"), "{}", r.body);
    assert_eq!(
        introspect(&b, &id, &task)["active"],
        true,
        "an alert alone revokes nothing"
    );

    // The state survives a restart.
    let before = score(&b, "orch");
    assert!(before >= 30);
    b.stop();
    b.restart(Options {
        config: Some(config(port, true)),
        ..Default::default()
    });
    let after = score(&b, "orch");
    assert!(after >= 25 && after <= before, "{before} then {after}");

    // With a quarantine threshold, more probing quarantines the agent.
    let id = identity(&b, "orch");
    let ask = |aud: &str| client_credentials(&b, &id, "tickets:read", aud);
    for i in 12..30 {
        let _ = ask(&format!("https://probe{i}.example"));
    }
    until("the quarantine", || {
        let a = b.cli(&["agent", "show", "orch", "--output", "json"]).json();
        (a["status"] == "quarantined").then_some(())
    });
    let q = audit(&b, Some("anomaly"));
    assert!(
        q.iter()
            .any(|r| r["detail"]["action"] == "quarantine_agent"),
        "{q:?}"
    );
    // Nothing issued, and the live task token no longer works.
    let watcher = identity(&b, "watcher");
    assert_eq!(introspect(&b, &watcher, &task)["active"], false);
    let r = ask("https://tickets.example");
    assert!(r.status >= 400, "{}", r.body);
    // A new instance cannot attest either.
    let jt = b
        .cli(&["agent", "join-token", "orch"])
        .ok()
        .trim()
        .to_owned();
    let r = crate::support::post_json(&b, "/v1/attest/join", &serde_json::json!({ "token": jt }));
    assert!(r.status >= 400, "{}", r.body);
    assert!(r.body.contains("quarantined"), "{}", r.body);

    // Release: active, its signals forgotten; the revoked task stays revoked.
    let released = b.cli(&["agent", "release", "orch"]);
    assert_eq!(released.code, 0, "{}", released.stderr);
    assert_eq!(score(&b, "orch"), 0);
    let id = identity(&b, "orch");
    let r = client_credentials(&b, &id, "tickets:read", "https://tickets.example");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(introspect(&b, &watcher, &task)["active"], false);
    // Releasing what is not quarantined says so.
    let again = b.cli(&["agent", "release", "orch"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("not quarantined"), "{}", again.stderr);
    // An administrator can quarantine by hand.
    b.cli(&["agent", "quarantine", "orch"]).ok();
    assert_eq!(
        client_credentials(&b, &id, "tickets:read", "https://tickets.example").status / 100,
        4
    );
    // Enable does not lift a quarantine (release does, and resets the
    // detector's signals).
    let enable = b.cli(&["agent", "enable", "orch"]);
    assert_ne!(enable.code, 0);
    assert!(enable.stderr.contains("release"), "{}", enable.stderr);
    let v = b.cli(&["audit", "verify", "--output", "json"]).json();
    assert_eq!(v["ok"], true, "{v}");
}
