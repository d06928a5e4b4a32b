//! The edge: the egress proxy ([`proxy::ProxyService`]) and the MCP gateway
//! ([`mcp::gateway::Gateway`]), the security-critical request path where an
//! agent's every API request and tool call is checked (task token, policy,
//! boundaries) and the real credential injected at the last hop.
//!
//! The edge reaches the rest of the broker only through the traits in
//! [`services`]: it cannot sign an identity, read a key or write the store
//! except through them. Deliberately not here: listeners and routers
//! (warrant-server), token issuance and revocation (warrant-control).
//!
//! Module graph (no cycles): `proxy` and `mcp` each use the shared
//! `boundary`, `refusal`, `task`, `credential`, `upstream` and `redact`
//! modules and never each other.

pub mod boundary;
pub(crate) mod credential;
pub mod mcp;
pub mod metrics;
pub mod proxy;
pub mod redact;
pub(crate) mod refusal;
pub mod services;
pub(crate) mod task;
pub(crate) mod upstream;

#[cfg(test)]
mod testing;
