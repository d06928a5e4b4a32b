//! What the edge needs from the rest of the broker, as narrow traits it
//! defines: verify a task token ([`TaskVerifier`]), decide a request
//! ([`Authorizer`]), fetch a credential ([`CredentialSource`]), record what
//! happened ([`AuditSink`]) and keep an MCP server's tool pins ([`ToolPins`]).
//!
//! warrant-server implements them over the control services; tests implement
//! them in memory. Deliberately not here: how tokens are signed, where
//! secrets are sealed, how the audit chain is linked. The edge cannot reach
//! any of that, which keeps the request path small enough to review.

use std::sync::Arc;

use async_trait::async_trait;
use warrant_core::approval::{ApprovalSubject, ApprovalTerms, StepUp};
use warrant_core::audit::AuditEvent;
use warrant_core::decision::{Decision, DecisionRequest};
use warrant_core::mcp::{PinOutcome, ToolArguments, ToolDefinition, ToolPin};
use warrant_core::secret::{Resolved, SecretName};
use warrant_core::task::{TaskUse, UseError};
use warrant_core::time::Timestamp;
use warrant_policy::Loaded;

use crate::metrics::EdgeMetrics;

/// Checks a task token for one use at the edge: signature, lifetime,
/// audience, revocation of its task and every ancestor, and the state of
/// every agent and instance in its chain.
#[async_trait]
pub trait TaskVerifier: Send + Sync {
    /// The task token `token`, checked for `audience` at `now`.
    async fn task_for_use(
        &self,
        token: &str,
        audience: &str,
        now: Timestamp,
    ) -> Result<TaskUse, UseError>;

    /// Whether `task` was revoked or `instance` may no longer act, from
    /// memory (for sweeping sessions bound to them).
    fn ended(&self, task: &str, instance: &str) -> bool;
}

/// Decides requests against the policy set in force.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// Decides `req`; the decision's fields are added to `event`, which the
    /// caller records. Never fails: any error is a deny.
    fn decide_for_record(&self, req: &DecisionRequest, event: AuditEvent)
    -> (Decision, AuditEvent);

    /// The policy set in force.
    fn current(&self) -> Arc<Loaded>;

    /// Re-types the policies for the MCP tools' arguments (audited with
    /// `base`); the previous set stays on failure, whose text is returned.
    async fn set_tools(&self, tools: ToolArguments, base: AuditEvent) -> Result<(), String>;
}

/// A stored secret could not be opened (the text says why; it never holds
/// the value).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SecretUnavailable(pub String);

/// Where the real credentials come from.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// The secret `name` (of `user`, when per user), or `None` when none is
    /// stored.
    async fn secret(
        &self,
        name: &SecretName,
        user: Option<&str>,
    ) -> Result<Option<Arc<Resolved>>, SecretUnavailable>;

    /// A JWT signed with the broker's active key, with header `typ` (for
    /// `warrant_jwt` credentials).
    fn sign_jwt(&self, typ: &str, claims: &serde_json::Value) -> Result<String, SecretUnavailable>;
}

/// The audit trail could not be written (the text is for the log).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuditUnavailable(pub String);

/// Where the edge's records go.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Writes `event` durably before the caller answers (refusals).
    async fn append(&self, event: AuditEvent) -> Result<(), AuditUnavailable>;

    /// Queues `event` for a batch written off the response path (answered
    /// requests); waits only when the queue is full.
    async fn record_batched(&self, event: AuditEvent);

    /// Whether a batch failed and is not yet written: the edge then refuses
    /// requests until it is.
    fn batch_failed(&self) -> bool;

    /// A refusal of a caller who proved nothing: `Some` to record it
    /// individually, `None` when its source's budget is spent (it is then
    /// counted in an aggregate record).
    fn admit(&self, event: AuditEvent) -> Option<AuditEvent>;

    /// [`AuditSink::admit`], for a refusal whose caller may be known (the
    /// budget is then the agent's, or the source's when none was verified).
    fn admit_known(&self, event: AuditEvent) -> Option<AuditEvent>;
}

/// An MCP server's tool pins could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PinsUnavailable(pub String);

/// Tool pins: what each MCP server's tools were when first seen or last
/// approved.
#[async_trait]
pub trait ToolPins: Send + Sync {
    /// Notes that `server` was listed at `now`; whether it was listed before.
    async fn note_server_listed(
        &self,
        server: &str,
        now: Timestamp,
    ) -> Result<bool, PinsUnavailable>;

    /// Compares an announced definition with the pin (pinning it when new,
    /// held for approval when `hold`), recording with `base`.
    async fn observe_tool(
        &self,
        server: &str,
        def: ToolDefinition,
        hold: bool,
        now: Timestamp,
        base: AuditEvent,
    ) -> Result<PinOutcome, PinsUnavailable>;

    /// The pins of one server, or of all.
    async fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, PinsUnavailable>;
}

/// Step-up approval of requests policy allows only with a person's
/// approval.
#[async_trait]
pub trait Approvals: Send + Sync {
    /// Asks for (or finds) the approval of `subject`, holding up to the
    /// configured time for a decision; a granted one is spent on this
    /// request. `base` is the request's record (approval records copy it).
    async fn step_up(
        &self,
        subject: ApprovalSubject,
        shown: serde_json::Value,
        terms: ApprovalTerms,
        policies: Vec<String>,
        base: &AuditEvent,
    ) -> StepUp;
}

/// Everything the proxy and the gateway are built from besides their
/// configuration. Cheap to clone.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct EdgeServices {
    /// Task tokens.
    pub tasks: Arc<dyn TaskVerifier>,
    /// Policy.
    pub authorizer: Arc<dyn Authorizer>,
    /// Secrets and signing, for the last hop.
    pub credentials: Arc<dyn CredentialSource>,
    /// The audit trail.
    pub audit: Arc<dyn AuditSink>,
    /// MCP tool pins.
    pub pins: Arc<dyn ToolPins>,
    /// Step-up approvals.
    pub approvals: Arc<dyn Approvals>,
    /// The edge's metrics.
    pub metrics: Arc<EdgeMetrics>,
    /// The issuer.
    pub issuer: Arc<str>,
    /// The edge's own URL, for resource metadata.
    pub edge_url: String,
    /// `Host` values the edge answers to (compared without case).
    pub edge_hosts: Vec<String>,
}

impl EdgeServices {
    /// Whether `host` (a `Host` header) names the edge listener.
    pub fn serves_host(&self, host: &str) -> bool {
        self.edge_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}
