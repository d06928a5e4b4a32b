//! Identity issuance over the agent socket, against bare ES256 signing.
//!
//! A release `warrant serve` in a temporary data directory, one agent whose
//! selector is this bench's uid, a policy that permits `identity:issue`. Clients
//! are threads of this process, each opening a connection per request (as an
//! agent does) and reading the whole answer. Baseline, in the same run: signing
//! the same claims with an ES256 key (the ceiling: every issuance signs once),
//! and with an Ed25519 key (the ceiling of a broker on `--signing-alg EdDSA`).
//! Run with `cargo bench -p warrant --bench identity`. `WARRANT_BENCH_SECS`
//! sets the seconds per case (default 3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warrant_core::keys::Alg;
use warrant_core::time::Timestamp;
use warrant_token::{Kek, KeySet, generate_key};

const BIN: &str = env!("CARGO_BIN_EXE_warrant");

fn port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn cli(data: &Path, args: &[&str]) {
    let out = Command::new(BIN)
        .args(args)
        .env("WARRANT_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One issuance, as an agent asks for it: a request sent at once after
/// connecting may arrive before the broker looked at the process, and is
/// then answered `307` with a one-time proof to send it again with (what
/// `curl -L` and the SDK do), on a new connection.
fn issue(sock: &Path) -> bool {
    let mut target = "/v1/identity".to_owned();
    for _ in 0..2 {
        let mut s = UnixStream::connect(sock).unwrap();
        let req = format!(
            "POST {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::with_capacity(2048);
        s.read_to_end(&mut buf).unwrap();
        if buf.starts_with(b"HTTP/1.1 200") {
            return true;
        }
        if !buf.starts_with(b"HTTP/1.1 307") {
            return false;
        }
        let text = String::from_utf8_lossy(&buf);
        let Some(location) = text.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v)
        }) else {
            return false;
        };
        target = location.trim().to_owned();
    }
    false
}

fn run(clients: usize, secs: u64, sock: &Path) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, count, sock) = (stop.clone(), count.clone(), sock.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    assert!(issue(&sock), "issuance failed");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn sign_rate(alg: Alg, secs: u64) -> f64 {
    let kek = Kek::generate().unwrap();
    let t = Timestamp::now();
    let set = KeySet::open(vec![generate_key(alg, &kek, t, t).unwrap()], &kek).unwrap();
    let key = set.active(t).unwrap();
    let claims = serde_json::json!({
        "iss": "http://127.0.0.1:8700", "sub": "spiffe://warrant.local/agent/bench/0123456789abcdef01234567",
        "aud": "http://127.0.0.1:8700", "exp": 1, "iat": 1, "jti": "0123456789abcdef0123456789abcdef",
        "agent": "bench", "env": "dev", "attestor": "unix"
    });
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..100 {
            std::hint::black_box(warrant_token::jwt::sign(key, "JWT", &claims).unwrap());
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: u64 = std::env::var("WARRANT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = tmp.path().join("data");
    let mut child: Child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args([
            "--api-addr",
            &port(),
            "--edge-addr",
            &port(),
            "--log",
            "warn",
        ])
        .env_remove("WARRANT_KEK")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = data.join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(sock.exists() && data.join("run.json").exists()) {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let uid = rustix::process::getuid().as_raw().to_string();
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
            "--selector",
            &format!("unix:uid={uid}"),
        ],
    );
    std::fs::write(
        data.join("policies/bench.cedar"),
        "@id(\"bench\")\npermit(principal, action == Action::\"identity:issue\", resource);\n",
    )
    .unwrap();
    cli(&data, &["policy", "reload"]);
    for _ in 0..50 {
        assert!(issue(&sock));
    }

    let ceiling = sign_rate(Alg::Es256, secs);
    // A broker started with `--signing-alg EdDSA` signs with Ed25519: its
    // ceiling (and the token endpoint's; `scripts/bench-tokens` runs both).
    let eddsa = sign_rate(Alg::EdDsa, secs);
    println!("identity issuance over the agent socket, {secs}s per case");
    println!("  bare ES256 signing (ceiling)   {ceiling:>9.0}/s");
    println!(
        "  bare EdDSA signing             {eddsa:>9.0}/s  (the ceiling with --signing-alg EdDSA)"
    );
    for clients in [1, 16] {
        let rate = run(clients, secs, &sock);
        println!(
            "  {clients:>2} concurrent clients           {rate:>9.0}/s  ({:.1}% of the ceiling)",
            rate / ceiling * 100.0
        );
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.wait().unwrap();
}
