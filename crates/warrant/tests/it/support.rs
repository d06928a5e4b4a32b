//! The fixtures every scenario uses: a broker, the CLI's audit trail, token
//! helpers, the test user issuer's world, a recording upstream. Test files
//! import from here and never from each other.

#![allow(dead_code)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use warrant_testkit::{Broker, Options, Run, spawn_serve};

/// A broker with default options.
pub fn broker() -> Broker {
    Broker::start(bin())
}

/// Audit records as JSON, optionally filtered by event.
pub fn audit(b: &Broker, event: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["audit", "list", "--output", "json", "--limit", "10000"];
    if let Some(e) = event {
        args.extend(["--event", e]);
    }
    b.cli(&args).json().as_array().unwrap().clone()
}

/// Part `i` of a compact JWT (0 header, 1 claims), decoded without verifying.
pub fn jwt_part(token: &str, i: usize) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(i).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A JWT's claims, unverified (tests read what the broker issued).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

/// A JWT's header, unverified.
pub fn jwt_header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}

/// A JSON POST to the API listener.
pub fn post_json(b: &Broker, path: &str, body: &serde_json::Value) -> warrant_testkit::Response {
    b.http(
        "POST",
        path,
        &[("content-type", "application/json")],
        Some(&body.to_string()),
    )
}

/// Audit records matching `pred`, waiting (up to 10 s) until there are at
/// least `n`: records of answered edge requests are written in batches, a
/// few milliseconds after the answer.
pub fn audit_until(
    b: &Broker,
    event: Option<&str>,
    n: usize,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let all = audit(b, event);
        let matching: Vec<serde_json::Value> = all.into_iter().filter(|r| pred(r)).collect();
        if matching.len() >= n || std::time::Instant::now() > deadline {
            return matching;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The binary under test: this build's, or `WARRANT_TEST_BIN` (to run the
/// suite against another build, e.g. to show a regression test fails on an
/// older one).
pub fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("WARRANT_TEST_BIN")
            .map_or_else(|| env!("CARGO_BIN_EXE_warrant").into(), Into::into)
    })
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn python() -> PathBuf {
    let p = repo().join("target/interop-venv/bin/python");
    assert!(
        p.exists(),
        "the interop virtualenv is missing: run `scripts/setup-test-deps` (README's test command `scripts/test` does)"
    );
    p
}

pub const DELEGATION_POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);

@id("support-reads-tickets")
permit(principal in Agent::"orch", action == Action::"token:exchange", resource == Audience::"https://tickets.example")
when { context has user && context.groups.contains("login.test/support") };

@id("delegates")
permit(principal, action == Action::"token:exchange", resource)
when { context.depth >= 2 };

@id("no-delegated-writes")
forbid(principal, action == Action::"token:exchange", resource)
when { context.depth > 1 && context.scopes.containsAny(["tickets:write"]) };

@id("orch-self")
permit(principal in Agent::"orch", action == Action::"token:self", resource == Audience::"https://tickets.example");
"#;

pub struct World {
    pub b: Broker,
    pub users: Value,
    _dir: tempfile::TempDir,
}

pub fn form(b: &Broker, path: &str, fields: &[(&str, &str)]) -> warrant_testkit::Response {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    b.http(
        "POST",
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(&body),
    )
}

pub fn world(max_depth: u32) -> World {
    world_with(max_depth, "", DELEGATION_POLICY)
}

/// A broker trusting the test user issuer, with `extra` appended to its
/// configuration and `policy` in force, and agents orch, sub and leaf.
pub fn world_with(max_depth: u32, extra: &str, policy: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/interop/user_issuer.py"))
        .args([
            dir.path().to_str().unwrap(),
            "https://login.test",
            "warrant",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users: Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = Broker::start_with(
        bin(),
        Options {
            config: Some(format!(
                "max_delegation_depth = {max_depth}\n[[user_issuer]]\nissuer = \"https://login.test\"\njwks_file = \"{}\"\naudience = \"warrant\"\n{extra}",
                dir.path().join("users-jwks.json").display()
            )),
            ..Default::default()
        },
    );
    std::fs::write(b.data_dir.join("policies/delegation.cedar"), policy).unwrap();
    b.cli(&["policy", "reload"]).ok();
    for a in ["orch", "sub", "leaf"] {
        b.cli(&[
            "agent", "create", a, "--owner", "o", "--env", "dev", "--trust", "medium",
        ])
        .ok();
    }
    World {
        b,
        users,
        _dir: dir,
    }
}

/// An identity token for `agent`, by join token.
pub fn identity(b: &Broker, agent: &str) -> String {
    let jt = b
        .cli(&["agent", "join-token", agent])
        .ok()
        .trim()
        .to_owned();
    let r = post_json(b, "/v1/attest/join", &json!({ "token": jt }));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["identity_token"].as_str().unwrap().to_owned()
}

pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

pub const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

pub fn exchange(
    b: &Broker,
    subject: &str,
    subject_type: &str,
    actor: &str,
    extra: &[(&str, &str)],
) -> warrant_testkit::Response {
    let mut f = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
        ("actor_token", actor),
        ("actor_token_type", JWT),
    ];
    f.extend_from_slice(extra);
    form(b, "/oauth2/token", &f)
}

pub fn err(r: &warrant_testkit::Response) -> (u16, String, String) {
    let j = r.json();
    (
        r.status,
        j["error"].as_str().unwrap_or("").to_owned(),
        j["error_description"].as_str().unwrap_or("").to_owned(),
    )
}

/// Introspects `token`, authenticated by the identity token `assertion`.
pub fn introspect_with(b: &Broker, assertion: &str, token: &str) -> Value {
    introspect(b, assertion, token)
}

pub fn introspect(b: &Broker, assertion: &str, token: &str) -> Value {
    let r = form(
        b,
        "/oauth2/introspect",
        &[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("token", token),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The local upstream: a child process and the log of what it received.
pub struct Upstream {
    child: Child,
    pub port: u16,
    log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Upstream {
    pub fn start(tls: bool) -> Self {
        Self::start_with(tls, false)
    }

    /// An HTTPS upstream that requires a client certificate: `dir/client.pem`
    /// (chain and key) is one it accepts, `dir/stranger.pem` one it refuses.
    pub fn start_mtls() -> Self {
        Self::start_with(true, true)
    }

    fn start_with(tls: bool, mtls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/interop/upstream.py")).arg(&log);
        if tls {
            cmd.arg("--tls").arg(dir.path());
        }
        if mtls {
            cmd.arg("--mtls");
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
        Self {
            child,
            port,
            log,
            dir,
        }
    }

    pub fn origin(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn put_secret(w: &World, name: &str, value: &str, user: Option<&str>) {
    let mut args = vec!["secret", "put", name];
    if let Some(u) = user {
        args.extend(["--for-user", u]);
    }
    let mut child = Command::new(bin())
        .args(["--data-dir", w.b.data_dir.to_str().unwrap()])
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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

/// Approves what `warrant mcp approve` shows waiting, as an operator does:
/// review first (exit 5, nothing approved), then approve that digest.
pub fn approve_reviewed(b: &warrant_testkit::Broker, server: &str, tool: &str) {
    let shown = b.cli(&["mcp", "approve", server, tool]);
    assert_eq!(shown.code, 5, "{}{}", shown.stdout, shown.stderr);
    let digest = shown
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap_or_else(|| panic!("{}", shown.stdout))
        .to_owned();
    b.cli(&["mcp", "approve", server, tool, "--digest", &digest])
        .ok();
}

/// Starts serve expecting it to refuse; returns its stderr, the data dir it was
/// given, and the temp dir that holds them (kept alive by the caller).
pub fn start_fails(opts: Options) -> (String, std::path::PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let (mut child, data_dir, log) = spawn_serve(bin(), tmp.path(), &opts);
    let status = child.wait().unwrap();
    assert!(!status.success(), "serve should have refused to start");
    (std::fs::read_to_string(log).unwrap(), data_dir, tmp)
}

/// A client-credentials request at the token endpoint: an agent, by its
/// identity token, asking a task token for itself.
pub fn client_credentials(
    b: &Broker,
    identity: &str,
    scope: &str,
    audience: &str,
) -> warrant_testkit::Response {
    form(
        b,
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", identity),
            ("scope", scope),
            ("audience", audience),
        ],
    )
}

/// Whether `line` holds the pieces of `pattern` between its `…`, in order.
pub fn matches(pattern: &str, line: &str) -> bool {
    let mut rest = line;
    for piece in pattern.split('…').map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

/// One POST a [`Receiver`] took: its path, `Authorization` header and JSON body.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: String,
    pub body: Value,
}

/// A local HTTP receiver for webhooks and export sinks: records each POST,
/// answering 503 to the first `fail` requests on each path in `flaky`
/// (so a sender must retry), 200 otherwise.
pub struct Receiver {
    pub port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(flaky: &[&str], fail: usize) -> Self {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = got.clone();
        let flaky: Vec<String> = flaky.iter().map(|s| (*s).to_owned()).collect();
        std::thread::spawn(move || {
            let mut failed: std::collections::HashMap<String, usize> = Default::default();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                let (mut len, mut authorization) = (0, String::new());
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        } else if k.eq_ignore_ascii_case("authorization") {
                            authorization = v.trim().to_owned();
                        }
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let n = failed.entry(path.clone()).or_default();
                let status = if flaky.contains(&path) && *n < fail {
                    *n += 1;
                    "503 Service Unavailable"
                } else {
                    out.lock().unwrap().push(Received {
                        path,
                        authorization,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    "200 OK"
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Self { port, got }
    }

    /// Every POST taken so far, in order.
    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The bodies POSTed to `path`.
    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.body)
            .collect()
    }
}

/// A loopback port free now (for a child that must be told its port first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An MCP client of the gateway's `/mcp/<server>`, over plain JSON-RPC.
pub struct McpClient {
    pub edge: std::net::SocketAddr,
    pub path: String,
}

impl McpClient {
    pub fn new(b: &Broker, server: &str) -> Self {
        Self {
            edge: b.edge,
            path: format!("/mcp/{server}"),
        }
    }

    /// The server's URL: the audience of task tokens for it.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.edge, self.path)
    }

    pub fn rpc(
        &self,
        token: &str,
        session: Option<&str>,
        body: &Value,
    ) -> warrant_testkit::Response {
        let bearer = format!("Bearer {token}");
        let mut h: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("authorization", &bearer),
        ];
        if let Some(s) = session {
            h.push(("mcp-session-id", s));
        }
        warrant_testkit::http(self.edge, "POST", &self.path, &h, Some(&body.to_string()))
    }

    /// A session once the server's tools are listed (a stdio server takes a
    /// moment to start).
    pub fn session(&self, token: &str) -> String {
        let r = self.rpc(token, None, &json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
        }));
        assert_eq!(r.status, 200, "{}", r.body);
        let sid = r.header("mcp-session-id").unwrap().to_owned();
        eventually("the MCP server lists its tools", || {
            let r = self.rpc(
                token,
                Some(&sid),
                &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            );
            r.json().get("result").map(|_| ())
        });
        sid
    }

    pub fn call(&self, token: &str, sid: &str, tool: &str, args: Value) -> Value {
        let r = self.rpc(token, Some(sid), &json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": tool, "arguments": args}
        }));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }
}
