use aws_lc_rs::hmac;
use serde_json::json;
use warrant_core::keys::Alg;

use super::*;
use crate::{Kek, KeySet, generate_key};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

fn keyset(alg: Alg) -> KeySet {
    let kek = Kek::generate().unwrap();
    KeySet::open(vec![generate_key(alg, &kek, t(0), t(0)).unwrap()], &kek).unwrap()
}

fn enc(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token with `header` and `claims`, signed by `set`'s active key over
/// exactly that header (so header tricks are tested with a valid signature).
fn forge(set: &KeySet, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", enc(header), enc(claims));
    let sig = set.active(t(1)).unwrap().sign(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn claims() -> Value {
    json!({"iss": "https://issuer.example", "aud": "warrant", "sub": "x", "exp": 1000, "iat": 100})
}

#[test]
fn sign_then_verify_round_trips_for_both_algorithms() {
    for alg in [Alg::Es256, Alg::EdDsa] {
        let set = keyset(alg);
        let token = sign(set.active(t(1)).unwrap(), "JWT", &claims()).unwrap();
        let v = verify(&token, &VerifyingKeys::published(&set, t(1))).unwrap();
        assert_eq!(v.header.alg, alg.as_str());
        assert_eq!(v.header.typ.as_deref(), Some("JWT"));
        assert_eq!(
            v.header.kid.as_deref(),
            Some(set.active(t(1)).unwrap().kid())
        );
        assert_eq!(Value::Object(v.claims), claims());
    }
}

#[test]
fn a_tampered_token_or_another_keys_signature_fails() {
    let set = keyset(Alg::Es256);
    let keys = VerifyingKeys::published(&set, t(1));
    let token = sign(set.active(t(1)).unwrap(), "JWT", &claims()).unwrap();
    let (head, _) = token.rsplit_once('.').unwrap();
    let mut other = claims();
    other["sub"] = json!("admin");
    let swapped = format!(
        "{}.{}.{}",
        head.split('.').next().unwrap(),
        enc(&other),
        token.rsplit('.').next().unwrap()
    );
    assert_eq!(verify(&swapped, &keys).unwrap_err(), JwtError::Signature);

    // Same kid, different key: an attacker's key under our kid.
    let attacker = keyset(Alg::Es256);
    let header = json!({"alg": "ES256", "kid": set.active(t(1)).unwrap().kid()});
    let forged = forge(&attacker, &header, &claims());
    assert_eq!(verify(&forged, &keys).unwrap_err(), JwtError::Signature);
}

#[test]
fn alg_none_and_hmac_are_refused() {
    let set = keyset(Alg::Es256);
    let keys = VerifyingKeys::published(&set, t(1));
    let kid = set.active(t(1)).unwrap().kid().to_owned();
    let none = format!(
        "{}.{}.",
        enc(&json!({"alg": "none", "kid": kid})),
        enc(&claims())
    );
    assert!(matches!(verify(&none, &keys), Err(JwtError::Alg(a)) if a == "none"));

    // HS256 keyed with the public JWK's bytes: the classic confusion attack.
    let jwk = serde_json::to_vec(&set.jwks(t(1)).keys[0]).unwrap();
    let input = format!(
        "{}.{}",
        enc(&json!({"alg": "HS256", "kid": kid})),
        enc(&claims())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &jwk), input.as_bytes());
    let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert!(matches!(verify(&hs, &keys), Err(JwtError::Alg(a)) if a == "HS256"));
}

#[test]
fn the_key_decides_the_algorithm() {
    let set = keyset(Alg::Es256);
    let keys = VerifyingKeys::published(&set, t(1));
    let kid = set.active(t(1)).unwrap().kid().to_owned();
    // An Ed25519 signature presented under the ES256 key's kid.
    let ed = keyset(Alg::EdDsa);
    let t2 = forge(&ed, &json!({"alg": "EdDSA", "kid": kid}), &claims());
    assert!(matches!(
        verify(&t2, &keys),
        Err(JwtError::AlgMismatch {
            key: JwsAlg::Es256,
            ..
        })
    ));
}

#[test]
fn header_keys_crit_and_odd_kids_are_refused() {
    let set = keyset(Alg::Es256);
    let keys = VerifyingKeys::published(&set, t(1));
    let kid = set.active(t(1)).unwrap().kid().to_owned();
    let jwk = serde_json::to_value(&set.jwks(t(1)).keys[0]).unwrap();
    for (member, value) in [
        ("jwk", jwk),
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut h = json!({"alg": "ES256", "kid": kid});
        h[member] = value;
        let token = forge(&set, &h, &claims());
        assert_eq!(
            verify(&token, &keys).unwrap_err(),
            JwtError::HeaderKey(member)
        );
    }
    let crit = forge(
        &set,
        &json!({"alg": "ES256", "kid": kid, "crit": ["exp"]}),
        &claims(),
    );
    assert_eq!(verify(&crit, &keys).unwrap_err(), JwtError::Crit);

    let traversal = forge(
        &set,
        &json!({"alg": "ES256", "kid": "../../etc/passwd"}),
        &claims(),
    );
    assert_eq!(
        verify(&traversal, &keys).unwrap_err(),
        JwtError::UnknownKid("../../etc/passwd".into())
    );
    let long = "k".repeat(500);
    let e = verify(
        &forge(&set, &json!({"alg": "ES256", "kid": long}), &claims()),
        &keys,
    )
    .unwrap_err()
    .to_string();
    assert!(e.len() < 200, "token text is truncated in errors: {e}");
}

#[test]
fn malformed_tokens_get_a_reason() {
    let keys = VerifyingKeys::published(&keyset(Alg::Es256), t(1));
    for (token, why) in [
        ("", "three dot-separated parts"),
        ("a.b", "three dot-separated parts"),
        ("a.b.c.d", "three dot-separated parts"),
        ("!!.e30.", "header is not base64url"),
        ("e30.e30.", "header has no `alg`"),
        ("W10.e30.", "header is not a JSON object"),
    ] {
        let e = verify(token, &keys).unwrap_err();
        assert!(e.to_string().contains(why), "{token}: {e}");
    }
    let huge = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        verify(&huge, &keys).unwrap_err(),
        JwtError::Malformed("longer than 16 KiB")
    );
}

#[test]
fn no_kid_uses_the_single_key_of_that_algorithm() {
    let set = keyset(Alg::Es256);
    let mut jwk = serde_json::to_value(&set.jwks(t(1)).keys[0]).unwrap();
    jwk.as_object_mut().unwrap().remove("kid");
    let mut keys = VerifyingKeys::default();
    keys.insert(VerifyingKey::from_jwk(&jwk).unwrap());
    let token = forge(&set, &json!({"alg": "ES256"}), &claims());
    verify(&token, &keys).unwrap();
    keys.insert(VerifyingKey::from_jwk(&jwk).unwrap());
    assert_eq!(
        verify(&token, &keys).unwrap_err(),
        JwtError::NoKey(JwsAlg::Es256)
    );
}

#[test]
fn jwks_parsing_skips_unusable_keys_and_refuses_misfits() {
    let set = keyset(Alg::Es256);
    let good = serde_json::to_value(&set.jwks(t(1)).keys[0]).unwrap();
    let doc = json!({"keys": [
        good,
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "short"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc", "kid": "enc"},
    ]});
    let (keys, skipped) = VerifyingKeys::from_jwks(&serde_json::to_vec(&doc).unwrap()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    // A JWK claiming ES384 for a P-256 key is refused.
    let mut misfit = serde_json::to_value(&set.jwks(t(1)).keys[0]).unwrap();
    misfit["alg"] = json!("ES384");
    assert!(VerifyingKey::from_jwk(&misfit).is_err());
    assert!(VerifyingKeys::from_jwks(b"not json").is_err());
    assert!(VerifyingKeys::from_jwks(b"{}").is_err());
}

#[test]
fn claims_are_checked_for_issuer_audience_and_time() {
    let expect = Expect {
        issuer: "https://issuer.example",
        audience: "warrant",
        now: t(500),
        leeway_secs: 30,
    };
    let ok = |c: Value| expect.check(c.as_object().unwrap());
    ok(claims()).unwrap();
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    ok(with("aud", json!(["other", "warrant"]))).unwrap();
    ok(with("exp", json!(490))).unwrap(); // within leeway
    for (c, why) in [
        (with("iss", json!("https://evil.example")), "issuer is"),
        (with("aud", json!("other")), "audience does not include"),
        (with("aud", json!(["other"])), "audience does not include"),
        (with("exp", json!(400)), "expired"),
        (with("exp", json!("soon")), "not a usable time"),
        // Issue 12 (low): `exp` near 1e300 overflowed `exp + leeway`.
        (with("exp", json!(1e300)), "not a usable time"),
        (with("exp", json!(i64::MAX)), "not a usable time"),
        (with("nbf", json!(i64::MIN)), "not a usable time"),
        (with("iat", json!(f64::MAX)), "not a usable time"),
        (with("nbf", json!(600)), "not valid for another"),
        (with("iat", json!(900)), "issued in the future"),
    ] {
        let e = ok(c.clone()).unwrap_err().to_string();
        assert!(e.contains(why), "{c}: {e}");
    }
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(ok(no_exp).unwrap_err().to_string().contains("no `exp`"));
}

fn left_pad(v: &[u8], n: usize) -> Vec<u8> {
    let v = if v.len() > n && v[..v.len() - n].iter().all(|b| *b == 0) {
        &v[v.len() - n..]
    } else {
        v
    };
    let mut out = vec![0u8; n.saturating_sub(v.len())];
    out.extend_from_slice(v);
    out
}

/// Every ECDSA P-256/SHA-256 (IEEE P1363, the JWS encoding) Wycheproof
/// vector through the function that checks every token's signature: as
/// issued by other issuers (results exactly as the vectors say), and with
/// warrant's own keys (only the low-`s` twin of a valid signature passes).
#[test]
fn wycheproof_ecdsa_p256_sha256() {
    use wycheproof::TestResult;
    let set =
        wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363)
            .unwrap();
    let (mut run, mut high_s_valid) = (0, 0);
    for g in set.test_groups {
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(left_pad(&g.key.affine_x, 32)),
            "y": URL_SAFE_NO_PAD.encode(left_pad(&g.key.affine_y, 32)),
        });
        let key = VerifyingKey::from_jwk(&jwk).unwrap();
        for t in g.tests {
            run += 1;
            let external = verify_signature(&key, false, &t.msg, &t.sig).is_ok();
            let own = verify_signature(&key, true, &t.msg, &t.sig).is_ok();
            match t.result {
                TestResult::Valid => {
                    assert!(external, "tc {} ({}) must verify", t.tc_id, t.comment);
                    let high = crate::ecdsa::is_high_s(&t.sig);
                    assert_eq!(own, !high, "tc {}: own keys refuse only high s", t.tc_id);
                    high_s_valid += usize::from(high);
                }
                TestResult::Invalid => {
                    assert!(
                        !external && !own,
                        "tc {} ({}) must not verify",
                        t.tc_id,
                        t.comment
                    );
                }
                TestResult::Acceptable => {}
            }
        }
    }
    assert!(run > 250, "{run} vectors");
    assert!(high_s_valid > 0, "the vectors include high-s signatures");
}

/// Every Ed25519 Wycheproof vector through the same function.
#[test]
fn wycheproof_ed25519() {
    use wycheproof::TestResult;
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut run = 0;
    for g in set.test_groups {
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(&g.key.pk[..]),
        });
        let key = VerifyingKey::from_jwk(&jwk).unwrap();
        for t in g.tests {
            run += 1;
            let ok = verify_signature(&key, true, &t.msg, &t.sig).is_ok();
            match t.result {
                TestResult::Valid => assert!(ok, "tc {} ({}) must verify", t.tc_id, t.comment),
                TestResult::Invalid => {
                    assert!(!ok, "tc {} ({}) must not verify", t.tc_id, t.comment);
                }
                TestResult::Acceptable => {}
            }
        }
    }
    assert!(run > 100, "{run} vectors");
}

/// Issue 12 (low): the high-`s` twin of a signature of warrant's own
/// verified too. Tokens are signed with the low `s`, and the twin is refused.
#[test]
fn a_high_s_twin_of_an_own_token_is_refused() {
    let set = keyset(Alg::Es256);
    let keys = VerifyingKeys::published(&set, t(1));
    for _ in 0..20 {
        let token = sign(set.active(t(1)).unwrap(), "JWT", &claims()).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert!(!crate::ecdsa::is_high_s(&sig), "signed low");
        verify(&token, &keys).unwrap();
        // n - s: the twin.
        let n: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(n[i]) - i16::from(sig[32 + i]) - borrow;
            borrow = i16::from(d < 0);
            sig[32 + i] = d.rem_euclid(256) as u8;
        }
        let twin = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(verify(&twin, &keys).unwrap_err(), JwtError::Signature);
    }
}
