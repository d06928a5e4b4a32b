//! Policies: offline validation, reload (CLI and SIGHUP), checks.

use crate::support::{audit, bin, broker};
use std::fs;

const GOOD: &str = r#"@id("triage-self")
permit(
  principal in Agent::"triage",
  action == Action::"token:self",
  resource == Audience::"https://api.openai.com"
);
"#;

fn validate(dir: &std::path::Path) -> crate::support::Run {
    let out = std::process::Command::new(bin())
        .args(["policy", "validate"])
        .arg(dir)
        .env_remove("WARRANT_DATA_DIR")
        .output()
        .unwrap();
    crate::support::Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn validate_works_offline_and_locates_problems() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("a.cedar"), GOOD).unwrap();
    let r = validate(d.path());
    assert!(r.ok().ends_with("is valid (1 policy)\n"), "{}", r.stdout);

    fs::write(
        d.path().join("b.cedar"),
        "// comment\npermit(principal, action, resource)\nwhen { principal.trust == };\n",
    )
    .unwrap();
    let r = validate(d.path());
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("b.cedar:3:"),
        "syntax error with file and line: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("do not validate (1 problem)"),
        "{}",
        r.stderr
    );

    fs::write(d.path().join("b.cedar"), "permit(principal, action == Action::\"token:self\", resource)\nwhen { context.depht > 1 };\n").unwrap();
    let r = validate(d.path());
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("b.cedar:2:8:"), "{}", r.stderr);
    assert!(r.stderr.contains("did you mean `depth`?"), "{}", r.stderr);

    let json = std::process::Command::new(bin())
        .args(["policy", "validate", "--output", "json"])
        .arg(d.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("b.cedar:2:8:")
    );

    let missing = validate(&d.path().join("nope"));
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("cannot read the policy directory"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_fresh_broker_has_an_example_that_permits_nothing() {
    let b = broker();
    let show = b.cli(&["policy", "show", "--output", "json"]).json();
    assert_eq!(show["files"], serde_json::json!(["example.cedar"]));
    assert_eq!(show["policies"], serde_json::json!([]));
    let example = fs::read_to_string(b.data_dir.join("policies/example.cedar")).unwrap();
    assert!(example.contains("permits nothing"));
    // Offline validation defaults to the configured policy directory.
    assert!(
        b.cli(&["policy", "validate"])
            .ok()
            .contains("/policies is valid (0 policies)")
    );
    let schema = b.cli(&["policy", "schema"]).ok().to_owned();
    assert!(schema.contains("action \"token:exchange\" appliesTo"));
    assert!(schema.contains("entity Instance in [Agent]"));
}

#[test]
fn reload_swaps_a_valid_set_and_keeps_the_old_one_otherwise() {
    let b = broker();
    b.cli(&["agent", "create", "triage", "--owner", "o", "--env", "prod"])
        .ok();
    let dir = b.data_dir.join("policies");
    let check = [
        "policy",
        "check",
        "--agent",
        "triage",
        "--action",
        "token:self",
        "--resource",
        "Audience::\"https://api.openai.com\"",
    ];

    let r = b.cli(&check);
    assert_eq!(r.code, 3, "denied by default: {}", r.stdout);
    assert!(r.stdout.starts_with("deny\n  default deny"), "{}", r.stdout);

    fs::write(dir.join("triage.cedar"), GOOD).unwrap();
    let r = b.cli(&["policy", "reload", "--output", "json"]).json();
    assert_eq!(r["policies"], serde_json::json!(["triage-self"]));
    let r = b.cli(&check);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "allow\n  triage-self\n");

    // A syntax error: refused with file and line, old set stays.
    fs::write(
        dir.join("broken.cedar"),
        "permit(principal, action, resource\n",
    )
    .unwrap();
    let r = b.cli(&["policy", "reload"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("the previous set stays in force"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("broken.cedar:"), "{}", r.stderr);
    assert_eq!(b.cli(&check).code, 0, "the old set is still in force");

    // A schema violation: refused too.
    fs::write(dir.join("broken.cedar"), "permit(principal, action == Action::\"token:self\", resource) when { principal.trst == \"high\" };\n").unwrap();
    let r = b.cli(&["policy", "reload"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("broken.cedar:1:"), "{}", r.stderr);
    assert!(r.stderr.contains("trst"), "{}", r.stderr);
    assert_eq!(b.cli(&check).code, 0);

    // SIGHUP reloads: a forbid now wins.
    fs::remove_file(dir.join("broken.cedar")).unwrap();
    fs::write(dir.join("deny.cedar"), "@id(\"no-prod-self\") forbid(principal, action == Action::\"token:self\", resource) when { principal.env == \"prod\" };\n").unwrap();
    b.signal(warrant_testkit::Signal::HUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while b.cli(&["policy", "show", "--output", "json"]).json()["policies"]
        .as_array()
        .unwrap()
        .len()
        != 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            b.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = b.cli(&check);
    assert_eq!(r.code, 3);
    assert_eq!(r.stdout, "deny\n  no-prod-self\n");

    let reloads: Vec<(String, String)> = audit(&b, Some("policy.reload"))
        .iter()
        .map(|r| {
            (
                r["decision"].as_str().unwrap().into(),
                r["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    let me = format!("local:uid={}", rustix::process::geteuid().as_raw());
    assert_eq!(
        reloads,
        vec![
            ("allow".into(), me.clone()),
            ("error".into(), me.clone()),
            ("error".into(), me),
            ("allow".into(), "signal:SIGHUP".into())
        ]
    );
    let checks = audit(&b, Some("policy.check"));
    assert_eq!(checks.len(), 5, "every decision is audited");
    let last = checks.last().unwrap();
    assert_eq!(last["decision"], "deny");
    assert_eq!(last["reasons"], serde_json::json!(["no-prod-self"]));
    assert_eq!(last["action"], "token:self");
    assert_eq!(last["resource"], "Audience::\"https://api.openai.com\"");
}

#[test]
fn check_uses_context_and_refuses_bad_requests() {
    let b = broker();
    b.cli(&[
        "agent", "create", "support", "--owner", "o", "--env", "prod", "--trust", "high",
    ])
    .ok();
    fs::write(
        b.data_dir.join("policies/s.cedar"),
        r#"@id("support-hours") permit(principal in Agent::"support", action == Action::"token:exchange", resource == Audience::"tickets")
when { context has user && context.user in Group::"corp/support" && context.hour >= 8 && context.hour < 18 && principal.trust == "high" };
@id("approve-payments") @approval("required") permit(principal, action == Action::"token:exchange", resource == Audience::"payments");
"#,
    )
    .unwrap();
    b.cli(&["policy", "reload"]).ok();
    let base = [
        "policy",
        "check",
        "--agent",
        "support",
        "--action",
        "token:exchange",
    ];
    let run = |extra: &[&str]| b.cli(&[&base[..], extra].concat());
    assert_eq!(
        run(&[
            "--resource",
            "Audience::\"tickets\"",
            "--user",
            "corp/alice",
            "--group",
            "corp/support",
            "--time",
            "2026-11-23T10:00:00Z"
        ])
        .code,
        0
    );
    assert_eq!(
        run(&[
            "--resource",
            "Audience::\"tickets\"",
            "--user",
            "corp/alice",
            "--group",
            "corp/support",
            "--time",
            "2026-11-23T22:00:00Z"
        ])
        .code,
        3
    );
    assert_eq!(
        run(&[
            "--resource",
            "Audience::\"tickets\"",
            "--user",
            "corp/bob",
            "--group",
            "corp/sales",
            "--time",
            "2026-11-23T10:00:00Z"
        ])
        .code,
        3
    );
    let pending = run(&["--resource", "Audience::\"payments\"", "--output", "json"]);
    assert_eq!(pending.code, 3);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&pending.stdout).unwrap()["effect"],
        "approval_required"
    );

    for (extra, want) in [
        (
            vec!["--resource", "Audience::tickets"],
            "not of the form Type::\"id\"",
        ),
        (
            vec!["--resource", "Route::\"x\""],
            "applies to Audience resources",
        ),
        (
            vec!["--resource", "Audience::\"x\"", "--source-ip", "not-an-ip"],
            "not an IP address",
        ),
    ] {
        let r = run(&extra);
        assert!(
            r.stderr.contains(want) || r.stdout.contains(want),
            "{extra:?}: {}{}",
            r.stdout,
            r.stderr
        );
    }
    let r = b.cli(&[
        "policy",
        "check",
        "--agent",
        "ghost",
        "--action",
        "token:self",
        "--resource",
        "Audience::\"x\"",
    ]);
    assert!(
        r.stderr.contains("agent `ghost` does not exist"),
        "{}",
        r.stderr
    );
    let r = b.cli(&[
        "policy",
        "check",
        "--agent",
        "support",
        "--action",
        "token:steal",
        "--resource",
        "Audience::\"x\"",
    ]);
    assert!(
        r.stderr.contains("action `token:steal` is unknown"),
        "{}",
        r.stderr
    );
}

/// The Cedar examples in docs/policy.md validate, and its `policy check`
/// example decides as the page says.
#[test]
fn policy_doc_examples_hold() {
    let page = include_str!("../../../../docs/policy.md");
    let cedar: Vec<&str> = page
        .split("```cedar\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(!cedar.is_empty());
    let d = tempfile::tempdir().unwrap();
    for (i, block) in cedar.iter().enumerate() {
        fs::write(d.path().join(format!("doc{i}.cedar")), block).unwrap();
    }
    assert!(validate(d.path()).ok().contains("is valid (5 policies)"));

    let b = crate::support::Broker::start_with(
        bin(),
        crate::support::Options {
            args: vec!["--policy-dir".into(), d.path().display().to_string()],
            ..Default::default()
        },
    );
    b.cli(&[
        "agent",
        "create",
        "support-triage",
        "--owner",
        "me",
        "--env",
        "prod",
    ])
    .ok();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "check",
            "--agent",
            "support-triage",
            "--action",
            "token:exchange",
            "--resource",
            "Audience::\"https://tickets.example.org\"",
            "--user",
            "corp/alice",
            "--group",
            "corp/support",
            "--scope",
            "tickets:read",
        ];
        args.extend(extra);
        b.cli(&args)
    };
    let monday = "2026-11-23T10:00:00Z";
    let allowed = check(&["--source-ip", "10.1.2.3", "--time", monday]);
    assert_eq!(allowed.ok(), "allow\n  support-business-hours\n");
    let denied = check(&["--time", monday]);
    assert_eq!(denied.code, 3);
    assert_eq!(denied.stdout, "deny\n  cluster-only\n");
    // Saturday: outside business hours.
    let weekend = check(&["--source-ip", "10.1.2.3", "--time", "2026-11-28T10:00:00Z"]);
    assert_eq!(weekend.code, 3, "{}", weekend.stdout);
    assert!(page.contains("--source-ip 10.1.2.3 --time 2026-11-23T10:00:00Z"));
}

/// docs/policies/delegation.cedar decides as its comments say.
#[test]
fn the_delegation_policy_examples_decide_as_documented() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policies");
    assert!(validate(&dir).ok().contains("is valid (6 policies)"));
    let b = crate::support::Broker::start_with(
        bin(),
        crate::support::Options {
            args: vec!["--policy-dir".into(), dir.display().to_string()],
            ..Default::default()
        },
    );
    for (name, env, trust) in [
        ("support-triage", "prod", "medium"),
        ("ticket-reader", "prod", "medium"),
        ("billing", "prod", "medium"),
    ] {
        b.cli(&[
            "agent", "create", name, "--owner", "o", "--env", env, "--trust", trust,
        ])
        .ok();
    }
    let check = |args: &[&str]| {
        let mut a = vec!["policy", "check"];
        a.extend_from_slice(args);
        let r = b.cli(&a);
        (
            r.code,
            r.stdout.lines().nth(1).unwrap_or("").trim().to_owned(),
        )
    };
    let tickets = "Audience::\"https://tickets.example.org\"";
    let monday_10 = "2026-11-23T10:00:00Z";
    let base = |time: &'static str, group: &'static str, scope: &'static str| {
        vec![
            "--agent",
            "support-triage",
            "--action",
            "token:exchange",
            "--resource",
            tickets,
            "--user",
            "corp/alice",
            "--group",
            group,
            "--scope",
            scope,
            "--depth",
            "1",
            "--chain",
            "support-triage",
            "--time",
            time,
        ]
    };
    assert_eq!(
        check(&base(monday_10, "corp/support", "tickets:read")),
        (0, "support-reads-tickets-in-business-hours".into())
    );
    assert_eq!(
        check(&base(
            "2026-11-28T10:00:00Z",
            "corp/support",
            "tickets:read"
        ))
        .0,
        3,
        "Saturday"
    );
    assert_eq!(
        check(&base(
            "2026-11-23T19:00:00Z",
            "corp/support",
            "tickets:read"
        ))
        .0,
        3,
        "after hours"
    );
    assert_eq!(
        check(&base(monday_10, "corp/sales", "tickets:read")).0,
        3,
        "not in support"
    );
    assert_eq!(
        check(&base(monday_10, "corp/support", "tickets:write")).0,
        3,
        "reads only"
    );

    let sub = |scope: &'static str| {
        vec![
            "--agent",
            "ticket-reader",
            "--action",
            "token:exchange",
            "--resource",
            tickets,
            "--user",
            "corp/alice",
            "--group",
            "corp/support",
            "--scope",
            scope,
            "--depth",
            "2",
            "--chain",
            "support-triage",
            "--chain",
            "ticket-reader",
            "--time",
            monday_10,
        ]
    };
    assert_eq!(
        check(&sub("tickets:read")),
        (0, "support-sub-agents".into())
    );
    assert_eq!(
        check(&sub("tickets:write")),
        (3, "no-delegated-writes".into())
    );

    let pay = |agent: &'static str| {
        vec![
            "--agent",
            agent,
            "--action",
            "token:self",
            "--resource",
            "Audience::\"https://payments.example.org\"",
            "--scope",
            "payments:refund",
        ]
    };
    assert_eq!(
        check(&pay("billing")),
        (3, "payments-need-high-trust-in-prod".into())
    );
    b.cli(&["agent", "delete", "billing"]).ok();
    b.cli(&[
        "agent", "create", "billing", "--owner", "o", "--env", "prod", "--trust", "high",
    ])
    .ok();
    assert_eq!(check(&pay("billing")), (0, "billing-payments".into()));
}
