//! HTTP surfaces: thin layers over the services in [`crate::state`].
//!
//! - [`public`]: discovery, JWKS, health and metrics on the API listener;
//! - [`admin`]: the admin API, served on the admin socket and, behind bearer
//!   admin tokens, on the API listener under `/admin/v1`;
//! - [`edge`]: the edge listener, where the egress proxy and MCP gateway arrive
//!   in later releases.
//!
//! [`error::ApiError`] is the one place errors become responses.

pub mod admin;
pub mod approvals;
pub mod attest;
pub mod auth;
pub mod edge;
pub mod error;
pub mod health;
pub mod live;
pub mod mcp_admin;
pub mod oauth;
pub mod public;
pub mod secrets;
pub mod stream;

use axum::Router;

use crate::state::AppState;

/// The API listener's router: public endpoints and the token-protected admin API.
pub fn api_router(state: AppState) -> Router {
    public::router(state.clone())
        .merge(attest::api_routes(state.clone()))
        .merge(oauth::routes(state.clone()))
        .merge(crate::console::router(state.clone()))
        .nest(
            "/admin/v1",
            admin::router(state.clone()).layer(axum::middleware::from_fn_with_state(
                state,
                auth::http_admin,
            )),
        )
}

/// The admin socket's router: the admin API, authenticated by peer credentials.
pub fn socket_router(state: AppState) -> Router {
    Router::new().nest(
        "/admin/v1",
        admin::router(state.clone()).layer(axum::middleware::from_fn_with_state(
            state,
            auth::socket_admin,
        )),
    )
}
