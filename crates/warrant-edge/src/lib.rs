//! The edge: the egress proxy ([`proxy::ProxyService`]) and the MCP gateway
//! ([`mcp::gateway::Gateway`]), the security-critical request path where an
//! agent's every API request and tool call is checked (task token, policy,
//! boundaries) and the real credential injected at the last hop.
//!
//! The edge reaches the rest of the broker only through the traits in
//! [`services`]: it cannot sign an identity, read a key or write the store
//! except through them. Deliberately not here: listeners and routers
//! (warrant-server), token issuance and revocation (warrant-control).

pub mod mcp;
pub mod metrics;
pub mod proxy;
pub mod services;

#[cfg(test)]
mod testing;
