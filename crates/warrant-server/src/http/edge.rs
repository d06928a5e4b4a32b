//! The edge listener: where agents' outbound calls arrive.
//!
//! `/<route>/...` goes to the egress proxy ([`warrant_edge::proxy`]);
//! `/.well-known/oauth-protected-resource/<route>` describes a route (RFC
//! 9728). The MCP gateway (`/mcp/<server>`) arrives in a later release.
//! Anything else gets a clear 404, so an agent pointed at the wrong place
//! fails loudly instead of hanging.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::error::ApiError;
use crate::state::AppState;

/// The edge routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/.well-known/oauth-protected-resource/{route}",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp/{server}",
            get(mcp_metadata),
        )
        .route("/mcp/{server}", axum::routing::any(mcp))
        .route("/mcp/{server}/{*below}", axum::routing::any(mcp_below))
        .fallback(proxy)
        .with_state(state)
}

async fn resource_metadata(State(state): State<AppState>, Path(route): Path<String>) -> Response {
    match state.proxy.resource_metadata(&route) {
        Some(m) => axum::Json(m).into_response(),
        None => ApiError::not_found("no such route").into_response(),
    }
}

async fn mcp_metadata(State(state): State<AppState>, Path(server): Path<String>) -> Response {
    match state.mcp.resource_metadata(&server) {
        Some(m) => axum::Json(m).into_response(),
        None => ApiError::not_found("no such MCP server").into_response(),
    }
}

async fn mcp(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(server): Path<String>,
    req: Request<Body>,
) -> Response {
    state.mcp.handle(&server, req, peer).await
}

async fn mcp_below(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((server, _below)): Path<(String, String)>,
    req: Request<Body>,
) -> Response {
    state.mcp.refuse_below(&server, req, peer).await
}

async fn proxy(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    state.proxy.handle(req, peer).await
}
