//! What a policy decision is asked and what it answers, in warrant's own terms.
//!
//! Every part that needs a decision (attestation, token service, proxy, MCP
//! gateway) builds a [`DecisionRequest`] and calls `warrant_policy::decide`.
//! Turning this into Cedar entities and context is warrant-policy's job alone, so
//! nothing else depends on Cedar's types. The context key names are part of the
//! policy language users write (DESIGN §4) and stay stable.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::agent::TrustLevel;
use crate::time::Timestamp;

/// The actions policies govern. Names are stable once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Issue an identity token to an attested instance.
    IdentityIssue,
    /// Exchange a user or parent task token for a task token.
    TokenExchange,
    /// An agent acting as itself (client credentials).
    TokenSelf,
    /// One request through the egress proxy.
    HttpRequest,
    /// One MCP tool call.
    McpCallTool,
    /// One MCP resource read.
    McpReadResource,
    /// One MCP prompt fetch.
    McpGetPrompt,
}

impl Action {
    /// Every action, in a stable order.
    pub const ALL: [Action; 7] = [
        Self::IdentityIssue,
        Self::TokenExchange,
        Self::TokenSelf,
        Self::HttpRequest,
        Self::McpCallTool,
        Self::McpReadResource,
        Self::McpGetPrompt,
    ];

    /// The Cedar action id, e.g. `token:exchange`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdentityIssue => "identity:issue",
            Self::TokenExchange => "token:exchange",
            Self::TokenSelf => "token:self",
            Self::HttpRequest => "http:request",
            Self::McpCallTool => "mcp:call_tool",
            Self::McpReadResource => "mcp:read_resource",
            Self::McpGetPrompt => "mcp:get_prompt",
        }
    }

    /// The resource type the action applies to.
    pub fn resource_type(self) -> &'static str {
        match self {
            Self::IdentityIssue | Self::TokenExchange | Self::TokenSelf => "Audience",
            Self::HttpRequest => "Route",
            Self::McpCallTool => "Tool",
            Self::McpReadResource | Self::McpGetPrompt => "McpServer",
        }
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s
            .strip_prefix("Action::")
            .map(|q| q.trim_matches('"'))
            .unwrap_or(s);
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "action `{}` is unknown; use one of: {}",
                    s.escape_debug(),
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The resource a decision is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// An audience a token is for (an API origin, an MCP server URL, the broker).
    Audience(String),
    /// An egress proxy route.
    Route(String),
    /// An MCP server behind the gateway.
    McpServer(String),
    /// A tool of an MCP server.
    Tool {
        /// The server's name.
        server: String,
        /// The tool's name.
        tool: String,
    },
    /// A stored secret.
    Secret(String),
}

impl Resource {
    /// The Cedar entity type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Audience(_) => "Audience",
            Self::Route(_) => "Route",
            Self::McpServer(_) => "McpServer",
            Self::Tool { .. } => "Tool",
            Self::Secret(_) => "Secret",
        }
    }

    /// The Cedar entity id (`server/tool` for tools).
    pub fn id(&self) -> String {
        match self {
            Self::Audience(s) | Self::Route(s) | Self::McpServer(s) | Self::Secret(s) => s.clone(),
            Self::Tool { server, tool } => format!("{server}/{tool}"),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{:?}", self.type_name(), self.id())
    }
}

impl FromStr for Resource {
    type Err = String;
    /// Parses `Type::"id"` as written in policies, e.g. `Tool::"github/create_issue"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || {
            format!(
                "resource `{}` is not of the form Type::\"id\" with Type one of Audience, Route, McpServer, Tool, Secret (for example Audience::\"https://api.openai.com\")",
                s.escape_debug()
            )
        };
        let (ty, rest) = s.split_once("::").ok_or_else(shape)?;
        let id = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .ok_or_else(shape)?;
        if id.is_empty() || id.contains('"') || id.contains('\\') {
            return Err(shape());
        }
        let id = id.to_owned();
        Ok(match ty {
            "Audience" => Self::Audience(id),
            "Route" => Self::Route(id),
            "McpServer" => Self::McpServer(id),
            "Secret" => Self::Secret(id),
            "Tool" => {
                let (server, tool) = id
                    .split_once('/')
                    .ok_or_else(|| format!("tool id `{id}` is not `server/tool`"))?;
                Self::Tool {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                }
            }
            _ => return Err(shape()),
        })
    }
}

/// The agent facts a decision sees (copied onto the instance too, so a policy can
/// say `principal.trust == "high"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    /// The agent's name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its environment.
    pub env: String,
    /// Its trust level.
    pub trust: TrustLevel,
    /// Its purpose.
    pub purpose: String,
}

impl From<&crate::agent::Agent> for AgentFacts {
    fn from(a: &crate::agent::Agent) -> Self {
        Self {
            name: a.name.to_string(),
            owner: a.owner.to_string(),
            env: a.env.to_string(),
            trust: a.trust,
            purpose: a.purpose.to_string(),
        }
    }
}

/// The principal: an instance, in its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The agent.
    pub agent: AgentFacts,
    /// The instance id.
    pub instance: String,
    /// How the instance was attested (`unix`, `oidc`, `join`).
    pub attestor: String,
}

/// The user the work is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    /// The user's subject (without the `user:` prefix).
    pub id: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

/// Facts about one proxied HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFacts {
    /// The method, upper-case.
    pub method: String,
    /// The path below the route.
    pub path: String,
    /// The upstream host.
    pub host: String,
}

/// The context of a decision. Keys follow DESIGN §4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The user, absent when the agent acts for itself.
    pub user: Option<UserRef>,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Delegation depth: 0 for an agent acting for itself or first for a user.
    pub depth: u32,
    /// Agent names in the delegation chain.
    pub chain: Vec<String>,
    /// The task id, if any.
    pub task: Option<String>,
    /// The transaction id, if any.
    pub txn: Option<String>,
    /// When the decision is made.
    pub time: Timestamp,
    /// Where the request came from, if over IP.
    pub source_ip: Option<IpAddr>,
    /// Anomaly score, 0 when nothing is unusual.
    pub anomaly_score: i64,
    /// For `http:request`.
    pub http: Option<HttpFacts>,
    /// For `mcp:call_tool`: the call's arguments (a JSON object).
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Context {
    /// A context with nothing but the time set.
    pub fn at(time: Timestamp) -> Self {
        Self {
            user: None,
            scopes: Vec::new(),
            depth: 0,
            chain: Vec::new(),
            task: None,
            txn: None,
            time,
            source_ip: None,
            anomaly_score: 0,
            http: None,
            arguments: None,
        }
    }
}

/// One question for the policy engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRequest {
    /// Who asks.
    pub principal: Principal,
    /// What for.
    pub action: Action,
    /// On what.
    pub resource: Resource,
    /// In which circumstances.
    pub context: Context,
}

/// The effect of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Allowed now.
    Allow,
    /// Refused: no permit applied, a forbid applied, or evaluation failed.
    Deny,
    /// Allowed once a person approves (`@approval("required")` on every permit that applied).
    ApprovalRequired,
}

/// The answer. `decide` never fails: an error is a deny with the error recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The effect.
    pub effect: Effect,
    /// Ids of the policies that determined it (satisfied forbids on a deny,
    /// satisfied permits on an allow; empty for a default deny).
    pub policies: Vec<String>,
    /// Evaluation errors; any error makes the decision a deny.
    pub errors: Vec<String>,
    /// When the effect is [`Effect::ApprovalRequired`]: who may approve and
    /// for how long (the strictest of the permits that asked).
    #[serde(skip)]
    pub approval: Option<crate::approval::ApprovalTerms>,
}

impl Decision {
    /// Whether the request may go ahead now.
    pub fn is_allow(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// The audit outcome for this decision.
    pub fn outcome(&self) -> crate::audit::Outcome {
        match self.effect {
            Effect::Allow => crate::audit::Outcome::Allow,
            Effect::Deny => crate::audit::Outcome::Deny,
            Effect::ApprovalRequired => crate::audit::Outcome::Pending,
        }
    }

    /// The reasons to record: determining policies, then errors, or `default deny`.
    pub fn reasons(&self) -> Vec<String> {
        let mut r: Vec<String> = self.policies.clone();
        r.extend(self.errors.iter().map(|e| format!("error: {e}")));
        if r.is_empty() && self.effect == Effect::Deny {
            r.push("default deny: no permit policy applies".to_owned());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_as_written_in_policies() {
        assert_eq!(
            "Audience::\"https://api.openai.com\""
                .parse::<Resource>()
                .unwrap(),
            Resource::Audience("https://api.openai.com".into())
        );
        assert_eq!(
            "Tool::\"github/create_issue\"".parse::<Resource>().unwrap(),
            Resource::Tool {
                server: "github".into(),
                tool: "create_issue".into()
            }
        );
        for bad in [
            "Audience",
            "Audience::x",
            "Widget::\"x\"",
            "Tool::\"nosep\"",
            "Route::\"\"",
        ] {
            assert!(bad.parse::<Resource>().is_err(), "{bad}");
        }
        let r = Resource::Tool {
            server: "fs".into(),
            tool: "read_file".into(),
        };
        assert_eq!(r.to_string().parse::<Resource>().unwrap(), r);
    }

    #[test]
    fn actions_parse_both_ways() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>().unwrap(), a);
            assert_eq!(format!("Action::\"{a}\"").parse::<Action>().unwrap(), a);
        }
        assert!(
            "token:steal"
                .parse::<Action>()
                .unwrap_err()
                .contains("token:exchange")
        );
    }

    #[test]
    fn default_deny_says_so() {
        let d = Decision {
            effect: Effect::Deny,
            policies: vec![],
            errors: vec![],
            approval: None,
        };
        assert_eq!(d.reasons(), vec!["default deny: no permit policy applies"]);
        assert_eq!(d.outcome(), crate::audit::Outcome::Deny);
    }
}
