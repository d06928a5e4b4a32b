//! Interop with clients warrant did not write (tests/interop/).

use crate::support::{Options, bin, broker, python, repo};
use std::process::Command;

fn pyjwt_reads_jwks(base: &str) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo().join("tests/interop/jwks_pyjwt.py"))
        .arg(base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pyjwt_loads_the_jwks_from_discovery() {
    let b = broker();
    let summary = pyjwt_reads_jwks(&b.issuer);
    let keys = summary["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["use"], "sig");
    assert!(summary["library"].as_str().unwrap().starts_with("PyJWT 2."));

    // After a rotation PyJWT sees both keys, and an EdDSA key as well.
    b.cli(&["keys", "rotate", "--alg", "EdDSA"]).ok();
    let summary = pyjwt_reads_jwks(&b.issuer);
    let algs: Vec<&str> = summary["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert_eq!(algs, vec!["ES256", "EdDSA"]);
}

#[test]
fn pyjwt_loads_an_eddsa_only_jwks() {
    let b = crate::support::Broker::start_with(
        bin(),
        Options {
            args: vec!["--signing-alg".into(), "EdDSA".into()],
            ..Default::default()
        },
    );
    let summary = pyjwt_reads_jwks(&b.issuer);
    assert_eq!(summary["keys"][0]["alg"], "EdDSA");
}
