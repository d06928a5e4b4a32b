//! `warrant serve` footprint: start to ready, and idle resident memory.
//!
//! Start to ready is the time from spawning `warrant serve` to its first
//! `200` from `GET /readyz`, measured on a fresh data directory (generates the
//! key-encryption key and signing keys, creates and migrates the database,
//! writes the example policy) and on an existing one. The baseline is the
//! same binary spawned to print `--version` and exit, in the same run, so the
//! ratio says what serving costs over starting a process at all.
//! Idle RSS is `VmRSS` from `/proc/<pid>/status` after a second of idling.
//!
//! Run with `cargo bench -p warrant --bench footprint`.
//! `WARRANT_BENCH_RUNS` sets the runs per case (default 15).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_warrant");

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn spawn(data_dir: &Path, api: SocketAddr, edge: SocketAddr) -> Child {
    Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args([
            "--api-addr",
            &api.to_string(),
            "--edge-addr",
            &edge.to_string(),
        ])
        .env_remove("WARRANT_KEK")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls `/readyz` every 200 µs until it answers 200.
fn wait_ready(child: &mut Child, api: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(api).is_ok()
            && warrant_testkit::http(api, "GET", "/readyz", &[], None).status == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("warrant serve exited ({status}) before it was ready");
        }
        assert!(
            Instant::now() < deadline,
            "warrant serve never became ready"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn stop(mut child: Child) {
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "serve did not exit cleanly"
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("WARRANT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    let (mut version, mut fresh, mut warm, mut rss) = (vec![], vec![], vec![], vec![]);
    let warm_dir = base.path().join("warm");
    for i in 0..runs {
        let t = Instant::now();
        let out = Command::new(BIN).arg("--version").output().unwrap();
        version.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(out.status.success());

        let (api, edge) = (free_port(), free_port());
        let dir = base.path().join(format!("fresh-{i}"));
        let t = Instant::now();
        let mut child = spawn(&dir, api, edge);
        wait_ready(&mut child, api);
        fresh.push(t.elapsed().as_secs_f64() * 1e3);
        if i == 0 {
            // The warm runs reuse the first fresh directory.
            std::fs::rename(&dir, &warm_dir).ok();
            stop(child);
            continue;
        }
        stop(child);

        let (api, edge) = (free_port(), free_port());
        let t = Instant::now();
        let mut child = spawn(&warm_dir, api, edge);
        wait_ready(&mut child, api);
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(1));
        rss.push(rss_kib(child.id()) as f64 / 1024.0);
        stop(child);
    }
    let v = median(&mut version);
    let f = median(&mut fresh);
    let w = median(&mut warm);
    let r = median(&mut rss);
    println!("warrant serve footprint, medians of {runs} runs");
    println!("  process baseline (`warrant --version`)  {v:7.2} ms");
    println!(
        "  start to ready, fresh data dir          {f:7.2} ms  ({:.1}x baseline)",
        f / v
    );
    println!(
        "  start to ready, existing data dir       {w:7.2} ms  ({:.1}x baseline)",
        w / v
    );
    println!("  idle resident memory                    {r:7.1} MiB");
}
