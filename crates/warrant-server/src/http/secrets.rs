//! `/admin/v1/secrets`: the secret store's admin surface.
//!
//! Values come in (put, rotate) and never go out: every answer is a
//! [`SecretInfo`]. A malformed body is refused with a fixed message, not the
//! parser's, because a parser's message may quote the input.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use warrant_core::api::{PutSecret, SecretInfo};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::secret::{SecretName, SecretRecord, secret_owner};
use warrant_core::text::shown;

use crate::http::auth::{Caller, Reader, Writer};
use crate::http::error::ApiError;
use crate::state::AppState;
use warrant_control::secrets::SecretError;

/// The routes, mounted in the admin router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(list).post(put))
        .route("/secrets/{name}", axum::routing::delete(delete))
        .route("/secrets/{name}/rotate", post(rotate))
}

type ApiResult<T> = Result<T, ApiError>;

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Invalid(m) => ApiError::invalid(m),
            SecretError::Store(s) => s.into(),
            SecretError::Unreadable(_) | SecretError::Crypto(_) => {
                ApiError::failed("reading or sealing the secret", &e)
            }
        }
    }
}

async fn fail(state: &AppState, attempt: AuditEvent, err: ApiError) -> ApiError {
    super::error::fail(state, attempt, err).await
}

fn event(caller: &Caller, kind: &str, name: &str, owner: Option<&str>) -> AuditEvent {
    let audit_kind = match kind {
        "put" => Kind::AdminSecretPut,
        "rotate" => Kind::AdminSecretRotate,
        _ => Kind::AdminSecretDelete,
    };
    let mut e = caller
        .event(audit_kind, Outcome::Allow)
        .action(format!("secret.{kind}"))
        .resource(format!("Secret::{:?}", shown(name, 100)))
        .credential_type("secret");
    if let Some(o) = owner {
        e = e.user(format!("user:{}", shown(o, 256)));
    }
    e
}

fn recorded(attempt: &AuditEvent, r: &SecretRecord) -> AuditEvent {
    attempt
        .clone()
        .credential_id(r.credential_id())
        .detail(serde_json::json!({
            "version": r.version,
            "owner": r.owner,
            "description": r.description,
        }))
}

fn parse_body(b: &Bytes) -> Result<PutSecret, ApiError> {
    serde_json::from_slice(b).map_err(|_| {
        ApiError::invalid(
            "the body must be JSON {\"value\": \"...\"} with optional \"name\", \"for_user\" and \"description\" strings",
        )
    })
}

/// The owner of a per-user secret: an issuer-qualified user of one of
/// this broker's user issuers.
fn parse_owner(state: &AppState, o: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(owner) = o
        .map(secret_owner)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?
    else {
        return Ok(None);
    };
    let known = state.tokens.user_namespaces();
    let ns = owner.split_once('/').map_or("", |(n, _)| n);
    if !known.iter().any(|k| k == ns) {
        return Err(ApiError::invalid(format!(
            "no user issuer has the namespace `{}`, so no task could ever be for `{}`; this broker's namespaces are: {}",
            shown(ns, 64),
            shown(&owner, 256),
            if known.is_empty() {
                "none ([[user_issuer]] in warrant.toml)".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(Some(owner))
}

async fn list(State(state): State<AppState>, _: Reader) -> ApiResult<Json<Vec<SecretInfo>>> {
    Ok(Json(state.secrets.list().await?))
}

async fn put(
    State(state): State<AppState>,
    Writer(caller): Writer,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<SecretInfo>)> {
    let req = match parse_body(&b) {
        Ok(r) => r,
        Err(e) => return Err(fail(&state, event(&caller, "put", "?", None), e).await),
    };
    let raw_name = req.name.clone().unwrap_or_default();
    let attempt = event(&caller, "put", &raw_name, req.for_user.as_deref());
    let parsed = SecretName::new(raw_name)
        .map_err(|e| ApiError::invalid(e.to_string()))
        .and_then(|n| Ok((n, parse_owner(&state, req.for_user.as_deref())?)));
    let (name, owner) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    let result = state
        .secrets
        .put(
            name.clone(),
            owner,
            req.description,
            &req.value,
            caller.actor.clone(),
            |r| recorded(&attempt, r),
        )
        .await;
    match result {
        Ok(info) => Ok((StatusCode::CREATED, Json(info))),
        Err(SecretError::Store(warrant_store::StoreError::Conflict { .. })) => {
            let e = ApiError {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message: format!(
                    "secret `{name}` already exists; replace its value with `warrant secret rotate {name}`"
                ),
            };
            Err(fail(&state, attempt, e).await)
        }
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

async fn rotate(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    b: Bytes,
) -> ApiResult<Json<SecretInfo>> {
    let req = match parse_body(&b) {
        Ok(r) => r,
        Err(e) => return Err(fail(&state, event(&caller, "rotate", &name, None), e).await),
    };
    let attempt = event(&caller, "rotate", &name, req.for_user.as_deref());
    let parsed = SecretName::new(name)
        .map_err(|e| ApiError::invalid(e.to_string()))
        .and_then(|n| Ok((n, parse_owner(&state, req.for_user.as_deref())?)));
    let (name, owner) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    match state
        .secrets
        .rotate(name.clone(), owner, req.description, &req.value, |r| {
            recorded(&attempt, r)
        })
        .await
    {
        Ok(info) => Ok(Json(info)),
        Err(SecretError::Store(warrant_store::StoreError::NotFound { .. })) => {
            let e = ApiError::not_found(format!(
                "there is no secret `{name}`{}; store it first with `warrant secret put {name}`",
                req.for_user
                    .as_deref()
                    .map(|u| format!(" for user `{}`", shown(u, 100)))
                    .unwrap_or_default()
            ));
            Err(fail(&state, attempt, e).await)
        }
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}

#[derive(Debug, Deserialize)]
struct Owner {
    for_user: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(q): Query<Owner>,
) -> ApiResult<Json<SecretInfo>> {
    let attempt = event(&caller, "delete", &name, q.for_user.as_deref());
    let parsed = SecretName::new(name.clone())
        .map_err(|e| ApiError::invalid(e.to_string()))
        .and_then(|n| Ok((n, parse_owner(&state, q.for_user.as_deref())?)));
    let (name, owner) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(fail(&state, attempt, e).await),
    };
    match state
        .secrets
        .delete(&name, owner.as_deref(), attempt.clone())
        .await
    {
        Ok(info) => Ok(Json(info)),
        Err(SecretError::Store(warrant_store::StoreError::NotFound { .. })) => {
            let e = ApiError::not_found(format!(
                "there is no secret `{name}`{}; `warrant secret list` shows them",
                owner
                    .as_deref()
                    .map(|u| format!(" for user `{}`", shown(u, 100)))
                    .unwrap_or_default()
            ));
            Err(fail(&state, attempt, e).await)
        }
        Err(e) => Err(fail(&state, attempt, e.into()).await),
    }
}
