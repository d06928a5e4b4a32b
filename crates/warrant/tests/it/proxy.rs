//! The egress proxy and the secret store, through the real binary, against a
//! local upstream (tests/interop/upstream.py) that records what it receives.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{
    Upstream, World, audit, bin, exchange, identity, jwt_claims, jwt_header, put_secret, python,
    repo, world_with,
};
use warrant_testkit::{Response, raw};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const KEY: &str = "sk-live-proxy-test-0123456789abcdef";

const POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("exchange")
permit(principal, action == Action::"token:exchange", resource);
@id("self")
permit(principal, action == Action::"token:self", resource);
@id("egress")
permit(principal in Agent::"orch", action == Action::"http:request", resource)
when { !(context has user) || context.groups.contains("login.test/support") || resource == Route::"gh" };
@id("no-forbidden-path")
forbid(principal, action == Action::"http:request", resource == Route::"openai")
when { context.path == "/v1/forbidden" || context.path == "/v1/embeddings" };
"#;

fn routes(plain: &Upstream, tls: &Upstream) -> String {
    let p = plain.origin("http");
    let t = tls.origin("https");
    format!(
        r#"
[[route]]
name = "openai"
upstream = "{p}"
audience = "https://api.openai.test"
allow = [ {{ methods = ["POST"], paths = ["/v1/chat/completions", "/v1/embeddings", "/v1/forbidden", "/big"] }}, {{ methods = ["GET"], paths = ["/echo", "/redirect", "/v1/models/*"] }} ]
credential = {{ kind = "secret", secret = "openai-key" }}
max_request_bytes = 1048576

[[route]]
name = "gh"
upstream = "{p}"
audience = "https://gh.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "per_user_secret", secret = "gh-token", header = "authorization", format = "token {{secret}}" }}

[[route]]
name = "keyed"
upstream = "{p}"
audience = "https://keyed.test"
agent_header = "x-api-key"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "secret", secret = "openai-key" }}

[[route]]
name = "internal"
upstream = "{p}"
audience = "https://internal.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "warrant_jwt" }}

[[route]]
name = "crm"
upstream = "{p}"
audience = "https://crm.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "oauth2_client_credentials", token_url = "{p}/oauth/token", client_id = "warrant", client_secret = "crm-secret", scope = "read" }}

[[route]]
name = "jira"
upstream = "{p}"
audience = "https://jira.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "basic", secret = "jira" }}

[[route]]
name = "private"
upstream = "{t}"
audience = "https://private.test"
ca_file = "{ca}"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "secret", secret = "openai-key" }}

[[route]]
name = "untrusted"
upstream = "{t}"
audience = "https://untrusted.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "secret", secret = "openai-key" }}
"#,
        ca = tls.ca().display()
    )
}

const AUDIENCES: &[&str] = &[
    "https://api.openai.test",
    "https://gh.test",
    "https://keyed.test",
    "https://internal.test",
    "https://crm.test",
    "https://jira.test",
    "https://private.test",
    "https://untrusted.test",
];

/// A task token for `user`'s token, acted by orch, for every test audience.
fn task_token(w: &World, orch: &str, user: &str) -> String {
    let mut extra: Vec<(&str, &str)> = vec![("scope", "llm:chat")];
    extra.extend(AUDIENCES.iter().map(|a| ("audience", *a)));
    let r = exchange(&w.b, w.users[user].as_str().unwrap(), JWT, orch, &extra);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

/// A request to the edge with the task token as a bearer token.
fn edge(
    w: &World,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(b) = &bearer {
        h.push(("authorization", b));
    }
    h.extend_from_slice(extra);
    warrant_testkit::http(w.b.edge, method, path, &h, body)
}

fn setup() -> (World, Upstream, Upstream) {
    let plain = Upstream::start(false);
    let tls = Upstream::start(true);
    let w = world_with(4, &routes(&plain, &tls), POLICY);
    put_secret(&w, "openai-key", KEY, None);
    put_secret(
        &w,
        "gh-token",
        "gh-alice-0123456789",
        Some("login.test/alice"),
    );
    put_secret(&w, "crm-secret", "crm-client-secret-0123456789", None);
    put_secret(&w, "jira", "robot:jira-pass-0123456789", None);
    (w, plain, tls)
}

fn last(up: &Upstream) -> Value {
    up.seen()
        .last()
        .cloned()
        .expect("the upstream received nothing")
}

fn proxy_records(w: &World) -> Vec<Value> {
    audit(&w.b, Some("proxy.request"))
}

#[test]
fn stored_per_user_and_basic_credentials_are_injected_at_the_last_hop() {
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    let txn = jwt_claims(&token)["txn"].as_str().unwrap().to_owned();

    // A stored secret, in place of the task token.
    let r = edge(
        &w,
        "POST",
        "/openai/v1/chat/completions",
        Some(&token),
        &[
            ("content-type", "application/json"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
        Some(r#"{"model":"m","messages":[]}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from upstream"
    );
    let got = last(&up);
    assert_eq!(got["path"], "/v1/chat/completions");
    assert_eq!(got["headers"]["authorization"], format!("Bearer {KEY}"));
    assert_eq!(got["headers"]["host"], format!("127.0.0.1:{}", up.port));
    assert_eq!(got["headers"]["x-warrant-txn"], txn.as_str());
    assert_eq!(
        got["headers"]["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert!(
        !got.to_string().contains(&token),
        "the task token never reaches the upstream"
    );

    // Per-user: alice's own GitHub token.
    let r = edge(&w, "GET", "/gh/user/repos?page=2", Some(&token), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let got = last(&up);
    assert_eq!(got["path"], "/user/repos?page=2");
    assert_eq!(got["headers"]["authorization"], "token gh-alice-0123456789");

    // An agent header other than authorization (x-api-key SDKs).
    let r = warrant_testkit::http(
        w.b.edge,
        "GET",
        "/keyed/v1/models",
        &[("x-api-key", &token)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = last(&up);
    assert_eq!(got["headers"]["authorization"], format!("Bearer {KEY}"));
    assert!(got["headers"].get("x-api-key").is_none());

    // Basic auth from a user:password secret.
    let r = edge(
        &w,
        "GET",
        "/jira/rest/api/2/myself",
        Some(&token),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("robot:jira-pass-0123456789");
    assert_eq!(
        last(&up)["headers"]["authorization"],
        format!("Basic {basic}")
    );

    // The trail: one record per request, with the credential's id and kind,
    // never a value.
    let ok =
        crate::support::audit_until(&w.b, Some("proxy.request"), 4, |r| r["decision"] == "allow");
    let ok: Vec<&Value> = ok.iter().collect();
    assert!(ok.len() >= 4, "{}", ok.len());
    let first = ok
        .iter()
        .find(|r| r["resource"] == "Route::\"openai\"")
        .unwrap();
    assert_eq!(first["credential_type"], "secret");
    assert_eq!(first["credential_id"], "openai-key@v1");
    assert_eq!(first["detail"]["status"], 200);
    assert_eq!(first["reasons"], json!(["egress"]));
    assert_eq!(first["txn"], txn.as_str());
    assert!(first["detail"]["bytes_out"].as_u64().unwrap() > 50);
    let everything =
        w.b.cli(&["audit", "list", "--output", "json", "--limit", "10000"])
            .stdout;
    for secret in [
        KEY,
        "gh-alice-0123456789",
        "crm-client-secret-0123456789",
        "jira-pass-0123456789",
        "upstream-at-1",
    ] {
        assert!(
            !everything.contains(secret),
            "`{secret}` reached the audit trail"
        );
        assert!(!w.b.logs().contains(secret), "`{secret}` reached the log");
    }
    let metrics = warrant_testkit::http(w.b.api, "GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains("warrant_proxy_requests_total{route=\"openai\",decision=\"forwarded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warrant_proxy_added_seconds_bucket{"),
        "{metrics}"
    );
}

/// A JWT warrant mints for the route names who asked and which agents act,
/// and is never accepted as a task token.
#[test]
fn a_minted_upstream_jwt_names_the_chain_and_is_never_a_task_token() {
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    let txn = jwt_claims(&token)["txn"].as_str().unwrap().to_owned();
    // A JWT minted for the route: who asked and which agents act.
    let r = edge(&w, "GET", "/internal/whoami", Some(&token), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let minted = last(&up)["headers"]["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let c = jwt_claims(&minted);
    assert_eq!(jwt_header(&minted)["typ"], "warrant-upstream+jwt");
    assert_eq!(c["aud"], "https://internal.test");
    assert_eq!(c["sub"], "user:login.test/alice");
    assert_eq!(c["act"]["sub"], jwt_claims(&orch)["sub"]);
    assert_eq!(c["txn"], txn.as_str());
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 60);
    // ...and it is never a task token, here or anywhere.
    let before = up.seen().len();
    let r = edge(&w, "GET", "/internal/whoami", Some(&minted), &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(up.seen().len(), before);
}

/// OAuth client credentials: fetched once, even by concurrent requests,
/// and neither the client secret nor the token reaches the trail or log.
#[test]
fn an_oauth_token_is_fetched_once_for_concurrent_requests() {
    use base64::Engine as _;
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    // OAuth client credentials: fetched once, even by concurrent requests.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (edge_addr, t) = (w.b.edge, token.clone());
            std::thread::spawn(move || {
                warrant_testkit::http(
                    edge_addr,
                    "GET",
                    "/crm/accounts",
                    &[("authorization", &format!("Bearer {t}"))],
                    None,
                )
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let seen = up.seen();
    let token_calls: Vec<&Value> = seen
        .iter()
        .filter(|r| r["path"] == "/oauth/token")
        .collect();
    assert_eq!(
        token_calls.len(),
        1,
        "one token request for eight concurrent calls"
    );
    assert_eq!(
        token_calls[0]["headers"]["authorization"],
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode("warrant:crm-client-secret-0123456789")
        )
    );
    assert!(
        seen.iter()
            .filter(|r| r["path"] == "/accounts")
            .all(|r| r["headers"]["authorization"] == "Bearer upstream-at-1-abcdefgh")
    );
    let everything =
        w.b.cli(&["audit", "list", "--output", "json", "--limit", "10000"])
            .stdout;
    for secret in ["crm-client-secret-0123456789", "upstream-at-1"] {
        assert!(
            !everything.contains(secret),
            "`{secret}` reached the audit trail"
        );
        assert!(!w.b.logs().contains(secret), "`{secret}` reached the log");
    }
}

/// TLS to a private CA named in `ca_file`; without it the upstream is not
/// trusted and nothing is sent there.
#[test]
fn a_private_ca_is_trusted_only_where_it_is_named() {
    let (w, _up, tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    // TLS to a private CA named in ca_file; without it the upstream is not trusted
    // and nothing is sent there.
    let r = edge(&w, "GET", "/private/v1/models/m", Some(&token), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        last(&tls)["headers"]["authorization"],
        format!("Bearer {KEY}")
    );
    let before = tls.seen().len();
    let r = edge(&w, "GET", "/untrusted/v1/models/m", Some(&token), &[], None);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(tls.seen().len(), before);
}

/// Every refusal: a clear status, nothing forwarded, one audit record.
#[test]
fn bad_requests_are_refused_before_any_upstream_contact() {
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    let edge_addr: SocketAddr = w.b.edge;
    let host = format!("{edge_addr}");
    let chat = r#"{"model":"m","messages":[]}"#;

    // A token for another audience only.
    let r = exchange(
        &w.b,
        w.users["alice"].as_str().unwrap(),
        JWT,
        &orch,
        &[
            ("scope", "llm:chat"),
            ("audience", "https://elsewhere.test"),
        ],
    );
    let other_aud = r.json()["access_token"].as_str().unwrap().to_owned();
    // bob has no gh-token of his own.
    let r = exchange(
        &w.b,
        w.users["bob"].as_str().unwrap(),
        JWT,
        &orch,
        &[("scope", "llm:chat"), ("audience", "https://gh.test")],
    );
    let bob = r.json()["access_token"].as_str().unwrap().to_owned();

    let cases: Vec<(&str, Response, u16, &str)> = vec![
        (
            "no token",
            edge(
                &w,
                "POST",
                "/openai/v1/chat/completions",
                None,
                &[],
                Some(chat),
            ),
            401,
            "task token",
        ),
        (
            "another audience",
            edge(
                &w,
                "POST",
                "/openai/v1/chat/completions",
                Some(&other_aud),
                &[],
                Some(chat),
            ),
            401,
            "audience",
        ),
        (
            "an identity token",
            edge(
                &w,
                "POST",
                "/openai/v1/chat/completions",
                Some(&orch),
                &[],
                Some(chat),
            ),
            401,
            "identity token",
        ),
        (
            "garbage",
            edge(
                &w,
                "POST",
                "/openai/v1/chat/completions",
                Some("not.a.jwt"),
                &[],
                Some(chat),
            ),
            401,
            "",
        ),
        (
            "method outside allow",
            edge(
                &w,
                "GET",
                "/openai/v1/chat/completions",
                Some(&token),
                &[],
                None,
            ),
            403,
            "does not allow GET",
        ),
        (
            "path outside allow",
            edge(
                &w,
                "POST",
                "/openai/v1/files",
                Some(&token),
                &[],
                Some("{}"),
            ),
            403,
            "does not allow POST",
        ),
        (
            "policy forbid",
            edge(
                &w,
                "POST",
                "/openai/v1/forbidden",
                Some(&token),
                &[],
                Some("{}"),
            ),
            403,
            "policy does not allow",
        ),
        (
            "dot-dot",
            edge(
                &w,
                "GET",
                "/openai/v1/models/../../admin",
                Some(&token),
                &[],
                None,
            ),
            400,
            "`..`",
        ),
        (
            "encoded dot-dot",
            edge(
                &w,
                "GET",
                "/openai/v1/models/%2e%2e%2fadmin",
                Some(&token),
                &[],
                None,
            ),
            400,
            "encodes",
        ),
        (
            "own authorization",
            warrant_testkit::http(
                edge_addr,
                "GET",
                "/keyed/v1/models",
                &[("x-api-key", &token), ("authorization", "Bearer sk-mine")],
                None,
            ),
            401,
            "two different tokens",
        ),
        (
            "own authorization of another scheme",
            warrant_testkit::http(
                edge_addr,
                "GET",
                "/keyed/v1/models",
                &[
                    ("x-api-key", &token),
                    ("authorization", "Basic c2stbWluZQ=="),
                ],
                None,
            ),
            401,
            "must be `Bearer <task token>`",
        ),
        (
            "per-user without a secret",
            edge(&w, "GET", "/gh/user", Some(&bob), &[], None),
            403,
            "no secret `gh-token` is stored for user `login.test/bob`",
        ),
        (
            "unknown route",
            edge(&w, "GET", "/nope/x", Some(&token), &[], None),
            404,
            "`nope`",
        ),
        (
            "absolute-form",
            raw(
                edge_addr,
                &format!(
                    "GET http://127.0.0.1:{}/echo HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n",
                    up.port
                ),
                b"",
            ),
            400,
            "",
        ),
        (
            "absolute-form through a route",
            raw(
                edge_addr,
                &format!(
                    "GET http://evil.test/openai/echo HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
                ),
                b"",
            ),
            400,
            "absolute-form",
        ),
        (
            "CONNECT",
            raw(
                edge_addr,
                &format!(
                    "CONNECT 127.0.0.1:{} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nconnection: close\r\n\r\n",
                    up.port, up.port
                ),
                b"",
            ),
            405,
            "",
        ),
        (
            "Host of another host",
            raw(
                edge_addr,
                &format!(
                    "GET /openai/echo HTTP/1.1\r\nhost: api.evil.test\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
                ),
                b"",
            ),
            400,
            "Host",
        ),
        (
            "50 MB body",
            raw(
                edge_addr,
                &format!(
                    "POST /openai/big HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-length: 52428800\r\nconnection: close\r\n\r\n"
                ),
                &[b'x'; 65536],
            ),
            413,
            "at most 1048576",
        ),
        (
            "too many headers",
            raw(
                edge_addr,
                &format!(
                    "GET /openai/echo HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n{}connection: close\r\n\r\n",
                    (0..80)
                        .map(|i| format!("x-h{i}: v\r\n"))
                        .collect::<String>()
                ),
                b"",
            ),
            431,
            "at most 64 headers",
        ),
        (
            "a forbidden path spelled with escapes",
            edge(
                &w,
                "POST",
                "/openai/v1/%66orbidde%6E",
                Some(&token),
                &[],
                Some("{}"),
            ),
            403,
            "policy does not allow",
        ),
    ];
    for (what, r, status, needle) in &cases {
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        if !needle.is_empty() {
            assert!(r.body.contains(needle), "{what}: {}", r.body);
        }
        assert!(!r.body.contains(KEY), "{what}");
    }
    let case = |name: &str| {
        &cases
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("no case `{name}`"))
            .1
    };
    let unauth = case("no token");
    let www = unauth.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer ") && www.contains("resource_metadata=\"http://"),
        "{www}"
    );
    let meta = warrant_testkit::http(
        edge_addr,
        "GET",
        "/.well-known/oauth-protected-resource/openai",
        &[],
        None,
    )
    .json();
    assert_eq!(meta["authorization_servers"], json!([w.b.issuer]));
    assert_eq!(meta["warrant_audience"], "https://api.openai.test");
    let forbid = case("policy forbid").json()["error"].clone();
    assert_eq!(forbid["refused_by"], "policy (forbid)");
    assert_eq!(forbid["policies"], json!(["no-forbidden-path"]));
    assert!(
        forbid["how_to_get_access"]
            .as_str()
            .unwrap()
            .contains("Route::\"openai\"")
    );
    assert_eq!(
        case("method outside allow").json()["error"]["refused_by"],
        "route allow list"
    );
    assert!(
        up.seen().is_empty(),
        "nothing was forwarded: {:?}",
        up.seen()
    );

    // Each was recorded (the raw CONNECT and unknown route too).
    let records = proxy_records(&w);
    assert_eq!(records.len(), cases.len(), "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r["decision"] == "deny" || r["decision"] == "error")
    );
    let per_user = records
        .iter()
        .find(|r| r["resource"] == "Route::\"gh\"")
        .unwrap();
    assert_eq!(per_user["user"], "user:login.test/bob");
}

#[test]
fn a_body_without_a_length_is_cut_off_at_the_limit() {
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    let edge_addr: SocketAddr = w.b.edge;
    let host = format!("{edge_addr}");
    let chunk = format!("100000\r\n{}\r\n", "x".repeat(0x100000));
    let mut body = chunk.repeat(2).into_bytes();
    body.extend_from_slice(b"0\r\n\r\n");
    let r = raw(
        edge_addr,
        &format!(
            "POST /openai/big HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        ),
        &body,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("cut off"), "{}", r.body);
    let cut = proxy_records(&w);
    assert_eq!(
        cut.last().unwrap()["detail"]["refusal"],
        "payload_too_large",
        "{cut:#?}"
    );
    drop(up);
}

/// Revocation stops the very next request, and the refusal keeps its
/// attribution: a trace of the task shows the agent kept trying.
#[test]
fn revocation_stops_the_next_request_and_its_refusal_is_attributed() {
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    let r = edge(&w, "GET", "/openai/echo", Some(&token), &[], None);
    assert_eq!(r.status, 200);
    let task = jwt_claims(&token)["task"].as_str().unwrap().to_owned();
    w.b.cli(&["revoke", "--task", &task]).ok();
    let n = up.seen().len();
    let r = edge(&w, "GET", "/openai/echo", Some(&token), &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);
    assert_eq!(up.seen().len(), n);
    // The refusal keeps its attribution: a trace of the task shows the
    // agent kept trying after the revocation.
    let claims = jwt_claims(&token);
    let refused = audit(&w.b, Some("proxy.request"))
        .into_iter()
        .rev()
        .find(|r| r["decision"] == "deny")
        .unwrap();
    assert_eq!(refused["task"], task, "{refused}");
    assert_eq!(refused["txn"], claims["txn"], "{refused}");
    assert_eq!(refused["agent"], "orch", "{refused}");
    assert_eq!(refused["user"], claims["sub"], "{refused}");
    let trace =
        w.b.cli(&["audit", "trace", &task, "--output", "json"])
            .json();
    assert!(
        trace["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["event"] == "proxy.request" && r["decision"] == "deny"),
        "{trace}"
    );
}

#[test]
fn the_upstream_cannot_leak_the_key_or_redirect_it() {
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");

    // An upstream that echoes the header it got: redacted in body and headers.
    let r = edge(&w, "GET", "/openai/echo", Some(&token), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(KEY), "{}", r.body);
    assert!(
        r.body.contains("Bearer [redacted by warrant]"),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-echo"), Some("Bearer [redacted by warrant]"));
    assert_eq!(last(&up)["headers"]["accept-encoding"], "identity");

    // A redirect goes back to the agent; warrant does not follow it.
    let n = up.seen().len();
    let r = edge(&w, "GET", "/openai/redirect", Some(&token), &[], None);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://127.0.0.1:9/steal"));
    assert_eq!(up.seen().len(), n + 1);

    // Streaming (SSE, chunked) passes through as it comes.
    let r = edge(
        &w,
        "POST",
        "/openai/v1/chat/completions",
        Some(&token),
        &[("content-type", "application/json")],
        Some(r#"{"model":"m","stream":true,"messages":[]}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(
        r.body.contains("\" upstream\"") && r.body.ends_with("data: [DONE]\n\n"),
        "{}",
        r.body
    );

    // Rotation takes effect at once on this broker.
    let mut child = Command::new(bin())
        .args([
            "--data-dir",
            w.b.data_dir.to_str().unwrap(),
            "secret",
            "rotate",
            "openai-key",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sk-rotated-0123456789\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    edge(&w, "GET", "/openai/echo", Some(&token), &[], None);
    assert_eq!(
        last(&up)["headers"]["authorization"],
        "Bearer sk-rotated-0123456789"
    );
    let v2 = crate::support::audit_until(&w.b, Some("proxy.request"), 1, |r| {
        r["credential_id"] == "openai-key@v2"
    });
    assert_eq!(v2.len(), 1, "the rotated key's id is recorded");
}

/// The store keeps only sealed values; no answer, table or record shows one.
#[test]
fn secrets_are_sealed_and_never_shown() {
    let w = world_with(4, "", POLICY);
    put_secret(&w, "openai-key", KEY, None);
    put_secret(
        &w,
        "openai-key",
        "sk-for-alice-0123456789",
        Some("login.test/alice"),
    );
    let list = w.b.cli(&["secret", "list", "--output", "json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "openai-key");
    assert_eq!(list[0]["version"], 1);
    assert_eq!(list[1]["owner"], "login.test/alice");
    let human = w.b.cli(&["secret", "list"]).ok().to_owned();
    assert!(
        human.contains("(shared)") && human.contains("alice"),
        "{human}"
    );
    let again =
        w.b.cli(&["secret", "put", "openai-key", "--from-file", "/dev/null"]);
    assert_ne!(again.code, 0);
    let f = w.b.tmp().join("v.txt");
    std::fs::write(&f, "x\n").unwrap();
    let again = w.b.cli(&[
        "secret",
        "put",
        "openai-key",
        "--from-file",
        f.to_str().unwrap(),
    ]);
    assert!(
        again.stderr.contains("already exists") && again.stderr.contains("rotate"),
        "{}",
        again.stderr
    );
    let bad = w.b.cli(&[
        "secret",
        "put",
        "Bad Name",
        "--from-file",
        f.to_str().unwrap(),
    ]);
    assert!(bad.stderr.contains("not valid"), "{}", bad.stderr);
    let missing = w.b.cli(&[
        "secret",
        "rotate",
        "nope",
        "--from-file",
        f.to_str().unwrap(),
    ]);
    assert!(
        missing.stderr.contains("warrant secret put nope"),
        "{}",
        missing.stderr
    );
    w.b.cli(&[
        "secret",
        "delete",
        "openai-key",
        "--for-user",
        "login.test/alice",
    ])
    .ok();
    assert_eq!(
        w.b.cli(&["secret", "list", "--output", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let trail =
        w.b.cli(&["audit", "list", "--output", "json", "--limit", "1000"])
            .stdout;
    assert!(
        trail.contains("admin.secret.put") && trail.contains("openai-key@v1"),
        "{trail}"
    );
    for dir_entry in std::fs::read_dir(&w.b.data_dir).unwrap() {
        let p = dir_entry.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            for s in [KEY.as_bytes(), b"sk-for-alice-0123456789"] {
                assert!(
                    !bytes.windows(s.len()).any(|x| x == s),
                    "a value is in clear in {}",
                    p.display()
                );
            }
        }
    }
    assert!(!trail.contains(KEY) && !w.b.logs().contains(KEY));
}

/// The official OpenAI SDK, unchanged, with a task token as its API key.
#[test]
fn the_official_openai_sdk_works_through_the_proxy() {
    let (w, up, _tls) = setup();
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice");
    let out = Command::new(python())
        .arg(repo().join("tests/interop/openai_client.py"))
        .arg(format!("http://{}/openai/v1", w.b.edge))
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["content"], "Hello from upstream");
    assert_eq!(r["usage"], 4);
    assert_eq!(r["streamed"], json!(["Hello", " from", " upstream"]));
    assert_eq!(r["denied"]["status"], 403);
    assert_eq!(r["denied"]["body"]["refused_by"], "policy (forbid)", "{r}");
    assert!(
        r["denied"]["message"]
            .as_str()
            .unwrap()
            .contains("policy does not allow agent `orch` POST /v1/embeddings"),
        "{r}"
    );
    assert_eq!(r["unauthenticated"]["status"], 401);
    let seen = up.seen();
    assert_eq!(
        seen.len(),
        2,
        "the denied and unauthenticated calls never left: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s["headers"]["authorization"] == format!("Bearer {KEY}"))
    );
    assert!(
        seen[0]["headers"]["user-agent"]
            .as_str()
            .unwrap()
            .starts_with("OpenAI/Python"),
        "{}",
        seen[0]
    );
}

/// Issue 15, item 5: a route whose upstream requires a client certificate
/// presents the one stored in the secret store (chain and key in one
/// secret), at the last hop; the agent never holds it. A stranger's
/// certificate, none, or a secret that is not a certificate gets nothing
/// through, and rotating the secret changes the certificate presented.
#[test]
fn a_client_certificate_from_the_secret_store_is_presented_at_the_last_hop() {
    let up = Upstream::start_mtls();
    let o = up.origin("https");
    let ca = up.ca();
    let config = format!(
        r#"
[[route]]
name = "bank"
upstream = "{o}"
audience = "https://bank.test"
ca_file = "{ca}"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "mtls", secret = "bank-cert" }}

[[route]]
name = "nocert"
upstream = "{o}"
audience = "https://nocert.test"
ca_file = "{ca}"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "secret", secret = "bank-key" }}

[[route]]
name = "junk"
upstream = "{o}"
audience = "https://junk.test"
ca_file = "{ca}"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "mtls", secret = "junk-cert" }}
"#,
        ca = ca.display()
    );
    let w = world_with(4, &config, POLICY);
    let client = std::fs::read_to_string(up.dir.path().join("client.pem")).unwrap();
    let stranger = std::fs::read_to_string(up.dir.path().join("stranger.pem")).unwrap();
    put_secret(&w, "bank-cert", &client, None);
    put_secret(&w, "bank-key", "bank-api-key-0123456789", None);
    put_secret(&w, "junk-cert", "not a certificate-0123456789", None);
    let orch = identity(&w.b, "orch");
    let mut extra: Vec<(&str, &str)> = vec![("scope", "llm:chat")];
    for a in [
        "https://bank.test",
        "https://nocert.test",
        "https://junk.test",
    ] {
        extra.push(("audience", a));
    }
    let r = exchange(&w.b, w.users["alice"].as_str().unwrap(), JWT, &orch, &extra);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();

    let r = edge(&w, "GET", "/bank/accounts", Some(&token), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let got = last(&up);
    assert_eq!(got["client_cert"], "warrant-client");
    assert!(got["headers"].get("authorization").is_none(), "{got}");
    assert!(!got.to_string().contains(&token));
    // No certificate: the upstream's handshake fails, nothing is served.
    let before = up.seen().len();
    let r = edge(&w, "GET", "/nocert/accounts", Some(&token), &[], None);
    assert_eq!(r.status, 502, "{}", r.body);
    // A secret that is not a certificate: a clear error that shows nothing of it.
    let r = edge(&w, "GET", "/junk/accounts", Some(&token), &[], None);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("PEM certificate chain"), "{}", r.body);
    assert!(!r.body.contains("not a certificate"), "{}", r.body);
    assert_eq!(up.seen().len(), before);
    // Rotated to a stranger's certificate: refused by the upstream at once;
    // rotated back: served again.
    let rotate = |value: &str| {
        let mut child = Command::new(bin())
            .args(["--data-dir", w.b.data_dir.to_str().unwrap()])
            .args(["secret", "rotate", "bank-cert"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    rotate(&stranger);
    let r = edge(&w, "GET", "/bank/accounts", Some(&token), &[], None);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(up.seen().len(), before);
    rotate(&client);
    let r = edge(&w, "GET", "/bank/accounts", Some(&token), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    // Deleted and stored again (its version starts over at 1): the new
    // value is what is presented, never the deleted one (attacker round).
    w.b.cli(&["secret", "delete", "bank-cert"]).ok();
    put_secret(&w, "bank-cert", &stranger, None);
    let r = edge(&w, "GET", "/bank/accounts", Some(&token), &[], None);
    assert_eq!(r.status, 502, "{}", r.body);
    w.b.cli(&["secret", "delete", "bank-cert"]).ok();
    put_secret(&w, "bank-cert", &client, None);
    let r = edge(&w, "GET", "/bank/accounts", Some(&token), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    // The audit trail names the credential by secret and version, never its value.
    let recs = audit(&w.b, Some("proxy.request"));
    let ok: Vec<&Value> = recs
        .iter()
        .filter(|r| r["credential_type"] == "mtls" && r["decision"] == "allow")
        .collect();
    assert!(!ok.is_empty(), "{recs:?}");
    assert!(ok.iter().all(|r| {
        r["credential_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("bank-cert@v"))
    }));
    assert!(!recs.iter().any(|r| r.to_string().contains("PRIVATE KEY")));
    // An mtls route to plain http, or an MCP server with mtls, is refused at start.
    let (err, _, _) = crate::support::start_fails(warrant_testkit::Options {
        config: Some(
            "[[route]]\nname = \"x\"\nupstream = \"http://127.0.0.1:9\"\naudience = \"https://x.test\"\nallow = [ { methods = [\"GET\"], paths = [\"/**\"] } ]\ncredential = { kind = \"mtls\", secret = \"c\" }\n".into(),
        ),
        ..Default::default()
    });
    assert!(err.contains("not https"), "{err}");
    let (err, _, _) = crate::support::start_fails(warrant_testkit::Options {
        config: Some(
            "[[mcp_server]]\nname = \"x\"\nurl = \"https://mcp.example/mcp\"\ncredential = { kind = \"mtls\", secret = \"c\" }\n".into(),
        ),
        ..Default::default()
    });
    assert!(err.contains("`mtls` is for [[route]]s"), "{err}");
}
