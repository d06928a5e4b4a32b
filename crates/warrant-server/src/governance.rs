//! What anomaly detection and administrators do to an agent: quarantine
//! (nothing issued, every live task revoked) and release.

use async_trait::async_trait;
use warrant_core::agent::{Agent, AgentStatus};
use warrant_core::audit::AuditEvent;
use warrant_core::name::AgentName;
use warrant_core::task::RevokeTarget;
use warrant_core::time::Timestamp;
use warrant_store::StoreError;

use crate::state::AppState;

/// Quarantines `agent`: every task it acted in revoked (with their
/// descendants), then its state set to `quarantined`, each step recorded
/// with `event`. Until released, it gets nothing.
pub(crate) async fn quarantine(
    state: &AppState,
    agent: &AgentName,
    event: AuditEvent,
) -> Result<Agent, StoreError> {
    let started = std::time::Instant::now();
    let revoked = state
        .tokens
        .revoke(
            RevokeTarget::Agent(agent.to_string()),
            event.clone().action("quarantine: revoke its tasks"),
        )
        .await?;
    state.metrics.tasks_revoked.inc_by(revoked.len() as u64);
    // Enforced once the tasks are revoked here; the state change keeps
    // anything new from being issued.
    state
        .metrics
        .enforced("quarantine", started.elapsed().as_secs_f64());
    state
        .store
        .set_agent_status(
            agent,
            AgentStatus::Quarantined,
            Timestamp::now(),
            event.action("quarantine").detail(
                serde_json::json!({ "status": "quarantined", "tasks_revoked": revoked.len() }),
            ),
        )
        .await
}

/// Releases a quarantined `agent`: active again, its instance blocks
/// lifted and its anomaly signals forgotten (its learnt habits stay).
pub(crate) async fn release(
    state: &AppState,
    agent: &AgentName,
    event: AuditEvent,
) -> Result<Agent, StoreError> {
    let current = state
        .store
        .get_agent(agent)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "agent",
            name: agent.to_string(),
        })?;
    if current.status != AgentStatus::Quarantined {
        return Err(StoreError::Precondition {
            what: "release",
            why: format!(
                "agent `{agent}` is {}, not quarantined (`warrant agent enable` re-enables a disabled agent)",
                current.status.as_str()
            ),
        });
    }
    let a = state
        .store
        .set_agent_status(
            agent,
            AgentStatus::Active,
            Timestamp::now(),
            event.detail(serde_json::json!({ "status": "active" })),
        )
        .await?;
    state.tokens.reload_blocks().await?;
    state.anomaly.forgive(agent.as_str());
    Ok(a)
}

/// The detector's hands.
pub(crate) struct Responder(pub(crate) AppState);

#[async_trait]
impl warrant_control::anomaly::Responder for Responder {
    async fn quarantine_instance(&self, instance: &str, event: AuditEvent) -> Result<(), String> {
        self.0
            .tokens
            .revoke(
                RevokeTarget::Instance(instance.to_owned()),
                event.action("quarantine instance"),
            )
            .await
            .map(|t| {
                self.0.metrics.tasks_revoked.inc_by(t.len() as u64);
            })
            .map_err(|e| e.to_string())
    }

    async fn quarantine_agent(&self, agent: &str, event: AuditEvent) -> Result<(), String> {
        let name = AgentName::new(agent).map_err(|e| e.to_string())?;
        quarantine(&self.0, &name, event)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn record(&self, event: AuditEvent) -> Result<(), String> {
        self.0
            .store
            .append_audit(event)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
