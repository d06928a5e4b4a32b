//! Signing keys: encrypted at rest, published before they sign, retired keys
//! published until their tokens expire.

use crate::support::{audit, broker};
use std::time::{Duration, Instant};

fn jwks_kids(b: &crate::support::Broker) -> Vec<String> {
    b.http("GET", "/.well-known/jwks.json", &[], None).json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn keys_are_encrypted_at_rest() {
    let b = broker();
    let c = rusqlite::Connection::open(b.data_dir.join("warrant.db")).unwrap();
    let (sealed, public): (Vec<u8>, Vec<u8>) = c
        .query_row(
            "SELECT sealed_private_key, public_key FROM signing_keys",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // A P-256 PKCS#8 document carries the id-ecPublicKey OID; the sealed blob must not.
    let oid = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    assert!(
        !sealed.windows(oid.len()).any(|w| w == oid),
        "private key stored in the clear"
    );
    assert_eq!(public.len(), 65);
    // The whole database file holds no plaintext private key either.
    let raw = std::fs::read(b.data_dir.join("warrant.db-wal")).unwrap_or_default();
    assert!(!raw.windows(oid.len()).any(|w| w == oid));
}

#[test]
fn rotation_publishes_first_then_signs_then_retires() {
    let b = broker();
    let before = b.cli(&["keys", "list", "--output", "json"]).json();
    assert_eq!(before.as_array().unwrap().len(), 1);
    assert_eq!(before[0]["state"], "active");
    assert_eq!(before[0]["alg"], "ES256");
    let old = before[0]["kid"].as_str().unwrap().to_owned();

    let new = b
        .cli(&["keys", "rotate", "--activate-in", "3s", "--output", "json"])
        .json();
    let new_kid = new["kid"].as_str().unwrap().to_owned();
    assert_eq!(new["state"], "next");
    // Published now, before it signs; the old key still signs.
    assert_eq!(jwks_kids(&b), vec![old.clone(), new_kid.clone()]);
    let states = b.cli(&["keys", "list", "--output", "json"]).json();
    assert_eq!(states[0]["state"], "active");
    assert_eq!(states[1]["state"], "next");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = b.cli(&["keys", "list", "--output", "json"]).json();
        if states[1]["state"] == "active" {
            assert_eq!(states[0]["state"], "retired");
            let until = states[0]["published_until"].as_str().unwrap();
            let retired = states[0]["retired_at"].as_str().unwrap();
            assert_eq!(retired, new["activates_at"].as_str().unwrap());
            assert!(until > retired);
            break;
        }
        assert!(Instant::now() < deadline, "the new key never activated");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The retired key stays published (tokens it signed may still be live).
    assert_eq!(jwks_kids(&b), vec![new_kid.clone(), old]);

    let ed = b
        .cli(&["keys", "rotate", "--alg", "EdDSA", "--output", "json"])
        .json();
    assert_eq!(ed["alg"], "EdDSA");
    assert_eq!(jwks_kids(&b).len(), 3);

    for (args, want) in [
        (vec!["--alg", "RS256"], "ES256 or EdDSA"),
        (vec!["--activate-in", "30d"], "too long"),
        (vec!["--activate-in", "soon"], "not a duration"),
    ] {
        let r = b.cli(&[&["keys", "rotate"][..], &args].concat());
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    let rotations = audit(&b, Some("admin.key.rotate"));
    assert_eq!(
        rotations
            .iter()
            .filter(|r| r["decision"] == "allow")
            .count(),
        2
    );
    assert_eq!(
        rotations
            .iter()
            .filter(|r| r["decision"] == "error")
            .count(),
        3
    );
    assert_eq!(
        b.http("GET", "/.well-known/jwks.json", &[], None)
            .header("cache-control"),
        Some("public, max-age=300")
    );
}
