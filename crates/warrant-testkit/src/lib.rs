//! A real broker for tests.
//!
//! [`Broker::start`] runs the `warrant` binary (`serve`) in a temporary data
//! directory on free loopback ports (`127.0.0.1:0`), waits until it is ready,
//! and kills it when dropped. [`Broker::cli`] runs the same binary as the CLI
//! against it. [`http`] is a small blocking HTTP/1.1 client for raw endpoint
//! checks, so tests don't depend on the code under test to speak HTTP.
//!
//! Test tooling: panics on setup failure are the point, hence the allows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub use rustix::process::Signal;
pub mod postgres;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How to start a broker.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Write this as `warrant.toml` in the temp dir and pass `--config`.
    pub config: Option<String>,
    /// Use this data directory instead of `<tmp>/data`.
    pub data_dir: Option<PathBuf>,
}

/// A running `warrant serve`.
#[derive(Debug)]
pub struct Broker {
    bin: PathBuf,
    tmp: tempfile::TempDir,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The bound API address.
    pub api: SocketAddr,
    /// The bound edge address.
    pub edge: SocketAddr,
    /// The issuer.
    pub issuer: String,
    child: Option<Child>,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// The listeners serve TLS (this client speaks plain HTTP only).
    tls: bool,
}

/// The result of a CLI run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Starts `bin serve` with `opts` in a fresh temp dir and returns the process
/// and paths without waiting; for tests of start-up failures.
pub fn spawn_serve(bin: &Path, tmp: &Path, opts: &Options) -> (Child, PathBuf, PathBuf) {
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| tmp.join("data"));
    let log = tmp.join("serve.log");
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg("--data-dir").arg(&data_dir);
    if !opts.args.iter().any(|a| a == "--api-addr") {
        cmd.args(["--api-addr", "127.0.0.1:0"]);
    }
    if !opts.args.iter().any(|a| a == "--edge-addr") {
        cmd.args(["--edge-addr", "127.0.0.1:0"]);
    }
    if let Some(c) = &opts.config {
        let p = tmp.join("warrant.toml");
        std::fs::write(&p, c).unwrap();
        cmd.arg("--config").arg(p);
    }
    cmd.args(&opts.args);
    for (k, v) in clean_env() {
        cmd.env(k, v);
    }
    cmd.env_remove("WARRANT_KEK");
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    (cmd.spawn().unwrap(), data_dir, log)
}

/// The environment for child processes: the test runner's, minus any
/// `WARRANT_*` a developer may have set in their shell.
fn clean_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !k.starts_with("WARRANT_"))
        .collect()
}

impl Broker {
    /// Starts a broker with default options and waits until it is ready.
    pub fn start(bin: &Path) -> Self {
        Self::start_with(bin, Options::default())
    }

    /// Starts a broker with `opts` and waits until it is ready.
    pub fn start_with(bin: &Path, opts: Options) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("wt")
            .tempdir_in("/tmp")
            .unwrap();
        let (child, data_dir, log) = spawn_serve(bin, tmp.path(), &opts);
        let mut b = Self {
            bin: bin.to_owned(),
            tmp,
            data_dir,
            api: "0.0.0.0:0".parse().unwrap(),
            edge: "0.0.0.0:0".parse().unwrap(),
            issuer: String::new(),
            child: Some(child),
            log,
            env: opts.env.clone(),
            tls: opts.args.iter().any(|a| a == "--tls-cert"),
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("warrant serve exited early ({status}):\n{}", self.logs());
            }
            if let Some(info) = warrant_server::data_dir::read_run_info(&self.data_dir)
                && info.pid == self.pid()
            {
                self.api = info.api_addr.parse().unwrap();
                self.edge = info.edge_addr.parse().unwrap();
                self.issuer = info.issuer;
                if self.tls {
                    // Bound and announced; the test speaks TLS itself.
                    return;
                }
                let r = http(self.api, "GET", "/readyz", &[], None);
                // Up, with a trail that was tampered with while it was
                // stopped: tests look at that.
                if r.status == 200 || r.body.contains("not as the broker wrote it") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "warrant serve did not become ready:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The temp directory (holds the data dir and the log).
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// What the broker logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the CLI against this broker (via its data directory).
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_env(args, &[])
    }

    /// Runs the CLI with extra environment variables.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .envs(clean_env())
            .env("WARRANT_DATA_DIR", &self.data_dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.args(args).output().unwrap())
    }

    /// An HTTP request to the API listener.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        http(self.api, method, path, headers, body)
    }

    /// Sends `signal` to the broker.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid()).unwrap()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        self.wait()
    }

    /// Waits (up to 30 s) for the broker to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("warrant serve did not exit:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same data directory (after [`stop`](Self::stop)).
    pub fn restart(&mut self, opts: Options) {
        assert!(self.child.is_none(), "stop the broker first");
        let opts = Options {
            data_dir: Some(self.data_dir.clone()),
            ..opts
        };
        let (child, _, log) = spawn_serve(&self.bin, self.tmp.path(), &opts);
        self.child = Some(child);
        self.log = log;
        self.env = opts.env;
        self.wait_ready();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// A minimal blocking HTTP/1.1 request (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    read_response(s)
}

/// Sends `head` (the request line and headers, written exactly, ending in a
/// blank line) and then `body`, for requests a well-behaved client would not
/// make; the server may answer before the body is sent, which is then cut short.
pub fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    read_response(s)
}

/// Sends `head` and returns the whole answer as text, as sent (chunk sizes
/// and trailers included).
pub fn raw_text(addr: SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

fn read_response(mut s: TcpStream) -> Response {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
