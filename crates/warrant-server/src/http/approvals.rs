//! The admin API's approvals: list and show (read), approve and deny
//! (role `approver` or `admin`; an approval may ask for `admin`).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use warrant_control::approvals::{Approver, DecideError};
use warrant_core::approval::{APPROVAL_ID_PREFIX, Approval, ApprovalState, Verdict};
use warrant_core::audit::{Kind, Outcome};
use warrant_core::text::shown;

use crate::http::auth::{Approving, Reader, Surface};
use crate::http::error::{ApiError, fail};
use crate::state::AppState;

/// Mounted under `/admin/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", get(show))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    state: Option<String>,
    limit: Option<u32>,
}

/// What a reader who may not decide approvals sees: not the arguments or
/// body an approver is shown, nor the query string (the audit trail keeps
/// them out too).
fn for_reader(mut a: Approval, role: warrant_core::admin::Role) -> Approval {
    if !role.allows(warrant_core::admin::Permission::Approve) {
        a.shown = serde_json::Value::Null;
        if let Some(q) = a.subject.request.get_mut("query") {
            *q = serde_json::Value::String("(shown to approvers)".into());
        }
    }
    a
}

async fn list(
    State(state): State<AppState>,
    Reader(caller): Reader,
    q: Result<Query<Filter>, QueryRejection>,
) -> Result<Json<Vec<Approval>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let wanted = match q.state.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(s.parse::<ApprovalState>().map_err(ApiError::invalid)?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit {limit} is out of range; use 1 to 1000"
        )));
    }
    let now = warrant_core::time::Timestamp::now();
    let all = state
        .approvals
        .list(wanted, limit)
        .await?
        .into_iter()
        .map(|mut a| {
            a.state = a.state_at(now);
            for_reader(a, caller.role)
        })
        .collect();
    Ok(Json(all))
}

fn well_formed(id: &str) -> Result<(), ApiError> {
    let ok = id
        .strip_prefix(APPROVAL_ID_PREFIX)
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "`{}` is not an approval id ({APPROVAL_ID_PREFIX} and 24 hex digits); `warrant approval list` shows them",
            shown(id, 100)
        )))
    }
}

async fn show(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<String>,
) -> Result<Json<Approval>, ApiError> {
    well_formed(&id)?;
    let mut a = state.approvals.get(&id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "approval `{id}` does not exist; `warrant approval list` shows them"
        ))
    })?;
    a.state = a.state_at(warrant_core::time::Timestamp::now());
    Ok(Json(for_reader(a, caller.role)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    reason: Option<String>,
}

async fn approve(
    state: State<AppState>,
    who: Approving,
    id: Path<String>,
    b: Result<Json<Decision>, JsonRejection>,
) -> Result<Json<Approval>, ApiError> {
    decide(state, who, id, b, Verdict::Approve).await
}

async fn deny(
    state: State<AppState>,
    who: Approving,
    id: Path<String>,
    b: Result<Json<Decision>, JsonRejection>,
) -> Result<Json<Approval>, ApiError> {
    decide(state, who, id, b, Verdict::Deny).await
}

async fn decide(
    State(state): State<AppState>,
    Approving(caller): Approving,
    Path(id): Path<String>,
    b: Result<Json<Decision>, JsonRejection>,
    verdict: Verdict,
) -> Result<Json<Approval>, ApiError> {
    let (kind, action) = match verdict {
        Verdict::Approve => (Kind::ApprovalApprove, "approval.approve"),
        Verdict::Deny => (Kind::ApprovalDeny, "approval.deny"),
    };
    let attempt = caller
        .event(kind, Outcome::Error)
        .action(action)
        .credential_id(shown(&id, 100));
    if let Err(e) = well_formed(&id) {
        return Err(fail(&state, attempt, e).await);
    }
    let reason = match b {
        Ok(Json(d)) => d.reason,
        Err(r) => {
            let e = ApiError::invalid(format!("the request body is not valid: {}", r.body_text()));
            return Err(fail(&state, attempt, e).await);
        }
    };
    if let Some(r) = &reason
        && (r.chars().count() > 500 || r.chars().any(|c| c.is_control() && c != '\n'))
    {
        let e = ApiError::invalid("reason is at most 500 characters without control characters");
        return Err(fail(&state, attempt, e).await);
    }
    let by = Approver {
        actor: caller.actor.clone(),
        role: caller.role,
        person: caller.person.clone(),
        local: caller.surface == Surface::Socket,
    };
    let base = caller.event(kind, Outcome::Allow).action(action);
    match state
        .approvals
        .decide(&id, verdict, &by, reason, base)
        .await
    {
        Ok(a) => Ok(Json(a)),
        Err(e) => {
            let api = match e {
                DecideError::NotFound(_) => ApiError::not_found(e.to_string()),
                DecideError::Forbidden(_) => ApiError::forbidden(e.to_string()),
                DecideError::NotPending(why) => ApiError {
                    status: axum::http::StatusCode::CONFLICT,
                    code: "conflict",
                    message: why,
                },
                DecideError::Store(s) => s.into(),
            };
            Err(fail(&state, attempt, api).await)
        }
    }
}
