use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};

use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

#[test]
fn signatures_verify_with_the_published_key() {
    let kek = Kek::generate().unwrap();
    for (alg, verify_alg) in [
        (
            Alg::Es256,
            &ECDSA_P256_SHA256_FIXED as &dyn aws_lc_rs::signature::VerificationAlgorithm,
        ),
        (Alg::EdDsa, &ED25519),
    ] {
        let rec = generate_key(alg, &kek, t(0), t(0)).unwrap();
        let public = rec.public_key.clone();
        let set = KeySet::open(vec![rec], &kek).unwrap();
        let key = set.active(t(1)).unwrap();
        assert_eq!(key.alg(), alg);
        let sig = key.sign(b"header.payload").unwrap();
        assert_eq!(sig.len(), 64);
        UnparsedPublicKey::new(verify_alg, &public)
            .verify(b"header.payload", &sig)
            .unwrap();
        assert!(
            UnparsedPublicKey::new(verify_alg, &public)
                .verify(b"header.payloaX", &sig)
                .is_err()
        );
    }
}

#[test]
fn jwks_shape_and_thumbprint_kid() {
    let kek = Kek::generate().unwrap();
    let rec = generate_key(Alg::Es256, &kek, t(0), t(0)).unwrap();
    let set = KeySet::open(vec![rec.clone()], &kek).unwrap();
    let jwks = serde_json::to_value(set.jwks(t(1))).unwrap();
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["alg"], "ES256");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["kid"], rec.kid.as_str());
    assert_eq!(k["x"].as_str().unwrap().len(), 43);
    assert_eq!(k["y"].as_str().unwrap().len(), 43);
    assert!(k.get("d").is_none(), "no private member is ever published");
}

#[test]
fn rfc7638_thumbprint_vector() {
    // RFC 8037 appendix A.3: the thumbprint of the Ed25519 key in A.2.
    let x = URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .unwrap();
    assert_eq!(
        thumbprint(Alg::EdDsa, &x).unwrap(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn rotation_schedule() {
    let kek = Kek::generate().unwrap();
    let k1 = generate_key(Alg::Es256, &kek, t(0), t(0)).unwrap();
    // Rotated at t=100, signing from t=400.
    let k2 = generate_key(Alg::Es256, &kek, t(100), t(400)).unwrap();
    let set = KeySet::open(vec![k2.clone(), k1.clone()], &kek).unwrap();

    // Between rotation and activation k2 is published but k1 still signs.
    let at = |s| {
        set.status(t(s))
            .into_iter()
            .map(|k| k.state)
            .collect::<Vec<_>>()
    };
    assert_eq!(at(200), vec![KeyState::Active, KeyState::Next]);
    assert_eq!(set.active(t(200)).unwrap().kid(), k1.kid);
    let kids = |s| {
        set.jwks(t(s))
            .keys
            .into_iter()
            .map(|k| k.kid)
            .collect::<Vec<_>>()
    };
    assert_eq!(kids(200), vec![k1.kid.clone(), k2.kid.clone()]);

    // From t=400, k2 signs and k1 is retired but still published.
    assert_eq!(at(400), vec![KeyState::Retired, KeyState::Active]);
    assert_eq!(set.active(t(400)).unwrap().kid(), k2.kid);
    assert_eq!(kids(400), vec![k2.kid.clone(), k1.kid.clone()]);

    // k1 stays published until every token it signed (<= 1 h, + skew) expired.
    let until = 400 + (MAX_TOKEN_LIFETIME + CLOCK_SKEW).as_secs() as i64;
    let st = set.status(t(until - 1));
    assert_eq!(st[0].state, KeyState::Retired);
    assert_eq!(st[0].published_until, Some(t(until)));
    assert_eq!(at(until), vec![KeyState::Expired, KeyState::Active]);
    assert_eq!(kids(until), vec![k2.kid.clone()]);
}

#[test]
fn activation_is_never_before_creation() {
    let kek = Kek::generate().unwrap();
    let k = generate_key(Alg::EdDsa, &kek, t(50), t(10)).unwrap();
    assert_eq!(k.activates_at, t(50));
    let set = KeySet::open(vec![k], &kek).unwrap();
    assert!(set.active(t(49)).is_none());
    assert!(set.has_current_or_next(t(0)));
}

#[test]
fn wrong_kek_or_tampered_rows_are_refused() {
    let kek = Kek::generate().unwrap();
    let k1 = generate_key(Alg::Es256, &kek, t(0), t(0)).unwrap();
    let k2 = generate_key(Alg::Es256, &kek, t(0), t(0)).unwrap();

    let other = Kek::generate().unwrap();
    let e = KeySet::open(vec![k1.clone()], &other).unwrap_err();
    assert!(matches!(e, KeyError::Unseal { .. }), "{e}");
    assert!(e.to_string().contains("WARRANT_KEK"));

    // A sealed private key moved to another key's row does not open.
    let mut moved = k2.clone();
    moved.sealed_private_key = k1.sealed_private_key.clone();
    assert!(matches!(
        KeySet::open(vec![moved], &kek),
        Err(KeyError::Unseal { .. })
    ));

    // A swapped public key is caught.
    let mut swapped = k1.clone();
    swapped.public_key = k2.public_key.clone();
    assert!(matches!(
        KeySet::open(vec![swapped], &kek),
        Err(KeyError::Corrupt { .. })
    ));
}

#[test]
fn debug_never_prints_key_material() {
    let kek = Kek::generate().unwrap();
    let k = generate_key(Alg::Es256, &kek, t(0), t(0)).unwrap();
    let sealed_hex = format!("{:?}", k.sealed_private_key);
    let set = KeySet::open(vec![k.clone()], &kek).unwrap();
    let shown = format!("{set:?} {k:?}");
    assert!(!shown.contains(&sealed_hex[1..20]));
    assert!(shown.contains(&k.kid));
}
