//! The edge listener: where agents' outbound calls arrive.
//!
//! The egress proxy (`/<route>/...`) and the MCP gateway (`/mcp/<server>`) are
//! mounted here by later releases. Until then it answers health checks and
//! refuses everything else with a clear error, so an agent pointed at it fails
//! loudly instead of hanging.

use axum::Router;
use axum::http::Uri;
use axum::routing::get;

use crate::http::error::ApiError;

/// The edge routes.
pub fn router() -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .fallback(|uri: Uri| async move {
            let first = uri
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect::<String>();
            ApiError::not_found(format!(
                "no route or MCP server named `{}` is configured on this edge listener",
                first.escape_debug()
            ))
        })
}
