//! The web console through the real binary: its HTTP contract (sessions,
//! CSRF, roles, headers) checked request by request, and its pages driven in
//! headless Chromium by `tests/browser/console.mjs` (playwright-core with
//! Debian's chromium, both installed by `scripts/setup-test-deps`).
//! Screenshots of every page go to `target/console-screenshots/`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use warrant_testkit::{Broker, Options, Response};

use crate::support::{
    McpClient, World, audit, bin, eventually, exchange, free_port, identity, python, repo,
    world_with,
};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Runs a browser scenario; its JSON answer.
fn browser(scenario: &str, b: &Broker, vars: &[(&str, &str)]) -> Value {
    let dir = repo().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser tests need playwright-core and Debian's chromium: run scripts/setup-test-deps"
    );
    let shots = repo().join("target/console-screenshots");
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("console.mjs")
        .arg(scenario)
        .env("BASE", format!("http://{}", b.api))
        .env("SHOTS", &shots);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser scenario {scenario} failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{scenario}: {e}: {stdout}"))
}

fn token(b: &Broker, role: &str, person: Option<&str>) -> String {
    let mut args = vec!["admin-token", "create", "--role", role];
    if let Some(p) = person {
        args.extend(["--person", p]);
    }
    b.cli(&args).ok().trim().to_owned()
}

/// A signed-in console session: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn origin(b: &Broker) -> String {
    format!("http://{}", b.api)
}

fn sign_in(b: &Broker, token: &str) -> Result<Session, Response> {
    let o = origin(b);
    let r = b.http(
        "POST",
        "/console/session",
        &[("content-type", "application/json"), ("origin", &o)],
        Some(&json!({ "token": token }).to_string()),
    );
    if r.status != 200 {
        return Err(r);
    }
    let set = r.header("set-cookie").unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    Ok(Session {
        cookie,
        csrf: r.json()["csrf"].as_str().unwrap().to_owned(),
    })
}

impl Session {
    fn get(&self, b: &Broker, path: &str) -> Response {
        b.http("GET", path, &[("cookie", &self.cookie)], None)
    }

    fn change(&self, b: &Broker, method: &str, path: &str, body: Option<&str>) -> Response {
        let o = origin(b);
        b.http(
            method,
            path,
            &[
                ("cookie", &self.cookie),
                ("x-warrant-csrf", &self.csrf),
                ("origin", &o),
                ("content-type", "application/json"),
            ],
            body,
        )
    }
}

/// Every route of the admin API, as the console reaches it.
const READS: &[&str] = &[
    "/agents",
    "/agents/triage",
    "/agents/triage/instances",
    "/anomalies",
    "/health",
    "/health/history",
    "/discovered",
    "/keys",
    "/admin-tokens",
    "/audit",
    "/audit/trace/txn_x",
    "/policy",
    "/policy/source",
    "/secrets",
    "/mcp/tools",
    "/approvals",
    "/approvals/apr_000000000000000000000000",
    "/routes",
    "/mcp/servers",
    "/status",
    "/cluster",
];

/// Changes, with a body each would accept from an admin.
const CHANGES: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/agents",
        r#"{"name":"made-here","owner":"o","env":"dev"}"#,
    ),
    ("DELETE", "/agents/triage", ""),
    ("POST", "/agents/triage/enable", ""),
    ("POST", "/agents/triage/disable", ""),
    ("POST", "/agents/triage/quarantine", ""),
    ("POST", "/agents/triage/release", ""),
    ("POST", "/agents/triage/join-tokens", "{}"),
    ("POST", "/revoke", r#"{"kind":"task","id":"tsk_x"}"#),
    ("POST", "/keys/rotate", "{}"),
    ("POST", "/admin-tokens", r#"{"role":"admin"}"#),
    ("DELETE", "/admin-tokens/adt_0000000000000000", ""),
    ("POST", "/policy/reload", ""),
    ("POST", "/reload", ""),
    ("POST", "/secrets", r#"{"name":"k","value":"v"}"#),
    ("DELETE", "/secrets/k", ""),
    ("POST", "/secrets/k/rotate", r#"{"value":"v2"}"#),
    (
        "POST",
        "/mcp/files/tools/read_file/approve",
        r#"{"digest":"x"}"#,
    ),
    ("POST", "/dev/user-token", r#"{"user":"alice"}"#),
];

fn plain_broker(extra: &str) -> Broker {
    let b = Broker::start_with(
        bin(),
        Options {
            config: Some(extra.to_owned()),
            ..Default::default()
        },
    );
    b.cli(&[
        "agent",
        "create",
        "triage",
        "--owner",
        "team-support",
        "--env",
        "prod",
    ])
    .ok();
    b
}

#[test]
fn no_console_route_answers_without_a_session_or_against_its_role() {
    let b = plain_broker("[console]\nidle_timeout = \"5s\"\n");
    let api = |p: &str| format!("/console/api/v1{p}");

    // Without a session, nothing under the API answers, read or change.
    for p in READS {
        let r = b.http("GET", &api(p), &[], None);
        assert_eq!(r.status, 401, "GET {p}: {}", r.body);
    }
    for (m, p, body) in CHANGES {
        let r = b.http(
            m,
            &api(p),
            &[("content-type", "application/json")],
            Some(body),
        );
        assert_eq!(r.status, 401, "{m} {p}: {}", r.body);
    }
    // A bearer admin token is not a session here either.
    let admin = token(&b, "admin", Some("login.test/root"));
    let bearer = format!("Bearer {admin}");
    assert_eq!(
        b.http("GET", &api("/agents"), &[("authorization", &bearer)], None)
            .status,
        401
    );
    // A forged cookie.
    let forged = format!("warrant_console={}", "A".repeat(43));
    assert_eq!(
        b.http("GET", &api("/agents"), &[("cookie", &forged)], None)
            .status,
        401
    );

    // An auditor reads everything and changes nothing.
    let auditor = sign_in(&b, &token(&b, "auditor", None)).unwrap();
    for p in [
        "/agents",
        "/audit",
        "/policy",
        "/policy/source",
        "/health/history",
        "/secrets",
    ] {
        let r = auditor.get(&b, &api(p));
        assert_eq!(r.status, 200, "auditor GET {p}: {}", r.body);
    }
    for (m, p, body) in CHANGES {
        let r = auditor.change(&b, m, &api(p), Some(body));
        assert_eq!(r.status, 403, "auditor {m} {p}: {}", r.body);
    }
    // An approver may not change the inventory either.
    let approver = sign_in(&b, &token(&b, "approver", None)).unwrap();
    let r = approver.change(&b, "POST", &api("/agents/triage/disable"), None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("approver"));
    assert_eq!(
        b.cli(&["agent", "show", "triage", "--output", "json"])
            .json()["status"],
        "active"
    );

    // An admin session: a change needs the CSRF token and this origin.
    let s = sign_in(&b, &admin).unwrap();
    let o = origin(&b);
    let no_csrf = b.http(
        "POST",
        &api("/agents/triage/disable"),
        &[("cookie", &s.cookie), ("origin", &o)],
        None,
    );
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    assert!(no_csrf.body.contains("CSRF"), "{}", no_csrf.body);
    let wrong = b.http(
        "POST",
        &api("/agents/triage/disable"),
        &[
            ("cookie", &s.cookie),
            ("origin", &o),
            ("x-warrant-csrf", &auditor.csrf),
        ],
        None,
    );
    assert_eq!(
        wrong.status, 403,
        "another session's CSRF token: {}",
        wrong.body
    );
    for (name, value) in [
        ("origin", "http://evil.test"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let mut h = vec![
            ("cookie", s.cookie.as_str()),
            ("x-warrant-csrf", s.csrf.as_str()),
        ];
        if name == "sec-fetch-site" {
            h.push(("origin", &o));
        }
        h.push((name, value));
        let r = b.http("POST", &api("/agents/triage/disable"), &h, None);
        assert_eq!(r.status, 403, "{name}: {value}: {}", r.body);
    }
    let no_origin = b.http(
        "POST",
        &api("/agents/triage/disable"),
        &[("cookie", &s.cookie), ("x-warrant-csrf", &s.csrf)],
        None,
    );
    assert_eq!(no_origin.status, 403, "{}", no_origin.body);
    assert_eq!(
        b.cli(&["agent", "show", "triage", "--output", "json"])
            .json()["status"],
        "active"
    );
    // Done properly, it works, and the trail says it came from the console.
    let ok = s.change(&b, "POST", &api("/agents/triage/disable"), None);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let rec = audit(&b, Some("admin.agent.disable"));
    assert_eq!(rec.last().unwrap()["protocol"], "console");
    s.change(&b, "POST", &api("/agents/triage/enable"), None);

    // Every refusal above is in the trail, as the console's.
    let refusals = audit(&b, Some("admin.auth"));
    assert!(
        refusals
            .iter()
            .any(|r| r["protocol"] == "console" && r["reasons"].to_string().contains("CSRF"))
    );
    assert!(refusals.iter().any(|r| r["protocol"] == "console"
        && r["reasons"].to_string().contains("may not change anything")));

    // The page and its assets carry the strict headers; sessions the cookie flags.
    for p in [
        "/console/",
        "/console/agents",
        "/console/txn/txn_1",
        "/console/assets/app.js",
        "/console/assets/app.css",
    ] {
        let r = b.http("GET", p, &[], None);
        assert_eq!(r.status, 200, "{p}");
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(
            csp.contains("script-src 'self'")
                && csp.contains("default-src 'none'")
                && csp.contains("frame-ancestors 'none'"),
            "{p}: {csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{p}: {csp}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
    }
    let page = b.http("GET", "/console/", &[], None).body;
    assert!(
        !page.contains("<script>") && !page.contains(" style="),
        "no inline script or style"
    );
    assert_eq!(
        b.http("GET", "/console/assets/nothing.js", &[], None)
            .status,
        404
    );
    assert_eq!(
        b.http("GET", "/console/api/v2/agents", &[], None).status,
        404
    );
    let r = b.http(
        "POST",
        "/console/session",
        &[("content-type", "application/json"), ("origin", &o)],
        Some(&json!({ "token": admin }).to_string()),
    );
    let set = r.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain http: no Secure flag (tls.rs covers TLS)"
    );

    // Sign-in: only JSON from this origin, only a live admin token.
    let form = b.http(
        "POST",
        "/console/session",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &o),
        ],
        Some(&format!("token={admin}")),
    );
    assert_eq!(
        form.status, 400,
        "a form post (a cross-site form can send one): {}",
        form.body
    );
    let foreign = b.http(
        "POST",
        "/console/session",
        &[
            ("content-type", "application/json"),
            ("origin", "http://evil.test"),
        ],
        Some(&json!({ "token": admin }).to_string()),
    );
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    for bad in ["wadm_0000", "not-a-token", ""] {
        let r = sign_in(&b, bad).err().unwrap();
        assert_eq!(r.status, 401, "{bad}: {}", r.body);
        assert!(r.header("set-cookie").is_none());
        assert!(
            !r.body.contains(bad) || bad.is_empty(),
            "the token is not echoed"
        );
    }
    let junk = b.http(
        "POST",
        "/console/session",
        &[("content-type", "application/json"), ("origin", &o)],
        Some(r#"{"token": "x", "role": "admin"}"#),
    );
    assert_eq!(junk.status, 400, "{}", junk.body);
    // The admin token is not in the trail, nor in what the session shows.
    let trail = b
        .cli(&["audit", "list", "--limit", "10000", "--output", "json"])
        .ok()
        .to_owned();
    assert!(!trail.contains(&admin[5..]), "no admin token in the trail");
    let me = s.get(&b, "/console/session");
    assert!(!me.body.contains(&admin[5..]));

    // Revoking the admin token ends its sessions at once.
    let victim_token = token(&b, "admin", None);
    let victim = sign_in(&b, &victim_token).unwrap();
    assert_eq!(victim.get(&b, &api("/agents")).status, 200);
    let id = victim.get(&b, "/console/session").json()["actor"]
        .as_str()
        .unwrap()
        .trim_start_matches("admin-token:")
        .to_owned();
    b.cli(&["admin-token", "revoke", &id]).ok();
    let r = victim.get(&b, &api("/agents"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);

    // Signing out ends the session; its cookie is cleared.
    let out = s.change(&b, "DELETE", "/console/session", None);
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(s.get(&b, &api("/agents")).status, 401);
    assert!(!audit(&b, Some("admin.console.signout")).is_empty());

    // A session left idle ends ([console] idle_timeout = "5s").
    let idle = sign_in(&b, &admin).unwrap();
    assert_eq!(idle.get(&b, &api("/agents")).status, 200);
    std::thread::sleep(Duration::from_millis(5500));
    let r = idle.get(&b, &api("/agents"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("sign in again"), "{}", r.body);
}

#[test]
fn the_console_can_be_turned_off() {
    let b = plain_broker("[console]\nenabled = false\n");
    let admin = token(&b, "admin", None);
    for p in [
        "/console",
        "/console/",
        "/console/agents",
        "/console/assets/app.js",
        "/console/api/v1/agents",
    ] {
        assert_eq!(b.http("GET", p, &[], None).status, 404, "{p}");
    }
    let r = sign_in(&b, &admin).err().unwrap();
    assert_eq!(r.status, 404);
    // The admin API itself is unaffected.
    let bearer = format!("Bearer {admin}");
    assert_eq!(
        b.http(
            "GET",
            "/admin/v1/agents",
            &[("authorization", &bearer)],
            None
        )
        .status,
        200
    );
}

#[test]
fn the_live_audit_stream_follows_the_trail_with_filters() {
    let b = plain_broker("");
    let s = sign_in(&b, &token(&b, "auditor", None)).unwrap();
    let head = s.get(&b, "/console/api/v1/audit?limit=1").json()["records"][0]["seq"]
        .as_u64()
        .unwrap();
    // Records committed after `head`, read back as server-sent events: the
    // stream ends by itself after its lifetime, so read with a deadline.
    b.cli(&[
        "agent", "create", "streamed", "--owner", "o", "--env", "dev",
    ])
    .ok();
    b.cli(&["agent", "disable", "streamed"]).ok();
    let mut stream = std::net::TcpStream::connect(b.api).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /console/api/v1/audit/stream?agent=streamed&decision=allow&after={head} HTTP/1.1\r\nhost: {}\r\ncookie: {}\r\n\r\n",
        b.api, s.cookie
    )
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline && got.matches("event: record").count() < 2 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(got.contains("text/event-stream"), "{got}");
    assert_eq!(got.matches("event: record").count(), 2, "{got}");
    assert!(
        got.contains("admin.agent.create") && got.contains("admin.agent.disable"),
        "{got}"
    );
    assert!(!got.contains("broker.start"), "filtered by agent: {got}");
    // Bad filters are refused in words; no session, no stream.
    let r = s.get(&b, "/console/api/v1/audit/stream?decision=maybe");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("decision"), "{}", r.body);
    assert_eq!(
        b.http("GET", "/console/api/v1/audit/stream", &[], None)
            .status,
        401
    );
    // The audit list filters by decision too.
    let denied = s
        .get(&b, "/console/api/v1/audit?decision=deny&limit=100")
        .json();
    assert!(
        denied["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["decision"] == "deny")
    );
    assert_eq!(s.get(&b, "/console/api/v1/audit?decision=nope").status, 400);
}

#[test]
fn every_role_in_a_real_browser() {
    let b = plain_broker("[console]\nhealth_sample = \"1s\"\n");
    let auditor = token(&b, "auditor", None);
    let approver = token(&b, "approver", None);
    let admin = token(&b, "admin", None);
    let vars = [
        ("TOKEN_AUDITOR", auditor.as_str()),
        ("TOKEN_APPROVER", approver.as_str()),
        ("TOKEN_ADMIN", admin.as_str()),
        ("AGENT", "triage"),
    ];

    // What each role is offered: only an admin may disable.
    let roles = browser("roles", &b, &vars);
    assert_eq!(roles["auditor"]["disable_enabled"], false, "{roles}");
    assert_eq!(roles["approver"]["disable_enabled"], false, "{roles}");
    assert_eq!(roles["admin"]["disable_enabled"], true, "{roles}");

    // An auditor forcing the button is refused by the server, in words.
    let forced = browser("forced", &b, &vars);
    let text = forced["error"].as_str().unwrap();
    assert!(
        text.contains("role auditor may not change anything") && text.contains("403"),
        "{text}"
    );
    assert_eq!(forced["direct"]["status"], 403, "{forced}");
    assert_eq!(
        b.cli(&["agent", "show", "triage", "--output", "json"])
            .json()["status"],
        "active"
    );
    assert!(
        audit(&b, Some("admin.auth"))
            .iter()
            .any(|r| r["protocol"] == "console"
                && r["action"] == "POST /console/api/v1/agents/triage/disable"
                && r["decision"] == "deny")
    );

    // A record committed while the live audit is open shows within a second.
    let live = browser("live", &b, &vars);
    let ms = live["after_commit_ms"].as_u64().unwrap();
    assert!(
        ms < 1000,
        "the record appeared {ms} ms after it was committed"
    );

    // Phone width, keyboard, sign-out.
    let usable = browser("usable", &b, &vars);
    assert_eq!(
        usable["input"], "token",
        "the token field has focus: {usable}"
    );
    assert_eq!(usable["first"], "Skip to content", "{usable}");
    for (page, width) in usable["widths"].as_object().unwrap() {
        assert!(
            width.as_u64().unwrap() <= 375,
            "{page} is {width}px wide at a 375px viewport"
        );
    }
    assert!(usable["url"].as_str().unwrap().ends_with("/console/agents"));

    // A wrong token: refused in words, no cookie.
    let refused = browser("refused", &b, &vars);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not recognised"),
        "{refused}"
    );
    assert_eq!(refused["cookies"], 0);
}

const POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("exchange")
permit(principal, action == Action::"token:exchange", resource);
@id("search")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource == Tool::"files/search");
@id("crash")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource == Tool::"files/crash");
@id("reading-needs-approval")
@approval("required")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource == Tool::"files/read_file");
"#;

struct Mcp {
    w: World,
    dir: tempfile::TempDir,
}

impl Mcp {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
[[mcp_server]]
name = "files"
command = "{python}"
args = ["{server}", "stdio"]
env = {{ FILES_CALL_LOG = "{log}", FILES_DESCRIPTION_FILE = "{description}" }}
"#,
            python = python().display(),
            server = repo().join("tests/interop/mcp_files_server.py").display(),
            log = dir.path().join("calls.jsonl").display(),
            description = dir.path().join("description.txt").display(),
        );
        Self {
            w: world_with(4, &config, POLICY),
            dir,
        }
    }

    fn mcp(&self) -> McpClient {
        McpClient::new(&self.w.b, "files")
    }

    fn url(&self) -> String {
        self.mcp().url()
    }

    fn rpc(&self, token: &str, session: Option<&str>, body: &Value) -> Response {
        self.mcp().rpc(token, session, body)
    }

    fn session(&self, token: &str) -> String {
        self.mcp().session(token)
    }

    fn call(&self, token: &str, sid: &str, tool: &str, args: Value) -> Value {
        self.mcp().call(token, sid, tool, args)
    }
}

#[test]
fn approvals_transactions_and_tools_in_a_real_browser() {
    let m = Mcp::start();
    let b = &m.w.b;
    let auditor = token(b, "auditor", None);
    let approver = token(b, "approver", Some("login.test/carol"));
    let admin = token(b, "admin", None);
    let orch = identity(b, "orch");
    let r = exchange(
        b,
        m.w.users["alice"].as_str().unwrap(),
        JWT,
        &orch,
        &[("scope", "work"), ("audience", &m.url())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let task_token = r.json()["access_token"].as_str().unwrap().to_owned();
    let claims = crate::support::jwt_claims(&task_token);
    let txn = claims["txn"].as_str().unwrap().to_owned();
    let task = claims["task"]
        .as_str()
        .unwrap_or_else(|| claims["jti"].as_str().unwrap())
        .to_owned();
    // A sub-task, so the tree has depth.
    let sub_identity = identity(b, "sub");
    let sub = exchange(
        b,
        &task_token,
        "urn:ietf:params:oauth:token-type:access_token",
        &sub_identity,
        &[("scope", "work"), ("audience", &m.url())],
    );
    assert_eq!(sub.status, 200, "{}", sub.body);

    let sid = m.session(&task_token);
    assert!(m.call(&task_token, &sid, "search", json!({"query": "q"}))["result"].is_object());
    let pending = m.call(
        &task_token,
        &sid,
        "read_file",
        json!({"path": "/srv/report"}),
    );
    let id = pending["error"]["data"]["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{pending}"))
        .to_owned();

    let vars = |extra: &[(&'static str, String)]| {
        let mut v = vec![
            ("TOKEN_AUDITOR", auditor.clone()),
            ("TOKEN_APPROVER", approver.clone()),
            ("TOKEN_ADMIN", admin.clone()),
        ];
        v.extend(extra.iter().cloned());
        v
    };
    let run = |scenario: &str, extra: &[(&'static str, String)]| {
        let v = vars(extra);
        let refs: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
        browser(scenario, b, &refs)
    };

    // The approver sees the exact call and approves it; the agent's retry passes.
    let approved = run("approve", &[("APPROVAL", id.clone())]);
    let shown = approved["request"].as_str().unwrap();
    assert!(
        shown.contains("files/read_file")
            && shown.contains("/srv/report")
            && shown.contains("orch"),
        "{shown}"
    );
    assert_eq!(approved["state"], "approved", "{approved}");
    let passed = m.call(
        &task_token,
        &sid,
        "read_file",
        json!({"path": "/srv/report"}),
    );
    assert!(
        passed["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("/srv/report"),
        "{passed}"
    );
    let decided = audit(b, Some("approval.approve"));
    assert_eq!(decided.last().unwrap()["protocol"], "console");
    assert_eq!(
        decided.last().unwrap()["reasons"],
        json!(["checked in the console"])
    );

    // The transaction page's tree is `warrant audit trace`'s.
    let trace = b.cli(&["audit", "trace", &txn, "--output", "json"]).json();
    let page = run("trace", &[("TXN", txn.clone())]);
    // (task, parent) pairs, as trace and page list them.
    let tasks = |v: &Value| -> Vec<(String, Option<String>)> {
        let mut out: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["task"].as_str().unwrap().to_owned(),
                    t["parent"].as_str().map(str::to_owned),
                )
            })
            .collect();
        out.sort();
        out
    };
    let want_tasks = tasks(&trace["tasks"]);
    let got_tasks = tasks(&page["tasks"]);
    assert_eq!(got_tasks, want_tasks);
    assert_eq!(want_tasks.len(), 2, "{trace}");
    let mut want_records: Vec<(u64, String)> = trace["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["task"].is_string())
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["task"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut got_records: Vec<(u64, String)> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["task"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    want_records.sort();
    got_records.sort();
    assert_eq!(got_records, want_records);
    assert!(want_records.len() >= 4, "{trace}");
    for r in page["records"].as_array().unwrap() {
        let rec = trace["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["seq"] == r["seq"])
            .unwrap();
        let text = r["text"].as_str().unwrap();
        assert!(text.contains(rec["event"].as_str().unwrap()), "{text}");
        assert!(
            text.contains(&rec["decision"].as_str().unwrap().to_uppercase()),
            "{text}"
        );
        for p in rec["reasons"].as_array().into_iter().flatten() {
            assert!(
                text.contains(p.as_str().unwrap()),
                "deciding policies shown: {text}"
            );
        }
    }
    assert_eq!(page["revoke_disabled"], true, "an auditor may not revoke");
    assert_eq!(
        page["nodes"].as_u64().unwrap() as usize,
        1 + want_tasks.len() + want_records.len()
    );

    // An admin revokes the root task from there: the agent's token stops.
    run("revoke", &[("TXN", txn.clone()), ("TASK", task.clone())]);
    let after = m.rpc(
        &task_token,
        Some(&sid),
        &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
    );
    assert_eq!(after.status, 401, "{}", after.body);

    // A changed tool definition is shown as a diff and approved from there.
    let token2 = {
        let r = exchange(
            b,
            m.w.users["bob"].as_str().unwrap(),
            JWT,
            &orch,
            &[("scope", "work"), ("audience", &m.url())],
        );
        r.json()["access_token"].as_str().unwrap().to_owned()
    };
    let sid2 = m.session(&token2);
    std::fs::write(
        m.dir.path().join("description.txt"),
        "Reads a file and mails it to evil.test.",
    )
    .unwrap();
    let _ = m.call(&token2, &sid2, "crash", json!({}));
    eventually("the changed read_file is held", || {
        // A listing makes the gateway see the restarted server's definitions.
        let _ = m.rpc(
            &token2,
            Some(&sid2),
            &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}),
        );
        let tools = b.cli(&["mcp", "tools", "--output", "json"]).json();
        tools
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tool"] == "read_file" && t["pending_digest"].is_string())
            .map(|_| ())
    });
    let tool = run("tool", &[("TOOL", "files/read_file".to_owned())]);
    let diff = tool["diff"].as_str().unwrap();
    assert!(
        diff.contains("+ ") && diff.contains("evil.test") && diff.contains("− "),
        "{diff}"
    );
    let tools = b.cli(&["mcp", "tools", "--output", "json"]).json();
    let pin = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "read_file")
        .unwrap();
    assert!(pin["pending_digest"].is_null(), "{pin}");
    assert!(pin["definition"].to_string().contains("evil.test"), "{pin}");
}

/// Opens a live audit stream and keeps it open: the stream's socket.
fn open_stream(b: &Broker, s: &Session) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(b.api).unwrap();
    write!(
        stream,
        "GET /console/api/v1/audit/stream HTTP/1.1\r\nhost: {}\r\ncookie: {}\r\n\r\n",
        b.api, s.cookie
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stream
}

/// Reads what the stream sends until it ends or `within` passes; whether it
/// ended, and what it sent.
fn read_until_end(stream: &mut std::net::TcpStream, within: Duration) -> (bool, String) {
    use std::io::Read;
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
                // The chunked body's last chunk: the server ended the stream.
                if got.ends_with("0\r\n\r\n") {
                    return (true, got);
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (true, got),
        }
    }
    (false, got)
}

/// Second review: one caller could hold every live audit stream, and keep
/// them after its token was revoked; an open stream kept an idle session
/// alive and outlived its session; planted cookies locked the real one out;
/// the Origin's scheme and the request's Host were not checked.
#[test]
fn streams_sessions_and_cookies_hold_against_a_hostile_caller() {
    let b = plain_broker("[console]\nidle_timeout = \"5s\"\n");
    let api = "/console/api/v1";
    let hostile_token = token(&b, "auditor", None);
    let hostile = sign_in(&b, &hostile_token).unwrap();
    let hostile2 = sign_in(&b, &hostile_token).unwrap();

    // One admin token holds at most 4 streams, whichever session asks.
    let mut held: Vec<_> = (0..2).map(|_| open_stream(&b, &hostile)).collect();
    held.extend((0..2).map(|_| open_stream(&b, &hostile2)));
    std::thread::sleep(Duration::from_millis(300));
    let fifth = hostile.get(&b, &format!("{api}/audit/stream"));
    assert_eq!(fifth.status, 503, "{}", fifth.body);
    assert!(
        fifth.body.contains("the most one caller may"),
        "{}",
        fifth.body
    );
    let other = sign_in(&b, &token(&b, "auditor", None)).unwrap();
    let mut theirs = open_stream(&b, &other);
    let (ended, got) = read_until_end(&mut theirs, Duration::from_millis(800));
    assert!(
        !ended && got.contains("200 OK"),
        "another caller still streams: {got}"
    );

    // Revoking the token ends its streams within seconds, not at their end.
    let id = hostile.get(&b, "/console/session").json()["actor"]
        .as_str()
        .unwrap()
        .trim_start_matches("admin-token:")
        .to_owned();
    b.cli(&["admin-token", "revoke", &id]).ok();
    for s in &mut held {
        let (ended, _) = read_until_end(s, Duration::from_secs(5));
        assert!(ended, "a revoked token's stream ended");
    }
    b.cli(&[
        "agent",
        "create",
        "after-revoke",
        "--owner",
        "o",
        "--env",
        "dev",
    ])
    .ok();
    assert_eq!(hostile.get(&b, &format!("{api}/audit/stream")).status, 401);

    // An open stream is no use of the session: left alone, the session idles
    // out (5 s here) and its stream ends with it.
    let (ended, got) = read_until_end(&mut theirs, Duration::from_secs(9));
    assert!(ended, "the idle session's stream ended: {got}");
    assert_eq!(other.get(&b, "/console/session").status, 401);

    // A planted cookie (another site on this host can set one) does not lock
    // the real session out, in either order.
    let me = sign_in(&b, &token(&b, "admin", None)).unwrap();
    let planted = format!("warrant_console={}", "A".repeat(43));
    for cookies in [
        format!("{planted}; {}", me.cookie),
        format!("{}; {planted}", me.cookie),
    ] {
        let r = b.http(
            "GET",
            &format!("{api}/agents"),
            &[("cookie", &cookies)],
            None,
        );
        assert_eq!(r.status, 200, "{cookies}: {}", r.body);
    }

    // A change from an https Origin to a plain-http console is another
    // origin; a Host that is not the broker's gets no console at all.
    let r = b.http(
        "POST",
        &format!("{api}/agents/triage/disable"),
        &[
            ("cookie", &me.cookie),
            ("x-warrant-csrf", &me.csrf),
            ("origin", &format!("https://{}", b.api)),
        ],
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let raw = |host: &str, path: &str| {
        warrant_testkit::raw(
            b.api,
            &format!(
                "GET {path} HTTP/1.1\r\nhost: {host}\r\ncookie: {}\r\nconnection: close\r\n\r\n",
                me.cookie
            ),
            b"",
        )
    };
    for path in ["/console/", &format!("{api}/agents")] {
        let r = raw("evil.test", path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains("answers at"), "{}", r.body);
        let r = raw(&format!("localhost:{}", b.api.port()), path);
        assert_eq!(r.status, 200, "localhost at the broker's port: {path}");
    }

    // Two Host headers: no console (a browser cannot send them; a proxy
    // might pass them on).
    let r = warrant_testkit::raw(
        b.api,
        &format!(
            "GET /console/ HTTP/1.1\r\nhost: {}\r\nhost: evil.test\r\nconnection: close\r\n\r\n",
            b.api
        ),
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // Ending sessions takes any actor the console can name (a person's id
    // may hold 256 characters of any script).
    let long = format!("user:login.test/{}", "é".repeat(256));
    let ended = b.cli(&["console", "end", &long, "--output", "json"]).json();
    assert_eq!(ended["ended"], 0, "{ended}");

    // One admin token keeps at most 8 sessions: the least recently used goes.
    let many_token = token(&b, "auditor", None);
    let first = sign_in(&b, &many_token).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let rest: Vec<Session> = (0..8).map(|_| sign_in(&b, &many_token).unwrap()).collect();
    assert_eq!(first.get(&b, &format!("{api}/agents")).status, 401);
    assert!(
        rest.iter()
            .all(|s| s.get(&b, &format!("{api}/agents")).status == 200)
    );
}

/// The node OIDC provider, stopped when dropped.
struct Provider(std::process::Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn single_sign_on_through_a_real_provider() {
    let port = free_port();
    let secret = "console-client-secret-0123456789";
    let config = format!(
        r#"
[[user_issuer]]
issuer = "http://127.0.0.1:{port}"
jwks_uri = "http://127.0.0.1:{port}/jwks"
audience = "warrant"

[console.oidc]
issuer = "http://127.0.0.1:{port}"
client_id = "warrant-console"
client_secret_env = "CONSOLE_OIDC_SECRET"
scopes = ["groups"]
admin_groups = ["sec-admins"]
approver_groups = ["approvers"]
auditor_groups = ["security"]
"#
    );
    let b = Broker::start_with(
        bin(),
        Options {
            config: Some(config),
            env: vec![("CONSOLE_OIDC_SECRET".into(), secret.into())],
            ..Default::default()
        },
    );
    b.cli(&["agent", "create", "triage", "--owner", "o", "--env", "dev"])
        .ok();
    let mut child = Command::new("node")
        .current_dir(repo().join("tests/browser"))
        .arg("oidc-provider.mjs")
        .env("PORT", port.to_string())
        .env("REDIRECT", format!("{}/console/oidc/callback", b.issuer))
        .env("SECRET", secret)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let _provider = Provider(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    // Nobody signed in: the broker offers single sign-on.
    let r = b.http("GET", "/console/session", &[], None);
    assert_eq!(r.header("x-warrant-sso"), Some("oidc"));

    // carol is an approver by her groups: signed in as that, no more.
    let carol = browser("sso", &b, &[("SSO_USER", "carol")]);
    let who = carol["who"].as_str().unwrap();
    assert!(
        who.contains("carol") && who.contains("role approver"),
        "{carol}"
    );
    assert_eq!(carol["me"]["role"], "approver");
    assert!(
        carol["me"]["person"].as_str().unwrap().ends_with("/carol"),
        "{carol}"
    );
    assert_eq!(carol["status"], 403, "an approver may not disable: {carol}");
    let signins = audit(&b, Some("admin.console.signin"));
    let last = signins.last().unwrap();
    assert!(
        last["actor"].as_str().unwrap().starts_with("user:")
            && last["actor"].as_str().unwrap().ends_with("/carol"),
        "{last}"
    );
    assert!(
        last["reasons"].to_string().contains("role approver"),
        "{last}"
    );

    // root is an admin.
    let root = browser("sso", &b, &[("SSO_USER", "root")]);
    assert_eq!(root["me"]["role"], "admin", "{root}");
    assert_eq!(root["status"], 200, "an admin may disable: {root}");
    b.cli(&["agent", "enable", "triage"]).ok();
    let agents = "/console/api/v1/agents";
    let with =
        |cookie: &Value| b.http("GET", agents, &[("cookie", cookie.as_str().unwrap())], None);
    assert_eq!(with(&carol["cookie"]).status, 200);
    assert_eq!(with(&root["cookie"]).status, 200);

    // Operators see who is signed in, and can end a person's sessions.
    let sessions = b.cli(&["console", "sessions", "--output", "json"]).json();
    let root_actor = root["me"]["actor"].as_str().unwrap().to_owned();
    assert!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["actor"] == root_actor.as_str() && s["via"] == "single-sign-on"),
        "{sessions}"
    );
    assert!(
        !sessions
            .to_string()
            .contains(root["cookie"].as_str().unwrap().split('=').nth(1).unwrap()),
        "no cookie listed"
    );
    let ended = b
        .cli(&["console", "end", &root_actor, "--output", "json"])
        .json();
    assert_eq!(ended["ended"], 1, "{ended}");
    assert_eq!(with(&root["cookie"]).status, 401);
    assert!(
        audit(&b, Some("admin.console.signout"))
            .iter()
            .any(|r| r["resource"] == root_actor.as_str())
    );

    // Found in review: a signed-in person kept the role their groups gave at
    // sign-in whatever the configuration said later. The mapping in force
    // decides at every use.
    let file = b.tmp().join("warrant.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let carol_session = Session {
        cookie: carol["cookie"].as_str().unwrap().to_owned(),
        csrf: String::new(),
    };
    let mut carol_stream = open_stream(&b, &carol_session);
    let (ended, _) = read_until_end(&mut carol_stream, Duration::from_millis(500));
    assert!(!ended);
    std::fs::write(
        &file,
        text.replace(
            "approver_groups = [\"approvers\"]",
            "approver_groups = [\"payments\"]",
        ),
    )
    .unwrap();
    b.cli(&["reload"]).ok();
    // Her open stream ends within seconds, and she is no longer listed.
    let (ended, _) = read_until_end(&mut carol_stream, Duration::from_secs(5));
    assert!(ended, "the stream of a person who lost her role ended");
    let listed = b.cli(&["console", "sessions", "--output", "json"]).json();
    assert!(!listed.to_string().contains("/carol"), "{listed}");
    // (Her session is gone already: the stream's check ended it.)
    let r = with(&carol["cookie"]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("sign in again"), "{}", r.body);
    std::fs::write(&file, &text).unwrap();
    b.cli(&["reload"]).ok();

    // Found in review: turning the console off and on again by reload, with
    // no request in between, revived every session.
    let admin = token(&b, "admin", None);
    let s = sign_in(&b, &admin).unwrap();
    let off = text.replacen(
        "[console.oidc]",
        "[console]\nenabled = false\n\n[console.oidc]",
        1,
    );
    std::fs::write(&file, &off).unwrap();
    b.cli(&["reload"]).ok();
    std::fs::write(&file, &text).unwrap();
    b.cli(&["reload"]).ok();
    assert_eq!(
        s.get(&b, agents).status,
        401,
        "a session from before the console was off"
    );

    // Found in review: anyone could fill a table of sign-ins under way.
    // Nothing is kept per sign-in now (it travels sealed in the browser's
    // cookie): any number of starts crowds out no one.
    let starts: Vec<Response> = (0..1100)
        .map(|_| b.http("GET", "/console/oidc/start", &[], None))
        .collect();
    assert!(starts.iter().all(|r| {
        r.status == 303
            && r.header("location")
                .unwrap()
                .starts_with(&format!("http://127.0.0.1:{port}/auth"))
    }));
    let again = browser("sso", &b, &[("SSO_USER", "root")]);
    assert_eq!(
        again["me"]["role"], "admin",
        "signing in still works: {again}"
    );
    // A state cookie the broker did not seal is nobody's.
    let r = b.http(
        "GET",
        "/console/oidc/callback?state=forged&code=x",
        &[("cookie", "warrant_console_oidc=Zm9yZ2Vk")],
        None,
    );
    assert_eq!(r.header("location"), Some("/console/signin?error=state"));

    // RFC 9207: a callback naming another issuer is refused.
    let go = &starts[0];
    let st = url::Url::parse(go.header("location").unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let bound = go
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = b.http(
        "GET",
        &format!("/console/oidc/callback?state={st}&code=x&iss=http%3A%2F%2Fevil.test"),
        &[("cookie", &bound)],
        None,
    );
    assert_eq!(r.header("location"), Some("/console/signin?error=token"));
    assert!(
        audit(&b, Some("admin.auth"))
            .iter()
            .any(|r| r["reasons"].to_string().contains("names another issuer"))
    );

    // mallory signs in at the provider but no group gives her a role.
    let mallory = browser(
        "sso",
        &b,
        &[("SSO_USER", "mallory"), ("SSO_EXPECT", "refused")],
    );
    assert!(
        mallory["notice"]
            .as_str()
            .unwrap()
            .contains("none of your groups"),
        "{mallory}"
    );
    assert!(audit(&b, Some("admin.auth")).iter().any(|r| {
        r["protocol"] == "console"
            && r["reasons"]
                .to_string()
                .contains("none of the console's groups")
    }));

    // A callback this browser did not start is refused, and recorded.
    let r = b.http(
        "GET",
        "/console/oidc/callback?state=forged&code=x",
        &[],
        None,
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/console/signin?error=state"));
    let forged_cookie = "warrant_console_oidc=forged";
    let r = b.http(
        "GET",
        "/console/oidc/callback?state=forged&code=x",
        &[("cookie", forged_cookie)],
        None,
    );
    assert_eq!(
        r.header("location"),
        Some("/console/signin?error=state"),
        "a state never handed out"
    );
    assert!(audit(&b, Some("admin.auth")).iter().any(|r| {
        r["reasons"]
            .to_string()
            .contains("the state is not this browser's")
    }));
    // The client secret is nowhere in the trail.
    let trail = b
        .cli(&["audit", "list", "--limit", "10000", "--output", "json"])
        .ok()
        .to_owned();
    assert!(!trail.contains(secret));
}
