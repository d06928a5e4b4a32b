//! The MCP gateway (in progress, issue 6): upstream MCP servers and the
//! pieces the gateway is built from. Not mounted on the edge listener yet.

pub mod stdio;
