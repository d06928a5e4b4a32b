//! Task-scoped delegation: user → orchestrator → sub-agent → leaf through
//! RFC 8693 exchange, client credentials, introspection and cascading revocation.

use std::process::Command;

use crate::support::{
    AT, Broker, DELEGATION_POLICY, EXCHANGE, JWT, Options, World, audit, bin, err, exchange, form,
    identity, introspect, jwt_claims, python, repo, world,
};
use serde_json::{Value, json};

/// Three agents acting for alice in turn: orch, then sub, then leaf.
struct Chain {
    w: World,
    orch: String,
    sub: String,
    leaf: String,
    orch_id: Value,
    t1: String,
    t2: String,
    t3: String,
    c1: Value,
    c2: Value,
    c3: Value,
}

/// Hop 1: the orchestrator, for alice; hop 2: a sub-agent, narrower; hop 3:
/// the leaf. Each hop's claims are checked as it is made.
fn three_hops() -> Chain {
    let w = world(4);
    let b = &w.b;
    let alice = w.users["alice"].as_str().unwrap();
    let (orch, sub, leaf) = (identity(b, "orch"), identity(b, "sub"), identity(b, "leaf"));

    // Hop 1: the orchestrator, for alice.
    let r = exchange(
        b,
        alice,
        JWT,
        &orch,
        &[
            ("scope", "tickets:read llm:chat"),
            ("audience", "https://tickets.example"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t1 = r.json();
    assert_eq!(t1["issued_token_type"], AT);
    assert_eq!(t1["token_type"], "Bearer");
    assert_eq!(t1["scope"], "llm:chat tickets:read");
    let t1 = t1["access_token"].as_str().unwrap().to_owned();
    let c1 = jwt_claims(&t1);
    assert_eq!(c1["sub"], "user:login.test/alice");
    assert_eq!(c1["aud"], json!(["https://tickets.example"]));
    assert_eq!(c1["client_id"], "orch");
    let orch_id = jwt_claims(&orch)["sub"].clone();
    assert_eq!(c1["act"]["sub"], orch_id);
    assert!(c1["act"].get("act").is_none());
    assert!(c1.get("parent").is_none());

    // Hop 2: a sub-agent, narrower.
    let r = exchange(b, &t1, AT, &sub, &[("scope", "tickets:read")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let t2 = r.json()["access_token"].as_str().unwrap().to_owned();
    let c2 = jwt_claims(&t2);
    assert_eq!(c2["sub"], "user:login.test/alice");
    assert_eq!(c2["scope"], "tickets:read");
    assert_eq!(c2["aud"], c1["aud"], "audience inherited");
    assert_eq!(c2["act"]["sub"], jwt_claims(&sub)["sub"]);
    assert_eq!(c2["act"]["act"]["sub"], orch_id);
    assert_eq!(c2["parent"], c1["task"]);
    assert_eq!(c2["txn"], c1["txn"]);
    assert!(c2["exp"].as_i64() <= c1["exp"].as_i64());

    // Hop 3: the leaf.
    let r = exchange(b, &t2, AT, &leaf, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let t3 = r.json()["access_token"].as_str().unwrap().to_owned();
    let c3 = jwt_claims(&t3);
    assert_eq!(c3["act"]["act"]["act"]["sub"], orch_id);
    assert_eq!(c3["parent"], c2["task"]);
    Chain {
        orch,
        sub,
        leaf,
        orch_id,
        t1,
        t2,
        t3,
        c1,
        c2,
        c3,
        w,
    }
}

/// Each hop narrows and names the whole chain (checked as the chain is
/// built), and an `act` a user token carries never enters it.
#[test]
fn each_hop_narrows_and_a_forged_act_is_ignored() {
    let Chain {
        w, orch, orch_id, ..
    } = three_hops();
    let b = &w.b;
    // A forged `act` inside a user token is ignored.
    let r = exchange(
        b,
        w.users["forged_act"].as_str().unwrap(),
        JWT,
        &orch,
        &[
            ("scope", "tickets:read"),
            ("audience", "https://tickets.example"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = jwt_claims(r.json()["access_token"].as_str().unwrap());
    assert_eq!(c["act"]["sub"], orch_id);
    assert!(
        c["act"].get("act").is_none(),
        "the forged actor is not in the chain"
    );
}

#[test]
fn bad_exchanges_are_refused_clearly_and_audited() {
    let Chain {
        w,
        orch,
        sub,
        t1,
        t2,
        ..
    } = three_hops();
    let b = &w.b;
    let alice = w.users["alice"].as_str().unwrap();
    // Bad input: each a clear OAuth error, nothing issued, audited.
    let before = audit(b, Some("token.exchange")).len();
    for (r, status, code, says) in [
        (
            exchange(b, &t1, AT, &sub, &[("scope", "tickets:read tickets:write")]),
            400,
            "invalid_scope",
            "tickets:write",
        ),
        (
            exchange(
                b,
                &t1,
                AT,
                &sub,
                &[("audience", "https://payments.example")],
            ),
            400,
            "invalid_target",
            "payments.example",
        ),
        (
            exchange(b, &t1, AT, &t1, &[]),
            400,
            "invalid_grant",
            "task token cannot act",
        ),
        (
            exchange(b, &orch, JWT, &sub, &[]),
            400,
            "invalid_grant",
            "identity token cannot be a subject",
        ),
        (
            exchange(
                b,
                w.users["untrusted_issuer"].as_str().unwrap(),
                JWT,
                &orch,
                &[
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ],
            ),
            400,
            "invalid_grant",
            "not a trusted provider",
        ),
        (
            exchange(
                b,
                w.users["wrong_audience"].as_str().unwrap(),
                JWT,
                &orch,
                &[
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ],
            ),
            400,
            "invalid_grant",
            "audience",
        ),
        (
            exchange(
                b,
                w.users["expired"].as_str().unwrap(),
                JWT,
                &orch,
                &[
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ],
            ),
            400,
            "invalid_grant",
            "expired",
        ),
        (
            exchange(
                b,
                w.users["other_key"].as_str().unwrap(),
                JWT,
                &orch,
                &[
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ],
            ),
            400,
            "invalid_grant",
            "signature",
        ),
        (
            exchange(b, &t2, AT, &orch, &[]),
            400,
            "invalid_grant",
            "already in this delegation chain",
        ),
        (
            exchange(b, &t2, AT, &sub, &[]),
            400,
            "invalid_grant",
            "already in this delegation chain",
        ),
        (
            exchange(b, &t1, AT, &sub, &[("scope", "tickets:write")]),
            400,
            "invalid_scope",
            "tickets:write",
        ),
        (
            exchange(
                b,
                w.users["bob"].as_str().unwrap(),
                JWT,
                &orch,
                &[
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ],
            ),
            403,
            "access_denied",
            "policy does not allow",
        ),
        (
            exchange(
                b,
                w.users["may_act_leaf"].as_str().unwrap(),
                JWT,
                &orch,
                &[
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ],
            ),
            400,
            "invalid_grant",
            "may_act",
        ),
        (
            exchange(
                b,
                alice,
                JWT,
                &orch,
                &[("audience", "https://tickets.example")],
            ),
            400,
            "invalid_scope",
            "`scope` is required",
        ),
    ] {
        let (s, c, d) = err(&r);
        assert_eq!((s, c.as_str()), (status, code), "{d}");
        assert!(d.contains(says), "{code}: {d}");
    }
    let refusals = audit(b, Some("token.exchange"));
    assert_eq!(refusals.len(), before + 14, "each refusal is audited");
    assert!(refusals[before..].iter().all(|r| r["decision"] != "allow"));
    assert!(
        !refusals.iter().any(|r| r.to_string().contains("eyJ")),
        "no token in the trail"
    );
}

#[test]
fn introspection_shows_an_active_tokens_chain() {
    let Chain {
        w,
        orch,
        orch_id,
        t1,
        t3,
        c1,
        c3,
        ..
    } = three_hops();
    let b = &w.b;
    // Introspection: active tokens show the chain.
    let i = introspect(b, &orch, &t3);
    assert_eq!(i["active"], true);
    assert_eq!(i["act"]["act"]["act"]["sub"], orch_id);
    assert_eq!(i["task"], c3["task"]);
    assert_eq!(i["txn"], c1["txn"]);
    assert_eq!(introspect(b, &orch, "garbage"), json!({"active": false}));
    assert_eq!(
        introspect(b, &orch, &orch),
        json!({"active": false}),
        "identity tokens are not task tokens"
    );
    let anon = form(b, "/oauth2/introspect", &[("token", &t1)]);
    assert_eq!(anon.status, 401);
}

#[test]
fn revoking_a_hop_revokes_its_descendants_and_the_trace_shows_the_tree() {
    let Chain {
        w,
        orch,
        leaf,
        t1,
        t2,
        t3,
        c1,
        c2,
        c3,
        ..
    } = three_hops();
    let b = &w.b;
    // Revoking hop 2 kills hops 2 and 3 at once, not hop 1.
    let task2 = c2["task"].as_str().unwrap();
    let r = b
        .cli(&["revoke", "--task", task2, "--output", "json"])
        .json();
    assert_eq!(r["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(introspect(b, &orch, &t2), json!({"active": false}));
    assert_eq!(introspect(b, &orch, &t3), json!({"active": false}));
    assert_eq!(introspect(b, &orch, &t1)["active"], true);
    let (s, c, d) = err(&exchange(b, &t2, AT, &leaf, &[]));
    assert_eq!((s, c.as_str()), (400, "invalid_grant"));
    assert!(d.contains("revoked"), "{d}");

    // The trace shows the whole tree, the refusals and the revocation.
    let txn = c1["txn"].as_str().unwrap();
    let trace = b.cli(&["audit", "trace", txn, "--output", "json"]).json();
    let tasks: Vec<&str> = trace["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        tasks,
        vec![
            c1["task"].as_str().unwrap(),
            task2,
            c3["task"].as_str().unwrap()
        ]
    );
    assert!(trace["tasks"][1]["revoked_at"].is_string());
    assert!(trace["tasks"][0]["revoked_at"].is_null());
    let human = b.cli(&["audit", "trace", txn]).ok().to_owned();
    assert!(human.contains("for user:login.test/alice"), "{human}");
    let lines: Vec<&str> = human.lines().collect();
    let indent = |task: &str| {
        let l = lines
            .iter()
            .find(|l| l.contains(task) && l.contains("└─"))
            .unwrap();
        l.find("└─").unwrap()
    };
    assert!(indent(c1["task"].as_str().unwrap()) < indent(task2));
    assert!(indent(task2) < indent(c3["task"].as_str().unwrap()));
    assert!(human.contains("support-reads-tickets"), "{human}");
    assert!(human.contains("revoked"), "{human}");
    let by_user = b
        .cli(&[
            "audit",
            "list",
            "--user",
            "login.test/alice",
            "--event",
            "token.exchange",
            "--output",
            "json",
            "--limit",
            "1000",
        ])
        .json();
    assert!(
        by_user
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["user"] == "user:login.test/alice")
    );
    // The three exchanges that were allowed are found by their user (the
    // decided records once named a bare id, which `--user` never matched).
    let allowed = by_user
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["decision"] == "allow")
        .count();
    assert_eq!(allowed, 3, "{by_user:#}");
    let by_task = b
        .cli(&["audit", "list", "--task", task2, "--output", "json"])
        .json();
    assert!(
        by_task
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["task"] == task2)
    );
    let r = b.cli(&["audit", "trace", "txn_nope"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no transaction"), "{}", r.stderr);
}

#[test]
fn an_agent_revokes_only_its_own_task_and_revocation_survives_a_restart() {
    let Chain {
        w, orch, leaf, t1, ..
    } = three_hops();
    let b = &w.b;
    // An agent revokes its own task (RFC 7009); another agent may not.
    let other = form(
        b,
        "/oauth2/revoke",
        &[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &leaf),
            ("token", &t1),
        ],
    );
    assert_eq!(other.status, 400, "{}", other.body);
    assert_eq!(introspect(b, &orch, &t1)["active"], true);
    let own = form(
        b,
        "/oauth2/revoke",
        &[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &orch),
            ("token", &t1),
        ],
    );
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(introspect(b, &orch, &t1), json!({"active": false}));

    // Revocation survives a restart.
    let mut b2 = w.b;
    b2.stop();
    b2.restart(Options::default());
    assert_eq!(
        introspect(&b2, &identity(&b2, "orch"), &t1),
        json!({"active": false})
    );
}

#[test]
fn depth_limits_client_credentials_and_malformed_requests() {
    let w = world(2);
    let b = &w.b;
    let alice = w.users["alice"].as_str().unwrap();
    let (orch, sub, leaf) = (identity(b, "orch"), identity(b, "sub"), identity(b, "leaf"));
    let t1 = exchange(
        b,
        alice,
        JWT,
        &orch,
        &[
            ("scope", "tickets:read"),
            ("audience", "https://tickets.example"),
        ],
    )
    .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let t2 = exchange(b, &t1, AT, &sub, &[]).json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, c, d) = err(&exchange(b, &t2, AT, &leaf, &[]));
    assert_eq!((s, c.as_str()), (400, "invalid_grant"));
    assert!(d.contains("depth 3 is over the limit of 2"), "{d}");

    // The agent for itself: no user, no act.
    let cc = |assertion: &str, extra: &[(&str, &str)]| {
        let mut f = vec![
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ];
        f.extend_from_slice(extra);
        form(b, "/oauth2/token", &f)
    };
    let r = cc(
        &orch,
        &[
            ("scope", "tickets:read"),
            ("resource", "https://tickets.example"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = jwt_claims(r.json()["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], jwt_claims(&orch)["sub"]);
    assert!(c.get("act").is_none());
    let (s, c, _) = err(&cc(
        &sub,
        &[
            ("scope", "tickets:read"),
            ("resource", "https://tickets.example"),
        ],
    ));
    assert_eq!((s, c.as_str()), (403, "access_denied"));
    let (s, c, _) = err(&cc("not-a-jwt", &[("scope", "x"), ("resource", "y")]));
    assert_eq!((s, c.as_str()), (401, "invalid_client"));

    // Malformed requests.
    let many: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
    let many = many.join(" ");
    let (s, c, d) = err(&exchange(b, &t1, AT, &sub, &[("scope", &many)]));
    assert_eq!((s, c.as_str()), (400, "invalid_scope"), "{d}");
    let (s, c, _) = err(&form(b, "/oauth2/token", &[("grant_type", "password")]));
    assert_eq!((s, c.as_str()), (400, "unsupported_grant_type"));
    let (s, c, d) = err(&form(b, "/oauth2/token", &[("grant_type", EXCHANGE)]));
    assert_eq!((s, c.as_str()), (400, "invalid_request"));
    assert!(d.contains("subject_token"), "{d}");
    let (s, c, d) = err(&form(
        b,
        "/oauth2/token",
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &t1),
            ("subject_token_type", AT),
        ],
    ));
    assert_eq!((s, c.as_str()), (400, "invalid_request"));
    assert!(d.contains("actor_token"), "{d}");
    let big = "a".repeat(1024 * 1024);
    let r = form(
        b,
        "/oauth2/token",
        &[("grant_type", "client_credentials"), ("x", &big)],
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "invalid_request");
    let r = b.http(
        "POST",
        "/oauth2/token",
        &[("content-type", "application/json")],
        Some("{}"),
    );
    assert_eq!(r.status, 400);
    let recs = audit(b, Some("token.request"));
    assert!(recs.len() >= 3, "malformed requests are audited: {recs:?}");
}

#[test]
fn authlib_exchanges_and_pyjwt_reads_the_act_chain() {
    let w = world(4);
    let b = &w.b;
    let orch = identity(b, "orch");
    let out = Command::new(python())
        .arg(repo().join("tests/interop/oauth_exchange.py"))
        .args([
            b.issuer.as_str(),
            w.users["alice"].as_str().unwrap(),
            &orch,
            "tickets:read",
            "https://tickets.example",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the generic OAuth client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["typ"], "at+jwt");
    assert_eq!(v["token_response"]["token_type"], "Bearer");
    assert_eq!(v["token_response"]["issued_token_type"], AT);
    assert_eq!(v["claims"]["sub"], "user:login.test/alice");
    assert_eq!(v["chain"], json!([jwt_claims(&orch)["sub"]]));
}

#[test]
fn the_development_user_issuer_is_off_unless_asked_for() {
    let off = crate::support::broker();
    let r = off.cli(&["dev", "user-token", "alice"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("warrant serve --dev"), "{}", r.stderr);

    let b = Broker::start_with(
        bin(),
        Options {
            args: vec!["--dev".into()],
            ..Default::default()
        },
    );
    assert!(b.logs().contains("DEVELOPMENT MODE"));
    // The development issuer's users and groups are `dev/...`.
    std::fs::write(
        b.data_dir.join("policies/delegation.cedar"),
        DELEGATION_POLICY.replace("login.test/support", "dev/support"),
    )
    .unwrap();
    b.cli(&["policy", "reload"]).ok();
    b.cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    let user = b
        .cli(&["dev", "user-token", "alice", "--groups", "support,ops"])
        .ok()
        .trim()
        .to_owned();
    let c = jwt_claims(&user);
    assert_eq!(c["iss"], format!("{}/dev", b.issuer));
    assert_eq!(c["groups"], json!(["support", "ops"]));
    let orch = identity(&b, "orch");
    let r = exchange(
        &b,
        &user,
        JWT,
        &orch,
        &[
            ("scope", "tickets:read"),
            ("audience", "https://tickets.example"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        jwt_claims(r.json()["access_token"].as_str().unwrap())["sub"],
        "user:dev/alice"
    );
    let minted = audit(&b, Some("admin.dev.user-token"));
    assert_eq!(minted.len(), 1);
    assert!(!minted[0].to_string().contains(&user));
}

/// Identity and task tokens are verified once and remembered by their bytes;
/// what happens to the instance or agent afterwards still counts on the very
/// next use of the same token.
#[test]
fn remembered_tokens_still_meet_revocation_and_disablement() {
    let w = world(4);
    let b = &w.b;
    let cc = |assertion: &str| {
        form(
            b,
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", "tickets:read"),
                ("resource", "https://tickets.example"),
            ],
        )
    };
    let orch = identity(b, "orch");
    let sub_id = jwt_claims(&orch)["sub"].as_str().unwrap().to_owned();
    let instance = sub_id.rsplit('/').next().unwrap().to_owned();
    // Used twice, so the second use is served from memory.
    for _ in 0..2 {
        assert_eq!(cc(&orch).status, 200);
    }
    let t = cc(&orch).json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        assert_eq!(introspect(b, &orch, &t)["active"], true);
    }

    // The instance is revoked: its identity token and its task die at once.
    b.cli(&["revoke", "--instance", &instance]).ok();
    let (s, c, d) = err(&cc(&orch));
    assert_eq!((s, c.as_str()), (401, "invalid_client"), "{d}");
    assert!(d.contains("revoked"), "{d}");
    let other = identity(b, "orch");
    assert_eq!(introspect(b, &other, &t), json!({"active": false}));

    // Another instance of the same agent is unaffected, until the agent is
    // disabled; enabling it again lifts the instance block too.
    assert_eq!(cc(&other).status, 200);
    b.cli(&["agent", "disable", "orch"]).ok();
    let (s, c, d) = err(&cc(&other));
    assert_eq!((s, c.as_str()), (401, "invalid_client"), "{d}");
    assert!(d.contains("disabled"), "{d}");
    b.cli(&["agent", "enable", "orch"]).ok();
    assert_eq!(cc(&other).status, 200);
    assert_eq!(cc(&orch).status, 200, "enable lifts the instance block");

    // Revoking the agent revokes its tasks and disables it.
    let t = cc(&other).json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    b.cli(&["revoke", "--agent", "orch"]).ok();
    assert_eq!(
        introspect(b, &identity(b, "sub"), &t),
        json!({"active": false})
    );
    let (s, c, _) = err(&cc(&other));
    assert_eq!((s, c.as_str()), (401, "invalid_client"));
}

/// The user's groups reach policy at every hop, not only the first: a
/// sub-delegation is decided with the groups the user issuer asserted when
/// the chain began.
#[test]
fn groups_reach_policy_at_every_depth() {
    let w = world(4);
    let b = &w.b;
    std::fs::write(
        b.data_dir.join("policies/delegation.cedar"),
        r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("first-hop")
permit(principal, action == Action::"token:exchange", resource) when { context.depth == 1 };
@id("support-delegates")
permit(principal, action == Action::"token:exchange", resource)
when { context.depth >= 2 && context.groups.contains("login.test/support") };
"#,
    )
    .unwrap();
    b.cli(&["policy", "reload"]).ok();
    let (orch, sub) = (identity(b, "orch"), identity(b, "sub"));
    let hop1 = |user: &str| {
        let r = exchange(
            b,
            w.users[user].as_str().unwrap(),
            JWT,
            &orch,
            &[
                ("scope", "tickets:read"),
                ("audience", "https://tickets.example"),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    };
    // alice is in `support`: her sub-task may be delegated.
    let t1 = hop1("alice");
    let r = exchange(b, &t1, AT, &sub, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let t2 = r.json()["access_token"].as_str().unwrap().to_owned();
    // And again from the child, served from the remembered token.
    let leaf = identity(b, "leaf");
    for _ in 0..2 {
        assert_eq!(exchange(b, &t2, AT, &leaf, &[]).status, 200);
    }
    // bob is in `sales` only: the first hop is allowed, the second is not.
    let t1b = hop1("bob");
    let (s, c, d) = err(&exchange(b, &t1b, AT, &sub, &[]));
    assert_eq!((s, c.as_str()), (403, "access_denied"), "{d}");

    // The trace keeps the groups each task was decided with.
    let txn = jwt_claims(&t1)["txn"].as_str().unwrap().to_owned();
    let trace = b.cli(&["audit", "trace", &txn, "--output", "json"]).json();
    for t in trace["tasks"].as_array().unwrap() {
        assert_eq!(t["groups"], json!(["login.test/support"]), "{t}");
    }
}
