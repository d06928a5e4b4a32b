//! The secretless egress proxy: `http://<edge>/<route>/<path>`.
//!
//! For each request, in this order and before any upstream contact: refuse
//! what no route may carry (`CONNECT`, absolute-form targets, a `Host` that
//! is not this listener, paths that escape the route), find the route,
//! verify the task token (signature, kind, lifetime, audience, revocation,
//! instance and agent status), check the route's `allow` rules, decide
//! `http:request` on `Route::"<name>"` with Cedar, then obtain the upstream
//! credential. Only then: strip the agent's token and hop-by-hop headers,
//! inject the credential, forward to exactly the route's origin, and stream
//! the answer back through a [`redact::Redactor`]. Redirects go back to the
//! agent; nothing is followed.
//!
//! Every refusal is recorded durably before it is answered. An allowed
//! request is recorded once it ends (status, bytes, upstream latency), off
//! the response path; if a record cannot be written, the edge refuses every
//! later request until one can (fail closed). See ARCHITECTURE.md for why an
//! allowed request is not held for an fsync.

mod body;
pub mod credential;
pub mod path;
pub mod redact;
pub mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use warrant_core::audit::{AuditEvent, Outcome};
use warrant_core::decision::{
    Action, AgentFacts, Context, DecisionRequest, Effect, HttpFacts, Principal, Resource, UserRef,
};
use warrant_core::task::{TaskClaims, TaskUse, UseError};
use warrant_core::text::shown;
use warrant_core::time::Timestamp;

use crate::services::EdgeServices;
use credential::{CredentialError, Injected, OAuthCache, Providers};
use redact::Redactor;
use route::{Route, Scheme, is_hop_by_hop};

type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// One configured route with its client.
struct RouteState {
    route: Route,
    client: Upstream,
    oauth: Option<OAuthCache>,
}

/// The most header bytes a proxied request may carry.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most headers.
/// (Below hyper's own limit of 100, so this check, with its message and audit
/// record, is the one that answers.)
const MAX_HEADERS: usize = 64;

/// What the proxy is built from.
#[allow(missing_debug_implementations)]
pub struct ProxyParts {
    /// Validated routes.
    pub routes: Vec<Route>,
    /// The services the edge reaches the broker through.
    pub services: EdgeServices,
}

/// The egress proxy.
pub struct ProxyService {
    routes: HashMap<String, RouteState>,
    s: EdgeServices,
    /// Permits for completion records not yet written: a writer that falls
    /// behind slows the edge down instead of queueing records without bound.
    pending_records: Arc<tokio::sync::Semaphore>,
}

/// The most completion records waiting for the writer.
const MAX_PENDING_RECORDS: usize = 8192;

impl std::fmt::Debug for ProxyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyService")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca_file `{}`: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("ca_file `{}` is not PEM certificates: {e}", path.display())
                })?;
            if certs.is_empty() {
                return Err(format!("ca_file `{}` holds no certificate", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file `{}`: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

pub(crate) fn connector(
    https: bool,
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(ca_file)?);
    let b = if https {
        b.https_only()
    } else {
        b.https_or_http()
    };
    Ok(b.enable_http1().wrap_connector(http))
}

impl ProxyService {
    /// Builds a client per route (reading CA files now, so a bad one is a
    /// start-up error).
    pub fn new(p: ProxyParts) -> Result<Self, String> {
        let mut routes = HashMap::new();
        for r in p.routes {
            let https = r.upstream.scheme == Scheme::Https;
            let conn = connector(https, r.ca_file.as_deref(), r.connect_timeout)
                .map_err(|e| format!("route `{}`: {e}", r.name))?;
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(256)
                .build(conn);
            let oauth = match &r.credential {
                route::Credential::OAuth2ClientCredentials {
                    token_url, ca_file, ..
                } => {
                    let conn = connector(
                        token_url.scheme() == "https",
                        ca_file.as_deref(),
                        r.connect_timeout,
                    )
                    .map_err(|e| format!("route `{}`: {e}", r.name))?;
                    Some(OAuthCache::new(
                        Client::builder(TokioExecutor::new()).build(conn),
                    ))
                }
                _ => None,
            };
            if routes.contains_key(&r.name) {
                return Err(format!("route `{}` is configured twice", r.name));
            }
            routes.insert(
                r.name.clone(),
                RouteState {
                    route: r,
                    client,
                    oauth,
                },
            );
        }
        Ok(Self {
            routes,
            s: p.services,
            pending_records: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_RECORDS)),
        })
    }

    /// Whether a route of this name exists.
    pub fn has_route(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// RFC 9728 metadata for a route.
    pub fn resource_metadata(&self, name: &str) -> Option<serde_json::Value> {
        let r = &self.routes.get(name)?.route;
        Some(json!({
            "resource": format!("{}/{}", self.s.edge_url, r.name),
            "authorization_servers": [&*self.s.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": format!("warrant egress route `{}` to {}", r.name, r.upstream.as_url()),
            "warrant_audience": r.audience,
        }))
    }

    /// Answers one request at the edge whose first path segment is a route.
    pub async fn handle(&self, req: Request<Body>, peer: SocketAddr) -> Response {
        let start = Instant::now();
        let mut event = AuditEvent::new("proxy.request", Outcome::Deny)
            .protocol("http")
            .action(Action::HttpRequest.as_str())
            .source(peer.to_string());
        let method = req.method().clone();
        let raw_path = req.uri().path().to_owned();
        let route_name = raw_path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let rest = raw_path
            .trim_start_matches('/')
            .split_once('/')
            .map_or_else(|| "/".to_owned(), |(_, r)| format!("/{r}"));
        event = event.detail(json!({ "method": method.as_str(), "path": shown(&rest, 300) }));
        if method == Method::CONNECT {
            let e = Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed",
                "CONNECT is refused: the edge is not an open proxy; send requests to `/<route>/<path>`".to_owned());
            return self.refuse(event, e, "-").await;
        }
        let label = if self.routes.contains_key(&route_name) {
            event = event.resource(Resource::Route(route_name.clone()).to_string());
            route_name.as_str()
        } else {
            "-"
        };
        // One spelling of each path, decided on and forwarded alike: `allow`
        // rules and policies see exactly what the upstream will.
        let rest = match self.boundaries(&req, &rest) {
            Ok(canonical) => canonical,
            Err(e) => return self.refuse(event, *e, label).await,
        };
        let Some(rs) = self.routes.get(&route_name) else {
            let e = Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no route or MCP server named `{}` is configured on this edge listener",
                    shown(&route_name, 64)
                ),
            );
            return self.refuse(event, e, "-").await;
        };
        let route = &rs.route;
        if self.s.audit.batch_failed() {
            let e = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the broker cannot write its audit trail, so it forwards nothing; try again later"
                    .to_owned(),
            );
            return self.refuse(event, e, &route.name).await;
        }

        // Who is asking.
        let token = match agent_token(req.headers(), &route.agent_header) {
            Ok(t) => t,
            Err(msg) => {
                return self
                    .refuse(
                        event,
                        Refusal::unauthorized(msg, self.metadata_url(route)),
                        &route.name,
                    )
                    .await;
            }
        };
        let now = Timestamp::now();
        let task = match self.s.tasks.task_for_use(token, &route.audience, now).await {
            Ok(t) => t,
            Err(UseError::Invalid(msg)) => {
                return self
                    .refuse(
                        event,
                        Refusal::unauthorized(msg, self.metadata_url(route)),
                        &route.name,
                    )
                    .await;
            }
            Err(UseError::Refused { why, claims }) => {
                return self
                    .refuse(
                        attribute(event, &claims),
                        Refusal::unauthorized(why, self.metadata_url(route)),
                        &route.name,
                    )
                    .await;
            }
            Err(UseError::Unavailable) => {
                let e = Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the broker's store is unavailable; try again".to_owned(),
                );
                return self.refuse(event, e, &route.name).await;
            }
        };
        event = describe(event, &task);

        // The agent may not choose the upstream credential.
        let cred_header = route.credential.header();
        if cred_header != route.agent_header && req.headers().contains_key(&cred_header) {
            let e = Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "the request sets `{cred_header}`, which warrant sets for route `{}`; send only your task token (in `{}`)",
                    route.name, route.agent_header
                ),
            );
            return self.refuse(event, e, &route.name).await;
        }

        // What it asks for.
        if !route.allow.iter().any(|r| r.admits(&method, &rest)) {
            let e = Refusal::forbidden(
                "route allow list",
                format!(
                    "route `{}` does not allow {method} {}",
                    route.name,
                    shown(&rest, 200)
                ),
                format!(
                    "ask an administrator to add {method} {} to the `allow` rules of [[route]] `{}` in warrant.toml",
                    shown(&rest, 200),
                    route.name
                ),
                Vec::new(),
            );
            return self
                .refuse(
                    event.reason("route allow list: method and path not allowed"),
                    e,
                    &route.name,
                )
                .await;
        }
        let req_facts = self.decision_request(route, &task, &method, &rest, peer, now);
        let (decision, decided) = self
            .s
            .authorizer
            .decide_for_record(&req_facts, event.clone());
        event = AuditEvent {
            user: Some(task.claims.sub.clone()),
            ..decided
        };
        if decision.effect != Effect::Allow {
            let pending = decision.effect == Effect::ApprovalRequired;
            let e = Refusal::forbidden(
                if pending {
                    "approval required"
                } else if decision.policies.is_empty() {
                    "policy (default deny)"
                } else {
                    "policy (forbid)"
                },
                if pending {
                    format!(
                        "a permit for this request on route `{}` requires a person's approval, which this version of the proxy cannot wait for",
                        route.name
                    )
                } else {
                    format!(
                        "policy does not allow agent `{}` {method} {} on route `{}`",
                        task.agent.name,
                        shown(&rest, 200),
                        route.name
                    )
                },
                format!(
                    "ask an administrator for a permit on Action::\"http:request\" and Route::\"{}\" (check it with `warrant policy check`)",
                    route.name
                ),
                decision.policies.clone(),
            );
            return self.refuse(event, e, &route.name).await;
        }

        // Size, before any upstream contact.
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > route.max_request_bytes
        {
            let e = Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is {len} bytes; route `{}` accepts at most {}",
                    route.name, route.max_request_bytes
                ),
            );
            return self.refuse(event, e, &route.name).await;
        }
        // INVARIANT (one reading of method and path): a POST body a
        // framework would read a method override from is read first.
        let req = match body::without_overrides(
            req,
            &route.name,
            task.agent.name.as_str(),
            route.max_request_bytes,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return self.refuse(event, e, &route.name).await,
        };

        let providers = Providers {
            source: &*self.s.credentials,
            issuer: &self.s.issuer,
        };
        let injected = match providers
            .obtain(route.into(), rs.oauth.as_ref(), Some(&task))
            .await
        {
            Ok(i) => i,
            Err(CredentialError::Refused(msg)) => {
                let e = Refusal::forbidden(
                    "credential",
                    msg,
                    "ask an administrator to store the credential named above".into(),
                    Vec::new(),
                );
                return self
                    .refuse(
                        event.credential_type(route.credential.kind()),
                        e,
                        &route.name,
                    )
                    .await;
            }
            Err(CredentialError::Unavailable(msg)) => {
                tracing::warn!(route = %route.name, error = %msg, "no upstream credential");
                let e = Refusal::new(StatusCode::BAD_GATEWAY, "credential_unavailable", msg);
                return self
                    .refuse(
                        event.credential_type(route.credential.kind()),
                        e,
                        &route.name,
                    )
                    .await;
            }
        };
        event = event
            .credential_type(route.credential.kind())
            .credential_id(injected.id.clone());
        self.forward(rs, req, rest, task, injected, event, start)
            .await
    }

    fn metadata_url(&self, r: &Route) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource/{}",
            self.s.edge_url, r.name
        )
    }

    /// Refuses what no route may carry, whatever the token says; returns the
    /// canonical path below the route.
    fn boundaries(&self, req: &Request<Body>, rest: &str) -> Result<String, Box<Refusal>> {
        let bad = |m: String| {
            Err(Box::new(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                m,
            )))
        };
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            return bad("absolute-form request targets are refused: this is not an open proxy; send `METHOD /<route>/<path>` to the edge listener".into());
        }
        if let Some(h) = repeated(req.headers(), &[header::HOST]) {
            return bad(format!(
                "`{h}` is sent more than once; send it once, so there is one reading of the request"
            ));
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.s.serves_host(host) {
            return bad(format!(
                "the Host header `{}` does not name this edge listener; the upstream is chosen by the route, never by Host (add names the edge is reached by to `edge_hosts` in warrant.toml)",
                shown(host, 100)
            ));
        }
        // INVARIANT (one reading of method and path): headers and query
        // parameters that frameworks honour to override the method or path
        // would let the upstream act on another request than the one the
        // rules and policy decided.
        // Servers behind CGI-style gateways read `_` in a header name as
        // `-` (both become `HTTP_X_..`), so a name with `_` has two
        // readings: refused, as nginx drops them by default.
        if let Some(k) = req.headers().keys().find(|k| k.as_str().contains('_')) {
            return bad(format!(
                "the header name `{}` has `_`, which servers may read as `-`; send it with `-`",
                shown(k.as_str(), 64)
            ));
        }
        if let Some(h) = OVERRIDES.iter().find(|h| req.headers().contains_key(**h)) {
            return bad(format!(
                "the `{h}` header is refused: upstream frameworks read it as another method or path than the one the edge decides on"
            ));
        }
        if let Some(q) = req.uri().query()
            && url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| body::is_override(&k))
        {
            return bad("the `_method` query parameter (in any spelling a framework reads as it) is refused: upstream frameworks read it as another method than the one the edge decides on".into());
        }
        let canonical = match path::canonical_path(rest) {
            Ok(c) => c,
            Err(why) => {
                return bad(format!(
                    "the path {why}; it could be read as another path than the one allowed"
                ));
            }
        };
        if req.headers().len() > MAX_HEADERS
            || req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum::<usize>()
                > MAX_HEADER_BYTES
        {
            return Err(Box::new(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes of them"),
            )));
        }
        Ok(canonical)
    }

    fn decision_request(
        &self,
        route: &Route,
        task: &TaskUse,
        method: &Method,
        path: &str,
        peer: SocketAddr,
        now: Timestamp,
    ) -> DecisionRequest {
        let mut req = task_request(
            task,
            Action::HttpRequest,
            Resource::Route(route.name.clone()),
            peer,
            now,
        );
        req.context.http = Some(HttpFacts {
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            host: route.upstream.authority(),
        });
        req
    }

    /// Records a refusal durably, then answers it.
    async fn refuse(&self, event: AuditEvent, e: Refusal, route: &str) -> Response {
        let mut event = event;
        event.decision =
            if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::UNAUTHORIZED {
                Outcome::Deny
            } else {
                Outcome::Error
            };
        if event.reasons.is_empty() {
            event.reasons.push(format!("{}: {}", e.code, e.message));
        }
        // The reasons may be the policies that allowed the request; what
        // refused it after all is always in the record.
        add_detail(
            &mut event,
            json!({ "status": e.status.as_u16(), "refusal": e.code }),
        );
        self.s.metrics.proxy_request(route, e.code);
        // Within the caller's budget (its source's, when no task token was
        // verified yet), else recorded in aggregate, not durably one by one.
        let Some(event) = self.s.audit.admit_known(event) else {
            return e.into_response();
        };
        match self.s.audit.append(event).await {
            Ok(()) => e.into_response(),
            Err(err) => {
                tracing::error!(error = %err, "cannot write the audit trail; edge request refused");
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable",
                    "the broker cannot write its audit trail, so it forwards nothing; try again later".to_owned()).into_response()
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        rs: &RouteState,
        req: Request<Body>,
        rest: String,
        task: TaskUse,
        injected: Injected,
        event: AuditEvent,
        start: Instant,
    ) -> Response {
        let route = &rs.route;
        let (parts, body) = req.into_parts();
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let uri = format!("{}{rest}{query}", route.upstream.as_url());
        let mut headers = forwardable(&parts.headers);
        headers.remove(&route.agent_header);
        // What an upstream may take as said by a proxy in front of it (the
        // client's address, who the user is) is not the agent's to say.
        let asserted: Vec<HeaderName> = headers
            .keys()
            .filter(|k| proxy_asserted(k.as_str()))
            .cloned()
            .collect();
        for k in asserted {
            headers.remove(k);
        }
        // Answers come whole: a credential echoed in a body is redacted as a
        // whole, and the agent cannot ask for it a few bytes at a time.
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&route.upstream.authority())
                .unwrap_or(HeaderValue::from_static("invalid")),
        );
        // Bodies arrive uncompressed so the redactor can see what they echo.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        headers.insert(
            HeaderName::from_static("traceparent"),
            traceparent(parts.headers.get("traceparent")),
        );
        if let Ok(v) = HeaderValue::from_str(&task.claims.txn) {
            headers.insert(HeaderName::from_static("x-warrant-txn"), v);
        }
        headers.insert(injected.header.clone(), injected.value.clone());
        let bytes_in = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = Body::new(http_body_util::Limited::new(
            body,
            usize::try_from(route.max_request_bytes).unwrap_or(usize::MAX),
        ));
        let mut out = match Request::builder()
            .method(parts.method.clone())
            .uri(&uri)
            .body(body)
        {
            Ok(r) => r,
            Err(_) => {
                let e = Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request cannot be forwarded as it is".into(),
                );
                return self.refuse(event, e, &route.name).await;
            }
        };
        *out.headers_mut() = headers;
        let Ok(permit) = self.pending_records.clone().acquire_owned().await else {
            let e = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the broker is shutting down".to_owned(),
            );
            return self.refuse(event, e, &route.name).await;
        };
        let sent = Instant::now();
        let before = sent - start;
        let answer = tokio::time::timeout(route.timeout, rs.client.request(out)).await;
        let upstream_headers = sent.elapsed();
        let resp = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if over_limit(&e) => {
                // A body without a length, cut off at the limit mid-upload.
                let mut ev = event;
                ev.decision = Outcome::Error;
                let e = Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the request body is over the {} bytes route `{}` accepts; the upload was cut off",
                        route.max_request_bytes, route.name
                    ),
                );
                return self.upstream_failed(ev, e, &route.name).await;
            }
            Ok(Err(e)) => {
                let why = if e.is_connect() {
                    "could not be reached"
                } else {
                    "failed"
                };
                tracing::warn!(route = %route.name, error = %e, "upstream request failed");
                let mut ev = event;
                ev.decision = Outcome::Allow;
                let e = Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    format!("the upstream of route `{}` {why}", route.name),
                );
                return self.upstream_failed(ev, e, &route.name).await;
            }
            Err(_) => {
                let mut ev = event;
                ev.decision = Outcome::Allow;
                let e = Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "the upstream of route `{}` did not answer within {}s",
                        route.name,
                        route.timeout.as_secs()
                    ),
                );
                return self.upstream_failed(ev, e, &route.name).await;
            }
        };
        let after_start = Instant::now();
        let redactor = Redactor::new(injected.echoes);
        // The edge asked for `identity`; a body encoded anyway cannot be
        // inspected for an echoed credential, so it is not passed on.
        if redactor.is_active()
            && let Some(coding) = uninspectable(resp.headers())
        {
            let mut ev = event;
            ev.decision = Outcome::Error;
            let e = Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream_encoding",
                format!(
                    "the upstream of route `{}` answered with encoding `{}` though the edge asked for none; warrant passes on only what it can inspect for the injected credential",
                    route.name,
                    shown(&coding, 40)
                ),
            );
            drop(permit);
            return self.upstream_failed(ev, e, &route.name).await;
        }
        let (mut rparts, rbody) = resp.into_parts();
        // Nothing of the upstream's answer but status, headers and body: a
        // custom reason phrase (kept in the extensions) is not passed on.
        rparts.extensions = http::Extensions::new();
        let mut rheaders = forwardable(&rparts.headers);
        // A session the upstream opens for the injected credential would be
        // a credential in the agent's hands, usable without the edge.
        rheaders.remove(header::SET_COOKIE);
        if redactor.is_active() {
            // A header whose name spells the credential goes altogether.
            let named: Vec<HeaderName> = rheaders
                .keys()
                .filter(|k| redactor.occurs_ignoring_case(k.as_str().as_bytes()))
                .cloned()
                .collect();
            for k in named {
                rheaders.remove(k);
            }
            for v in rheaders.values_mut() {
                if let Some(clean) = redactor.redact_all(v.as_bytes()) {
                    *v = HeaderValue::from_bytes(&clean)
                        .unwrap_or(HeaderValue::from_static("[redacted by warrant]"));
                }
            }
            // The body may change length when something is redacted.
            rheaders.remove(header::CONTENT_LENGTH);
        }
        rparts.headers = rheaders;
        let status = rparts.status;
        self.s.metrics.proxy_request(&route.name, "forwarded");
        self.s
            .metrics
            .proxy_upstream(&route.name, upstream_headers.as_secs_f64());
        self.s
            .metrics
            .proxy_added(&route.name, (before + after_start.elapsed()).as_secs_f64());
        let completion = Completion {
            event,
            status: status.as_u16(),
            bytes_in,
            upstream_ms: upstream_headers.as_secs_f64() * 1000.0,
            audit: self.s.audit.clone(),
            permit,
        };
        let body = Tracked {
            inner: rbody,
            redactor,
            bytes_out: 0,
            ended: false,
            completion: Some(completion),
        };
        Response::from_parts(rparts, Body::new(body))
    }

    async fn upstream_failed(&self, event: AuditEvent, e: Refusal, route: &str) -> Response {
        let mut event = event;
        add_detail(
            &mut event,
            json!({ "status": e.status.as_u16(), "refusal": e.code, "error": e.message }),
        );
        self.s.metrics.proxy_request(route, e.code);
        // A failure is counted and logged by the sink; the answer is the
        // upstream's failure either way.
        let _ = self.s.audit.append(event).await;
        e.into_response()
    }
}

/// The decision request for a use of a task token at the edge: the acting
/// instance as principal, the user, groups, scopes, chain, depth, task, txn,
/// time and source address as context.
pub(crate) fn task_request(
    task: &TaskUse,
    action: Action,
    resource: Resource,
    peer: SocketAddr,
    now: Timestamp,
) -> DecisionRequest {
    let c = &task.claims;
    let mut context = Context::at(now);
    context.user = c.sub.strip_prefix("user:").map(|u| UserRef {
        id: u.to_owned(),
        groups: task.groups.clone(),
    });
    context.scopes = c
        .scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    context.depth = u32::try_from(c.depth()).unwrap_or(u32::MAX);
    context.chain = c
        .act
        .as_ref()
        .map(|a| {
            a.chain()
                .into_iter()
                .rev()
                .filter_map(warrant_core::task::agent_of)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    context.task = Some(c.task.clone());
    context.txn = Some(c.txn.clone());
    context.source_ip = Some(peer.ip());
    let a = &task.agent;
    DecisionRequest {
        principal: Principal {
            agent: AgentFacts {
                name: a.name.to_string(),
                owner: a.owner.to_string(),
                env: a.env.to_string(),
                trust: a.trust,
                purpose: a.purpose.to_string(),
            },
            instance: task.instance.clone(),
            attestor: task.attestor.clone(),
        },
        action,
        resource,
        context,
    }
}

/// Whether a client error was the request body passing its limit.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

pub(crate) fn add_detail(event: &mut AuditEvent, more: serde_json::Value) {
    let mut d = event.detail.take().unwrap_or_else(|| json!({}));
    if let (Some(d), serde_json::Value::Object(m)) = (d.as_object_mut(), more) {
        d.extend(m);
    }
    event.detail = Some(d);
}

pub(crate) fn describe(event: AuditEvent, t: &TaskUse) -> AuditEvent {
    for_whom(event, &t.claims)
        .agent(t.agent.name.to_string())
        .instance(t.instance.clone())
}

/// What a task token warrant issued says about who acts for whom: the
/// user, task, txn, scope and chain, and the acting agent and instance
/// named by its SPIFFE ID. For the record of a use refused after the token
/// verified (expired, revoked, an agent disabled), so a trace shows who
/// kept trying.
pub(crate) fn attribute(event: AuditEvent, c: &TaskClaims) -> AuditEvent {
    let mut e = for_whom(event, c);
    // `spiffe://<domain>/agent/<name>/<instance>` of the current actor (or
    // of the agent itself when it acts for itself).
    let actor = c.act.as_ref().map_or(c.sub.as_str(), |a| a.sub.as_str());
    if let Some(rest) = actor.strip_prefix("spiffe://")
        && let Some((_, path)) = rest.split_once("/agent/")
        && let Some((name, instance)) = path.split_once('/')
    {
        e = e.agent(name.to_owned()).instance(instance.to_owned());
    }
    e
}

/// The user, task, txn, scope, parent and chain a task token names.
fn for_whom(event: AuditEvent, c: &TaskClaims) -> AuditEvent {
    let mut e = event
        .user(c.sub.clone())
        .task(c.task.clone())
        .txn(c.txn.clone())
        .scope(c.scope.clone());
    e.parent = c.parent.clone();
    e.chain = c
        .act
        .as_ref()
        .map(|a| a.chain().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    e
}

/// The agent's task token from `header` (`Bearer <token>` in
/// `authorization`; the bare token, or `Bearer <token>`, elsewhere).
fn agent_token<'a>(headers: &'a HeaderMap, header: &HeaderName) -> Result<&'a str, String> {
    let mut values = headers.get_all(header).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return Err(format!(
            "send your task token in `{header}`{}",
            if header == header::AUTHORIZATION {
                " as `Bearer <task token>`"
            } else {
                ""
            }
        ));
    };
    let v = v
        .to_str()
        .map_err(|_| format!("`{header}` is not text"))?
        .trim();
    let token = match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        Some(_) => return Err(format!("`{header}` must be `Bearer <task token>`")),
        None if header == header::AUTHORIZATION => {
            return Err("`authorization` must be `Bearer <task token>`".into());
        }
        None => v,
    };
    if token.is_empty() {
        return Err(format!("`{header}` holds no token"));
    }
    Ok(token)
}

/// A content or transfer coding of an answer that the redactor cannot see
/// through (anything but `identity`, and `chunked` for transfer).
pub(crate) fn uninspectable(h: &HeaderMap) -> Option<String> {
    let codings = |name: &HeaderName| -> Vec<String> {
        h.get_all(name)
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    codings(&header::CONTENT_ENCODING)
        .into_iter()
        .find(|c| c != "identity")
        .or_else(|| {
            codings(&header::TRANSFER_ENCODING)
                .into_iter()
                .find(|c| c != "chunked")
        })
}

/// The first of `names` that `headers` carry more than once: one request
/// must have one reading, and servers disagree on which of two values wins.
pub(crate) fn repeated<'a>(headers: &HeaderMap, names: &'a [HeaderName]) -> Option<&'a HeaderName> {
    names
        .iter()
        .find(|n| headers.get_all(*n).iter().nth(1).is_some())
}

/// The headers that may cross the proxy: not hop-by-hop, not named in
/// `Connection`, not `Host`.
/// Request headers that frameworks and proxies read as another method or
/// path.
const OVERRIDES: [&str; 14] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-path",
    "x-envoy-original-path",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-override-method",
];

/// Headers an upstream reads as set by a trusted proxy in front of it:
/// forwarding (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, ...) and the
/// user identity auth proxies assert (`X-Remote-User`, `X-Auth-Request-*`,
/// ...), and warrant's own (`X-Warrant-*`). An agent's are dropped.
fn proxy_asserted(name: &str) -> bool {
    const EXACT: [&str; 10] = [
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
        "remote-user",
        "x-user",
        "x-email",
        "x-authenticated-user",
    ];
    const PREFIXES: [&str; 6] = [
        "x-forwarded-",
        "x-remote-",
        "x-auth-request-",
        "x-warrant-",
        "x-authenticated-",
        "x-webauth-",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A query key as PHP (and so Symfony and Laravel) stores it: leading
/// spaces dropped, `.`, ` ` and an unclosed `[` read as `_`; lower-cased.
fn php_key(k: &str) -> String {
    let k = k.trim_start_matches(' ');
    let mut out = String::with_capacity(k.len());
    let mut closed = false;
    for (i, c) in k.char_indices() {
        match c {
            '.' | ' ' => out.push('_'),
            '[' if !closed && !k[i..].contains(']') => out.push('_'),
            '[' => {
                closed = true;
                out.push('[');
            }
            c => out.push(c.to_ascii_lowercase()),
        }
    }
    out
}

fn forwardable(h: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        if is_hop_by_hop(k) || k == header::HOST || named.iter().any(|n| n == k.as_str()) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// The agent's `traceparent` if well formed (W3C: version 00, 32 and 16 hex
/// digits, flags), else a new one.
fn traceparent(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given
        && let Ok(s) = v.to_str()
    {
        let p: Vec<&str> = s.split('-').collect();
        let hex = |x: &str, n: usize| {
            x.len() == n
                && x.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if p.len() == 4
            && p[0] == "00"
            && hex(p[1], 32)
            && hex(p[2], 16)
            && hex(p[3], 2)
            && p[1] != "0".repeat(32)
        {
            return v.clone();
        }
    }
    let ids = warrant_host::random::bytes::<24>().unwrap_or([1; 24]);
    HeaderValue::from_str(&format!(
        "00-{}-{}-01",
        hex::encode(&ids[..16]),
        hex::encode(&ids[16..])
    ))
    .unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-01",
    ))
}

/// A refusal: status, code, message, and for 403s which rule class refused.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    refused_by: Option<&'static str>,
    hint: Option<String>,
    policies: Vec<String>,
    www_authenticate: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
            refused_by: None,
            hint: None,
            policies: Vec::new(),
            www_authenticate: None,
        }
    }

    fn unauthorized(message: String, metadata: String) -> Self {
        let quoted = message.replace(['"', '\\'], "'");
        Self {
            www_authenticate: Some(format!(
                "Bearer realm=\"warrant\", error=\"invalid_token\", error_description=\"{quoted}\", resource_metadata=\"{metadata}\""
            )),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
        }
    }

    fn forbidden(
        refused_by: &'static str,
        message: String,
        hint: String,
        policies: Vec<String>,
    ) -> Self {
        Self {
            refused_by: Some(refused_by),
            hint: Some(hint),
            policies,
            ..Self::new(StatusCode::FORBIDDEN, "access_denied", message)
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // `{"error": {"message", "type", "code"}}`: the shape provider SDKs
        // (OpenAI's, Anthropic's) read, so an agent's SDK shows the message.
        let mut error = json!({ "message": self.message, "type": self.code, "code": self.code });
        if let Some(r) = self.refused_by {
            error["refused_by"] = json!(r);
        }
        if !self.policies.is_empty() {
            error["policies"] = json!(self.policies);
        }
        if let Some(h) = self.hint {
            error["how_to_get_access"] = json!(h);
        }
        let mut r = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(w) = self.www_authenticate
            && let Ok(v) = HeaderValue::from_str(&w)
        {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

/// The record of an allowed request, written when its response ends.
struct Completion {
    event: AuditEvent,
    status: u16,
    bytes_in: Option<u64>,
    upstream_ms: f64,
    audit: Arc<dyn crate::services::AuditSink>,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Completion {
    fn finish(self, bytes_out: u64, outcome: &'static str) {
        let mut event = self.event;
        add_detail(
            &mut event,
            json!({
                "status": self.status,
                "bytes_in": self.bytes_in,
                "bytes_out": bytes_out,
                "upstream_ms": (self.upstream_ms * 1000.0).round() / 1000.0,
                "response": outcome,
            }),
        );
        let (audit, permit) = (self.audit, self.permit);
        // Off the response path, batched with other answered requests.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                audit.record_batched(event).await;
                drop(permit);
            });
        }
    }
}

/// The upstream's body, redacted and counted on its way to the agent.
struct Tracked {
    inner: hyper::body::Incoming,
    redactor: Redactor,
    bytes_out: u64,
    ended: bool,
    completion: Option<Completion>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.redactor.push(&data);
                        if out.is_empty() {
                            continue;
                        }
                        this.bytes_out += out.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(frame) => {
                        // Trailers are headers too: an echo there is redacted.
                        let frame = match frame.into_trailers() {
                            Ok(mut trailers) => {
                                let named: Vec<HeaderName> = trailers
                                    .keys()
                                    .filter(|k| {
                                        this.redactor.occurs_ignoring_case(k.as_str().as_bytes())
                                    })
                                    .cloned()
                                    .collect();
                                for k in named {
                                    trailers.remove(k);
                                }
                                for v in trailers.values_mut() {
                                    if let Some(clean) = this.redactor.redact_all(v.as_bytes()) {
                                        *v = HeaderValue::from_bytes(&clean).unwrap_or(
                                            HeaderValue::from_static("[redacted by warrant]"),
                                        );
                                    }
                                }
                                Frame::trailers(trailers)
                            }
                            Err(other) => other,
                        };
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    if let Some(c) = this.completion.take() {
                        c.finish(this.bytes_out, "upstream_error");
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let tail = this.redactor.finish();
                    this.bytes_out += tail.len() as u64;
                    if let Some(c) = this.completion.take() {
                        c.finish(this.bytes_out, "complete");
                    }
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // The agent went away before the end (or the body was never read,
        // as for HEAD): still one record.
        if let Some(c) = self.completion.take() {
            let how = if http_body::Body::is_end_stream(&self.inner) {
                "complete"
            } else {
                "client_closed"
            };
            c.finish(self.bytes_out, how);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_found() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("a"));
        assert!(repeated(&h, &[header::HOST, header::ORIGIN]).is_none());
        h.append(header::HOST, HeaderValue::from_static("a"));
        assert_eq!(
            repeated(&h, &[header::ORIGIN, header::HOST]),
            Some(&header::HOST)
        );
    }

    #[test]
    fn tokens_come_from_the_configured_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(agent_token(&h, &header::AUTHORIZATION).unwrap(), "abc");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(agent_token(&h, &header::AUTHORIZATION).is_err());
        let x = HeaderName::from_static("x-api-key");
        h.insert(x.clone(), HeaderValue::from_static("abc"));
        assert_eq!(agent_token(&h, &x).unwrap(), "abc");
        h.append(x.clone(), HeaderValue::from_static("def"));
        assert!(agent_token(&h, &x).is_err(), "two tokens");
        assert!(
            agent_token(&HeaderMap::new(), &x)
                .unwrap_err()
                .contains("x-api-key")
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_stop_here() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert(header::HOST, HeaderValue::from_static("evil"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let f = forwardable(&h);
        assert_eq!(f.len(), 1);
        assert!(f.contains_key("x-keep"));
    }

    #[test]
    fn traceparent_is_kept_when_valid() {
        let good =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(traceparent(Some(&good)), good);
        let made = traceparent(Some(&HeaderValue::from_static("junk")));
        assert_eq!(made.len(), 55);
        assert_ne!(traceparent(None), traceparent(None));
    }
}
