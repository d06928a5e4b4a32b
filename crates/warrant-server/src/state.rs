//! The services every handler shares, cheap to clone.

use std::net::SocketAddr;
use std::sync::Arc;

use warrant_core::TrustDomain;
use warrant_core::time::Timestamp;
use warrant_store::Store;

use warrant_control::keys::KeyService;
use warrant_control::metrics::Metrics;
use warrant_control::policy::PolicyService;

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
    pub attest: Arc<warrant_control::attest::AttestService>,
    /// Task tokens, introspection, revocation.
    /// The audit chain's key, to verify exported records.
    pub chain_key: Arc<dyn warrant_core::audit::ChainLinker>,
    /// Anomaly detection: scores for decisions, and the detector's state.
    pub anomaly: Arc<warrant_control::anomaly::AnomalyService>,
    /// The edge's metrics (upstream requests by credential, for health).
    pub edge_metrics: Arc<warrant_edge::metrics::EdgeMetrics>,
    /// Step-up approvals.
    pub approvals: Arc<warrant_control::approvals::ApprovalService>,
    pub tokens: Arc<warrant_control::token::TokenService>,
    /// Records of answered edge requests, batched.
    pub audit_batch: warrant_control::audit_batch::AuditBatcher,
    /// Refusals of unauthenticated callers, recorded in aggregate.
    pub refusals: Arc<warrant_control::refusals::RefusalLog>,
    /// The MCP gateway.
    pub mcp: Arc<warrant_edge::mcp::gateway::Gateway>,
    /// The egress proxy.
    pub proxy: Arc<warrant_edge::proxy::ProxyService>,
    /// The secret store.
    pub secrets: Arc<warrant_control::secrets::SecretService>,
    /// The development user issuer, when `serve --dev`.
    pub dev: Option<Arc<warrant_control::dev::DevIssuer>>,
    /// The issuer URL.
    pub issuer: Arc<str>,
    /// The SPIFFE trust domain.
    pub trust_domain: TrustDomain,
    /// When the broker started.
    pub started_at: Timestamp,
    /// The configuration in force, and what reloading it needs.
    pub live: Arc<Live>,
    /// This broker process, among those sharing a store.
    pub broker_id: Arc<str>,
    /// The console's sessions and the overview's health samples.
    pub console: Arc<ConsoleState>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.issuer)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// The configuration in force and what reloading it needs.
#[allow(missing_debug_implementations)]
pub struct Live {
    /// The configuration in force (without the key-encryption key).
    pub config: arc_swap::ArcSwap<crate::config::Config>,
    /// When it was put in force.
    pub loaded_at: parking_lot::Mutex<Timestamp>,
    /// One reload at a time.
    pub reloading: tokio::sync::Mutex<()>,
    /// The bound edge address (default MCP audiences name it).
    pub edge_addr: SocketAddr,
    /// The bound API address.
    pub api_addr: SocketAddr,
    /// The admin socket.
    pub admin_socket: std::path::PathBuf,
    /// The agent socket.
    pub agent_socket: std::path::PathBuf,
    /// The store, as shown (`sqlite:<path>`, or the URL without password).
    pub store: String,
}

/// What the console keeps in this broker's memory.
#[allow(missing_debug_implementations)]
pub struct ConsoleState {
    /// Sessions by the SHA-256 of their cookie.
    pub sessions: parking_lot::Mutex<std::collections::HashMap<[u8; 32], ConsoleSession>>,
    /// Identity-health samples, oldest first, for the overview's charts.
    pub health: parking_lot::Mutex<std::collections::VecDeque<warrant_core::api::HealthPoint>>,
    /// Live audit streams open (each holds a permit).
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// The most live audit streams a broker serves at once.
pub const MAX_AUDIT_STREAMS: usize = 32;

impl Default for ConsoleState {
    fn default() -> Self {
        Self {
            sessions: parking_lot::Mutex::default(),
            health: parking_lot::Mutex::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_AUDIT_STREAMS)),
        }
    }
}

/// One console session: made from an admin token, which is looked up again
/// on every use.
#[allow(missing_debug_implementations)]
pub struct ConsoleSession {
    /// SHA-256 of the admin token it was made from.
    pub token_hash: [u8; 32],
    /// That token's id.
    pub token_id: String,
    /// What changes must carry in `x-warrant-csrf`.
    pub csrf: String,
    /// When it ends, whatever happens.
    pub expires: std::time::Instant,
    /// The same, as a time.
    pub expires_at: Timestamp,
    /// When it was last used.
    pub last_used: std::time::Instant,
    /// How long it may lie unused.
    pub idle: std::time::Duration,
}

impl ConsoleSession {
    /// Whether it may still be used at `now`.
    pub fn live(&self, now: std::time::Instant) -> bool {
        now < self.expires && now.duration_since(self.last_used) < self.idle
    }
}
