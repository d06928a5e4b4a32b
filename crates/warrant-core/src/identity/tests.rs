use serde_json::json;

use super::*;
use crate::agent::NewAgent;

fn agent(selectors: &[&str]) -> Agent {
    let new: NewAgent = serde_json::from_value(json!({
        "name": "triage", "owner": "o", "env": "prod", "selectors": selectors
    }))
    .unwrap();
    Agent::from_new("agt_1".into(), new, Timestamp::from_millis(0))
}

fn unix() -> Evidence {
    Evidence::Unix(UnixFacts {
        uid: 1001,
        gid: 100,
        user: Some("svc".into()),
        group: None,
        pid: 4242,
        start_time: 99,
        boot_id: "b".into(),
        path: "/usr/bin/python3.11".into(),
        sha256: "ab".repeat(32),
        cgroup: None,
    })
}

fn k8s(pod_uid: &str) -> Evidence {
    let claims = json!({
        "iss": "https://k8s.example", "sub": "system:serviceaccount:agents:triage",
        "kubernetes.io": {
            "namespace": "agents",
            "serviceaccount": {"name": "triage", "uid": "sa-1"},
            "pod": {"name": "triage-7f", "uid": pod_uid}
        },
        "groups": ["a", "b"], "n": 3
    });
    Evidence::Oidc(OidcFacts {
        provider: "k8s".into(),
        iss: "https://k8s.example".into(),
        sub: "system:serviceaccount:agents:triage".into(),
        claims: claims.as_object().unwrap().clone(),
    })
}

#[test]
fn every_selector_of_the_attestor_must_hold() {
    let sha = "ab".repeat(32);
    assert!(unix().matches(&agent(&["unix:uid=1001", &format!("unix:sha256={sha}")])));
    assert!(unix().matches(&agent(&["unix:user=svc", "unix:path=/usr/bin/python3.11"])));
    assert!(!unix().matches(&agent(&["unix:uid=1001", "unix:gid=101"])));
    assert!(
        !unix().matches(&agent(&["unix:group=svc"])),
        "no group name"
    );
    // Selectors of other attestors are not this attestor's business...
    assert!(unix().matches(&agent(&["unix:uid=1001", "k8s:ns=agents"])));
    // ...but an agent with none of this attestor's never matches.
    assert!(!unix().matches(&agent(&["k8s:ns=agents"])));
    assert!(!unix().matches(&agent(&[])));
}

#[test]
fn oidc_and_k8s_selectors_read_nested_claims() {
    let e = k8s("pod-1");
    let p = "oidc:provider=k8s";
    assert!(e.matches(&agent(&[
        p,
        "k8s:ns=agents",
        "k8s:sa=triage",
        "k8s:pod=triage-7f"
    ])));
    assert!(e.matches(&agent(&[
        p,
        "oidc:iss=https://k8s.example",
        "oidc:sub=system:serviceaccount:agents:triage"
    ])));
    assert!(e.matches(&agent(&[
        p,
        "oidc:claim/kubernetes.io/serviceaccount/uid=sa-1"
    ])));
    assert!(e.matches(&agent(&[p, "oidc:claim.groups=b", "oidc:claim.n=3"])));
    assert!(!e.matches(&agent(&[p, "k8s:ns=other"])));
    assert!(!e.matches(&agent(&[p, "oidc:claim.missing=x"])));
    assert!(!e.matches(&agent(&["unix:uid=1001"])));
    // A dot is a nesting level: `kubernetes.io` is not a level.
    assert!(!e.matches(&agent(&[
        p,
        "oidc:claim.kubernetes.io.serviceaccount.uid=sa-1"
    ])));
}

/// Issue 12, item 11: selectors did not name their provider, so a dev
/// cluster's token with the right namespace and service account attested as
/// the prod agent; and a top-level claim literally named
/// `kubernetes.io.namespace` satisfied `k8s:ns`.
#[test]
fn oidc_selectors_are_bound_to_a_provider_and_exact_paths() {
    let prod = agent(&["oidc:provider=k8s-prod", "k8s:ns=agents", "k8s:sa=triage"]);
    let Evidence::Oidc(mut dev) = k8s("pod-1") else {
        unreachable!()
    };
    dev.provider = "k8s-dev".into();
    assert!(
        !Evidence::Oidc(dev.clone()).matches(&prod),
        "another provider"
    );
    dev.provider = "k8s-prod".into();
    assert!(Evidence::Oidc(dev).matches(&prod));
    // An agent naming no provider is never chosen by a platform token.
    assert!(!k8s("pod-1").matches(&agent(&["k8s:ns=agents", "k8s:sa=triage"])));
    // Flat claims spelled like the nested ones match nothing.
    let flat = json!({
        "iss": "https://ci.example", "sub": "x",
        "kubernetes.io.namespace": "agents",
        "kubernetes.io.serviceaccount.name": "triage",
        "kubernetes.io": {"namespace": ["other"]}
    });
    let e = Evidence::Oidc(OidcFacts {
        provider: "k8s-prod".into(),
        iss: "https://ci.example".into(),
        sub: "x".into(),
        claims: flat.as_object().unwrap().clone(),
    });
    assert!(!e.matches(&prod));
    // ...unless named exactly, as a pointer.
    assert!(e.matches(&agent(&[
        "oidc:provider=k8s-prod",
        "oidc:claim/kubernetes.io.namespace=agents"
    ])));
    assert_eq!(
        claim_path("claim/a~1b/c~0d"),
        Some(vec!["a/b".to_owned(), "c~d".to_owned()])
    );
}

#[test]
fn instance_ids_follow_the_execution() {
    let name: AgentName = "triage".parse().unwrap();
    let other: AgentName = "other".parse().unwrap();
    let id = unix().instance_id(&name);
    assert_eq!(id.as_str().len(), 24);
    assert_eq!(id, unix().instance_id(&name), "stable across refreshes");
    assert_ne!(id, unix().instance_id(&other));
    let Evidence::Unix(mut u) = unix() else {
        unreachable!()
    };
    u.start_time = 100; // pid reused by another process
    assert_ne!(id, Evidence::Unix(u).instance_id(&name));
    assert_eq!(k8s("p1").instance_id(&name), k8s("p1").instance_id(&name));
    assert_ne!(k8s("p1").instance_id(&name), k8s("p2").instance_id(&name));
}

#[test]
fn join_secrets_are_redacted() {
    let t = JoinTokenSecret::from_random([9; 32]);
    assert!(t.expose().starts_with("wjn_"));
    assert_eq!(format!("{t}"), "[redacted]");
    assert!(!format!("{t:?}").contains("0909"));
    assert_eq!(t.hash(), JoinTokenSecret::presented(t.expose()).hash());
}
