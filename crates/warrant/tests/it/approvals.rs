//! Step-up approval through the real binary: an MCP tool call, a proxied
//! request and a token exchange that policy allows only with a person's
//! approval are pending, approved with `warrant approval approve` (or the
//! admin API), pass once, and are pending again when replayed or changed;
//! webhooks announce them; separation of duties and roles hold.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    McpClient, Receiver, Upstream, World, audit, eventually, exchange, identity, put_secret,
    python, repo, world_with,
};
use warrant_testkit::Response;

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

const POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("exchange")
permit(principal, action == Action::"token:exchange", resource)
unless { resource == Audience::"https://payments.example" };
@id("payments-need-an-admin")
@approval("required") @approval_role("admin") @approval_ttl("2m")
permit(principal in Agent::"orch", action == Action::"token:exchange", resource == Audience::"https://payments.example");
@id("search")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource == Tool::"files/search");
@id("reading-needs-approval")
@approval("required")
permit(principal in Agent::"orch", action == Action::"mcp:call_tool", resource == Tool::"files/read_file");
@id("gets")
permit(principal in Agent::"orch", action == Action::"http:request", resource == Route::"pay")
when { context.method == "GET" };
@id("posts-need-approval")
@approval("required")
permit(principal in Agent::"orch", action == Action::"http:request", resource == Route::"pay")
when { context.method == "POST" };
"#;

/// The webhook receiver: the first request on `/flaky` fails (a retry is
/// needed).
struct Hooks(Receiver);

impl Hooks {
    fn start() -> Self {
        Self(Receiver::start(&["/flaky"], 1))
    }

    fn config(&self) -> String {
        format!(
            r#"
[[approvals.webhook]]
url = "http://127.0.0.1:{port}/flaky"

[[approvals.webhook]]
url = "http://127.0.0.1:{port}/slack"
format = "slack"
"#,
            port = self.0.port
        )
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.0.bodies(path)
    }
}

struct Setup {
    w: World,
    up: Upstream,
    hooks: Hooks,
    dir: tempfile::TempDir,
    orch: String,
}

fn setup(hold: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(false);
    let hooks = Hooks::start();
    let config = format!(
        r#"
[[mcp_server]]
name = "files"
command = "{python}"
args = ["{server}", "stdio"]
env = {{ FILES_CALL_LOG = "{log}" }}

[[route]]
name = "pay"
upstream = "{origin}"
audience = "https://pay.test"
allow = [ {{ methods = ["GET", "POST"], paths = ["/**"] }} ]
credential = {{ kind = "secret", secret = "pay-key" }}

[approvals]
hold = "{hold}"
max_pending_per_requester = 4
{hooks}
"#,
        python = python().display(),
        server = repo().join("tests/interop/mcp_files_server.py").display(),
        log = dir.path().join("calls.jsonl").display(),
        origin = up.origin("http"),
        hooks = hooks.config(),
    );
    let w = world_with(4, &config, POLICY);
    put_secret(&w, "pay-key", "sk-pay-0123456789abcdef", None);
    let orch = identity(&w.b, "orch");
    Setup {
        w,
        up,
        hooks,
        dir,
        orch,
    }
}

impl Setup {
    fn token(&self, user: &str, audience: &str) -> Response {
        exchange(
            &self.w.b,
            self.w.users[user].as_str().unwrap(),
            JWT,
            &self.orch,
            &[("scope", "work"), ("audience", audience)],
        )
    }

    fn task(&self, user: &str, audience: &str) -> String {
        let r = self.token(user, audience);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    fn mcp(&self) -> McpClient {
        McpClient::new(&self.w.b, "files")
    }

    fn mcp_url(&self) -> String {
        self.mcp().url()
    }

    fn session(&self, token: &str) -> String {
        self.mcp().session(token)
    }

    fn call(&self, token: &str, sid: &str, tool: &str, args: Value) -> Value {
        self.mcp().call(token, sid, tool, args)
    }

    fn reads(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|c| c["tool"] == "read_file")
            .collect()
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        self.w.b.cli(&a).json()
    }

    fn post(&self, token: &str, path: &str, body: &str) -> Response {
        let bearer = format!("Bearer {token}");
        warrant_testkit::http(
            self.w.b.edge,
            "POST",
            &format!("/pay{path}"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            Some(body),
        )
    }

    /// An admin token with `role` held by `person`, for the HTTP admin API.
    fn admin_token(&self, role: &str, person: Option<&str>) -> String {
        let mut args = vec!["admin-token", "create", "--role", role];
        if let Some(p) = person {
            args.extend(["--person", p]);
        }
        self.w.b.cli(&args).ok().trim().to_owned()
    }

    fn decide_http(&self, admin: &str, id: &str, verb: &str) -> Response {
        let bearer = format!("Bearer {admin}");
        warrant_testkit::http(
            self.w.b.api,
            "POST",
            &format!("/admin/v1/approvals/{id}/{verb}"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            Some(r#"{"reason": "checked the amount"}"#),
        )
    }
}

/// The approval a JSON-RPC refusal names.
fn pending_id(r: &Value) -> String {
    let data = &r["error"]["data"];
    assert_eq!(data["refused_by"], "approval required", "{r}");
    assert_eq!(data["approval_state"], "pending", "{r}");
    data["approval_id"].as_str().unwrap().to_owned()
}

#[test]
fn an_mcp_call_needing_approval_passes_once_and_only_with_its_arguments() {
    let s = setup("0s");
    let token = s.task("alice", &s.mcp_url());
    let sid = s.session(&token);

    // Allowed outright: no approval.
    assert!(s.call(&token, &sid, "search", json!({"query": "q"}))["result"].is_object());
    let first = s.call(&token, &sid, "read_file", json!({"path": "/srv/a"}));
    assert_eq!(first["error"]["code"], -32003, "{first}");
    let id = pending_id(&first);
    assert!(s.reads().is_empty(), "nothing reached the server");
    // Asked again, the same approval: not a new one per retry.
    let again = s.call(&token, &sid, "read_file", json!({"path": "/srv/a"}));
    assert_eq!(pending_id(&again), id);

    // Approvers see exactly what they approve.
    let shown = s.cli_json(&["approval", "show", &id]);
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["subject"]["agent"], "orch");
    assert_eq!(shown["subject"]["user"], "user:login.test/alice");
    assert_eq!(shown["subject"]["resource"], "Tool::\"files/read_file\"");
    assert_eq!(shown["shown"]["arguments"], json!({"path": "/srv/a"}));
    assert_eq!(shown["policies"], json!(["reading-needs-approval"]));
    let listed = s.cli_json(&["approval", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // The webhooks announced it once each: after a failure, by retry; the
    // arguments stay out of them.
    let announced = eventually("both webhooks announce the approval", || {
        let j = s.hooks.bodies("/flaky");
        let slack = s.hooks.bodies("/slack");
        (!j.is_empty() && !slack.is_empty()).then_some((j, slack))
    });
    assert_eq!(announced.0.len(), 1);
    assert_eq!(announced.0[0]["type"], "approval.pending");
    assert_eq!(announced.0[0]["approval"]["id"], id.as_str());
    assert_eq!(announced.0[0]["approval"]["user"], "user:login.test/alice");
    assert!(!announced.0[0].to_string().contains("/srv/a"));
    let text = announced.1[0]["text"].as_str().unwrap();
    assert!(text.contains(&id) && text.contains("orch"), "{text}");

    let granted = s.cli_json(&["approval", "approve", &id, "--reason", "report run"]);
    assert_eq!(granted["state"], "approved");
    assert!(
        granted["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("local:uid="),
        "{granted}"
    );

    // Other arguments are another request: still pending, a new approval.
    let other = s.call(&token, &sid, "read_file", json!({"path": "/srv/b"}));
    let other_id = pending_id(&other);
    assert_ne!(other_id, id);
    // Another task of the same user and agent is not covered either.
    let token2 = s.task("alice", &s.mcp_url());
    let sid2 = s.session(&token2);
    let elsewhere = s.call(&token2, &sid2, "read_file", json!({"path": "/srv/a"}));
    assert_ne!(pending_id(&elsewhere), id);
    // The same call passes, once: a replay waits for a new approval.
    let passed = s.call(&token, &sid, "read_file", json!({"path": "/srv/a"}));
    assert!(
        passed["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("/srv/a"),
        "{passed}"
    );
    assert_eq!(s.reads().len(), 1);
    let replay = s.call(&token, &sid, "read_file", json!({"path": "/srv/a"}));
    let replay_id = pending_id(&replay);
    assert_ne!(replay_id, id);
    assert_eq!(s.reads().len(), 1, "the replay reached nothing");
    // A spent approval cannot be decided again.
    let again = s.w.b.cli(&["approval", "approve", &id]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("used"), "{}", again.stderr);
    assert_eq!(s.cli_json(&["approval", "show", &id])["state"], "used");

    // Denied: refused with the reason, and it stays refused.
    s.w.b
        .cli(&["approval", "deny", &other_id, "--reason", "not that file"])
        .ok();
    for _ in 0..2 {
        let denied = s.call(&token, &sid, "read_file", json!({"path": "/srv/b"}));
        assert_eq!(denied["error"]["data"]["refused_by"], "approval denied");
        assert_eq!(denied["error"]["data"]["reason"], "not that file");
        assert!(
            denied["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not that file")
        );
    }
    assert_eq!(s.reads().len(), 1);

    // Bad ids are refused plainly.
    for bad in ["apr_nothex", "x", "apr_000000000000000000000000"] {
        let r = s.w.b.cli(&["approval", "approve", bad]);
        assert_ne!(r.code, 0, "{bad}");
    }

    // Every step is in the trail.
    let kinds = |k: &str| audit(&s.w.b, Some(k));
    assert_eq!(kinds("approval.request").len(), 4);
    let decided = kinds("approval.approve");
    // The grant, and the refused attempts (a spent approval, bad ids).
    assert_eq!(decided.len(), 5);
    let approved: Vec<&Value> = decided
        .iter()
        .filter(|r| r["decision"] == "allow")
        .collect();
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0]["reasons"], json!(["report run"]));
    assert_eq!(kinds("approval.deny").len(), 1);
    let used = kinds("approval.use");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["detail"]["approval"], id.as_str());
    let calls = kinds("mcp.tool.call");
    assert!(
        calls
            .iter()
            .filter(|c| c["resource"] == "Tool::\"files/read_file\"")
            .any(|c| c["decision"] == "pending")
    );
    let v = s.w.b.cli(&["audit", "verify", "--output", "json"]).json();
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn a_proxied_request_is_held_bound_to_its_body_and_passes_once() {
    let s = setup("3s");
    let token = s.task("alice", "https://pay.test");
    let get = warrant_testkit::http(
        s.w.b.edge,
        "GET",
        "/pay/balance",
        &[("authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(get.status, 200, "GETs need no approval: {}", get.body);

    let started = Instant::now();
    let r = s.post(&token, "/transfers?to=bob", r#"{"amount": 10}"#);
    assert!(started.elapsed() >= Duration::from_secs(3), "held first");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "approval_pending");
    assert_eq!(e["refused_by"], "approval required");
    let id = e["approval_id"].as_str().unwrap().to_owned();
    let posts = || {
        s.up.seen()
            .into_iter()
            .filter(|q| q["method"] == "POST")
            .collect::<Vec<_>>()
    };
    assert!(posts().is_empty());
    let shown = s.cli_json(&["approval", "show", &id]);
    let req = &shown["subject"]["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["path"], "/transfers");
    assert_eq!(req["query"], "to=bob");
    assert_eq!(req["body_bytes"], 14);

    // Approved while the request is held: it goes ahead without a retry.
    let b = &s.w.b;
    let approver = std::thread::scope(|scope| {
        let t = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(800));
            b.cli(&["approval", "approve", &id]).ok().to_owned()
        });
        let held = s.post(&token, "/transfers?to=bob", r#"{"amount": 10}"#);
        (held, t.join().unwrap())
    });
    assert_eq!(approver.0.status, 200, "{}", approver.0.body);
    let seen = posts();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]["headers"]["authorization"], "Bearer sk-pay-0123456789abcdef",
        "the stored key, never the task token"
    );

    // The same request again, another body, another query: each waits.
    let mut ids = vec![id.clone()];
    for (path, body) in [
        ("/transfers?to=bob", r#"{"amount": 10}"#),
        ("/transfers?to=bob", r#"{"amount": 10000}"#),
        ("/transfers?to=mallory", r#"{"amount": 10}"#),
        ("/transfers/../transfers?to=bob", r#"{"amount": 10} "#),
    ] {
        let r = s.post(&token, path, body);
        if r.status == 400 {
            continue; // a path that escapes is refused before any decision
        }
        assert_eq!(r.status, 403, "{path} {body}: {}", r.body);
        let id = r.json()["error"]["approval_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!ids.contains(&id), "{path} {body} reused {id}");
        ids.push(id);
    }
    assert_eq!(posts().len(), 1);
    assert_eq!(audit(&s.w.b, Some("approval.use")).len(), 1);
}

#[test]
fn an_exchange_needing_an_admins_approval_keeps_duties_apart() {
    let s = setup("0s");
    let pending = s.token("alice", "https://payments.example");
    assert_eq!(pending.status, 403, "{}", pending.body);
    assert_eq!(pending.header("retry-after"), Some("5"));
    let j = pending.json();
    assert_eq!(j["error"], "access_denied");
    assert_eq!(j["refused_by"], "approval required");
    let id = j["approval_id"].as_str().unwrap().to_owned();
    let shown = s.cli_json(&["approval", "show", &id]);
    assert_eq!(shown["role"], "admin");
    assert_eq!(
        shown["subject"]["request"],
        json!({"audiences": ["https://payments.example"], "scopes": ["work"]})
    );

    // An auditor cannot decide; an approver cannot decide what needs an
    // admin; alice cannot approve her own request; a token naming no
    // person cannot be checked, so it cannot either.
    let auditor = s.admin_token("auditor", None);
    assert_eq!(s.decide_http(&auditor, &id, "approve").status, 403);
    let bob_approver = s.admin_token("approver", Some("login.test/bob"));
    let r = s.decide_http(&bob_approver, &id, "approve");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("role `admin`"), "{}", r.body);
    let alice_admin = s.admin_token("admin", Some("login.test/alice"));
    let r = s.decide_http(&alice_admin, &id, "approve");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("separation of duties"), "{}", r.body);
    let nobody = s.admin_token("admin", None);
    let r = s.decide_http(&nobody, &id, "approve");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("--person"), "{}", r.body);
    let bad_person = s.w.b.cli(&[
        "admin-token",
        "create",
        "--role",
        "admin",
        "--person",
        "no-slash",
    ]);
    assert_ne!(bad_person.code, 0);
    assert_eq!(
        s.cli_json(&["approval", "show", &id])["state"],
        "pending",
        "refused decisions change nothing"
    );
    let refused = audit(&s.w.b, Some("approval.approve"));
    assert_eq!(refused.len(), 3, "each refused decision is recorded");
    assert!(refused.iter().all(|r| r["decision"] != "allow"));
    // The auditor's, at the door.
    assert!(
        audit(&s.w.b, Some("admin.auth"))
            .iter()
            .any(|r| r["reasons"].to_string().contains("decide approvals"))
    );

    let carol = s.admin_token("admin", Some("login.test/carol"));
    let r = s.decide_http(&carol, &id, "approve");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reason"], "checked the amount");
    // Once.
    assert_eq!(s.decide_http(&carol, &id, "deny").status, 409);

    // Bob's exchange is another request (another user): still pending.
    let bobs = s.token("bob", "https://payments.example");
    assert_eq!(bobs.status, 403);
    assert_ne!(bobs.json()["approval_id"], id.as_str());
    let granted = s.token("alice", "https://payments.example");
    assert_eq!(granted.status, 200, "{}", granted.body);
    let replay = s.token("alice", "https://payments.example");
    assert_eq!(replay.status, 403);
    assert_ne!(replay.json()["approval_id"], id.as_str());
    // Other audiences need no approval at all.
    assert_eq!(s.token("alice", "https://pay.test").status, 200);
}

/// Found by the attacker round: one user's session filling the agent's
/// pending approvals, a refusal dodged with a new task token, a grant asked
/// under older and weaker policies, invisible characters in what an
/// approver reads, the request's query and digests in webhooks and the
/// trail, and auditors reading arguments the trail keeps out.
#[test]
fn approvals_resist_flooding_dodging_stale_terms_and_hidden_text() {
    let s = setup("0s");
    let alice = s.task("alice", &s.mcp_url());
    let sid = s.session(&alice);
    // Each user has a bounded share (4 here) of the agent's pending approvals.
    for i in 0..4 {
        let r = s.call(
            &alice,
            &sid,
            "read_file",
            json!({"path": format!("/flood/{i}")}),
        );
        pending_id(&r);
    }
    let full = s.call(&alice, &sid, "read_file", json!({"path": "/flood/5"}));
    assert_eq!(full["error"]["data"]["refused_by"], "approval required");
    assert!(full["error"]["data"]["approval_id"].is_null(), "{full}");
    assert!(
        full["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user:login.test/alice"),
        "{full}"
    );
    let bob = s.task("bob", &s.mcp_url());
    let bob_sid = s.session(&bob);
    let bobs = s.call(&bob, &bob_sid, "read_file", json!({"path": "/srv/b"}));
    let bob_id = pending_id(&bobs);

    // A refusal stands for the same request under a new task token.
    s.w.b
        .cli(&["approval", "deny", &bob_id, "--reason", "no"])
        .ok();
    let bob2 = s.task("bob", &s.mcp_url());
    let bob2_sid = s.session(&bob2);
    let again = s.call(&bob2, &bob2_sid, "read_file", json!({"path": "/srv/b"}));
    assert_eq!(
        again["error"]["data"]["refused_by"], "approval denied",
        "{again}"
    );
    assert_eq!(again["error"]["data"]["approval_id"], bob_id.as_str());

    // Hidden text: flagged, and written out where an approver reads it.
    let hidden = format!("acme-supplies{}", "\u{E0049}\u{E0047}\u{E004E}");
    let r = s.call(&bob2, &bob2_sid, "read_file", json!({"path": hidden}));
    let hid = pending_id(&r);
    let shown = s.w.b.cli(&["approval", "show", &hid]);
    assert!(shown.stdout.contains("\\u{E0049}"), "{}", shown.stdout);
    assert!(!shown.stdout.contains('\u{E0049}'), "{}", shown.stdout);
    assert!(shown.stdout.contains("invisible"), "{}", shown.stdout);

    // Readers who may not approve see no arguments.
    let auditor = s.admin_token("auditor", None);
    let seen = warrant_testkit::http(
        s.w.b.api,
        "GET",
        &format!("/admin/v1/approvals/{hid}"),
        &[("authorization", &format!("Bearer {auditor}"))],
        None,
    );
    assert_eq!(seen.status, 200);
    assert!(seen.json()["shown"].is_null(), "{}", seen.body);
    let approver = s.admin_token("approver", Some("login.test/carol"));
    let seen = warrant_testkit::http(
        s.w.b.api,
        "GET",
        &format!("/admin/v1/approvals/{hid}"),
        &[("authorization", &format!("Bearer {approver}"))],
        None,
    );
    assert!(
        seen.json()["shown"]["arguments"].is_object(),
        "{}",
        seen.body
    );
    let r = s.decide_http(&auditor, &hid, "approve");
    assert!(r.body.contains("approver or admin"), "{}", r.body);

    // Webhooks and the trail carry the binding, not digests or arguments.
    let announced = eventually("webhooks", || {
        let j = s.hooks.bodies("/flaky");
        (j.len() >= 6).then_some(j)
    });
    for a in &announced {
        let text = a.to_string();
        assert!(
            !text.contains("sha256") && !text.contains("/flood/"),
            "{text}"
        );
    }
    for r in audit(&s.w.b, Some("approval")) {
        assert!(r["detail"]["request"].is_null(), "{r}");
    }

    // A policy change: approvals asked before can no longer be decided, and
    // the request asks again under the new terms.
    let stale = pending_id(&s.call(&alice, &sid, "read_file", json!({"path": "/flood/0"})));
    std::fs::write(
        s.w.b.data_dir.join("policies/delegation.cedar"),
        POLICY.replace(
            "@id(\"reading-needs-approval\")\n@approval(\"required\")",
            "@id(\"reading-needs-approval\")\n@approval(\"required\") @approval_role(\"admin\")",
        ),
    )
    .unwrap();
    s.w.b.cli(&["policy", "reload"]).ok();
    let r = s.w.b.cli(&["approval", "approve", &stale]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no longer in force"), "{}", r.stderr);
    let fresh = s.call(&bob2, &bob2_sid, "read_file", json!({"path": "/srv/c"}));
    let fresh_id = pending_id(&fresh);
    assert_eq!(
        s.cli_json(&["approval", "show", &fresh_id])["role"],
        "admin"
    );
    let r = s.decide_http(&approver, &fresh_id, "approve");
    assert_eq!(r.status, 403, "{}", r.body);
    // Admin tokens name their holder exactly.
    let r = s.w.b.cli(&[
        "admin-token",
        "create",
        "--role",
        "approver",
        "--person",
        "login.test/alice ",
    ]);
    assert_ne!(r.code, 0);
}

#[test]
fn a_body_is_bound_with_its_type_and_shown_to_the_approver() {
    let s = setup("0s");
    let token = s.task("alice", "https://pay.test");
    let body = r#"{"a":"","x":"&amount=5000&y="}"#;
    let r = s.post(&token, "/transfers", body);
    let id = r.json()["error"]["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = s.cli_json(&["approval", "show", &id]);
    assert_eq!(shown["shown"]["body"], body, "the approver reads the body");
    s.w.b.cli(&["approval", "approve", &id]).ok();
    // The same bytes as a form are another request.
    let bearer = format!("Bearer {token}");
    let as_form = warrant_testkit::http(
        s.w.b.edge,
        "POST",
        "/pay/transfers",
        &[
            ("authorization", &bearer),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(body),
    );
    assert_eq!(as_form.status, 403, "{}", as_form.body);
    assert_ne!(as_form.json()["error"]["approval_id"], id.as_str());
    assert_eq!(s.post(&token, "/transfers", body).status, 200);
}

#[test]
fn holding_is_bounded_per_agent() {
    let s = setup("4s");
    let token = s.task("alice", "https://pay.test");
    let started = std::time::Instant::now();
    let quick: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(|| {
                    let t = std::time::Instant::now();
                    let r = s.post(&token, "/held", r#"{"n": 1}"#);
                    assert_eq!(r.status, 403, "{}", r.body);
                    t.elapsed() < Duration::from_secs(2)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let answered_now = quick.iter().filter(|q| **q).count();
    assert!(
        answered_now >= 4,
        "past 16 held requests an agent's next ones are answered at once: {answered_now} of 20 in {:?}",
        started.elapsed()
    );
}
