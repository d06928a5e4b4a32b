//! The edge's metrics: proxied requests, MCP requests and sessions, and the
//! latency the proxy adds. warrant-server registers them with the broker's
//! other metrics, so one `/metrics` shows all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

/// The edge's metric families.
#[derive(Debug)]
pub struct EdgeMetrics {
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
    /// Upstream requests by the kind of credential injected, and whether
    /// it is ephemeral or standing.
    pub upstream_credentials: Family<CredentialLabels, Counter>,
}

/// Labels: a credential kind and its class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// `secret`, `warrant_jwt`, ...
    pub kind: String,
    /// `ephemeral` or `standing`.
    pub class: String,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self {
            proxy_requests: Family::default(),
            proxy_upstream_seconds: Family::new_with_constructor(latency_histogram),
            proxy_added_seconds: Family::new_with_constructor(latency_histogram),
            mcp_requests: Family::default(),
            mcp_sessions: Gauge::default(),
            upstream_credentials: Family::default(),
        }
    }
}

impl EdgeMetrics {
    /// Adds every family to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "warrant_upstream_requests_by_credential",
            "Upstream requests by the credential injected: kind, and class (ephemeral: minted per use; standing: a stored key sent as is)",
            m.upstream_credentials.clone(),
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

    /// Counts an upstream request by the credential injected.
    pub fn upstream_credential(&self, c: &crate::credential::config::Credential) {
        self.upstream_credentials
            .get_or_create(&CredentialLabels {
                kind: c.kind().to_owned(),
                class: if c.is_ephemeral() {
                    "ephemeral"
                } else {
                    "standing"
                }
                .to_owned(),
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
}

#[cfg(test)]
mod label_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn caller_supplied_methods_do_not_grow_the_label_set() {
        let m = EdgeMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        for i in 0..100 {
            m.mcp_request("files", &format!("x{}", "y".repeat(i * 10)), "deny");
        }
        m.mcp_request("files", "tools/call", "allow");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(text.contains("method=\"tools/call\""));
        assert!(!text.contains("yyyy"));
        assert!(text.len() < 20_000, "{}", text.len());
    }
}
