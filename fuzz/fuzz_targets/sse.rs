//! The reader of an MCP upstream's server-sent-event stream: never panics;
//! what it returns is a JSON-RPC answer or nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let found = warrant_edge::mcp::http::last_message(data, Some(&serde_json::json!(7)));
    if !found.is_empty() {
        let v: serde_json::Value = serde_json::from_slice(&found).expect("JSON");
        assert!(v.get("result").is_some() || v.get("error").is_some());
    }
});
