//! The MCP gateway's JSON-RPC message reader: never panics; a request it
//! reads has a method and a string or numeric id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warrant_edge::mcp::message::{Message, read};

fuzz_target!(|data: &[u8]| {
    if let Ok(Message::Request { id, method, .. }) = read(data) {
        assert!(id.is_string() || id.is_number());
        assert!(!method.is_empty() || method.is_empty());
    }
});
