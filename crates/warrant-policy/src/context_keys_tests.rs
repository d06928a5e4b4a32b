//! `decide`, which builds only the context keys the set reads, answers as
//! `decide_unindexed` (every key) does, and `could_allow` as a set building
//! every key would, whatever way a policy reaches `context`. (First
//! written by an outside review of that change.)

use std::net::IpAddr;

use warrant_core::decision::{Action, DecisionRequest, Effect, HttpFacts, Resource, UserRef};

use super::*;
use crate::tests::{file, request};

pub(super) fn known_tools() -> ToolArguments {
    let mut t = ToolArguments::default();
    t.insert(
        "files",
        "read",
        ArgumentSchema::from_input_schema(&serde_json::json!({"properties": {
            "path": {"type": "string"},
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}}
        }})),
    );
    t
}

pub(super) fn tool_call(args: serde_json::Value) -> DecisionRequest {
    let mut r = request(
        "a",
        Action::McpCallTool,
        Resource::Tool {
            server: "files".into(),
            tool: "read".into(),
        },
    );
    r.context.arguments = args.as_object().cloned();
    r
}

/// Requests varying every optional key, for every action kind warrant has
/// context keys for.
fn bank() -> Vec<DecisionRequest> {
    let mut bases = vec![
        request("a", Action::TokenSelf, Resource::Audience("x".into())),
        request("a", Action::TokenExchange, Resource::Audience("y".into())),
        tool_call(serde_json::json!({})),
        tool_call(serde_json::json!({"path": "/srv/r", "n": 3, "tags": ["t"]})),
        tool_call(serde_json::json!({"path": "/etc/passwd"})),
    ];
    for (m, p) in [("GET", "/v1/chat"), ("POST", "/admin")] {
        let mut h = request("a", Action::HttpRequest, Resource::Route("r".into()));
        h.context.http = Some(HttpFacts {
            method: m.into(),
            path: p.into(),
            host: "api.example".into(),
        });
        bases.push(h);
    }
    let mut out = Vec::new();
    for base in bases {
        for user in [false, true] {
            for task in [None, Some("t1")] {
                for txn in [None, Some("x")] {
                    for ip in [
                        None,
                        Some("127.0.0.1"),
                        Some("10.1.2.3"),
                        Some("::1"),
                        Some("::ffff:10.1.2.3"),
                    ] {
                        for scopes in [vec![], vec!["files:write".to_owned()]] {
                            let mut r = base.clone();
                            r.context.user = user.then(|| UserRef {
                                id: "alice".into(),
                                groups: vec!["admins".into()],
                            });
                            r.context.task = task.map(str::to_owned);
                            r.context.txn = txn.map(str::to_owned);
                            r.context.source_ip = ip.map(|s| s.parse::<IpAddr>().unwrap());
                            r.context.scopes = scopes;
                            r.context.depth = u32::from(user);
                            r.context.chain = if user { vec!["a".into()] } else { vec![] };
                            r.context.anomaly_score = if txn.is_some() { 7 } else { 0 };
                            out.push(r);
                        }
                    }
                }
            }
        }
    }
    out
}

/// A policy that never applies to the bank's requests but uses `context`
/// whole, so that a set with it builds every key (the reference for
/// `could_allow`).
const FORCE_ALL: &str = "\n@id(\"force-all\") forbid(principal, action == Action::\"token:self\", resource == Audience::\"never-asked\") when { context == context };\n";

/// `text` with [`FORCE_ALL`]: the same decisions, every key built.
fn forced(text: &str, tools: &ToolArguments) -> Policies {
    Policies::compile_for_tools(
        &[file("f.cedar", &format!("{text}{FORCE_ALL}"))],
        tools,
        ToolProblems::Refuse,
    )
    .unwrap()
}

const FORMS: &[&str] = &[
    r#"permit(principal, action, resource) when { context["scopes"].contains("files:write") };"#,
    r#"permit(principal, action, resource) when { context has "task" && context["task"] == "t1" };"#,
    r#"permit(principal, action, resource) when { if context has task then context.task like "t*" else context.depth == 0 };"#,
    r#"permit(principal, action, resource) when { {"a": context.scopes, "b": context.chain}.a.containsAny(["files:write"]) };"#,
    r#"permit(principal, action, resource) when { [context.groups, context.scope_verbs].contains(["write"]) };"#,
    r#"permit(principal, action, resource) when { context has user && context.user is User && context.user in Group::"admins" };"#,
    r#"permit(principal, action, resource) when { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };"#,
    r#"forbid(principal, action, resource) when { context has source_ip && context.source_ip.isLoopback() };"#,
    r#"permit(principal, action, resource) when { {"d": context.depth} == {"d": 0} };"#,
    r#"permit(principal, action, resource) when { context.scopes.containsAll(context.scope_resources) };"#,
    r#"forbid(principal, action, resource) unless { context.hour == context.hour && context.weekday >= 0 };"#,
    r#"permit(principal, action, resource) when { User::"alice" in Group::"admins" };"#,
    r#"forbid(principal, action, resource) unless { context has txn };"#,
    r#"permit(principal, action, resource) when { context.env == principal.env && context.attestor == "unix" };"#,
    r#"permit(principal, action == Action::"http:request", resource) when { context.method == "GET" && context.path like "/v1/*" && context.host != "" };"#,
    r#"permit(principal, action == Action::"mcp:call_tool", resource) when { context.arguments has path && context.arguments.path like "/srv/*" };"#,
    r#"forbid(principal, action == Action::"mcp:call_tool", resource) when { context.arguments has n && context.arguments.n > 2 };"#,
    r#"permit(principal, action, resource) when { context.anomaly_score < 5 && decimal("1.0").lessThan(decimal("2.0")) };"#,
    r#"permit(principal, action, resource) when { (if context.depth > 0 then context.chain else context.groups).isEmpty() };"#,
    r#"permit(principal, action, resource) when { context has user && context.user == User::"alice" };"#,
    r#"forbid(principal, action, resource) when { context.anomaly_score + 9223372036854775801 > 0 };"#,
    r#"permit(principal, action, resource) when { context has source_ip.x };"#,
    r#"permit(principal, action, resource) when { context.scope_verbs.contains("write") || context has task };"#,
    r#"permit(principal, action == Action::"mcp:call_tool", resource) when { resource.name == "read" && resource.server like "f*" };"#,
    r#"permit(principal, action, resource) when { principal.owner == "team" && principal.attestor == "unix" && principal has agent };"#,
    r#"forbid(principal, action, resource) when { principal in Agent::"a" && principal.trust == "medium" && context.depth > 0 };"#,
    r#"permit(principal, action, resource) when { context == context };"#,
    r#"permit(principal, action, resource) when { {"c": context}.c.scope_verbs.contains("write") };"#,
];

/// Every form that warrant accepts, alone and all together, decides each
/// request of the bank as plain Cedar over every key does, and lists tools
/// as a set building every key does.
#[test]
fn every_way_of_reading_context_decides_as_plain_cedar() {
    let tools = known_tools();
    let requests = bank();
    let mut accepted = Vec::new();
    for (i, form) in FORMS.iter().enumerate() {
        let text = format!(
            "@id(\"f{i}\") {form}\n@id(\"base{i}\") permit(principal, action, resource) when {{ principal.trust == \"medium\" }};\n"
        );
        match Policies::compile_for_tools(&[file("f.cedar", &text)], &tools, ToolProblems::Refuse) {
            Ok(_) => accepted.push(text),
            Err(e) => eprintln!("refused by warrant (not an attack): {form}\n  {e}"),
        }
    }
    accepted.push(accepted.concat().replace("@id(\"", "@id(\"all-"));
    for text in &accepted {
        let narrow =
            Policies::compile_for_tools(&[file("f.cedar", text)], &tools, ToolProblems::Refuse)
                .unwrap();
        let forced = forced(text, &tools);
        let reloaded = narrow.for_tools(&tools).unwrap();
        for r in &requests {
            let plain = narrow.decide_unindexed(r);
            assert_eq!(narrow.decide(r), plain, "{text}\n{r:?}");
            assert_eq!(reloaded.decide(r), plain, "reloaded\n{text}\n{r:?}");
            assert_eq!(
                narrow.decide_scored(r, r.context.anomaly_score),
                plain,
                "{text}\n{r:?}"
            );
            if r.action == Action::McpCallTool {
                assert_eq!(
                    narrow.could_allow(r),
                    forced.could_allow(r),
                    "could_allow\n{text}\n{r:?}"
                );
            }
        }
    }
}

/// An IPv4 client reaching a dual-stack (IPv6) listener has the peer
/// address `::ffff:a.b.c.d`. Cedar's `ip()` refuses IPv4 embedded in IPv6,
/// so such a request was denied with "cannot represent source address" by
/// plain Cedar, and, once only the keys a set reads were built, allowed by
/// `decide` when no policy read `source_ip`. It is now the IPv4 address,
/// decided alike on every path, and an address that cannot be converted
/// fails every decision whether or not it is read.
#[test]
fn an_ipv4_client_on_a_dual_stack_listener_is_decided_as_ipv4_on_every_path() {
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    let plain_self = Policies::compile(&[file(
        "p.cedar",
        "@id(\"self\") permit(principal, action == Action::\"token:self\", resource);\n",
    )])
    .unwrap();
    let by_range = Policies::compile(&[file(
        "p.cedar",
        "@id(\"ten\") permit(principal, action == Action::\"token:self\", resource) when { context has source_ip && context.source_ip.isInRange(ip(\"10.0.0.0/8\")) };\n",
    )])
    .unwrap();
    let mut r = request("a", Action::TokenSelf, Resource::Audience("x".into()));
    r.context.source_ip = Some(mapped);
    for p in [&plain_self, &by_range] {
        let d = p.decide(&r);
        assert_eq!(d.effect, Effect::Allow, "{d:?}");
        assert_eq!(d, p.decide_unindexed(&r));
        assert_eq!(p.decide_scored(&r, 0), d);
    }
    let mut outside = r.clone();
    outside.context.source_ip = Some("::ffff:192.0.2.7".parse().unwrap());
    assert_eq!(by_range.decide(&outside).effect, Effect::Deny);
    assert!(by_range.decide(&outside).errors.is_empty());

    // Tool calls and listing, after a reload too.
    let tools = known_tools();
    let text = "@id(\"files\") permit(principal, action == Action::\"mcp:call_tool\", resource in McpServer::\"files\") when { context.arguments has path && context.arguments.path like \"/srv/*\" };\n";
    let p = Policies::compile_for_tools(&[file("p.cedar", text)], &tools, ToolProblems::Refuse)
        .unwrap()
        .for_tools(&tools)
        .unwrap();
    let forced = forced(text, &tools);
    let mut call = tool_call(serde_json::json!({"path": "/srv/r"}));
    call.context.source_ip = Some(mapped);
    assert_eq!(p.decide_scored(&call, 0).effect, Effect::Allow);
    assert_eq!(p.decide_scored(&call, 0), p.decide_unindexed(&call));
    assert!(p.could_allow(&call) && forced.could_allow(&call));
}

/// A policy that reads tool arguments before any tool it reaches is known
/// is accepted unvalidated (a warning): it may read keys without `has`,
/// mistype them, or name keys the schema lacks.
#[test]
fn unvalidated_pending_policies_decide_as_plain_cedar() {
    let forms = [
        r#"permit(principal, action, resource) when { (context has arguments && context.arguments has p) || context.task == "t1" };"#,
        r#"permit(principal, action, resource) when { (context has arguments && context.arguments has p) || context.task + 1 == 2 };"#,
        r#"forbid(principal, action, resource) when { (context has arguments && context.arguments has p) || context.nokey == 1 || context.source_ip.isLoopback() };"#,
        r#"permit(principal, action, resource) when { context.arguments == context.arguments || context.txn == "x" };"#,
    ];
    let requests = bank();
    for form in forms {
        let text =
            format!("@id(\"u\") {form}\n@id(\"base\") permit(principal, action, resource);\n");
        let p = Policies::compile(&[file("u.cedar", &text)])
            .unwrap_or_else(|e| panic!("refused: {form}\n{e}"));
        assert!(!p.warnings().0.is_empty(), "{form}: validated after all?");
        for r in &requests {
            assert_eq!(p.decide(r), p.decide_unindexed(r), "{text}\n{r:?}");
        }
    }
}
