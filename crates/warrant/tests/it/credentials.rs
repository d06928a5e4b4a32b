//! Issue 18: every credential an agent's task needs. The official provider
//! SDKs through the egress proxy with nothing changed but their base URL and
//! key; cloud and SaaS credentials obtained by federation (AWS STS, RFC 7523
//! client assertions, RFC 8693 token exchange at a security token service),
//! against peers warrant did not write.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::support::{
    Upstream, World, audit, exchange, free_port, identity, jwt_claims, put_secret, python, repo,
    world_with,
};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// What the upstream gets instead of the task token, per provider: the
/// header and value it must carry.
const PROVIDERS: &[(&str, &str, &str)] = &[
    (
        "openai",
        "authorization",
        "Bearer sk-openai-stored-0123456789",
    ),
    ("anthropic", "x-api-key", "sk-ant-stored-0123456789"),
    ("gemini", "x-goog-api-key", "AIza-gemini-stored-0123456789"),
    (
        "mistral",
        "authorization",
        "Bearer mistral-stored-0123456789",
    ),
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

/// The routes of docs/proxy.md's "Provider SDKs", as written, with each
/// upstream swapped for the local one (the audience stays the provider's).
fn provider_routes(up: &Upstream) -> String {
    let page = include_str!("../../../../docs/proxy.md");
    let block = page
        .split("### Provider SDKs")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|b| b.split("\n```").next())
        .expect("docs/proxy.md has the provider routes");
    block
        .lines()
        .map(|l| match l.strip_prefix("upstream = ") {
            Some(origin) => format!("upstream = \"{}\"\naudience = {origin}", up.origin("http")),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
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
        "https://api.openai.com",
        "https://api.anthropic.com",
        "https://generativelanguage.googleapis.com",
        "https://api.mistral.ai",
        "https://api.cohere.com",
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
            sdk["denied"]["text"]
                .as_str()
                .unwrap()
                .contains("refused_by")
                || sdk["denied"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("does not allow"),
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
            s["headers"]["x-warrant-txn"]
                .as_str()
                .unwrap()
                .starts_with("txn_")
                && s["headers"]["traceparent"]
                    .as_str()
                    .unwrap()
                    .starts_with("00-"),
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

/// `GET path` at the edge with the task token as a bearer token.
fn get(w: &World, path: &str, token: &str) -> warrant_testkit::Response {
    let bearer = format!("Bearer {token}");
    warrant_testkit::http(w.b.edge, "GET", path, &[("authorization", &bearer)], None)
}

/// Where the broker publishes its keys.
fn jwks_url(w: &World) -> String {
    format!("http://{}/.well-known/jwks.json", w.b.api)
}

/// A child process killed when the test ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd`; returns it and the line it prints when ready.
fn spawn(mut cmd: Command) -> (Peer, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Peer(child), line)
}

/// A Python peer from tests/interop with `args`.
fn python_peer(script: &str, args: &[String]) -> (Peer, String) {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/interop").join(script))
        .args(args);
    spawn(cmd)
}

fn jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const AWS_POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("exchange")
permit(principal, action == Action::"token:exchange", resource);
@id("aws")
permit(principal, action == Action::"http:request", resource)
when { resource == Route::"aws-s3" || resource == Route::"aws-sqs" };
@id("no-hr")
forbid(principal, action == Action::"http:request", resource == Route::"aws-s3")
when { context.method == "GET" && context.path like "/reports/hr/*" };
"#;

const ROLE: &str = "arn:aws:iam::123456789012:role/warrant-agents";

/// boto3 through the edge: `(output of aws_client.py)`.
fn boto3(w: &World, token: &str, moto: u16, queue: &str) -> Value {
    let out = Command::new(python())
        .arg(repo().join("tests/interop/aws_client.py"))
        .arg(format!("http://{}", w.b.edge))
        .arg(token)
        .arg(format!("http://127.0.0.1:{moto}"))
        .arg(queue)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Requirement 2: AWS by federation, no AWS key stored anywhere. boto3
/// (S3 and SQS) pointed at the edge with its task token as session token;
/// warrant mints a web identity token for the agent and user, an STS that
/// verifies it as AWS does (issuer, audience, signature by warrant's JWKS,
/// the role's trust policy pinning the agent) gives moto's temporary
/// credentials, and every request is re-signed with SigV4 at the last hop,
/// which moto (IAM authentication enforced) checks. The agent's own
/// signature gets nothing from moto directly. Credentials are cached per
/// role and subject; session tags name agent and user; a scope maps to a
/// session policy; a revoked task stops at once although its STS keys are
/// still valid; an agent the trust policy does not name gets nothing.
#[test]
fn boto3_reaches_s3_and_sqs_with_credentials_warrant_federates() {
    let (moto, sts) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("reports-rw.json");
    std::fs::write(
        &policy_file,
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::reports", "arn:aws:s3:::reports/*"]}]}"#,
    )
    .unwrap();
    let routes = format!(
        r#"
[[route]]
name = "aws-s3"
upstream = "http://127.0.0.1:{moto}"
audience = "https://s3.amazonaws.com"
allow = [ {{ methods = ["GET", "PUT", "HEAD", "POST"], paths = ["/reports", "/reports/**"] }} ]
credential = {{ kind = "aws_sts", role_arn = "{ROLE}", region = "us-east-1", service = "s3", sts_url = "http://127.0.0.1:{sts}", session_duration = "15m", session_policies = {{ "reports:rw" = "{}" }} }}

[[route]]
name = "aws-sqs"
upstream = "http://127.0.0.1:{moto}"
audience = "https://sqs.amazonaws.com"
allow = [ {{ methods = ["POST"], paths = ["/"] }} ]
credential = {{ kind = "aws_sts", role_arn = "{ROLE}", region = "us-east-1", service = "sqs", sts_url = "http://127.0.0.1:{sts}", actions = ["GetQueueUrl", "SendMessage", "ReceiveMessage"] }}
"#,
        policy_file.display()
    );
    let w = world_with(4, &routes, AWS_POLICY);
    let log = dir.path().join("sts.jsonl");
    let (_aws, ready) = python_peer(
        "aws_peer.py",
        &[
            log.display().to_string(),
            w.b.issuer.clone(),
            jwks_url(&w),
            moto.to_string(),
            sts.to_string(),
        ],
    );
    let ready: Value = serde_json::from_str(&ready)
        .unwrap_or_else(|e| panic!("aws_peer.py did not start ({e}): {ready}"));
    let queue = ready["queue"].as_str().unwrap().to_owned();
    let audiences = ["https://s3.amazonaws.com", "https://sqs.amazonaws.com"];
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice", &audiences, "reports:rw");

    let r = boto3(&w, &token, moto, &queue);
    assert_eq!(
        r["s3_get"],
        "numbers",
        "{r}\n{:#?}\n{:#?}",
        w.b.logs()
            .lines()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>(),
        jsonl(&log)
    );
    assert_eq!(r["s3_list"], json!(["q3/summary report.txt"]), "{r}");
    // A copy reads its source with the route's credentials: only from
    // paths the route allows reading, whatever the role may read.
    assert_eq!(r["copy_within"], "numbers", "{r}");
    assert_eq!(r["copy_outside"]["status"], 403, "{r}");
    assert_eq!(r["copy_outside"]["code"], "AccessDenied", "{r}");
    assert!(
        r["copy_outside"]["message"]
            .as_str()
            .unwrap()
            .contains("/archive/secret.txt"),
        "{r}"
    );
    assert_eq!(r["sqs_received"], json!(["hello from an agent"]), "{r}");
    assert_eq!(
        r["s3_delete"]["status"], 403,
        "DELETE is not in the route's allow rules: {r}"
    );
    // Found by the outside review of issue 18: a PUT the allow rules admit
    // made the bucket public or set a lifecycle that deletes everything
    // (S3 names those operations in the query and headers), and a copy
    // read what policy forbids reading. Both are decided now.
    for (op, refusal) in r["control"].as_object().unwrap() {
        assert_eq!(refusal["status"], 403, "{op}: {r}");
        assert_eq!(refusal["code"], "AccessDenied", "{op}: {r}");
        assert!(
            refusal["message"].as_str().unwrap().contains("s3_control"),
            "{op}: {r}"
        );
    }
    assert_eq!(r["control"].as_object().unwrap().len(), 6);
    // Each refused as it should be: (what, status, words in the answer).
    let refused = |key: &str, status: u16, words: &str| {
        let got = &r[key];
        let text = got["body"]
            .as_str()
            .or(got["message"].as_str())
            .unwrap_or("");
        assert_eq!(got["status"], status, "{key}: {r}");
        assert!(text.contains(words), "{key}: {r}");
    };
    refused("hr_select", 403, "the object a select reads");
    refused("form_upload", 403, "form uploads");
    refused("urlencoded_form_upload", 403, "form uploads");
    refused("form_upload_naming_uploads", 403, "form uploads");
    refused("create_bucket_with_query", 403, "createbucket");
    refused("smuggled_action", 400, "names `Action`");
    refused("action_header", 400, "`Action` header");
    refused("hr_get", 403, "policy does not allow");
    refused("hr_copy", 403, "copy source");
    // SQS: the operations the route lists pass, others do not.
    assert_eq!(r["sqs_purge"]["status"], 403, "{r}");
    assert!(
        r["sqs_purge"]["message"]
            .as_str()
            .unwrap()
            .contains("PurgeQueue"),
        "{r}"
    );
    // moto enforces signatures: the agent's own (placeholder keys, task
    // token as session token) gets nothing there.
    assert_eq!(r["direct"]["status"], 403, "{r}");

    // One exchange per route for every call it carried: cached per role
    // and subject.
    let exchanges = jsonl(&log);
    assert_eq!(exchanges.len(), 2, "{exchanges:#?}");
    for x in &exchanges {
        assert!(x.get("refused").is_none(), "{x}");
        assert_eq!(x["role"], ROLE);
        assert_eq!(x["session"], "orch@login.test=2Falice", "{x}");
        assert_eq!(x["header"]["typ"], "warrant-federation+jwt", "{x}");
        let c = &x["claims"];
        assert_eq!(c["iss"], w.b.issuer);
        assert_eq!(c["aud"], "sts.amazonaws.com");
        assert_eq!(c["sub"], "agent:orch");
        assert_eq!(c["user"], "login.test/alice");
        assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 300);
        assert_eq!(
            c["https://aws.amazon.com/tags"]["principal_tags"],
            json!({
                "warrant:agent": ["orch"],
                "warrant:env": ["dev"],
                "warrant:user": ["login.test/alice"],
            }),
            "{x}"
        );
    }
    let s3x = exchanges
        .iter()
        .find(|x| x["duration"] == "900")
        .expect("the S3 route's 15-minute session");
    let session_policy: Value = serde_json::from_str(s3x["policy"].as_str().unwrap()).unwrap();
    assert_eq!(
        session_policy["Statement"][0]["Action"],
        json!(["s3:GetObject", "s3:PutObject", "s3:ListBucket"]),
        "the task's scope `reports:rw` narrows the session: {s3x}"
    );
    let sqsx = exchanges.iter().find(|x| x["duration"] == "3600").unwrap();
    assert!(
        sqsx["policy"].is_null(),
        "no mapping, no session policy: {sqsx}"
    );

    // The audit names kind, role, session and key id; never a secret.
    let records = audit(&w.b, Some("proxy.request"));
    let allowed: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "allow" && r["resource"] == "Route::\"aws-s3\"")
        .collect();
    assert!(allowed.len() >= 3, "{records:#?}");
    for a in &allowed {
        assert_eq!(a["credential_type"], "aws_sts");
        let id = a["credential_id"].as_str().unwrap();
        assert!(
            id.contains(ROLE)
                && id.contains("session orch@login.test=2Falice")
                && id.contains(s3x["access_key_id"].as_str().unwrap()),
            "{id}"
        );
    }
    // What an AWS request does beyond its method and path is named too.
    let detail = |key: &str, want: &str| {
        records
            .iter()
            .any(|r| r["detail"][key].to_string().contains(want))
    };
    assert!(detail("copy_source", "/reports/q3/summary"), "{records:#?}");
    // A refused copy names its source and the policy that refused the read.
    let refused_copy = records
        .iter()
        .find(|r| {
            r["decision"] == "deny" && r["detail"]["copy_source"] == "/reports/hr/salaries.txt"
        })
        .expect("the refused copy is recorded with its source");
    assert_eq!(refused_copy["reasons"], json!(["no-hr"]), "{refused_copy}");
    assert!(detail("s3_control", "policy") && detail("s3_control", "lifecycle"));
    assert!(detail("aws_operation", "SendMessage") && detail("aws_operation", "PurgeQueue"));
    assert!(
        detail("query_keys", "\"x\""),
        "query keys are recorded on AWS routes"
    );
    let trail = serde_json::to_string(&records).unwrap();
    let logs = w.b.logs();
    for x in &exchanges {
        for secret in ["secret_access_key", "session_token"] {
            let v = x[secret].as_str().unwrap();
            assert!(!trail.contains(v) && !logs.contains(v), "{secret} leaked");
        }
    }
    assert!(!logs.contains(&token));

    // A task without a mapped scope gets no AWS session on the S3 route,
    // and is told why (botocore shows the message of an S3-style error).
    let chat = task_token(&w, &orch, "alice", &audiences, "llm:chat");
    let r = boto3(&w, &chat, moto, &queue);
    assert_eq!(r["s3_error"]["status"], 403, "{r}");
    assert_eq!(r["s3_error"]["code"], "AccessDenied", "{r}");
    assert!(
        r["s3_error"]["message"]
            .as_str()
            .unwrap()
            .contains("reports:rw"),
        "{r}"
    );
    assert_eq!(
        jsonl(&log).len(),
        2,
        "no exchange for a scope that maps to nothing"
    );

    // An agent the role's trust policy does not name gets nothing, in words.
    let sub = identity(&w.b, "sub");
    let other = task_token(&w, &sub, "alice", &audiences, "reports:rw");
    let r = boto3(&w, &other, moto, &queue);
    assert_eq!(r["s3_error"]["status"], 502, "{r}");
    assert!(
        r["s3_error"]["message"]
            .as_str()
            .unwrap()
            .contains("trust policy"),
        "{r}"
    );
    let refused = jsonl(&log);
    assert!(
        refused.last().unwrap()["refused"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{refused:#?}"
    );

    // Revoked: the next request stops, though the STS keys are still good.
    let task = jwt_claims(&token)["task"].as_str().unwrap().to_owned();
    w.b.cli(&["revoke", "--task", &task]).ok();
    let before = jsonl(&log).len();
    let r = boto3(&w, &token, moto, &queue);
    assert_eq!(r["s3_error"]["status"], 401, "{r}");
    assert_eq!(r["sqs_error"]["status"], 401, "{r}");
    assert_eq!(jsonl(&log).len(), before, "no new exchange");
}

const SAAS_POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("exchange")
permit(principal, action == Action::"token:exchange", resource);
@id("saas")
permit(principal in Agent::"orch", action == Action::"http:request", resource);
"#;

/// Requirement 3: a credential for an authorization server that accepts
/// `private_key_jwt` (RFC 7523). node `oidc-provider` knows the client
/// `warrant-crm` only by warrant's `jwks_uri`: warrant signs the client
/// assertion with its own key, gets a client-credentials token (scope and
/// resource as configured), caches it and injects it. No client secret
/// exists anywhere. A client whose registered keys are not warrant's gets
/// nothing, and the agent is told so in words.
#[test]
fn a_client_assertion_signed_by_warrant_gets_a_token_from_oidc_provider() {
    let up = Upstream::start(false);
    let port = free_port();
    let p = up.origin("http");
    let routes = format!(
        r#"
[[route]]
name = "crm"
upstream = "{p}"
audience = "https://crm.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "oauth2_private_key_jwt", token_url = "http://127.0.0.1:{port}/token", client_id = "warrant-crm", scope = "read", resource = "https://crm.test" }}

[[route]]
name = "stranger"
upstream = "{p}"
audience = "https://stranger.test"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "oauth2_private_key_jwt", token_url = "http://127.0.0.1:{port}/token", client_id = "stranger", scope = "read" }}
"#
    );
    let w = world_with(4, &routes, SAAS_POLICY);
    let mut node = Command::new("node");
    node.current_dir(repo().join("tests/browser"))
        .arg("oauth-server.mjs")
        .env("PORT", port.to_string())
        .env("JWKS_URI", jwks_url(&w))
        .env("STRANGER_JWKS_URI", format!("http://127.0.0.1:{port}/jwks"));
    let (_server, line) = spawn(node);
    assert_eq!(line.trim(), "ready");

    let orch = identity(&w.b, "orch");
    let token = task_token(
        &w,
        &orch,
        "alice",
        &["https://crm.test", "https://stranger.test"],
        "crm:read",
    );
    for _ in 0..3 {
        let r = get(&w, "/crm/v1/accounts", &token);
        assert_eq!(r.status, 200, "{}\n{}", r.body, w.b.logs());
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    let auth = seen[0]["headers"]["authorization"].as_str().unwrap();
    let at = auth.strip_prefix("Bearer ").unwrap();
    assert!(
        seen.iter().all(|s| s["headers"]["authorization"] == auth),
        "one token, cached: {seen:?}"
    );
    let claims = jwt_claims(at);
    assert_eq!(claims["client_id"], "warrant-crm", "{claims}");
    assert_eq!(claims["iss"], format!("http://127.0.0.1:{port}"));
    assert_eq!(claims["aud"], "https://crm.test");
    assert_eq!(claims["scope"], "read");
    assert_ne!(at, token);

    let records = audit(&w.b, Some("proxy.request"));
    let a = records
        .iter()
        .rev()
        .find(|r| r["decision"] == "allow")
        .unwrap();
    assert_eq!(a["credential_type"], "oauth2_private_key_jwt");
    assert!(
        a["credential_id"]
            .as_str()
            .unwrap()
            .starts_with("oauth2:warrant-crm by private_key_jwt"),
        "{a}"
    );
    assert!(!serde_json::to_string(&records).unwrap().contains(at));

    // Keys that are not the client's registered ones: refused by the
    // server, said to the agent; nothing reaches the upstream.
    let r = get(&w, "/stranger/v1/accounts", &token);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("refused the client credentials") && r.body.contains("invalid_client"),
        "{}",
        r.body
    );
    assert_eq!(up.seen().len(), 3);
}

const PROVIDER: &str = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/agents/providers/warrant";
const SERVICE_ACCOUNT: &str = "reports-reader@demo-project.iam.gserviceaccount.com";

/// Requirement 4: Google Cloud by token exchange. warrant mints a token
/// for the agent and user, exchanges it by RFC 8693 at a security token
/// service (Google's fields: the provider as audience, the token's `aud`
/// its https form, an attribute condition on the agent), exchanges the
/// federated token for a service account's, caches it and injects it. The
/// agent never holds a Google credential; one the attribute condition
/// refuses gets nothing.
#[test]
fn a_token_exchange_at_a_security_token_service_reaches_cloud_storage() {
    let port = free_port();
    let g = format!("http://127.0.0.1:{port}");
    let routes = format!(
        r#"
[[route]]
name = "gcs"
upstream = "{g}"
audience = "https://storage.googleapis.com"
allow = [ {{ methods = ["GET"], paths = ["/storage/v1/b/*/o"] }} ]
credential = {{ kind = "token_exchange", token_url = "{g}/v1/token", audience = "{PROVIDER}", subject = "agent:{{agent}}:user:{{user}}", service_account = "{SERVICE_ACCOUNT}", impersonation_url = "{g}/v1/projects/-/serviceAccounts/{{service_account}}:generateAccessToken" }}
"#
    );
    let w = world_with(
        4,
        &routes,
        SAAS_POLICY.replace("in Agent::\"orch\"", "").as_str(),
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gcp.jsonl");
    let (_peer, line) = python_peer(
        "gcp_peer.py",
        &[
            log.display().to_string(),
            w.b.issuer.clone(),
            jwks_url(&w),
            PROVIDER.to_owned(),
            port.to_string(),
        ],
    );
    assert!(line.starts_with("PORT"), "{line}");

    let orch = identity(&w.b, "orch");
    let token = task_token(
        &w,
        &orch,
        "alice",
        &["https://storage.googleapis.com"],
        "gcs:read",
    );
    for _ in 0..2 {
        let r = get(&w, "/gcs/storage/v1/b/reports/o", &token);
        assert_eq!(r.status, 200, "{}\n{:#?}", r.body, jsonl(&log));
        assert_eq!(r.json()["items"][0]["name"], "q3/summary.txt");
    }
    let steps = jsonl(&log);
    let step = |name: &str| -> Vec<&Value> { steps.iter().filter(|s| s["step"] == name).collect() };
    let (sts, imp, storage) = (step("sts"), step("impersonate"), step("storage"));
    assert_eq!(
        (sts.len(), imp.len(), storage.len()),
        (1, 1, 2),
        "cached: {steps:#?}"
    );
    let x = sts[0];
    assert!(x.get("refused").is_none(), "{x}");
    assert_eq!(
        x["form"]["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(x["header"]["typ"], "warrant-federation+jwt");
    assert_eq!(x["claims"]["sub"], "agent:orch:user:login.test/alice");
    assert_eq!(x["claims"]["aud"], format!("https:{PROVIDER}"));
    assert_eq!(x["claims"]["iss"], w.b.issuer);
    assert_eq!(imp[0]["service_account"], SERVICE_ACCOUNT);
    assert_eq!(
        imp[0]["scope"],
        json!(["https://www.googleapis.com/auth/cloud-platform"])
    );
    for s in &storage {
        let h = &s["headers"];
        assert!(
            h["authorization"]
                .as_str()
                .unwrap()
                .starts_with("Bearer ya29.sa-"),
            "{s}"
        );
        assert!(
            h["x-warrant-txn"].as_str().unwrap().starts_with("txn_"),
            "{s}"
        );
        assert!(h["traceparent"].as_str().unwrap().starts_with("00-"), "{s}");
        assert!(!h.to_string().contains(&token));
    }
    let records = audit(&w.b, Some("proxy.request"));
    let a = records
        .iter()
        .rev()
        .find(|r| r["decision"] == "allow")
        .unwrap();
    assert_eq!(a["credential_type"], "token_exchange");
    let id = a["credential_id"].as_str().unwrap();
    assert!(
        id.contains("agent:orch:user:login.test/alice") && id.contains(SERVICE_ACCOUNT),
        "{id}"
    );
    let sa_token = storage[0]["headers"]["authorization"].as_str().unwrap();
    let trail = serde_json::to_string(&records).unwrap();
    assert!(!trail.contains(&sa_token[7..]) && !w.b.logs().contains(&sa_token[7..]));

    // The provider's attribute condition admits only `orch`: another agent
    // is told why it gets nothing, and nothing reaches storage.
    let sub = identity(&w.b, "sub");
    let other = task_token(
        &w,
        &sub,
        "alice",
        &["https://storage.googleapis.com"],
        "gcs:read",
    );
    let r = get(&w, "/gcs/storage/v1/b/reports/o", &other);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("unauthorized_client"), "{}", r.body);
    let after = jsonl(&log);
    assert!(
        after.last().unwrap()["refused"]
            .as_str()
            .unwrap()
            .contains("attribute condition")
    );
    assert_eq!(after.iter().filter(|s| s["step"] == "storage").count(), 2);
}

/// Found by the outside review of issue 18: a token endpoint (or STS) that
/// sent its headers and then its body a byte a second held the request,
/// and every request waiting on the same credential, with no limit and no
/// record. The whole fetch is bounded by the route's timeout now: 502 in
/// words, recorded, and the next request is not stuck behind it.
#[test]
fn a_credential_endpoint_that_trickles_its_answer_is_cut_off() {
    let up = Upstream::start(false);
    let p = up.origin("http");
    let routes = format!(
        r#"
[[route]]
name = "slow"
upstream = "{p}"
audience = "https://slow.test"
timeout = "2s"
allow = [ {{ methods = ["GET"], paths = ["/**"] }} ]
credential = {{ kind = "oauth2_private_key_jwt", token_url = "{p}/oauth/trickle", client_id = "c" }}
"#
    );
    let w = world_with(4, &routes, SAAS_POLICY);
    let orch = identity(&w.b, "orch");
    let token = task_token(&w, &orch, "alice", &["https://slow.test"], "x");
    let started = std::time::Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let first = s.spawn(|| get(&w, "/slow/x", &token));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let second = s.spawn(|| get(&w, "/slow/x", &token));
        (first.join().unwrap(), second.join().unwrap())
    });
    let took = started.elapsed();
    for r in [&a, &b] {
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(r.body.contains("did not answer in time"), "{}", r.body);
    }
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    let refused = audit(&w.b, Some("proxy.request"))
        .into_iter()
        .filter(|r| r["detail"]["refusal"] == "credential_unavailable")
        .count();
    assert_eq!(refused, 2, "both recorded");
    assert!(
        up.seen().iter().all(|s| s["path"] == "/oauth/trickle"),
        "nothing forwarded"
    );
}
