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

#[test]
fn cgroup_paths_name_system_units_and_containers_only() {
    use super::{container_of, systemd_unit_of};
    let id = "0123456789abcdef".repeat(4);
    assert_eq!(
        systemd_unit_of("/system.slice/triage.service"),
        Some("triage.service")
    );
    assert_eq!(
        systemd_unit_of("/system.slice/triage.service/worker"),
        Some("triage.service")
    );
    // A user's own units are delegated to that user: they prove nothing.
    assert_eq!(
        systemd_unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/triage.service"),
        None
    );
    assert_eq!(systemd_unit_of("/system.slice"), None);
    for path in [
        format!("/system.slice/docker-{id}.scope"),
        format!("/docker/{id}"),
        format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
        format!("/machine.slice/libpod-{id}.scope"),
        format!("/crio-{id}.scope"),
    ] {
        assert_eq!(container_of(&path), Some(id.as_str()), "{path}");
    }
    assert_eq!(container_of("/system.slice/docker-abc.scope"), None);
    // A cgroup made inside a container is not another container, nor is a
    // bare id outside a runtime's layout (attacker round).
    let other = "fedcba9876543210".repeat(4);
    assert_eq!(
        container_of(&format!("/svc/docker-{id}.scope/{other}")),
        None
    );
    assert_eq!(
        container_of(&format!(
            "/system.slice/docker-{id}.scope/docker-{other}.scope"
        )),
        None
    );
    assert_eq!(container_of(&format!("/anywhere/{id}")), None);
    assert_eq!(
        container_of(&format!("/kubepods/burstable/pod1234/{id}")),
        Some(id.as_str())
    );
    assert_eq!(
        container_of(&format!("/docker/{}", id.to_uppercase())),
        None
    );
}

#[test]
fn an_interpreter_path_alone_is_warned_about() {
    let set = |s: &[&str]| SelectorSet::parse(s).unwrap();
    for exe in [
        "/usr/bin/python3.11",
        "/usr/bin/python3",
        "/usr/bin/python3.12-dbg",
        "/usr/bin/ipython3",
        "/usr/local/bin/node",
        "/usr/bin/nodejs",
        "/bin/bash",
        "/bin/sh",
        "/usr/bin/busybox",
        "/usr/bin/tclsh8.6",
        "/usr/lib/R/bin/exec/R",
        "/usr/bin/luajit",
        "/usr/bin/vim.basic",
        "/usr/sbin/php-fpm8.2",
        "/usr/bin/curl",
        "/usr/local/bin/warrant",
        "/usr/libexec/platform-python",
        "/usr/bin/Python3",
        "/usr/bin/socat",
        "/usr/bin/nc.openbsd",
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/bin/qemu-x86_64",
    ] {
        let w = set(&["unix:uid=1000", &format!("unix:path={exe}")]).interpreter_warning();
        assert!(w.is_some_and(|w| w.contains(exe)), "{exe}");
    }
    for exe in [
        "/opt/agent/bin/triage",
        "/usr/bin/shellcheck",
        "/usr/bin/Rtriage",
    ] {
        assert!(
            set(&["unix:uid=1000", &format!("unix:path={exe}")])
                .interpreter_warning()
                .is_none(),
            "{exe}"
        );
    }
    assert!(
        set(&[
            "unix:uid=1000",
            "unix:path=/usr/bin/python3.11",
            "unix:systemd_unit=triage.service"
        ])
        .interpreter_warning()
        .is_none()
    );
    // Malformed values of the new keys are refused with what to write.
    for bad in [
        "unix:cgroup=relative/path",
        "unix:cgroup=/",
        "unix:cgroup=/a//b",
        "unix:cgroup=/a/",
        "unix:cgroup=/a/../b",
        "unix:systemd_unit=triage",
        "unix:systemd_unit=a b.service",
        "unix:container=abc",
    ] {
        assert!(bad.parse::<super::Selector>().is_err(), "{bad}");
    }
    let c: super::Selector = format!("unix:container={}", "AB".repeat(32))
        .parse()
        .unwrap();
    assert_eq!(c.value(), "ab".repeat(32));
}
