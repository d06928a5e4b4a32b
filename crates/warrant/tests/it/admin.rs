//! The inventory and the admin API, over the socket and over HTTP with tokens.

use crate::support::{audit, bin, broker};

#[test]
fn agent_lifecycle_through_the_cli() {
    let b = broker();
    let created = b
        .cli(&[
            "agent",
            "create",
            "support-triage",
            "--owner",
            "team-support@example.org",
            "--env",
            "prod",
            "--purpose",
            "triages tickets",
            "--trust",
            "medium",
            "--selector",
            "oidc:provider=k8s-prod",
            "--selector",
            "k8s:ns=agents",
            "--selector",
            "k8s:sa=triage",
            "--max-ttl",
            "15m",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(created["name"], "support-triage");
    assert_eq!(created["status"], "active");
    assert_eq!(created["trust"], "medium");
    assert_eq!(created["max_ttl"], "15m");
    assert_eq!(
        created["selectors"],
        serde_json::json!(["oidc:provider=k8s-prod", "k8s:ns=agents", "k8s:sa=triage"])
    );
    assert!(created["id"].as_str().unwrap().starts_with("agt_"));

    b.cli(&[
        "agent", "create", "billing", "--owner", "finance", "--env", "staging",
    ])
    .ok();
    let list = b.cli(&["agent", "list", "--output", "json"]).json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["billing", "support-triage"]);
    let billing = &list[0];
    assert_eq!(billing["trust"], "low", "the default trust is low");
    assert_eq!(billing["max_ttl"], "1h");

    let table = b.cli(&["agent", "list"]).ok().to_owned();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("support-triage  active"), "{table}");

    assert!(
        b.cli(&["agent", "disable", "billing"])
            .ok()
            .contains("disabled")
    );
    assert_eq!(
        b.cli(&["agent", "show", "billing", "--output", "json"])
            .json()["status"],
        "disabled"
    );
    b.cli(&["agent", "enable", "billing"]).ok();
    assert_eq!(
        b.cli(&["agent", "show", "billing", "--output", "json"])
            .json()["status"],
        "active"
    );
    b.cli(&["agent", "delete", "billing"]).ok();
    let show = b.cli(&["agent", "show", "billing"]);
    assert_eq!(show.code, 1);
    assert!(
        show.stderr.contains("agent `billing` does not exist"),
        "{}",
        show.stderr
    );

    let events: Vec<(String, String)> = audit(&b, Some("admin.agent"))
        .iter()
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_owned(),
                r["agent"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let expect = [
        ("create", "support-triage"),
        ("create", "billing"),
        ("disable", "billing"),
        ("enable", "billing"),
        ("delete", "billing"),
    ];
    assert_eq!(
        events,
        expect
            .iter()
            .map(|(e, a)| (format!("admin.agent.{e}"), (*a).to_owned()))
            .collect::<Vec<_>>()
    );
    let first = &audit(&b, Some("admin.agent.create"))[0];
    assert_eq!(
        first["actor"],
        format!("local:uid={}", rustix::process::geteuid().as_raw())
    );
    assert_eq!(first["protocol"], "admin-socket");
    assert_eq!(first["detail"]["owner"], "team-support@example.org");
}

#[test]
fn bad_input_is_refused_clearly_changes_nothing_and_is_audited() {
    let b = broker();
    b.cli(&["agent", "create", "triage", "--owner", "o", "--env", "prod"])
        .ok();
    let before = b.cli(&["agent", "list", "--output", "json"]).json();

    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "agent",
                "create",
                "Triage_Bot",
                "--owner",
                "o",
                "--env",
                "prod",
            ],
            "agent name `Triage_Bot` is not allowed; use lower-case letters a-z, digits and single hyphens",
        ),
        (
            &[
                "agent",
                "create",
                "x",
                "--owner",
                "o",
                "--env",
                "prod",
                "--selector",
                "unix:uid=alice",
            ],
            "uid and gid are decimal numbers",
        ),
        (
            &[
                "agent",
                "create",
                "x",
                "--owner",
                "o",
                "--env",
                "prod",
                "--selector",
                "docker:image=x",
            ],
            "unknown kind `docker`",
        ),
        (
            &[
                "agent",
                "create",
                "x",
                "--owner",
                "o",
                "--env",
                "prod",
                "--selector",
                "unix:uid=1",
                "--selector",
                "unix:uid=2",
            ],
            "given more than once",
        ),
        (
            &[
                "agent",
                "create",
                "x",
                "--owner",
                "o",
                "--env",
                "prod",
                "--max-ttl",
                "3h",
            ],
            "max-ttl `3h` is out of range",
        ),
        (
            &[
                "agent", "create", "x", "--owner", "o", "--env", "prod", "--trust", "total",
            ],
            "use low, medium or high",
        ),
        (
            &[
                "agent", "create", "triage", "--owner", "someone", "--env", "prod",
            ],
            "agent `triage` already exists",
        ),
        (
            &["agent", "disable", "ghost"],
            "agent `ghost` does not exist",
        ),
        (
            &["agent", "delete", "../etc"],
            "agent name `../etc` is not allowed",
        ),
    ];
    for (args, want) in cases {
        let r = b.cli(args);
        assert_eq!(r.code, 1, "{args:?} should fail: {}", r.stdout);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    // Several problems at once are all reported.
    let r = b.cli(&["agent", "create", "Bad", "--owner", "", "--env", "PROD"]);
    for want in [
        "agent name `Bad`",
        "owner must not be empty",
        "environment `PROD`",
    ] {
        assert!(r.stderr.contains(want), "{}", r.stderr);
    }

    assert_eq!(
        b.cli(&["agent", "list", "--output", "json"]).json(),
        before,
        "nothing changed"
    );
    let errors: Vec<serde_json::Value> = audit(&b, Some("admin.agent"))
        .into_iter()
        .filter(|r| r["decision"] == "error")
        .collect();
    assert_eq!(
        errors.len(),
        cases.len() + 1,
        "every refusal is audited: {errors:#?}"
    );
    assert!(
        errors
            .iter()
            .all(|r| !r["reasons"].as_array().unwrap().is_empty())
    );
}

#[test]
fn http_admin_needs_a_token_of_the_right_role() {
    let b = broker();
    let url = format!("http://{}", b.api);
    let auditor = b
        .cli(&["admin-token", "create", "--role", "auditor", "--name", "ci"])
        .ok()
        .trim()
        .to_owned();
    let admin = b
        .cli(&["admin-token", "create", "--role", "admin", "--ttl", "10m"])
        .ok()
        .trim()
        .to_owned();
    assert!(auditor.starts_with("wadm_") && auditor.len() == 69);

    // No token: 401 with a Bearer challenge, audited, nothing changed.
    let r = b.http(
        "POST",
        "/admin/v1/agents",
        &[("content-type", "application/json")],
        Some(r#"{"name":"x","owner":"o","env":"dev"}"#),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"warrant-admin\"")
    );
    assert_eq!(r.json()["error"], "unauthorized");
    let cli = b.cli(&["--url", &url, "agent", "list"]);
    assert_eq!(cli.code, 1);
    assert!(
        cli.stderr.contains("set WARRANT_ADMIN_TOKEN"),
        "{}",
        cli.stderr
    );

    // A forged token or a non-admin bearer: 401.
    for bad in [
        "wadm_0000000000000000000000000000000000000000000000000000000000000000",
        "eyJhbGciOiJub25lIn0.e30.",
    ] {
        let r = b.http(
            "GET",
            "/admin/v1/agents",
            &[("authorization", &format!("Bearer {bad}"))],
            None,
        );
        assert_eq!(r.status, 401, "{bad}");
    }

    // The auditor reads, but may not write.
    let env = [("WARRANT_ADMIN_TOKEN", auditor.as_str())];
    assert!(
        b.cli_env(&["--url", &url, "agent", "list"], &env)
            .ok()
            .contains("no agents")
    );
    assert!(
        b.cli_env(&["--url", &url, "audit", "verify"], &env)
            .ok()
            .starts_with("ok:")
    );
    let w = b.cli_env(
        &[
            "--url", &url, "agent", "create", "x", "--owner", "o", "--env", "dev",
        ],
        &env,
    );
    assert_eq!(w.code, 1);
    assert!(
        w.stderr.contains("role auditor may not change anything"),
        "{}",
        w.stderr
    );
    let w = b.cli_env(
        &["--url", &url, "admin-token", "create", "--role", "admin"],
        &env,
    );
    assert!(
        w.stderr.contains("role auditor may not change anything"),
        "an auditor can't mint itself an admin token"
    );

    // The admin writes.
    let env = [("WARRANT_ADMIN_TOKEN", admin.as_str())];
    b.cli_env(
        &[
            "--url", &url, "agent", "create", "x", "--owner", "o", "--env", "dev",
        ],
        &env,
    )
    .ok();
    let created = &audit(&b, Some("admin.agent.create"))[0];
    assert_eq!(created["protocol"], "admin-http");
    assert!(
        created["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin-token:adt_")
    );
    assert!(
        created["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // Revoked tokens stop working at once.
    let tokens = b.cli(&["admin-token", "list", "--output", "json"]).json();
    let auditor_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "auditor")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        tokens.to_string().find("wadm_").is_none(),
        "listing never shows token values"
    );
    b.cli(&["admin-token", "revoke", &auditor_id]).ok();
    let r = b.http(
        "GET",
        "/admin/v1/agents",
        &[("authorization", &format!("Bearer {auditor}"))],
        None,
    );
    assert_eq!(r.status, 401);
    assert!(r.json()["message"].as_str().unwrap().contains("revoked"));

    let denials = audit(&b, Some("admin.auth"));
    assert_eq!(denials.len(), 7, "{denials:#?}");
    assert!(denials.iter().all(|d| d["decision"] == "deny"));
    assert!(denials.iter().any(
        |d| d["reasons"][0] == "role auditor may not change anything"
            && d["actor"] == format!("admin-token:{auditor_id}")
    ));
    // Each refusal is counted once, as a denial.
    let metrics = b.http("GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains("warrant_admin_requests_total{surface=\"http\",outcome=\"denied\"} 7"),
        "{metrics}"
    );

    // Secrets never reach the audit trail or the log.
    let all = b
        .cli(&["audit", "list", "--output", "json", "--limit", "10000"])
        .ok()
        .to_owned();
    for secret in [&auditor, &admin] {
        assert!(!all.contains(secret.as_str()));
        assert!(!b.logs().contains(secret.as_str()));
        assert!(!all.contains(&secret[5..20]));
    }
}

#[test]
fn malformed_admin_requests_get_json_errors_and_are_audited() {
    let b = broker();
    let admin = b
        .cli(&["admin-token", "create", "--role", "admin"])
        .ok()
        .trim()
        .to_owned();
    let auth = format!("Bearer {admin}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = b.http("POST", "/admin/v1/agents", &h, Some("{not json"));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("request body is not valid")
    );
    let r = b.http(
        "POST",
        "/admin/v1/agents",
        &h,
        Some(r#"{"name":"x","owner":"o","env":"dev","colour":"red"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{}",
        r.body
    );
    let r = b.http("DELETE", "/admin/v1/admin-tokens/not-an-id", &h, None);
    assert_eq!(r.status, 400);
    let r = b.http("GET", "/admin/v1/nope", &h, None);
    assert_eq!(r.status, 404);
    let r = b.http("GET", "/admin/v1/audit?limit=0", &h, None);
    assert_eq!(r.status, 400);
    let r = b.http("GET", "/admin/v1/audit?since=yesterday", &h, None);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("neither an RFC 3339 time")
    );
    let errors: Vec<_> = audit(&b, None)
        .into_iter()
        .filter(|r| r["decision"] == "error")
        .collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        b.http("GET", "/admin/v1/agents", &h, None)
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_admin_socket_is_owner_only() {
    let b = broker();
    let sock = b.data_dir.join("admin.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let other = tempfile::tempdir_in("/tmp").unwrap();
    let r = b.cli_env(
        &["agent", "list"],
        &[("WARRANT_DATA_DIR", other.path().to_str().unwrap())],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("start it with `warrant serve`"),
        "{}",
        r.stderr
    );
}

/// Runs the CLI as `nobody` (needs root to switch users; CI runs as root).
fn as_nobody(b: &crate::support::Broker, args: &[&str]) -> Option<crate::support::Run> {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipping: switching to another user needs root");
        return None;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args(args)
        .env("WARRANT_DATA_DIR", &b.data_dir)
        .output()
        .unwrap();
    Some(crate::support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    })
}

#[test]
fn other_users_cannot_use_the_admin_socket() {
    use std::os::unix::fs::PermissionsExt;
    let b = broker();
    // The socket (0600) keeps other users out; the data directory (0711) lets
    // them reach only sockets they know the name of.
    let Some(r) = as_nobody(
        &b,
        &["agent", "create", "x", "--owner", "o", "--env", "dev"],
    ) else {
        return;
    };
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);

    // Even if someone loosens the permissions, the broker checks the peer's uid.
    std::fs::set_permissions(&b.data_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(
        b.data_dir.join("admin.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let r = as_nobody(
        &b,
        &["agent", "create", "x", "--owner", "o", "--env", "dev"],
    )
    .unwrap();
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("only the user running warrant (or root) may use the admin socket"),
        "{}",
        r.stderr
    );
    assert!(
        b.cli(&["agent", "list", "--output", "json"])
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let denial = &audit(&b, Some("admin.auth"))[0];
    assert!(
        denial["source"].as_str().unwrap().starts_with("uid=65534 "),
        "{denial}"
    );
    assert_eq!(denial["protocol"], "admin-socket");
}
