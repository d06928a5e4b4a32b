//! Regression tests for the bypasses an outside review found (issue 12),
//! each through the real binary and named after what it pins. Every test
//! here failed against the broker as it was before the fix.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::delegation::{World, exchange, identity, world_with};
use crate::interop::{python, repo};
use crate::proxy::put_secret;

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Waits until `f` returns `Some`, for up to 20 s.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An agent's view of one MCP server behind the gateway, over the handshake.
pub struct McpClient<'a> {
    pub w: &'a World,
    pub server: String,
    pub token: String,
    pub session: String,
}

impl<'a> McpClient<'a> {
    pub fn url(w: &World, server: &str) -> String {
        format!("http://{}/mcp/{server}", w.b.edge)
    }

    /// A task token of `agent_token` for alice and a session with `server`.
    pub fn open(w: &'a World, agent_token: &str, server: &str, scope: &str) -> Self {
        let aud = Self::url(w, server);
        let r = exchange(
            &w.b,
            w.users["alice"].as_str().unwrap(),
            JWT,
            agent_token,
            &[("scope", scope), ("audience", &aud)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r.json()["access_token"].as_str().unwrap().to_owned();
        let mut c = Self {
            w,
            server: server.to_owned(),
            token,
            session: String::new(),
        };
        let r = c.post(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
        }));
        assert_eq!(r.status, 200, "{}", r.body);
        c.session = r.header("mcp-session-id").unwrap().to_owned();
        c
    }

    pub fn post(&self, body: &Value) -> warrant_testkit::Response {
        let bearer = format!("Bearer {}", self.token);
        let mut h: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("authorization", &bearer),
        ];
        if !self.session.is_empty() {
            h.push(("mcp-session-id", &self.session));
        }
        warrant_testkit::http(
            self.w.b.edge,
            "POST",
            &format!("/mcp/{}", self.server),
            &h,
            Some(&body.to_string()),
        )
    }

    pub fn call(&self, tool: &str, args: Value) -> Value {
        let r = self.post(&json!({
            "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}
        }));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Tool names listed, or `None` while the upstream cannot be listed.
    pub fn list(&self) -> Option<Vec<String>> {
        let r = self.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}));
        let j = r.json();
        let mut names: Vec<String> = j["result"]["tools"]
            .as_array()?
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        Some(names)
    }
}

fn tool(name: &str, arg_type: &str) -> Value {
    json!({
        "name": name,
        "description": format!("Reads a note ({arg_type} name)"),
        "inputSchema": {"type": "object", "properties": {"name": {"type": arg_type}}, "required": ["name"]}
    })
}

const NOTES_POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("exchange")
permit(principal, action == Action::"token:exchange", resource);
@id("notes")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource in McpServer::"notes");
@id("no-private-notes")
forbid(principal, action == Action::"mcp:call_tool", resource == Tool::"notes/read_note")
when { context.arguments has name && context.arguments.name like "private*" };
"#;

/// Issue 12, item 1: a tool added to a pinned server, declaring an argument
/// with another type, switched off an argument `forbid` on another tool
/// (the types were merged across tools and the conflicting one dropped).
/// Also: a server whose secret was stored after start left an argument
/// policy unenforceable until a restart.
#[test]
fn a_new_tool_cannot_switch_off_an_argument_forbid() {
    let dir = tempfile::tempdir().unwrap();
    let tools_file = dir.path().join("tools.json");
    std::fs::write(
        &tools_file,
        serde_json::to_string(&[tool("read_note", "string")]).unwrap(),
    )
    .unwrap();
    let config = format!(
        r#"
[[mcp_server]]
name = "notes"
command = "{python}"
args = ["{server}", "{tools}"]
env = {{ NOTES_KEY = "secret:notes-key", NOTES_KEY_REQUIRED = "1" }}
"#,
        python = python().display(),
        server = repo().join("tests/interop/mcp_dynamic_server.py").display(),
        tools = tools_file.display(),
    );
    // The server cannot start yet: its secret is not stored. The policy on
    // `read_note`'s arguments loads anyway, waiting to be checked.
    let w = world_with(4, &config, NOTES_POLICY);
    let shown = w.b.cli(&["policy", "show"]).ok().to_owned();
    assert!(shown.contains("not yet checked"), "{shown}");
    put_secret(&w, "notes-key", "notes-key-0123456789", None);
    let orch = identity(&w.b, "orch");
    let c = McpClient::open(&w, &orch, "notes", "notes:read");
    let listed = eventually("the notes server to start", || c.list());
    assert_eq!(listed, ["read_note"]);
    // Enforced at once, with no restart.
    let r = c.call("read_note", json!({"name": "private-diary"}));
    assert_eq!(r["error"]["data"]["refused_by"], "policy (forbid)", "{r}");
    assert_eq!(r["error"]["data"]["policies"], json!(["no-private-notes"]));
    let r = c.call("read_note", json!({"name": "public"}));
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("public"),
        "{r}"
    );

    // The server grows a tool typing `name` as an integer.
    std::fs::write(
        &tools_file,
        serde_json::to_string(&[tool("read_note", "string"), tool("Read_note", "integer")])
            .unwrap(),
    )
    .unwrap();
    // The server announces the change; the gateway lists again on next use.
    let pins = eventually("the new tool to be seen", || {
        c.list();
        let pins =
            w.b.cli(&["mcp", "tools", "notes", "--output", "json"])
                .json();
        (pins.as_array().unwrap().len() == 2).then_some(pins)
    });
    let new = pins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tool"] == "Read_note")
        .unwrap();
    assert_eq!(new["state"], "new", "{pins}");
    // Held: not listed, not callable, until approved.
    assert_eq!(c.list().unwrap(), ["read_note"]);
    let r = c.call("Read_note", json!({"name": 1}));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("warrant mcp approve notes Read_note"),
        "{r}"
    );
    // The forbid on read_note still applies.
    let r = c.call("read_note", json!({"name": "private-diary"}));
    assert_eq!(r["error"]["data"]["refused_by"], "policy (forbid)", "{r}");

    // Approved, the new tool is typed with its own schema, and read_note keeps its.
    w.b.cli(&["mcp", "approve", "notes", "Read_note"]).ok();
    assert_eq!(c.list().unwrap(), ["Read_note", "read_note"]);
    let r = c.call("Read_note", json!({"name": 7}));
    assert!(r.get("result").is_some(), "{r}");
    let r = c.call("read_note", json!({"name": "private-diary"}));
    assert_eq!(r["error"]["data"]["refused_by"], "policy (forbid)", "{r}");
    let r = c.call("Read_note", json!({"name": "private-diary"}));
    assert_eq!(r["error"]["data"]["refused_by"], "policy (error)", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not of type Long"),
        "{r}"
    );
    let held = crate::audit(&w.b, Some("mcp.tool.new"));
    assert_eq!(held.len(), 1, "{held:?}");
}

/// Issue 12, item 1: a policy naming an argument its tool does not have is
/// refused (by `policy validate`, against the broker's pinned tools, and by
/// reload), not loaded as a condition that never holds; fixed, it takes
/// effect at once.
#[test]
fn a_policy_naming_a_missing_argument_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tools_file = dir.path().join("tools.json");
    std::fs::write(
        &tools_file,
        serde_json::to_string(&[tool("read_note", "string")]).unwrap(),
    )
    .unwrap();
    let config = format!(
        r#"
[[mcp_server]]
name = "notes"
command = "{python}"
args = ["{server}", "{tools}"]
"#,
        python = python().display(),
        server = repo().join("tests/interop/mcp_dynamic_server.py").display(),
        tools = tools_file.display(),
    );
    let w = world_with(4, &config, NOTES_POLICY);
    let orch = identity(&w.b, "orch");
    let c = McpClient::open(&w, &orch, "notes", "notes:read");
    eventually("the notes server to be listed", || c.list());
    let typo = NOTES_POLICY.replace(
        "context.arguments has name && context.arguments.name",
        "context.arguments has nmae && context.arguments.nmae",
    );
    let file = w.b.data_dir.join("policies/delegation.cedar");
    std::fs::write(&file, &typo).unwrap();
    let v = w.b.cli(&["policy", "validate"]);
    assert_ne!(v.code, 0, "{}", v.stdout);
    assert!(
        v.stderr.contains("never apply") && v.stderr.contains("notes/read_note"),
        "{}",
        v.stderr
    );
    let r = w.b.cli(&["policy", "reload"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("never apply"), "{}", r.stderr);
    // The set in force still refuses private notes.
    let r = c.call("read_note", json!({"name": "private-diary"}));
    assert_eq!(r["error"]["data"]["refused_by"], "policy (forbid)", "{r}");
    // Offline, the tool's arguments are unknown: said plainly.
    let off = w.b.cli(&["policy", "validate", "--offline"]);
    assert_eq!(off.code, 0, "{}", off.stderr);
    assert!(off.stderr.contains("not yet checked"), "{}", off.stderr);
    // A fix takes effect at once.
    let fixed = NOTES_POLICY.replace("\"private*\"", "\"secret*\"");
    std::fs::write(&file, &fixed).unwrap();
    w.b.cli(&["policy", "validate"]).ok();
    w.b.cli(&["policy", "reload"]).ok();
    let r = c.call("read_note", json!({"name": "secret-plan"}));
    assert_eq!(r["error"]["data"]["refused_by"], "policy (forbid)", "{r}");
    let r = c.call("read_note", json!({"name": "private-diary"}));
    assert!(r.get("result").is_some(), "{r}");
}

/// Issue 12, item 3: an identity token (typ `JWT`, the broker's keys, an
/// audience the agent chose) could stand in for a `warrant_jwt` upstream
/// credential. Identity tokens are no longer issued for the audience of a
/// route or MCP server, and the upstream credential has its own `typ`
/// (checked in proxy.rs, where the minted credential is read).
#[test]
fn an_identity_token_is_never_issued_for_a_task_audience() {
    let config = r#"
[[route]]
name = "internal"
upstream = "http://127.0.0.1:9"
audience = "https://internal.test"
allow = [ { methods = ["GET"], paths = ["/**"] } ]
credential = { kind = "warrant_jwt" }

[[mcp_server]]
name = "notes"
url = "http://127.0.0.1:9/mcp"
"#;
    let policy = r#"permit(principal, action == Action::"identity:issue", resource);"#;
    let w = world_with(4, config, policy);
    let attest = |audience: &str| {
        let jt = w
            .b
            .cli(&["agent", "join-token", "orch"])
            .ok()
            .trim()
            .to_owned();
        crate::post_json(
            &w.b,
            "/v1/attest/join",
            &json!({ "token": jt, "audience": audience }),
        )
    };
    let mcp = McpClient::url(&w, "notes");
    for aud in ["https://internal.test", mcp.as_str()] {
        let r = attest(aud);
        assert_eq!(r.status, 403, "{aud}: {}", r.body);
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("only task tokens"),
            "{}",
            r.body
        );
    }
    // Other audiences are still the policy's to decide.
    let r = attest("https://relying-party.test");
    assert_eq!(r.status, 200, "{}", r.body);
    let refused = crate::audit(&w.b, Some("attest.join"));
    assert_eq!(
        refused.iter().filter(|r| r["decision"] == "deny").count(),
        2,
        "both refusals are audited"
    );
}
