//! warrant's vocabulary: the types every other crate speaks.
//!
//! Parse, don't validate: each name, selector and duration here has a fallible
//! constructor, so a value of the type is already known to be well formed. This
//! crate does no IO and is not async; it deliberately knows nothing about HTTP,
//! SQL, Cedar or key material.

pub mod admin;
pub mod agent;
pub mod api;
pub mod audit;
pub mod decision;
pub mod identity;
pub mod keys;
pub mod name;
pub mod selector;
pub mod task;
pub mod text;
pub mod time;
pub mod trust_domain;

pub use agent::{Agent, AgentStatus, NewAgent, TrustLevel};
pub use name::{AgentName, EnvName, NameError};
pub use selector::{Selector, SelectorError, SelectorSet};
pub use time::{Timestamp, Ttl};
pub use trust_domain::TrustDomain;
