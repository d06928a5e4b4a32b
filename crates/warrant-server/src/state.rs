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
    /// Live audit streams open: by a number, who holds each and since when.
    pub streams: parking_lot::Mutex<std::collections::HashMap<u64, (String, std::time::Instant)>>,
    /// The next stream's number.
    pub next_stream: std::sync::atomic::AtomicU64,
    /// Seals a sign-in under way into the browser's state cookie (its
    /// PKCE verifier, nonce and expiry): made at first use, in memory only,
    /// so a sign-in completes on the broker that started it. Nothing is
    /// kept per sign-in, so starting them fills nothing.
    pub oidc_sealer: parking_lot::Mutex<Option<Arc<warrant_token::Kek>>>,
    /// States of sign-ins that made a session, until they expire: a
    /// callback is used once even if the provider took a code twice. Only
    /// a verified ID token spends one, so only people who signed in at the
    /// provider add to it.
    pub oidc_spent: parking_lot::Mutex<std::collections::HashMap<String, i64>>,
    /// The provider's endpoints once discovered, and the ID-token verifier,
    /// for the `[console.oidc]` they were made for.
    pub oidc: parking_lot::Mutex<Option<Arc<OidcClient>>>,
}

/// The most live audit streams a broker serves at once.
pub const MAX_AUDIT_STREAMS: usize = 32;
/// The most one caller (admin token, session or socket user) holds.
pub const MAX_AUDIT_STREAMS_EACH: usize = 4;

impl Default for ConsoleState {
    fn default() -> Self {
        Self {
            sessions: parking_lot::Mutex::default(),
            health: parking_lot::Mutex::default(),
            streams: parking_lot::Mutex::default(),
            next_stream: std::sync::atomic::AtomicU64::new(1),
            oidc_sealer: parking_lot::Mutex::default(),
            oidc_spent: parking_lot::Mutex::default(),
            oidc: parking_lot::Mutex::default(),
        }
    }
}

/// What signing in through the provider needs, made once per configuration.
#[allow(missing_debug_implementations)]
pub struct OidcClient {
    /// The configuration it was made for.
    pub config: crate::config::ConsoleOidc,
    /// Where to send the person.
    pub authorization_endpoint: String,
    /// Where to redeem the code.
    pub token_endpoint: String,
    /// Verifies ID tokens: the user issuer's keys, the client id as audience.
    pub verifier: warrant_control::attest::oidc::Providers,
}

/// Who a console session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionBasis {
    /// Made from an admin token: its hash, looked up again on every use.
    Token {
        /// SHA-256 of the admin token.
        hash: [u8; 32],
    },
    /// Made by the provider's word: the person's groups at sign-in, mapped
    /// to a role by the `[console.oidc]` in force at every use (a changed
    /// mapping, or single sign-on turned off, applies at once).
    Person {
        /// The user issuer that signed the person in.
        issuer: String,
        /// The console's client id at sign-in.
        client_id: String,
        /// The issuer's namespace at sign-in (the person's id is in it).
        namespace: String,
        /// Their groups, as its ID token gave them.
        groups: Vec<String>,
    },
}

/// One console session.
#[allow(missing_debug_implementations)]
pub struct ConsoleSession {
    /// What it was made from.
    pub basis: SessionBasis,
    /// The actor its changes are recorded as.
    pub actor: String,
    /// The person, when known (`user:<namespace>/<subject>`).
    pub person: Option<String>,
    /// What changes must carry in `x-warrant-csrf`.
    pub csrf: String,
    /// When it was made.
    pub created: std::time::Instant,
    /// When it ends at the latest, whatever the configuration says later
    /// (the admin token's expiry, the lifetime at sign-in).
    pub ends: std::time::Instant,
    /// The same, as a time.
    pub ends_at: Timestamp,
    /// When it was last used.
    pub last_used: std::time::Instant,
}

impl ConsoleSession {
    /// Whether it may still be used at `now` under the console settings in
    /// force (a shortened lifetime or idle timeout applies to it too).
    pub fn live(&self, now: std::time::Instant, config: &crate::config::ConsoleConfig) -> bool {
        now < self.ends
            && now.duration_since(self.created) < config.session_ttl
            && now.duration_since(self.last_used) < config.idle_timeout
    }
}

impl ConsoleState {
    /// The session `key` names, if it is live: its basis. With `touch`, the
    /// use counts against its idle timeout. A dead session is forgotten.
    pub fn session(
        &self,
        key: &[u8; 32],
        config: &crate::config::ConsoleConfig,
        touch: bool,
    ) -> Option<(SessionBasis, String, Option<String>, String)> {
        let now = std::time::Instant::now();
        let mut map = self.sessions.lock();
        let live = map.get(key).is_some_and(|s| s.live(now, config));
        if !live {
            map.remove(key);
            return None;
        }
        let s = map.get_mut(key)?;
        if touch {
            s.last_used = now;
        }
        Some((
            s.basis.clone(),
            s.actor.clone(),
            s.person.clone(),
            s.csrf.clone(),
        ))
    }
}

impl ConsoleState {
    /// Ends every session of `actor` (an admin token's `admin-token:<id>`, a
    /// person's `user:<namespace>/<subject>`); how many there were.
    pub fn end(&self, actor: &str) -> usize {
        let mut map = self.sessions.lock();
        let before = map.len();
        map.retain(|_, s| s.actor != actor);
        before - map.len()
    }
}

/// The most sessions a broker keeps.
pub const MAX_SESSIONS: usize = 10_000;
/// The most sessions one actor (an admin token, a person) may have open;
/// the least recently used goes.
pub const MAX_SESSIONS_EACH: usize = 8;

impl ConsoleState {
    /// Keeps a new session under `key`, making room among its actor's own
    /// (the least recently used goes) and dropping dead ones; `false` when
    /// the broker holds as many as it keeps.
    pub fn admit(
        &self,
        key: [u8; 32],
        new: ConsoleSession,
        config: &crate::config::ConsoleConfig,
    ) -> bool {
        let now = new.created;
        let mut map = self.sessions.lock();
        map.retain(|_, s| s.live(now, config));
        let mut mine: Vec<([u8; 32], std::time::Instant)> = map
            .iter()
            .filter(|(_, s)| s.actor == new.actor)
            .map(|(k, s)| (*k, s.last_used))
            .collect();
        if mine.len() >= MAX_SESSIONS_EACH {
            mine.sort_by_key(|(_, used)| *used);
            for (k, _) in &mine[..=mine.len() - MAX_SESSIONS_EACH] {
                map.remove(k);
            }
        }
        if map.len() >= MAX_SESSIONS {
            return false;
        }
        map.insert(key, new);
        true
    }
}

/// The most spent sign-in states remembered (one per successful sign-in in
/// the last 10 minutes; past this the oldest are forgotten first).
pub const MAX_SPENT_SIGN_INS: usize = 100_000;

impl ConsoleState {
    /// Spends the sign-in with `state` (valid until `until`, seconds since
    /// the epoch): `false` when it was spent already. One check and mark,
    /// so two callbacks racing with the same sign-in make one session.
    pub fn spend_sign_in(&self, state: &str, until: i64, now: i64) -> bool {
        let mut spent = self.oidc_spent.lock();
        spent.retain(|_, u| *u > now);
        if spent.contains_key(state) {
            return false;
        }
        if spent.len() >= MAX_SPENT_SIGN_INS
            && let Some(oldest) = spent
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(k, _)| k.clone())
        {
            spent.remove(&oldest);
        }
        spent.insert(state.to_owned(), until);
        true
    }
}
