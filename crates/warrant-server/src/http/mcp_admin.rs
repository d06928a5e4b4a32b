//! `/admin/v1/mcp`: the gateway's tool pins and their approval.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use warrant_core::audit::Outcome;
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
    let mut pins = state.mcp.pins(f.server.as_deref()).await?;
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

async fn approve(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path((server, tool)): Path<(String, String)>,
) -> Result<Json<ToolPin>, ApiError> {
    let attempt = caller
        .event("admin.mcp.approve", Outcome::Allow)
        .action("mcp.approve")
        .resource(
            Resource::Tool {
                server: shown(&server, 64),
                tool: shown(&tool, 128),
            }
            .to_string(),
        );
    if !state.mcp.has_server(&server) {
        let e = ApiError::not_found(format!(
            "no MCP server `{}` is configured",
            shown(&server, 64)
        ));
        return Err(super::admin::fail(&state, attempt, e).await);
    }
    match state
        .mcp
        .approve(&server, &tool, &caller.actor, attempt.clone())
        .await
    {
        Ok(pin) => {
            let mut pins = [pin];
            with_problems(&state, &mut pins);
            let [pin] = pins;
            Ok(Json(pin))
        }
        Err(warrant_store::StoreError::Conflict { .. }) => {
            let e = ApiError {
                status: axum::http::StatusCode::CONFLICT,
                code: "conflict",
                message: format!(
                    "tool `{server}/{}` has no changed definition waiting for approval",
                    shown(&tool, 128)
                ),
            };
            Err(super::admin::fail(&state, attempt, e).await)
        }
        Err(e) => Err(super::admin::fail(&state, attempt, e.into()).await),
    }
}
