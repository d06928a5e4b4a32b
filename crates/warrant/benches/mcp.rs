//! `tools/call` through the MCP gateway against calling the same upstream
//! directly, at 1 and 16 concurrent sessions, in one run.
//!
//! The upstream is a minimal Streamable HTTP MCP server in this process
//! (axum): `initialize` with a session id, `tools/list` with one tool,
//! `tools/call` answering a short text. Each load task opens its own session
//! (directly, or through the gateway with a task token) and calls
//! `echo {"text": "..."}` in a loop over one keep-alive connection. The
//! broker is pinned to core 0; this process (load and upstream) to core 1.
//! Through the gateway each call is: token check (verified-token cache),
//! session binding, the pinned definition, a Cedar `mcp:call_tool` decision
//! with the arguments, the upstream call over warrant's own session, and one
//! audit record. Each table also has a bare relay on core 0
//! (`common::Relay`: warrant's HTTP stack forwarding every request and
//! checking nothing), the ceiling of the two HTTP hops alone.
//!
//! A second table puts the gateway beside the peer gateway mcp-proxy
//! (crates.io, bearer mode: no per-call policy, no durable audit) and
//! direct calls, all on one common backend, `bench/peers/mcp-echo` (node).
//! `scripts/bench-peers` installs mcp-proxy; without it (or without node)
//! those rows are skipped. Last, the instructions of one `tools/call` are
//! counted under callgrind and checked against `benches/instructions.txt`
//! (needs valgrind; see `common::Counted`).
//!
//! Run with `cargo bench -p warrant --bench mcp`; `WARRANT_BENCH_SECS` sets
//! the seconds per case (default 5), `WARRANT_BENCH_ONLY=instructions` runs
//! only the count, `WARRANT_BENCH_CALLGRIND=0` skips it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cli, free_addr, pin_self, two_cores};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const POLICY: &str = r#"
@id("bench-identities")
permit(principal, action == Action::"identity:issue", resource);
@id("bench-self")
permit(principal, action == Action::"token:self", resource);
"#;

static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// The upstream MCP server: JSON answers, a session id per `initialize`.
async fn upstream(body: Bytes) -> axum::response::Response {
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let method = msg["method"].as_str().unwrap_or("");
    let result = match method {
        "initialize" => json!({
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench", "version": "1"}
        }),
        "tools/list" => json!({"tools": [{
            "name": "echo", "description": "Echoes its text.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        }]}),
        "tools/call" => {
            json!({"content": [{"type": "text", "text": msg["params"]["arguments"]["text"]}]})
        }
        _ => json!({}),
    };
    let mut r = axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response();
    if method == "initialize" {
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        r.headers_mut()
            .insert("mcp-session-id", format!("up-{n}").parse().unwrap());
    }
    r
}

/// One keep-alive connection speaking JSON-RPC over POST.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    path: String,
    token: Option<String>,
    session: Option<String>,
}

impl Conn {
    async fn open(addr: SocketAddr, path: &str, token: Option<String>) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut c = Self {
            sender,
            host: addr.to_string(),
            path: path.to_owned(),
            token,
            session: None,
        };
        let (_, sid) = c
            .rpc(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}))
            .await;
        c.session = sid;
        // The handshake's end, as every MCP client sends it.
        c.notify(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        c
    }

    fn request(&self, msg: &Value) -> Request<Full<Bytes>> {
        let mut req = Request::post(&self.path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(s) = &self.session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        req.body(Full::new(Bytes::from(msg.to_string()))).unwrap()
    }

    async fn notify(&mut self, msg: &Value) {
        self.sender.ready().await.unwrap();
        let res = self.sender.send_request(self.request(msg)).await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        res.into_body().collect().await.unwrap();
    }

    async fn rpc(&mut self, msg: &Value) -> (Value, Option<String>) {
        self.sender.ready().await.unwrap();
        let res = self.sender.send_request(self.request(msg)).await.unwrap();
        let sid = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json = if sse {
            // The answer is the last `data:` of the stream.
            std::str::from_utf8(&body)
                .unwrap_or("")
                .lines()
                .rev()
                .filter_map(|l| l.strip_prefix("data:"))
                .find(|d| !d.trim().is_empty())
                .map(|d| serde_json::from_str(d.trim()).unwrap_or(Value::Null))
                .unwrap_or(Value::Null)
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        (json, sid)
    }
}

struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

/// A gateway or backend to load: where, and the tool's name there.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    path: String,
    token: Option<String>,
    tool: String,
}

async fn load(t: &Target, sessions: usize, secs: f64) -> Figures {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(t.addr, &t.path, t.token).await;
            let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": t.tool, "arguments": {"text": "hello world"}}});
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let (v, _) = c.rpc(&call).await;
                lat.push(t.elapsed());
                assert_eq!(v["result"]["content"][0]["text"], "hello world", "{v}");
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e6
    };
    Figures {
        rate: lat.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn main() {
    common::relay_if_asked();
    let secs: f64 = std::env::var("WARRANT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let pin = two_cores();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The in-process upstream first, so the gateway pins its tool at start.
    let up_addr = free_addr();
    let listener = rt.block_on(tokio::net::TcpListener::bind(up_addr)).unwrap();
    rt.spawn(async move {
        let app = axum::Router::new().route("/mcp", axum::routing::post(upstream));
        axum::serve(listener, app).await.unwrap();
    });
    if common::instructions_only() {
        instructions(&rt, tmp.path(), up_addr);
        return;
    }
    // The peers' common backend (node), on the load's core.
    let echo = mcp_echo();
    if pin {
        pin_self(1);
    }
    let mut servers = vec![("bench", format!("http://{up_addr}/mcp"))];
    if let Some(e) = &echo {
        servers.push(("echo", format!("http://{}/mcp", e.addr)));
    }

    let data = tmp.path().join("data");
    let (api, edge) = (free_addr(), free_addr());
    let config = write_config(tmp.path(), &servers);
    let mut broker: Child = common::serve(
        &data,
        api,
        edge,
        &["--config", config.to_str().unwrap()],
        pin,
    );
    let tokens = rt.block_on(set_up(&data, api, edge, &servers, 500));
    let gateway = |server: &str| Target {
        addr: edge,
        path: format!("/mcp/{server}"),
        token: Some(tokens[server].clone()),
        tool: "echo".into(),
    };

    println!(
        "MCP gateway benchmark: tools/call echo, {secs} s per case; gateway under test on core 0, load and backend on core 1"
    );
    println!("\nbackend: a minimal MCP server in the bench process (axum)");
    let direct_t = Target {
        addr: up_addr,
        path: "/mcp".into(),
        token: None,
        tool: "echo".into(),
    };
    let relay = common::Relay::start(up_addr, "", None);
    let relay_t = Target {
        addr: relay.addr,
        ..direct_t.clone()
    };
    rt.block_on(table(
        &direct_t,
        &gateway("bench"),
        &[("relay", &relay_t)],
        secs,
    ));
    drop(relay);

    if let Some(e) = &echo {
        let peer = mcp_proxy(tmp.path(), e.addr);
        println!(
            "\nbackend: bench/peers/mcp-echo (node); mcp-proxy {}",
            if peer.is_some() {
                "in its bearer mode (no per-call policy, no durable audit)"
            } else {
                "not installed (scripts/bench-peers): its rows are skipped"
            }
        );
        let direct_t = Target {
            addr: e.addr,
            path: "/mcp".into(),
            token: None,
            tool: "echo".into(),
        };
        let peer_t = peer.as_ref().map(|p| Target {
            addr: p.addr,
            path: "/".into(),
            token: Some(MCP_PROXY_TOKEN.into()),
            tool: "echo/echo".into(),
        });
        let relay = common::Relay::start(e.addr, "", None);
        let relay_t = Target {
            addr: relay.addr,
            ..direct_t.clone()
        };
        let mut others = vec![("relay", &relay_t)];
        if let Some(p) = &peer_t {
            others.push(("mcp-proxy", p));
        }
        rt.block_on(table(&direct_t, &gateway("echo"), &others, secs));
    }

    let calls = cli(
        &data,
        &[
            "audit",
            "list",
            "--event",
            "mcp.tool.call",
            "--limit",
            "1",
            "--output",
            "json",
        ],
    );
    assert!(calls.contains("allow"), "{calls}");
    let _ = broker.kill();
    let _ = broker.wait();

    if common::callgrind_wanted() {
        instructions(&rt, tmp.path(), up_addr);
    } else {
        println!("\n(valgrind not installed or WARRANT_BENCH_CALLGRIND=0: no instruction count)");
    }
}

/// One table: each target warmed up, then at 1 and 16 sessions the direct
/// baseline, the others (the bare relay, the peer gateway) and warrant's,
/// which is compared with each of them on the same backend.
async fn table(direct: &Target, warrant: &Target, others: &[(&str, &Target)], secs: f64) {
    println!(
        "{:<10} {:>8} {:>10} {:>10} {:>10} {:>11} {:>11} {:>9}",
        "target", "sessions", "calls/s", "p50 µs", "p99 µs", "added p50", "added p99", "vs direct"
    );
    for t in [direct, warrant]
        .into_iter()
        .chain(others.iter().map(|(_, t)| *t))
    {
        load(t, 2, 0.5).await;
    }
    for sessions in [1usize, 16] {
        let d = load(direct, sessions, secs).await;
        let w = load(warrant, sessions, secs).await;
        row("direct", sessions, &d, &d, "");
        let mut vs = String::new();
        for (name, t) in others {
            let f = load(t, sessions, secs).await;
            row(name, sessions, &f, &d, "");
            vs.push_str(&format!(
                "  (vs {name}: {:.2}x calls/s, added p50 {:.2}x)",
                w.rate / f.rate,
                (w.p50_us - d.p50_us) / (f.p50_us - d.p50_us)
            ));
        }
        row("warrant", sessions, &w, &d, &vs);
    }
}

fn row(name: &str, sessions: usize, f: &Figures, direct: &Figures, then: &str) {
    println!(
        "{name:<10} {sessions:>8} {:>10.0} {:>10.0} {:>10.0} {:>11.0} {:>11.0} {:>8.2}x{then}",
        f.rate,
        f.p50_us,
        f.p99_us,
        f.p50_us - direct.p50_us,
        f.p99_us - direct.p99_us,
        f.rate / direct.rate
    );
}

/// Instructions per `tools/call` through the gateway under callgrind: a
/// count the machine's load does not move, checked against its budget.
fn instructions(rt: &tokio::runtime::Runtime, dir: &Path, up_addr: SocketAddr) {
    let dir = dir.join("callgrind");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let (api, edge) = (free_addr(), free_addr());
    let servers = [("bench", format!("http://{up_addr}/mcp"))];
    let config = write_config(&dir, &servers);
    let counted = common::Counted::serve(&data, api, edge, &["--config", config.to_str().unwrap()]);
    let tokens = rt.block_on(set_up(&data, api, edge, &servers, 5000));
    let mut c = rt.block_on(Conn::open(
        edge,
        "/mcp/bench",
        Some(tokens["bench"].clone()),
    ));
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hello world"}}});
    counted.count("mcp.tools_call", "tools/call", || {
        let (v, _) = rt.block_on(c.rpc(&call));
        assert_eq!(v["result"]["content"][0]["text"], "hello world", "{v}");
    });
}

fn write_config(dir: &Path, servers: &[(&str, String)]) -> std::path::PathBuf {
    let config = dir.join("warrant.toml");
    let text: String = servers
        .iter()
        .map(|(name, url)| format!("[[mcp_server]]\nname = \"{name}\"\nurl = \"{url}\"\n"))
        .collect();
    std::fs::write(&config, text).unwrap();
    config
}

/// The bench agent, its policy (once discovery has pinned the tools, so the
/// policy's argument types exist), and a task token per MCP server.
async fn set_up(
    data: &Path,
    api: SocketAddr,
    edge: SocketAddr,
    servers: &[(&str, String)],
    discovery_ms: u64,
) -> HashMap<String, String> {
    cli(
        data,
        &[
            "agent",
            "create",
            "bench",
            "--owner",
            "bench",
            "--env",
            "dev",
            "--max-ttl",
            "1h",
        ],
    );
    let policy: String = std::iter::once(POLICY.to_owned())
        .chain(servers.iter().map(|(name, _)| {
            format!(
                "@id(\"bench-echo-{name}\")\npermit(principal in Agent::\"bench\", action == Action::\"mcp:call_tool\", resource == Tool::\"{name}/echo\")\nwhen {{ context.arguments has text && context.arguments.text like \"hello*\" }};\n"
            )
        }))
        .collect();
    std::fs::write(data.join("policies/bench.cedar"), policy).unwrap();
    tokio::time::sleep(Duration::from_millis(discovery_ms)).await;
    cli(data, &["policy", "reload"]);
    let mut tokens = HashMap::new();
    for (name, _) in servers {
        let jt = cli(data, &["agent", "join-token", "bench"]);
        let id = post_form(
            api,
            "/v1/attest/join",
            &format!("{{\"token\":\"{jt}\"}}"),
            "application/json",
        )
        .await;
        let id = id["identity_token"].as_str().unwrap().to_owned();
        let aud = format!("http://{edge}/mcp/{name}");
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", id.as_str()),
                ("scope", "bench:call"),
                ("audience", aud.as_str()),
            ])
            .finish();
        let t = post_form(
            api,
            "/oauth2/token",
            &body,
            "application/x-www-form-urlencoded",
        )
        .await;
        let t = t["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{t}"))
            .to_owned();
        tokens.insert((*name).to_owned(), t);
    }
    tokens
}

/// A peer process, killed when dropped.
struct Peer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peers_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers")
}

fn wait_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// bench/peers/mcp-echo under node on core 1, or `None` without node.
fn mcp_echo() -> Option<Peer> {
    let script = peers_dir().join("mcp-echo/server.mjs");
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok || !script.exists() {
        eprintln!(
            "node or {} is missing: the peer comparison is skipped",
            script.display()
        );
        return None;
    }
    let addr = free_addr();
    let mut cmd = if two_cores() {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "node"]);
        c
    } else {
        Command::new("node")
    };
    let child = cmd
        .arg(&script)
        .env("PORT", addr.port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(addr, "mcp-echo");
    Some(Peer { child, addr })
}

const MCP_PROXY_TOKEN: &str = "bench-static-bearer-token-0123456789abcdef";

/// mcp-proxy (scripts/bench-peers) on core 0 in front of `backend`, or
/// `None` when it is not installed.
fn mcp_proxy(dir: &Path, backend: SocketAddr) -> Option<Peer> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin/mcp-proxy");
    let bin = std::env::var("WARRANT_BENCH_MCP_PROXY")
        .ok()
        .map(std::path::PathBuf::from)
        .or_else(|| installed.exists().then_some(installed))
        .or_else(|| {
            Command::new("mcp-proxy")
                .arg("--help")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                .then(|| "mcp-proxy".into())
        })?;
    let addr = free_addr();
    let conf = std::fs::read_to_string(peers_dir().join("mcp-proxy/proxy.toml.in"))
        .unwrap()
        .replace("LISTEN_PORT", &addr.port().to_string())
        .replace("BACKEND_URL", &format!("http://{backend}/mcp"))
        .replace("\"TOKEN\"", &format!("\"{MCP_PROXY_TOKEN}\""));
    let conf_path = dir.join("mcp-proxy.toml");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = if two_cores() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]);
        c.arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let child = cmd
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(addr, "mcp-proxy");
    Some(Peer { child, addr })
}

async fn post_form(addr: SocketAddr, path: &str, body: &str, ctype: &str) -> Value {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let b = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&b).unwrap()
}
