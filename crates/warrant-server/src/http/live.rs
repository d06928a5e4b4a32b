//! `/admin/v1/reload`, `/admin/v1/routes`, `/admin/v1/mcp/servers` and
//! `/admin/v1/status`: the configuration in force, and reloading it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use warrant_core::api::{
    BrokerStatus, ClusterMember, ClusterStatus, McpServerInfo, Reloaded, RouteInfo,
};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::time::Timestamp;

use crate::http::auth::{Reader, Writer};
use crate::http::error::ApiError;
use crate::http::error::fail;
use crate::live::{self, ReloadError};
use crate::state::AppState;
use warrant_control::policy::Loaded;
use warrant_core::api::PolicyStatus;

/// The routes, mounted in the admin router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/reload", post(reload))
        .route("/routes", get(list_routes))
        .route("/mcp/servers", get(list_servers))
        .route("/status", get(status))
        .route("/cluster", get(cluster))
}

/// Reloads the configuration, then the policies: what SIGHUP does.
/// Who asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadFrom {
    /// An operator, through this broker (API, socket or SIGHUP): the other
    /// brokers sharing the store are told to reload too.
    Operator,
    /// Another broker's announcement: not announced again.
    Peer,
}

pub(crate) async fn reload_all(
    state: &AppState,
    config_event: AuditEvent,
    policy_event: AuditEvent,
    from: ReloadFrom,
) -> Result<Reloaded, ApiError> {
    // All or nothing: a configuration goes in force only with policies
    // that load (a route added with the `forbid` meant to restrict it must
    // not go live without it).
    let compiled = state.policy.compile_dir().await;
    if let Err(problems) = &compiled {
        return Err(refuse_reload(
            state,
            config_event,
            "invalid_policy",
            format!(
                "nothing was reloaded (configuration and policies stay as they were): the policy directory does not validate:\n{problems}"
            ),
        )
        .await);
    }
    let changes = match live::reload(state, config_event.clone()).await {
        Ok(c) => c,
        Err(e @ ReloadError::Invalid(_)) => {
            return Err(refuse_reload(state, config_event, "invalid_config", e.to_string()).await);
        }
        Err(e @ ReloadError::AuditUnavailable) => {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "audit_unavailable",
                message: e.to_string(),
            });
        }
    };
    // The set checked above, not the files read again: an edit made during
    // the reload cannot separate the configuration from its policies.
    let loaded = match state.policy.put_in_force(compiled, policy_event).await {
        Ok(l) => l,
        Err(warrant_control::policy::ReloadError::Invalid(problems)) => {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_policy",
                message: format!(
                    "the configuration was reloaded, but the policy set was not; the previous set stays in force:\n{problems}"
                ),
            });
        }
        Err(warrant_control::policy::ReloadError::Store(e)) => return Err(e.into()),
    };
    let config = state.live.config.load();
    if from == ReloadFrom::Operator {
        announce_reload(state, loaded.policies.digest()).await;
    }
    Ok(Reloaded {
        config: live::status(&config, *state.live.loaded_at.lock()),
        routes: changes.routes,
        mcp_servers: changes.mcp_servers,
        user_issuers: changes.user_issuers,
        trust_providers: changes.trust_providers,
        restart_needed: changes.restart_needed,
        policy: policy_status(state, &loaded),
    })
}

/// Tells the other brokers sharing the store that an operator reloaded
/// this one: they reload their own files, and each reports the digests it
/// loaded, so a node whose files differ shows (`warrant status`).
pub(crate) async fn announce_reload(state: &AppState, policy_digest: &str) {
    let config = state.live.config.load();
    let note = format!(
        "{} config={} policy={policy_digest}",
        state.broker_id,
        config.digest.as_deref().unwrap_or("none"),
    );
    if let Err(e) = state.store.announce_reload(&note).await {
        tracing::error!(error = %e, "reloaded here, but could not tell the other brokers sharing the store; reload each of them");
    }
}

/// Records a refused reload and answers it: the trail keeps the first line
/// (where and why), never the rest of `message`, which may quote the file (a
/// parser shows the offending line, which may hold a value written by
/// mistake, and the trail is never rewritten); the caller gets it all.
async fn refuse_reload(
    state: &AppState,
    event: AuditEvent,
    code: &'static str,
    message: String,
) -> ApiError {
    let first = message.lines().next().unwrap_or_default().to_owned();
    let recorded = fail(
        state,
        event,
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: first,
        },
    )
    .await;
    if recorded.code != code {
        // The trail itself could not be written: that is the answer.
        return recorded;
    }
    ApiError {
        message,
        ..recorded
    }
}

async fn reload(
    State(state): State<AppState>,
    Writer(caller): Writer,
) -> Result<Json<Reloaded>, ApiError> {
    let config_event = caller
        .event(Kind::ConfigReload, Outcome::Allow)
        .action("config.reload");
    let policy_event = caller.event(Kind::PolicyReload, Outcome::Allow);
    reload_all(&state, config_event, policy_event, ReloadFrom::Operator)
        .await
        .map(Json)
}

async fn list_routes(State(state): State<AppState>, _: Reader) -> Json<Vec<RouteInfo>> {
    Json(
        state
            .proxy
            .routes()
            .into_iter()
            .map(|r| RouteInfo {
                upstream: r.upstream.as_url(),
                audience: r.audience.clone(),
                agent_header: r.agent_header.to_string(),
                credential: r.credential.kind().to_owned(),
                allow: r.allow.iter().map(ToString::to_string).collect(),
                name: r.name,
            })
            .collect(),
    )
}

async fn list_servers(State(state): State<AppState>, _: Reader) -> Json<Vec<McpServerInfo>> {
    use warrant_edge::mcp::config::Transport;
    Json(
        state
            .mcp
            .servers()
            .into_iter()
            .map(|s| {
                let (transport, target) = match &s.config.transport {
                    Transport::Stdio(spec) => ("stdio", spec.command.clone()),
                    Transport::Http { url, .. } => ("http", url.to_string()),
                };
                McpServerInfo {
                    name: s.config.name.clone(),
                    transport: transport.to_owned(),
                    target,
                    audience: s.audience,
                    scope: s.config.scope.as_ref().map(ToString::to_string),
                    tools: s.tools,
                    changed: s.changed,
                    held: s.held,
                    listed: s.listed,
                }
            })
            .collect(),
    )
}

async fn status(State(state): State<AppState>, _: Reader) -> Json<BrokerStatus> {
    let now = Timestamp::now();
    let live = &state.live;
    let config = live.config.load();
    let policies = state.policy.current();
    let mut keys = state.keys.current().status(now);
    // The active key first, then the others newest first.
    keys.sort_by_key(|k| {
        (
            k.state != warrant_token::KeyState::Active,
            std::cmp::Reverse(k.created_at),
        )
    });
    Json(BrokerStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        issuer: state.issuer.to_string(),
        trust_domain: state.trust_domain.to_string(),
        api_addr: live.api_addr.to_string(),
        edge_addr: live.edge_addr.to_string(),
        admin_socket: live.admin_socket.display().to_string(),
        agent_socket: live.agent_socket.display().to_string(),
        store: live.store.clone(),
        started_at: state.started_at,
        uptime_secs: (now.as_secs() - state.started_at.as_secs()).max(0),
        config: live::status(&config, *live.loaded_at.lock()),
        policy_digest: policies.policies.digest().to_owned(),
        policies: policies.policies.ids().count(),
        key_ids: keys.into_iter().map(|k| k.kid).collect(),
        routes: state.proxy.routes().len(),
        mcp_servers: state.mcp.servers().len(),
        broker: state.broker_id.to_string(),
    })
}

/// How long since its last report a broker still counts as live.
const LIVE_WITHIN_MS: i64 = 10_000;

async fn cluster(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(cluster_status(&state).await?))
}

/// Every broker that reported lately, and where they differ.
pub(crate) async fn cluster_status(state: &AppState) -> Result<ClusterStatus, ApiError> {
    let now = Timestamp::now().as_millis();
    let members: Vec<ClusterMember> = state
        .store
        .brokers()
        .await?
        .into_iter()
        .filter(|m| now - m.seen_at.as_millis() <= LIVE_WITHIN_MS)
        .collect();
    Ok(ClusterStatus {
        store: state.live.store.clone(),
        diverged: divergence(&members),
        members,
    })
}

/// What differs between `members`, in words.
pub(crate) fn divergence(members: &[ClusterMember]) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut out = Vec::new();
    let mut differs = |what: &str, key: &dyn Fn(&ClusterMember) -> String| {
        let mut by: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for m in members {
            by.entry(key(m)).or_default().push(&m.broker);
        }
        if by.len() > 1 {
            let groups: Vec<String> = by
                .iter()
                .map(|(v, bs)| format!("{} on {}", v, bs.join(", ")))
                .collect();
            out.push(format!("{what} differ: {}", groups.join("; ")));
        }
    };
    differs("policy digests", &|m| m.policy_digest.clone());
    differs("config digests", &|m| {
        m.config_digest.clone().unwrap_or_else(|| "none".into())
    });
    differs("versions", &|m| m.version.clone());
    for m in members.iter().filter(|m| !m.feed_connected) {
        out.push(format!(
            "{} does not hear the change feed: it refuses task tokens until it does",
            m.broker
        ));
    }
    out
}

/// The policy set in force, as the admin API shows it.
pub(crate) fn policy_status(state: &AppState, loaded: &Loaded) -> PolicyStatus {
    PolicyStatus {
        dir: state.policy.dir().display().to_string(),
        policies: loaded.policies.ids().map(str::to_owned).collect(),
        files: loaded.policies.files().to_vec(),
        digest: loaded.policies.digest().to_owned(),
        loaded_at: loaded.loaded_at,
        warnings: loaded
            .policies
            .warnings()
            .0
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}
