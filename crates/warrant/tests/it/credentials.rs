//! Issue 18: every credential an agent's task needs. The official provider
//! SDKs through the egress proxy with nothing changed but their base URL and
//! key; cloud and SaaS credentials obtained by federation (AWS STS, RFC 7523
//! client assertions, RFC 8693 token exchange at a security token service),
//! against peers warrant did not write.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Upstream, World, audit, exchange, identity, put_secret, python, repo, world_with};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// What the upstream gets instead of the task token, per provider: the
/// header and value it must carry.
const PROVIDERS: &[(&str, &str, &str)] = &[
    ("openai", "authorization", "Bearer sk-openai-stored-0123456789"),
    ("anthropic", "x-api-key", "sk-ant-stored-0123456789"),
    ("gemini", "x-goog-api-key", "AIza-gemini-stored-0123456789"),
    ("mistral", "authorization", "Bearer mistral-stored-0123456789"),
    ("cohere", "authorization", "Bearer cohere-stored-0123456789"),
];

const PROVIDER_POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("exchange")
permit(principal, action == Action::"token:exchange", resource);
@id("llm")
permit(principal in Agent::"orch", action == Action::"http:request", resource);
@id("no-embeddings")
forbid(principal, action == Action::"http:request", resource)
when { context.path == "/v1/embeddings" || context.path == "/v2/embed"
    || context.path like "/v1*/models/gemini-denied:*" };
"#;

fn provider_routes(up: &Upstream) -> String {
    let p = up.origin("http");
    format!(
        r#"
[[route]]
name = "openai"
upstream = "{p}"
audience = "https://api.openai.test"
allow = [ {{ methods = ["POST"], paths = ["/v1/chat/completions", "/v1/embeddings"] }} ]
credential = {{ kind = "secret", secret = "openai-key" }}

[[route]]
name = "anthropic"
upstream = "{p}"
audience = "https://api.anthropic.test"
agent_header = "x-api-key"
allow = [ {{ methods = ["POST"], paths = ["/v1/messages"] }} ]
credential = {{ kind = "secret", secret = "anthropic-key", header = "x-api-key" }}

[[route]]
name = "gemini"
upstream = "{p}"
audience = "https://gemini.test"
agent_header = "x-goog-api-key"
allow = [ {{ methods = ["POST"], paths = ["/v1/models/*", "/v1beta/models/*"] }} ]
credential = {{ kind = "secret", secret = "gemini-key", header = "x-goog-api-key" }}

[[route]]
name = "mistral"
upstream = "{p}"
audience = "https://api.mistral.test"
allow = [ {{ methods = ["POST"], paths = ["/v1/chat/completions", "/v1/embeddings"] }} ]
credential = {{ kind = "secret", secret = "mistral-key" }}

[[route]]
name = "cohere"
upstream = "{p}"
audience = "https://api.cohere.test"
allow = [ {{ methods = ["POST"], paths = ["/v2/chat", "/v2/embed"] }} ]
credential = {{ kind = "secret", secret = "cohere-key" }}
"#
    )
}

fn task_token(w: &World, actor: &str, user: &str, audiences: &[&str], scope: &str) -> String {
    let mut extra: Vec<(&str, &str)> = vec![("scope", scope)];
    extra.extend(audiences.iter().map(|a| ("audience", *a)));
    let r = exchange(&w.b, w.users[user].as_str().unwrap(), JWT, actor, &extra);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

/// Requirement 1: openai, anthropic, google-genai, mistralai and cohere,
/// each with only its base URL changed and the task token as its key
/// (wherever that SDK sends it: `Authorization: Bearer`, `x-goog-api-key`).
/// Plain and streamed answers arrive; a refused request and a wrong token
/// come back as each SDK's own 403 and 401 errors; the upstream gets the
/// stored key in the header its API reads, and never a task token.
#[test]
fn each_provider_sdk_works_unchanged_through_the_proxy() {
    let up = Upstream::start(false);
    let w = world_with(4, &provider_routes(&up), PROVIDER_POLICY);
    for (name, _, value) in PROVIDERS {
        let stored = value.strip_prefix("Bearer ").unwrap_or(value);
        put_secret(&w, &format!("{name}-key"), stored, None);
    }
    let orch = identity(&w.b, "orch");
    let audiences = [
        "https://api.openai.test",
        "https://api.anthropic.test",
        "https://gemini.test",
        "https://api.mistral.test",
        "https://api.cohere.test",
    ];
    let token = task_token(&w, &orch, "alice", &audiences, "llm:chat");
    let out = Command::new(python())
        .arg(repo().join("tests/interop/provider_sdks.py"))
        .arg(format!("http://{}", w.b.edge))
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, _, _) in PROVIDERS {
        let sdk = &r[name];
        assert_eq!(sdk["text"], "Hello from upstream", "{name}: {sdk}");
        assert_eq!(
            sdk["streamed"],
            json!(["Hello", " from", " upstream"]),
            "{name} streams: {sdk}"
        );
        assert_eq!(sdk["denied"]["status"], 403, "{name}'s refusal: {sdk}");
        assert!(
            sdk["denied"]["text"].as_str().unwrap().contains("refused_by")
                || sdk["denied"]["text"].as_str().unwrap().contains("does not allow"),
            "{name}: the refusal reaches the caller in words: {sdk}"
        );
        assert_eq!(
            sdk["unauthenticated"]["status"], 401,
            "{name}'s wrong key: {sdk}"
        );
    }
    let seen = up.seen();
    for (name, header, value) in PROVIDERS {
        let path_of = |s: &Value| s["path"].as_str().unwrap().to_owned();
        let mine: Vec<&Value> = seen
            .iter()
            .filter(|s| s["headers"].to_string().contains(value))
            .collect();
        assert_eq!(
            mine.len(),
            2,
            "{name}: the plain and the streamed call, and nothing refused, reach the upstream: {:?}",
            mine.iter().map(|s| path_of(s)).collect::<Vec<_>>()
        );
        for s in mine {
            assert_eq!(s["headers"][header], *value, "{name}: {s}");
        }
    }
    assert_eq!(seen.len(), 2 * PROVIDERS.len(), "{seen:?}");
    for s in &seen {
        let h = s["headers"].to_string();
        assert!(
            !h.contains(&token) && !h.contains("not-a-task-token"),
            "a task token reached the upstream: {s}"
        );
        assert!(
            s["headers"]["x-warrant-txn"].as_str().unwrap().starts_with("txn_")
                && s["headers"]["traceparent"].as_str().unwrap().starts_with("00-"),
            "{s}"
        );
    }
    // Each call recorded with its route and credential (never the value).
    let records = audit(&w.b, Some("proxy.request"));
    for (name, _, value) in PROVIDERS {
        let allowed: Vec<&Value> = records
            .iter()
            .filter(|r| r["resource"] == format!("Route::\"{name}\"") && r["decision"] == "allow")
            .collect();
        assert_eq!(allowed.len(), 2, "{name}: {records:?}");
        for a in allowed {
            assert_eq!(a["credential_type"], "secret");
            assert_eq!(a["credential_id"], format!("{name}-key@v1"));
        }
        assert!(!serde_json::to_string(&records).unwrap().contains(value));
    }
}
