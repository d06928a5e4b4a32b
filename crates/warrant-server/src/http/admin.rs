//! The admin API: inventory, keys, admin tokens, audit trail, policy.
//!
//! Each handler states the permission it needs in its signature ([`Reader`] or
//! [`Writer`]). Input arrives as plain strings and is validated here, so every
//! refusal is audited in one way: a record of the attempted action with outcome
//! `error` and the reason. A change's own record is written in the same commit
//! as the change.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use warrant_core::admin::{AdminTokenRecord, AdminTokenSecret, Role};
use warrant_core::agent::{Agent, AgentStatus, NewAgent, TrustLevel, check_max_ttl};
use warrant_core::api::{
    AuditList, AuditListQuery, AuditVerification, CreateAdminToken, CreateAgent, CreatedAdminToken,
    KeyInfo, PolicyCheck, PolicyCheckResult, PolicyStatus, RotateKeys,
};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::decision::{
    Action, AgentFacts, Context, DecisionRequest, HttpFacts, Principal, Resource, UserRef,
};
use warrant_core::keys::Alg;
use warrant_core::name::{AgentName, EnvName};
use warrant_core::selector::SelectorSet;
use warrant_core::text::shown;
use warrant_core::text::{Owner, Purpose};
use warrant_core::time::{Timestamp, Ttl};
use warrant_store::AuditQuery;

use crate::http::auth::{Reader, Writer};
use crate::http::error::{ApiError, fail};
use crate::http::live::policy_status;
use crate::state::AppState;
use warrant_control::keys::{JWKS_MAX_AGE, MAX_ACTIVATE_IN};
use warrant_control::policy::ReloadError;

/// The admin API's routes (mounted under `/admin/v1`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/agents", get(list_agents).post(create_agent))
        .route("/agents/{name}", get(show_agent).delete(delete_agent))
        .route("/agents/{name}/enable", post(enable_agent))
        .route("/agents/{name}/disable", post(disable_agent))
        .route("/agents/{name}/quarantine", post(quarantine_agent))
        .route("/agents/{name}/release", post(release_agent))
        .route("/anomalies", get(list_anomalies))
        .route("/health", get(super::health::handler))
        .route("/health/history", get(super::health::history))
        .route("/audit/stream", get(super::stream::audit_stream))
        .route("/policy/source", get(policy_source))
        .route("/console/sessions", get(list_console_sessions))
        .route("/console/sessions/end", post(end_console_sessions))
        .route("/agents/{name}/instances", get(list_instances))
        .route("/agents/{name}/join-tokens", post(create_join_token))
        .route("/discovered", get(list_discovered))
        .route("/revoke", post(revoke))
        .route("/dev/user-token", post(dev_user_token))
        .route("/keys", get(list_keys))
        .route("/keys/rotate", post(rotate_keys))
        .route("/admin-tokens", get(list_tokens).post(create_token))
        .route("/admin-tokens/{id}", delete(revoke_token))
        .route("/audit", get(list_audit))
        .route(
            "/audit/verify",
            get(verify_audit).post(verify_audit_against),
        )
        .route(
            "/audit/checkpoints",
            get(list_checkpoints).post(make_checkpoint),
        )
        .route("/audit/trace/{txn}", get(trace_audit))
        .route(
            "/audit/verify-export",
            post(verify_export).layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024)),
        )
        .route("/policy", get(policy_status_handler))
        .route("/policy/reload", post(reload_policy))
        .route("/policy/check", post(check_policy))
        .route(
            "/policy/validate",
            post(validate_policy).layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024)),
        )
        .merge(super::secrets::routes())
        .merge(super::mcp_admin::routes())
        .merge(super::approvals::routes())
        .merge(super::live::routes())
        .fallback(|| async { ApiError::not_found("no such admin endpoint; see `warrant --help`") })
        .with_state(state)
}

type ApiResult<T> = Result<T, ApiError>;

async fn body<T: DeserializeOwned>(
    state: &AppState,
    attempt: &AuditEvent,
    b: Result<Json<T>, JsonRejection>,
) -> ApiResult<T> {
    match b {
        Ok(Json(v)) => Ok(v),
        Err(r) => Err(fail(
            state,
            attempt.clone(),
            ApiError::invalid(format!("the request body is not valid: {}", r.body_text())),
        )
        .await),
    }
}

fn agent_name(raw: &str) -> Result<AgentName, ApiError> {
    AgentName::new(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

/// What a set of selectors must say beyond being well formed: unix
/// selectors pin the user; platform-token selectors name the trust provider
/// whose tokens they are about. (The
/// provider need not be configured yet: an agent may be registered before
/// its platform is trusted; until then it matches nothing.)
fn check_selector_rules(set: &SelectorSet, providers: &[&str]) -> Result<(), String> {
    use warrant_core::selector::SelectorKind;
    let platform = set
        .iter()
        .any(|s| matches!(s.kind(), SelectorKind::Oidc | SelectorKind::K8s));
    let provider = set
        .iter()
        .find(|s| s.kind() == SelectorKind::Oidc && s.key() == "provider");
    let unix = set.iter().any(|s| s.kind() == SelectorKind::Unix);
    let user = set
        .iter()
        .any(|s| s.kind() == SelectorKind::Unix && matches!(s.key(), "uid" | "user"));
    if unix && !user {
        return Err("unix selectors must pin the user the agent runs as (`unix:uid=<uid>` or `unix:user=<name>`): a program's path or hash alone names a program any local user could run, and processes of one user can read each other's memory".into());
    }
    match (platform, provider) {
        (false, _) => Ok(()),
        (true, None) => Err(format!(
            "selectors on platform tokens must name the [[trust_provider]] whose tokens they are about: add `oidc:provider=<name>` (configured: {})",
            if providers.is_empty() {
                "none".to_owned()
            } else {
                providers.join(", ")
            }
        )),
        (true, Some(_)) => Ok(()),
    }
}

/// Validates every field of a create request, reporting all problems at once.
fn validate_agent(req: CreateAgent, providers: &[&str]) -> Result<NewAgent, ApiError> {
    let mut problems = Vec::new();
    let name = AgentName::new(req.name)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let owner = Owner::new(req.owner)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let env = EnvName::new(req.env)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let purpose = Purpose::new(req.purpose.unwrap_or_default())
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let trust = match req.trust {
        None => Some(TrustLevel::default()),
        Some(t) => t.parse::<TrustLevel>().map_err(|e| problems.push(e)).ok(),
    };
    let selectors = SelectorSet::parse(&req.selectors)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    if let Some(set) = &selectors
        && let Err(e) = check_selector_rules(set, providers)
    {
        problems.push(e);
    }
    let max_ttl = match req.max_ttl {
        None => Some(warrant_core::agent::DEFAULT_MAX_TTL),
        Some(t) => t
            .parse::<Ttl>()
            .and_then(check_max_ttl)
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
    };
    match (name, owner, env, purpose, trust, selectors, max_ttl) {
        (
            Some(name),
            Some(owner),
            Some(env),
            Some(purpose),
            Some(trust),
            Some(selectors),
            Some(max_ttl),
        ) if problems.is_empty() => Ok(NewAgent {
            name,
            owner,
            env,
            purpose,
            trust,
            selectors,
            max_ttl,
        }),
        _ if problems.len() == 1 => Err(ApiError::invalid(problems.remove(0))),
        _ => Err(ApiError::invalid(format!(
            "the agent is not valid:\n  - {}",
            problems.join("\n  - ")
        ))),
    }
}

fn agent_detail(a: &Agent) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "owner": a.owner,
        "env": a.env,
        "purpose": a.purpose,
        "trust": a.trust,
        "selectors": a.selectors,
        "max_ttl": a.max_ttl,
        "status": a.status,
    })
}

async fn list_agents(State(state): State<AppState>, _: Reader) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(state.store.list_agents().await?))
}

async fn create_agent(
    State(state): State<AppState>,
    Writer(caller): Writer,
    b: Result<Json<CreateAgent>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    let attempt = caller
        .event(Kind::AdminAgentCreate, Outcome::Allow)
        .action("agent.create");
    let req = body(&state, &attempt, b).await?;
    let attempt = attempt.resource(format!("Agent::\"{}\"", shown(&req.name, 100)));
    let new = match validate_agent(req, &state.attest.oidc().names()) {
        Ok(n) => n,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    let agent = Agent::from_new(
        format!("agt_{}", warrant_host::random::hex_id(12)?),
        new,
        Timestamp::now(),
    );
    let event = attempt
        .clone()
        .agent(agent.name.to_string())
        .detail(agent_detail(&agent));
    match state.store.create_agent(agent, event).await {
        Ok(a) => {
            tracing::info!(agent = %a.name, actor = %caller.actor, "agent registered");
            if let Some(w) = a.selectors.interpreter_warning() {
                tracing::warn!(agent = %a.name, "{w}");
            }
            Ok((StatusCode::CREATED, Json(a)))
        }
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

async fn show_agent(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
) -> ApiResult<Json<Agent>> {
    let name = agent_name(&name)?;
    match state.store.get_agent(&name).await? {
        Some(a) => Ok(Json(a)),
        None => Err(ApiError::not_found(format!(
            "agent `{name}` does not exist; `warrant agent list` shows the inventory"
        ))),
    }
}

async fn set_status(
    state: AppState,
    caller: crate::http::auth::Caller,
    raw: String,
    status: AgentStatus,
    kind: Kind,
    action: &str,
) -> ApiResult<Json<Agent>> {
    let attempt = caller
        .event(kind, Outcome::Allow)
        .action(action)
        .resource(format!("Agent::\"{}\"", shown(&raw, 100)));
    let name = match agent_name(&raw) {
        Ok(n) => n,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    let event = attempt
        .clone()
        .agent(name.to_string())
        .detail(serde_json::json!({ "status": status }));
    match state
        .store
        .set_agent_status(&name, status, Timestamp::now(), event)
        .await
    {
        Ok(a) => Ok(Json(a)),
        Err(e) => Err(fail(&state, attempt.agent(name.to_string()), e.into()).await),
    }
}

async fn enable_agent(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
) -> ApiResult<Json<Agent>> {
    let tokens = state.tokens.clone();
    // A quarantine is lifted by release, which also resets the detector's
    // signals for the agent; enable would leave it acted on and silent.
    if let Ok(n) = agent_name(&name)
        && let Ok(Some(a)) = state.store.get_agent(&n).await
        && a.status == AgentStatus::Quarantined
    {
        let attempt = caller
            .event(Kind::AdminAgentEnable, Outcome::Allow)
            .action("agent.enable")
            .agent(n.to_string());
        let e = ApiError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: format!(
                "agent `{n}` is quarantined; `warrant agent release {n}` lifts a quarantine (and resets its anomaly signals)"
            ),
        };
        return Err(fail(&state, attempt, e).await);
    }
    let r = set_status(
        state,
        caller,
        name,
        AgentStatus::Active,
        Kind::AdminAgentEnable,
        "agent.enable",
    )
    .await?;
    // Enabling lifts `revoke --instance` blocks of its instances.
    tokens.reload_blocks().await?;
    Ok(r)
}

async fn dev_user_token(
    State(state): State<AppState>,
    Writer(caller): Writer,
    b: Result<Json<warrant_core::api::CreateDevUserToken>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<warrant_core::api::CreatedDevUserToken>)> {
    let attempt = caller
        .event(Kind::AdminDevUserToken, Outcome::Allow)
        .action("dev.user-token");
    let Some(dev) = state.dev.clone() else {
        let e = ApiError::not_found(
            "the development user issuer is off; start the broker with `warrant serve --dev` (never in production)",
        );
        return Err(fail(&state, attempt, e).await);
    };
    let req = body(&state, &attempt, b).await?;
    let ok =
        |s: &str, max: usize| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control);
    if !ok(&req.user, 128) || req.groups.len() > 32 || !req.groups.iter().all(|g| ok(g, 64)) {
        let e = ApiError::invalid(
            "user is 1-128 characters and groups at most 32 of 1-64 characters, without control characters",
        );
        return Err(fail(&state, attempt, e).await);
    }
    let ttl = match req.ttl.as_deref().map(str::parse::<Ttl>).transpose() {
        Ok(t) => t.unwrap_or(Ttl::from_secs(3600)),
        Err(e) => return Err(fail(&state, attempt, ApiError::invalid(e.to_string())).await),
    };
    if let Err(e) = ttl.within("ttl", Ttl::from_secs(10), Ttl::from_secs(86_400)) {
        return Err(fail(&state, attempt, ApiError::invalid(e.to_string())).await);
    }
    let (token, expires_at) = dev
        .mint(&req.user, &req.groups, ttl.as_secs())
        .map_err(ApiError::internal)?;
    let user = warrant_core::user::Namespace::development()
        .user(&req.user)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let event = attempt
        .clone()
        .user(format!("user:{user}"))
        .credential_type("dev_user_token")
        .expires(expires_at)
        .detail(serde_json::json!({ "groups": req.groups }));
    if let Err(e) = state.store.append_audit(event).await {
        return Err(fail(&state, attempt, e.into()).await);
    }
    Ok((
        StatusCode::CREATED,
        Json(warrant_core::api::CreatedDevUserToken {
            token,
            user: user.to_string(),
            issuer: dev.issuer.clone(),
            expires_at,
        }),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    Writer(caller): Writer,
    b: Result<Json<warrant_core::task::RevokeTarget>, JsonRejection>,
) -> ApiResult<Json<warrant_core::api::Revoked>> {
    let attempt = caller
        .event(Kind::AdminRevoke, Outcome::Allow)
        .action("revoke");
    let target = body(&state, &attempt, b).await?;
    let id = match &target {
        warrant_core::task::RevokeTarget::Jti(v)
        | warrant_core::task::RevokeTarget::Task(v)
        | warrant_core::task::RevokeTarget::Txn(v)
        | warrant_core::task::RevokeTarget::Instance(v)
        | warrant_core::task::RevokeTarget::Agent(v) => v.clone(),
    };
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(fail(
            &state,
            attempt,
            ApiError::invalid("the id to revoke is empty, too long or has control characters"),
        )
        .await);
    }
    let mut event = attempt.clone().resource(target.to_string());
    match &target {
        warrant_core::task::RevokeTarget::Task(t) => event = event.task(t.clone()),
        warrant_core::task::RevokeTarget::Txn(t) => event = event.txn(t.clone()),
        warrant_core::task::RevokeTarget::Instance(i) => event = event.instance(i.clone()),
        warrant_core::task::RevokeTarget::Agent(a) => event = event.agent(a.clone()),
        warrant_core::task::RevokeTarget::Jti(j) => event = event.credential_id(j.clone()),
    }
    let started = std::time::Instant::now();
    match state.tokens.revoke(target.clone(), event).await {
        Ok(tasks) => {
            state.metrics.tasks_revoked.inc_by(tasks.len() as u64);
            state
                .metrics
                .enforced("revoke", started.elapsed().as_secs_f64());
            Ok(Json(warrant_core::api::Revoked {
                target: target.to_string(),
                tasks,
                micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            }))
        }
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

async fn quarantine_agent(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(raw): Path<String>,
) -> ApiResult<Json<Agent>> {
    let attempt = caller
        .event(Kind::AdminAgentQuarantine, Outcome::Allow)
        .action("agent.quarantine")
        .resource(format!("Agent::\"{}\"", shown(&raw, 100)));
    let name = match agent_name(&raw) {
        Ok(n) => n,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    let event = attempt.clone().agent(name.to_string());
    match crate::governance::quarantine(&state, &name, event).await {
        Ok(a) => Ok(Json(a)),
        Err(e) => Err(fail(&state, attempt.agent(name.to_string()), e.into()).await),
    }
}

async fn release_agent(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(raw): Path<String>,
) -> ApiResult<Json<Agent>> {
    let attempt = caller
        .event(Kind::AdminAgentRelease, Outcome::Allow)
        .action("agent.release")
        .resource(format!("Agent::\"{}\"", shown(&raw, 100)));
    let name = match agent_name(&raw) {
        Ok(n) => n,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    let event = attempt.clone().agent(name.to_string());
    match crate::governance::release(&state, &name, event).await {
        Ok(a) => Ok(Json(a)),
        Err(e) => Err(fail(&state, attempt.agent(name.to_string()), e.into()).await),
    }
}

/// Every agent's anomaly score now, highest first.
async fn list_anomalies(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    Ok(Json(
        state
            .anomaly
            .scores()
            .into_iter()
            .map(|(agent, score)| serde_json::json!({ "agent": agent, "score": score }))
            .collect(),
    ))
}

async fn disable_agent(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
) -> ApiResult<Json<Agent>> {
    set_status(
        state,
        caller,
        name,
        AgentStatus::Disabled,
        Kind::AdminAgentDisable,
        "agent.disable",
    )
    .await
}

async fn delete_agent(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(raw): Path<String>,
) -> ApiResult<Json<Agent>> {
    let attempt = caller
        .event(Kind::AdminAgentDelete, Outcome::Allow)
        .action("agent.delete")
        .resource(format!("Agent::\"{}\"", shown(&raw, 100)));
    let name = match agent_name(&raw) {
        Ok(n) => n,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    let attempt = attempt.agent(name.to_string());
    match state.store.delete_agent(&name, attempt.clone()).await {
        Ok(a) => Ok(Json(a)),
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

fn key_infos(state: &AppState) -> Vec<KeyInfo> {
    state
        .keys
        .current()
        .status(Timestamp::now())
        .into_iter()
        .map(|s| KeyInfo {
            kid: s.kid,
            alg: s.alg,
            state: serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            created_at: s.created_at,
            activates_at: s.activates_at,
            retired_at: s.retired_at,
            published_until: s.published_until,
        })
        .collect()
}

async fn list_keys(State(state): State<AppState>, _: Reader) -> ApiResult<Json<Vec<KeyInfo>>> {
    Ok(Json(key_infos(&state)))
}

async fn rotate_keys(
    State(state): State<AppState>,
    Writer(caller): Writer,
    b: Result<Json<RotateKeys>, JsonRejection>,
) -> ApiResult<Json<KeyInfo>> {
    let attempt = caller
        .event(Kind::AdminKeyRotate, Outcome::Allow)
        .action("key.rotate");
    let req = body(&state, &attempt, b).await?;
    let alg = match req.alg.as_deref().map(str::parse::<Alg>).transpose() {
        Ok(a) => a,
        Err(e) => return Err(fail(&state, attempt, ApiError::invalid(e)).await),
    };
    let activate_in = match req
        .activate_in
        .as_deref()
        .map(str::parse::<Ttl>)
        .transpose()
    {
        Ok(None) => JWKS_MAX_AGE,
        Ok(Some(t)) if t.as_duration() <= MAX_ACTIVATE_IN => t.as_duration(),
        Ok(Some(t)) => {
            return Err(fail(
                &state,
                attempt,
                ApiError::invalid(format!("activate-in `{t}` is too long; at most 7d")),
            )
            .await);
        }
        Err(e) => return Err(fail(&state, attempt, ApiError::invalid(e.to_string())).await),
    };
    match state.keys.rotate(alg, activate_in, attempt.clone()).await {
        Ok(status) => Ok(Json(
            key_infos(&state)
                .into_iter()
                .find(|k| k.kid == status.kid)
                .ok_or_else(|| ApiError::internal("the new key is missing"))?,
        )),
        Err(warrant_control::keys::KeyServiceError::Store(e)) => {
            Err(fail(&state, attempt, e.into()).await)
        }
        Err(e) => Err(fail(&state, attempt, ApiError::failed("key rotation", &e)).await),
    }
}

const DEFAULT_ADMIN_TOKEN_TTL: Ttl = Ttl::from_secs(24 * 3600);
const MAX_ADMIN_TOKEN_TTL: Ttl = Ttl::from_secs(90 * 86_400);

async fn create_token(
    State(state): State<AppState>,
    Writer(caller): Writer,
    b: Result<Json<CreateAdminToken>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedAdminToken>)> {
    let attempt = caller
        .event(Kind::AdminTokenCreate, Outcome::Allow)
        .action("admin-token.create");
    let req = body(&state, &attempt, b).await?;
    let role = match req.role.parse::<Role>() {
        Ok(r) => r,
        Err(e) => return Err(fail(&state, attempt, ApiError::invalid(e)).await),
    };
    let ttl = match req.ttl.as_deref().map(str::parse::<Ttl>).transpose() {
        Ok(t) => t.unwrap_or(DEFAULT_ADMIN_TOKEN_TTL),
        Err(e) => return Err(fail(&state, attempt, ApiError::invalid(e.to_string())).await),
    };
    if let Err(e) = ttl.within("ttl", Ttl::from_secs(60), MAX_ADMIN_TOKEN_TTL) {
        return Err(fail(&state, attempt, ApiError::invalid(e.to_string())).await);
    }
    if let Some(n) = &req.name
        && (n.chars().count() > 64 || n.chars().any(char::is_control))
    {
        let e = ApiError::invalid("name is at most 64 characters without control characters");
        return Err(fail(&state, attempt, e).await);
    }
    if let Some(p) = &req.person
        && (p.trim() != p || p.chars().any(char::is_control))
    {
        let e = ApiError::invalid(
            "person has leading or trailing spaces or control characters; write it exactly as users are recorded",
        );
        return Err(fail(&state, attempt, e).await);
    }
    let person = match req
        .person
        .as_deref()
        .map(|p| warrant_core::user::UserId::parse(p.strip_prefix("user:").unwrap_or(p)))
    {
        None => None,
        Some(Ok(u)) => Some(format!("user:{}", u.as_str())),
        Some(Err(e)) => {
            let e = ApiError::invalid(format!(
                "person: {e}; name the holder as users are recorded, `<namespace>/<subject>` (see `warrant audit list --user`)"
            ));
            return Err(fail(&state, attempt, e).await);
        }
    };
    let random = warrant_host::random::bytes::<32>()?;
    let secret = AdminTokenSecret::from_random(random);
    let now = Timestamp::now();
    let record = AdminTokenRecord {
        id: format!("adt_{}", warrant_host::random::hex_id(8)?),
        token_hash: secret.hash(),
        role,
        name: req.name,
        created_by: caller.actor.clone(),
        created_at: now,
        expires_at: now + ttl.as_duration(),
        revoked_at: None,
        person,
    };
    // The record names the token by id; the token itself is never recorded.
    let event = attempt
        .clone()
        .credential_type("admin_token")
        .credential_id(record.id.clone())
        .expires(record.expires_at)
        .detail(serde_json::json!({ "role": role, "name": record.name, "person": record.person }));
    match state.store.create_admin_token(record.clone(), event).await {
        Ok(()) => Ok((
            StatusCode::CREATED,
            Json(CreatedAdminToken {
                id: record.id,
                token: secret.expose().to_owned(),
                role,
                expires_at: record.expires_at,
            }),
        )),
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

/// The default and longest lifetimes of a join token.
const DEFAULT_JOIN_TTL: Ttl = Ttl::from_secs(600);
const MAX_JOIN_TTL: Ttl = Ttl::from_secs(7 * 86_400);

async fn create_join_token(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    b: Result<Json<warrant_core::api::CreateJoinToken>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<warrant_core::api::CreatedJoinToken>)> {
    let attempt = caller
        .event(Kind::AdminJoinToken, Outcome::Allow)
        .action("agent.join-token")
        .resource(format!("Agent::{:?}", shown(&name, 100)));
    let req = body(&state, &attempt, b).await?;
    let name = match agent_name(&name) {
        Ok(n) => n,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    let attempt = attempt.agent(name.to_string());
    let ttl = match req.ttl.as_deref().map(str::parse::<Ttl>).transpose() {
        Ok(t) => t.unwrap_or(DEFAULT_JOIN_TTL),
        Err(e) => return Err(fail(&state, attempt, ApiError::invalid(e.to_string())).await),
    };
    if let Err(e) = ttl.within("ttl", Ttl::from_secs(10), MAX_JOIN_TTL) {
        return Err(fail(&state, attempt, ApiError::invalid(e.to_string())).await);
    }
    match state.store.get_agent(&name).await? {
        Some(_) => {}
        None => {
            let e = ApiError::not_found(format!(
                "agent `{name}` does not exist; register it first with `warrant agent create`"
            ));
            return Err(fail(&state, attempt, e).await);
        }
    }
    let random = warrant_host::random::bytes::<32>()?;
    let secret = warrant_core::identity::JoinTokenSecret::from_random(random);
    let now = Timestamp::now();
    let record = warrant_core::identity::JoinTokenRecord {
        id: format!("jt_{}", warrant_host::random::hex_id(8)?),
        token_hash: secret.hash(),
        agent: name.clone(),
        created_by: caller.actor.clone(),
        created_at: now,
        expires_at: now + ttl.as_duration(),
        redeemed_at: None,
    };
    let event = attempt
        .clone()
        .credential_type("join_token")
        .credential_id(record.id.clone())
        .expires(record.expires_at);
    match state.store.create_join_token(record.clone(), event).await {
        Ok(()) => Ok((
            StatusCode::CREATED,
            Json(warrant_core::api::CreatedJoinToken {
                id: record.id,
                token: secret.expose().to_owned(),
                agent: name.to_string(),
                expires_at: record.expires_at,
            }),
        )),
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

async fn list_instances(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<warrant_core::identity::Instance>>> {
    let name = agent_name(&name)?;
    if state.store.get_agent(&name).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "agent `{name}` does not exist; `warrant agent list` shows the inventory"
        )));
    }
    Ok(Json(state.store.list_instances(&name).await?))
}

async fn list_tokens(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Json<Vec<AdminTokenRecord>>> {
    Ok(Json(state.store.list_admin_tokens().await?))
}

async fn revoke_token(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<String>,
) -> ApiResult<Json<AdminTokenRecord>> {
    let attempt = caller
        .event(Kind::AdminTokenRevoke, Outcome::Allow)
        .action("admin-token.revoke")
        .credential_type("admin_token")
        .credential_id(shown(&id, 100));
    let well_formed = id
        .strip_prefix("adt_")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(fail(&state, attempt, ApiError::invalid(format!("`{}` is not an admin token id (adt_ and 16 hex digits); `warrant admin-token list` shows them", shown(&id, 100)))).await);
    }
    match state
        .store
        .revoke_admin_token(&id, Timestamp::now(), attempt.clone())
        .await
    {
        Ok(t) => Ok(Json(t)),
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

/// Parses `--since`: an RFC 3339 time, or a duration meaning that long ago.
fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    if let Ok(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    s.parse::<Ttl>()
        .map(|d| now - d.as_duration())
        .map_err(|_| {
            ApiError::invalid(format!(
                "since `{}` is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration (1h)",
                shown(s, 100)
            ))
        })
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoveredQuery {
    since: Option<String>,
}

/// `GET /discovered`: workloads that tried to attest and matched no agent
/// (from the attestation refusals in the audit trail, newest 10,000 of the
/// period), with the command that would register each.
async fn list_discovered(
    State(state): State<AppState>,
    _: Reader,
    q: Result<Query<DiscoveredQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<warrant_core::discovery::Candidate>>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let now = Timestamp::now();
    let since = parse_since(q.since.as_deref().unwrap_or("30d"), now)?;
    let query = AuditQuery {
        agent: None,
        event: Some("attest".into()),
        since: Some(since),
        limit: 10_000,
        user: None,
        task: None,
        txn: None,
        decision: None,
    };
    let records = state.store.list_audit(&query).await?;
    Ok(Json(warrant_core::discovery::candidates(&records)))
}

/// Verifies part of an audit export (lines as a sink wrote them, in order):
/// each record's keyed hash over its exact body, the links between them,
/// that the first continues the broker's chain and the last is the
/// broker's record of that number.
async fn verify_export(
    State(state): State<AppState>,
    _: Reader,
    b: Result<Json<warrant_core::api::VerifyExport>, JsonRejection>,
) -> ApiResult<Json<warrant_core::api::ExportVerification>> {
    use warrant_core::api::{BrokenRecord, ExportVerification};
    use warrant_core::audit::{ChainHash, ChainVerifier, StoredRow};
    let Json(b) = b.map_err(|r| {
        ApiError::invalid(format!("the request body is not valid: {}", r.body_text()))
    })?;
    let mut rows = Vec::new();
    for (i, line) in b.lines.iter().enumerate() {
        let row = StoredRow::from_export_line(line)
            .map_err(|e| ApiError::invalid(format!("line {}: {e}", i + 1)))?;
        rows.push(row);
    }
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(ApiError::invalid("no exported records given"));
    };
    let (first_seq, last_seq) = (first.seq, last.seq);
    let broken = |seq: u64, why: String, verified: u64, head: String| ExportVerification {
        ok: false,
        verified,
        first_seq,
        last_seq,
        head,
        broker_last_seq: 0,
        broken: Some(BrokenRecord { seq, why }),
    };
    let prev = if first_seq <= 1 {
        Some(ChainHash::GENESIS)
    } else {
        state.store.audit_hash(first_seq - 1).await?
    };
    let Some(prev) = prev else {
        return Ok(Json(broken(
            first_seq,
            format!(
                "the broker has no record {} for it to follow",
                first_seq - 1
            ),
            0,
            String::new(),
        )));
    };
    let mut v = ChainVerifier::keyed_from(state.chain_key.clone(), first_seq, prev);
    for (n, row) in rows.iter().enumerate() {
        if let Err(b) = v.push(row) {
            return Ok(Json(broken(b.seq, b.why, n as u64, v.head().to_string())));
        }
    }
    let stored = state.store.audit_hash(last_seq).await?;
    if stored.as_ref().map(|h| h.0.as_slice()) != Some(last.hash.as_slice()) {
        return Ok(Json(broken(
            last_seq,
            "it differs from the broker's record of that number (or the broker has none)".into(),
            rows.len() as u64,
            v.head().to_string(),
        )));
    }
    let broker_last_seq = state.store.audit_head().await?.map_or(0, |(seq, _)| seq);
    Ok(Json(ExportVerification {
        ok: true,
        verified: rows.len() as u64,
        first_seq,
        last_seq,
        head: v.head().to_string(),
        broker_last_seq,
        broken: None,
    }))
}

async fn list_audit(
    State(state): State<AppState>,
    _: Reader,
    q: Result<Query<AuditListQuery>, QueryRejection>,
) -> ApiResult<Json<AuditList>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit {limit} is out of range; use 1 to 10000"
        )));
    }
    if let Some(d) = &q.decision
        && !["allow", "deny", "pending", "error"].contains(&d.as_str())
    {
        return Err(ApiError::invalid(format!(
            "decision `{}` is none of allow, deny, pending, error",
            shown(d, 32)
        )));
    }
    let query = AuditQuery {
        decision: q.decision,
        agent: q.agent,
        event: q.event,
        since: q
            .since
            .as_deref()
            .map(|s| parse_since(s, Timestamp::now()))
            .transpose()?,
        limit,
        // Users are recorded as `user:<namespace>/<subject>`; the id without
        // the `user:` prefix is accepted.
        user: q.user.map(|u| {
            if u.starts_with("user:") || u.starts_with("spiffe://") {
                u
            } else {
                format!("user:{u}")
            }
        }),
        task: q.task,
        txn: q.txn,
    };
    Ok(Json(AuditList {
        records: state.store.list_audit(&query).await?,
    }))
}

async fn trace_audit(
    State(state): State<AppState>,
    _: Reader,
    Path(id): Path<String>,
) -> ApiResult<Json<warrant_core::api::AuditTrace>> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid("the transaction or task id is not valid"));
    }
    // A task id traces the whole transaction it belongs to.
    let txn = match state.store.get_task(&id).await? {
        Some(task) => task.txn,
        None => id,
    };
    let tasks = state.store.tasks_of_txn(&txn).await?;
    let records = state
        .store
        .list_audit(&AuditQuery {
            txn: Some(txn.clone()),
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    if tasks.is_empty() && records.is_empty() {
        return Err(ApiError::not_found(format!(
            "no transaction or task `{}`; `warrant audit list --event token` shows recent grants with their task and txn",
            shown(&txn, 100)
        )));
    }
    Ok(Json(warrant_core::api::AuditTrace {
        txn,
        tasks,
        records,
    }))
}

async fn verify_audit(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> ApiResult<Json<AuditVerification>> {
    verify_with(&state, caller, Vec::new()).await
}

async fn verify_audit_against(
    State(state): State<AppState>,
    Reader(caller): Reader,
    b: Result<Json<warrant_core::api::AuditVerify>, JsonRejection>,
) -> ApiResult<Json<AuditVerification>> {
    let Json(req) = b.map_err(|e| {
        ApiError::invalid(format!(
            "the body must be {{\"checkpoints\": [\"<signed checkpoint>\", ...]}}: {}",
            e.body_text()
        ))
    })?;
    if req.checkpoints.len() > 1000 {
        return Err(ApiError::invalid("at most 1000 checkpoints at once"));
    }
    verify_with(&state, caller, req.checkpoints).await
}

/// Verifies the chain, then every stored checkpoint and `given` ones
/// against it; audited either way.
async fn verify_with(
    state: &AppState,
    caller: crate::http::auth::Caller,
    given: Vec<String>,
) -> ApiResult<Json<AuditVerification>> {
    // One verification at a time: each reads the whole trail, so a loop of
    // them costs at most one reader's work.
    static VERIFYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = VERIFYING.lock().await;
    let report = state.store.verify_audit().await?;
    let stored = state.store.list_checkpoints(1000).await?;
    let mut checks = Vec::new();
    for signed in stored.into_iter().map(|c| c.signed).chain(given) {
        checks.push(
            warrant_control::checkpoints::check(&state.store, &state.keys, &state.issuer, &signed)
                .await?,
        );
    }
    let out = AuditVerification {
        ok: report.broken.is_none() && checks.iter().all(|c| c.ok),
        verified: report.verified,
        unkeyed: report.unkeyed,
        head: report.head.to_string(),
        broken: report.broken.clone().map(Into::into),
        checkpoints: checks,
    };
    // Verification outcomes are themselves evidence: record when the chain was
    // checked and, above all, when it was found broken.
    let mut event = caller
        .event(
            Kind::AuditVerify,
            if out.ok {
                Outcome::Allow
            } else {
                Outcome::Deny
            },
        )
        .action("audit.verify");
    let failed_checkpoint = out.checkpoints.iter().find(|c| !c.ok);
    event = match (&report.broken, failed_checkpoint) {
        (Some(b), _) => {
            tracing::error!(seq = b.seq, why = %b.why, "audit chain verification failed");
            event.reason(b.to_string())
        }
        (None, Some(c)) => {
            tracing::error!(seq = c.seq, why = %c.why.as_deref().unwrap_or(""), "audit checkpoint does not match the chain");
            event.reason(format!(
                "checkpoint of record {}: {}",
                c.seq,
                c.why.as_deref().unwrap_or("")
            ))
        }
        (None, None) => event.detail(serde_json::json!({
            "verified": out.verified,
            "unkeyed": out.unkeyed,
            "head": out.head,
            "checkpoints": out.checkpoints.len(),
        })),
    };
    // A clean verification changes nothing: past the caller's budget its
    // record is gathered. A broken chain is always recorded.
    if !out.ok {
        state.store.append_audit(event).await?;
    } else if let Some(event) = state.refusals.admit_known(event) {
        state.store.append_audit(event).await?;
    }
    Ok(Json(out))
}

async fn list_checkpoints(
    State(state): State<AppState>,
    _: Reader,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<Vec<warrant_core::audit::Checkpoint>>> {
    let limit = q.limit.unwrap_or(1).clamp(1, 1000);
    Ok(Json(state.store.list_checkpoints(limit).await?))
}

/// Makes a checkpoint of the current head now (to export after activity).
async fn make_checkpoint(
    State(state): State<AppState>,
    Writer(_): Writer,
) -> ApiResult<Json<Vec<warrant_core::audit::Checkpoint>>> {
    // What was just signed (or already covers the head), never the newest
    // row of the store.
    let made = warrant_control::checkpoints::make(&state.store, &state.keys, &state.issuer)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(made.into_iter().collect()))
}

#[derive(Debug, serde::Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn reload_policy(
    State(state): State<AppState>,
    Writer(caller): Writer,
) -> ApiResult<Json<PolicyStatus>> {
    match state
        .policy
        .reload(caller.event(Kind::PolicyReload, Outcome::Allow))
        .await
    {
        Ok(loaded) => {
            crate::http::live::announce_reload(&state, loaded.policies.digest()).await;
            Ok(Json(policy_status(&state, &loaded)))
        }
        Err(ReloadError::Invalid(problems)) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_policy",
            message: format!(
                "the policy set was not reloaded; the previous set stays in force:\n{problems}"
            ),
        }),
        Err(ReloadError::Store(e)) => Err(e.into()),
    }
}

async fn policy_status_handler(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Json<PolicyStatus>> {
    let loaded = state.policy.current();
    Ok(Json(policy_status(&state, &loaded)))
}

/// `GET /admin/v1/policy/source`: the files of the set in force, as loaded.
async fn policy_source(State(state): State<AppState>, _: Reader) -> Json<serde_json::Value> {
    let loaded = state.policy.current();
    let files: Vec<serde_json::Value> = loaded
        .policies
        .sources()
        .iter()
        .map(|f| serde_json::json!({"name": f.name, "text": f.text}))
        .collect();
    Json(serde_json::json!({
        "digest": loaded.policies.digest(),
        "loaded_at": loaded.loaded_at,
        "files": files,
    }))
}

/// Validates files sent by `warrant policy validate` against the MCP tools
/// this broker has pinned, exactly as a reload would. Changes nothing.
async fn validate_policy(
    State(state): State<AppState>,
    _: Reader,
    b: Result<Json<warrant_core::api::PolicyValidate>, JsonRejection>,
) -> ApiResult<Json<warrant_core::api::PolicyValidation>> {
    let Json(req) = b.map_err(|e| {
        ApiError::invalid(format!(
            "the request body is not a list of policy files: {}",
            e.body_text()
        ))
    })?;
    let files: Vec<warrant_policy::PolicyFile> = req
        .files
        .into_iter()
        .map(|f| warrant_policy::PolicyFile {
            name: f.name,
            text: f.text,
        })
        .collect();
    let tools = state.policy.tools();
    let n = tools.len();
    let result = tokio::task::spawn_blocking(move || {
        warrant_policy::Policies::compile_for_tools(
            &files,
            &tools,
            warrant_policy::ToolProblems::Refuse,
        )
    })
    .await
    .map_err(|e| ApiError::failed("policy validation", &e))?;
    let known = state.policy.known_names().await?;
    Ok(Json(match result {
        Ok(mut p) => {
            p.add_warnings(warrant_control::names::unknown_names(&p, &known));
            warrant_core::api::PolicyValidation {
                ok: true,
                policies: p.ids().map(str::to_owned).collect(),
                digest: Some(p.digest().to_owned()),
                problems: Vec::new(),
                warnings: p.warnings().0.iter().map(ToString::to_string).collect(),
                tools: Some(n),
            }
        }
        Err(problems) => warrant_core::api::PolicyValidation {
            ok: false,
            policies: Vec::new(),
            digest: None,
            problems: problems.0.iter().map(ToString::to_string).collect(),
            warnings: Vec::new(),
            tools: Some(n),
        },
    }))
}

async fn check_policy(
    State(state): State<AppState>,
    Reader(caller): Reader,
    b: Result<Json<PolicyCheck>, JsonRejection>,
) -> ApiResult<Json<PolicyCheckResult>> {
    let attempt = caller.event(Kind::PolicyCheck, Outcome::Allow);
    let req = body(&state, &attempt, b).await?;
    let built = build_check(&state, req).await;
    let request = match built {
        Ok(r) => r,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    // A check changes nothing and hands out nothing: past the caller's
    // budget its record is gathered, so a reader cannot fill the disk.
    let (decision, event) = state.policy.decide_for_record(&request, attempt);
    if let Some(event) = state.refusals.admit_known(event) {
        state.store.append_audit(event).await?;
    }
    Ok(Json(PolicyCheckResult {
        effect: decision.effect,
        decision,
    }))
}

async fn build_check(state: &AppState, req: PolicyCheck) -> ApiResult<DecisionRequest> {
    let name = agent_name(&req.agent)?;
    let agent = state.store.get_agent(&name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "agent `{name}` does not exist; a check uses the inventoried agent's facts"
        ))
    })?;
    let action = req.action.parse::<Action>().map_err(ApiError::invalid)?;
    let resource = req
        .resource
        .parse::<Resource>()
        .map_err(ApiError::invalid)?;
    let mut context = Context::at(match &req.time {
        Some(t) => Timestamp::parse_rfc3339(t).map_err(|e| ApiError::invalid(e.to_string()))?,
        None => Timestamp::now(),
    });
    context.user = match req.user {
        Some(u) => Some(UserRef {
            id: warrant_core::user::UserId::parse(u.strip_prefix("user:").unwrap_or(&u))
                .map_err(|e| ApiError::invalid(e.to_string()))?
                .to_string(),
            groups: req.groups,
        }),
        None => None,
    };
    context.scopes = req.scopes;
    context.depth = req.depth;
    context.chain = req.chain;
    context.source_ip = req
        .source_ip
        .as_deref()
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::invalid(format!(
                    "source-ip `{}` is not an IP address",
                    shown(s, 100)
                ))
            })
        })
        .transpose()?;
    if action == Action::HttpRequest {
        match (req.method, req.path, req.host) {
            (Some(method), Some(path), Some(host)) => {
                context.http = Some(HttpFacts {
                    method: method.to_uppercase(),
                    path,
                    host,
                })
            }
            _ => {
                return Err(ApiError::invalid(
                    "an http:request check needs --method, --path and --host",
                ));
            }
        }
    }
    match (action, req.arguments) {
        (Action::McpCallTool, arguments) => {
            context.arguments = Some(arguments.unwrap_or_default());
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "--arguments applies to mcp:call_tool checks only",
            ));
        }
        (_, None) => {}
    }
    Ok(DecisionRequest {
        principal: Principal {
            agent: AgentFacts::from(&agent),
            instance: req.instance.unwrap_or_else(|| "check".to_owned()),
            attestor: req.attestor.unwrap_or_else(|| "unix".to_owned()),
        },
        action,
        resource,
        context,
    })
}

/// `GET /console/sessions`: the console sessions this broker holds, without
/// their cookies or tokens.
async fn list_console_sessions(
    State(state): State<AppState>,
    _: Reader,
) -> Json<Vec<warrant_core::api::ConsoleSessionInfo>> {
    let config = state.live.config.load().console.clone();
    let now = std::time::Instant::now();
    let found: Vec<([u8; 32], warrant_core::api::ConsoleSessionInfo)> = state
        .console
        .sessions
        .lock()
        .iter()
        .filter(|(_, s)| s.live(now, &config))
        .map(|(key, s)| {
            (
                *key,
                warrant_core::api::ConsoleSessionInfo {
                    actor: s.actor.clone(),
                    person: s.person.clone(),
                    via: match s.basis {
                        crate::state::SessionBasis::Token { .. } => "admin-token".into(),
                        crate::state::SessionBasis::Person { .. } => "single-sign-on".into(),
                    },
                    age_seconds: now.duration_since(s.created).as_secs(),
                    idle_seconds: now.duration_since(s.last_used).as_secs(),
                    ends_at: s.ends_at,
                },
            )
        })
        .collect();
    // Only sessions that could still be used: the token unrevoked, the
    // person still given a role.
    let mut out = Vec::new();
    for (key, info) in found {
        if crate::http::auth::still_valid(&state, &crate::http::auth::Recheck::Session(key)).await {
            out.push(info);
        }
    }
    out.sort_by(|a, b| {
        a.actor
            .cmp(&b.actor)
            .then(a.age_seconds.cmp(&b.age_seconds))
    });
    Json(out)
}

/// `POST /console/sessions/end`: ends every console session of one actor
/// (a person signed in by single sign-on, or an admin token's sessions).
async fn end_console_sessions(
    State(state): State<AppState>,
    Writer(caller): Writer,
    b: Result<Json<warrant_core::api::EndConsoleSessions>, JsonRejection>,
) -> ApiResult<Json<warrant_core::api::EndedConsoleSessions>> {
    let attempt = caller
        .event(Kind::AdminConsoleSignOut, Outcome::Allow)
        .action("console.sessions.end");
    let req = body(&state, &attempt, b).await?;
    // A person's id may hold 256 characters of any script after its
    // namespace: room for every actor the console can name.
    if req.actor.is_empty() || req.actor.len() > 4096 || req.actor.chars().any(char::is_control) {
        return Err(fail(
            &state,
            attempt,
            ApiError::invalid("actor is empty, too long or has control characters"),
        )
        .await);
    }
    let ended = state.console.end(&req.actor);
    let event = attempt
        .resource(shown(&req.actor, 1100))
        .reason(format!("{ended} sessions ended by {}", caller.actor));
    state.store.append_audit(event).await?;
    Ok(Json(warrant_core::api::EndedConsoleSessions {
        actor: req.actor,
        ended: ended as u64,
    }))
}
