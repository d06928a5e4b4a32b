//! Identity issuance over the agent socket, against bare ES256 signing.
//!
//! A release `warrant serve` in a temporary data directory, one agent whose
//! selector is this bench's uid, a policy that permits `identity:issue`. Clients
//! are threads of this process, each opening a connection per request (as an
//! agent does) and reading the whole answer. Baseline, in the same run: signing
//! the same claims with an ES256 key (the ceiling: every issuance signs once).
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

fn issue(sock: &Path) -> bool {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(b"POST /v1/identity HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let mut buf = Vec::with_capacity(2048);
    s.read_to_end(&mut buf).unwrap();
    buf.starts_with(b"HTTP/1.1 200")
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

fn sign_rate(secs: u64) -> f64 {
    let kek = Kek::generate().unwrap();
    let t = Timestamp::now();
    let set = KeySet::open(vec![generate_key(Alg::Es256, &kek, t, t).unwrap()], &kek).unwrap();
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

    let ceiling = sign_rate(secs);
    println!("identity issuance over the agent socket, {secs}s per case");
    println!("  bare ES256 signing (ceiling)   {ceiling:>9.0}/s");
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
