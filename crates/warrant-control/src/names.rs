//! Entity ids in policies checked against what exists: a policy naming
//! `Agent::"suport-bot"` is valid Cedar and matches nothing, so a typo
//! silently denies (or, in a `forbid`, silently fails to forbid). `policy
//! validate` and every reload warn about each id that names no registered
//! agent, configured route or MCP server, or announced tool.

use std::collections::BTreeSet;

use warrant_policy::{Policies, PolicyProblem};

/// The names policies may refer to.
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    /// Registered agents.
    pub agents: BTreeSet<String>,
    /// Configured routes.
    pub routes: BTreeSet<String>,
    /// Configured MCP servers.
    pub servers: BTreeSet<String>,
    /// Pinned tools, as `server/tool`.
    pub tools: BTreeSet<String>,
}

/// A warning for each entity id a policy names that names nothing known.
pub fn unknown_names(policies: &Policies, known: &KnownNames) -> Vec<PolicyProblem> {
    let mut out = Vec::new();
    for r in policies.entity_refs() {
        // The set the id must be in, the name looked up there, and what a
        // miss means.
        let server = r.id.split_once('/').map_or(r.id.as_str(), |(s, _)| s);
        let (set, key, what): (&BTreeSet<String>, &str, &str) = match r.kind.as_str() {
            "Agent" => (&known.agents, &r.id, "no registered agent"),
            "Route" => (
                &known.routes,
                &r.id,
                "no configured route ([[route]] in warrant.toml)",
            ),
            "McpServer" => (
                &known.servers,
                &r.id,
                "no configured MCP server ([[mcp_server]] in warrant.toml)",
            ),
            "Tool" if !known.servers.contains(server) => (
                &known.servers,
                server,
                "a tool of no configured MCP server ([[mcp_server]] in warrant.toml)",
            ),
            "Tool"
                if known
                    .tools
                    .iter()
                    .any(|t| t.split_once('/').is_some_and(|(s, _)| s == server)) =>
            {
                (&known.tools, &r.id, "no tool its MCP server announced")
            }
            // A server whose tools were never listed: nothing to say yet.
            _ => continue,
        };
        if set.contains(key) {
            continue;
        }
        let hint = closest(key, set)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        out.push(PolicyProblem {
            file: r.file,
            line: r.line,
            col: r.col,
            message: format!(
                "policy `{}` names {}::\"{}\", which is {what}, so it matches nothing{hint}",
                r.policy,
                r.kind,
                r.id.escape_debug()
            ),
        });
    }
    out
}

/// The known name nearest `id`, if it is within two edits.
fn closest<'a>(id: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edits(id, k), k.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance (names are short).
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use warrant_policy::PolicyFile;

    use super::*;

    fn compile(text: &str) -> Policies {
        Policies::compile(&[PolicyFile {
            name: "p.cedar".into(),
            text: text.into(),
        }])
        .unwrap()
    }

    fn known() -> KnownNames {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        KnownNames {
            agents: set(&["support-bot", "triage"]),
            routes: set(&["openai"]),
            servers: set(&["notes", "fresh"]),
            tools: set(&["notes/read_note"]),
        }
    }

    #[test]
    fn a_typo_in_any_known_kind_is_named_with_its_line_and_the_likely_name() {
        let p = compile(
            r#"@id("a")
permit(principal in Agent::"suport-bot", action == Action::"http:request", resource == Route::"openia");
@id("b")
permit(principal, action == Action::"mcp:call_tool", resource == Tool::"notes/read_notes")
when { principal in Agent::"triage" };
@id("c")
permit(principal, action == Action::"mcp:call_tool", resource)
when { resource in McpServer::"nots" || resource == Tool::"fresh/anything" };
"#,
        );
        let w: Vec<String> = unknown_names(&p, &known())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(w.len(), 4, "{w:#?}");
        let find = |what: &str| {
            w.iter()
                .find(|x| x.contains(what))
                .unwrap_or_else(|| panic!("no warning about {what}: {w:#?}"))
        };
        let agent = find(r#"Agent::"suport-bot""#);
        assert!(agent.starts_with("p.cedar:2:") && agent.contains("did you mean `support-bot`"));
        assert!(find(r#"Route::"openia""#).contains("did you mean `openai`"));
        let tool = find(r#"Tool::"notes/read_notes""#);
        assert!(
            tool.starts_with("p.cedar:4:") && tool.contains("no tool its MCP server announced")
        );
        assert!(find(r#"McpServer::"nots""#).contains("did you mean `notes`"));
        // `fresh` has no tools listed yet: its tools are not judged.
        assert!(!w.iter().any(|x| x.contains("fresh/anything")), "{w:#?}");
    }

    #[test]
    fn names_that_exist_and_free_form_ids_say_nothing() {
        let p = compile(
            r#"permit(principal in Agent::"triage", action == Action::"token:exchange", resource == Audience::"https://x.example")
when { context has user && context.user in Group::"corp/anyone" };"#,
        );
        assert!(unknown_names(&p, &known()).is_empty());
        assert_eq!(edits("suport-bot", "support-bot"), 1);
        assert_eq!(closest("zzzz", &known().agents), None);
    }
}
