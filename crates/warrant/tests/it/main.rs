//! Integration tests: the real `warrant` binary, started on free loopback ports
//! in a temporary data directory, driven through its CLI and HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod attest;
mod audit;
mod delegation;
mod interop;
mod keys;
mod live;
mod mcp;
mod operator;
mod policy;
mod proxy;
mod quickstart;
mod review;
mod serve;

use std::path::Path;

pub use warrant_testkit::{Broker, Options, Run};

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
fn jwt_part(token: &str, i: usize) -> serde_json::Value {
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
