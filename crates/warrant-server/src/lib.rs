//! The warrant broker, assembled.
//!
//! [`config`] turns `warrant.toml`, environment and flags into a validated
//! [`Config`]; [`Broker::start`] prepares the data directory, opens the store,
//! loads keys and policies, binds the listeners and serves until asked to stop.
//! The HTTP layers ([`http`]) are thin: they parse, call the services in
//! [`state`], and render answers and errors.
//!
//! Deliberately not here: token formats, Cedar, SQL and key material, which
//! live in their own crates behind plain Rust APIs.

pub mod attest;
pub mod audit_batch;
pub mod checkpoints;
pub mod config;
pub mod data_dir;
pub mod dev;
pub mod http;
pub mod keys;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod random;
pub mod refusals;
pub mod secrets;
pub mod serve;
pub mod state;
pub mod token;

pub use config::Config;
pub use serve::{Broker, ServeError};
