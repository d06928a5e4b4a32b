//! The edge's traits (warrant-edge `services`), implemented over the control
//! services. This is the one place the two meet: the edge never names a
//! control type, and the control crate knows nothing of the edge.

use std::sync::Arc;

use async_trait::async_trait;
use warrant_control::audit_batch::AuditBatcher;
use warrant_control::keys::KeyService;
use warrant_control::metrics::Metrics;
use warrant_control::policy::{Loaded, PolicyService};
use warrant_control::refusals::RefusalLog;
use warrant_control::secrets::SecretService;
use warrant_control::token::TokenService;
use warrant_core::audit::AuditEvent;
use warrant_core::decision::{Decision, DecisionRequest};
use warrant_core::mcp::{PinOutcome, ToolArguments, ToolDefinition, ToolPin};
use warrant_core::secret::{Resolved, SecretName};
use warrant_core::task::{TaskUse, UseError};
use warrant_core::time::Timestamp;
use warrant_edge::services::{
    AuditSink, AuditUnavailable, Authorizer, CredentialSource, PinsUnavailable, SecretUnavailable,
    TaskVerifier, ToolPins,
};
use warrant_store::Store;

/// The control services, as the edge sees them.
#[allow(missing_debug_implementations)]
pub(crate) struct ControlForEdge {
    pub(crate) tokens: Arc<TokenService>,
    pub(crate) policy: Arc<PolicyService>,
    pub(crate) secrets: Arc<SecretService>,
    pub(crate) keys: Arc<KeyService>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) batcher: AuditBatcher,
    pub(crate) refusals: Arc<RefusalLog>,
    pub(crate) approvals: Arc<warrant_control::approvals::ApprovalService>,
}

#[async_trait]
impl warrant_edge::services::Approvals for ControlForEdge {
    async fn step_up(
        &self,
        subject: warrant_core::approval::ApprovalSubject,
        shown: serde_json::Value,
        terms: warrant_core::approval::ApprovalTerms,
        policies: Vec<String>,
        base: &AuditEvent,
    ) -> warrant_core::approval::StepUp {
        self.approvals
            .step_up(subject, shown, terms, policies, base, None)
            .await
    }
}

#[async_trait]
impl TaskVerifier for ControlForEdge {
    async fn task_for_use(
        &self,
        token: &str,
        audience: &str,
        now: Timestamp,
    ) -> Result<TaskUse, UseError> {
        self.tokens.task_for_use(token, audience, now).await
    }

    fn ended(&self, task: &str, instance: &str) -> bool {
        self.tokens.ended(task, instance)
    }
}

#[async_trait]
impl Authorizer for ControlForEdge {
    fn decide_for_record(
        &self,
        req: &DecisionRequest,
        event: AuditEvent,
    ) -> (Decision, AuditEvent) {
        self.policy.decide_for_record(req, event)
    }

    fn current(&self) -> Arc<Loaded> {
        self.policy.current()
    }

    async fn set_tools(&self, tools: ToolArguments, base: AuditEvent) -> Result<(), String> {
        self.policy
            .set_tools(tools, base)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl CredentialSource for ControlForEdge {
    async fn secret(
        &self,
        name: &SecretName,
        user: Option<&str>,
    ) -> Result<Option<Arc<Resolved>>, SecretUnavailable> {
        self.secrets
            .resolve(name, user)
            .await
            .map_err(|e| SecretUnavailable(e.to_string()))
    }

    fn sign_jwt(&self, typ: &str, claims: &serde_json::Value) -> Result<String, SecretUnavailable> {
        let set = self.keys.current();
        let key = set
            .active(Timestamp::now())
            .ok_or_else(|| SecretUnavailable("no signing key is active".into()))?;
        warrant_token::jwt::sign(key, typ, claims).map_err(|e| SecretUnavailable(e.to_string()))
    }
}

#[async_trait]
impl AuditSink for ControlForEdge {
    async fn append(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        match self.store.append_audit(event).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.metrics.audit_write_failures.inc();
                Err(AuditUnavailable(e.to_string()))
            }
        }
    }

    async fn record_batched(&self, event: AuditEvent) {
        self.batcher.record(event).await;
    }

    fn batch_failed(&self) -> bool {
        self.batcher.failed()
    }

    fn admit(&self, event: AuditEvent) -> Option<AuditEvent> {
        self.refusals.admit(event)
    }

    fn admit_known(&self, event: AuditEvent) -> Option<AuditEvent> {
        self.refusals.admit_known(event)
    }
}

#[async_trait]
impl ToolPins for ControlForEdge {
    async fn note_server_listed(
        &self,
        server: &str,
        now: Timestamp,
    ) -> Result<bool, PinsUnavailable> {
        self.store
            .note_server_listed(server, now)
            .await
            .map_err(|e| PinsUnavailable(e.to_string()))
    }

    async fn observe_tool(
        &self,
        server: &str,
        def: ToolDefinition,
        hold: bool,
        now: Timestamp,
        base: AuditEvent,
    ) -> Result<PinOutcome, PinsUnavailable> {
        self.store
            .observe_tool(server, def, hold, now, base)
            .await
            .map_err(|e| PinsUnavailable(e.to_string()))
    }

    async fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, PinsUnavailable> {
        self.store
            .list_tool_pins(server)
            .await
            .map_err(|e| PinsUnavailable(e.to_string()))
    }
}
