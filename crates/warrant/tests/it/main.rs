//! Integration tests: the real `warrant` binary, started on free loopback ports
//! in a temporary data directory, driven through its CLI and HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod attest;
mod audit;
mod delegation;
mod interop;
mod keys;
mod policy;
mod quickstart;
mod serve;

use std::path::Path;

pub use warrant_testkit::{Broker, Options, Run};

/// The binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_warrant"))
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
