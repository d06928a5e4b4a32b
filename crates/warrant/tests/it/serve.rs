//! `warrant serve`: start-up, refusals, listeners, shutdown.

use crate::support::{Options, audit, bin, broker, start_fails};
use std::os::unix::fs::PermissionsExt;
use warrant_testkit::spawn_serve;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_fresh_broker_is_private_loopback_and_ready() {
    let b = broker();
    assert!(b.api.ip().is_loopback() && b.edge.ip().is_loopback());
    assert_eq!(mode(&b.data_dir), 0o711, "others may only traverse");
    for f in ["kek", "warrant.db", "admin.sock", "run.json"] {
        assert_eq!(mode(&b.data_dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&b.data_dir.join("policies")), 0o700);
    assert!(b.data_dir.join("policies/example.cedar").exists());
    assert!(
        b.logs().contains("in production supply WARRANT_KEK"),
        "warns about the local KEK file"
    );

    assert_eq!(b.http("GET", "/healthz", &[], None).json()["status"], "ok");
    let ready = b.http("GET", "/readyz", &[], None);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["signing_key"], "ok");

    let meta = b
        .http("GET", "/.well-known/oauth-authorization-server", &[], None)
        .json();
    assert_eq!(meta["issuer"], b.issuer.as_str());
    assert_eq!(meta["issuer"], format!("http://{}", b.api));
    assert_eq!(
        meta["jwks_uri"],
        format!("http://{}/.well-known/jwks.json", b.api)
    );
    let oidc = b
        .http("GET", "/.well-known/openid-configuration", &[], None)
        .json();
    assert_eq!(oidc, meta);

    let edge = warrant_testkit::http(b.edge, "GET", "/openai/v1/models", &[], None);
    assert_eq!(edge.status, 404);
    assert!(
        edge.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`openai`")
    );

    let records = audit(&b, None);
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    // The refused edge request is recorded too.
    assert_eq!(
        events,
        vec!["key.generate", "broker.start", "proxy.request"]
    );
}

#[test]
fn metrics_are_prometheus_text() {
    let b = broker();
    b.cli(&["agent", "create", "m1", "--owner", "o", "--env", "dev"])
        .ok();
    assert_eq!(
        b.cli(&[
            "policy",
            "check",
            "--agent",
            "m1",
            "--action",
            "token:self",
            "--resource",
            "Audience::\"x\""
        ])
        .code,
        3
    );
    let m = b.http("GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    for line in [
        "warrant_build_info{version=\"0.1.0\"} 1",
        "warrant_agents{state=\"active\"} 1",
        "warrant_signing_keys{state=\"active\"} 1",
        "warrant_admin_tokens_valid 0",
        "warrant_policies_loaded 0",
        "warrant_admin_requests_total{surface=\"socket\",outcome=\"ok\"} 2",
        "warrant_policy_decisions_total{action=\"token:self\",effect=\"deny\"} 1",
        "warrant_audit_write_failures_total 0",
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "missing `{line}` in\n{}",
            m.body
        );
    }
    assert!(m.body.contains("# TYPE warrant_policy_decisions counter"));
    assert!(
        m.body
            .lines()
            .any(|l| l.starts_with("warrant_audit_records ") && l != "warrant_audit_records 0")
    );
    assert!(m.body.ends_with("# EOF\n"));
}

#[test]
fn refuses_an_unknown_config_key() {
    let (err, data_dir, _tmp) = start_fails(Options {
        config: Some("api_addr = \"127.0.0.1:0\"\ntrust_domian = \"x\"\n".into()),
        ..Default::default()
    });
    assert!(err.contains("unknown field `trust_domian`"), "{err}");
    assert!(err.contains("warrant.toml"), "names the file: {err}");
    assert!(!data_dir.exists(), "nothing was created");
}

#[test]
fn refuses_a_taken_port_and_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (err, data_dir, _tmp) = start_fails(Options {
        args: vec!["--api-addr".into(), port.clone()],
        ..Default::default()
    });
    assert!(
        err.contains(&format!(
            "cannot listen on {port} (api_addr): the address is already in use"
        )),
        "{err}"
    );
    assert!(err.contains("--api-addr"), "{err}");
    assert!(!data_dir.join("kek").exists() && !data_dir.join("warrant.db").exists());
}

#[test]
fn refuses_a_data_dir_open_to_others() {
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let dir = tmp.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let (err, _, _tmp) = start_fails(Options {
        data_dir: Some(dir.clone()),
        ..Default::default()
    });
    assert!(err.contains("has mode 0750"), "{err}");
    assert!(
        err.contains(&format!("chmod 711 {}", dir.display())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing was written into it"
    );
}

#[test]
fn refuses_bad_flag_values() {
    for (args, want) in [
        (
            vec!["--trust-domain", "Not Valid"],
            "trust_domain (from --trust-domain or WARRANT_TRUST_DOMAIN)",
        ),
        (vec!["--issuer", "ftp://x"], "issuer"),
        (
            vec!["--api-addr", "localhost:80"],
            "not an IP address and port",
        ),
        (vec!["--signing-alg", "HS256"], "ES256 or EdDSA"),
    ] {
        let (err, _, _tmp) = start_fails(Options {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (err, _, _tmp) = start_fails(Options {
        env: vec![("WARRANT_KEK".into(), "too-short".into())],
        ..Default::default()
    });
    assert!(
        err.contains("WARRANT_KEK") && err.contains("32 random bytes"),
        "{err}"
    );
    assert!(!err.contains("too-short"), "the KEK is never echoed: {err}");
}

#[test]
fn one_broker_per_data_dir() {
    let b = broker();
    let (err, _, _tmp) = start_fails(Options {
        data_dir: Some(b.data_dir.clone()),
        ..Default::default()
    });
    assert!(
        err.contains("another `warrant serve` is already using data directory"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", b.pid())), "{err}");
}

#[test]
fn stops_cleanly_on_sigterm_and_sigint_and_restarts_with_its_state() {
    let mut b = broker();
    b.cli(&["agent", "create", "keeper", "--owner", "o", "--env", "dev"])
        .ok();
    let jwks = b.http("GET", "/.well-known/jwks.json", &[], None).json();
    let status = b.stop();
    assert!(status.success(), "{status}\n{}", b.logs());
    assert!(!b.data_dir.join("admin.sock").exists());
    assert!(!b.data_dir.join("run.json").exists());
    assert!(b.logs().contains("stopped"));

    b.restart(Options::default());
    assert_eq!(
        b.http("GET", "/.well-known/jwks.json", &[], None).json(),
        jwks,
        "the same keys, decrypted with the same KEK"
    );
    assert!(b.cli(&["agent", "show", "keeper"]).ok().contains("keeper"));
    b.signal(warrant_testkit::Signal::INT);
    assert!(b.wait().success());
    b.restart(Options::default());
    let events: Vec<String> = audit(&b, Some("broker"))
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        vec![
            "broker.start",
            "broker.stop",
            "broker.start",
            "broker.stop",
            "broker.start"
        ]
    );
    assert!(b.cli(&["audit", "verify"]).ok().starts_with("ok:"));
}

#[test]
fn a_kek_from_the_environment_is_used_and_a_wrong_one_refused() {
    let kek = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    let mut b = crate::support::Broker::start_with(
        bin(),
        Options {
            env: vec![("WARRANT_KEK".into(), kek.into())],
            ..Default::default()
        },
    );
    assert!(
        !b.data_dir.join("kek").exists(),
        "no KEK file when WARRANT_KEK is given"
    );
    assert!(b.logs().contains("key-encryption key from WARRANT_KEK"));
    assert!(!b.logs().contains(kek));
    b.stop();
    let other = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let (mut child, _, log) = spawn_serve(
        bin(),
        tmp.path(),
        &Options {
            data_dir: Some(b.data_dir.clone()),
            env: vec![("WARRANT_KEK".into(), other.into())],
            ..Default::default()
        },
    );
    assert!(!child.wait().unwrap().success());
    let err = std::fs::read_to_string(log).unwrap();
    assert_eq!(
        err.matches("cannot be decrypted with this key-encryption key")
            .count(),
        1,
        "said once: {err}"
    );
    assert!(!err.contains(other) && !err.contains(kek));

    // A KEK file that is not a key: refused, saying how to make one.
    let dir = tmp.path().join("bad-kek");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("kek"), "not a key\n").unwrap();
    std::fs::set_permissions(
        dir.join("kek"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (err, _, _tmp) = start_fails(Options {
        data_dir: Some(dir),
        ..Default::default()
    });
    assert_eq!(err.matches("openssl rand -base64 32").count(), 1, "{err}");
}

#[test]
fn refuses_a_missing_config_file() {
    let (err, data_dir, _tmp) = start_fails(Options {
        args: vec!["--config".into(), "/nonexistent/warrant.toml".into()],
        ..Default::default()
    });
    assert_eq!(
        err.trim(),
        "error: cannot read config file `/nonexistent/warrant.toml`: No such file or directory (os error 2)"
    );
    assert!(!data_dir.exists(), "nothing was created");
}

#[test]
fn config_file_and_json_logs() {
    let b = crate::support::Broker::start_with(
        bin(),
        Options {
            config: Some("trust_domain = \"example.org\"\nissuer = \"https://broker.example.org/\"\nsigning_alg = \"EdDSA\"\n".into()),
            args: vec!["--log-format".into(), "json".into()],
            ..Default::default()
        },
    );
    let meta = b
        .http("GET", "/.well-known/oauth-authorization-server", &[], None)
        .json();
    assert_eq!(meta["issuer"], "https://broker.example.org");
    assert_eq!(
        meta["jwks_uri"],
        "https://broker.example.org/.well-known/jwks.json"
    );
    let jwks = b.http("GET", "/.well-known/jwks.json", &[], None).json();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let logs = b.logs();
    let ready = logs
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .find(|v| v["message"] == "warrant is ready")
        .expect("a ready line");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["issuer"], "https://broker.example.org");
}
