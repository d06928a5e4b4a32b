//! Identity health: `GET /admin/v1/health` and the `warrant_identity_health`
//! gauges, from the store and the broker's counters (docs/health.md).

use axum::Json;
use axum::extract::State;
use warrant_core::agent::AgentStatus;
use warrant_core::api::{
    AgentsHealth, AnomalyScore, ApprovalsHealth, Enforcement, GrantsHealth, Health, SecretHealth,
    SecretsHealth, UpstreamHealth,
};
use warrant_core::approval::ApprovalState;
use warrant_core::time::Timestamp;
use warrant_store::StoreError;

use crate::http::auth::Reader;
use crate::http::error::ApiError;
use crate::state::AppState;

const DAY_MS: i64 = 86_400_000;
const MONTH_MS: i64 = 30 * DAY_MS;

/// Owners that name nobody (compared on their letters and digits alone,
/// lower-cased: `N/A`, `tbd.` and `unknown owner` are placeholders too).
const PLACEHOLDER_OWNERS: &[&str] = &[
    "",
    "none",
    "null",
    "nil",
    "unknown",
    "unknownowner",
    "noowner",
    "nobody",
    "na",
    "tbd",
    "todo",
    "unowned",
    "unassigned",
    "x",
    "xx",
    "xxx",
    "changeme",
];

/// Every credential kind a route or MCP server can inject.
const KINDS: &[&str] = &[
    "secret",
    "per_user_secret",
    "basic",
    "mtls",
    "oauth2_client_credentials",
    "warrant_jwt",
];
const EPHEMERAL: &[&str] = &["oauth2_client_credentials", "warrant_jwt"];

pub(crate) async fn handler(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<Health>, ApiError> {
    Ok(Json(compute(&state).await?))
}

/// The figures now.
pub(crate) async fn compute(state: &AppState) -> Result<Health, StoreError> {
    let now = Timestamp::now();
    let ms = now.as_millis();
    let secrets = state.store.list_secrets().await?;
    let mut list: Vec<SecretHealth> = secrets
        .iter()
        .map(|s| SecretHealth {
            name: match &s.owner {
                Some(o) => format!("{}@{o}", s.name),
                None => s.name.to_string(),
            },
            version: s.version,
            rotated_days_ago: u64::try_from((ms - s.updated_at.as_millis()) / DAY_MS).unwrap_or(0),
            last_used_at: s.last_used_at,
        })
        .collect();
    list.sort_by(|a, b| {
        b.rotated_days_ago
            .cmp(&a.rotated_days_ago)
            .then(a.name.cmp(&b.name))
    });
    let unused_30d = secrets
        .iter()
        .filter(|s| {
            let since = s.last_used_at.unwrap_or(s.created_at).as_millis();
            ms - since >= MONTH_MS
        })
        .map(|s| match &s.owner {
            Some(o) => format!("{}@{o}", s.name),
            None => s.name.to_string(),
        })
        .collect();
    let secrets_health = SecretsHealth {
        stored: secrets.len() as u64,
        per_user: secrets.iter().filter(|s| s.owner.is_some()).count() as u64,
        oldest_rotation_days: list.first().map(|s| s.rotated_days_ago),
        unused_30d,
        list,
    };

    let edge = &state.edge_metrics;
    let mut by_kind = std::collections::BTreeMap::new();
    let (mut requests, mut ephemeral) = (0, 0);
    for kind in KINDS {
        let class = if EPHEMERAL.contains(kind) {
            "ephemeral"
        } else {
            "standing"
        };
        let n = edge
            .upstream_credentials
            .get_or_create(&warrant_edge::metrics::CredentialLabels {
                kind: (*kind).to_owned(),
                class: class.to_owned(),
            })
            .get();
        if n > 0 {
            by_kind.insert((*kind).to_owned(), n);
        }
        requests += n;
        if class == "ephemeral" {
            ephemeral += n;
        }
    }
    let share = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);

    let grants = |grant: &str| {
        state
            .metrics
            .token_grants
            .get_or_create(&warrant_control::metrics::GrantLabels {
                grant: grant.to_owned(),
                outcome: "issued".to_owned(),
            })
            .get()
    };
    let (delegated, self_acting) = (grants("token.exchange"), grants("token.self"));

    let agents = state.store.list_agents().await?;
    let mut not_attested_30d = Vec::new();
    for a in agents.iter().filter(|a| a.status == AgentStatus::Active) {
        let last = state
            .store
            .list_instances(&a.name)
            .await?
            .iter()
            .map(|i| i.last_seen.as_millis())
            .max();
        let since = last.unwrap_or(a.created_at.as_millis());
        if ms - since >= MONTH_MS {
            not_attested_30d.push(a.name.to_string());
        }
    }
    let count = |s: AgentStatus| agents.iter().filter(|a| a.status == s).count() as u64;
    let agents_health = AgentsHealth {
        total: agents.len() as u64,
        active: count(AgentStatus::Active),
        disabled: count(AgentStatus::Disabled),
        quarantined: count(AgentStatus::Quarantined),
        without_owner: agents
            .iter()
            .filter(|a| {
                let o: String = a
                    .owner
                    .as_str()
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .flat_map(char::to_lowercase)
                    .collect();
                PLACEHOLDER_OWNERS.contains(&o.as_str())
            })
            .map(|a| a.name.to_string())
            .collect(),
        not_attested_30d,
    };

    let instances_alive = state
        .store
        .live_instances(now)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();

    let enforcement = state
        .metrics
        .enforcement_stats
        .lock()
        .iter()
        .map(|(k, (n, sum, max))| {
            (
                k.clone(),
                Enforcement {
                    count: *n,
                    mean_ms: if *n > 0 {
                        sum * 1000.0 / *n as f64
                    } else {
                        0.0
                    },
                    max_ms: max * 1000.0,
                },
            )
        })
        .collect();

    let pending = state
        .store
        .list_approvals(Some(ApprovalState::Pending), now, 1000)
        .await?;
    let approvals = ApprovalsHealth {
        pending: pending.len() as u64,
        oldest_pending_seconds: pending
            .iter()
            .map(|a| u64::try_from((ms - a.created_at.as_millis()) / 1000).unwrap_or(0))
            .max(),
    };

    Ok(Health {
        generated_at: now,
        secrets: secrets_health,
        upstream: UpstreamHealth {
            requests,
            ephemeral,
            ephemeral_share: share(ephemeral, requests),
            by_kind,
        },
        grants: GrantsHealth {
            delegated,
            self_acting,
            delegated_share: share(delegated, delegated + self_acting),
        },
        agents: agents_health,
        instances_alive,
        enforcement,
        approvals,
        anomalies: state
            .anomaly
            .scores()
            .into_iter()
            .filter(|(_, s)| *s > 0)
            .map(|(agent, score)| AnomalyScore { agent, score })
            .collect(),
    })
}

/// Sets the `warrant_identity_health{figure=...}` gauges from `h`.
pub(crate) fn gauges(state: &AppState, h: &Health) {
    let set = |figure: &str, v: i64| {
        state
            .metrics
            .health
            .get_or_create(&warrant_control::metrics::StateLabels {
                state: figure.to_owned(),
            })
            .set(v);
    };
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    set("secrets_stored", n(h.secrets.stored));
    set("secrets_unused_30d", n(h.secrets.unused_30d.len() as u64));
    set(
        "secret_oldest_rotation_days",
        n(h.secrets.oldest_rotation_days.unwrap_or(0)),
    );
    set(
        "upstream_ephemeral_share_percent",
        h.upstream
            .ephemeral_share
            .map_or(-1, |s| (s * 100.0).round() as i64),
    );
    set(
        "grants_delegated_share_percent",
        h.grants
            .delegated_share
            .map_or(-1, |s| (s * 100.0).round() as i64),
    );
    set(
        "agents_without_owner",
        n(h.agents.without_owner.len() as u64),
    );
    set(
        "agents_not_attested_30d",
        n(h.agents.not_attested_30d.len() as u64),
    );
    set("agents_quarantined", n(h.agents.quarantined));
    set("instances_alive", n(h.instances_alive));
    set("approvals_pending", n(h.approvals.pending));
    set(
        "approvals_oldest_pending_seconds",
        n(h.approvals.oldest_pending_seconds.unwrap_or(0)),
    );
}

/// The most samples kept.
const HISTORY: usize = 1440;

/// The figures a chart follows, from one computation.
fn point(h: &Health) -> warrant_core::api::HealthPoint {
    warrant_core::api::HealthPoint {
        at: h.generated_at,
        secrets_stored: h.secrets.stored,
        ephemeral_share: h.upstream.ephemeral_share,
        delegated_share: h.grants.delegated_share,
        instances_alive: h.instances_alive,
        approvals_pending: h.approvals.pending,
        agents_active: h.agents.active,
        agents_quarantined: h.agents.quarantined,
        agents_anomalous: h.anomalies.len() as u64,
    }
}

/// Samples the figures every `[console] health_sample` until `shutdown`,
/// keeping the last [`HISTORY`].
pub(crate) fn spawn_sampler(
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match compute(&state).await {
                Ok(h) => {
                    let mut kept = state.console.health.lock();
                    if kept.len() >= HISTORY {
                        kept.pop_front();
                    }
                    kept.push_back(point(&h));
                }
                Err(e) => tracing::warn!(error = %e, "cannot sample identity health"),
            }
            let every = state.live.config.load().console.health_sample;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => break,
            }
        }
    })
}

pub(crate) async fn history(
    State(state): State<AppState>,
    _: Reader,
) -> Json<warrant_core::api::HealthHistory> {
    let points = state.console.health.lock().iter().cloned().collect();
    Json(warrant_core::api::HealthHistory {
        interval_seconds: state.live.config.load().console.health_sample.as_secs(),
        points,
    })
}
