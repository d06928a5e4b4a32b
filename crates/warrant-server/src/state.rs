//! The services every handler shares, cheap to clone.

use std::sync::Arc;

use warrant_core::TrustDomain;
use warrant_core::time::Timestamp;
use warrant_store::Store;

use crate::keys::KeyService;
use crate::metrics::Metrics;
use crate::policy::PolicyService;

/// What every issuing service (attestation, tokens) is built from.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct IssuerParts {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Arc<KeyService>,
    /// Policy.
    pub policy: Arc<PolicyService>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The issuer URL.
    pub issuer: Arc<str>,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Refusals of unauthenticated callers, recorded in aggregate.
    pub refusals: Arc<crate::refusals::RefusalLog>,
}

/// Handles to the broker's services.
#[derive(Clone)]
pub struct AppState {
    /// Persistence, including the audit trail.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Arc<KeyService>,
    /// The policy set in force and `authorize()`.
    pub policy: Arc<PolicyService>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Attestation and identity issuance.
    pub attest: Arc<crate::attest::AttestService>,
    /// Task tokens, introspection, revocation.
    pub tokens: Arc<crate::token::TokenService>,
    /// Records of answered edge requests, batched.
    pub audit_batch: crate::audit_batch::AuditBatcher,
    /// Refusals of unauthenticated callers, recorded in aggregate.
    pub refusals: Arc<crate::refusals::RefusalLog>,
    /// The MCP gateway.
    pub mcp: Arc<crate::mcp::gateway::Gateway>,
    /// The egress proxy.
    pub proxy: Arc<crate::proxy::ProxyService>,
    /// The secret store.
    pub secrets: Arc<crate::secrets::SecretService>,
    /// The development user issuer, when `serve --dev`.
    pub dev: Option<Arc<crate::dev::DevIssuer>>,
    /// The issuer URL.
    pub issuer: Arc<str>,
    /// The SPIFFE trust domain.
    pub trust_domain: TrustDomain,
    /// When the broker started.
    pub started_at: Timestamp,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.issuer)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}
