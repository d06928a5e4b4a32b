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
//! audit record.
//!
//! Run with `cargo bench -p warrant --bench mcp`; `WARRANT_BENCH_SECS` sets
//! the seconds per case (default 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cli, free_addr, pin_self, two_cores};

use std::net::SocketAddr;
use std::process::Child;
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
@id("bench-echo")
permit(principal in Agent::"bench", action == Action::"mcp:call_tool", resource == Tool::"bench/echo")
when { context.arguments has text && context.arguments.text like "hello*" };
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
        c
    }

    async fn rpc(&mut self, msg: &Value) -> (Value, Option<String>) {
        self.sender.ready().await.unwrap();
        let mut req = Request::post(&self.path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        let res = self
            .sender
            .send_request(req.body(Full::new(Bytes::from(msg.to_string()))).unwrap())
            .await
            .unwrap();
        let sid = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (serde_json::from_slice(&body).unwrap_or(Value::Null), sid)
    }
}

struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn load(
    addr: SocketAddr,
    path: &str,
    token: Option<String>,
    sessions: usize,
    secs: f64,
) -> Figures {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (path, token) = (path.to_owned(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr, &path, token).await;
            let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "hello world"}}});
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
    let secs: f64 = std::env::var("WARRANT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let pin = two_cores();
    let up_addr = free_addr();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = tmp.path().join("data");
    let (api, edge) = (free_addr(), free_addr());
    let config = tmp.path().join("warrant.toml");
    std::fs::write(
        &config,
        format!("[[mcp_server]]\nname = \"bench\"\nurl = \"http://{up_addr}/mcp\"\n"),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The upstream first, so the gateway pins its tool at start.
    let listener = rt.block_on(tokio::net::TcpListener::bind(up_addr)).unwrap();
    rt.spawn(async move {
        let app = axum::Router::new().route("/mcp", axum::routing::post(upstream));
        axum::serve(listener, app).await.unwrap();
    });

    let mut broker: Child = common::serve(
        &data,
        api,
        edge,
        &["--config", config.to_str().unwrap()],
        pin,
    );
    if pin {
        pin_self(1);
    }
    cli(
        &data,
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
    std::fs::write(data.join("policies/bench.cedar"), POLICY).unwrap();
    let token = rt.block_on(async {
        // Let discovery pin the tool, so the policy's argument types exist.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cli(&data, &["policy", "reload"]);
        let jt = cli(&data, &["agent", "join-token", "bench"]);
        let id = post_form(
            api,
            "/v1/attest/join",
            &format!("{{\"token\":\"{jt}\"}}"),
            "application/json",
        )
        .await;
        let id = id["identity_token"].as_str().unwrap().to_owned();
        let aud = format!("http://{edge}/mcp/bench");
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
        t["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{t}"))
            .to_owned()
    });

    println!(
        "MCP gateway benchmark: tools/call echo, {secs} s per case; broker on core 0, load and upstream on core 1"
    );
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>10} {:>11} {:>11} {:>9}",
        "target", "sessions", "calls/s", "p50 µs", "p99 µs", "added p50", "added p99", "vs direct"
    );
    rt.block_on(async {
        // Warm up both paths.
        load(up_addr, "/mcp", None, 2, 0.5).await;
        load(edge, "/mcp/bench", Some(token.clone()), 2, 0.5).await;
        for sessions in [1usize, 16] {
            let direct = load(up_addr, "/mcp", None, sessions, secs).await;
            let gateway = load(edge, "/mcp/bench", Some(token.clone()), sessions, secs).await;
            for (name, f) in [("direct", &direct), ("warrant", &gateway)] {
                println!(
                    "{name:<8} {sessions:>8} {:>10.0} {:>10.0} {:>10.0} {:>11.0} {:>11.0} {:>8.2}x",
                    f.rate,
                    f.p50_us,
                    f.p99_us,
                    f.p50_us - direct.p50_us,
                    f.p99_us - direct.p99_us,
                    f.rate / direct.rate
                );
            }
        }
    });
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
