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

mod aws;
mod body;
pub mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use warrant_core::approval::{ApprovalSubject, StepUp};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::decision::{Action, Decision, DecisionRequest, Effect, HttpFacts, Resource};
use warrant_core::task::{TaskUse, UseError};
use warrant_core::text::shown;
use warrant_core::time::Timestamp;

use crate::boundary;
use crate::credential::{CredentialError, Injected, Providers, TokenCache};
use crate::redact::Redactor;
use crate::refusal::{Refusal, Shape};
use crate::services::EdgeServices;
use crate::task::{add_detail, attribute, describe, task_request};
use crate::upstream::{self, Scheme, is_hop_by_hop};
use aws::{AwsFacts, error_shape};
use route::Route;

type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// One configured route with its client.
struct RouteState {
    route: Route,
    client: Upstream,
    oauth: Option<TokenCache>,
    /// For an `mtls` route: the client presenting the stored certificate,
    /// and the digest of the secret it was built from (a rotation, or a
    /// delete and put, builds anew).
    mtls: parking_lot::Mutex<Option<([u8; 32], Upstream)>>,
}

impl RouteState {
    fn new(r: Route) -> Result<Self, String> {
        let https = r.upstream.scheme == Scheme::Https;
        let conn = upstream::connector(https, r.ca_file.as_deref(), r.connect_timeout)
            .map_err(|e| format!("route `{}`: {e}", r.name))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(conn);
        let oauth = match r.credential.token_endpoint() {
            Some((token_url, ca_file)) => {
                let conn =
                    upstream::connector(token_url.scheme() == "https", ca_file, r.connect_timeout)
                        .map_err(|e| format!("route `{}`: {e}", r.name))?;
                Some(TokenCache::new(
                    Client::builder(TokioExecutor::new()).build(conn),
                ))
            }
            None => None,
        };
        Ok(Self {
            route: r,
            client,
            oauth,
            mtls: parking_lot::Mutex::default(),
        })
    }

    /// The client for one request: the route's, or for a client
    /// certificate one presenting it (built once per secret version).
    fn client_for(&self, injected: &crate::credential::Injected) -> Result<Upstream, Box<Refusal>> {
        let Some(identity) = &injected.tls else {
            return Ok(self.client.clone());
        };
        let mut held = self.mtls.lock();
        if let Some((fp, c)) = held.as_ref()
            && *fp == identity.fingerprint
        {
            return Ok(c.clone());
        }
        let r = &self.route;
        let conn = upstream::connector_presenting(r.ca_file.as_deref(), r.connect_timeout, identity)
            .map_err(|e| {
                tracing::warn!(route = %r.name, error = %e, "cannot use the route's client certificate");
                Box::new(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "credential_unavailable",
                    format!("the client certificate of route `{}` cannot be used: {e}", r.name),
                ))
            })?;
        let c: Upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(conn);
        *held = Some((identity.fingerprint, c.clone()));
        Ok(c)
    }
}

/// Routes whose clients are built, ready to be put in force.
#[allow(missing_debug_implementations)]
pub struct PreparedRoutes(HashMap<String, Arc<RouteState>>);

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
    /// The routes in force: replaced whole by a reload, read once per
    /// request.
    routes: ArcSwap<HashMap<String, Arc<RouteState>>>,
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
            .field("routes", &self.routes.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ProxyService {
    /// Builds a client per route (reading CA files now, so a bad one is a
    /// start-up error).
    pub fn new(p: ProxyParts) -> Result<Self, String> {
        let service = Self {
            routes: ArcSwap::from_pointee(HashMap::new()),
            s: p.services,
            pending_records: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_RECORDS)),
        };
        let routes = service.prepare(p.routes)?;
        service.install(routes);
        Ok(service)
    }

    /// Whether a route of this name exists.
    pub fn has_route(&self, name: &str) -> bool {
        self.routes.load().contains_key(name)
    }

    /// The routes in force, by name.
    pub fn routes(&self) -> Vec<Route> {
        let mut v: Vec<Route> = self
            .routes
            .load()
            .values()
            .map(|r| r.route.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Builds the clients of a new set of routes (reading CA files now, so
    /// a bad one refuses the whole set); a route unchanged keeps its client
    /// pool and cached OAuth token. Nothing is in force until
    /// [`install`](Self::install).
    pub fn prepare(&self, routes: Vec<Route>) -> Result<PreparedRoutes, String> {
        let current = self.routes.load();
        let mut out = HashMap::new();
        for r in routes {
            if out.contains_key(&r.name) {
                return Err(format!("route `{}` is configured twice", r.name));
            }
            let state = match current.get(&r.name) {
                Some(rs) if rs.route == r => rs.clone(),
                _ => Arc::new(RouteState::new(r)?),
            };
            out.insert(state.route.name.clone(), state);
        }
        Ok(PreparedRoutes(out))
    }

    /// Puts prepared routes in force: the next request reads them.
    pub fn install(&self, routes: PreparedRoutes) {
        self.routes.store(Arc::new(routes.0));
    }

    /// RFC 9728 metadata for a route.
    pub fn resource_metadata(&self, name: &str) -> Option<serde_json::Value> {
        let routes = self.routes.load();
        let r = &routes.get(name)?.route;
        Some(json!({
            "resource": format!("{}/{}", self.s.edge_url, r.name),
            "authorization_servers": [&*self.s.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": format!("warrant egress route `{}` to {}", r.name, r.upstream.as_url()),
            "warrant_audience": r.audience,
            // Where an agent puts its task token on this route (clients such
            // as the Python SDK and `warrant sidecar` read it here).
            "warrant_token_header": r.agent_header.as_str(),
        }))
    }

    /// Answers one request at the edge whose first path segment is a route:
    /// read the target, authenticate the task token, decide, obtain the
    /// credential, then forward; a refusal at any step is recorded and
    /// answered.
    pub async fn handle(&self, req: Request<Body>, peer: SocketAddr) -> Response {
        let start = Instant::now();
        let (name, rest) = split_target(req.uri().path());
        let mut event = AuditEvent::new(Kind::ProxyRequest, Outcome::Deny)
            .protocol("http")
            .action(Action::HttpRequest.as_str())
            .source(peer.to_string())
            .detail(json!({ "method": req.method().as_str(), "path": shown(&rest, 300) }));
        let (label, shape) = match self.routes.load().get(&name) {
            Some(rs) => {
                event.resource = Some(Resource::Route(name.clone()).to_string());
                (name.as_str(), error_shape(&rs.route, req.headers()))
            }
            None => ("-", Shape::Warrant),
        };
        match self.admit(req, peer, &name, &rest, &mut event).await {
            Ok(a) => self.forward(a, event, start).await,
            Err(e) => self.refuse(event, *e, label, shape).await,
        }
    }

    /// Every check before any upstream contact, in order; what passes is a
    /// request the edge may forward with the credential it obtained.
    async fn admit(
        &self,
        req: Request<Body>,
        peer: SocketAddr,
        name: &str,
        rest: &str,
        event: &mut AuditEvent,
    ) -> Result<Admitted, Box<Refusal>> {
        let (rs, path) = match self.target(&req, name, rest) {
            Ok(t) => t,
            Err(e) => {
                self.attribute_refusal(req.headers(), name, event).await;
                return Err(e);
            }
        };
        let route = &rs.route;
        let task = self.authenticate(req.headers(), route, event).await?;
        let approval = self.decide(&req, route, &task, &path, peer, event)?;
        let mut req = self.read(req, route, &task).await?;
        if let Some((decision, facts)) = approval {
            req = self
                .step_up(req, route, &task, &path, (decision, facts), event)
                .await?;
        }
        let aws = aws::read(&self.s, (&req, &path), route, &task, peer, event)?;
        event.credential_type = Some(route.credential.kind().to_owned());
        let injected = self.credential(&rs, &task).await?;
        event.credential_id = Some(injected.id.clone());
        self.s.metrics.upstream_credential(&route.credential);
        Ok(Admitted {
            rs,
            req,
            path,
            task,
            injected,
            aws,
        })
    }

    /// Read: what no route may carry refused, the route found, the path in
    /// its one spelling (what `allow` rules, policy and the upstream see).
    fn target(
        &self,
        req: &Request<Body>,
        name: &str,
        rest: &str,
    ) -> Result<(Arc<RouteState>, String), Box<Refusal>> {
        if req.method() == Method::CONNECT {
            return Err(Box::new(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is refused: the edge is not an open proxy; send requests to `/<route>/<path>`".to_owned(),
            )));
        }
        let path = self.boundaries(req, rest)?;
        let Some(rs) = self.routes.load().get(name).cloned() else {
            return Err(Box::new(Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no route or MCP server named `{}` is configured on this edge listener",
                    shown(name, 64)
                ),
            )));
        };
        if self.s.audit.batch_failed() {
            return Err(Box::new(Refusal::audit_unavailable()));
        }
        Ok((rs, path))
    }

    /// A request refused for its shape (a path that escapes, an override
    /// header, a foreign Host) by an agent with a good task token for the
    /// route is still recorded as that agent's: probing is traced to who
    /// probed. Nothing else depends on the token here.
    async fn attribute_refusal(&self, headers: &HeaderMap, name: &str, event: &mut AuditEvent) {
        let Some(rs) = self.routes.load().get(name).cloned() else {
            return;
        };
        let route = &rs.route;
        let Ok(token) =
            boundary::route_token(headers, &route.agent_header, route.other_authorization())
        else {
            return;
        };
        match self
            .s
            .tasks
            .task_for_use(token, &route.audience, Timestamp::now())
            .await
        {
            Ok(task) => describe(event, &task),
            Err(UseError::Refused { claims, .. }) => attribute(event, &claims),
            Err(_) => {}
        }
    }

    /// Authenticate: the task token, valid for the route's audience, and
    /// the record attributed to whoever it names.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        route: &Route,
        event: &mut AuditEvent,
    ) -> Result<TaskUse, Box<Refusal>> {
        let metadata = self.metadata_url(route);
        let token =
            boundary::route_token(headers, &route.agent_header, route.other_authorization())
                .map_err(|e| Refusal::unauthorized(e.message, &metadata, e.sent))?;
        let task = match self
            .s
            .tasks
            .task_for_use(token, &route.audience, Timestamp::now())
            .await
        {
            Ok(t) => t,
            Err(UseError::Invalid(msg)) => {
                return Err(Box::new(Refusal::unauthorized(msg, &metadata, true)));
            }
            Err(UseError::Refused { why, claims }) => {
                attribute(event, &claims);
                return Err(Box::new(Refusal::unauthorized(why, &metadata, true)));
            }
            Err(UseError::Unavailable) => return Err(Box::new(Refusal::store_unavailable())),
        };
        describe(event, &task);
        Ok(task)
    }

    /// Decide: the agent may not choose the upstream credential; the
    /// route's `allow` rules, then Cedar on `http:request`. A request every
    /// applying permit allows only with a person's approval is returned
    /// with its decision, to be bound to its body and asked for.
    fn decide(
        &self,
        req: &Request<Body>,
        route: &Route,
        task: &TaskUse,
        path: &str,
        peer: SocketAddr,
        event: &mut AuditEvent,
    ) -> Result<Option<(Decision, DecisionRequest)>, Box<Refusal>> {
        let method = req.method();
        // (`authorization`, when present, held this request's task token:
        // `route_token` admits nothing else there.)
        if let Some(cred_header) = route.credential.header()
            && cred_header != route.agent_header
            && cred_header != header::AUTHORIZATION
            && req.headers().contains_key(&cred_header)
        {
            return Err(Box::new(Refusal::invalid(format!(
                "the request sets `{cred_header}`, which warrant sets for route `{}`; send only your task token (in `{}`)",
                route.name, route.agent_header
            ))));
        }
        if !route.allow.iter().any(|r| r.admits(method, path)) {
            event
                .reasons
                .push("route allow list: method and path not allowed".into());
            return Err(Box::new(Refusal::forbidden(
                "route allow list",
                format!(
                    "route `{}` does not allow {method} {}",
                    route.name,
                    shown(path, 200)
                ),
                format!(
                    "ask an administrator to add {method} {} to the `allow` rules of [[route]] `{}` in warrant.toml",
                    shown(path, 200),
                    route.name
                ),
                Vec::new(),
            )));
        }
        let facts = decision_request(route, task, method, path, peer, Timestamp::now());
        let (decision, decided) = self.s.authorizer.decide_for_record(&facts, event.take());
        *event = decided;
        match decision.effect {
            Effect::Allow => return Ok(None),
            Effect::ApprovalRequired => return Ok(Some((decision, facts))),
            Effect::Deny => {}
        }
        Err(Box::new(Refusal::forbidden(
            crate::refusal::refused_by_policy(&decision.policies),
            format!(
                "policy does not allow agent `{}` {method} {} on route `{}`",
                task.agent.name,
                shown(path, 200),
                route.name
            ),
            format!(
                "ask an administrator for a permit on Action::\"http:request\" and Route::\"{}\" (check it with `warrant policy check`)",
                route.name
            ),
            decision.policies,
        )))
    }

    /// A request policy allows only with a person's approval: bound to
    /// its route, method, canonical path, query and a digest of its body
    /// (read into memory for it), for this task and user; it goes ahead
    /// only with a grant, spent on it now.
    async fn step_up(
        &self,
        req: Request<Body>,
        route: &Route,
        task: &TaskUse,
        path: &str,
        (decision, facts): (Decision, DecisionRequest),
        event: &mut AuditEvent,
    ) -> Result<Request<Body>, Box<Refusal>> {
        let (req, bytes) = body::buffered(
            req,
            &route.name,
            task.agent.name.as_str(),
            route.max_request_bytes,
        )
        .await
        .map_err(Box::new)?;
        let body_sha256 = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let body_bytes = bytes.len();
        // The body is bound as the upstream will read it: its bytes and
        // the type it is declared as (the same bytes as a form are another
        // request).
        let content_type: Vec<String> = req
            .headers()
            .get_all(header::CONTENT_TYPE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
            .collect();
        let subject = ApprovalSubject::of(
            &facts,
            json!({
                "route": route.name,
                "method": req.method().as_str(),
                "path": path,
                "query": req.uri().query().unwrap_or(""),
                "content_type": content_type,
                "body_sha256": body_sha256,
                "body_bytes": body_bytes,
            }),
        );
        let shown_to_approver = json!({ "body": body_preview(&bytes, &content_type) });
        let step = self
            .s
            .approvals
            .step_up(
                subject,
                shown_to_approver,
                decision.approval.unwrap_or_default(),
                decision.policies,
                event,
            )
            .await;
        match &step {
            StepUp::Approved(a) => {
                add_detail(event, json!({ "approval": a.id }));
                event.decision = Outcome::Allow;
                return Ok(req);
            }
            StepUp::Pending(a) | StepUp::Denied(a) => {
                add_detail(event, json!({ "approval": a.id }));
            }
            StepUp::Refused(_) => {}
            StepUp::Unavailable(e) => {
                tracing::error!(error = %e, "cannot read or write approvals; proxy request refused");
            }
        }
        Err(Box::new(Refusal::approval(&step)))
    }

    /// Read the body where it must be: a declared size over the route's
    /// limit is refused, and a POST body a framework would read a method
    /// override from is read first (INVARIANT: one reading of method and
    /// path).
    async fn read(
        &self,
        req: Request<Body>,
        route: &Route,
        task: &TaskUse,
    ) -> Result<Request<Body>, Box<Refusal>> {
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > route.max_request_bytes
        {
            return Err(Box::new(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is {len} bytes; route `{}` accepts at most {}",
                    route.name, route.max_request_bytes
                ),
            )));
        }
        body::without_overrides(
            req,
            &route.name,
            task.agent.name.as_str(),
            route.max_request_bytes,
        )
        .await
        .map_err(Box::new)
    }

    /// The upstream credential for this request.
    async fn credential(&self, rs: &RouteState, task: &TaskUse) -> Result<Injected, Box<Refusal>> {
        let route = &rs.route;
        let providers = Providers {
            source: &*self.s.credentials,
            issuer: &self.s.issuer,
        };
        match providers
            .obtain(route.into(), rs.oauth.as_ref(), Some(task))
            .await
        {
            Ok(i) => Ok(i),
            Err(CredentialError::Refused(msg)) => Err(Box::new(Refusal::forbidden(
                "credential",
                msg,
                "ask an administrator to store the credential named above".into(),
                Vec::new(),
            ))),
            Err(CredentialError::Scope(msg)) => Err(Box::new(Refusal::forbidden(
                "credential (task scope)",
                msg,
                "exchange a task token that holds one of the scopes named above".into(),
                Vec::new(),
            ))),
            Err(CredentialError::Unavailable(msg)) => {
                tracing::warn!(route = %route.name, error = %msg, "no upstream credential");
                Err(Box::new(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "credential_unavailable",
                    msg,
                )))
            }
        }
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
        let bad = |m: String| Err(Box::new(Refusal::invalid(m)));
        boundary::addressed_here(req, &self.s, &[])?;
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
        let canonical = match boundary::path::canonical_path(rest) {
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

    /// Records a refusal durably, then answers it.
    async fn refuse(&self, event: AuditEvent, e: Refusal, route: &str, shape: Shape) -> Response {
        let mut event = event;
        event.decision = if e.is_pending() {
            Outcome::Pending
        } else if e.is_denial() {
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
            return e.into_shaped(shape);
        };
        match self.s.audit.append(event).await {
            Ok(()) => e.into_shaped(shape),
            Err(err) => {
                tracing::error!(error = %err, "cannot write the audit trail; edge request refused");
                Refusal::audit_unavailable().into_response()
            }
        }
    }

    /// Forward: the admitted request to the route's origin with the
    /// credential, and its answer back through the redactor; the record is
    /// written when the answer ends.
    async fn forward(&self, a: Admitted, event: AuditEvent, start: Instant) -> Response {
        let route = &a.rs.route;
        let shape = error_shape(route, a.req.headers());
        let bytes_in = a
            .req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let out = match outgoing(route, a.req, &a.path, &a.task, (&a.injected, &a.aws)).await {
            Ok(r) => r,
            Err(e) => return self.refuse(event, *e, &route.name, shape).await,
        };
        let Ok(permit) = self.pending_records.clone().acquire_owned().await else {
            let e = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the broker is shutting down".to_owned(),
            );
            return self.refuse(event, e, &route.name, shape).await;
        };
        let sent = Instant::now();
        let client = match a.rs.client_for(&a.injected) {
            Ok(c) => c,
            Err(e) => {
                drop(permit);
                return self.refuse(event, *e, &route.name, shape).await;
            }
        };
        let answer = tokio::time::timeout(route.timeout, client.request(out)).await;
        let upstream_headers = sent.elapsed();
        let resp = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.upstream_failed(event, route, &e, shape).await,
            Err(_) => {
                let e = Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "the upstream of route `{}` did not answer within {}s",
                        route.name,
                        route.timeout.as_secs()
                    ),
                );
                return self
                    .upstream_refused(event, (Outcome::Allow, e), &route.name, shape)
                    .await;
            }
        };
        let after_start = Instant::now();
        let redactor = Redactor::new(a.injected.echoes);
        let (rparts, rbody) = match answer_parts(resp, &redactor, route) {
            Ok(p) => p,
            Err(e) => {
                drop(permit);
                return self
                    .upstream_refused(event, (Outcome::Error, *e), &route.name, shape)
                    .await;
            }
        };
        self.s.metrics.proxy_request(&route.name, "forwarded");
        self.s
            .metrics
            .proxy_upstream(&route.name, upstream_headers.as_secs_f64());
        self.s.metrics.proxy_added(
            &route.name,
            ((sent - start) + after_start.elapsed()).as_secs_f64(),
        );
        let completion = Completion {
            event,
            status: rparts.status.as_u16(),
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

    /// The upstream could not be sent the request or did not answer.
    async fn upstream_failed(
        &self,
        event: AuditEvent,
        route: &Route,
        e: &hyper_util::client::legacy::Error,
        shape: Shape,
    ) -> Response {
        if upstream::over_limit(e) {
            // A body without a length, cut off at the limit mid-upload.
            let r = Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is over the {} bytes route `{}` accepts; the upload was cut off",
                    route.max_request_bytes, route.name
                ),
            );
            return self
                .upstream_refused(event, (Outcome::Error, r), &route.name, shape)
                .await;
        }
        let why = if e.is_connect() {
            "could not be reached"
        } else {
            "failed"
        };
        tracing::warn!(route = %route.name, error = %e, "upstream request failed");
        let r = Refusal::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!("the upstream of route `{}` {why}", route.name),
        );
        self.upstream_refused(event, (Outcome::Allow, r), &route.name, shape)
            .await
    }

    /// Records an admitted request whose upstream leg failed, then answers.
    async fn upstream_refused(
        &self,
        event: AuditEvent,
        (outcome, e): (Outcome, Refusal),
        route: &str,
        shape: Shape,
    ) -> Response {
        let mut event = event;
        event.decision = outcome;
        add_detail(
            &mut event,
            json!({ "status": e.status.as_u16(), "refusal": e.code, "error": e.message }),
        );
        self.s.metrics.proxy_request(route, e.code);
        // A failure is counted and logged by the sink; the answer is the
        // upstream's failure either way.
        let _ = self.s.audit.append(event).await;
        e.into_shaped(shape)
    }
}

/// The request the upstream gets ([`upstream_request`]), signed with SigV4
/// on a route that signs for AWS.
async fn outgoing(
    route: &Route,
    req: Request<Body>,
    path: &str,
    task: &TaskUse,
    (injected, aws): (&Injected, &AwsFacts),
) -> Result<Request<Body>, Box<Refusal>> {
    let out = upstream_request(route, req, path, task, injected).map_err(Box::new)?;
    match &injected.sigv4 {
        Some(sig) => aws::signed(out, sig, aws, route, task.agent.name.as_str()).await,
        None => Ok(out),
    }
}

/// An admitted request: its route, its canonical path below the route, the
/// task it acts for and the credential obtained for it.
struct Admitted {
    rs: Arc<RouteState>,
    req: Request<Body>,
    path: String,
    task: TaskUse,
    injected: Injected,
    /// What the edge read of an AWS request.
    aws: AwsFacts,
}

/// The request the upstream gets: the route's origin, the canonical path
/// and the agent's query; the agent's token, hop-by-hop headers and what
/// only a proxy may assert removed; the credential injected.
fn upstream_request(
    route: &Route,
    req: Request<Body>,
    path: &str,
    task: &TaskUse,
    injected: &Injected,
) -> Result<Request<Body>, Refusal> {
    let (parts, body) = req.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("{}{path}{query}", route.upstream.as_url());
    let mut headers = forwardable(&parts.headers);
    // The task token wherever the agent put it, or the agent's own request
    // signature: never the upstream's to see.
    headers.remove(&route.agent_header);
    headers.remove(header::AUTHORIZATION);
    if route.credential.signs_requests() {
        // What the agent's SDK signed with; the edge signs anew.
        for h in ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"] {
            headers.remove(h);
        }
    }
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
    if let Some((h, v)) = &injected.header {
        headers.insert(h.clone(), v.clone());
    }
    let body = Body::new(http_body_util::Limited::new(
        body,
        usize::try_from(route.max_request_bytes).unwrap_or(usize::MAX),
    ));
    let mut out = Request::builder()
        .method(parts.method)
        .uri(&uri)
        .body(body)
        .map_err(|_| Refusal::invalid("the request cannot be forwarded as it is".into()))?;
    *out.headers_mut() = headers;
    Ok(out)
}

/// What of the upstream's answer goes back: status, headers and body, no
/// session cookie, a header naming or holding the injected credential
/// removed or redacted. An answer encoded in a way the redactor cannot see
/// through is refused (the edge asked for `identity`).
fn answer_parts(
    resp: Response<hyper::body::Incoming>,
    redactor: &Redactor,
    route: &Route,
) -> Result<(http::response::Parts, hyper::body::Incoming), Box<Refusal>> {
    if redactor.is_active()
        && let Some(coding) = upstream::uninspectable(resp.headers())
    {
        return Err(Box::new(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "upstream_encoding",
            format!(
                "the upstream of route `{}` answered with encoding `{}` though the edge asked for none; warrant passes on only what it can inspect for the injected credential",
                route.name,
                shown(&coding, 40)
            ),
        )));
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
    Ok((rparts, rbody))
}

/// The Cedar request for a use of a route: the task's, with the method,
/// canonical path and upstream host.
fn decision_request(
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

/// A request path at the edge as the route's name and the rest below it
/// (`/` when nothing follows the name).
fn split_target(raw: &str) -> (String, String) {
    let trimmed = raw.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((name, r)) => (name.to_owned(), format!("/{r}")),
        None => (trimmed.to_owned(), "/".to_owned()),
    }
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

/// What an approver is shown of a body: its text when it is short and of a
/// textual type (JSON, a form, text), so a person approves what they read;
/// otherwise its size only (it is bound by digest either way).
fn body_preview(bytes: &[u8], content_type: &[String]) -> serde_json::Value {
    const MAX: usize = 16 * 1024;
    let textual = match content_type {
        [t] => {
            [
                "application/json",
                "application/x-www-form-urlencoded",
                "text/",
            ]
            .iter()
            .any(|p| t.starts_with(p))
                || t.contains("+json")
        }
        _ => false,
    };
    match std::str::from_utf8(bytes) {
        Ok(text) if textual && bytes.len() <= MAX => serde_json::Value::String(text.to_owned()),
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
