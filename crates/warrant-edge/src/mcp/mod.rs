//! The MCP gateway: agents reach upstream MCP servers at
//! `http://<edge>/mcp/<server>` with their task tokens; warrant is the OAuth
//! resource server, decides every tool call with its arguments, filters
//! `tools/list`, pins tool definitions, and gives the upstream its own
//! credential. See [`gateway`].

pub mod config;
pub mod gateway;
pub mod http;
pub mod message;
pub mod stdio;

use std::time::Duration;

use serde_json::Value;
use warrant_core::mcp::{ToolArguments, ToolPin};

use crate::credential::Providers;
use stdio::UpstreamError;

/// An upstream MCP server, however it is reached.
#[derive(Debug)]
pub enum Upstream {
    /// A supervised child process.
    Stdio(Box<stdio::StdioUpstream>),
    /// Streamable HTTP.
    Http(Box<http::HttpUpstream>),
}

impl Upstream {
    /// Changes whenever the upstream process was started again.
    pub fn generation(&self) -> u64 {
        match self {
            Self::Stdio(s) => s.generation(),
            Self::Http(_) => 0,
        }
    }

    /// Sends a request and waits for its result.
    pub async fn call(
        &self,
        providers: &Providers<'_>,
        method: &str,
        params: Value,
        timeout: Duration,
        task: Option<&warrant_core::task::TaskUse>,
    ) -> Result<Value, UpstreamError> {
        match self {
            Self::Stdio(s) => s.call(method, params, timeout).await,
            Self::Http(h) => h.call(providers, method, params, timeout, task).await,
        }
    }
}

/// The argument attributes policies may name, per tool: those of the
/// approved definitions of the configured servers' tools.
pub fn arguments_of(pins: &[ToolPin], servers: &[&str]) -> ToolArguments {
    ToolArguments::from_pins(pins, servers)
}
