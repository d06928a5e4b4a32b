//! Public endpoints on the API listener: discovery, JWKS, health, metrics.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use warrant_core::agent::AgentStatus;
use warrant_core::time::Timestamp;
use warrant_store::AuditQuery;
use warrant_token::KeyState;

use crate::http::error::ApiError;
use crate::state::AppState;
use warrant_control::keys::JWKS_MAX_AGE;

/// Public routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/spiffe-bundle", get(spiffe_bundle))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found(
                "no such endpoint; discovery is at /.well-known/oauth-authorization-server",
            )
        })
        .with_state(state)
}

async fn jwks(State(state): State<AppState>) -> Response {
    let set = state.keys.current().jwks(Timestamp::now());
    let mut r = Json(set).into_response();
    let cache = format!("public, max-age={}", JWKS_MAX_AGE.as_secs());
    if let Ok(v) = HeaderValue::from_str(&cache) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}

/// The trust domain's SPIFFE bundle (SPIFFE Trust Domain and Bundle, §4):
/// the X.509 CAs (`use: x509-svid`, with `x5c`) and the JWT-SVID keys
/// (`use: jwt-svid`), for relying parties and federation off this host.
/// `spiffe_sequence` grows with every key rotation.
async fn spiffe_bundle(State(state): State<AppState>) -> Response {
    use base64::Engine as _;
    let now = Timestamp::now();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let std64 = base64::engine::general_purpose::STANDARD;
    let ca = match state.keys.x509(state.trust_domain.as_str(), now) {
        Ok(ca) => ca,
        Err(e) => {
            tracing::error!(error = %e, "cannot derive the X.509 CA");
            return ApiError {
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: "the trust bundle is unavailable; try again shortly".into(),
            }
            .into_response();
        }
    };
    let mut keys: Vec<serde_json::Value> = ca
        .authorities()
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "use": "x509-svid", "kty": "EC", "crv": "P-256",
                "x": b64.encode(&a.x), "y": b64.encode(&a.y),
                "x5c": [std64.encode(&a.der)],
            })
        })
        .collect();
    let set = state.keys.current();
    for k in set.jwks(now).keys {
        let mut v = serde_json::to_value(&k).unwrap_or_default();
        v["use"] = "jwt-svid".into();
        keys.push(v);
    }
    let sequence = set
        .status(now)
        .iter()
        .map(|k| k.activates_at.as_millis())
        .max()
        .unwrap_or(0);
    let mut r = Json(serde_json::json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": JWKS_MAX_AGE.as_secs(),
    }))
    .into_response();
    let cache = format!("public, max-age={}", JWKS_MAX_AGE.as_secs());
    if let Ok(v) = HeaderValue::from_str(&cache) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}

/// Authorization server metadata (RFC 8414), also served as OpenID discovery.
/// It lists what exists in this release; later releases add their endpoints.
#[derive(Debug, Serialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    token_endpoint_auth_methods_supported: Vec<String>,
    token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    /// No authorization endpoint: warrant issues tokens by exchange and client
    /// assertion only, never through a browser redirect.
    response_types_supported: Vec<String>,
    grant_types_supported: Vec<String>,
    subject_types_supported: Vec<String>,
}

async fn metadata(State(state): State<AppState>) -> Json<Metadata> {
    Json(Metadata {
        issuer: state.issuer.to_string(),
        jwks_uri: format!("{}/.well-known/jwks.json", state.issuer),
        token_endpoint: format!("{}/oauth2/token", state.issuer),
        introspection_endpoint: format!("{}/oauth2/introspect", state.issuer),
        revocation_endpoint: format!("{}/oauth2/revoke", state.issuer),
        response_types_supported: Vec::new(),
        grant_types_supported: vec![
            warrant_control::token::TOKEN_EXCHANGE.into(),
            "client_credentials".into(),
        ],
        token_endpoint_auth_methods_supported: vec!["private_key_jwt".into()],
        token_endpoint_auth_signing_alg_values_supported: vec!["ES256".into(), "EdDSA".into()],
        introspection_endpoint_auth_methods_supported: vec!["private_key_jwt".into()],
        revocation_endpoint_auth_methods_supported: vec!["private_key_jwt".into()],
        subject_types_supported: vec!["public".into()],
    })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the store answers, a key signs and a policy set is loaded.
async fn readyz(State(state): State<AppState>) -> Response {
    let checked = state.store.ping().await;
    if let Err(e) = &checked {
        tracing::warn!(error = %e, "readiness check failed");
    }
    // A trail that is not as the broker wrote it is the audit check's
    // failure, not the store's.
    let tampered = matches!(checked, Err(warrant_store::StoreError::AuditUnavailable(_)));
    let store = checked.is_ok() || tampered;
    let signing = state.keys.current().active(Timestamp::now()).is_some();
    // Records the edge could not write: it refuses requests until they are.
    let written = !state.audit_batch.failed();
    let ready = checked.is_ok() && signing && written;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            // The cause goes to the log, not to an unauthenticated caller.
            "store": if store { "ok" } else { "unavailable" },
            "signing_key": if signing { "ok" } else { "no active signing key" },
            "audit": if !written {
                "cannot be written"
            } else if tampered {
                "not as the broker wrote it"
            } else {
                "ok"
            },
            "policies": state.policy.current().policies.len(),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let now = Timestamp::now();
    if let Ok(agents) = state.store.list_agents().await {
        for status in [
            AgentStatus::Active,
            AgentStatus::Disabled,
            AgentStatus::Quarantined,
        ] {
            let n = agents.iter().filter(|a| a.status == status).count();
            m.agents
                .get_or_create(&warrant_control::metrics::StateLabels {
                    state: status.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    let keys = state.keys.current().status(now);
    for s in [
        KeyState::Next,
        KeyState::Active,
        KeyState::Retired,
        KeyState::Expired,
    ] {
        let n = keys.iter().filter(|k| k.state == s).count();
        let label = serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        m.signing_keys
            .get_or_create(&warrant_control::metrics::StateLabels { state: label })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Ok(c) = crate::http::live::cluster_status(&state).await
        && !c.members.is_empty()
    {
        let distinct = |f: &dyn Fn(&warrant_core::api::ClusterMember) -> Option<String>| {
            let set: std::collections::HashSet<_> = c.members.iter().map(f).collect();
            i64::try_from(set.len()).unwrap_or(i64::MAX)
        };
        m.cluster_brokers
            .set(i64::try_from(c.members.len()).unwrap_or(i64::MAX));
        m.cluster_policy_digests
            .set(distinct(&|b| Some(b.policy_digest.clone())));
        m.cluster_config_digests
            .set(distinct(&|b| b.config_digest.clone()));
    }
    if let Ok(live) = state.store.live_instances(now).await {
        m.live_instances.clear();
        for (agent, n) in live {
            m.live_instances
                .get_or_create(&warrant_control::metrics::AgentLabels { agent })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    if let Ok(tokens) = state.store.list_admin_tokens().await {
        m.admin_tokens_valid.set(
            i64::try_from(tokens.iter().filter(|t| t.is_valid_at(now)).count()).unwrap_or(i64::MAX),
        );
    }
    if let Ok(last) = state
        .store
        .list_audit(&AuditQuery {
            limit: 1,
            ..Default::default()
        })
        .await
    {
        let head = last
            .first()
            .map_or(0, |r| i64::try_from(r.seq).unwrap_or(i64::MAX));
        m.audit_records.set(head);
        for sink in &state.live.config.load().audit_export {
            let labels = warrant_control::metrics::SinkLabels {
                sink: sink.name.clone(),
            };
            let at = m.export_position.get_or_create(&labels).get();
            m.export_lag.get_or_create(&labels).set((head - at).max(0));
        }
    }
    if let Ok(h) = crate::http::health::compute(&state).await {
        crate::http::health::gauges(&state, &h);
    }
    let mut r = m.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
