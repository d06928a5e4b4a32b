//! OAuth endpoints: `/oauth2/token` (RFC 6749, 8693, 7523),
//! `/oauth2/introspect` (RFC 7662) and `/oauth2/revoke` (RFC 7009).
//!
//! Form-encoded bodies of at most [`MAX_FORM`]; errors are RFC 6749 §5.2 JSON.

use std::net::SocketAddr;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hyper::body::Bytes;
use serde_json::Value;
use warrant_core::admin::{ADMIN_TOKEN_PREFIX, AdminTokenSecret, Permission, Role};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::task::{RevokeTarget, agent_of};
use warrant_core::time::Timestamp;

use crate::state::AppState;
use warrant_control::token::{Caller, JWT_BEARER, OAuthError, Params};

/// The largest form accepted.
pub const MAX_FORM: usize = 64 * 1024;

fn error_response(e: &OAuthError) -> Response {
    let status = match e.error {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "access_denied" => StatusCode::FORBIDDEN,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut body = serde_json::json!({ "error": e.error, "error_description": e.description });
    if let Some(policies) = &e.policies {
        body["refused_by"] = "policy".into();
        body["policies"] = serde_json::json!(policies);
        body["how_to_get_access"] =
            "ask an administrator for a Cedar permit on this action, audience and scope".into();
    }
    let mut pending = false;
    if let Some(serde_json::Value::Object(extra)) = e.extra.as_deref() {
        pending = extra.get("approval_state").and_then(|v| v.as_str()) == Some("pending");
        for (k, v) in extra {
            body[k] = v.clone();
        }
    }
    let mut resp = (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response();
    if pending {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(warrant_core::approval::RETRY_AFTER_SECS),
        );
    }
    resp
}

fn ok_json(v: impl serde::Serialize) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(v),
    )
        .into_response()
}

fn caller(addr: SocketAddr) -> Caller {
    Caller {
        source_ip: Some(addr.ip()),
        source: Some(addr.to_string()),
    }
}

/// Parses the form, or refuses (audited as `kind`).
async fn form(
    state: &AppState,
    kind: Kind,
    c: &Caller,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Params, Response> {
    let refuse = |e: OAuthError, too_large: bool| async move {
        let e = state.tokens.refuse(state.tokens.event(kind, c), e).await;
        let mut r = error_response(&e);
        if too_large && e.error == "invalid_request" {
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        }
        r
    };
    let bytes = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let e = OAuthError::invalid_request(format!(
                "the request body is larger than {} KiB",
                MAX_FORM / 1024
            ));
            return Err(refuse(e, true).await);
        }
        Err(_) => {
            return Err(refuse(
                OAuthError::invalid_request("the request body could not be read"),
                false,
            )
            .await);
        }
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        let e = OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded (RFC 6749 §4)",
        );
        return Err(refuse(e, false).await);
    }
    Ok(Params(
        url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    ))
}

async fn token(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let c = caller(addr);
    let params = match form(&state, Kind::TokenRequest, &c, &headers, body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match state.tokens.token(&params, &c).await {
        Ok(t) => ok_json(t),
        Err(e) => error_response(&e),
    }
}

/// Who is calling introspection or revocation: an agent (by client
/// assertion) or an admin token holder.
enum Client {
    Agent { name: String, spiffe: String },
    Admin(String, Role),
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Client, OAuthError> {
    if let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = h.strip_prefix("Bearer ")
        && t.starts_with(ADMIN_TOKEN_PREFIX)
    {
        let hash = AdminTokenSecret::presented(t.trim()).hash();
        return match state.store.admin_token_by_hash(&hash).await {
            Ok(Some(r)) if r.is_valid_at(Timestamp::now()) => Ok(Client::Admin(r.id, r.role)),
            Ok(_) => Err(OAuthError::invalid_client("the admin token is not valid")),
            Err(_) => Err(OAuthError::invalid_client(
                "the broker cannot check the admin token now",
            )),
        };
    }
    match (
        params.one("client_assertion_type")?,
        params.one("client_assertion")?,
    ) {
        (Some(JWT_BEARER), Some(a)) => {
            let (name, spiffe) = state
                .tokens
                .client(a)
                .await
                .map_err(|e| OAuthError::invalid_client(e.description))?;
            Ok(Client::Agent { name, spiffe })
        }
        _ => Err(OAuthError::invalid_client(
            "authenticate with client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer and your identity token as client_assertion, or an admin bearer token",
        )),
    }
}

/// An authenticated introspection or revocation request: who sent it, the
/// `token` it is about, and its audit event (actor filled in) to complete.
struct TokenRequest {
    client: Client,
    token: String,
    event: AuditEvent,
}

/// Parses and authenticates a request to `kind`, refusing (audited) otherwise.
async fn token_request(
    state: &AppState,
    kind: Kind,
    action: &str,
    c: &Caller,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<TokenRequest, Response> {
    let params = form(state, kind, c, headers, body).await?;
    let refuse = |e: OAuthError| async move {
        error_response(&state.tokens.refuse(state.tokens.event(kind, c), e).await)
    };
    let client = match authenticate(state, headers, &params).await {
        Ok(cl) => cl,
        Err(e) => return Err(refuse(e).await),
    };
    let Ok(Some(token)) = params.one("token") else {
        return Err(refuse(OAuthError::invalid_request("`token` is required (once)")).await);
    };
    let mut event = state.tokens.event(kind, c).action(action);
    event.actor = Some(match &client {
        Client::Agent { spiffe, .. } => spiffe.clone(),
        Client::Admin(id, _) => format!("admin-token:{id}"),
    });
    Ok(TokenRequest {
        client,
        token: token.to_owned(),
        event,
    })
}

async fn introspect(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let c = caller(addr);
    let TokenRequest {
        client,
        token,
        mut event,
    } = match token_request(
        &state,
        Kind::TokenIntrospect,
        "token:introspect",
        &c,
        &headers,
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Client::Admin(_, role) = &client
        && !role.allows(Permission::Read)
    {
        let e = OAuthError::new(
            "access_denied",
            format!("an admin token of role {role} may not introspect tokens"),
        );
        return error_response(&state.tokens.refuse(event, e).await);
    }
    let result = state.tokens.introspect(&token).await;
    if let Some(claims) = &result {
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
        event.decision = Outcome::Allow;
        event.credential_type = Some("task_token".into());
        event.credential_id = text("jti");
        event.task = text("task");
        event.txn = text("txn");
        event.agent = text("client_id");
    } else {
        event = event.reason("inactive: expired, revoked, unknown or malformed");
    }
    // Introspection changes nothing and hands out nothing: past the
    // caller's budget its records are gathered, so a loop of them cannot
    // fill the trail.
    let Some(event) = state.refusals.admit_known(event) else {
        return match result {
            Some(claims) => ok_json(Value::Object(claims)),
            None => ok_json(serde_json::json!({ "active": false })),
        };
    };
    if let Err(e) = state.store.append_audit(event).await {
        tracing::error!(error = %e, "cannot write the audit trail; introspection refused");
        state.metrics.audit_write_failures.inc();
        return error_response(&OAuthError::unavailable());
    }
    match result {
        Some(claims) => ok_json(Value::Object(claims)),
        None => ok_json(serde_json::json!({ "active": false })),
    }
}

async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let c = caller(addr);
    let TokenRequest {
        client,
        token,
        event,
    } = match token_request(
        &state,
        Kind::TokenRevoke,
        "token:revoke",
        &c,
        &headers,
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Revocation changes what others hold: only the admin role, or an agent
    // for a task it takes part in.
    if let Client::Admin(_, role) = &client
        && !role.allows(Permission::Write)
    {
        let e = OAuthError::new(
            "access_denied",
            format!(
                "an admin token of role {role} may not revoke; revocation needs role admin (or the client assertion of an agent in the task's chain)"
            ),
        );
        return error_response(&state.tokens.refuse(event, e).await);
    }
    // RFC 7009 §2.2: an unknown or invalid token is not an error.
    let Some(task) = state.tokens.task_of(&token) else {
        let event = event.reason("unknown or invalid token; nothing revoked");
        return nothing_revoked(&state, event).await;
    };
    if let Client::Agent { name, spiffe } = &client {
        let in_chain = task
            .act
            .as_ref()
            .is_some_and(|a| a.chain().iter().any(|s| agent_of(s) == Some(name.as_str())));
        if !(in_chain || task.sub == *spiffe || task.client_id == *name) {
            let e = OAuthError::new(
                "unauthorized_client",
                "an agent may revoke only tokens of tasks it takes part in",
            );
            let e = state.tokens.refuse(event.task(task.task.clone()), e).await;
            return error_response(&e);
        }
    }
    let mut event = event
        .task(task.task.clone())
        .txn(task.txn.clone())
        .credential_type("task_token")
        .credential_id(task.jti.clone());
    if state.tokens.is_revoked(&task.task) {
        let event = event.reason("the task was revoked already; nothing changed");
        return nothing_revoked(&state, event).await;
    }
    event.decision = Outcome::Allow;
    match state
        .tokens
        .revoke(RevokeTarget::Task(task.task), event)
        .await
    {
        Ok(revoked) => {
            state.metrics.tasks_revoked.inc_by(revoked.len() as u64);
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation failed");
            error_response(&OAuthError::unavailable())
        }
    }
}

/// Answers a revocation that changed nothing. It hands nothing out and
/// changes nothing, so past the caller's budget its record is gathered: a
/// loop of them cannot fill the trail. A record that cannot be written
/// fails the request, as every other.
async fn nothing_revoked(state: &AppState, event: AuditEvent) -> Response {
    let Some(event) = state.refusals.admit_known(event) else {
        return StatusCode::OK.into_response();
    };
    match state.store.append_audit(event).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot write the audit trail; revocation refused");
            state.metrics.audit_write_failures.inc();
            error_response(&OAuthError::unavailable())
        }
    }
}

/// The OAuth routes of the API listener.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/revoke", post(revoke))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(state)
}
