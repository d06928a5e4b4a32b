//! What the broker benchmarks share: free ports, core pinning, the CLI, and
//! starting a release `warrant serve` on core 0. Each bench uses a subset.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", &bin()]);
        c
    } else {
        Command::new(bin())
    };
    let child = cmd
        .arg("serve")
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
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("run.json").exists() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
