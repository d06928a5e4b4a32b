//! Reading one JSON-RPC message an agent sent to the MCP gateway.
//!
//! Pure: bytes in, a message or the JSON-RPC error to answer out. The
//! gateway decides on what this returns and forwards only what it decided
//! on (re-serialised), so a message with repeated keys has one reading.

use serde_json::Value;

/// JSON-RPC error codes the gateway answers with (JSON-RPC 2.0 §5.1, the
/// MCP specification, and warrant's own).
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a JSON-RPC request this gateway accepts.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method (or not in this protocol revision).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The method's params are wrong.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway or the upstream failed.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP: the session id names no open session.
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// warrant: refused by policy (or the tool is held for approval).
    pub const REFUSED: i64 = -32003;
    /// MCP 2026-07-28: a header disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// What the agent sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: it has an id and is answered.
    Request {
        /// The id, as sent.
        id: Value,
        /// The method.
        method: String,
        /// The params (`{}` when absent).
        params: Value,
    },
    /// A notification: no id, nothing to answer.
    Notification {
        /// The method.
        method: String,
    },
    /// A response to a server request (the gateway sends none): ignored.
    Response,
}

/// Why a message is refused: the JSON-RPC error code, what to say, and
/// the id to answer with (`null` when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// `-32700` (parse error) or `-32600` (invalid request).
    pub code: i64,
    /// The message.
    pub message: String,
    /// The request's id, if it had one.
    pub id: Value,
}

/// Reads one message.
pub fn read(bytes: &[u8]) -> Result<Message, Invalid> {
    let invalid = |code: i64, message: &str, id: Value| Invalid {
        code,
        message: message.to_owned(),
        id,
    };
    let msg: Value = serde_json::from_slice(bytes).map_err(|e| {
        let why = if e.to_string().contains("recursion limit") {
            "parse error: the message is nested too deeply"
        } else {
            "parse error: the body is not JSON"
        };
        invalid(code::PARSE_ERROR, why, Value::Null)
    })?;
    if msg.is_array() {
        return Err(invalid(
            code::INVALID_REQUEST,
            "batches are not supported: send one JSON-RPC message per request",
            Value::Null,
        ));
    }
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
    let is_2_0 = msg.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let Some(method) = method.filter(|_| is_2_0) else {
        if id.is_none() && (msg.get("result").is_some() || msg.get("error").is_some()) {
            return Ok(Message::Response);
        }
        return Err(invalid(
            code::INVALID_REQUEST,
            "not a JSON-RPC 2.0 request",
            id.unwrap_or(Value::Null),
        ));
    };
    match id {
        None => Ok(Message::Notification { method }),
        Some(id @ (Value::String(_) | Value::Number(_))) => Ok(Message::Request {
            id,
            method,
            params: msg
                .get("params")
                .cloned()
                .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        }),
        Some(_) => Err(invalid(
            code::INVALID_REQUEST,
            "a request's id must be a string or a number",
            Value::Null,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn messages_are_read_or_refused_with_their_code() {
        assert_eq!(
            read(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Ok(Message::Request {
                id: json!(1),
                method: "tools/list".into(),
                params: json!({})
            })
        );
        assert_eq!(
            read(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification {
                method: "notifications/initialized".into()
            })
        );
        assert_eq!(
            read(br#"{"jsonrpc":"2.0","result":{}}"#),
            Ok(Message::Response)
        );
        for (bad, code) in [
            (&b"nope"[..], -32700),
            (b"[]", -32600),
            (br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"method":3}"#, -32600),
        ] {
            assert_eq!(
                read(bad).unwrap_err().code,
                code,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            read(deep.as_bytes())
                .unwrap_err()
                .message
                .contains("deeply")
        );
        // Repeated keys: one reading (the last), which is what is forwarded.
        let Ok(Message::Request { method, .. }) =
            read(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#)
        else {
            panic!()
        };
        assert_eq!(method, "tools/call");
    }

    proptest! {
        #[test]
        fn reading_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = read(&bytes);
        }

        #[test]
        fn a_request_reads_back_as_written(
            id in prop_oneof![any::<i64>().prop_map(|i| json!(i)), "[a-z0-9]{0,8}".prop_map(|s| json!(s))],
            method in "[a-z/_]{1,20}",
            arg in "\\PC{0,20}",
        ) {
            let m = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"a": arg}});
            let got = read(m.to_string().as_bytes()).unwrap();
            prop_assert_eq!(got, Message::Request { id, method, params: json!({"a": arg}) });
        }
    }
}
