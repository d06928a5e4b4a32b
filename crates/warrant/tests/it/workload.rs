//! The SPIFFE Workload API (`<data-dir>/workload.sock`) with the SPIFFE
//! Python clients we did not write (`spiffe`, `spiffe-tls`, `grpcio`): both
//! SVID kinds, both bundles, validation, rotation, and an mTLS handshake
//! between two workloads with the X.509-SVIDs warrant's CA issued.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{audit, broker, python, repo};

fn script() -> std::path::PathBuf {
    repo().join("tests/interop/workload_api.py")
}

/// Runs the script as `uid` (root when 0), returning (success, stdout, stderr).
fn run(uid: u32, args: &[&str]) -> (bool, String, String) {
    let mut cmd = if uid == 0 {
        Command::new(python())
    } else {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(python());
        c
    };
    let out = cmd.arg(script()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn spiffe_clients_fetch_validate_rotate_and_handshake_with_warrant_svids() {
    let b = broker();
    std::fs::write(
        b.data_dir.join("policies/id.cedar"),
        "permit(principal, action == Action::\"identity:issue\", resource);",
    )
    .unwrap();
    b.cli(&["policy", "reload"]).ok();
    let py = std::fs::canonicalize(python()).unwrap();
    let path = format!("unix:path={}", py.display());
    for (name, uid) in [("svc-a", "0"), ("svc-b", "65534")] {
        b.cli(&[
            "agent",
            "create",
            name,
            "--owner",
            "o",
            "--env",
            "dev",
            "--selector",
            &format!("unix:uid={uid}"),
            "--selector",
            &path,
            "--max-ttl",
            "10s",
        ])
        .ok();
    }
    let sock = b.data_dir.join("workload.sock");
    let s = sock.to_str().unwrap();

    // The security header is enforced; one audience per JWT-SVID.
    let (ok, out, err) = run(0, &[s, "raw"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["no_header"][0], "INVALID_ARGUMENT", "{v}");
    assert!(
        v["no_header"][1]
            .as_str()
            .unwrap()
            .contains("security header")
    );
    assert_eq!(v["with_header"], "OK", "{v}");
    assert_eq!(v["two_audiences"][0], "INVALID_ARGUMENT", "{v}");

    // Both SVID kinds, both bundles, validation, and rotation.
    let (ok, out, err) = run(0, &[s, "fetch", "https://api.example"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["x509_id"].as_str().unwrap();
    assert!(id.starts_with("spiffe://warrant.local/agent/svc-a/"), "{v}");
    assert_eq!(v["x509_sans"], serde_json::json!([id]));
    assert_eq!(v["x509_is_ca"], false);
    assert!(
        v["x509_lifetime"].as_f64().unwrap() <= 70.0,
        "short-lived: {v}"
    );
    assert_eq!(v["x509_signed_by_bundle"], true);
    assert_eq!(v["jwt_id"], id);
    assert_eq!(
        v["jwt_audience"],
        serde_json::json!(["https://api.example"])
    );
    assert_eq!(v["validated_id"], id);
    assert_eq!(v["wrong_audience"], "ValidateJwtSvidError");
    assert_eq!(v["library_validated_id"], id);
    assert_eq!(v["tampered"], "InvalidTokenError");
    assert_eq!(v["rotations"], 2);
    assert_eq!(v["rotated_serial_differs"], true);
    assert_eq!(v["rotated_before_expiry"], true);

    // The published SPIFFE bundle verifies both SVID kinds.
    let (ok, out, err) = run(0, &[s, "bundle", &format!("http://{}", b.api)]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["x509_authorities"], 1, "{v}");
    assert_eq!(v["jwt_authorities"], 1, "{v}");
    assert_eq!(v["refresh_hint"], 300);
    assert_eq!(v["svid_verifies_with_published_ca"], true, "{v}");
    assert_eq!(v["jwt_verifies_with_published_key"], true, "{v}");

    // An mTLS handshake between two workloads, each with its X.509-SVID.
    let port_file = b.tmp().join("port");
    std::fs::set_permissions(b.tmp(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = Command::new(python())
        .arg(script())
        .args([
            s,
            "server",
            port_file.to_str().unwrap(),
            "spiffe://warrant.local/agent/svc-b/",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !port_file.exists() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = std::fs::read_to_string(&port_file).unwrap();
    // A client that expects another server refuses the handshake.
    let (ok, _, _) = run(
        65534,
        &[s, "client", &port, "spiffe://warrant.local/agent/svc-x/"],
    );
    assert!(!ok, "a client that expects another server must not connect");
    let (ok, out, err) = run(
        65534,
        &[s, "client", &port, "spiffe://warrant.local/agent/svc-a/"],
    );
    assert!(ok, "{err}");
    let got: Value = serde_json::from_str(&out).unwrap();
    let said = got["client_got"].as_str().unwrap();
    assert!(
        said.starts_with("hello spiffe://warrant.local/agent/svc-b/") && said.ends_with("ping"),
        "{said}"
    );
    let server = server.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&server.stdout).contains("spiffe://warrant.local/agent/svc-b/"),
        "{}",
        String::from_utf8_lossy(&server.stderr)
    );

    // An SVID of an agent that was disabled since no longer validates,
    // though it has not expired (attacker round).
    let (ok, jwt, err) = run(0, &[s, "jwt", "https://svc-b.example"]);
    assert!(ok, "{err}");
    let jwt = jwt.trim().to_owned();
    let (ok, out, err) = run(65534, &[s, "validate", &jwt, "https://svc-b.example"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("valid spiffe://warrant.local/agent/svc-a/"),
        "{out}"
    );
    b.cli(&["agent", "disable", "svc-a"]).ok();
    let (ok, out, err) = run(65534, &[s, "validate", &jwt, "https://svc-b.example"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("refused") && out.contains("not active"),
        "{out}"
    );
    b.cli(&["agent", "enable", "svc-a"]).ok();

    // A process that matches no agent gets nothing, and that is audited.
    let (ok, _, err) = run(65533, &[s, "fetch", "https://api.example"]);
    assert!(!ok);
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    let records = audit(&b, Some("attest.unix"));
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "deny" && r.to_string().contains("workload-api uid=65533"))
    );
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "allow" && r.to_string().contains("workload-api uid=0"))
    );
    // No SVID private key or token text in the trail.
    assert!(
        !records
            .iter()
            .any(|r| r.to_string().contains("PRIVATE KEY"))
    );
}

/// The Workload API socket has the agent socket's connection caps (counted
/// on their own): one local user cannot hold every connection, and a
/// connection over its user's cap is closed at once.
#[test]
fn one_local_user_cannot_fill_the_workload_socket() {
    use std::io::Read as _;
    use std::os::unix::net::UnixStream;
    let b = warrant_testkit::Broker::start_with(
        crate::support::bin(),
        warrant_testkit::Options {
            config: Some("[limits]\nagent_connections_per_user = 4\n".into()),
            ..Default::default()
        },
    );
    std::fs::set_permissions(b.tmp(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = b.data_dir.join("workload.sock");
    let held: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = UnixStream::connect(&sock).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(fifth.read(&mut buf).unwrap_or(0), 0, "closed at once");
    // Another user is still served (an answer, not a closed connection).
    let (ok, out, err) = run(65534, &[sock.to_str().unwrap(), "raw"]);
    assert!(ok, "{err}");
    assert!(out.contains("security header"), "{out}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out, err) = run(0, &[sock.to_str().unwrap(), "raw"]);
    assert!(ok, "{err}");
    assert!(out.contains("security header"), "freed when closed: {out}");
}
