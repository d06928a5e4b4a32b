//! `/admin/v1/mcp`: the gateway's tool pins and their approval.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use warrant_core::audit::{Kind, Outcome};
use warrant_core::decision::Resource;
use warrant_core::mcp::ToolPin;
use warrant_core::text::shown;

use crate::http::auth::{Reader, Writer};
use crate::http::error::ApiError;
use crate::state::AppState;

/// The routes, mounted in the admin router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mcp/tools", get(list))
        .route("/mcp/{server}/tools/{tool}/approve", post(approve))
}

#[derive(Debug, Deserialize)]
struct Filter {
    server: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _: Reader,
    Query(f): Query<Filter>,
) -> Result<Json<Vec<ToolPin>>, ApiError> {
    if let Some(s) = &f.server
        && !state.mcp.has_server(s)
    {
        return Err(ApiError::not_found(format!(
            "no MCP server `{}` is configured; [[mcp_server]] in warrant.toml names them",
            shown(s, 64)
        )));
    }
    let mut pins = state.store.list_tool_pins(f.server.as_deref()).await?;
    with_problems(&state, &mut pins);
    Ok(Json(pins))
}

/// Adds what the policy set in force says about each tool.
fn with_problems(state: &AppState, pins: &mut [ToolPin]) {
    let loaded = state.policy.current();
    for p in pins {
        if let Some(why) = loaded
            .policies
            .tool_problems()
            .get(&format!("{}/{}", p.server, p.tool))
        {
            p.policy_problems.clone_from(why);
        }
    }
}

/// What an approval names: the digest of the definition reviewed.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    digest: String,
}

async fn approve(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path((server, tool)): Path<(String, String)>,
    body: Result<Json<Approval>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ToolPin>, ApiError> {
    let attempt = caller
        .event(Kind::AdminMcpApprove, Outcome::Allow)
        .action("mcp.approve")
        .resource(
            Resource::Tool {
                server: shown(&server, 64),
                tool: shown(&tool, 128),
            }
            .to_string(),
        );
    let digest = match body {
        Ok(Json(a)) if a.digest.len() == 64 && a.digest.bytes().all(|b| b.is_ascii_hexdigit()) => {
            a.digest
        }
        _ => {
            let e = ApiError::invalid(
                "the body must be {\"digest\": \"<the 64 hex digits of the definition reviewed>\"} (see `warrant mcp tools SERVER --output json`)",
            );
            return Err(super::error::fail(&state, attempt, e).await);
        }
    };
    if !state.mcp.has_server(&server) {
        let e = ApiError::not_found(format!(
            "no MCP server `{}` is configured",
            shown(&server, 64)
        ));
        return Err(super::error::fail(&state, attempt, e).await);
    }
    let approved = state
        .store
        .approve_tool(
            &server,
            &tool,
            &digest,
            &caller.actor,
            warrant_core::time::Timestamp::now(),
            attempt.clone(),
        )
        .await;
    match approved {
        Ok(pin) => {
            state.mcp.approved(&server).await;
            let mut pins = [pin];
            with_problems(&state, &mut pins);
            let [pin] = pins;
            Ok(Json(pin))
        }
        Err(warrant_store::StoreError::Precondition { why, .. }) => {
            let e = ApiError {
                status: axum::http::StatusCode::CONFLICT,
                code: "conflict",
                message: format!("not approved: {}", shown(&why, 400)),
            };
            Err(super::error::fail(&state, attempt, e).await)
        }
        Err(e) => Err(super::error::fail(&state, attempt, e.into()).await),
    }
}
