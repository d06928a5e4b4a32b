//! Attestation endpoints.
//!
//! - On the agent socket (`<data-dir>/agent.sock`): `POST /v1/identity`, the
//!   unix attestor. The caller is whoever the kernel says is connected.
//! - On the API listener: `POST /v1/attest/oidc` and `POST /v1/attest/join`.
//!
//! Bodies are at most [`MAX_BODY`]; errors are RFC 6749-style JSON
//! (`{"error", "error_description"}`), and every refusal is audited.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hyper::body::Bytes;
use serde::Deserialize;
use warrant_core::time::Timestamp;

use crate::state::AppState;
use warrant_control::attest::unix::{self, Peer};
use warrant_control::attest::{Refusal, Request};

/// The largest request body accepted on attestation endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// The peer of an agent-socket connection, read when it was accepted.
#[derive(Clone, Debug)]
pub struct AgentPeer(pub Option<Peer>);

impl AgentPeer {
    /// Reads the peer of a just-accepted agent-socket connection and wraps
    /// the stream so every read checks who sent the bytes.
    pub fn accept(stream: tokio::net::UnixStream) -> (unix::PeerStream, Self) {
        match Peer::accept(&stream) {
            Some(p) => (unix::PeerStream::new(stream, &p), Self(Some(p))),
            None => {
                // No credentials: nothing is issued on this connection; the
                // wrapper sees every read from an unknown sender.
                let p = Peer {
                    pid: 0,
                    uid: u32::MAX,
                    gid: u32::MAX,
                    start_time: None,
                    exe: None,
                    sent_after_look: false,
                    pidfd: None,
                    foreign: std::sync::Arc::default(),
                };
                (unix::PeerStream::new(stream, &p), Self(None))
            }
        }
    }
}

fn refusal_response(r: &Refusal, too_large: bool) -> Response {
    let (status, code) = match r {
        Refusal::Invalid(_) if too_large => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
        Refusal::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        Refusal::Denied(_) => (StatusCode::FORBIDDEN, "access_denied"),
        Refusal::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    };
    // The cause of an unavailability (the store's, a signing library's
    // text) is for the log, not the caller.
    let description = match r {
        Refusal::Unavailable(m) => {
            tracing::warn!(cause = %m, "attestation answered unavailable");
            "the broker cannot issue identities right now; try again shortly"
        }
        _ => r.message(),
    };
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

/// The answer to an attestation: the identity (never cached) or the refusal.
fn answer(r: Result<warrant_control::attest::IdentityResponse, Refusal>) -> Response {
    match r {
        Ok(r) => ([(axum::http::header::CACHE_CONTROL, "no-store")], Json(r)).into_response(),
        Err(r) => refusal_response(&r, false),
    }
}

/// A request from `addr` on the API listener (its audience comes from the body).
fn remote(addr: SocketAddr) -> Request {
    Request {
        source: Some(addr.to_string()),
        source_ip: Some(addr.ip()),
        audience: None,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityBody {
    #[serde(default)]
    audience: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
    #[serde(default)]
    audience: Option<String>,
}

/// Reads a JSON body, or refuses (audited) with what was wrong.
async fn parse_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    attestor: &str,
    req: &Request,
    body: Result<Bytes, BytesRejection>,
    empty: Option<T>,
) -> Result<T, Response> {
    let bytes = match body {
        Ok(b) => b,
        Err(e) => {
            let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
            let msg = if too_large {
                format!("the request body is larger than {} KiB", MAX_BODY / 1024)
            } else {
                "the request body could not be read".to_owned()
            };
            let r = state
                .attest
                .refuse_early(attestor, req, Refusal::Invalid(msg))
                .await;
            return Err(refusal_response(&r, too_large));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(v) = empty
    {
        return Ok(v);
    }
    match serde_json::from_slice::<T>(&bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            let r = Refusal::Invalid(format!(
                "the request body is not valid JSON for this endpoint: {e}"
            ));
            let r = state.attest.refuse_early(attestor, req, r).await;
            Err(refusal_response(&r, false))
        }
    }
}

/// `POST /v1/identity` on the agent socket.
async fn identity(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<AgentPeer>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut req = Request::default();
    if let Some(p) = &peer.0 {
        req.source = Some(format!("uid={} pid={}", p.uid, p.pid));
    }
    let b: IdentityBody =
        match parse_body(&state, "unix", &req, body, Some(IdentityBody::default())).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
    req.audience = b.audience;
    let Some(peer) = peer.0 else {
        let r = Refusal::Denied(unix::UnixError::NoPeer.to_string());
        let r = state.attest.refuse_early("unix", &req, r).await;
        return refusal_response(&r, false);
    };
    // The request must have been sent after the broker looked at the
    // process: nothing was queued at accept, or it carries a proof minted
    // after a later look.
    let proof = query
        .as_deref()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "proof"))
        .map(|(_, v)| v.into_owned());
    let proven = proof
        .as_deref()
        .is_some_and(|p| state.attest.take_proof(p, &peer));
    if !peer.sent_after_look && !proven {
        if peer.foreign.load(std::sync::atomic::Ordering::Acquire) {
            let r = Refusal::Denied(unix::UnixError::Foreign.to_string());
            let r = state.attest.refuse_early("unix", &req, r).await;
            return refusal_response(&r, false);
        }
        return match state.attest.mint_proof(&peer) {
            Some(p) => again_with(&p),
            None => {
                let r = Refusal::Denied(unix::UnixError::Changed(peer.pid).to_string());
                let r = state.attest.refuse_early("unix", &req, r).await;
                refusal_response(&r, false)
            }
        };
    }
    answer(state.attest.unix(peer, &req).await)
}

/// `307` to the same endpoint with a one-time proof: the request arrived
/// before the broker had looked at the process, so it asks for it again.
/// Clients follow it (`curl -L`), sending the same body.
fn again_with(proof: &str) -> Response {
    let location = format!("/v1/identity?proof={proof}");
    let mut r = (
        StatusCode::TEMPORARY_REDIRECT,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "error": "send_again",
            "error_description": "the request was sent before the broker looked at the connecting process; send it again to the Location given (it carries a one-time proof, valid for 10 s, for this process only)",
        })),
    )
        .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
        r.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    r
}

/// `POST /v1/attest/oidc`.
async fn attest_oidc(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut req = remote(addr);
    let b: TokenBody = match parse_body(&state, "oidc", &req, body, None).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    req.audience = b.audience;
    if state.attest.oidc().is_empty() {
        let r = Refusal::Denied(
            "no trusted OIDC providers are configured ([[trust_provider]] in warrant.toml)".into(),
        );
        return refusal_response(&state.attest.refuse_early("oidc", &req, r).await, false);
    }
    let evidence = match state.attest.oidc().attest(&b.token, Timestamp::now()).await {
        Ok(e) => e,
        Err(e) => {
            let r = match e {
                warrant_control::attest::oidc::OidcError::Keys(_) => {
                    Refusal::Unavailable(e.to_string())
                }
                _ => Refusal::Denied(format!("the token does not attest: {e}")),
            };
            return refusal_response(&state.attest.refuse_early("oidc", &req, r).await, false);
        }
    };
    answer(state.attest.issue(evidence, &req).await)
}

/// `POST /v1/attest/join`.
async fn attest_join(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut req = remote(addr);
    let b: TokenBody = match parse_body(&state, "join", &req, body, None).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    req.audience = b.audience;
    answer(state.attest.join(&b.token, req).await)
}

/// `POST /v1/identity/renew`: a join instance renews with its current
/// identity token (audience: this broker) as the bearer.
async fn renew(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut req = remote(addr);
    let b: IdentityBody =
        match parse_body(&state, "renew", &req, body, Some(IdentityBody::default())).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
    req.audience = b.audience;
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer else {
        let r = Refusal::Invalid(
            "renewal needs `Authorization: Bearer <identity token>` (one whose audience is this broker)".into(),
        );
        return refusal_response(&state.attest.refuse_early("renew", &req, r).await, false);
    };
    answer(state.attest.renew(token.trim(), req).await)
}

/// The agent socket's router.
pub fn agent_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/identity", post(identity))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .fallback(|| async {
            crate::http::error::ApiError::not_found("the agent socket serves POST /v1/identity")
        })
        .with_state(state)
}

/// The attestation routes of the API listener.
pub fn api_routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/attest/oidc", post(attest_oidc))
        .route("/v1/attest/join", post(attest_join))
        .route("/v1/identity/renew", post(renew))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
