//! The egress proxy against going direct and against nginx injecting a static
//! header (`../shared/peers/nginx/inject.conf`: the simplest thing a user
//! could do instead, with no identity, policy or audit).
//!
//! One run, same machine, same upstream: a small hyper server (in this
//! process) answering `GET /v1/models` with a 200-byte JSON body. The server
//! under test (warrant, or nginx with one worker) is pinned to core 0; `wrk`
//! and the upstream share core 1. Four targets, each at 1 and 64
//! connections: the upstream directly, nginx, a bare relay on warrant's HTTP
//! stack (hyper's server and pooled client, adding the header and checking
//! nothing: the ceiling of the stack), and warrant's proxy with a task
//! token (signature check from the verified-token cache, revocation, allow
//! rules, a Cedar `http:request` decision, secret injection, redaction of the
//! response, and one audit record per request). Added latency is the
//! target's p50/p99 minus the direct p50/p99 of the same run.
//!
//! Run with `cargo bench -p warrant --bench proxy` (needs `wrk`; nginx is
//! skipped when absent: `apt-get install -y nginx wrk`). `WARRANT_BENCH_SECS`
//! sets the seconds per case (default 5). Last, the instructions of one
//! proxied request are counted under callgrind and checked against
//! `benches/instructions.txt` (needs valgrind; `WARRANT_BENCH_ONLY=instructions`
//! runs only the count, `WARRANT_BENCH_CALLGRIND=0` skips it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cli, free_addr};

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const KEY: &str = "sk-static-benchmark-key";
const BODY: &str = r#"{"object":"list","data":[{"id":"gpt-bench","object":"model","created":1,"owned_by":"bench"},{"id":"gpt-bench-mini","object":"model","created":1,"owned_by":"bench"}],"padding":"xxxxxxxx"}"#;

const POLICY: &str = r#"
@id("bench-identities")
permit(principal, action == Action::"identity:issue", resource);
@id("bench-self")
permit(principal, action == Action::"token:self", resource);
@id("bench-egress")
permit(principal in Agent::"bench", action == Action::"http:request", resource == Route::"openai")
when { context.method == "GET" && context.path like "/v1/models*" };
"#;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn pinned(core: &str, program: &str) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", core, program]);
    c
}

fn curl_post(url: &str, body: &str, json: bool) -> Value {
    let mut c = Command::new("curl");
    c.args(["-s", url, "--data-binary", body]);
    if json {
        c.args(["-H", "content-type: application/json"]);
    }
    let out = c.output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

/// The upstream: a hyper server (axum) on its own thread.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/models",
                axum::routing::get(|| async { ([("content-type", "application/json")], BODY) }),
            );
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    addr
}

struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn parse_us(v: &str) -> f64 {
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap() * mult
}

fn wrk(url: &str, conns: u32, secs: u32, headers: &[String]) -> Figures {
    let mut c = pinned("1", "wrk");
    c.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    for h in headers {
        c.args(["-H", h]);
    }
    let out = c.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("Non-2xx"),
        "some requests failed at {url}:\n{text}"
    );
    let find = |label: &str| -> String {
        text.lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix(label).map(|r| r.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no `{label}` in wrk's output:\n{text}"))
    };
    Figures {
        rate: find("Requests/sec:").parse().unwrap(),
        p50_us: parse_us(&find("50%")),
        p99_us: parse_us(&find("99%")),
    }
}

/// The route to `up` with a stored secret.
fn write_config(dir: &Path, up: SocketAddr) -> std::path::PathBuf {
    let config = dir.join("warrant.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\nname = \"openai\"\nupstream = \"http://{up}\"\naudience = \"https://api.openai.com\"\nallow = [ {{ methods = [\"GET\", \"POST\"], paths = [\"/v1/**\"] }} ]\ncredential = {{ kind = \"secret\", secret = \"openai-key\" }}\n"
        ),
    )
    .unwrap();
    config
}

/// The bench agent, its policy and secret; a task token for the route.
fn set_up(data: &Path, api: SocketAddr, dir: &Path) -> String {
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
    std::fs::write(data.join("policies/bench.cedar"), POLICY).unwrap();
    cli(data, &["policy", "reload"]);
    let key_file = dir.join("key.txt");
    std::fs::write(&key_file, KEY).unwrap();
    cli(
        data,
        &[
            "secret",
            "put",
            "openai-key",
            "--from-file",
            key_file.to_str().unwrap(),
        ],
    );
    let jt = cli(data, &["agent", "join-token", "bench"]);
    let id = curl_post(
        &format!("http://{api}/v1/attest/join"),
        &format!("{{\"token\":\"{jt}\"}}"),
        true,
    );
    let id = id["identity_token"].as_str().unwrap().to_owned();
    let t = curl_post(
        &format!("http://{api}/oauth2/token"),
        &format!(
            "grant_type=client_credentials&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion={id}&scope=llm:chat&audience=https://api.openai.com"
        ),
        false,
    );
    t["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{t}"))
        .to_owned()
}

/// Instructions per proxied request under callgrind: a count the
/// machine's load does not move, checked against its budget.
fn instructions(dir: &Path, up: SocketAddr) {
    let dir = dir.join("callgrind");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let (api, edge) = (free_addr(), free_addr());
    let config = write_config(&dir, up);
    let counted = common::Counted::serve(&data, api, edge, &["--config", config.to_str().unwrap()]);
    let token = set_up(&data, api, &dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = rt.block_on(common::Conn::open(edge));
    let auth = format!("Bearer {token}");
    counted.count("proxy.request", "GET /v1/models", || {
        let (status, body) = rt.block_on(c.get("/openai/v1/models", &auth));
        assert_eq!(status, 200);
        assert_eq!(body.len(), BODY.len());
    });
}

fn main() {
    common::relay_if_asked();
    let secs: u32 = std::env::var("WARRANT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    assert!(
        have("wrk") && have("taskset"),
        "this benchmark needs wrk and taskset"
    );
    let up = upstream();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    if common::instructions_only() {
        instructions(tmp.path(), up);
        return;
    }

    // warrant on core 0.
    let data = tmp.path().join("data");
    let (api, edge) = (free_addr(), free_addr());
    let config = write_config(tmp.path(), up);
    let mut broker: Child = common::serve(
        &data,
        api,
        edge,
        &["--config", config.to_str().unwrap()],
        true,
    );
    let token = set_up(&data, api, tmp.path());
    let auth = vec![format!("Authorization: Bearer {token}")];

    // nginx on core 0, one worker, as the peer's config says.
    let peer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/nginx/inject.conf");
    let nginx_addr = free_addr();
    let nginx = if have("nginx") && peer.exists() {
        let prefix = tmp.path().join("nginx");
        std::fs::create_dir_all(&prefix).unwrap();
        let conf = std::fs::read_to_string(&peer)
            .unwrap()
            .replace("UPSTREAM_PORT", &up.port().to_string())
            .replace("LISTEN_PORT", &nginx_addr.port().to_string())
            .replace("/tmp/nginx-peer/", &format!("{}/", prefix.display()));
        let conf_path = prefix.join("inject.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let ok = pinned("0", "nginx")
            .args([
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                prefix.to_str().unwrap(),
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        std::thread::sleep(Duration::from_millis(500));
        ok
    } else {
        eprintln!(
            "nginx or {} is missing: the nginx case is skipped (apt-get install -y nginx)",
            peer.display()
        );
        None
    };

    // The ceiling of the HTTP stack alone, on core 0 too.
    let relay = common::Relay::start(up, "/openai", Some(&format!("authorization: Bearer {KEY}")));
    let relay_url = format!("http://{}/openai/v1/models", relay.addr);

    // Warm up each target once.
    for url in [
        format!("http://{up}/v1/models"),
        format!("http://{edge}/openai/v1/models"),
        relay_url.clone(),
    ] {
        wrk(&url, 4, 1, &auth);
    }
    if nginx.is_some() {
        wrk(&format!("http://{nginx_addr}/openai/v1/models"), 4, 1, &[]);
    }

    println!(
        "proxy benchmark: GET /v1/models, {} B answer, {secs} s per case; server under test on core 0, wrk + upstream on core 1",
        BODY.len()
    );
    println!(
        "{:<10} {:>5} {:>10} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9}",
        "target",
        "conns",
        "req/s",
        "p50 µs",
        "p99 µs",
        "added p50",
        "added p99",
        "vs direct",
        "vs nginx"
    );
    for conns in [1u32, 64] {
        let direct = wrk(&format!("http://{up}/v1/models"), conns, secs, &[]);
        let nginx_f = nginx.as_ref().map(|_| {
            wrk(
                &format!("http://{nginx_addr}/openai/v1/models"),
                conns,
                secs,
                &[],
            )
        });
        let relay_f = wrk(&relay_url, conns, secs, &[]);
        // WARRANT_BENCH_PERF=<file>: profile the broker during the 64-connection case.
        let perf = (conns == 64)
            .then(|| common::perf_if_asked(broker.id(), f64::from(secs)))
            .flatten();
        let warrant = wrk(
            &format!("http://{edge}/openai/v1/models"),
            conns,
            secs,
            &auth,
        );
        if let Some(mut p) = perf {
            let _ = p.wait();
        }
        let row = |name: &str, f: &Figures| {
            println!(
                "{name:<10} {conns:>5} {:>10.0} {:>10.0} {:>10.0} {:>11.0} {:>11.0} {:>8.2}x {:>9}",
                f.rate,
                f.p50_us,
                f.p99_us,
                f.p50_us - direct.p50_us,
                f.p99_us - direct.p99_us,
                f.rate / direct.rate,
                nginx_f
                    .as_ref()
                    .map_or("-".into(), |n| format!("{:.2}x", f.rate / n.rate)),
            );
        };
        row("direct", &direct);
        if let Some(n) = &nginx_f {
            row("nginx", n);
        }
        row("relay", &relay_f);
        row("warrant", &warrant);
    }
    drop(relay);

    // Every request through warrant was recorded.
    let records = cli(
        &data,
        &[
            "audit",
            "list",
            "--event",
            "proxy.request",
            "--limit",
            "1",
            "--output",
            "json",
        ],
    );
    assert!(
        records.contains("\"decision\": \"allow\"") || records.contains("\"decision\":\"allow\""),
        "{records}"
    );
    if let Some(mut n) = nginx {
        // TERM, not KILL: nginx's master stops its workers only when asked.
        let _ = Command::new("kill")
            .args(["-TERM", &n.id().to_string()])
            .status();
        let _ = n.wait();
    }
    let _ = broker.kill();
    let _ = broker.wait();

    if common::callgrind_wanted() {
        instructions(tmp.path(), up);
    } else {
        println!("\n(valgrind not installed or WARRANT_BENCH_CALLGRIND=0: no instruction count)");
    }
}
