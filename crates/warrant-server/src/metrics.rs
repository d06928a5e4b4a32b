//! Prometheus metrics.
//!
//! Counters are updated where things happen; gauges that describe stored state
//! (agents by status, keys by state, valid admin tokens, audit chain length) are
//! refreshed at scrape time from the store, so they can't drift from it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    /// The route (`-` when none matched).
    pub route: String,
    /// `forwarded`, or why not (`invalid_token`, `access_denied`, ...).
    pub decision: String,
}

/// Labels of an MCP gateway request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpLabels {
    /// The MCP server (`-` when none matched).
    pub server: String,
    /// The JSON-RPC method (`-` before one was read).
    pub method: String,
    /// `allow`, or why not.
    pub decision: String,
}

/// A route label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route.
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 20,
    ))
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

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
    /// Proxied requests by route and decision.
    pub proxy_requests: Family<ProxyLabels, Counter>,
    /// Upstream latency to response headers, by route.
    pub proxy_upstream_seconds: HistogramFamily,
    /// Time the proxy adds (before forwarding and after the upstream's headers), by route.
    pub proxy_added_seconds: HistogramFamily,
    /// MCP gateway requests by server, method and decision.
    pub mcp_requests: Family<McpLabels, Counter>,
    /// Open MCP gateway sessions (handshake clients).
    pub mcp_sessions: Gauge,
    /// Connections closed at accept because a listener was at its cap.
    pub connections_refused: Family<ListenerLabels, Counter>,
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

/// The label of a JSON-RPC method: one of the MCP methods, `-` (none),
/// or `other`.
fn mcp_method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "-",
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    ];
    KNOWN
        .iter()
        .find(|k| **k == method)
        .copied()
        .unwrap_or("other")
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
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
            proxy_requests: Family::default(),
            proxy_upstream_seconds: Family::new_with_constructor(latency_histogram),
            proxy_added_seconds: Family::new_with_constructor(latency_histogram),
            mcp_requests: Family::default(),
            mcp_sessions: Gauge::default(),
            connections_refused: Family::default(),
            registry: Registry::default(),
        };
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
            "warrant_proxy_requests",
            "Egress proxy requests by route and decision",
            m.proxy_requests.clone(),
        );
        registry.register(
            "warrant_proxy_upstream_seconds",
            "Egress proxy: upstream latency to response headers",
            m.proxy_upstream_seconds.clone(),
        );
        registry.register(
            "warrant_proxy_added_seconds",
            "Egress proxy: latency the proxy adds (checks, credential, forwarding)",
            m.proxy_added_seconds.clone(),
        );
        registry.register(
            "warrant_mcp_requests",
            "MCP gateway requests by server, method and decision",
            m.mcp_requests.clone(),
        );
        registry.register(
            "warrant_mcp_sessions",
            "Open MCP gateway sessions",
            m.mcp_sessions.clone(),
        );
        registry.register(
            "warrant_connections_refused",
            "Connections closed at accept because their listener was at its cap",
            m.connections_refused.clone(),
        );
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

    /// Counts a proxied request.
    pub fn proxy_request(&self, route: &str, decision: &str) {
        self.proxy_requests
            .get_or_create(&ProxyLabels {
                route: route.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
    }

    /// Observes an upstream latency.
    pub fn proxy_upstream(&self, route: &str, secs: f64) {
        self.proxy_upstream_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(secs);
    }

    /// Observes the latency the proxy added.
    pub fn proxy_added(&self, route: &str, secs: f64) {
        self.proxy_added_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(secs);
    }

    /// Counts a connection closed because `listener` was full.
    pub fn connection_refused(&self, listener: &str) {
        self.connections_refused
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .inc();
    }

    /// Counts an MCP gateway request. `server` is a configured name (or
    /// `-`); a method the protocol does not define is counted as `other`,
    /// so callers cannot grow the label set.
    pub fn mcp_request(&self, server: &str, method: &str, decision: &str) {
        self.mcp_requests
            .get_or_create(&McpLabels {
                server: server.to_owned(),
                method: mcp_method_label(method).to_owned(),
                decision: decision.to_owned(),
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

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn caller_supplied_methods_do_not_grow_the_label_set() {
        let m = Metrics::new();
        for i in 0..100 {
            m.mcp_request("files", &format!("x{}", "y".repeat(i * 10)), "deny");
        }
        m.mcp_request("files", "tools/call", "allow");
        let text = m.encode();
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(text.contains("method=\"tools/call\""));
        assert!(!text.contains("yyyy"));
        assert!(text.len() < 20_000, "{}", text.len());
    }
}
