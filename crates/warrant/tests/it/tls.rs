//! TLS on the API and edge listeners: a client we did not write trusts it,
//! the CLI speaks it, a renewed certificate is served without a restart,
//! and plain HTTP beyond loopback is refused unless said to be intended.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use warrant_testkit::{Broker, Options};

use crate::support::*;

fn certs(dir: &Path, suffix: &str) {
    let out = Command::new(python())
        .arg(repo().join("tests/interop/tls_certs.py"))
        .args([dir.to_str().unwrap(), "warrant.test", suffix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GETs `url` with Python's own TLS stack, trusting only `ca`; returns the
/// status, the body, and the certificate's common name.
fn python_get(url: &str, ca: &Path) -> (u16, String, String) {
    let script = r#"
import http.client, json, ssl, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
c.request("GET", u.path)
r = c.getresponse()
cert = c.sock.getpeercert()
cn = [v for rdn in cert["subject"] for (k, v) in rdn if k == "commonName"][0]
print(json.dumps({"status": r.status, "body": r.read().decode(), "cn": cn}))
"#;
    let out = Command::new(python())
        .args(["-c", script, url, ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["status"].as_u64().unwrap() as u16,
        v["body"].as_str().unwrap().to_owned(),
        v["cn"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn the_listeners_serve_tls_and_follow_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), "");
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    let b = Broker::start_with(
        bin(),
        Options {
            args: vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ],
            ..Default::default()
        },
    );
    let api = format!("https://127.0.0.1:{}", b.api.port());
    assert!(
        b.issuer.starts_with("https://"),
        "the issuer defaults to the scheme in use: {}",
        b.issuer
    );
    let (status, body, cn) = python_get(&format!("{api}/.well-known/openid-configuration"), &ca);
    assert_eq!(status, 200);
    assert_eq!(cn, "warrant.test");
    let disc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(disc["issuer"], b.issuer);
    // The edge speaks TLS too (no route is configured: a refusal, over TLS).
    let (status, body, cn) = python_get(
        &format!("https://127.0.0.1:{}/nowhere/x", b.edge.port()),
        &ca,
    );
    assert_eq!((status, cn.as_str()), (404, "warrant.test"), "{body}");

    // The console's session cookie over TLS is `Secure` and `__Secure-`.
    let admin = b
        .cli(&["admin-token", "create", "--role", "auditor"])
        .ok()
        .trim()
        .to_owned();
    let script = r#"
import http.client, json, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10)
origin = "https://127.0.0.1:" + sys.argv[1]
c.request("POST", "/console/session", body=json.dumps({"token": sys.argv[3]}),
          headers={"content-type": "application/json", "origin": origin})
r = c.getresponse()
r.read()
cookie = r.getheader("set-cookie")
c.request("GET", "/console/api/v1/agents", headers={"cookie": cookie.split(";")[0]})
r2 = c.getresponse()
print(json.dumps({"status": r.status, "cookie": cookie, "agents": r2.status}))
"#;
    let out = Command::new(python())
        .args([
            "-c",
            script,
            &b.api.port().to_string(),
            ca.to_str().unwrap(),
            &admin,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    let cookie = v["cookie"].as_str().unwrap();
    assert!(
        cookie.starts_with("__Secure-warrant_console=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(v["agents"], 200, "{v}");

    // Plain HTTP at the TLS port gets no answer.
    let plain = std::panic::catch_unwind(|| b.http("GET", "/healthz", &[], None));
    assert!(plain.is_err() || plain.unwrap().status != 200);

    // The CLI over https, trusting the test CA.
    let token = b
        .cli(&["admin-token", "create", "--role", "auditor"])
        .ok()
        .trim()
        .to_owned();
    let env = [("WARRANT_ADMIN_TOKEN", token.as_str())];
    let ca_s = ca.display().to_string();
    let s = b.cli_env(
        &[
            "--url",
            &api,
            "--ca-file",
            &ca_s,
            "status",
            "--output",
            "json",
        ],
        &env,
    );
    assert_eq!(s.json()["issuer"], b.issuer);
    let untrusted = b.cli_env(&["--url", &api, "status"], &env);
    assert_ne!(untrusted.code, 0);
    assert!(
        untrusted.stderr.contains("--ca-file"),
        "{}",
        untrusted.stderr
    );

    // Renewed on disk (written aside, then moved in): served without a restart.
    certs(dir.path(), "2");
    std::fs::rename(dir.path().join("key2.pem"), &key).unwrap();
    std::fs::rename(dir.path().join("cert2.pem"), &cert).unwrap();
    let start = Instant::now();
    loop {
        let (_, _, cn) = python_get(&format!("{api}/healthz"), &ca);
        if cn == "warrant.test2" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the renewed certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken renewal keeps the good one in force.
    std::fs::write(&cert, "not a certificate").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (status, _, cn) = python_get(&format!("{api}/healthz"), &ca);
    assert_eq!((status, cn.as_str()), (200, "warrant.test2"));
    assert!(b.logs().contains("still serving the previous one"));
}

#[test]
fn tls_and_plain_http_beyond_loopback_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), "");
    let key = dir.path().join("key.pem");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (log, _, _) = start_fails(Options {
        args: vec![
            "--tls-cert".into(),
            dir.path().join("cert.pem").display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Default::default()
    });
    assert!(log.contains("readable or writable by others"), "{log}");

    let (log, _, _) = start_fails(Options {
        args: vec!["--api-addr".into(), "0.0.0.0:0".into()],
        ..Default::default()
    });
    assert!(log.contains("must serve TLS"), "{log}");
    assert!(log.contains("insecure_http"), "{log}");

    let b = Broker::start_with(
        bin(),
        Options {
            args: vec![
                "--api-addr".into(),
                "0.0.0.0:0".into(),
                "--insecure-http".into(),
                "--issuer".into(),
                "http://warrant.test".into(),
            ],
            ..Default::default()
        },
    );
    assert!(b.logs().contains("serving plain HTTP beyond loopback"));
}
