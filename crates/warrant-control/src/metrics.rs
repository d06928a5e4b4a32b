//! Prometheus metrics.
//!
//! Counters are updated where things happen; gauges that describe stored state
//! (agents by status, keys by state, valid admin tokens, audit chain length) are
//! refreshed at scrape time from the store, so they can't drift from it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a policy decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The action.
    pub action: String,
    /// allow, deny, approval_required.
    pub effect: String,
}

/// An outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// ok or error.
    pub outcome: String,
}

/// Labels of an admin request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminLabels {
    /// socket or http.
    pub surface: String,
    /// ok, denied, error.
    pub outcome: String,
}

/// A status or state label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The state.
    pub state: String,
}

/// Labels of an attestation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttestLabels {
    /// unix, oidc, join.
    pub attestor: String,
    /// issued, denied, invalid, error.
    pub outcome: String,
}

/// Labels of a token grant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// token.exchange, token.self, token.request.
    pub grant: String,
    /// issued, or the OAuth error code.
    pub outcome: String,
}

/// An agent label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    /// The agent's name.
    pub agent: String,
}

/// Build information.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// warrant's version.
    pub version: String,
}

/// Every metric the broker exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Policy decisions by action and effect.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Policy reloads by outcome.
    pub policy_reloads: Family<OutcomeLabels, Counter>,
    /// Policies in force.
    pub policies_loaded: Gauge,
    /// Admin API requests by surface and outcome.
    pub admin_requests: Family<AdminLabels, Counter>,
    /// Audit writes that failed (each failed the operation it recorded).
    pub audit_write_failures: Counter,
    /// Refusals of unauthenticated callers over the per-window budget,
    /// recorded in aggregate rather than one by one.
    pub refusals_aggregated: Counter,
    /// Agents by status (refreshed at scrape).
    pub agents: Family<StateLabels, Gauge>,
    /// Signing keys by state (refreshed at scrape).
    pub signing_keys: Family<StateLabels, Gauge>,
    /// Admin tokens that are neither expired nor revoked: standing credentials (refreshed at scrape).
    pub admin_tokens_valid: Gauge,
    /// Records in the audit chain (refreshed at scrape).
    pub audit_records: Gauge,
    /// Attestations by attestor and outcome.
    pub attestations: Family<AttestLabels, Counter>,
    /// Instances whose identity has not expired, per agent (refreshed at scrape).
    pub live_instances: Family<AgentLabels, Gauge>,
    /// Token grants by kind and outcome.
    pub token_grants: Family<GrantLabels, Counter>,
    /// Tasks revoked.
    pub tasks_revoked: Counter,
    /// Connections closed at accept because a listener was at its cap.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// With a shared store: seconds from another broker's commit to this
    /// broker applying it, per change.
    pub feed_lag: prometheus_client::metrics::histogram::Histogram,
    /// With a shared store: the last change version applied here.
    pub feed_position: Gauge,
    /// With a shared store: 1 while this broker hears the change feed.
    pub feed_connected: Gauge,
    /// With a shared store: brokers that reported in the last 10 s
    /// (refreshed at scrape).
    pub cluster_brokers: Gauge,
    /// With a shared store: how many different policy sets those brokers
    /// enforce; more than 1 is a half-applied change (refreshed at scrape).
    pub cluster_policy_digests: Gauge,
    /// With a shared store: how many different config files they run
    /// (refreshed at scrape).
    pub cluster_config_digests: Gauge,
    /// Step-up approvals by what happened: requested, approved, denied, used.
    pub approvals: Family<StateLabels, Counter>,
    /// Approval webhook announcements by outcome: ok, failed (after
    /// retries), dropped (queue full).
    pub approval_webhooks: Family<OutcomeLabels, Counter>,
    /// The last audit record each export sink delivered.
    pub export_position: Family<SinkLabels, Gauge>,
    /// Records each export sink is behind the chain head (refreshed at scrape).
    pub export_lag: Family<SinkLabels, Gauge>,
    /// Failed deliveries per export sink (each retried).
    pub export_failures: Family<SinkLabels, Counter>,
    /// Anomalies acted on, by action: alert, quarantine_instance, quarantine_agent.
    pub anomalies: Family<StateLabels, Counter>,
    /// Seconds from a revocation or quarantine being triggered to it being
    /// enforced (this broker refusing the tokens), by trigger.
    pub enforcement: Family<StateLabels, prometheus_client::metrics::histogram::Histogram>,
    /// Identity-health gauges, refreshed at scrape (see docs/health.md).
    pub health: Family<StateLabels, Gauge>,
    /// Count, sum and maximum of enforcement times (seconds) by trigger,
    /// for `warrant health`.
    pub enforcement_stats: parking_lot::Mutex<std::collections::BTreeMap<String, (u64, f64, f64)>>,
}

/// Labels: which audit export sink.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// Its name.
    pub sink: String,
}

/// Labels: which listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `api`, `edge`, `admin` or `agent`.
    pub listener: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// Registers every metric, and what `more` adds (the edge's).
    pub fn with(more: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("warrant_build_info", "warrant's version", build);
        let m = Self {
            decisions: Family::default(),
            policy_reloads: Family::default(),
            policies_loaded: Gauge::default(),
            admin_requests: Family::default(),
            audit_write_failures: Counter::default(),
            refusals_aggregated: Counter::default(),
            agents: Family::default(),
            signing_keys: Family::default(),
            admin_tokens_valid: Gauge::default(),
            audit_records: Gauge::default(),
            attestations: Family::default(),
            live_instances: Family::default(),
            token_grants: Family::default(),
            tasks_revoked: Counter::default(),
            connections_refused: Family::default(),
            feed_lag: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14),
            ),
            feed_position: Gauge::default(),
            feed_connected: Gauge::default(),
            cluster_brokers: Gauge::default(),
            cluster_policy_digests: Gauge::default(),
            cluster_config_digests: Gauge::default(),
            approvals: Family::default(),
            approval_webhooks: Family::default(),
            export_position: Family::default(),
            export_lag: Family::default(),
            export_failures: Family::default(),
            anomalies: Family::default(),
            enforcement: Family::new_with_constructor(|| {
                prometheus_client::metrics::histogram::Histogram::new(
                    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 12),
                )
            }),
            health: Family::default(),
            enforcement_stats: parking_lot::Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "warrant_store_feed_lag_seconds",
            "Seconds from a change's commit by any broker to this broker applying it (shared store)",
            m.feed_lag.clone(),
        );
        registry.register(
            "warrant_store_feed_position",
            "The last change version this broker applied (shared store); brokers at the same position hold the same state",
            m.feed_position.clone(),
        );
        registry.register(
            "warrant_store_feed_connected",
            "1 while this broker hears the shared store's change feed",
            m.feed_connected.clone(),
        );
        registry.register(
            "warrant_cluster_brokers",
            "Brokers sharing the store that reported in the last 10 s",
            m.cluster_brokers.clone(),
        );
        registry.register(
            "warrant_cluster_policy_digests",
            "Different policy sets enforced by the brokers sharing the store; more than 1 is a half-applied change",
            m.cluster_policy_digests.clone(),
        );
        registry.register(
            "warrant_cluster_config_digests",
            "Different config files run by the brokers sharing the store",
            m.cluster_config_digests.clone(),
        );
        registry.register(
            "warrant_audit_export_position",
            "The last audit record each export sink delivered",
            m.export_position.clone(),
        );
        registry.register(
            "warrant_audit_export_lag_records",
            "Audit records each export sink is behind the chain head; it grows while a sink fails",
            m.export_lag.clone(),
        );
        registry.register(
            "warrant_audit_export_failures",
            "Failed deliveries per audit export sink (each is retried)",
            m.export_failures.clone(),
        );
        registry.register(
            "warrant_enforcement_seconds",
            "Seconds from a revocation or quarantine being triggered to its enforcement, by trigger (revoke, quarantine, anomaly)",
            m.enforcement.clone(),
        );
        registry.register(
            "warrant_identity_health",
            "Identity-health figures by name (docs/health.md), refreshed at scrape",
            m.health.clone(),
        );
        registry.register(
            "warrant_anomalies",
            "Anomalies acted on, by action: alert, quarantine_instance, quarantine_agent",
            m.anomalies.clone(),
        );
        registry.register(
            "warrant_approvals",
            "Step-up approvals by what happened: requested, approved, denied, used",
            m.approvals.clone(),
        );
        registry.register(
            "warrant_approval_webhooks",
            "Approval webhook announcements by outcome: ok, failed (after retries), dropped (queue full)",
            m.approval_webhooks.clone(),
        );
        registry.register(
            "warrant_policy_decisions",
            "Policy decisions by action and effect",
            m.decisions.clone(),
        );
        registry.register(
            "warrant_policy_reloads",
            "Policy set reloads by outcome",
            m.policy_reloads.clone(),
        );
        registry.register(
            "warrant_policies_loaded",
            "Policies in force",
            m.policies_loaded.clone(),
        );
        registry.register(
            "warrant_admin_requests",
            "Admin API requests by surface and outcome",
            m.admin_requests.clone(),
        );
        registry.register(
            "warrant_audit_write_failures",
            "Audit writes that failed; each failed its operation",
            m.audit_write_failures.clone(),
        );
        registry.register(
            "warrant_refusals_aggregated",
            "Refusals of unauthenticated callers beyond the per-window budget, recorded in aggregate",
            m.refusals_aggregated.clone(),
        );
        registry.register(
            "warrant_agents",
            "Inventoried agents by status",
            m.agents.clone(),
        );
        registry.register(
            "warrant_signing_keys",
            "Signing keys by state",
            m.signing_keys.clone(),
        );
        registry.register(
            "warrant_admin_tokens_valid",
            "Admin tokens neither expired nor revoked (standing credentials)",
            m.admin_tokens_valid.clone(),
        );
        registry.register(
            "warrant_audit_records",
            "Records in the audit chain",
            m.audit_records.clone(),
        );
        registry.register(
            "warrant_attestations",
            "Attestations by attestor and outcome",
            m.attestations.clone(),
        );
        registry.register(
            "warrant_live_instances",
            "Agent instances holding an unexpired identity",
            m.live_instances.clone(),
        );
        registry.register(
            "warrant_token_grants",
            "Token grants by kind and outcome",
            m.token_grants.clone(),
        );
        registry.register(
            "warrant_tasks_revoked",
            "Tasks revoked, descendants included",
            m.tasks_revoked.clone(),
        );
        registry.register(
            "warrant_connections_refused",
            "Connections closed at accept because their listener was at its cap",
            m.connections_refused.clone(),
        );
        more(&mut registry);
        Self { registry, ..m }
    }

    /// Counts an admin request.
    pub fn admin_request(&self, surface: &str, outcome: &str) {
        self.admin_requests
            .get_or_create(&AdminLabels {
                surface: surface.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts an attestation.
    pub fn attestation(&self, attestor: &str, outcome: &str) {
        self.attestations
            .get_or_create(&AttestLabels {
                attestor: attestor.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a token grant.
    pub fn token_grant(&self, grant: &str, outcome: &str) {
        self.token_grants
            .get_or_create(&GrantLabels {
                grant: grant.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Observes how long a `trigger` took to be enforced.
    pub fn enforced(&self, trigger: &str, secs: f64) {
        self.enforcement
            .get_or_create(&StateLabels {
                state: trigger.to_owned(),
            })
            .observe(secs);
        let mut stats = self.enforcement_stats.lock();
        let e = stats.entry(trigger.to_owned()).or_insert((0, 0.0, 0.0));
        e.0 += 1;
        e.1 += secs;
        e.2 = e.2.max(secs);
    }

    /// Counts a connection closed because `listener` was full.
    pub fn connection_refused(&self, listener: &str) {
        self.connections_refused
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
