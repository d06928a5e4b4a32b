//! The web console under `/console` on the API listener: pages embedded in
//! the binary, a session made from an admin token, and the admin API under
//! `/console/api/v1` with that session instead of a bearer token. It adds no
//! power the admin API does not have: the same handlers, the same roles.
//!
//! Every console response carries a strict Content-Security-Policy (no
//! inline script or style, nothing from elsewhere), `nosniff`, no framing,
//! no referrer and `no-store`.

mod oidc;
mod session;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::error::ApiError;
use crate::state::AppState;

/// Scripts and styles from this origin only; no inline code, no plugins, no
/// framing, forms and connections to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

const INDEX: &str = include_str!("../../console/index.html");

/// The embedded files, by name: (content type, bytes).
fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../../console/app.js"),
        ),
        "app.css" => (
            "text/css; charset=utf-8",
            include_str!("../../console/app.css"),
        ),
        "icon.svg" => ("image/svg+xml", include_str!("../../console/icon.svg")),
        _ => return None,
    })
}

/// The console's routes, to merge into the API listener's router.
pub fn router(state: AppState) -> Router {
    let api = crate::http::admin::router(state.clone()).layer(
        axum::middleware::from_fn_with_state(state.clone(), session::console_admin),
    );
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/{*page}", get(page_at))
        .route("/console/assets/{name}", get(serve_asset))
        .route(
            "/console/session",
            get(session::current)
                .post(session::sign_in)
                .delete(session::sign_out)
                .layer(axum::extract::DefaultBodyLimit::max(4096)),
        )
        .route("/console/oidc/start", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .with_state(state.clone())
        .nest("/console/api/v1", api)
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

/// Turned off: nothing under `/console` answers. Every answer gets the
/// console's security headers.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.live.config.load().console.enabled {
        // Turned off ends every session: turning it on again revives none.
        state.console.sessions.lock().clear();
        return ApiError::not_found("the console is turned off ([console] enabled = false)")
            .into_response();
    }
    let mut resp = if session::known_host(&state, req.headers()) {
        next.run(req).await
    } else {
        ApiError::invalid(format!(
            "the console answers at {} only (the Host of this request is not the broker's)",
            state.issuer
        ))
        .into_response()
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    resp
}

async fn page() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// Every page of the console is the same document; the script draws the
/// one the path names. Paths under `api/` and `assets/` that name nothing
/// are not pages.
async fn page_at(Path(path): Path<String>) -> Response {
    if path.starts_with("api/") || path.starts_with("assets/") {
        return ApiError::not_found("no such console resource").into_response();
    }
    page().await
}

async fn serve_asset(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some((kind, body)) => ([(CONTENT_TYPE, kind)], body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such console asset").into_response(),
    }
}
