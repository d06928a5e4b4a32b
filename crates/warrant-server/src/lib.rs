//! The warrant broker, assembled.
//!
//! [`config`] turns `warrant.toml`, environment and flags into a validated
//! [`Config`]; [`Broker::start`] prepares the data directory, opens the store,
//! builds the control services (warrant-control) and the edge
//! (warrant-edge, wired to them through `edge_services`), binds the listeners
//! and serves until asked to stop. The HTTP layers (`http`) are thin: they
//! parse, call the services, and render answers and errors.
//!
//! Deliberately not here: token formats, Cedar, SQL and key material, which
//! live in their own crates behind plain Rust APIs, and the services
//! themselves.

pub mod config;
mod console;
pub mod data_dir;
mod edge_services;
mod follow;
mod governance;
mod http;
mod listener;
mod live;
mod serve;
mod state;
pub mod tls;
mod workload;

pub use config::Config;
pub use serve::{Broker, ServeError};
