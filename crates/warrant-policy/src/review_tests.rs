//! Outside review (second round): `decide` / `could_allow` against
//! `decide_unindexed` (plain Cedar over every attribute and context key).

use warrant_core::decision::{Action, DecisionRequest, Effect, Resource, UserRef};

use super::*;
use crate::context_keys_tests::known_tools;
use crate::tests::file;

/// The shared request, with an agent whose `purpose` is set (the
/// attribute tests read it).
fn request(agent: &str, action: Action, resource: Resource) -> DecisionRequest {
    let mut r = crate::tests::request(agent, action, resource);
    r.principal.agent.purpose = "triage".into();
    r
}

fn requests() -> Vec<DecisionRequest> {
    let mut out = vec![
        request("a", Action::TokenSelf, Resource::Audience("x".into())),
        request("a", Action::TokenExchange, Resource::Audience("x".into())),
    ];
    let mut u = request("a", Action::TokenSelf, Resource::Audience("x".into()));
    u.context.user = Some(UserRef {
        id: "alice".into(),
        groups: vec!["admins".into()],
    });
    u.context.task = Some("t".into());
    out.push(u);
    let mut t = request(
        "a",
        Action::McpCallTool,
        Resource::Tool {
            server: "files".into(),
            tool: "read".into(),
        },
    );
    t.context.arguments = serde_json::json!({"path": "/x"}).as_object().cloned();
    out.push(t);
    out
}

/// decide == decide_unindexed, and could_allow == could_allow with every key
/// and attribute built.
fn assert_same(p: &mut Policies, reqs: &[DecisionRequest]) {
    for r in reqs {
        let d = p.decide(r);
        let u = p.decide_unindexed(r);
        assert_eq!(
            d, u,
            "decide vs decide_unindexed for {:?} {:?}",
            r.action, r.resource
        );
        if r.action == Action::McpCallTool {
            let narrow = p.could_allow(r);
            let saved = p.reads;
            p.reads = entities::Reads::ALL;
            let wide = p.could_allow(r);
            p.reads = saved;
            assert_eq!(narrow, wide, "could_allow with only the read keys");
        }
    }
}

// ---- Attribute observation: all hold (Cedar reads attributes only by name).

#[test]
fn every_way_of_reading_an_attribute_decides_as_plain_cedar() {
    for cond in [
        r#"principal["tr\u{75}st"] == "medium""#,
        r#"Agent::"a".trust == "medium""#,
        r#"Instance::"a-i1".owner == "team""#,
        r#"Instance::"a-i1" has attestor"#,
        r#"(if context.depth == 0 then principal else Instance::"z").env == "prod""#,
        r#"{p: principal}.p.agent == "a""#,
        r#"[principal].contains(Instance::"a-i1") && principal.attestor == "unix""#,
        r#"Agent::"a" has purpose"#,
        r#"principal in Agent::"a" && Agent::"a".purpose like "tri*""#,
        r#"{name: "a"}.name == Agent::"a".name"#,
        r#"principal == Instance::"a-i1" && {e: principal} == {e: Instance::"a-i1"}"#,
        r#"context has env && context.env == Instance::"a-i1".env"#,
        r#"Agent::"b".owner == "x""#, // entity not in the store: same error
    ] {
        for effect in ["permit", "forbid"] {
            let text = format!(
                "permit(principal, action, resource);\n{effect}(principal, action, resource) when {{ {cond} }};\n@approval(\"required\")\npermit(principal, action == Action::\"token:self\", resource) unless {{ {cond} }};\n"
            );
            let mut p = Policies::compile_for_tools(
                &[file("t.cedar", &text)],
                &known_tools(),
                ToolProblems::Refuse,
            )
            .unwrap_or_else(|e| panic!("{cond}: {e}"));
            assert_same(&mut p, &requests());
        }
    }
}

#[test]
fn missing_attributes_err_as_in_plain_cedar() {
    // Pending (reads tool arguments, no tool listed): validation errors are
    // warnings; error messages name no available attributes.
    for cond in [
        r#"principal.foo == "x""#,
        r#"principal.name == "a""#, // Instance has no `name`
        r#"resource.name == "x""#,  // Audience has no attributes
        r#"context.user.name == "x""#,
        r#"context.nokey == 1"#,
    ] {
        let text = format!(
            "permit(principal, action, resource) when {{ {cond} || context has arguments }};\n"
        );
        let mut p =
            Policies::compile(&[file("t.cedar", &text)]).unwrap_or_else(|e| panic!("{cond}: {e}"));
        assert!(!p.warnings().0.is_empty());
        assert_same(&mut p, &requests());
    }
}

// ---- The index files actions by id alone, ignoring the action's type.

/// A permit of `Foo::Action::"token:self"` (an action of another type, which
/// never matches a request) is loaded unvalidated because it also names
/// `mcp:call_tool` and reads tool arguments; the index files it under
/// `token:self`, and `decide` allows what Cedar denies.
#[test]
fn a_permit_naming_another_types_action_applies_to_none() {
    let text = "permit(principal, action in [Action::\"mcp:call_tool\", Foo::Action::\"token:self\"], resource) when { true || context has arguments };\n";
    let p = Policies::compile(&[file("t.cedar", text)]).expect("accepted with a warning");
    assert!(!p.warnings().0.is_empty(), "{}", p.warnings());
    let r = request("a", Action::TokenSelf, Resource::Audience("x".into()));
    let cedar = p.decide_unindexed(&r);
    let ours = p.decide(&r);
    assert_eq!(cedar.effect, Effect::Deny);
    assert_eq!(ours, cedar, "decide allowed a request Cedar denies");
}

/// The same as a forbid: `decide` denies what Cedar allows.
#[test]
fn a_forbid_naming_another_types_action_applies_to_none() {
    let text = "permit(principal, action == Action::\"token:self\", resource);\nforbid(principal, action in [Action::\"mcp:call_tool\", Foo::Action::\"token:self\"], resource) when { context has arguments || true };\n";
    let p = Policies::compile(&[file("t.cedar", text)]).expect("accepted with a warning");
    let r = request("a", Action::TokenSelf, Resource::Audience("x".into()));
    assert_eq!(p.decide_unindexed(&r).effect, Effect::Allow);
    assert_eq!(p.decide(&r), p.decide_unindexed(&r));
}

/// Through a `for_tools` reload: the policy fails against the tool's
/// schema, the problem is isolated to the tool, and the policy still
/// decides other actions, wrongly.
#[test]
fn another_types_action_applies_to_none_after_a_reload() {
    let text = "permit(principal, action in [Action::\"mcp:call_tool\", Foo::Action::\"token:self\"], resource) when { true || context has arguments };\n";
    let p = Policies::compile(&[file("t.cedar", text)]).expect("accepted with a warning");
    let p = p
        .for_tools(&known_tools())
        .expect("reload isolates the problem");
    let r = request("a", Action::TokenSelf, Resource::Audience("x".into()));
    assert_eq!(p.decide_unindexed(&r).effect, Effect::Deny);
    assert_eq!(p.decide(&r), p.decide_unindexed(&r));
}

/// The same class for principals and resources: entity types of another
/// namespace name nothing a request has, so such scopes match nothing, as
/// in Cedar (or the policy is refused).
#[test]
fn principals_and_resources_of_another_namespace_match_nothing() {
    let mut accepted = 0;
    for scope in [
        r#"principal == Foo::Instance::"a-i1", action in [Action::"mcp:call_tool", Action::"token:self"], resource"#,
        r#"principal in Foo::Agent::"a", action in [Action::"mcp:call_tool", Action::"token:self"], resource"#,
        r#"principal is Foo::Instance, action in [Action::"mcp:call_tool", Action::"token:self"], resource"#,
        r#"principal, action in [Action::"mcp:call_tool", Action::"token:self"], resource == Foo::Audience::"x""#,
        r#"principal, action in [Action::"mcp:call_tool", Action::"token:self"], resource is Foo::Audience"#,
    ] {
        let text = format!("permit({scope}) when {{ true || context has arguments }};\n");
        let Ok(p) = Policies::compile(&[file("t.cedar", &text)]) else {
            continue;
        };
        accepted += 1;
        let r = request("a", Action::TokenSelf, Resource::Audience("x".into()));
        let cedar = p.decide_unindexed(&r);
        assert_eq!(cedar.effect, Effect::Deny, "{text}");
        assert_eq!(p.decide(&r), cedar, "{text}");
    }
    assert!(
        accepted > 0,
        "every form refused: the index was not exercised"
    );
}
