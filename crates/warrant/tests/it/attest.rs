//! Attestation: real processes on the agent socket, a PyJWT-made OIDC issuer,
//! join tokens; every refusal clear, nothing issued, and audited.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{
    Broker, Options, audit, bin, broker, jwt_claims, jwt_header, post_json, python, repo,
};
use serde_json::{Value, json};

const POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);

@id("no-low-trust-in-prod")
forbid(principal, action == Action::"identity:issue", resource)
when { principal.trust == "low" && principal.env == "prod" };
"#;

fn with_policy(b: &Broker) {
    std::fs::write(b.data_dir.join("policies/attest.cedar"), POLICY).unwrap();
    b.cli(&["policy", "reload"]).ok();
}

/// The executable the kernel will report for the Python client.
fn python_exe() -> (PathBuf, String) {
    let real = std::fs::canonicalize(python()).unwrap();
    let out = Command::new("sha256sum").arg(&real).output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap()[..64].to_owned();
    (real, hash)
}

/// Runs the Python agent against the socket; one JSON value per response.
fn agent(b: &Broker, mode: &str, body: &str) -> Vec<Value> {
    let out = Command::new(python())
        .arg(repo().join("tests/interop/unix_client.py"))
        .arg(b.data_dir.join("agent.sock"))
        .args([mode, body])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn create(b: &Broker, name: &str, extra: &[&str]) {
    let mut args = vec!["agent", "create", name, "--owner", "team", "--env", "dev"];
    args.extend(extra);
    // Unix selectors pin the user; these tests run as one.
    let uid = format!("unix:uid={}", rustix::process::getuid().as_raw());
    if extra.iter().any(|a| a.starts_with("unix:"))
        && !extra.iter().any(|a| a.starts_with("unix:uid="))
    {
        args.extend(["--selector", uid.as_str()]);
    }
    b.cli(&args).ok();
}

#[test]
fn a_process_gets_an_identity_from_the_kernel_alone() {
    let b = broker();
    with_policy(&b);
    let (exe, hash) = python_exe();
    let uid = rustix::process::getuid().as_raw().to_string();
    create(
        &b,
        "triage",
        &[
            "--selector",
            &format!("unix:sha256={hash}"),
            "--selector",
            &format!("unix:uid={uid}"),
            "--max-ttl",
            "2m",
        ],
    );
    let r = agent(&b, "twice", "");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["status"], 200, "{r:?}");
    let body = &r[0]["body"];
    let token = body["identity_token"].as_str().unwrap();
    let spiffe = body["spiffe_id"].as_str().unwrap();
    assert!(spiffe.starts_with("spiffe://warrant.local/agent/triage/"));
    assert_eq!(body["expires_in"], 120, "capped by the agent's max-ttl");

    let c = jwt_claims(token);
    assert_eq!(c["sub"], spiffe);
    assert_eq!(c["aud"], b.issuer.as_str(), "default audience: the issuer");
    assert_eq!(c["iss"], b.issuer.as_str());
    assert_eq!(c["agent"], "triage");
    assert_eq!(c["env"], "dev");
    assert_eq!(c["attestor"], "unix");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);
    assert_eq!(
        c["jti"].as_str().unwrap().len(),
        28,
        "issuance ms (12 hex) and 16 random hex"
    );
    let h = jwt_header(token);
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["alg"], "ES256");

    // The same process keeps its identity; another process gets another.
    assert_eq!(r[1]["body"]["spiffe_id"], spiffe);
    assert_ne!(
        jwt_claims(r[1]["body"]["identity_token"].as_str().unwrap())["jti"],
        c["jti"]
    );
    let other = agent(&b, "once", r#"{"audience": "https://api.example"}"#);
    assert_ne!(other[0]["body"]["spiffe_id"], spiffe);
    assert_eq!(
        jwt_claims(other[0]["body"]["identity_token"].as_str().unwrap())["aud"],
        "https://api.example"
    );

    // The inventory shows both instances, with evidence and no token.
    let instances = b
        .cli(&["agent", "instances", "triage", "--output", "json"])
        .json();
    let instances = instances.as_array().unwrap();
    assert_eq!(instances.len(), 2);
    let evidence = instances[0]["evidence"].as_str().unwrap();
    assert!(
        evidence.contains(&format!("exe={}", exe.display())),
        "{evidence}"
    );
    assert!(evidence.contains(&hash));
    assert!(!instances.iter().any(|i| i.to_string().contains("eyJ")));
    let human = b.cli(&["agent", "instances", "triage"]).ok().to_owned();
    assert!(human.contains("unix") && human.contains("live"), "{human}");

    // Each issuance is one audit record naming the credential, never holding it.
    let recs = audit(&b, Some("attest.unix"));
    assert_eq!(recs.len(), 3);
    for rec in &recs {
        assert_eq!(rec["decision"], "allow");
        assert_eq!(rec["reasons"][0], "identities");
        assert_eq!(rec["credential_type"], "identity_token");
        assert_eq!(rec["detail"]["attestor"], "unix");
        assert!(!rec.to_string().contains("eyJ"));
    }
    assert_eq!(recs[0]["credential_id"], c["jti"]);
    let metrics = b.http("GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains("warrant_attestations_total{attestor=\"unix\",outcome=\"issued\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warrant_live_instances{agent=\"triage\"} 2"),
        "{metrics}"
    );
}

#[test]
fn pyjwt_verifies_an_identity_token_through_discovery() {
    let b = broker();
    with_policy(&b);
    let (_, hash) = python_exe();
    create(
        &b,
        "triage",
        &["--selector", &format!("unix:sha256={hash}")],
    );
    let r = agent(&b, "once", r#"{"audience": "https://api.example"}"#);
    let token = r[0]["body"]["identity_token"].as_str().unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/interop/verify_identity.py"))
        .args([b.issuer.as_str(), "https://api.example", token])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused the token:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["claims"]["sub"], r[0]["body"]["spiffe_id"]);
    assert_eq!(v["claims"]["aud"], "https://api.example");
    assert!(v["claims"]["exp"].as_i64().unwrap() > v["claims"]["iat"].as_i64().unwrap());

    // The wrong audience is refused by PyJWT too.
    let out = Command::new(python())
        .arg(repo().join("tests/interop/verify_identity.py"))
        .args([b.issuer.as_str(), "https://other.example", token])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Audience"));
}

/// The newest `attest.*` record.
fn last_attest(b: &Broker, attestor: &str) -> Value {
    audit(b, Some(&format!("attest.{attestor}")))
        .last()
        .cloned()
        .unwrap()
}

#[test]
fn unix_refusals_are_clear_issue_nothing_and_are_audited() {
    let b = broker();
    with_policy(&b);
    let (_, hash) = python_exe();

    // An executable whose hash matches no agent.
    create(
        &b,
        "other",
        &["--selector", &format!("unix:sha256={}", "0".repeat(64))],
    );
    let r = &agent(&b, "once", "")[0];
    assert_eq!(r["status"], 403);
    assert_eq!(r["body"]["error"], "access_denied");
    assert!(
        r["body"]["error_description"]
            .as_str()
            .unwrap()
            .contains("matches no registered agent"),
        "{r}"
    );
    let rec = last_attest(&b, "unix");
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["reasons"][0], "no agent's selectors match");
    assert!(rec["detail"]["evidence"].as_str().unwrap().contains(&hash));

    // A matching process of a disabled agent.
    create(
        &b,
        "triage",
        &["--selector", &format!("unix:sha256={hash}")],
    );
    b.cli(&["agent", "disable", "triage"]).ok();
    let r = &agent(&b, "once", "")[0];
    assert_eq!(r["status"], 403);
    assert!(
        r["body"]["error_description"]
            .as_str()
            .unwrap()
            .contains("agent `triage` is disabled")
    );
    assert_eq!(last_attest(&b, "unix")["agent"], "triage");
    b.cli(&["agent", "enable", "triage"]).ok();

    // Two agents match: the caller is not told which; the operator is.
    create(
        &b,
        "triage-two",
        &["--selector", &format!("unix:sha256={hash}")],
    );
    let r = &agent(&b, "once", "")[0];
    assert_eq!(r["status"], 403);
    let said = r["body"]["error_description"].as_str().unwrap();
    assert!(said.contains("more than one registered agent"), "{said}");
    assert!(!said.contains("triage"), "{said}");
    let rec = last_attest(&b, "unix");
    let why = rec["reasons"][0].as_str().unwrap();
    assert!(
        why.contains("triage") && why.contains("triage-two"),
        "{why}"
    );
    assert!(b.logs().contains("attestation matches several agents"));
    b.cli(&["agent", "delete", "triage-two"]).ok();

    // Policy refuses production identities to low-trust agents.
    b.cli(&["agent", "delete", "triage"]).ok();
    b.cli(&[
        "agent",
        "create",
        "triage",
        "--owner",
        "o",
        "--env",
        "prod",
        "--selector",
        &format!("unix:sha256={hash}"),
        "--selector",
        &format!("unix:uid={}", rustix::process::getuid().as_raw()),
    ])
    .ok();
    let r = &agent(&b, "once", "")[0];
    assert_eq!(r["status"], 403);
    assert_eq!(
        last_attest(&b, "unix")["reasons"][0],
        "no-low-trust-in-prod"
    );

    // A process that exits between connect and attestation.
    b.cli(&["agent", "delete", "triage"]).ok();
    create(
        &b,
        "triage",
        &["--selector", &format!("unix:sha256={hash}")],
    );
    // (The child that sends is not the process that connected.)
    let r = &agent(&b, "fork-exit", "")[0];
    assert_eq!(r["status"], 403, "{r}");
    let said = |t: &str| t.contains("exited or was replaced") || t.contains("another process");
    assert!(
        said(r["body"]["error_description"].as_str().unwrap()),
        "{r}"
    );
    assert!(said(
        last_attest(&b, "unix")["reasons"][0].as_str().unwrap()
    ));

    // Malformed and oversized bodies.
    let r = &agent(&b, "once", "{not json")[0];
    assert_eq!(r["status"], 400);
    assert_eq!(r["body"]["error"], "invalid_request");
    let r = &agent(&b, "once", r#"{"audience": "x", "extra": 1}"#)[0];
    assert_eq!(r["status"], 400);
    let r = &agent(&b, "once", &format!("@big:{}", 10 * 1024 * 1024))[0];
    assert_eq!(r["status"], 413, "{}", r["body"]);
    let rec = last_attest(&b, "unix");
    assert_eq!(rec["decision"], "error");
    assert!(
        rec["reasons"][0]
            .as_str()
            .unwrap()
            .contains("larger than 64 KiB")
    );

    // Nothing was issued by any of that.
    assert!(
        audit(&b, Some("attest"))
            .iter()
            .all(|r| r["decision"] != "allow")
    );
    assert!(
        b.cli(&["agent", "instances", "triage", "--output", "json"])
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_join_token_is_redeemed_exactly_once() {
    let b = broker();
    with_policy(&b);
    create(&b, "batch", &[]);
    let token = b
        .cli(&["agent", "join-token", "batch", "--ttl", "5m"])
        .ok()
        .trim()
        .to_owned();
    assert!(token.starts_with("wjn_") && token.len() == 68, "{token}");

    let r = post_json(&b, "/v1/attest/join", &json!({ "token": token }));
    assert_eq!(r.status, 200, "{}", r.body);
    let spiffe = r.json()["spiffe_id"].as_str().unwrap().to_owned();
    assert!(spiffe.starts_with("spiffe://warrant.local/agent/batch/"));
    assert_eq!(
        jwt_claims(r.json()["identity_token"].as_str().unwrap())["attestor"],
        "join"
    );

    // The instance renews with its own identity token (audience: the broker)
    // and keeps its identity.
    let first = r.json()["identity_token"].as_str().unwrap().to_owned();
    let renew = |bearer: &str, body: &Value| {
        b.http(
            "POST",
            "/v1/identity/renew",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {bearer}")),
            ],
            Some(&body.to_string()),
        )
    };
    let renewed = renew(&first, &json!({}));
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(renewed.json()["spiffe_id"], spiffe.as_str());
    let for_api = renew(&first, &json!({"audience": "https://api.example"}));
    assert_eq!(for_api.status, 200);
    // A token minted for another audience cannot renew: its audience could replay it.
    let elsewhere = renew(
        for_api.json()["identity_token"].as_str().unwrap(),
        &json!({}),
    );
    assert_eq!(elsewhere.status, 403);
    assert!(
        elsewhere.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("audience")
    );
    let forged = format!("{}x", &first[..first.len() - 1]);
    assert_eq!(renew(&forged, &json!({})).status, 403);
    let none = b.http("POST", "/v1/identity/renew", &[], None);
    assert_eq!(none.status, 400);
    assert_eq!(
        b.cli(&["agent", "instances", "batch", "--output", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "renewals keep the one instance"
    );
    let renewals = audit(&b, Some("attest.renew"));
    assert_eq!(
        renewals
            .iter()
            .map(|r| r["decision"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["allow", "allow", "deny", "deny", "error"]
    );

    let again = post_json(&b, "/v1/attest/join", &json!({ "token": token }));
    assert_eq!(again.status, 403);
    assert!(
        again.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("already been redeemed")
    );

    // 50 concurrent redemptions of one fresh token: exactly one wins.
    let token = b
        .cli(&["agent", "join-token", "batch"])
        .ok()
        .trim()
        .to_owned();
    let api = b.api;
    let results: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let body = json!({ "token": token }).to_string();
                s.spawn(move || {
                    warrant_testkit::http(
                        api,
                        "POST",
                        "/v1/attest/join",
                        &[("content-type", "application/json")],
                        Some(&body),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|s| **s == 200).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|s| **s == 403).count(),
        49,
        "{results:?}"
    );
    let issued: Vec<Value> = audit(&b, Some("attest.join"))
        .into_iter()
        .filter(|r| r["decision"] == "allow")
        .collect();
    assert_eq!(issued.len(), 2, "one per token");
    let instances = b
        .cli(&["agent", "instances", "batch", "--output", "json"])
        .json();
    assert_eq!(instances.as_array().unwrap().len(), 2);

    // Unknown and malformed tokens; an unknown agent; a token never in the log.
    let r = post_json(&b, "/v1/attest/join", &json!({ "token": "wjn_0000" }));
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("not recognised")
    );
    let r = post_json(&b, "/v1/attest/join", &json!({ "nope": 1 }));
    assert_eq!(r.status, 400);
    let r = b.cli(&["agent", "join-token", "ghost"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    let r = b.cli(&["agent", "join-token", "batch", "--ttl", "30d"]);
    assert_eq!(r.code, 1);
    let all = b
        .cli(&["audit", "list", "--output", "json", "--limit", "10000"])
        .ok()
        .to_owned();
    assert!(!all.contains(&token) && !b.logs().contains(&token));
}

/// A broker trusting a PyJWT-made issuer, and that issuer's tokens.
fn oidc_broker(jwks: &str) -> (Broker, Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/interop/oidc_issuer.py"))
        .args([dir.path().to_str().unwrap(), "https://k8s.test", "warrant"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = match jwks {
        "file" => format!("jwks_file = \"{}\"", dir.path().join("jwks.json").display()),
        uri => format!("jwks_uri = \"{uri}\""),
    };
    let b = Broker::start_with(
        bin(),
        Options {
            config: Some(format!(
                "[[trust_provider]]\nname = \"k8s-test\"\nissuer = \"https://k8s.test\"\n{source}\naudience = \"warrant\"\n"
            )),
            ..Default::default()
        },
    );
    with_policy(&b);
    b.cli(&[
        "agent",
        "create",
        "triage",
        "--owner",
        "o",
        "--env",
        "dev",
        "--selector",
        "oidc:provider=k8s-test",
        "--selector",
        "k8s:ns=agents",
        "--selector",
        "k8s:sa=triage",
    ])
    .ok();
    (b, tokens, dir)
}

fn attest_oidc(b: &Broker, token: &Value) -> warrant_testkit::Response {
    post_json(
        b,
        "/v1/attest/oidc",
        &json!({ "token": token, "audience": "https://api.example" }),
    )
}

#[test]
fn platform_tokens_attest_and_forgeries_do_not() {
    let (b, tokens, _dir) = oidc_broker("file");
    for good in ["good_rs256", "good_es256"] {
        let r = attest_oidc(&b, &tokens[good]);
        assert_eq!(r.status, 200, "{good}: {}", r.body);
        let c = jwt_claims(r.json()["identity_token"].as_str().unwrap());
        assert_eq!(c["attestor"], "oidc");
        assert_eq!(c["aud"], "https://api.example");
    }
    // One pod, one instance: the same pod's token again keeps the identity.
    let a = attest_oidc(&b, &tokens["good_rs256"]).json()["spiffe_id"].clone();
    let c = attest_oidc(&b, &tokens["good_rs256"]).json()["spiffe_id"].clone();
    assert_eq!(a, c);
    let instances = b
        .cli(&["agent", "instances", "triage", "--output", "json"])
        .json();
    let instances = instances.as_array().unwrap();
    assert_eq!(instances.len(), 2, "two pods");
    assert!(
        instances[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("pod=triage-5d8f")
    );

    for (name, why) in [
        ("other_sa", "matches no registered agent"),
        ("expired", "expired"),
        ("not_yet_valid", "not valid for another"),
        ("wrong_audience", "audience does not include `warrant`"),
        ("unlisted_issuer", "is not a trusted provider"),
        ("unknown_key", "no key with kid `stranger`"),
        ("stranger_under_known_kid", "signature does not verify"),
        ("alg_none", "algorithm `none` is not accepted"),
        ("hs256_public_key", "algorithm `HS256` is not accepted"),
        ("jku", "carries `jku`"),
        ("jwk", "carries `jwk`"),
        ("x5u", "carries `x5u`"),
        ("kid_traversal", "no key with kid `../../etc/passwd`"),
    ] {
        let before = audit(&b, Some("attest.oidc")).len();
        let r = attest_oidc(&b, &tokens[name]);
        assert_eq!(r.status, 403, "{name}: {}", r.body);
        let said = r.json()["error_description"].as_str().unwrap().to_owned();
        assert!(said.contains(why), "{name}: {said}");
        let recs = audit(&b, Some("attest.oidc"));
        assert_eq!(recs.len(), before + 1, "{name} is audited");
        let rec = recs.last().unwrap();
        assert_eq!(rec["decision"], "deny", "{name}");
        assert!(
            !rec.to_string().contains("eyJ"),
            "no raw token in the trail"
        );
    }
    let r = post_json(&b, "/v1/attest/oidc", &json!({ "token": "not a jwt" }));
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("not a well-formed JWT")
    );
    let r = post_json(&b, "/v1/attest/oidc", &json!({ "audience": "x" }));
    assert_eq!(r.status, 400);
    assert!(!b.logs().contains("eyJ"), "no token in the log");
}

#[test]
fn a_jwks_uri_is_fetched_once_and_unknown_kids_do_not_flood_it() {
    // Serve the issuer's JWKS over HTTP, counting requests.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/interop/oidc_issuer.py"))
        .args([dir.path().to_str().unwrap(), "https://k8s.test", "warrant"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tokens: Value = serde_json::from_slice(&out.stdout).unwrap();
    let jwks = std::fs::read_to_string(dir.path().join("jwks.json")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                jwks.len()
            );
        }
    });
    let (b, _, _d) = oidc_broker(&format!("http://{addr}/jwks.json"));
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "fetched on first use"
    );
    let r = attest_oidc(&b, &tokens["good_rs256"]);
    assert_eq!(r.status, 200, "{}", r.body);
    for i in 0..5 {
        let r = attest_oidc(&b, &tokens[format!("flood_{i}")]);
        assert_eq!(r.status, 403);
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "unknown kids refresh at most once a minute"
    );
}

#[test]
fn bad_trust_provider_config_is_refused_at_start() {
    for (toml, why) in [
        (
            "[[trust_provider]]\nname = \"k\"\nissuer = \"https://k\"\naudience = \"w\"\n",
            "set exactly one of jwks_uri and jwks_file",
        ),
        (
            "[[trust_provider]]\nname = \"k\"\nissuer = \"https://k\"\naudience = \"w\"\njwks_file = \"/nonexistent/jwks.json\"\n",
            "cannot read jwks_file",
        ),
        (
            "[[trust_provider]]\nname = \"K!\"\nissuer = \"https://k\"\naudience = \"w\"\njwks_uri = \"https://k/jwks\"\n",
            "lower-case letters",
        ),
        (
            "[[trust_provider]]\nname = \"k\"\nissuer = \"https://k\"\naudience = \"w\"\njwks_uri = \"https://k/jwks\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
    ] {
        let tmp = tempfile::tempdir_in("/tmp").unwrap();
        let (mut child, data_dir, log) = warrant_testkit::spawn_serve(
            bin(),
            tmp.path(),
            &Options {
                config: Some(toml.into()),
                ..Default::default()
            },
        );
        assert!(!child.wait().unwrap().success());
        let err = std::fs::read_to_string(log).unwrap();
        assert!(err.contains(why), "{why}: {err}");
        let _ = data_dir;
    }
}

/// Issue 15 (found by the Python SDK's tests): sender credentials were
/// turned on for each agent-socket connection after it was accepted, and a
/// third of an httpx client's first requests then arrived without them and
/// were refused as "sent by another process". Now they are on for the
/// listener, so every connection carries them from its first byte.
#[test]
fn an_httpx_client_is_not_taken_for_another_process() {
    let b = crate::support::broker();
    let sock = b.data_dir.join("agent.sock");
    let script = r#"
import sys, httpx2
refused = []
for i in range(40):
    with httpx2.Client(transport=httpx2.HTTPTransport(uds=sys.argv[1]), follow_redirects=True) as c:
        r = c.post("http://localhost/v1/identity", json={})
        if "another process" in r.text:
            refused.append(i)
print(refused)
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// The cgroup v2 hierarchy's mount point, from this process's mount table.
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2"))
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("this test needs a cgroup v2 hierarchy (it runs as root in CI)")
}

/// Issue 15, item 6: a Python agent's `unix:path` is the interpreter, so
/// every script of that uid matched. `unix:cgroup` (and `systemd_unit`,
/// `container`, read from the same path) tells them apart, and counts only
/// when the system put the process in that cgroup: a cgroup the agent's
/// own uid may move processes into proves nothing.
#[test]
fn a_cgroup_tells_an_interpreted_agent_from_other_scripts_of_its_uid() {
    let b = crate::support::broker();
    with_policy(&b);
    let (exe, _) = python_exe();
    let name = format!("warrant-it-{}", std::process::id());
    let cg = cgroup2_mount().join(&name);
    std::fs::create_dir(&cg).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _remove = Remove(cg.clone());
    // The interpreter alone: registered, with a warning saying why not.
    let path = format!("unix:path={}", exe.display());
    let r = b.cli(&[
        "agent",
        "create",
        "loose",
        "--owner",
        "o",
        "--env",
        "dev",
        "--selector",
        "unix:uid=65533",
        "--selector",
        &path,
    ]);
    r.ok();
    assert!(
        r.stderr.contains("warning:") && r.stderr.contains("interpreter"),
        "{}",
        r.stderr
    );
    let selector = format!("unix:cgroup=/{name}");
    let r = b.cli(&[
        "agent",
        "create",
        "placed",
        "--owner",
        "o",
        "--env",
        "dev",
        "--selector",
        "unix:uid=65534",
        "--selector",
        &path,
        "--selector",
        &selector,
    ]);
    r.ok();
    assert!(!r.stderr.contains("warning:"), "{}", r.stderr);
    // A script of uid 65534, started in the cgroup by root (as systemd
    // starts a service), or outside it.
    let sock = b.data_dir.join("agent.sock");
    let script = r#"
import sys, httpx2
with httpx2.Client(transport=httpx2.HTTPTransport(uds=sys.argv[1]), follow_redirects=True) as c:
    r = c.post("http://localhost/v1/identity", json={})
    print(r.status_code, r.json().get("spiffe_id") or r.json().get("error_description"))
"#;
    let run = |inside: bool| {
        let enter = if inside {
            format!("echo $$ > {}/cgroup.procs && ", cg.display())
        } else {
            String::new()
        };
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{enter}exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$0\" -c \"$1\" \"$2\""
            ))
            .arg(python())
            .arg(script)
            .arg(&sock)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let inside = run(true);
    assert!(
        inside.starts_with("200 ") && inside.contains("/agent/placed/"),
        "{inside}"
    );
    let outside = run(false);
    assert!(outside.starts_with("403 "), "{outside}");
    // A cgroup delegated to the agent's uid (it may move its processes
    // there): being in it proves nothing.
    let procs = cg.join("cgroup.procs");
    rustix::fs::chown(&procs, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let delegated = run(true);
    assert!(delegated.starts_with("403 "), "{delegated}");
    // Owned by another unprivileged uid (what a user with a delegated
    // subtree can arrange from a user namespace, chowning to a subordinate
    // uid): still not the system's placement (attacker round).
    rustix::fs::chown(&procs, Some(rustix::fs::Uid::from_raw(165_536)), None).unwrap();
    let subordinate = run(true);
    assert!(subordinate.starts_with("403 "), "{subordinate}");
    let rec = last_attest(&b, "unix");
    assert_eq!(rec["decision"], "deny", "{rec}");
    // Back to root's: placed again.
    rustix::fs::chown(&procs, Some(rustix::fs::Uid::ROOT), None).unwrap();
    let again = run(true);
    assert!(again.starts_with("200 "), "{again}");
}

/// Issue 16, discovery: workloads that try to attest and match no agent are
/// listed once each, with how often they tried and the command that
/// registers them; running that command makes them attest, and they leave
/// the list. A flood of attempts stays one entry (the refusal budget
/// gathers them) and its count is kept.
#[test]
fn unregistered_workloads_are_discovered_with_a_command_that_registers_them() {
    let b = crate::support::broker();
    with_policy(&b);
    std::fs::set_permissions(b.tmp(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = b.data_dir.join("agent.sock");
    let attest = |uid: Option<u32>| {
        let mut cmd = match uid {
            None => Command::new("curl"),
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={u}"),
                    &format!("--regid={u}"),
                    "--clear-groups",
                    "curl",
                ]);
                c
            }
        };
        let out = cmd
            .args([
                "-s",
                "-L",
                "--unix-socket",
                sock.to_str().unwrap(),
                "-X",
                "POST",
            ])
            .args([
                "http://localhost/v1/identity",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for _ in 0..40 {
        assert_eq!(attest(None), "403");
    }
    assert_eq!(attest(Some(65534)), "403");
    let list = b.cli(&["agent", "discovered", "--output", "json"]).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let root = list
        .iter()
        .find(|c| c["evidence"]["uid"] == "0")
        .expect("root's curl is listed");
    assert_eq!(root["attestor"], "unix");
    assert_eq!(root["attempts"], 40, "every attempt counted: {root}");
    let curl = std::fs::canonicalize(
        String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v curl"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    )
    .unwrap();
    assert_eq!(root["evidence"]["exe"], curl.to_str().unwrap());
    let command = root["command"].as_str().unwrap();
    assert!(
        command.starts_with("warrant agent create curl --owner OWNER --env ENV --selector unix:uid=0 --selector unix:path="),
        "{command}"
    );
    // The human listing shows the same command.
    let human = b.cli(&["agent", "discovered"]);
    assert!(human.ok().contains(command), "{}", human.stdout);
    // Run it as printed (owner and environment filled in).
    let run = command
        .replacen("warrant", bin().to_str().unwrap(), 1)
        .replace("OWNER", "team")
        .replace("ENV", "dev");
    let out = Command::new("sh")
        .args(["-c", &run])
        .env("WARRANT_DATA_DIR", &b.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(attest(None), "200");
    let list = b.cli(&["agent", "discovered", "--output", "json"]).json();
    let list = list.as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "registered and attested since: gone: {list:?}"
    );
    assert_eq!(list[0]["evidence"]["uid"], "65534");
    // Readers may list it; nothing else is needed.
    let r = b.cli(&["agent", "discovered", "--since", "not-a-time"]);
    assert_ne!(r.code, 0);
}
