//! Integration tests: the real `warrant` binary, started on free loopback ports
//! in a temporary data directory, driven through its CLI and HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod agent_side;
mod anomaly;
mod approvals;
mod attest;
mod audit;
mod cluster;
mod console;
mod credentials;
mod delegation;
mod deploy;
mod export;
mod health;
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
mod support;
mod tls;
mod workload;
