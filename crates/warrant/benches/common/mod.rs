//! What the broker benchmarks share: free ports, core pinning, the CLI, and
//! starting a release `warrant serve` on core 0. Each bench uses a subset.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The binary under test: this build's, or `WARRANT_BENCH_BIN` (another
/// build of the same CLI, to measure before and after a change in one run).
pub fn bin() -> String {
    std::env::var("WARRANT_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_warrant").to_owned())
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Whether there are two cores and `taskset` to pin to them.
pub fn two_cores() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
        && Command::new("taskset")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Pins the main thread (and the threads it starts later) to `core`.
pub fn pin_self(core: u32) {
    // Called from the main thread, whose id is the process id.
    let ok = Command::new("taskset")
        .args(["-cp", &core.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset could not pin the load generator");
}

/// Runs the CLI against the broker in `data`; its trimmed stdout.
pub fn cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .env("WARRANT_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts `warrant serve` in `data` on `api` and `edge` with `extra`
/// arguments (pinned to core 0 when `pin`), and waits until it is up.
pub fn serve(data: &Path, api: SocketAddr, edge: SocketAddr, extra: &[&str], pin: bool) -> Child {
    serve_with(data, api, edge, extra, &[], pin)
}

/// [`serve`] with environment variables (`WARRANT_KEK` for brokers
/// sharing a store).
pub fn serve_with(
    data: &Path,
    api: SocketAddr,
    edge: SocketAddr,
    extra: &[&str],
    env: &[(&str, &str)],
    pin: bool,
) -> Child {
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", &bin()]);
        c
    } else {
        Command::new(bin())
    };
    let child = serve_args(&mut cmd, data, api, edge, extra)
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("run.json").exists() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `serve` and its arguments on `cmd`: quiet, with no inherited KEK.
fn serve_args<'a>(
    cmd: &'a mut Command,
    data: &Path,
    api: SocketAddr,
    edge: SocketAddr,
    extra: &[&str],
) -> &'a mut Command {
    cmd.arg("serve")
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--api-addr",
            &api.to_string(),
            "--edge-addr",
            &edge.to_string(),
            "--log",
            "warn",
        ])
        .env_remove("WARRANT_KEK")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

pub fn form(fields: &[(&str, &str)]) -> Bytes {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
        .into()
}

pub fn hop(subject: &str, subject_type: &str, actor: &str, extra: &[(&str, &str)]) -> Bytes {
    let mut f = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
        ("actor_token", actor),
        ("actor_token_type", JWT),
    ];
    f.extend_from_slice(extra);
    form(&f)
}

/// One keep-alive connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Self { sender, addr }
    }

    pub async fn post(&mut self, path: &str, body: Bytes) -> (u16, Bytes) {
        self.sender.ready().await.unwrap();
        let req = Request::post(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(body))
            .unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    }

    pub async fn get(&mut self, path: &str, authorization: &str) -> (u16, Bytes) {
        self.sender.ready().await.unwrap();
        let req = Request::get(path)
            .header("host", self.addr.to_string())
            .header("authorization", authorization)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    }

    pub async fn post_json(&mut self, path: &str, body: String) -> (u16, Bytes) {
        self.sender.ready().await.unwrap();
        let req = Request::post(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    }
}

/// A JWT's claims, decoded without verifying.
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

pub fn access_token(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {v}"))
        .to_owned()
}

/// Where a load run's request bodies come from.
pub enum Bodies {
    /// The same body every time.
    Same(Bytes),
    /// Each body once; the run ends early when they run out.
    Queue(Mutex<VecDeque<Bytes>>),
}

impl Bodies {
    pub fn next(&self) -> Option<Bytes> {
        match self {
            Self::Same(b) => Some(b.clone()),
            Self::Queue(q) => q.lock().unwrap().pop_front(),
        }
    }
}

pub struct Run {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bodies: Vec<Bytes>,
}

/// `conns` connections (spread over `addrs` in turn) posting to
/// /oauth2/token for `secs` (or until the bodies run out); every answer
/// must be 200.
pub async fn load(
    addrs: &[SocketAddr],
    conns: usize,
    secs: f64,
    bodies: Arc<Bodies>,
    keep: bool,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let bodies = bodies.clone();
        let addr = addrs[i % addrs.len()];
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            let mut lat = Vec::new();
            let mut kept = Vec::new();
            while Instant::now() < deadline {
                let Some(body) = bodies.next() else { break };
                let t = Instant::now();
                let (status, out) = c.post("/oauth2/token", body).await;
                lat.push(t.elapsed());
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
                if keep {
                    kept.push(out);
                }
            }
            (lat, kept)
        }));
    }
    let mut lat = Vec::new();
    let mut kept = Vec::new();
    for t in tasks {
        let (l, k) = t.await.unwrap();
        lat.extend(l);
        kept.extend(k);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    Run {
        rate: lat.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        bodies: kept,
    }
}

/// Whether valgrind's callgrind and its control script are installed, and
/// `WARRANT_BENCH_CALLGRIND` is not `0`.
pub fn callgrind_wanted() -> bool {
    std::env::var("WARRANT_BENCH_CALLGRIND").as_deref() != Ok("0")
        && ["valgrind", "callgrind_control"].iter().all(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

/// `WARRANT_BENCH_PERF=<file>`: a `perf record` of process `pid` (call
/// graphs) for the next `secs` seconds, to wait on once the case ran.
pub fn perf_if_asked(pid: u32, secs: f64) -> Option<Child> {
    let out = std::env::var("WARRANT_BENCH_PERF").ok()?;
    Some(
        Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-o",
                &out,
                "-p",
            ])
            .arg(pid.to_string())
            .args(["--", "sleep", &secs.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `WARRANT_BENCH_ONLY=instructions`: only the instruction count (no
/// wall-clock cases), to iterate on a change quickly.
pub fn instructions_only() -> bool {
    std::env::var("WARRANT_BENCH_ONLY").as_deref() == Ok("instructions")
}

/// Requests counted per path.
pub const COUNTED: u64 = 400;

/// A broker under callgrind, for instruction counts that do not move with
/// the machine's load: started with instrumentation off (so start-up is
/// quick), switched on for a warm-up, zeroed, then counted over a fixed
/// number of requests, background work included (the audit writer and the
/// query indexer are threads of the same process).
pub struct Counted {
    child: Child,
    out: std::path::PathBuf,
}

impl Counted {
    /// `warrant serve` in `data` under callgrind, waiting until it is up.
    pub fn serve(data: &Path, api: SocketAddr, edge: SocketAddr, extra: &[&str]) -> Self {
        let out = data.with_extension("callgrind");
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--tool=callgrind",
            "--instr-atstart=no",
            "--dump-instr=no",
            &format!("--callgrind-out-file={}", out.display()),
            &bin(),
        ]);
        let child = serve_args(&mut cmd, data, api, edge, extra)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while !data.join("run.json").exists() {
            assert!(
                Instant::now() < deadline,
                "broker under callgrind did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, out }
    }

    fn control(&self, args: &[&str]) {
        let ok = Command::new("callgrind_control")
            .args(args)
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "callgrind_control {args:?} failed");
    }

    /// Counts the instructions of `request` (one request, its answer
    /// checked) and checks them against `name`'s budget: instrumentation
    /// on, 50 requests to warm up, then [`COUNTED`] counted.
    pub fn count(&self, name: &str, what: &str, mut request: impl FnMut()) {
        self.control(&["-i", "on"]);
        for _ in 0..50 {
            request();
        }
        let (per_request, dump) = self.per_request(COUNTED, || {
            for _ in 0..COUNTED {
                request();
            }
        });
        println!(
            "\ninstruction count: {COUNTED} {what} on one connection, broker under callgrind (its threads included)"
        );
        check_budget(name, per_request, &dump);
    }

    /// Zeroes the counters, runs `work` (which makes `n` requests), lets
    /// the broker's background threads finish with them, and returns the
    /// instructions per request and the dump it read them from.
    fn per_request(&self, n: u64, work: impl FnOnce()) -> (f64, std::path::PathBuf) {
        self.control(&["-z"]);
        work();
        // The audit writer batches for at most 5 ms and the indexer runs
        // every 20 ms; under callgrind both are far slower.
        std::thread::sleep(Duration::from_secs(2));
        let before = self.dumps();
        self.control(&["-d"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let dump = loop {
            if let Some(d) = self.dumps().into_iter().find(|d| !before.contains(d)) {
                break d;
            }
            assert!(Instant::now() < deadline, "callgrind wrote no dump");
            std::thread::sleep(Duration::from_millis(100));
        };
        // callgrind writes the dump in place: it is whole once its totals
        // line is there.
        let deadline = Instant::now() + Duration::from_secs(60);
        let total = loop {
            let text = std::fs::read_to_string(&dump).unwrap_or_default();
            if let Some(t) = text.lines().find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            }) {
                break t.split_whitespace().next().unwrap().parse::<u64>().unwrap();
            }
            assert!(Instant::now() < deadline, "callgrind's dump has no totals");
            std::thread::sleep(Duration::from_millis(100));
        };
        (total as f64 / n as f64, dump)
    }

    fn dumps(&self) -> Vec<std::path::PathBuf> {
        let name = self.out.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::read_dir(self.out.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&name))
            })
            .collect()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The functions with the largest own instruction counts in a callgrind
/// dump, as `callgrind_annotate` lists them (names shortened).
pub fn top_functions(dump: &Path, n: usize) -> Vec<String> {
    let Ok(out) = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--auto=no"])
        .arg(dump)
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .take(n)
        .map(|l| l.chars().take(150).collect())
        .collect()
}

/// Checks an instruction count against its budget in
/// `benches/instructions.txt`: a count more than 3% over fails the bench
/// (a regression, in numbers the machine's load does not move); one more
/// than 10% under asks for the budget to be lowered.
fn check_budget(name: &str, per_request: f64, dump: &Path) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/instructions.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let budget: f64 = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next().unwrap().replace('_', "").parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no budget for `{name}` in {}", path.display()));
    let ratio = per_request / budget;
    println!(
        "{name}: {per_request:.0} instructions per request under callgrind (budget {budget:.0}, {:+.1}%)",
        (ratio - 1.0) * 100.0
    );
    // Kept for `callgrind_annotate` (inclusive costs, call graphs).
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.callgrind"));
    let _ = std::fs::copy(dump, &kept);
    for f in top_functions(dump, 15) {
        println!("  {f}");
    }
    println!(
        "  (the whole profile: callgrind_annotate --inclusive=yes {})",
        kept.display()
    );
    assert!(
        ratio <= 1.03,
        "{name} costs {:.1}% more instructions than its budget in {}: a regression (or raise the budget, saying why)",
        (ratio - 1.0) * 100.0,
        path.display()
    );
    if ratio < 0.90 {
        println!(
            "  ({name} is more than 10% under its budget: lower it in {})",
            path.display()
        );
    }
}

/// The two HTTP hops alone, as a ceiling for the edge: this bench binary run
/// again as a relay (hyper's HTTP/1 server and hyper-util's pooled client,
/// the stack warrant's edge is built on, with the same multi-threaded
/// runtime, keep-alive and `TCP_NODELAY`) that forwards every request to one
/// upstream, optionally adding one header, and checks nothing. Whatever the
/// edge does beyond this relay is identity, policy, injection and audit.
pub struct Relay {
    pub addr: SocketAddr,
    child: Child,
}

const RELAY_ENV: &str = "WARRANT_BENCH_RELAY";

impl Relay {
    /// Starts the relay on core 0 in front of `upstream`; a request's path
    /// loses `strip` first, and `header` (`name: value`) is set on it.
    pub fn start(upstream: SocketAddr, strip: &str, header: Option<&str>) -> Self {
        let addr = free_addr();
        let spec = format!("{addr},{upstream},{strip},{}", header.unwrap_or(""));
        let exe = std::env::current_exe().unwrap();
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(exe)
            .env(RELAY_ENV, spec)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the relay did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr, child }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Called first by a bench's `main`: when started as a [`Relay`], relays
/// until killed and never returns.
pub fn relay_if_asked() {
    let Ok(spec) = std::env::var(RELAY_ENV) else {
        return;
    };
    let mut parts = spec.splitn(4, ',');
    let listen: SocketAddr = parts.next().unwrap().parse().unwrap();
    let upstream: SocketAddr = parts.next().unwrap().parse().unwrap();
    let strip = parts.next().unwrap_or_default().to_owned();
    let header = parts.next().and_then(|h| {
        let (n, v) = h.split_once(':')?;
        Some((
            hyper::header::HeaderName::from_bytes(n.trim().as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(v.trim()).unwrap(),
        ))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(relay(listen, upstream, strip, header));
    std::process::exit(0);
}

async fn relay(
    listen: SocketAddr,
    upstream: SocketAddr,
    strip: String,
    header: Option<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
) {
    use hyper::body::Incoming;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(conn);
    let shared = Arc::new((client, strip, header));
    let l = tokio::net::TcpListener::bind(listen).await.unwrap();
    loop {
        let Ok((io, _)) = l.accept().await else {
            continue;
        };
        let _ = io.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let (client, strip, header) = &*shared;
                    // The whole message is read before it is sent on, as a
                    // gateway that looks at it must (and as warrant's does).
                    let (mut head, body) = req.into_parts();
                    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
                    let pq = head.uri.path_and_query().map_or("/", |p| p.as_str());
                    let pq = pq.strip_prefix(strip.as_str()).unwrap_or(pq);
                    head.uri = format!("http://{upstream}{pq}").parse().unwrap();
                    head.headers.remove(hyper::header::HOST);
                    if let Some((n, v)) = header {
                        head.headers.insert(n.clone(), v.clone());
                    }
                    client
                        .request(Request::from_parts(head, Full::new(body)))
                        .await
                        .map_err(|e| e.to_string())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}
