//! The broker's services, without HTTP.
//!
//! [`keys::KeyService`] (signing keys and rotation), [`policy::PolicyService`]
//! (the policy set in force, reload, `authorize()`), [`token::TokenService`]
//! (RFC 8693 exchange, client credentials, introspection, cascading
//! revocation), [`attest::AttestService`] (evidence → identity),
//! [`secrets::SecretService`], [`audit_batch::AuditBatcher`] and
//! [`refusals::RefusalLog`] (how records reach the store), checkpoints of the
//! audit chain and the broker's [`metrics::Metrics`].
//!
//! Deliberately not here: HTTP (warrant-server renders these services'
//! answers), the edge's request handling (warrant-edge, which reaches these
//! services only through the traits it defines), Cedar, SQL and key material
//! (their own crates).

pub mod anomaly;
pub mod approvals;
pub mod attest;
pub mod audit_batch;
pub mod checkpoints;
pub(crate) mod delegation;
pub mod dev;
pub mod export;
pub mod keys;
pub mod metrics;
pub mod names;
pub(crate) mod oauth;
pub mod outbound;
pub mod policy;
pub mod refusals;
pub mod secrets;
pub mod token;

pub use warrant_host::random;

use std::sync::Arc;

use warrant_core::TrustDomain;
use warrant_store::Store;

/// What every issuing service (attestation, tokens) is built from.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct IssuerParts {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Arc<keys::KeyService>,
    /// Policy.
    pub policy: Arc<policy::PolicyService>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The issuer URL.
    pub issuer: Arc<str>,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Refusals of unauthenticated callers, recorded in aggregate.
    pub refusals: Arc<refusals::RefusalLog>,
}
