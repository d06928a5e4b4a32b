use super::*;

#[test]
fn accepts_every_documented_key() {
    let hash = "AB".repeat(32);
    for s in [
        "unix:uid=1001".to_owned(),
        "unix:gid=0".to_owned(),
        "unix:user=svc_agent".to_owned(),
        "unix:group=agents".to_owned(),
        "unix:path=/usr/local/bin/triage".to_owned(),
        format!("unix:sha256={hash}"),
        "oidc:iss=https://token.actions.githubusercontent.com".to_owned(),
        "oidc:sub=repo:acme/app:ref:refs/heads/main".to_owned(),
        "oidc:claim.kubernetes.io.namespace=agents".to_owned(),
        "k8s:ns=agents".to_owned(),
        "k8s:sa=triage".to_owned(),
        "k8s:pod=triage-7f9c.x".to_owned(),
    ] {
        let sel: Selector = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        if sel.key() == "sha256" {
            assert_eq!(sel.value(), hash.to_lowercase(), "sha256 is normalised");
        } else {
            assert_eq!(sel.to_string(), s);
        }
    }
}

#[test]
fn refuses_malformed_selectors_saying_why() {
    let cases = [
        ("uid=1001", "KIND:KEY=VALUE"),
        ("unix:uid", "KIND:KEY=VALUE"),
        ("unix:uid=", "KIND:KEY=VALUE"),
        ("docker:image=x", "unknown kind `docker`"),
        (
            "unix:pid=4",
            "unknown key `pid` for kind unix; use one of: uid, gid",
        ),
        ("unix:uid=alice", "decimal numbers"),
        ("unix:uid=-1", "decimal numbers"),
        ("unix:sha256=abc", "64 hex digits"),
        ("unix:path=bin/triage", "absolute path"),
        ("unix:path=/usr/../bin/sh", "absolute path"),
        ("unix:user=Root", "POSIX names"),
        ("k8s:ns=Agents", "DNS label"),
        ("k8s:sa=a_b", "DNS subdomains"),
        ("oidc:iss=token.example", "issuer URL"),
        ("oidc:claim.=x", "dot-separated names"),
        ("oidc:claim.a..b=x", "dot-separated names"),
        ("oidc:claim/a//b=x", "JSON Pointer"),
        ("oidc:claim/a~2=x", "JSON Pointer"),
        ("oidc:provider=K8s", "[[trust_provider]]"),
        ("oidc:sub=a\nb", "control characters"),
    ];
    for (input, want) in cases {
        let err = input.parse::<Selector>().unwrap_err().to_string();
        assert!(err.contains(want), "{input:?}: {err}");
    }
}

#[test]
fn a_key_given_twice_is_refused() {
    let err = SelectorSet::parse(&["unix:uid=1", "unix:uid=2"]).unwrap_err();
    assert_eq!(err, SelectorError::Duplicate("unix:uid".into()));
    // Different keys of one kind, and the same key across kinds, are fine.
    let set = SelectorSet::parse(&["unix:uid=1", "unix:gid=2", "k8s:ns=a"]).unwrap();
    assert_eq!(set.of_kind(SelectorKind::Unix).count(), 2);
}

#[test]
fn serde_round_trip_validates() {
    let set = SelectorSet::parse(&["k8s:sa=triage", "k8s:ns=agents"]).unwrap();
    let json = serde_json::to_string(&set).unwrap();
    assert_eq!(json, r#"["k8s:ns=agents","k8s:sa=triage"]"#);
    assert_eq!(serde_json::from_str::<SelectorSet>(&json).unwrap(), set);
    assert!(serde_json::from_str::<SelectorSet>(r#"["k8s:ns=A"]"#).is_err());
}
