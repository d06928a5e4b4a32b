//! The delegation rules of one token-exchange hop, as pure functions: what
//! an agent may be handed (`may_act`), and how scope, audience and depth may
//! only narrow. The token service reads the tokens and asks policy; these
//! say what any hop may never do, whatever policy says.

use serde_json::Value;
use warrant_core::task::{ScopeSet, agent_of};
use warrant_core::text::shown;

use crate::oauth::OAuthError;

/// What the token handed to the acting agent grants.
#[derive(Debug, Clone, Copy)]
pub struct Handed<'a> {
    /// Its `sub`: `user:<id>`, or the SPIFFE ID of an agent acting for
    /// itself.
    pub sub: &'a str,
    /// The agents (SPIFFE IDs) that acted so far, current first.
    pub chain: &'a [String],
    /// Its scope (none for a user's token that carries no scope).
    pub scope: Option<&'a ScopeSet>,
    /// Its audiences (none for a user's token).
    pub audience: Option<&'a [String]>,
}

/// What the acting agent asks for.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The acting agent's name.
    pub agent: &'a str,
    /// `scope`, as sent.
    pub scope: Option<&'a str>,
    /// `audience` and `resource` values, deduplicated, as sent.
    pub audience: &'a [String],
}

/// What the hop may be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    /// The scope: what was asked, within what was handed.
    pub scope: ScopeSet,
    /// The audiences: what was asked (or handed, when none was asked),
    /// within what was handed.
    pub audience: Vec<String>,
    /// The depth of the new token: the acting agents, this one included.
    pub depth: u32,
    /// The acting agents' names, outermost first, this one last (policy's
    /// `context.chain`).
    pub chain: Vec<String>,
}

/// The rules every hop obeys: an agent appears once in a chain (it acts
/// neither for itself again nor in a loop); the chain is at most
/// `max_depth` agents; scope and audience are at most what was handed,
/// and never empty.
pub fn narrow(
    handed: Handed<'_>,
    asked: Asked<'_>,
    max_depth: u32,
) -> Result<Narrowed, OAuthError> {
    let agents: Vec<&str> = handed.chain.iter().filter_map(|s| agent_of(s)).collect();
    if agents.contains(&asked.agent) || agent_of(handed.sub) == Some(asked.agent) {
        return Err(OAuthError::invalid_grant(format!(
            "agent `{}` is already in this delegation chain; a chain never revisits an agent",
            asked.agent
        )));
    }
    let depth = handed.chain.len() + 1;
    if depth > max_depth as usize {
        return Err(OAuthError::invalid_grant(format!(
            "delegation depth {depth} is over the limit of {max_depth}"
        )));
    }
    let scope = match (asked.scope, handed.scope) {
        (Some(s), _) => {
            ScopeSet::parse(s).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?
        }
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(OAuthError::new(
                "invalid_scope",
                "`scope` is required when exchanging a user's token",
            ));
        }
    };
    if scope.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "the requested scope is empty",
        ));
    }
    if let Some(parent) = handed.scope
        && !scope.is_subset(parent)
    {
        return Err(OAuthError::new(
            "invalid_scope",
            format!(
                "scope may only narrow: `{}` is not in the subject token's scope",
                scope.beyond(parent).join(" ")
            ),
        ));
    }
    let audience = match (asked.audience, handed.audience) {
        ([], Some(a)) => a.to_vec(),
        ([], None) => {
            return Err(OAuthError::new(
                "invalid_target",
                "`audience` (or `resource`) is required when exchanging a user's token",
            ));
        }
        (a, _) => a.to_vec(),
    };
    if let Some(parent) = handed.audience
        && let Some(wider) = audience.iter().find(|a| !parent.contains(a))
    {
        return Err(OAuthError::new(
            "invalid_target",
            format!(
                "audience may only narrow: `{}` is not in the subject token's audience",
                shown(wider, 100)
            ),
        ));
    }
    Ok(Narrowed {
        scope,
        audience,
        depth: u32::try_from(depth).unwrap_or(u32::MAX),
        chain: agents
            .iter()
            .rev()
            .map(|s| (*s).to_owned())
            .chain(std::iter::once(asked.agent.to_owned()))
            .collect(),
    })
}

/// Whether a user's `may_act` (RFC 8693 §4.4), if the handed token carries
/// one, names the acting agent: by its SPIFFE ID or its name, at this
/// issuer (a `sub` at another issuer names someone else, whatever its
/// text).
pub fn may_act_allows(may_act: Option<&Value>, issuer: &str, actor_id: &str, agent: &str) -> bool {
    let Some(may) = may_act else {
        return true;
    };
    let allowed = may.get("sub").and_then(Value::as_str);
    let here = match may.get("iss") {
        None => true,
        Some(Value::String(i)) => i.trim_end_matches('/') == issuer.trim_end_matches('/'),
        Some(_) => false,
    };
    here && (allowed == Some(actor_id) || allowed == Some(agent))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const A: &str = "spiffe://example.org/agent/planner/i1";
    const B: &str = "spiffe://example.org/agent/coder/i2";

    fn scope(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    fn user_token<'a>(sc: Option<&'a ScopeSet>) -> Handed<'a> {
        Handed {
            sub: "user:corp/alice",
            chain: &[],
            scope: sc,
            audience: None,
        }
    }

    fn asked<'a>(agent: &'a str, scope: Option<&'a str>, audience: &'a [String]) -> Asked<'a> {
        Asked {
            agent,
            scope,
            audience,
        }
    }

    #[test]
    fn a_first_hop_gets_what_it_asks_within_the_users_scope() {
        let held = scope("files:read files:write");
        let aud = vec!["files".to_owned()];
        let n = narrow(
            user_token(Some(&held)),
            asked("planner", Some("files:read"), &aud),
            4,
        )
        .unwrap();
        assert_eq!(n.scope, scope("files:read"));
        assert_eq!(n.audience, aud);
        assert_eq!(n.depth, 1);
        assert_eq!(n.chain, vec!["planner"]);
    }

    #[test]
    fn scope_and_audience_only_narrow() {
        let held = scope("files:read");
        let aud = vec!["files".to_owned()];
        let chain = vec![A.to_owned()];
        let handed = Handed {
            sub: "user:corp/alice",
            chain: &chain,
            scope: Some(&held),
            audience: Some(&aud),
        };
        let e = narrow(
            handed,
            asked("coder", Some("files:read files:write"), &[]),
            4,
        )
        .unwrap_err();
        assert_eq!(e.error, "invalid_scope");
        assert!(e.description.contains("files:write"), "{}", e.description);
        let wider = vec!["files".to_owned(), "billing".to_owned()];
        let e = narrow(handed, asked("coder", None, &wider), 4).unwrap_err();
        assert_eq!(e.error, "invalid_target");
        assert!(e.description.contains("billing"), "{}", e.description);
        // Nothing asked: what was handed, one hop deeper.
        let n = narrow(handed, asked("coder", None, &[]), 4).unwrap();
        assert_eq!(
            (n.scope, n.audience, n.depth),
            (held.clone(), aud.clone(), 2)
        );
        assert_eq!(n.chain, vec!["planner", "coder"]);
    }

    #[test]
    fn a_users_token_needs_a_scope_and_an_audience_and_no_scope_is_empty() {
        let aud = vec!["files".to_owned()];
        let e = narrow(user_token(None), asked("planner", None, &aud), 4).unwrap_err();
        assert_eq!(e.error, "invalid_scope");
        let e = narrow(user_token(None), asked("planner", Some("x"), &[]), 4).unwrap_err();
        assert_eq!(e.error, "invalid_target");
        let e = narrow(user_token(None), asked("planner", Some(" "), &aud), 4).unwrap_err();
        assert_eq!(e.error, "invalid_scope");
    }

    #[test]
    fn a_chain_never_revisits_an_agent_nor_passes_its_depth() {
        let chain = vec![B.to_owned(), A.to_owned()];
        let handed = Handed {
            sub: "user:corp/alice",
            chain: &chain,
            scope: None,
            audience: None,
        };
        let aud = vec!["files".to_owned()];
        for again in ["planner", "coder"] {
            let e = narrow(handed, asked(again, Some("x"), &aud), 8).unwrap_err();
            assert!(e.description.contains("already in this delegation chain"));
        }
        // An agent acting for itself hands its own task on, never to itself.
        let own = Handed {
            sub: A,
            chain: &[],
            scope: None,
            audience: None,
        };
        assert!(narrow(own, asked("planner", Some("x"), &aud), 8).is_err());
        assert!(narrow(own, asked("coder", Some("x"), &aud), 8).is_ok());
        let e = narrow(handed, asked("reviewer", Some("x"), &aud), 2).unwrap_err();
        assert!(e.description.contains("depth 3 is over the limit of 2"));
        assert_eq!(
            narrow(handed, asked("reviewer", Some("x"), &aud), 3)
                .unwrap()
                .chain,
            vec!["planner", "coder", "reviewer"]
        );
    }

    #[test]
    fn may_act_names_the_agent_at_this_issuer() {
        let iss = "https://warrant.example/";
        assert!(may_act_allows(None, iss, A, "planner"));
        assert!(may_act_allows(
            Some(&json!({"sub": "planner"})),
            iss,
            A,
            "planner"
        ));
        assert!(may_act_allows(Some(&json!({"sub": A})), iss, A, "planner"));
        assert!(may_act_allows(
            Some(&json!({"sub": "planner", "iss": "https://warrant.example"})),
            iss,
            A,
            "planner"
        ));
        assert!(!may_act_allows(
            Some(&json!({"sub": "coder"})),
            iss,
            A,
            "planner"
        ));
        assert!(!may_act_allows(
            Some(&json!({"sub": "planner", "iss": "https://elsewhere.example"})),
            iss,
            A,
            "planner"
        ));
        assert!(!may_act_allows(
            Some(&json!({"sub": "planner", "iss": 7})),
            iss,
            A,
            "planner"
        ));
    }
}
