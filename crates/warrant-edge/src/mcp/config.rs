//! `[[mcp_server]]` tables: the upstream MCP servers behind the gateway.
//!
//! Each is reached over Streamable HTTP (`url`, with a credential provider
//! as routes have) or spawned over stdio (`command`, `args`, `env`, where a
//! value `secret:<name>` is resolved from the store into the child only).
//! Agents reach it at `http://<edge>/mcp/<name>` with a task token whose
//! audience is the server's `audience` (default: that URL).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use warrant_core::secret::SecretName;
use warrant_core::task::ScopeSet;

use super::stdio::{EnvValue, StdioSpec};
use crate::credential::config::{Credential, RawCredential};
use crate::upstream::{Origin, Scheme};

/// The default wait for an upstream's answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default largest JSON-RPC message an agent may send.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 4 * 1024 * 1024;

/// One `[[mcp_server]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    /// `http://<edge>/mcp/<name>`.
    pub name: String,
    /// A Streamable HTTP upstream.
    pub url: Option<String>,
    /// A stdio upstream: the program.
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment (`secret:<name>` values come from the store).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The HTTP upstream's credential.
    pub credential: Option<RawCredential>,
    /// CAs trusted for the HTTP upstream instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Permit `http://` beyond loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The audience task tokens must carry (default: the gateway URL).
    pub audience: Option<String>,
    /// Scopes a task token must hold to use this server, space-separated.
    pub scope: Option<String>,
    /// Record tool-call arguments in full in the audit trail (default: a
    /// digest and size only).
    #[serde(default)]
    pub record_arguments: bool,
    /// Wait for an upstream answer (`60s`).
    pub timeout: Option<String>,
    /// The largest JSON-RPC message an agent may send.
    pub max_message_bytes: Option<u64>,
    /// What happens to a tool that appears on a server whose tools are
    /// already pinned: `hold` (default: hidden and refused until `warrant
    /// mcp approve`) or `pin` (pinned on sight, trusting the server).
    pub new_tools: Option<String>,
}

/// How the gateway reaches the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP.
    Http {
        /// The endpoint.
        url: url::Url,
        /// Its origin (where the credential may go).
        origin: Origin,
        /// The credential, if the upstream wants one.
        credential: Option<Box<Credential>>,
        /// CAs trusted instead of the system's.
        ca_file: Option<PathBuf>,
    },
    /// A child process.
    Stdio(StdioSpec),
}

/// A validated `[[mcp_server]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerConfig {
    /// The name.
    pub name: String,
    /// How it is reached.
    pub transport: Transport,
    /// The audience, if configured (else the gateway URL, known at start).
    pub audience: Option<String>,
    /// Scopes a task token must hold.
    pub scope: Option<ScopeSet>,
    /// Record arguments in full.
    pub record_arguments: bool,
    /// Wait for an upstream answer.
    pub timeout: Duration,
    /// The largest message an agent may send.
    pub max_message_bytes: u64,
    /// Whether a tool appearing on an already-pinned server waits for
    /// approval.
    pub hold_new_tools: bool,
}

impl RawMcpServer {
    /// Validates; `resolve` makes relative paths relative to the config file.
    pub fn build(self, resolve: impl Fn(PathBuf) -> PathBuf) -> Result<McpServerConfig, String> {
        let name = self.name;
        crate::boundary::check_name(&name)?;
        let transport = match (self.url, self.command) {
            (Some(u), None) => {
                if !self.args.is_empty() || !self.env.is_empty() {
                    return Err(
                        "args and env are for a stdio server (`command`), not a `url`".into(),
                    );
                }
                let origin = Origin::parse(&u, "url")?;
                let url = url::Url::parse(&u).map_err(|e| e.to_string())?;
                if origin.scheme == Scheme::Http && !origin.is_loopback() && !self.allow_plaintext {
                    return Err(format!(
                        "url `{}` is plain http to a host that is not loopback; use https, or set allow_plaintext = true",
                        crate::upstream::shown_url(&u)
                    ));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(format!(
                        "url `{}` must not have a query or fragment",
                        crate::upstream::shown_url(&u)
                    ));
                }
                let credential = match self.credential {
                    Some(c) => {
                        let c = c.build(self.allow_plaintext, &resolve)?;
                        if matches!(c, Credential::Mtls { .. } | Credential::AwsSts(_)) {
                            return Err(format!(
                                "credential kind `{}` is for [[route]]s; an MCP server's credential goes in a header",
                                c.kind()
                            ));
                        }
                        Some(Box::new(c))
                    }
                    None => None,
                };
                Transport::Http {
                    url,
                    origin,
                    credential,
                    ca_file: self.ca_file.map(&resolve),
                }
            }
            (None, Some(command)) => {
                if command.is_empty() {
                    return Err("command is empty".into());
                }
                if self.credential.is_some() || self.ca_file.is_some() {
                    return Err(
                        "credential and ca_file are for a `url` server; a stdio server gets its secrets through env = { NAME = \"secret:<name>\" }"
                            .into(),
                    );
                }
                let mut env = Vec::new();
                for (k, v) in self.env {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(format!("env name `{}` is not valid", k.escape_debug()));
                    }
                    let value = match v.strip_prefix("secret:") {
                        Some(s) => EnvValue::Secret(
                            SecretName::new(s).map_err(|e| format!("env {k}: {e}"))?,
                        ),
                        None => EnvValue::Plain(v),
                    };
                    env.push((k, value));
                }
                Transport::Stdio(StdioSpec {
                    command,
                    args: self.args,
                    env,
                })
            }
            _ => return Err("set exactly one of url (Streamable HTTP) and command (stdio)".into()),
        };
        if let Some(a) = &self.audience
            && (a.is_empty() || a.len() > 512 || a.chars().any(char::is_control))
        {
            return Err("audience must be 1 to 512 characters without control characters".into());
        }
        let scope = match self.scope {
            Some(s) => Some(ScopeSet::parse(&s).map_err(|e| format!("scope: {e}"))?),
            None => None,
        };
        let timeout = match self.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => {
                let d = humantime::parse_duration(&t).map_err(|_| {
                    format!(
                        "timeout `{}` is not a duration like `60s`",
                        t.escape_debug()
                    )
                })?;
                if d.is_zero() || d > Duration::from_secs(3600) {
                    return Err(format!("timeout `{t}` must be more than 0 and at most 1h"));
                }
                d
            }
        };
        let hold_new_tools = match self.new_tools.as_deref() {
            None | Some("hold") => true,
            Some("pin") => false,
            Some(other) => {
                return Err(format!(
                    "new_tools `{}` is not understood; use \"hold\" (the default: new tools wait for `warrant mcp approve`) or \"pin\"",
                    other.escape_debug()
                ));
            }
        };
        Ok(McpServerConfig {
            hold_new_tools,
            name,
            transport,
            audience: self.audience,
            scope,
            record_arguments: self.record_arguments,
            timeout,
            max_message_bytes: match self.max_message_bytes {
                None => DEFAULT_MAX_MESSAGE_BYTES,
                Some(0) => return Err("max_message_bytes must be more than 0".into()),
                Some(n) => n,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(t: &str) -> Result<McpServerConfig, String> {
        toml::from_str::<RawMcpServer>(t)
            .map_err(|e| e.to_string())?
            .build(|p| p)
    }

    #[test]
    fn both_transports_parse() {
        let s = build("name = \"files\"\ncommand = \"python3\"\nargs = [\"-m\", \"files\"]\nenv = { FILES_API_KEY = \"secret:files-key\", MODE = \"ro\" }\nscope = \"files:read\"\n").unwrap();
        let Transport::Stdio(spec) = &s.transport else {
            panic!()
        };
        assert_eq!(
            spec.env[0],
            (
                "FILES_API_KEY".into(),
                EnvValue::Secret(SecretName::new("files-key").unwrap())
            )
        );
        assert_eq!(spec.env[1], ("MODE".into(), EnvValue::Plain("ro".into())));
        assert_eq!(s.scope.unwrap().to_string(), "files:read");
        let h = build("name = \"github\"\nurl = \"https://mcp.example.com/mcp\"\ncredential = { kind = \"secret\", secret = \"gh-mcp\" }\n").unwrap();
        let Transport::Http {
            url, credential, ..
        } = &h.transport
        else {
            panic!()
        };
        assert_eq!(url.path(), "/mcp");
        assert_eq!(credential.as_ref().unwrap().kind(), "secret");
    }

    #[test]
    fn bad_servers_say_what_to_fix() {
        for (t, needle) in [
            ("name = \"x\"\n", "exactly one of url"),
            (
                "name = \"x\"\nurl = \"https://a\"\ncommand = \"b\"\n",
                "exactly one of url",
            ),
            (
                "name = \"x\"\nurl = \"http://mcp.example.com/mcp\"\n",
                "plain http",
            ),
            (
                "name = \"x\"\ncommand = \"p\"\nenv = { K = \"secret:Bad Name\" }\n",
                "not valid",
            ),
            (
                "name = \"x\"\ncommand = \"p\"\ncredential = { kind = \"secret\", secret = \"k\" }\n",
                "stdio server gets its secrets",
            ),
            ("name = \"X\"\ncommand = \"p\"\n", "lower-case"),
            ("name = \"x\"\ncommand = \"p\"\nbogus = 1\n", "bogus"),
            (
                "name = \"x\"\ncommand = \"p\"\nnew_tools = \"allow\"\n",
                "new_tools `allow`",
            ),
        ] {
            let e = build(t).unwrap_err();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }
}
