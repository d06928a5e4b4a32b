use std::net::IpAddr;

use warrant_core::agent::TrustLevel;
use warrant_core::decision::{
    Action, AgentFacts, Context, DecisionRequest, Effect, HttpFacts, Principal, Resource, UserRef,
};
use warrant_core::time::Timestamp;

use super::*;

pub(super) fn file(name: &str, text: &str) -> PolicyFile {
    PolicyFile {
        name: name.into(),
        text: text.into(),
    }
}

pub(super) fn request(agent: &str, action: Action, resource: Resource) -> DecisionRequest {
    DecisionRequest {
        principal: Principal {
            agent: AgentFacts {
                name: agent.into(),
                owner: "team".into(),
                env: "prod".into(),
                trust: TrustLevel::Medium,
                purpose: String::new(),
            },
            instance: format!("{agent}-i1"),
            attestor: "unix".into(),
        },
        action,
        resource,
        context: Context::at(Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").unwrap()),
    }
}

fn aud(s: &str) -> Resource {
    Resource::Audience(s.into())
}

#[test]
fn schema_parses_and_names_every_action() {
    let text = schema_text();
    for a in Action::ALL {
        assert!(text.contains(&format!("action \"{}\"", a.as_str())), "{a}");
    }
    let _ = schema::schema();
}

#[test]
fn empty_set_denies_by_default() {
    let p = Policies::compile(&[]).unwrap();
    let d = p.decide(&request("triage", Action::TokenSelf, aud("x")));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.policies.is_empty());
    assert!(d.errors.is_empty());
}

#[test]
fn ids_are_annotations_or_file_and_line() {
    let p = Policies::compile(&[file(
        "a.cedar",
        "// leading comment\n@id(\"triage-self\")\npermit(principal in Agent::\"triage\", action == Action::\"token:self\", resource);\n\npermit(principal in Agent::\"other\", action, resource);\n",
    )])
    .unwrap();
    assert_eq!(
        p.ids().collect::<Vec<_>>(),
        vec!["triage-self", "a.cedar:5"]
    );
    let d = p.decide(&request("triage", Action::TokenSelf, aud("x")));
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(d.policies, vec!["triage-self"]);
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let err = Policies::compile(&[
        file(
            "ok.cedar",
            "permit(principal, action, resource) when { false };\n",
        ),
        file(
            "bad.cedar",
            "// one\npermit(principal, action, resource)\nwhen { principal.trust == };\n",
        ),
    ])
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    let p = &err.0[0];
    assert_eq!((p.file.as_str(), p.line), ("bad.cedar", 3), "{err}");
    assert!(p.col > 1);
    assert!(err.to_string().starts_with("bad.cedar:3:"), "{err}");
}

#[test]
fn a_schema_violation_names_file_line_and_reason() {
    let err = Policies::compile(&[file(
        "typo.cedar",
        "permit(principal, action == Action::\"token:exchange\", resource)\nwhen {\n  context.depht < 2\n};\n",
    )])
    .unwrap_err();
    let p = &err.0[0];
    assert_eq!((p.file.as_str(), p.line), ("typo.cedar", 3), "{err}");
    assert!(p.message.contains("depht"), "{err}");

    let err = Policies::compile(&[file(
        "act.cedar",
        "permit(principal, action == Action::\"token:steal\", resource);\n",
    )])
    .unwrap_err();
    assert!(err.to_string().contains("token:steal"), "{err}");
    assert!(err.to_string().starts_with("act.cedar:1:"), "{err}");
}

#[test]
fn duplicate_ids_templates_and_bad_annotations_are_refused() {
    let e = Policies::compile(&[
        file(
            "a.cedar",
            "@id(\"x\")\npermit(principal, action, resource);\n",
        ),
        file(
            "b.cedar",
            "\n@id(\"x\")\nforbid(principal, action, resource);\n",
        ),
    ])
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("b.cedar:2:1: policy id `x` is already used by the policy at a.cedar:1"),
        "{e}"
    );

    let e = Policies::compile(&[file(
        "t.cedar",
        "permit(principal == ?principal, action, resource);\n",
    )])
    .unwrap_err();
    assert!(e.to_string().contains("template"), "{e}");

    let e = Policies::compile(&[file(
        "ap.cedar",
        "@approval(\"maybe\")\npermit(principal, action, resource);\n",
    )])
    .unwrap_err();
    assert!(e.to_string().contains("@approval(\"required\")"), "{e}");
    let e = Policies::compile(&[file(
        "ap.cedar",
        "@approval(\"required\")\nforbid(principal, action, resource);\n",
    )])
    .unwrap_err();
    assert!(
        e.to_string().contains("only makes sense on a permit"),
        "{e}"
    );
}

#[test]
fn forbid_overrides_permit() {
    let p = Policies::compile(&[file(
        "p.cedar",
        "@id(\"allow-all\") permit(principal, action, resource);\n@id(\"no-low-trust-prod\") forbid(principal, action, resource) when { principal.trust == \"medium\" && context.env == \"prod\" };\n",
    )])
    .unwrap();
    let d = p.decide(&request("triage", Action::TokenSelf, aud("x")));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.policies, vec!["no-low-trust-prod"]);
}

#[test]
fn approval_required_only_when_every_applying_permit_asks() {
    let src = "@id(\"needs\") @approval(\"required\") permit(principal, action == Action::\"token:exchange\", resource);\n@id(\"plain\") permit(principal, action == Action::\"token:exchange\", resource == Audience::\"open\");\n";
    let p = Policies::compile(&[file("p.cedar", src)]).unwrap();
    let d = p.decide(&request("a", Action::TokenExchange, aud("payments")));
    assert_eq!(d.effect, Effect::ApprovalRequired);
    assert_eq!(d.policies, vec!["needs"]);
    let d = p.decide(&request("a", Action::TokenExchange, aud("open")));
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(d.policies, vec!["needs", "plain"]);
    assert_eq!(d.approval, None);
}

#[test]
fn approval_terms_are_the_strictest_of_the_permits_that_ask() {
    let src = "@id(\"a\") @approval(\"required\") @approval_ttl(\"5m\") permit(principal, action == Action::\"token:exchange\", resource);\n@id(\"b\") @approval(\"required\") @approval_role(\"admin\") @approval_ttl(\"1h\") permit(principal, action == Action::\"token:exchange\", resource == Audience::\"pay\");\n";
    let p = Policies::compile(&[file("p.cedar", src)]).unwrap();
    let t = p
        .decide(&request("a", Action::TokenExchange, aud("pay")))
        .approval
        .unwrap();
    assert_eq!((t.role.as_str(), t.ttl.as_secs()), ("admin", 300));
    let t = p
        .decide(&request("a", Action::TokenExchange, aud("other")))
        .approval
        .unwrap();
    assert_eq!((t.role.as_str(), t.ttl.as_secs()), ("approver", 300));
    for bad in [
        "@approval_role(\"admin\") permit(principal, action, resource);",
        "@approval(\"required\") @approval_role(\"root\") permit(principal, action, resource);",
        "@approval(\"required\") @approval_ttl(\"2s\") permit(principal, action, resource);",
        "@approval(\"required\") @approval_ttl(\"forever\") permit(principal, action, resource);",
    ] {
        let e = Policies::compile(&[file("p.cedar", bad)]).unwrap_err();
        assert!(e.to_string().contains("approval"), "{bad}: {e}");
    }
}

#[test]
fn context_keys_reach_policies() {
    let src = r#"
@id("support-hours")
permit(principal in Agent::"triage", action == Action::"token:exchange", resource == Audience::"tickets")
when {
  context has user && context.user in Group::"support" && context.groups.contains("support") &&
  context.scopes.contains("tickets:read") && context.hour >= 9 && context.hour < 17 &&
  context.weekday >= 1 && context.weekday <= 5 && context.depth <= 1 && context.chain.contains("triage") &&
  context has source_ip && context.source_ip.isLoopback() && context.attestor == "unix"
};
"#;
    let p = Policies::compile(&[file("p.cedar", src)]).unwrap();
    let mut r = request("triage", Action::TokenExchange, aud("tickets"));
    r.context.user = Some(UserRef {
        id: "alice".into(),
        groups: vec!["support".into()],
    });
    r.context.scopes = vec!["tickets:read".into()];
    r.context.chain = vec!["triage".into()];
    r.context.depth = 1;
    r.context.source_ip = Some("127.0.0.1".parse::<IpAddr>().unwrap());
    entities::conforms(&r, &Default::default()).unwrap();
    assert_eq!(p.decide(&r).effect, Effect::Allow);

    let mut weekend = r.clone();
    weekend.context.time = Timestamp::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
    assert_eq!(p.decide(&weekend).effect, Effect::Deny);

    let mut outsider = r.clone();
    outsider.context.user = Some(UserRef {
        id: "mallory".into(),
        groups: vec!["sales".into()],
    });
    assert_eq!(p.decide(&outsider).effect, Effect::Deny);
}

#[test]
fn only_the_context_keys_policies_read_are_built_and_nothing_else_changes() {
    use entities::Reads;
    let reads = |src: &str| Policies::compile(&[file("p.cedar", src)]).unwrap().reads;
    let scoped =
        "permit(principal, action, resource) when { context.scopes.contains(\"a:read\") };";
    assert_ne!(reads(scoped), Reads::ALL);
    assert_eq!(reads(scoped), Reads::only(&["scopes"]));
    assert_eq!(
        reads(
            r#"permit(principal, action, resource) when { context has task && context has user && context.user in Group::"g" };"#
        ),
        Reads::only(&["task", "user"])
    );
    // `has` with a path (valid Cedar, though warrant's schema has no nested
    // record for it to apply to) names its first key.
    let parsed: cedar_policy::Policy =
        "permit(principal, action, resource) when { context has depth.x.y };"
            .parse()
            .unwrap();
    let ast: &cedar_policy_core::ast::Policy = parsed.as_ref();
    assert_eq!(
        Reads::of(ast.non_scope_constraints()),
        Reads::only(&["depth"])
    );
    // Entity attributes: only those some condition names, on any entity.
    let trust = Policies::compile(&[file(
        "p.cedar",
        r#"permit(principal, action, resource) when { principal.trust == "high" };"#,
    )])
    .unwrap()
    .reads;
    assert!(trust.reads_attr("trust"));
    assert!(!trust.reads_attr("owner") && !trust.reads_attr("name"));
    assert!(Reads::ALL.reads_attr("owner"));
    // `context` used as a whole reaches every key: all are built.
    for whole in [
        r#"permit(principal, action, resource) when { {"c": context}.c has task };"#,
        r#"permit(principal, action, resource) when { [context].contains(context) };"#,
        r#"permit(principal, action, resource) unless { context == context };"#,
    ] {
        assert_eq!(reads(whole), Reads::ALL, "{whole}");
    }

    // Decisions on the keys read equal plain Cedar's over every key,
    // present or absent, read directly or through the whole context.
    let src = r#"
@id("has-task") permit(principal, action == Action::"token:self", resource == Audience::"a")
  when { context has task && context.task == "t1" };
@id("no-txn") forbid(principal, action == Action::"token:self", resource == Audience::"a")
  when { context has txn };
@id("whole") permit(principal, action == Action::"token:exchange", resource == Audience::"b")
  when { {"c": context}.c has task && {"c": context}.c.scope_verbs.contains("write") };
"#;
    let p = Policies::compile(&[file("p.cedar", src)]).unwrap();
    assert_eq!(p.reads, Reads::ALL);
    let narrow =
        Policies::compile(&[file("p.cedar", &src[..src.find("@id(\"whole\")").unwrap()])]).unwrap();
    assert_ne!(narrow.reads, Reads::ALL);
    for (task, txn, scopes, action, audience, want) in [
        (
            Some("t1"),
            None,
            vec![],
            Action::TokenSelf,
            "a",
            Effect::Allow,
        ),
        (
            Some("t2"),
            None,
            vec![],
            Action::TokenSelf,
            "a",
            Effect::Deny,
        ),
        (None, None, vec![], Action::TokenSelf, "a", Effect::Deny),
        (
            Some("t1"),
            Some("x"),
            vec![],
            Action::TokenSelf,
            "a",
            Effect::Deny,
        ),
        (
            Some("t1"),
            None,
            vec!["files:write"],
            Action::TokenExchange,
            "b",
            Effect::Allow,
        ),
        (
            Some("t1"),
            None,
            vec!["files:read"],
            Action::TokenExchange,
            "b",
            Effect::Deny,
        ),
        (
            None,
            None,
            vec!["files:write"],
            Action::TokenExchange,
            "b",
            Effect::Deny,
        ),
    ] {
        let mut r = request("triage", action, aud(audience));
        r.context.task = task.map(str::to_owned);
        r.context.txn = txn.map(str::to_owned);
        r.context.scopes = scopes.into_iter().map(str::to_owned).collect();
        let d = p.decide(&r);
        assert_eq!(d.effect, want, "{r:?}");
        assert_eq!(d, p.decide_unindexed(&r));
        if action == Action::TokenSelf {
            assert_eq!(narrow.decide(&r), narrow.decide_unindexed(&r));
            assert_eq!(narrow.decide(&r).effect, want, "{r:?}");
        }
    }
}

#[test]
fn http_and_tool_resources() {
    let src = r#"
@id("openai-chat") permit(principal, action == Action::"http:request", resource == Route::"openai")
when { context.method == "POST" && context.path like "/v1/chat/*" };
@id("gh-tools") permit(principal, action == Action::"mcp:call_tool", resource in McpServer::"github")
unless { resource.name == "delete_repository" };
"#;
    let known = tools(&[
        ("github/create_issue", serde_json::json!({})),
        ("github/delete_repository", serde_json::json!({})),
    ]);
    let p =
        Policies::compile_for_tools(&[file("p.cedar", src)], &known, ToolProblems::Refuse).unwrap();
    let mut r = request("a", Action::HttpRequest, Resource::Route("openai".into()));
    r.context.http = Some(HttpFacts {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        host: "api.openai.com".into(),
    });
    entities::conforms(&r, &Default::default()).unwrap();
    assert_eq!(p.decide(&r).effect, Effect::Allow);

    let tool = |t: &str| {
        request(
            "a",
            Action::McpCallTool,
            Resource::Tool {
                server: "github".into(),
                tool: t.into(),
            },
        )
    };
    entities::conforms(&tool("x"), &Default::default()).unwrap();
    assert_eq!(p.decide(&tool("create_issue")).effect, Effect::Allow);
    assert_eq!(p.decide(&tool("delete_repository")).effect, Effect::Deny);

    // An http:request decision without HTTP facts is a deny with a clear error.
    let bare = request("a", Action::HttpRequest, Resource::Route("openai".into()));
    let d = p.decide(&bare);
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.errors[0].contains("method, path and host"),
        "{:?}",
        d.errors
    );

    // A resource of the wrong type for the action is a deny, not a panic.
    let wrong = request("a", Action::McpCallTool, aud("x"));
    assert!(p.decide(&wrong).errors[0].contains("applies to Tool resources"));
}

#[test]
fn an_evaluation_error_denies_even_if_a_permit_applies() {
    // Overflow when anomaly_score > 0: the forbid errors, and warrant treats any
    // error as deny rather than skipping the forbid as plain Cedar would.
    let src = "@id(\"ok\") permit(principal, action, resource);\n@id(\"boom\") forbid(principal, action, resource) when { context.anomaly_score + 9223372036854775807 < 0 };\n";
    let p = Policies::compile(&[file("p.cedar", src)]).unwrap();
    let mut r = request("a", Action::TokenSelf, aud("x"));
    assert_eq!(p.decide(&r).effect, Effect::Allow);
    r.context.anomaly_score = 5;
    let d = p.decide(&r);
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.errors[0].contains("boom"), "{:?}", d.errors);
    assert_eq!(d, p.decide_unindexed(&r));
}

/// A small deterministic generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

const AGENTS: [&str; 4] = ["a0", "a1", "a2", "a3"];
const SERVERS: [&str; 2] = ["s0", "s1"];
const TOOLS: [&str; 3] = ["t0", "t1", "t2"];
const AUDS: [&str; 3] = ["x0", "x1", "x2"];

fn random_policy(rng: &mut Rng, i: usize, whole: bool) -> String {
    let effect = if rng.below(4) == 0 {
        "forbid"
    } else {
        "permit"
    };
    let action_choice = rng.below(4);
    let (action, resource_kind) = match action_choice {
        0 => ("action".to_owned(), rng.below(2)),
        1 => ("action == Action::\"mcp:call_tool\"".to_owned(), 1),
        2 => (
            "action in [Action::\"token:self\", Action::\"token:exchange\"]".to_owned(),
            0,
        ),
        _ => ("action == Action::\"token:self\"".to_owned(), 0),
    };
    let principal = match rng.below(6) {
        0 => "principal".to_owned(),
        1 => format!("principal in Agent::\"{}\"", rng.pick(&AGENTS)),
        2 => format!(
            "principal == Instance::\"{}-i{}\"",
            rng.pick(&AGENTS),
            rng.below(2)
        ),
        3 => format!("principal is Instance in Agent::\"{}\"", rng.pick(&AGENTS)),
        4 => "principal is Instance".to_owned(),
        _ => format!("principal in Instance::\"{}-i0\"", rng.pick(&AGENTS)),
    };
    let resource = if action_choice == 0 {
        "resource".to_owned()
    } else if resource_kind == 1 {
        match rng.below(5) {
            0 => "resource".to_owned(),
            1 => format!("resource in McpServer::\"{}\"", rng.pick(&SERVERS)),
            2 => format!(
                "resource == Tool::\"{}/{}\"",
                rng.pick(&SERVERS),
                rng.pick(&TOOLS)
            ),
            3 => format!("resource is Tool in McpServer::\"{}\"", rng.pick(&SERVERS)),
            _ => "resource is Tool".to_owned(),
        }
    } else {
        match rng.below(3) {
            0 => "resource".to_owned(),
            1 => format!("resource == Audience::\"{}\"", rng.pick(&AUDS)),
            _ => "resource is Audience".to_owned(),
        }
    };
    let when = match rng.below(if whole { 9 } else { 8 }) {
        0 => String::new(),
        6 => " when { context has task && context.task == \"t1\" }".to_owned(),
        7 => " unless { context has txn }".to_owned(),
        8 => " when { {\"c\": context}.c has task }".to_owned(),
        1 => " when { context.depth < 2 }".to_owned(),
        2 => " when { principal.trust == \"high\" }".to_owned(),
        3 => " when { context.scopes.contains(\"s1\") }".to_owned(),
        4 => " when { context.anomaly_score + 9223372036854775800 > 0 }".to_owned(),
        _ => " unless { context.hour < 12 }".to_owned(),
    };
    let approval = if effect == "permit" && rng.below(8) == 0 {
        "@approval(\"required\") "
    } else {
        ""
    };
    format!("@id(\"p{i}\") {approval}{effect}({principal}, {action}, {resource}){when};\n")
}

fn random_request(rng: &mut Rng) -> DecisionRequest {
    let agent = rng.pick(&AGENTS);
    let (action, resource) = match rng.below(3) {
        0 => (
            Action::McpCallTool,
            Resource::Tool {
                server: rng.pick(&SERVERS).to_string(),
                tool: rng.pick(&TOOLS).to_string(),
            },
        ),
        1 => (Action::TokenSelf, aud(rng.pick(&AUDS))),
        _ => (Action::TokenExchange, aud(rng.pick(&AUDS))),
    };
    let mut r = request(agent, action, resource);
    r.principal.instance = format!("{agent}-i{}", rng.below(2));
    r.principal.agent.trust = rng.pick(&[TrustLevel::Low, TrustLevel::High]);
    r.context.depth = rng.below(4) as u32;
    r.context.anomaly_score = rng.below(12) as i64;
    r.context.scopes = if rng.below(2) == 0 {
        vec!["s1".into()]
    } else {
        vec![]
    };
    r.context.time = Timestamp::from_millis(rng.below(86_400) as i64 * 1000);
    r.context.task = [None, Some("t1"), Some("t2")][rng.below(3)].map(str::to_owned);
    r.context.txn = (rng.below(3) == 0).then(|| "x1".to_owned());
    r
}

#[test]
fn indexed_decisions_equal_plain_cedar_on_random_requests() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut effects = std::collections::HashMap::new();
    for round in 0..40 {
        let n = 1 + rng.below(60);
        // One round in four may use `context` as a whole (then every key
        // is built); the others build only the keys their policies read.
        let whole = round % 4 == 0;
        let text: String = (0..n).map(|i| random_policy(&mut rng, i, whole)).collect();
        let mut known = ToolArguments::default();
        for server in SERVERS {
            for tool in TOOLS {
                known.insert(server, tool, ArgumentSchema::empty());
            }
        }
        let p =
            Policies::compile_for_tools(&[file("r.cedar", &text)], &known, ToolProblems::Refuse)
                .unwrap_or_else(|e| panic!("round {round}: {e}\n{text}"));
        for _ in 0..200 {
            let r = random_request(&mut rng);
            let fast = p.decide(&r);
            let plain = p.decide_unindexed(&r);
            assert_eq!(fast, plain, "round {round}\n{text}\n{r:?}");
            *effects
                .entry(format!("{:?}/{}", fast.effect, !fast.errors.is_empty()))
                .or_insert(0) += 1;
        }
    }
    // The generator must exercise every outcome, or the comparison proves little.
    for k in [
        "Allow/false",
        "Deny/false",
        "Deny/true",
        "ApprovalRequired/false",
    ] {
        assert!(
            effects.get(k).copied().unwrap_or(0) > 50,
            "{k} too rare: {effects:?}"
        );
    }
}

fn tools(list: &[(&str, serde_json::Value)]) -> ToolArguments {
    let mut t = ToolArguments::default();
    for (id, schema) in list {
        let (server, tool) = id.split_once('/').unwrap();
        t.insert(server, tool, ArgumentSchema::from_input_schema(schema));
    }
    t
}

fn call_of(agent: &str, id: &str, a: serde_json::Value) -> DecisionRequest {
    let (server, tool) = id.split_once('/').unwrap();
    let mut r = request(
        agent,
        Action::McpCallTool,
        Resource::Tool {
            server: server.into(),
            tool: tool.into(),
        },
    );
    r.context.arguments = a.as_object().cloned();
    r
}

/// `context.arguments` is typed from the pinned tools' input schemas, so a
/// policy can condition a tool call on its arguments.
#[test]
fn tool_calls_are_decided_on_their_arguments() {
    let known = tools(&[
        (
            "files/read_file",
            serde_json::json!({"type": "object", "properties": {"path": {"type": "string"}, "max_bytes": {"type": "integer"}}}),
        ),
        (
            "files/search",
            serde_json::json!({"properties": {"query": {"type": "string"}, "labels": {"type": "array", "items": {"type": "string"}}}}),
        ),
    ]);
    let text = r#"
@id("reports-only")
permit(principal, action == Action::"mcp:call_tool", resource == Tool::"files/read_file")
when { context.arguments has path && context.arguments.path like "/srv/reports/*" };
@id("no-big-reads")
forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"files/read_file")
when { context.arguments has max_bytes && context.arguments.max_bytes > 1000000 };
@id("search")
permit(principal, action == Action::"mcp:call_tool", resource == Tool::"files/search");
@id("no-secret-labels")
forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"files/search")
when { context.arguments has labels && context.arguments.labels.contains("secret") };
"#;
    // An unguarded reference needs a `has` guard: every argument is optional.
    let unguarded = r#"permit(principal, action == Action::"mcp:call_tool", resource == Tool::"files/read_file")
when { context.arguments.path like "/srv/*" };"#;
    let e =
        Policies::compile_for_tools(&[file("u.cedar", unguarded)], &known, ToolProblems::Refuse)
            .unwrap_err()
            .to_string();
    assert!(e.contains("has") && e.contains("files/read_file"), "{e}");
    // Before any tool is known, a policy reading arguments waits to be
    // checked, and calls of tools the set does not know are refused.
    let blind = Policies::compile(&[file("t.cedar", text)]).unwrap();
    assert!(
        blind.warnings().to_string().contains("not yet checked"),
        "{}",
        blind.warnings()
    );
    let probe = call_of(
        "a",
        "files/read_file",
        serde_json::json!({"path": "/srv/reports/q3.csv"}),
    );
    let d = blind.decide(&probe);
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.errors[0].contains("no approved definition"),
        "{:?}",
        d.errors
    );
    assert!(schema_text_with(known.get("files/read_file").unwrap()).contains("\"path\"?: String"));
    let p = Policies::compile_for_tools(&[file("t.cedar", text)], &known, ToolProblems::Refuse)
        .unwrap();
    assert!(p.warnings().0.is_empty(), "{}", p.warnings());
    let call = |tool: &str, a: serde_json::Value| call_of("a", &format!("files/{tool}"), a);
    let ok = call(
        "read_file",
        serde_json::json!({"path": "/srv/reports/q3.csv"}),
    );
    entities::conforms(&ok, known.get("files/read_file").unwrap()).unwrap();
    assert_eq!(p.decide(&ok).effect, Effect::Allow);
    assert_eq!(p.decide(&ok), p.decide_unindexed(&ok));
    let outside = call("read_file", serde_json::json!({"path": "/etc/shadow"}));
    assert_eq!(p.decide(&outside).effect, Effect::Deny);
    let missing = call("read_file", serde_json::json!({}));
    assert_eq!(p.decide(&missing).effect, Effect::Deny);
    let big = call(
        "read_file",
        serde_json::json!({"path": "/srv/reports/a", "max_bytes": 5_000_000}),
    );
    let d = p.decide(&big);
    assert_eq!(
        (d.effect, d.policies.clone()),
        (Effect::Deny, vec!["no-big-reads".to_owned()])
    );
    // An argument of another type than declared is refused, not skipped: a
    // forbid on `max_bytes` cannot be dodged by sending it as a string.
    let sneaky = call(
        "read_file",
        serde_json::json!({"path": "/srv/reports/a", "max_bytes": "5000000"}),
    );
    let d = p.decide(&sneaky);
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.errors[0].contains("`max_bytes` is not of type Long"),
        "{:?}",
        d.errors
    );
    // Arguments the tool does not declare are refused: policy could not
    // see them, yet the server would get them.
    let extra = call(
        "read_file",
        serde_json::json!({"path": "/srv/reports/a", "unknown": {"deep": [1]}}),
    );
    assert_eq!(p.decide(&extra).effect, Effect::Deny);
    let labelled = call(
        "search",
        serde_json::json!({"query": "q", "labels": ["secret"]}),
    );
    assert_eq!(p.decide(&labelled).effect, Effect::Deny);
    assert_eq!(
        p.decide(&call("search", serde_json::json!({"query": "q"})))
            .effect,
        Effect::Allow
    );
}

/// The review's bypass: a tool `Read_note` declaring `name` as an integer
/// made `name` disappear from every tool's arguments, so a forbid on
/// `read_note`'s `name` never applied. Types are per tool now.
#[test]
fn another_tool_typing_an_argument_differently_cannot_switch_off_a_forbid() {
    let text = r#"
@id("notes")
permit(principal, action == Action::"mcp:call_tool", resource in McpServer::"notes");
@id("no-private")
forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"notes/read_note")
when { context.arguments has name && context.arguments.name like "private*" };
"#;
    let mut known = tools(&[(
        "notes/read_note",
        serde_json::json!({"properties": {"name": {"type": "string"}}}),
    )]);
    // The same argument name, another type, on another tool (and server).
    for (server, tool) in [("notes", "Read_note"), ("other", "read_note")] {
        known.insert(
            server,
            tool,
            ArgumentSchema::from_input_schema(
                &serde_json::json!({"properties": {"name": {"type": "integer"}}}),
            ),
        );
    }
    let p = Policies::compile_for_tools(&[file("t.cedar", text)], &known, ToolProblems::Refuse)
        .unwrap();
    let private = call_of(
        "a",
        "notes/read_note",
        serde_json::json!({"name": "private-diary"}),
    );
    let d = p.decide(&private);
    assert_eq!(
        (d.effect, d.policies.clone()),
        (Effect::Deny, vec!["no-private".to_owned()])
    );
    assert_eq!(
        p.decide(&call_of(
            "a",
            "notes/read_note",
            serde_json::json!({"name": "public"})
        ))
        .effect,
        Effect::Allow
    );
    // The other tool is typed with its own schema.
    assert_eq!(
        p.decide(&call_of(
            "a",
            "notes/Read_note",
            serde_json::json!({"name": 7})
        ))
        .effect,
        Effect::Allow
    );
    assert_eq!(
        p.decide(&call_of(
            "a",
            "notes/Read_note",
            serde_json::json!({"name": "private"})
        ))
        .effect,
        Effect::Deny,
        "a string where it declares an integer is refused"
    );
}

/// Found after the fix above: a tool declaring a policed argument with a
/// type Cedar has no counterpart for (a union, a number, `{}`, a `$ref`)
/// had it dropped from `context.arguments` yet passed on, so the forbid
/// never saw it; and an undeclared spelling (`PATH` beside `path`) was
/// passed on unseen.
#[test]
fn arguments_policies_cannot_see_are_refused_not_passed_on() {
    let text = r#"
@id("dyn")
permit(principal, action == Action::"mcp:call_tool", resource in McpServer::"dyn");
@id("no-etc")
forbid(principal, action == Action::"mcp:call_tool", resource in McpServer::"dyn")
when { context.arguments has path && context.arguments.path like "/etc/*" };
"#;
    let mut known = tools(&[(
        "dyn/read_file",
        serde_json::json!({"properties": {"path": {"type": "string"}, "n": {"type": "number"}}}),
    )]);
    for (tool, path) in [
        ("cat", serde_json::json!({"type": ["string", "array"]})),
        (
            "cat2",
            serde_json::json!({"anyOf": [{"type": "string"}, {"type": "array"}]}),
        ),
        ("cat3", serde_json::json!({})),
        ("cat4", serde_json::json!({"$ref": "#/$defs/P"})),
        ("cat5", serde_json::json!({"type": "number"})),
    ] {
        known.insert(
            "dyn",
            tool,
            ArgumentSchema::from_input_schema(&serde_json::json!({"properties": {"path": path}})),
        );
    }
    let p = Policies::compile_for_tools(&[file("t.cedar", text)], &known, ToolProblems::Refuse)
        .unwrap();
    assert!(
        p.warnings()
            .to_string()
            .contains("`no-etc` reads argument `path`"),
        "{}",
        p.warnings()
    );
    for tool in ["cat", "cat2", "cat3", "cat4", "cat5"] {
        for path in [
            serde_json::json!("/etc/passwd"),
            serde_json::json!(["/etc/shadow"]),
        ] {
            let d = p.decide(&call_of(
                "a",
                &format!("dyn/{tool}"),
                serde_json::json!({"path": path}),
            ));
            assert_eq!(d.effect, Effect::Deny, "{tool} {path}");
            assert!(
                d.errors
                    .iter()
                    .any(|e| e.contains("cannot read") && e.contains("no-etc")),
                "{tool}: {:?}",
                d.errors
            );
            let u = p.decide_unindexed(&call_of(
                "a",
                &format!("dyn/{tool}"),
                serde_json::json!({"path": path}),
            ));
            assert_eq!((u.effect, u.errors.clone()), (d.effect, d.errors.clone()));
        }
        // Without the argument nothing is hidden, and the permit decides.
        let d = p.decide(&call_of("a", &format!("dyn/{tool}"), serde_json::json!({})));
        assert_eq!(d.effect, Effect::Allow, "{tool}");
    }
    // An untyped argument no policy reads is passed on.
    let d = p.decide(&call_of(
        "a",
        "dyn/read_file",
        serde_json::json!({"path": "/tmp/x", "n": 1.5}),
    ));
    assert_eq!(d.effect, Effect::Allow, "{:?}", d.errors);
    // Undeclared arguments, case variants among them, are refused.
    for extra in ["PATH", "Path", "other"] {
        let d = p.decide(&call_of(
            "a",
            "dyn/read_file",
            serde_json::json!({"path": "/tmp/ok", extra: "/etc/shadow"}),
        ));
        assert_eq!(d.effect, Effect::Deny, "{extra}");
        assert!(
            d.errors.iter().any(|e| e.contains("not declared")),
            "{:?}",
            d.errors
        );
    }
}

/// A policy that can never apply is refused, not loaded with a warning.
#[test]
fn impossible_policies_are_refused() {
    let misspelt = r#"permit(principal, action == Action::"token:self", resource)
when { context has userr && context.depth > 0 };"#;
    let e = Policies::compile(&[file("m.cedar", misspelt)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("m.cedar:") && e.contains("never apply"), "{e}");
    let wrong_resource =
        r#"permit(principal, action == Action::"http:request", resource is Audience);"#;
    let e = Policies::compile(&[file("r.cedar", wrong_resource)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("never apply"), "{e}");
    // An argument the tool it is about does not have.
    let known = tools(&[(
        "notes/read_note",
        serde_json::json!({"properties": {"name": {"type": "string"}}}),
    )]);
    let typo = r#"forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"notes/read_note")
when { context.arguments has nmae && context.arguments.nmae like "private*" };"#;
    let e = Policies::compile_for_tools(&[file("t.cedar", typo)], &known, ToolProblems::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t.cedar:") && e.contains("never apply") && e.contains("notes/read_note"),
        "{e}"
    );
    // Re-typed after tools changed, the same problem refuses that tool's
    // calls (saying why) instead of refusing the whole set.
    let p = Policies::compile_for_tools(&[file("t.cedar", typo)], &known, ToolProblems::Isolate)
        .unwrap();
    let d = p.decide(&call_of(
        "a",
        "notes/read_note",
        serde_json::json!({"name": "x"}),
    ));
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.errors[0].contains("can never apply to this tool"),
        "{:?}",
        d.errors
    );
    assert!(!p.could_allow(&call_of("a", "notes/read_note", serde_json::json!({}))));
    // A broad policy reading an argument only some tools have is fine.
    let broad = r#"forbid(principal, action == Action::"mcp:call_tool", resource)
when { context.arguments has name && context.arguments.name like "private*" };"#;
    let mut more = known.clone();
    more.insert("files", "list", ArgumentSchema::empty());
    Policies::compile_for_tools(&[file("b.cedar", broad)], &more, ToolProblems::Refuse).unwrap();
    // ...but not one whose condition does not type-check for a tool it reaches.
    more.insert(
        "notes",
        "Read_note",
        ArgumentSchema::from_input_schema(
            &serde_json::json!({"properties": {"name": {"type": "integer"}}}),
        ),
    );
    let e = Policies::compile_for_tools(&[file("b.cedar", broad)], &more, ToolProblems::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("notes/Read_note") && !e.contains("`notes/read_note`"),
        "{e}"
    );
    let p = Policies::compile_for_tools(&[file("b.cedar", broad)], &more, ToolProblems::Isolate)
        .unwrap();
    assert!(p.tool_problems().contains_key("notes/Read_note"));
    assert!(!p.tool_problems().contains_key("notes/read_note"));
    // Re-typing a loaded set for new tools uses the files it was loaded from.
    let q = p.for_tools(&known).unwrap();
    assert!(q.tool_problems().is_empty());
    assert_eq!(q.digest(), p.digest());
}

/// `tools/list` shows a tool when some arguments could make a call allowed.
#[test]
fn tools_are_listed_when_some_call_could_be_allowed() {
    let schema =
        serde_json::json!({"properties": {"path": {"type": "string"}, "repo": {"type": "string"}}});
    let known = tools(&[
        ("files/read_file", schema.clone()),
        ("files/write_file", schema.clone()),
        ("files/search", schema.clone()),
        ("files/crash", schema.clone()),
        ("github/create_issue", schema.clone()),
        ("github/delete_repository", schema.clone()),
    ]);
    let text = r#"
@id("reports-only")
permit(principal, action == Action::"mcp:call_tool", resource == Tool::"files/read_file")
when { context.arguments has path && context.arguments.path like "/srv/reports/*" };
@id("github")
permit(principal in Agent::"a", action == Action::"mcp:call_tool", resource in McpServer::"github");
@id("never-delete")
forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"github/delete_repository");
@id("not-prod-repo")
forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"github/create_issue")
when { context.arguments has repo && context.arguments.repo == "prod" };
@id("support-only")
permit(principal, action == Action::"mcp:call_tool", resource == Tool::"files/search")
when { context has user && context.groups.contains("support") };
@id("danger")
permit(principal, action == Action::"mcp:call_tool", resource == Tool::"files/crash")
when { context.scopes.contains("danger") };
"#;
    let p = Policies::compile_for_tools(&[file("t.cedar", text)], &known, ToolProblems::Refuse)
        .unwrap();
    let tool = |agent: &str, server: &str, t: &str| {
        request(
            agent,
            Action::McpCallTool,
            Resource::Tool {
                server: server.into(),
                tool: t.into(),
            },
        )
    };
    assert!(
        p.could_allow(&tool("a", "files", "read_file")),
        "depends on its arguments"
    );
    assert!(
        p.could_allow(&tool("a", "github", "create_issue")),
        "forbidden for one repo only"
    );
    assert!(
        !p.could_allow(&tool("a", "github", "delete_repository")),
        "forbidden whatever the arguments"
    );
    assert!(
        !p.could_allow(&tool("b", "github", "create_issue")),
        "not this agent"
    );
    assert!(
        !p.could_allow(&tool("a", "files", "write_file")),
        "no permit"
    );
    assert!(
        !p.could_allow(&tool("a", "files", "search")),
        "not for this user"
    );
    let mut support = tool("a", "files", "search");
    support.context.user = Some(UserRef {
        id: "alice".into(),
        groups: vec!["support".into()],
    });
    assert!(p.could_allow(&support));
    assert!(
        !p.could_allow(&tool("a", "files", "crash")),
        "a condition on scopes is decided"
    );
    let mut danger = tool("a", "files", "crash");
    danger.context.scopes = vec!["danger".into()];
    assert!(p.could_allow(&danger));
    assert!(
        !p.could_allow(&tool("a", "github", "unknown")),
        "a tool the set does not know"
    );
}

#[test]
fn listing_decides_conditions_beside_an_unknown_source_address() {
    let schema = serde_json::json!({
        "properties": {"path": {"type": "string"}, "labels": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}, "query": {"type": "string"}, "max_bytes": {"type": "integer"}}
    });
    let known = tools(&[
        ("files/read_file", schema.clone()),
        ("files/search", schema.clone()),
        ("files/crash", schema.clone()),
    ]);
    let text = r#"
@id("reports-only")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource == Tool::"files/read_file")
when { context.arguments has path && context.arguments.path like "/srv/reports/*" };
@id("search-and-whoami")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource in McpServer::"files")
when { resource == Tool::"files/search" || resource == Tool::"files/whoami" };
@id("no-secret-labels")
forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"files/search")
when { context.arguments has labels && context.arguments.labels.contains("secret") };
@id("crash-needs-danger")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource == Tool::"files/crash")
when { context.scopes.contains("danger") };
@id("remote")
permit(principal, action == Action::"mcp:call_tool", resource in McpServer::"remote");
"#;
    let p = Policies::compile_for_tools(&[file("t.cedar", text)], &known, ToolProblems::Refuse)
        .unwrap();
    let mut r = request(
        "orch",
        Action::McpCallTool,
        Resource::Tool {
            server: "files".into(),
            tool: "crash".into(),
        },
    );
    r.context.scopes = vec!["files:use".into()];
    r.context.user = Some(UserRef {
        id: "alice".into(),
        groups: vec!["support".into()],
    });
    r.context.task = Some("tsk_1".into());
    r.context.txn = Some("txn_1".into());
    r.context.source_ip = Some("127.0.0.1".parse().unwrap());
    r.context.chain = vec!["orch".into()];
    r.context.depth = 1;
    assert!(!p.could_allow(&r));
}
