//! The MCP gateway's request path: `http://<edge>/mcp/<server>`.
//!
//! warrant is the OAuth resource server for each configured MCP server. Per
//! request, before anything reaches the upstream: the `Host` must name the
//! edge and an `Origin`, if sent, must be the edge's own; the task token must
//! be valid for the server's audience (401 with `resource_metadata`
//! otherwise) and hold the server's scopes (403 `insufficient_scope`); the
//! body must be one JSON-RPC message within the size limit. Both protocol
//! eras are spoken: a 2026-07-28 request stands alone (its `_meta` and
//! headers must agree; `server/discover` is answered here), and a handshake
//! client's `initialize` opens a session bound to the task and instance of
//! the token that opened it, so every later request must present a token of
//! that same task. `tools/list` shows only tools whose pinned definition is
//! current and that policy could allow (partial evaluation over the unknown
//! arguments); `tools/call` is decided with its arguments before the
//! upstream sees it. The upstream gets warrant's own connection and
//! credential, never the agent's token. Every list, call and refusal is one
//! audit record.
//!
//! Not yet: server-to-client streams (GET answers 405; an HTTP upstream's
//! `list_changed` is not heard, so its tools are listed again every 30 s of
//! use; a stdio upstream's is), resource and prompt decisions finer than the
//! server.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use warrant_core::audit::{AuditEvent, Outcome};
use warrant_core::decision::{Action, Effect, Resource};
use warrant_core::mcp::{PinOutcome, ToolDefinition};
use warrant_core::task::ScopeSet;
use warrant_core::task::{TaskUse, UseError};
use warrant_core::text::shown;
use warrant_core::time::Timestamp;

use super::config::{McpServerConfig, Transport};
use super::stdio::{StdioUpstream, UpstreamError};
use super::{Upstream, arguments_of};
use crate::proxy::credential::Providers;
use crate::proxy::{add_detail, attribute, describe, task_request};
use crate::services::{AuditUnavailable, EdgeServices};

/// Handshake revisions the gateway speaks, newest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The stateless revision: no handshake, no session; every request carries
/// its revision in `_meta` and the `MCP-Protocol-Version` header.
pub const MODERN_VERSION: &str = "2026-07-28";
/// How long a tool listing is used before the upstream is asked again.
const TOOLS_TTL: Duration = Duration::from_secs(30);
/// The most open sessions.
const MAX_SESSIONS: usize = 10_000;
/// The longest an agent may take to send one message's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The most open sessions of one task: opening another ends its oldest.
const MAX_SESSIONS_PER_TASK: usize = 16;
/// The most open sessions of one instance (all its tasks): opening another
/// ends its own oldest, never another instance's.
const MAX_SESSIONS_PER_INSTANCE: usize = 256;
/// The most open sessions of one agent (all its instances): past it, its
/// instances open no more until some end, so no agent can crowd the others
/// out, and no instance ends another's sessions.
const MAX_SESSIONS_PER_AGENT: usize = 2048;
pub use super::message::code::REFUSED;
use super::message::code::{
    HEADER_MISMATCH, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND,
    SESSION_NOT_FOUND,
};

/// What the gateway is built from.
#[allow(missing_debug_implementations)]
pub struct GatewayParts {
    /// Validated `[[mcp_server]]` tables.
    pub servers: Vec<McpServerConfig>,
    /// The services the edge reaches the broker through.
    pub services: EdgeServices,
}

/// The tools an upstream announces, as the gateway may show them.
#[derive(Debug, Default)]
struct View {
    /// Announced tools whose definition is the pinned one, as announced.
    usable: Vec<Value>,
    /// Announced tools whose definition changed since it was pinned.
    changed: HashSet<String>,
    /// Announced tools new since the server's tools were pinned, waiting
    /// for a first approval.
    held: HashSet<String>,
    /// When the upstream was last asked.
    fetched: Option<Instant>,
    /// The upstream's generation then.
    generation: u64,
}

struct Server {
    cfg: McpServerConfig,
    audience: String,
    upstream: Upstream,
    // A std lock: read or replaced, never held across an await.
    view: RwLock<View>,
    // A tokio mutex: one listing at a time (a burst of calls does not list
    // the upstream's tools once each, and only one listing is ever a
    // server's first).
    refreshing: tokio::sync::Mutex<()>,
}

/// Who opened a session.
#[derive(Debug, Clone)]
struct Binding {
    server: String,
    task: String,
    instance: String,
    agent: String,
    expires: i64,
    opened: u64,
}

/// The gateway.
pub struct Gateway {
    servers: HashMap<String, Arc<Server>>,
    s: EdgeServices,
    // A std mutex: held only to look up, insert or remove.
    sessions: Mutex<HashMap<String, Binding>>,
    /// Orders sessions by when they were opened.
    session_counter: std::sync::atomic::AtomicU64,
    // A tokio mutex: serialises recomputing the policies' argument types.
    arguments_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A refusal before any JSON-RPC processing: an HTTP status and a body.
struct HttpRefusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    www_authenticate: Option<String>,
}

impl IntoResponse for HttpRefusal {
    fn into_response(self) -> Response {
        let body =
            json!({ "error": { "message": self.message, "type": self.code, "code": self.code } });
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(w) = self.www_authenticate
            && let Ok(v) = HeaderValue::from_str(&w)
        {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

fn rpc_result(id: &Value, result: Value) -> Response {
    axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
}

fn rpc_error(id: &Value, code: i64, message: String, data: Option<Value>) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(d) = data {
        error["data"] = d;
    }
    axum::Json(json!({ "jsonrpc": "2.0", "id": id, "error": error })).into_response()
}

/// One request of an established client: what every method's answer needs.
#[derive(Clone, Copy)]
struct Call<'a> {
    s: &'a Server,
    task: &'a TaskUse,
    id: &'a Value,
    peer: SocketAddr,
    started: Instant,
    /// A 2026-07-28 client: results say `resultType` (and, for lists, not
    /// to cache them).
    modern: bool,
}

impl Call<'_> {
    /// A successful answer.
    fn result(&self, mut result: Value) -> Response {
        if self.modern
            && let Some(r) = result.as_object_mut()
        {
            r.entry("resultType").or_insert(json!("complete"));
            // What a principal may see is per token: never cached for others.
            if r.contains_key("tools") || r.contains_key("resources") || r.contains_key("prompts") {
                r.entry("ttlMs").or_insert(json!(0));
                r.entry("cacheScope").or_insert(json!("private"));
            }
        }
        rpc_result(self.id, result)
    }
}

/// A JSON-RPC refusal: the answer and the audit record's reason.
struct RpcRefusal {
    code: i64,
    message: String,
    data: Option<Value>,
    outcome: Outcome,
}

impl RpcRefusal {
    /// Refused by policy.
    fn denied(message: String, data: Value) -> Self {
        Self {
            code: REFUSED,
            message,
            data: Some(data),
            outcome: Outcome::Deny,
        }
    }

    fn invalid(code: i64, message: String) -> Self {
        Self {
            code,
            message,
            data: None,
            outcome: Outcome::Error,
        }
    }
}

impl Gateway {
    /// Builds the upstreams (nothing is started or contacted yet).
    pub fn new(p: GatewayParts) -> Result<Self, String> {
        let mut servers = HashMap::new();
        for cfg in p.servers {
            let upstream = match &cfg.transport {
                Transport::Stdio(spec) => Upstream::Stdio(Box::new(StdioUpstream::new(
                    &cfg.name,
                    spec.clone(),
                    p.services.credentials.clone(),
                ))),
                t @ Transport::Http { .. } => Upstream::Http(Box::new(
                    super::http::HttpUpstream::new(&cfg.name, t, cfg.timeout)?,
                )),
            };
            let audience = cfg
                .audience
                .clone()
                .unwrap_or_else(|| format!("{}/mcp/{}", p.services.edge_url, cfg.name));
            if servers.contains_key(&cfg.name) {
                return Err(format!("MCP server `{}` is configured twice", cfg.name));
            }
            servers.insert(
                cfg.name.clone(),
                Arc::new(Server {
                    cfg,
                    audience,
                    upstream,
                    view: RwLock::new(View::default()),
                    refreshing: tokio::sync::Mutex::new(()),
                }),
            );
        }
        Ok(Self {
            servers,
            s: p.services,
            sessions: Mutex::new(HashMap::new()),
            session_counter: std::sync::atomic::AtomicU64::new(0),
            arguments_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The configured servers' names.
    pub fn server_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.servers.keys().cloned().collect();
        v.sort();
        v
    }

    /// RFC 9728 metadata for a server.
    pub fn resource_metadata(&self, name: &str) -> Option<Value> {
        let s = self.servers.get(name)?;
        let scopes: Vec<String> = s
            .cfg
            .scope
            .as_ref()
            .map(|sc| sc.iter().map(str::to_owned).collect())
            .unwrap_or_default();
        Some(json!({
            "resource": format!("{}/mcp/{}", self.s.edge_url, name),
            "authorization_servers": [&*self.s.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": scopes,
            "resource_name": format!("MCP server `{name}` behind warrant"),
            "warrant_audience": s.audience,
        }))
    }

    fn metadata_url(&self, server: &str) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource/mcp/{server}",
            self.s.edge_url
        )
    }

    fn providers(&self) -> Providers<'_> {
        Providers {
            source: &*self.s.credentials,
            issuer: &self.s.issuer,
        }
    }

    /// Lists and pins every server's tools (at start; a server that is down
    /// is tried again on first use).
    pub async fn discover_all(&self) {
        for s in self.servers.values() {
            let _one = s.refreshing.lock().await;
            if let Err(e) = self.refresh(s, None).await {
                tracing::warn!(server = %s.cfg.name, error = %e, "could not list the MCP server's tools; trying again on first use");
            }
        }
    }

    /// Asks the upstream for its tools, pins new ones, holds changed ones.
    /// The caller holds `s.refreshing`: two listings at once would each
    /// take the other's first pins as a listing before, and hold them.
    async fn refresh(&self, s: &Server, task: Option<&TaskUse>) -> Result<(), UpstreamError> {
        let providers = self.providers();
        let mut announced: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = s
                .upstream
                .call(&providers, "tools/list", params, s.cfg.timeout, task)
                .await?;
            announced.extend(
                page.get("tools")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        let now = Timestamp::now();
        let mut view = View {
            fetched: Some(Instant::now()),
            generation: s.upstream.generation(),
            ..View::default()
        };
        // A server listed before (even with no tools, or with tools since
        // gone): a tool never seen waits for approval (unless its config
        // says `new_tools = "pin"`). Only its very first listing is trusted
        // on first use.
        let known = match self.s.pins.note_server_listed(&s.cfg.name, now).await {
            Ok(before) => before,
            Err(e) => {
                return Err(UpstreamError::Unavailable {
                    server: s.cfg.name.clone(),
                    why: format!("its tool pins could not be read: {e}"),
                });
            }
        };
        let hold = s.cfg.hold_new_tools && known;
        for tool in announced {
            let Some(def) = ToolDefinition::from_listing(&tool) else {
                continue;
            };
            let name = def.name.clone();
            // What agents are shown: the pinned fields only.
            let relayed = def.pinned.clone();
            let base = AuditEvent::new("mcp.tool.pin", Outcome::Allow)
                .actor("mcp-gateway")
                .protocol("mcp")
                .resource(
                    Resource::Tool {
                        server: s.cfg.name.clone(),
                        tool: name.clone(),
                    }
                    .to_string(),
                )
                .detail(json!({ "server": s.cfg.name, "tool": name, "digest": def.digest() }));
            match self
                .s
                .pins
                .observe_tool(&s.cfg.name, def, hold, now, base)
                .await
            {
                Ok(PinOutcome::New | PinOutcome::Unchanged) => view.usable.push(relayed),
                Ok(PinOutcome::Changed) => {
                    tracing::warn!(server = %s.cfg.name, tool = %name, "an MCP tool's definition changed; it is hidden until `warrant mcp approve`");
                    view.changed.insert(name);
                }
                Ok(PinOutcome::Held) => {
                    tracing::warn!(server = %s.cfg.name, tool = %name, "a new MCP tool appeared on a server whose tools were pinned; it is hidden until `warrant mcp approve`");
                    view.held.insert(name);
                }
                Err(e) => {
                    return Err(UpstreamError::Unavailable {
                        server: s.cfg.name.clone(),
                        why: format!("its tools could not be pinned: {e}"),
                    });
                }
            }
        }
        // Policies are typed for what the view will offer before it is
        // offered: a call never meets a set that does not know its tool.
        self.update_arguments().await;
        if let Ok(mut v) = s.view.write() {
            *v = view;
        }
        Ok(())
    }

    /// Re-types the policies for the approved definitions, if they changed.
    async fn update_arguments(&self) {
        let _one = self.arguments_lock.lock().await;
        let pins = match self.s.pins.list_tool_pins(None).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read tool pins");
                return;
            }
        };
        let names = self.server_names();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let tools = arguments_of(&pins, &refs);
        if tools == *self.s.authorizer.current().policies.tools() {
            return;
        }
        let base = AuditEvent::new("policy.retype", Outcome::Allow)
            .actor("mcp-gateway")
            .protocol("mcp");
        if let Err(e) = self.s.authorizer.set_tools(tools, base).await {
            tracing::error!(error = %e, "the policies could not be re-typed for the MCP tools' arguments; the previous set stays");
        }
    }

    /// After an approval was stored: re-types the policies for the
    /// approved definitions and lists the server's tools again.
    pub async fn approved(&self, server: &str) {
        self.update_arguments().await;
        if let Some(s) = self.servers.get(server)
            && let Err(e) = {
                let _one = s.refreshing.lock().await;
                self.refresh(s, None).await
            }
        {
            tracing::warn!(server, error = %e, "could not list the MCP server's tools after an approval");
        }
    }

    /// Whether `name` is a configured server.
    pub fn has_server(&self, name: &str) -> bool {
        self.servers.contains_key(name)
    }

    /// Records a refusal durably, then answers it.
    async fn refuse_http(&self, event: AuditEvent, server: &str, e: HttpRefusal) -> Response {
        let mut event = event;
        event.decision = if matches!(e.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            Outcome::Deny
        } else {
            Outcome::Error
        };
        if event.reasons.is_empty() {
            event.reasons.push(format!("{}: {}", e.code, e.message));
        }
        self.s.metrics.mcp_request(server, "-", e.code);
        // Within the caller's budget (its source's, when no task token was
        // verified yet), else recorded in aggregate.
        let Some(event) = self.s.audit.admit_known(event) else {
            return e.into_response();
        };
        match self.s.audit.append(event).await {
            Ok(()) => e.into_response(),
            Err(err) => self.audit_down(&err),
        }
    }

    fn audit_down(&self, err: &AuditUnavailable) -> Response {
        tracing::error!(error = %err, "cannot write the audit trail; MCP request refused");
        HttpRefusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "audit_unavailable",
            message:
                "the broker cannot write its audit trail, so it forwards nothing; try again later"
                    .into(),
            www_authenticate: None,
        }
        .into_response()
    }

    async fn refuse_rpc(
        &self,
        event: AuditEvent,
        server: &str,
        method: &str,
        id: &Value,
        r: RpcRefusal,
    ) -> Response {
        let mut event = event;
        event.decision = r.outcome;
        if event.reasons.is_empty() {
            event.reasons.push(r.message.clone());
        }
        self.s.metrics.mcp_request(
            server,
            method,
            if r.outcome == Outcome::Deny {
                "deny"
            } else {
                "error"
            },
        );
        let admitted = if event.agent.is_none() {
            self.s.audit.admit(event)
        } else {
            self.s.audit.admit_known(event)
        };
        let Some(event) = admitted else {
            return rpc_error(id, r.code, r.message, r.data);
        };
        match self.s.audit.append(event).await {
            Ok(()) => rpc_error(id, r.code, r.message, r.data),
            Err(err) => self.audit_down(&err),
        }
    }

    /// Records an allowed request off the response path; a failure makes
    /// the gateway refuse everything until a record succeeds.
    fn record_later(&self, event: AuditEvent) {
        let audit = self.s.audit.clone();
        tokio::spawn(async move { audit.record_batched(event).await });
    }

    /// Answers one request at `/mcp/<server>`.
    pub async fn handle(&self, server: &str, req: Request<Body>, peer: SocketAddr) -> Response {
        let started = Instant::now();
        let event = AuditEvent::new("mcp.request", Outcome::Deny)
            .protocol("mcp")
            .source(peer.to_string())
            .resource(Resource::McpServer(server.to_owned()).to_string());
        let Some(s) = self.servers.get(server).cloned() else {
            let e = HttpRefusal {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!(
                    "no MCP server named `{}` is configured on this edge listener",
                    shown(server, 64)
                ),
                www_authenticate: None,
            };
            return self.refuse_http(event, "-", e).await;
        };
        if self.s.audit.batch_failed() {
            let e = HttpRefusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "audit_unavailable",
                message: "the broker cannot write its audit trail, so it forwards nothing; try again later".into(),
                www_authenticate: None,
            };
            return self.refuse_http(event, server, e).await;
        }
        if let Err(e) = self.boundaries(&req) {
            return self.refuse_http(event, server, e).await;
        }
        if req.method() != Method::POST && req.method() != Method::DELETE {
            let mut r = HttpRefusal {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "this gateway takes JSON-RPC messages by POST (and DELETE to end a session); it offers no server stream".into(),
                www_authenticate: None,
            }
            .into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return r;
        }

        // Who is asking.
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned());
        let unauthorized = |message: String, given: bool| HttpRefusal {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_token",
            www_authenticate: Some(if given {
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\", resource_metadata=\"{}\"",
                    message.replace(['"', '\\'], "'"),
                    self.metadata_url(server)
                )
            } else {
                format!("Bearer resource_metadata=\"{}\"", self.metadata_url(server))
            }),
            message,
        };
        let Some(token) = token else {
            let e = unauthorized(
                "send your task token as `Authorization: Bearer <task token>`".into(),
                false,
            );
            return self.refuse_http(event, server, e).await;
        };
        let task = match self
            .s
            .tasks
            .task_for_use(&token, &s.audience, Timestamp::now())
            .await
        {
            Ok(t) => t,
            Err(UseError::Invalid(m)) => {
                return self.refuse_http(event, server, unauthorized(m, true)).await;
            }
            Err(UseError::Refused { why, claims }) => {
                let event = attribute(event, &claims);
                return self
                    .refuse_http(event, server, unauthorized(why, true))
                    .await;
            }
            Err(UseError::Unavailable) => {
                let e = HttpRefusal {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    message: "the broker's store is unavailable; try again".into(),
                    www_authenticate: None,
                };
                return self.refuse_http(event, server, e).await;
            }
        };
        let event = describe(event, &task);
        if let Some(needed) = &s.cfg.scope {
            let held = ScopeSet::parse(&task.claims.scope).unwrap_or_default();
            if !needed.is_subset(&held) {
                let e = HttpRefusal {
                    status: StatusCode::FORBIDDEN,
                    code: "insufficient_scope",
                    message: format!(
                        "MCP server `{server}` needs scope `{needed}`; exchange for a task token with it"
                    ),
                    www_authenticate: Some(format!(
                        "Bearer error=\"insufficient_scope\", scope=\"{needed}\", resource_metadata=\"{}\"",
                        self.metadata_url(server)
                    )),
                };
                return self.refuse_http(event, server, e).await;
            }
        }

        let session_id = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let protocol_version = req
            .headers()
            .get("mcp-protocol-version")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let method_header = req
            .headers()
            .get("mcp-method")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        if req.method() == Method::DELETE {
            return self
                .end_session(event, server, &task, session_id.as_deref())
                .await;
        }

        // One JSON-RPC message.
        let limit = usize::try_from(s.cfg.max_message_bytes).unwrap_or(usize::MAX);
        // A message trickled in slower than this holds a connection for
        // nothing: refused like one too large.
        let read = tokio::time::timeout(
            BODY_TIMEOUT,
            http_body_util::Limited::new(req.into_body(), limit).collect(),
        )
        .await;
        let bytes = match read {
            Ok(Ok(b)) => b.to_bytes(),
            Err(_) => {
                let e = HttpRefusal {
                    status: StatusCode::REQUEST_TIMEOUT,
                    code: "request_timeout",
                    message: format!(
                        "the message was not received within {}s",
                        BODY_TIMEOUT.as_secs()
                    ),
                    www_authenticate: None,
                };
                return self.refuse_http(event, server, e).await;
            }
            Ok(Err(_)) => {
                let e = HttpRefusal {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "payload_too_large",
                    message: format!(
                        "a message to MCP server `{server}` may have at most {limit} bytes"
                    ),
                    www_authenticate: None,
                };
                return self.refuse_http(event, server, e).await;
            }
        };
        let (id, method, params) = match super::message::read(&bytes) {
            Ok(super::message::Message::Request { id, method, params }) => (id, method, params),
            // Notifications (initialized, cancelled), and responses to
            // server requests (the gateway sends none): nothing to relay.
            Ok(_) => return StatusCode::ACCEPTED.into_response(),
            Err(invalid) => {
                return self
                    .refuse_rpc(
                        event,
                        server,
                        "-",
                        &invalid.id,
                        RpcRefusal::invalid(invalid.code, invalid.message),
                    )
                    .await;
            }
        };
        let event = event.action(format!("mcp:{method}"));

        let modern = protocol_version.as_deref() == Some(MODERN_VERSION);
        if modern {
            // 2026-07-28: each request stands alone; the token binds it.
            let stamped = params
                .get("_meta")
                .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
                .and_then(Value::as_str);
            let header_method = method_header.as_deref();
            let mismatch = if stamped != Some(MODERN_VERSION) {
                Some(
                    "the request's `_meta` protocol version does not match its MCP-Protocol-Version header",
                )
            } else if header_method.is_some_and(|h| h != method) {
                Some("the Mcp-Method header does not match the request's method")
            } else {
                None
            };
            if let Some(why) = mismatch {
                let mut resp = self
                    .refuse_rpc(
                        event,
                        server,
                        &method,
                        &id,
                        RpcRefusal::invalid(HEADER_MISMATCH, why.into()),
                    )
                    .await;
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                return resp;
            }
            let resp = match method.as_str() {
                "server/discover" => {
                    self.s
                        .metrics
                        .mcp_request(server, "server/discover", "allow");
                    rpc_result(&id, self.discover_result(server))
                }
                "initialize" => {
                    self.refuse_rpc(
                        event,
                        server,
                        &method,
                        &id,
                        RpcRefusal::invalid(
                            INVALID_REQUEST,
                            "2026-07-28 has no initialize; send requests directly".into(),
                        ),
                    )
                    .await
                }
                _ => {
                    let call = Call {
                        s: &s,
                        task: &task,
                        id: &id,
                        peer,
                        started,
                        modern: true,
                    };
                    self.dispatch(event, &call, &method, params).await
                }
            };
            return resp;
        }
        if method == "initialize" {
            return self.open_session(event, server, &task, &id, &params).await;
        }
        if method == "server/discover" {
            return self
                .refuse_rpc(event, server, &method, &id, RpcRefusal::invalid(METHOD_NOT_FOUND, "server/discover is for MCP 2026-07-28: send it with `MCP-Protocol-Version: 2026-07-28`, or use initialize".into()))
                .await;
        }
        // A later request names the revision its session agreed on.
        if let Some(v) = &protocol_version
            && !SUPPORTED_VERSIONS.contains(&v.as_str())
        {
            let m = format!(
                "MCP-Protocol-Version `{}` is not one this gateway speaks ({})",
                shown(v, 32),
                SUPPORTED_VERSIONS.join(", ")
            );
            let mut resp = self
                .refuse_rpc(
                    event,
                    server,
                    &method,
                    &id,
                    RpcRefusal::invalid(INVALID_REQUEST, m),
                )
                .await;
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return resp;
        }
        // Every other request belongs to a session of this task.
        if let Err(r) = self.check_session(server, &task, session_id.as_deref()) {
            return match r {
                SessionProblem::Missing => {
                    self.refuse_rpc(
                        event,
                        server,
                        &method,
                        &id,
                        RpcRefusal::invalid(
                            INVALID_REQUEST,
                            "send `initialize` first, then its Mcp-Session-Id with every request"
                                .into(),
                        ),
                    )
                    .await
                }
                SessionProblem::Unknown => {
                    let mut resp = self
                        .refuse_rpc(
                            event,
                            server,
                            &method,
                            &id,
                            RpcRefusal::invalid(
                                SESSION_NOT_FOUND,
                                "session not found; send `initialize` again".into(),
                            ),
                        )
                        .await;
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    resp
                }
                SessionProblem::Foreign => {
                    let mut resp = self
                        .refuse_rpc(event, server, &method, &id, RpcRefusal {
                            code: REFUSED,
                            message: "this session was opened for another task; open your own with `initialize`".into(),
                            data: None,
                            outcome: Outcome::Deny,
                        })
                        .await;
                    *resp.status_mut() = StatusCode::FORBIDDEN;
                    resp
                }
            };
        }

        let call = Call {
            s: &s,
            task: &task,
            id: &id,
            peer,
            started,
            modern: false,
        };
        self.dispatch(event, &call, &method, params).await
    }

    /// Answers one request of an established client (either revision).
    async fn dispatch(
        &self,
        event: AuditEvent,
        call: &Call<'_>,
        method: &str,
        params: Value,
    ) -> Response {
        match method {
            "ping" => call.result(json!({})),
            "tools/list" => self.list_tools(event, call).await,
            "tools/call" => self.call_tool(event, call, params).await,
            "resources/list" | "resources/templates/list" | "resources/read" => {
                self.relay(event, call, method, params, Action::McpReadResource)
                    .await
            }
            "prompts/list" | "prompts/get" => {
                self.relay(event, call, method, params, Action::McpGetPrompt)
                    .await
            }
            other => {
                let m = format!(
                    "method `{}` is not relayed by the gateway",
                    shown(other, 64)
                );
                self.refuse_rpc(
                    event,
                    &call.s.cfg.name,
                    other,
                    call.id,
                    RpcRefusal::invalid(METHOD_NOT_FOUND, m),
                )
                .await
            }
        }
    }

    /// The 2026-07-28 `server/discover` answer.
    fn discover_result(&self, server: &str) -> Value {
        let mut versions = vec![MODERN_VERSION];
        versions.extend(SUPPORTED_VERSIONS);
        json!({
            "supportedVersions": versions,
            "capabilities": { "tools": { "listChanged": false }, "resources": {}, "prompts": {} },
            "instructions": format!("Tools of MCP server `{server}`, through warrant: each call is decided by policy."),
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": { "io.modelcontextprotocol/serverInfo": { "name": format!("warrant/{server}"), "version": env!("CARGO_PKG_VERSION") } },
        })
    }

    /// `Host` must name the edge; an `Origin`, if any, must be the edge's own
    /// (a page in a browser must not drive an agent's session).
    fn boundaries(&self, req: &Request<Body>) -> Result<(), HttpRefusal> {
        let bad = |status, code, message: String| HttpRefusal {
            status,
            code,
            message,
            www_authenticate: None,
        };
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "absolute-form request targets are refused".into(),
            ));
        }
        if let Some(h) = crate::proxy::repeated(
            req.headers(),
            &[
                header::HOST,
                header::ORIGIN,
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("mcp-session-id"),
                HeaderName::from_static("mcp-protocol-version"),
                HeaderName::from_static("mcp-method"),
            ],
        ) {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "`{h}` is sent more than once; send it once, so there is one reading of the request"
                ),
            ));
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.s.serves_host(host) {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "the Host header `{}` does not name this edge listener",
                    shown(host, 100)
                ),
            ));
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let o = origin.to_str().unwrap_or("");
            let ours = self
                .s
                .edge_hosts
                .iter()
                .any(|h| o.eq_ignore_ascii_case(&format!("http://{h}")));
            if !ours {
                return Err(bad(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    format!("requests from origin `{}` are refused", shown(o, 100)),
                ));
            }
        }
        Ok(())
    }

    async fn open_session(
        &self,
        event: AuditEvent,
        server: &str,
        task: &TaskUse,
        id: &Value,
        params: &Value,
    ) -> Response {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if SUPPORTED_VERSIONS.contains(&asked) {
            asked
        } else {
            SUPPORTED_VERSIONS[0]
        };
        let Ok(sid) = warrant_host::random::hex_id(16) else {
            return rpc_error(id, INTERNAL_ERROR, "cannot make a session id".into(), None);
        };
        let now = Timestamp::now().as_secs();
        let opened = match self.sessions.lock() {
            Ok(mut sessions) => {
                // Sessions of expired or revoked tasks, and of blocked
                // instances, end here (revocation also ends them at once).
                sessions
                    .retain(|_, b| b.expires > now && !self.s.tasks.ended(&b.task, &b.instance));
                let agent = task.agent.name.to_string();
                for (limit, same) in [
                    (
                        MAX_SESSIONS_PER_TASK,
                        &(|b: &Binding| b.task == task.claims.task) as &dyn Fn(&Binding) -> bool,
                    ),
                    (MAX_SESSIONS_PER_INSTANCE, &|b: &Binding| {
                        b.instance == task.instance
                    }),
                ] {
                    let mut mine: Vec<(u64, String)> = sessions
                        .iter()
                        .filter(|(_, b)| same(b))
                        .map(|(k, b)| (b.opened, k.clone()))
                        .collect();
                    if mine.len() >= limit {
                        mine.sort();
                        for (_, k) in mine.iter().take(mine.len() + 1 - limit) {
                            sessions.remove(k);
                        }
                    }
                }
                let of_agent = sessions.values().filter(|b| b.agent == agent).count();
                let open = if sessions.len() >= MAX_SESSIONS || of_agent >= MAX_SESSIONS_PER_AGENT {
                    false
                } else {
                    let opened = self
                        .session_counter
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    sessions.insert(
                        sid.clone(),
                        Binding {
                            server: server.to_owned(),
                            task: task.claims.task.clone(),
                            instance: task.instance.clone(),
                            agent,
                            expires: task.claims.exp,
                            opened,
                        },
                    );
                    true
                };
                self.s
                    .metrics
                    .mcp_sessions
                    .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
                open
            }
            Err(_) => false,
        };
        if !opened {
            return self
                .refuse_rpc(
                    event,
                    server,
                    "initialize",
                    id,
                    RpcRefusal::invalid(
                        INTERNAL_ERROR,
                        "too many open sessions; try again later".into(),
                    ),
                )
                .await;
        }
        let mut ev = event;
        ev.event = "mcp.session.open".into();
        ev.decision = Outcome::Allow;
        add_detail(
            &mut ev,
            json!({ "server": server, "protocol_version": version }),
        );
        self.s.metrics.mcp_request(server, "initialize", "allow");
        // A session uses no credential yet: past the instance's budget,
        // openings are gathered like refusals (see `list_tools`).
        if let Some(ev) = self.s.audit.admit_known(ev)
            && let Err(e) = self.s.audit.append(ev).await
        {
            return self.audit_down(&e);
        }
        let mut r = rpc_result(
            id,
            json!({
                "protocolVersion": version,
                "capabilities": { "tools": { "listChanged": false }, "resources": {}, "prompts": {} },
                "serverInfo": { "name": format!("warrant/{server}"), "version": env!("CARGO_PKG_VERSION") },
                "instructions": format!("Tools of MCP server `{server}`, through warrant: each call is decided by policy."),
            }),
        );
        if let Ok(v) = HeaderValue::from_str(&sid) {
            r.headers_mut().insert("mcp-session-id", v);
        }
        r
    }

    fn check_session(
        &self,
        server: &str,
        task: &TaskUse,
        sid: Option<&str>,
    ) -> Result<(), SessionProblem> {
        let sid = sid.ok_or(SessionProblem::Missing)?;
        let sessions = self.sessions.lock().map_err(|_| SessionProblem::Unknown)?;
        let b = sessions.get(sid).ok_or(SessionProblem::Unknown)?;
        if b.server != server || b.task != task.claims.task || b.instance != task.instance {
            return Err(SessionProblem::Foreign);
        }
        Ok(())
    }

    async fn end_session(
        &self,
        event: AuditEvent,
        server: &str,
        task: &TaskUse,
        sid: Option<&str>,
    ) -> Response {
        match self.check_session(server, task, sid) {
            Ok(()) => {
                if let (Ok(mut s), Some(sid)) = (self.sessions.lock(), sid) {
                    s.remove(sid);
                    self.s
                        .metrics
                        .mcp_sessions
                        .set(i64::try_from(s.len()).unwrap_or(i64::MAX));
                }
                let mut ev = event;
                ev.event = "mcp.session.close".into();
                ev.decision = Outcome::Allow;
                if let Some(ev) = self.s.audit.admit_known(ev) {
                    self.record_later(ev);
                }
                StatusCode::NO_CONTENT.into_response()
            }
            Err(p) => {
                let (status, message) = match p {
                    SessionProblem::Foreign => (
                        StatusCode::FORBIDDEN,
                        "this session was opened for another task",
                    ),
                    _ => (StatusCode::NOT_FOUND, "no such session"),
                };
                let e = HttpRefusal {
                    status,
                    code: "invalid_session",
                    message: message.into(),
                    www_authenticate: None,
                };
                self.refuse_http(event, server, e).await
            }
        }
    }

    async fn fresh_view(&self, s: &Server, task: &TaskUse) -> Result<(), UpstreamError> {
        let stale = || {
            s.view
                .read()
                .map(|v| {
                    v.fetched.is_none_or(|t| t.elapsed() > TOOLS_TTL)
                        || v.generation != s.upstream.generation()
                })
                .unwrap_or(true)
        };
        if stale() {
            let _one = s.refreshing.lock().await;
            // Another call may have listed while this one waited.
            if stale() {
                self.refresh(s, Some(task)).await?;
            }
        }
        Ok(())
    }

    fn tool_request(
        &self,
        s: &Server,
        task: &TaskUse,
        tool: &str,
        peer: SocketAddr,
    ) -> warrant_core::decision::DecisionRequest {
        task_request(
            task,
            Action::McpCallTool,
            Resource::Tool {
                server: s.cfg.name.clone(),
                tool: tool.to_owned(),
            },
            peer,
            Timestamp::now(),
        )
    }

    async fn list_tools(&self, event: AuditEvent, call: &Call<'_>) -> Response {
        let Call {
            s, task, id, peer, ..
        } = *call;
        let mut event = event;
        event.event = "mcp.tools.list".into();
        if let Err(e) = self.fresh_view(s, task).await {
            return self
                .refuse_rpc(event, &s.cfg.name, "tools/list", id, upstream_refusal(&e))
                .await;
        }
        let (usable, changed) = match s.view.read() {
            Ok(v) => (v.usable.clone(), v.changed.len() + v.held.len()),
            Err(_) => (Vec::new(), 0),
        };
        let policies = self.s.authorizer.current();
        let mut shown_tools = Vec::new();
        let mut hidden = 0usize;
        for t in usable {
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            if policies
                .policies
                .could_allow(&self.tool_request(s, task, name, peer))
            {
                shown_tools.push(t);
            } else {
                hidden += 1;
            }
        }
        event.decision = Outcome::Allow;
        add_detail(
            &mut event,
            json!({ "server": s.cfg.name, "listed": shown_tools.len(), "hidden_by_policy": hidden, "hidden_changed": changed }),
        );
        self.s
            .metrics
            .mcp_request(&s.cfg.name, "tools/list", "allow");
        // Answered from the gateway's view, with no credential used: past
        // the instance's budget, listings are gathered like refusals, so an
        // agent cannot grow the trail by listing in a loop.
        if let Some(event) = self.s.audit.admit_known(event) {
            self.record_later(event);
        }
        call.result(json!({ "tools": shown_tools }))
    }

    async fn call_tool(&self, event: AuditEvent, call: &Call<'_>, params: Value) -> Response {
        let Call {
            s, task, id, peer, ..
        } = *call;
        let server = s.cfg.name.as_str();
        let mut event = event;
        event.event = "mcp.tool.call".into();
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return self
                    .refuse_rpc(
                        event,
                        server,
                        "tools/call",
                        id,
                        RpcRefusal::invalid(INVALID_PARAMS, "`arguments` must be an object".into()),
                    )
                    .await;
            }
        };
        let raw_args = serde_json::to_vec(&Value::Object(arguments.clone())).unwrap_or_default();
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&raw_args))
        };
        let mut detail = json!({ "server": server, "tool": shown(&name, 128), "arguments_sha256": digest, "arguments_bytes": raw_args.len() });
        if s.cfg.record_arguments {
            detail["arguments"] = Value::Object(arguments.clone());
        }
        add_detail(&mut event, detail);
        event = event.resource(
            Resource::Tool {
                server: server.to_owned(),
                tool: name.clone(),
            }
            .to_string(),
        );
        if let Err(e) = self.fresh_view(s, task).await {
            return self
                .refuse_rpc(event, server, "tools/call", id, upstream_refusal(&e))
                .await;
        }
        let (known, changed, held) = match s.view.read() {
            Ok(v) => (
                v.usable
                    .iter()
                    .any(|t| t.get("name").and_then(Value::as_str) == Some(name.as_str())),
                v.changed.contains(&name),
                v.held.contains(&name),
            ),
            Err(_) => (false, false, false),
        };
        if changed || held {
            let m = if changed {
                format!(
                    "tool `{name}` changed its definition since it was approved; it is unavailable until an administrator runs `warrant mcp approve {server} {name}`"
                )
            } else {
                format!(
                    "tool `{name}` is new on MCP server `{server}` since its tools were pinned; it is unavailable until an administrator runs `warrant mcp approve {server} {name}`"
                )
            };
            return self
                .refuse_rpc(
                    event,
                    server,
                    "tools/call",
                    id,
                    RpcRefusal {
                        code: REFUSED,
                        message: m,
                        data: None,
                        outcome: Outcome::Deny,
                    },
                )
                .await;
        }
        if !known {
            let m = format!("MCP server `{server}` has no tool `{}`", shown(&name, 128));
            return self
                .refuse_rpc(
                    event,
                    server,
                    "tools/call",
                    id,
                    RpcRefusal::invalid(INVALID_PARAMS, m),
                )
                .await;
        }
        let mut req = self.tool_request(s, task, &name, peer);
        req.context.arguments = Some(arguments.clone());
        let (decision, decided) = self.s.authorizer.decide_for_record(&req, event);
        let mut event = AuditEvent {
            user: Some(task.claims.sub.clone()),
            ..decided
        };
        event.event = "mcp.tool.call".into();
        if decision.effect != Effect::Allow {
            let refused_by = match decision.effect {
                Effect::ApprovalRequired => "approval required",
                _ if !decision.errors.is_empty() => "policy (error)",
                _ if decision.policies.is_empty() => "policy (default deny)",
                _ => "policy (forbid)",
            };
            let message = if decision.errors.is_empty() {
                format!(
                    "refused by policy: {refused_by}: agent `{}` may not call `{server}/{name}` with these arguments",
                    task.agent.name
                )
            } else {
                // Say what failed: an argument of the wrong type, or a
                // policy that could not be applied to this tool (which an
                // administrator fixes), not a bare "default deny".
                format!(
                    "refused by policy: {refused_by}: the call of `{server}/{name}` could not be decided: {}",
                    decision.errors.join("; ")
                )
            };
            let data = json!({
                "refused_by": refused_by,
                "policies": decision.policies,
                "how_to_get_access": format!("ask an administrator for a permit on Action::\"mcp:call_tool\" and Tool::\"{server}/{name}\""),
            });
            return self
                .refuse_rpc(
                    event,
                    server,
                    "tools/call",
                    id,
                    RpcRefusal::denied(message, data),
                )
                .await;
        }
        let upstream_started = Instant::now();
        let answer = s
            .upstream
            .call(
                &self.providers(),
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
                s.cfg.timeout,
                Some(task),
            )
            .await;
        self.answer(event, call, "tools/call", answer, Some(upstream_started))
            .await
    }

    /// Relays the upstream's answer and records it: a result, the upstream's
    /// own JSON-RPC error, a credential refusal (durable, like every
    /// refusal), or a failure (an error to the agent; the gateway stays up).
    async fn answer(
        &self,
        event: AuditEvent,
        call: &Call<'_>,
        method: &str,
        answer: Result<Value, UpstreamError>,
        upstream_started: Option<Instant>,
    ) -> Response {
        let server = call.s.cfg.name.as_str();
        let mut event = event;
        match answer {
            Ok(result) => {
                let mut detail = json!({
                    "outcome": if result.get("isError") == Some(&json!(true)) { "tool_error" } else { "ok" },
                });
                if let Some(t) = upstream_started {
                    let upstream_ms = t.elapsed().as_secs_f64() * 1000.0;
                    let total_ms = call.started.elapsed().as_secs_f64() * 1000.0;
                    detail["upstream_ms"] = json!((upstream_ms * 1000.0).round() / 1000.0);
                    detail["gateway_ms"] =
                        json!(((total_ms - upstream_ms) * 1000.0).round() / 1000.0);
                }
                add_detail(&mut event, detail);
                self.s.metrics.mcp_request(server, method, "allow");
                self.record_later(event);
                call.result(result)
            }
            Err(UpstreamError::Rpc {
                code,
                message,
                data,
            }) => {
                add_detail(
                    &mut event,
                    json!({ "outcome": "upstream_error", "upstream_code": code }),
                );
                self.s.metrics.mcp_request(server, method, "upstream_error");
                self.record_later(event);
                rpc_error(call.id, code, message, data)
            }
            Err(e @ UpstreamError::Refused(_)) => {
                event.reasons = Vec::new();
                self.refuse_rpc(event, server, method, call.id, upstream_refusal(&e))
                    .await
            }
            Err(e) => {
                add_detail(&mut event, json!({ "outcome": "upstream_failed" }));
                let r = upstream_refusal(&e);
                event.reasons.push(r.message.clone());
                self.s
                    .metrics
                    .mcp_request(server, method, "upstream_failed");
                self.record_later(event);
                rpc_error(call.id, r.code, r.message, None)
            }
        }
    }

    async fn relay(
        &self,
        event: AuditEvent,
        call: &Call<'_>,
        method: &str,
        params: Value,
        action: Action,
    ) -> Response {
        let Call {
            s, task, id, peer, ..
        } = *call;
        let server = s.cfg.name.as_str();
        let req = task_request(
            task,
            action,
            Resource::McpServer(server.to_owned()),
            peer,
            Timestamp::now(),
        );
        let (decision, decided) = self.s.authorizer.decide_for_record(&req, event);
        let mut event = AuditEvent {
            user: Some(task.claims.sub.clone()),
            ..decided
        };
        event.event = format!("mcp.{}", method.replace('/', "."));
        if decision.effect != Effect::Allow {
            let message = format!(
                "refused by policy: agent `{}` may not use {method} on `{server}`",
                task.agent.name
            );
            let data = json!({ "policies": decision.policies });
            return self
                .refuse_rpc(event, server, method, id, RpcRefusal::denied(message, data))
                .await;
        }
        let answer = s
            .upstream
            .call(&self.providers(), method, params, s.cfg.timeout, Some(task))
            .await;
        self.answer(event, call, method, answer, None).await
    }
}

enum SessionProblem {
    Missing,
    Unknown,
    Foreign,
}

fn upstream_refusal(e: &UpstreamError) -> RpcRefusal {
    match e {
        // No credential for this user: a refusal, saying what is missing.
        UpstreamError::Refused(m) => {
            RpcRefusal::denied(m.clone(), json!({ "refused_by": "credential" }))
        }
        other => RpcRefusal::invalid(INTERNAL_ERROR, other.to_string()),
    }
}
