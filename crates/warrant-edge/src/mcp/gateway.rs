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
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use warrant_core::approval::{ApprovalSubject, StepUp};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::decision::{Action, DecisionRequest, Effect, Resource};
use warrant_core::mcp::{PinOutcome, ToolDefinition};
use warrant_core::task::ScopeSet;
use warrant_core::task::{TaskUse, UseError};
use warrant_core::text::shown;
use warrant_core::time::Timestamp;

use super::config::{McpServerConfig, Transport};
use super::stdio::{StdioUpstream, UpstreamError};
use super::{Upstream, arguments_of};
use crate::boundary;
use crate::credential::Providers;
use crate::refusal::Refusal;
use crate::services::{AuditUnavailable, EdgeServices};
use crate::task::{add_detail, attribute, describe, task_request};

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
/// The largest canonical arguments an approver is shown (larger ones are
/// bound by digest alone).
const MAX_SHOWN_ARGUMENTS: usize = 64 * 1024;
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

impl Server {
    fn new(cfg: McpServerConfig, s: &EdgeServices) -> Result<Self, String> {
        let upstream =
            match &cfg.transport {
                Transport::Stdio(spec) => Upstream::Stdio(Box::new(StdioUpstream::new(
                    &cfg.name,
                    spec.clone(),
                    s.credentials.clone(),
                ))),
                t @ Transport::Http { .. } => Upstream::Http(Box::new(
                    super::http::HttpUpstream::new(&cfg.name, t, cfg.timeout)?,
                )),
            };
        let audience = cfg
            .audience
            .clone()
            .unwrap_or_else(|| format!("{}/mcp/{}", s.edge_url, cfg.name));
        Ok(Self {
            cfg,
            audience,
            upstream,
            view: RwLock::new(View::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }
}

/// Servers whose upstreams are built, ready to be put in force.
#[allow(missing_debug_implementations)]
pub struct PreparedServers(HashMap<String, Arc<Server>>);

/// One server in force, for `warrant mcp servers`.
#[derive(Debug, Clone)]
pub struct ServerStatus {
    /// Its configuration.
    pub config: McpServerConfig,
    /// The audience task tokens for it carry.
    pub audience: String,
    /// Tools usable (pinned definition current).
    pub tools: usize,
    /// Tools whose definition changed since approval.
    pub changed: usize,
    /// Tools new since the server was pinned, held for approval.
    pub held: usize,
    /// Whether its tools have been listed since it was put in force.
    pub listed: bool,
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
    /// The servers in force: replaced whole by a reload, read once per
    /// request.
    servers: ArcSwap<HashMap<String, Arc<Server>>>,
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
            .field("servers", &self.servers.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
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
    /// The HTTP status it is answered with (200 unless the transport says
    /// otherwise: a header mismatch is 400, an unknown session 404).
    status: StatusCode,
}

impl RpcRefusal {
    /// Refused by policy.
    fn denied(message: String, data: Value) -> Self {
        Self {
            code: REFUSED,
            message,
            data: Some(data),
            outcome: Outcome::Deny,
            status: StatusCode::OK,
        }
    }

    fn invalid(code: i64, message: String) -> Self {
        Self {
            code,
            message,
            data: None,
            outcome: Outcome::Error,
            status: StatusCode::OK,
        }
    }

    fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }
}

/// Why a request was refused before its method was handled: at the HTTP
/// layer, or in JSON-RPC once its message was read.
enum Refused {
    Http(Refusal),
    Rpc {
        method: String,
        id: Value,
        refusal: Box<RpcRefusal>,
    },
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Self {
        Self::Http(r)
    }
}

/// What the steps before a method's handling lead to.
enum Served {
    /// Answered already (and recorded where a record is due).
    Answer(Response),
    /// A method to handle for an established client.
    Dispatch {
        call: Box<CallOf>,
        method: String,
        params: Value,
    },
}

/// The owned parts of a [`Call`].
struct CallOf {
    task: TaskUse,
    id: Value,
    modern: bool,
}

/// The MCP transport headers a request carries.
struct McpHeaders {
    session_id: Option<String>,
    protocol_version: Option<String>,
    method: Option<String>,
}

impl McpHeaders {
    fn of(h: &http::HeaderMap) -> Self {
        let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap_or("?").to_owned());
        Self {
            session_id: h
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            protocol_version: text("mcp-protocol-version"),
            method: text("mcp-method"),
        }
    }

    /// 2026-07-28: the request's `_meta` and its headers must agree.
    fn agree(&self, method: &str, params: &Value) -> Result<(), RpcRefusal> {
        let stamped = params
            .get("_meta")
            .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
            .and_then(Value::as_str);
        let why = if stamped != Some(MODERN_VERSION) {
            "the request's `_meta` protocol version does not match its MCP-Protocol-Version header"
        } else if self.method.as_deref().is_some_and(|h| h != method) {
            "the Mcp-Method header does not match the request's method"
        } else {
            return Ok(());
        };
        Err(RpcRefusal::invalid(HEADER_MISMATCH, why.into()).with_status(StatusCode::BAD_REQUEST))
    }

    /// A request after the handshake names the revision its session agreed
    /// on (or none).
    fn supported(&self) -> Result<(), RpcRefusal> {
        match &self.protocol_version {
            Some(v) if !SUPPORTED_VERSIONS.contains(&v.as_str()) => Err(RpcRefusal::invalid(
                INVALID_REQUEST,
                format!(
                    "MCP-Protocol-Version `{}` is not one this gateway speaks ({})",
                    shown(v, 32),
                    SUPPORTED_VERSIONS.join(", ")
                ),
            )
            .with_status(StatusCode::BAD_REQUEST)),
            _ => Ok(()),
        }
    }
}

impl SessionProblem {
    fn refusal(self) -> RpcRefusal {
        match self {
            Self::Missing => RpcRefusal::invalid(
                INVALID_REQUEST,
                "send `initialize` first, then its Mcp-Session-Id with every request".into(),
            ),
            Self::Unknown => RpcRefusal::invalid(
                SESSION_NOT_FOUND,
                "session not found; send `initialize` again".into(),
            )
            .with_status(StatusCode::NOT_FOUND),
            Self::Foreign => RpcRefusal {
                code: REFUSED,
                message:
                    "this session was opened for another task; open your own with `initialize`"
                        .into(),
                data: None,
                outcome: Outcome::Deny,
                status: StatusCode::FORBIDDEN,
            },
        }
    }
}

/// What the record of a tool call says about it: the tool, a digest and
/// size of its arguments (the arguments themselves only when the server's
/// `record_arguments` is set).
fn describe_call(
    event: &mut AuditEvent,
    cfg: &McpServerConfig,
    name: &str,
    arguments: &serde_json::Map<String, Value>,
) {
    let raw = serde_json::to_vec(arguments).unwrap_or_default();
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&raw))
    };
    let mut detail = json!({ "server": cfg.name, "tool": shown(name, 128), "arguments_sha256": digest, "arguments_bytes": raw.len() });
    if cfg.record_arguments {
        detail["arguments"] = Value::Object(arguments.clone());
    }
    add_detail(event, detail);
    event.resource = Some(
        Resource::Tool {
            server: cfg.name.clone(),
            tool: name.to_owned(),
        }
        .to_string(),
    );
}

/// A tool may be called only as it was approved: announced now with its
/// pinned definition.
fn pinned(s: &Server, name: &str) -> Result<(), RpcRefusal> {
    let server = &s.cfg.name;
    let v = s.view.read();
    let changed = v.changed.contains(name);
    if changed || v.held.contains(name) {
        let message = if changed {
            format!(
                "tool `{name}` changed its definition since it was approved; it is unavailable until an administrator runs `warrant mcp approve {server} {name}`"
            )
        } else {
            format!(
                "tool `{name}` is new on MCP server `{server}` since its tools were pinned; it is unavailable until an administrator runs `warrant mcp approve {server} {name}`"
            )
        };
        return Err(RpcRefusal {
            code: REFUSED,
            message,
            data: None,
            outcome: Outcome::Deny,
            status: StatusCode::OK,
        });
    }
    let known = v
        .usable
        .iter()
        .any(|t| t.get("name").and_then(Value::as_str) == Some(name));
    if known {
        Ok(())
    } else {
        Err(RpcRefusal::invalid(
            INVALID_PARAMS,
            format!("MCP server `{server}` has no tool `{}`", shown(name, 128)),
        ))
    }
}

/// Reads one JSON-RPC message within the server's size limit and the body
/// timeout: a request, or `None` for a notification or response.
async fn read_message(
    s: &Server,
    req: Request<Body>,
) -> Result<Option<(Value, String, Value)>, Refused> {
    let server = &s.cfg.name;
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
            return Err(Refused::Http(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the message was not received within {}s",
                    BODY_TIMEOUT.as_secs()
                ),
            )));
        }
        Ok(Err(_)) => {
            return Err(Refused::Http(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a message to MCP server `{server}` may have at most {limit} bytes"),
            )));
        }
    };
    match super::message::read(&bytes) {
        Ok(super::message::Message::Request { id, method, params }) => {
            Ok(Some((id, method, params)))
        }
        Ok(_) => Ok(None),
        Err(invalid) => Err(Refused::Rpc {
            method: "-".into(),
            id: invalid.id,
            refusal: Box::new(RpcRefusal::invalid(invalid.code, invalid.message)),
        }),
    }
}

impl Gateway {
    /// Builds the upstreams (nothing is started or contacted yet).
    pub fn new(p: GatewayParts) -> Result<Self, String> {
        let gateway = Self {
            servers: ArcSwap::from_pointee(HashMap::new()),
            s: p.services,
            sessions: Mutex::new(HashMap::new()),
            session_counter: std::sync::atomic::AtomicU64::new(0),
            arguments_lock: tokio::sync::Mutex::new(()),
        };
        let servers = gateway.prepare(p.servers)?;
        gateway.servers.store(Arc::new(servers.0));
        Ok(gateway)
    }

    /// The configured servers' names.
    pub fn server_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.servers.load().keys().cloned().collect();
        v.sort();
        v
    }

    /// RFC 9728 metadata for a server.
    pub fn resource_metadata(&self, name: &str) -> Option<Value> {
        let servers = self.servers.load();
        let s = servers.get(name)?;
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
        let names = self.server_names();
        self.discover(&names).await;
    }

    /// Lists and pins the named servers' tools.
    pub async fn discover(&self, names: &[String]) {
        let servers = self.servers.load_full();
        for s in names.iter().filter_map(|n| servers.get(n)) {
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
        let announced = self.list_upstream(s, task).await?;
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
                tracing::error!(server = %s.cfg.name, error = %e, "cannot read the MCP server's tool pins");
                return Err(UpstreamError::Unavailable {
                    server: s.cfg.name.clone(),
                    why: "its tool pins could not be read".into(),
                });
            }
        };
        let hold = s.cfg.hold_new_tools && known;
        for tool in announced {
            self.pin(s, &tool, hold, now, &mut view).await?;
        }
        // Policies are typed for what the view will offer before it is
        // offered: a call never meets a set that does not know its tool.
        self.update_arguments().await;
        *s.view.write() = view;
        Ok(())
    }

    /// Every tool the upstream announces (at most 20 pages).
    async fn list_upstream(
        &self,
        s: &Server,
        task: Option<&TaskUse>,
    ) -> Result<Vec<Value>, UpstreamError> {
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
        Ok(announced)
    }

    /// Compares one announced tool with its pin (pinning a first sight)
    /// and puts it in the view as usable, changed or held.
    async fn pin(
        &self,
        s: &Server,
        tool: &Value,
        hold: bool,
        now: Timestamp,
        view: &mut View,
    ) -> Result<(), UpstreamError> {
        let Some(def) = ToolDefinition::from_listing(tool) else {
            return Ok(());
        };
        let name = def.name.clone();
        // What agents are shown: the pinned fields only.
        let relayed = def.pinned.clone();
        let base = AuditEvent::new(Kind::McpToolPin, Outcome::Allow)
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
                tracing::error!(server = %s.cfg.name, error = %e, "cannot pin the MCP server's tools");
                return Err(UpstreamError::Unavailable {
                    server: s.cfg.name.clone(),
                    why: "its tools could not be pinned".into(),
                });
            }
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
        let base = AuditEvent::new(Kind::PolicyRetype, Outcome::Allow)
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
        if let Some(s) = self.servers.load().get(server).cloned()
            && let Err(e) = {
                let _one = s.refreshing.lock().await;
                self.refresh(&s, None).await
            }
        {
            tracing::warn!(server, error = %e, "could not list the MCP server's tools after an approval");
        }
    }

    /// Whether `name` is a configured server.
    pub fn has_server(&self, name: &str) -> bool {
        self.servers.load().contains_key(name)
    }

    /// The servers in force and what their tools look like now.
    pub fn servers(&self) -> Vec<ServerStatus> {
        let mut v: Vec<ServerStatus> = self
            .servers
            .load()
            .values()
            .map(|s| {
                let view = s.view.read();
                ServerStatus {
                    config: s.cfg.clone(),
                    audience: s.audience.clone(),
                    tools: view.usable.len(),
                    changed: view.changed.len(),
                    held: view.held.len(),
                    listed: view.fetched.is_some(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }

    /// Builds the upstreams of a new set of servers (nothing is started or
    /// contacted); a server whose configuration is unchanged keeps its
    /// upstream, child process and tool view. Nothing is in force until
    /// [`install`](Self::install).
    pub fn prepare(&self, servers: Vec<McpServerConfig>) -> Result<PreparedServers, String> {
        let current = self.servers.load();
        let mut out = HashMap::new();
        for cfg in servers {
            if out.contains_key(&cfg.name) {
                return Err(format!("MCP server `{}` is configured twice", cfg.name));
            }
            let server = match current.get(&cfg.name) {
                Some(s) if s.cfg == cfg => s.clone(),
                _ => Arc::new(Server::new(cfg, &self.s)?),
            };
            out.insert(server.cfg.name.clone(), server);
        }
        Ok(PreparedServers(out))
    }

    /// Puts prepared servers in force. Sessions of a server no longer
    /// configured end; a server replaced stops its child process when its
    /// last request ends. Returns the servers that are new or changed,
    /// whose tools are to be listed (see [`discover`](Self::discover)).
    pub async fn install(&self, servers: PreparedServers) -> Vec<String> {
        let old = self.servers.swap(Arc::new(servers.0));
        let new = self.servers.load_full();
        let fresh: Vec<String> = new
            .iter()
            .filter(|(name, s)| old.get(*name).is_none_or(|o| !Arc::ptr_eq(o, s)))
            .map(|(name, _)| name.clone())
            .collect();
        {
            let mut sessions = self.sessions.lock();
            sessions.retain(|_, b| new.contains_key(&b.server));
            self.s
                .metrics
                .mcp_sessions
                .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        }
        // Policies are typed for the servers in force.
        self.update_arguments().await;
        fresh
    }

    /// Records a refusal durably, then answers it.
    async fn refuse_http(&self, event: AuditEvent, server: &str, e: Refusal) -> Response {
        let mut event = event;
        event.decision = if e.is_denial() {
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
        Refusal::audit_unavailable().into_response()
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
        if let Some(event) = admitted
            && let Err(err) = self.s.audit.append(event).await
        {
            return self.audit_down(&err);
        }
        let mut resp = rpc_error(id, r.code, r.message, r.data);
        *resp.status_mut() = r.status;
        resp
    }

    /// Records an allowed request off the response path; a failure makes
    /// the gateway refuse everything until a record succeeds.
    fn record_later(&self, event: AuditEvent) {
        let audit = self.s.audit.clone();
        tokio::spawn(async move { audit.record_batched(event).await });
    }

    /// Answers one request at `/mcp/<server>`: read the target, authenticate
    /// the task token, read one JSON-RPC message, then answer it in its
    /// protocol era (a stand-alone 2026-07-28 request, or a request in a
    /// session of this task); a refusal at any step is recorded and
    /// answered.
    pub async fn handle(&self, server: &str, req: Request<Body>, peer: SocketAddr) -> Response {
        let started = Instant::now();
        let mut event = AuditEvent::new(Kind::McpRequest, Outcome::Deny)
            .protocol("mcp")
            .source(peer.to_string())
            .resource(Resource::McpServer(server.to_owned()).to_string());
        let Some(s) = self.servers.load().get(server).cloned() else {
            let e = Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no MCP server named `{}` is configured on this edge listener",
                    shown(server, 64)
                ),
            );
            return self.refuse_http(event, "-", e).await;
        };
        if req.method() != Method::POST && req.method() != Method::DELETE {
            if let Err(e) = self.target(&req) {
                return self.refuse_http(event, server, e).await;
            }
            let mut r = Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this gateway takes JSON-RPC messages by POST (and DELETE to end a session); it offers no server stream".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return r;
        }
        match self.serve(&s, req, &mut event).await {
            Ok(Served::Answer(r)) => r,
            Ok(Served::Dispatch {
                call,
                method,
                params,
            }) => {
                let call = Call {
                    s: &s,
                    task: &call.task,
                    id: &call.id,
                    peer,
                    started,
                    modern: call.modern,
                };
                self.dispatch(event, &call, &method, params).await
            }
            Err(Refused::Http(e)) => self.refuse_http(event, server, e).await,
            Err(Refused::Rpc {
                method,
                id,
                refusal,
            }) => self.refuse_rpc(event, server, &method, &id, *refusal).await,
        }
    }

    /// A path below `/mcp/<server>` is no MCP endpoint (a client's mistake,
    /// or a probe such as `/mcp/<server>/%2e%2e/...`): refused and recorded,
    /// as the agent's when its token for the server is good.
    pub async fn refuse_below(
        &self,
        server: &str,
        req: Request<Body>,
        peer: SocketAddr,
    ) -> Response {
        let mut event = AuditEvent::new(Kind::McpRequest, Outcome::Deny)
            .protocol("mcp")
            .source(peer.to_string())
            .resource(Resource::McpServer(server.to_owned()).to_string());
        let known = self.servers.load().get(server).cloned();
        if let Some(s) = &known {
            let _ = self.authenticate(s, req.headers(), &mut event).await;
        }
        let refusal = Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "an MCP server answers at /mcp/<server> only; there is nothing below it".into(),
        );
        self.refuse_http(event, if known.is_some() { server } else { "-" }, refusal)
            .await
    }

    /// Every step up to the method's own handling, in order.
    async fn serve(
        &self,
        s: &Server,
        req: Request<Body>,
        event: &mut AuditEvent,
    ) -> Result<Served, Refused> {
        if let Err(e) = self.target(&req) {
            // Probing is traced to who probed, when their token is good.
            let _ = self.authenticate(s, req.headers(), event).await;
            return Err(e.into());
        }
        let task = self.authenticate(s, req.headers(), event).await?;
        let headers = McpHeaders::of(req.headers());
        if req.method() == Method::DELETE {
            self.end_session(s, &task, headers.session_id.as_deref())?;
            return Ok(Served::Answer(self.session_ended(event.take())));
        }
        let Some((id, method, params)) = read_message(s, req).await? else {
            // Notifications (initialized, cancelled), and responses to
            // server requests (the gateway sends none): nothing to relay.
            return Ok(Served::Answer(StatusCode::ACCEPTED.into_response()));
        };
        event.action = Some(format!("mcp:{method}"));
        let refuse = |refusal: RpcRefusal| Refused::Rpc {
            method: method.clone(),
            id: id.clone(),
            refusal: Box::new(refusal),
        };
        if headers.protocol_version.as_deref() == Some(MODERN_VERSION) {
            headers.agree(&method, &params).map_err(refuse)?;
            return match method.as_str() {
                "server/discover" => {
                    self.s
                        .metrics
                        .mcp_request(&s.cfg.name, "server/discover", "allow");
                    Ok(Served::Answer(rpc_result(
                        &id,
                        self.discover_result(&s.cfg.name),
                    )))
                }
                "initialize" => Err(refuse(RpcRefusal::invalid(
                    INVALID_REQUEST,
                    "2026-07-28 has no initialize; send requests directly".into(),
                ))),
                _ => Ok(Served::Dispatch {
                    call: Box::new(CallOf {
                        task,
                        id,
                        modern: true,
                    }),
                    method,
                    params,
                }),
            };
        }
        match method.as_str() {
            "initialize" => {
                let sid = self.bind_session(&s.cfg.name, &task).map_err(refuse)?;
                return Ok(Served::Answer(
                    self.session_opened(event.take(), &s.cfg.name, &id, &params, &sid)
                        .await,
                ));
            }
            "server/discover" => return Err(refuse(RpcRefusal::invalid(METHOD_NOT_FOUND, "server/discover is for MCP 2026-07-28: send it with `MCP-Protocol-Version: 2026-07-28`, or use initialize".into()))),
            _ => {}
        }
        headers.supported().map_err(refuse)?;
        // Every other request belongs to a session of this task.
        self.check_session(&s.cfg.name, &task, headers.session_id.as_deref())
            .map_err(|p| refuse(p.refusal()))?;
        Ok(Served::Dispatch {
            call: Box::new(CallOf {
                task,
                id,
                modern: false,
            }),
            method,
            params,
        })
    }

    /// Read: `Host` and `Origin` name the edge, one value of each header
    /// the gateway reads, and the audit trail writable.
    fn target(&self, req: &Request<Body>) -> Result<(), Refusal> {
        boundary::addressed_here(
            req,
            &self.s,
            &[
                header::ORIGIN,
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("mcp-session-id"),
                HeaderName::from_static("mcp-protocol-version"),
                HeaderName::from_static("mcp-method"),
            ],
        )?;
        boundary::same_origin(req, &self.s)?;
        if self.s.audit.batch_failed() {
            return Err(Refusal::audit_unavailable());
        }
        Ok(())
    }

    /// Authenticate: a task token valid for the server's audience (401 with
    /// `resource_metadata` otherwise) holding the server's scopes (403
    /// `insufficient_scope`); the record attributed to whoever it names.
    async fn authenticate(
        &self,
        s: &Server,
        headers: &http::HeaderMap,
        event: &mut AuditEvent,
    ) -> Result<TaskUse, Refusal> {
        let server = &s.cfg.name;
        let metadata = self.metadata_url(server);
        let token = boundary::agent_token(headers, &header::AUTHORIZATION)
            .map_err(|e| Refusal::unauthorized(e.message, &metadata, e.sent))?;
        let task = match self
            .s
            .tasks
            .task_for_use(token, &s.audience, Timestamp::now())
            .await
        {
            Ok(t) => t,
            Err(UseError::Invalid(m)) => return Err(Refusal::unauthorized(m, &metadata, true)),
            Err(UseError::Refused { why, claims }) => {
                attribute(event, &claims);
                return Err(Refusal::unauthorized(why, &metadata, true));
            }
            Err(UseError::Unavailable) => return Err(Refusal::store_unavailable()),
        };
        describe(event, &task);
        if let Some(needed) = &s.cfg.scope {
            let held = ScopeSet::parse(&task.claims.scope).unwrap_or_default();
            if !needed.is_subset(&held) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    format!(
                        "MCP server `{server}` needs scope `{needed}`; exchange for a task token with it"
                    ),
                )
                .with_challenge(format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{needed}\", resource_metadata=\"{metadata}\""
                )));
            }
        }
        Ok(task)
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

    /// Opens a session for the task: the oldest of its task's or instance's
    /// sessions end past their limits; none opens past the gateway's or
    /// the agent's. Returns the session id.
    fn bind_session(&self, server: &str, task: &TaskUse) -> Result<String, RpcRefusal> {
        let sid = warrant_host::random::hex_id(16)
            .map_err(|_| RpcRefusal::invalid(INTERNAL_ERROR, "cannot make a session id".into()))?;
        let now = Timestamp::now().as_secs();
        let mut sessions = self.sessions.lock();
        // Sessions of expired or revoked tasks, and of blocked instances,
        // end here (revocation also ends them at once).
        sessions.retain(|_, b| b.expires > now && !self.s.tasks.ended(&b.task, &b.instance));
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
        let open = sessions.len() < MAX_SESSIONS && of_agent < MAX_SESSIONS_PER_AGENT;
        if open {
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
        }
        self.s
            .metrics
            .mcp_sessions
            .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        if open {
            Ok(sid)
        } else {
            Err(RpcRefusal::invalid(
                INTERNAL_ERROR,
                "too many open sessions; try again later".into(),
            ))
        }
    }

    /// Records a session opened, then answers `initialize` with its id and
    /// the revision agreed.
    async fn session_opened(
        &self,
        event: AuditEvent,
        server: &str,
        id: &Value,
        params: &Value,
        sid: &str,
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
        let mut ev = event;
        ev.event = Kind::McpSessionOpen.into();
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
        if let Ok(v) = HeaderValue::from_str(sid) {
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
        let sessions = self.sessions.lock();
        let b = sessions.get(sid).ok_or(SessionProblem::Unknown)?;
        if b.server != server || b.task != task.claims.task || b.instance != task.instance {
            return Err(SessionProblem::Foreign);
        }
        Ok(())
    }

    /// Ends a session of this task (DELETE).
    fn end_session(&self, s: &Server, task: &TaskUse, sid: Option<&str>) -> Result<(), Refused> {
        if let Err(p) = self.check_session(&s.cfg.name, task, sid) {
            let (status, message) = match p {
                SessionProblem::Foreign => (
                    StatusCode::FORBIDDEN,
                    "this session was opened for another task",
                ),
                _ => (StatusCode::NOT_FOUND, "no such session"),
            };
            return Err(Refused::Http(Refusal::new(
                status,
                "invalid_session",
                message.into(),
            )));
        }
        if let Some(sid) = sid {
            let mut sessions = self.sessions.lock();
            sessions.remove(sid);
            self.s
                .metrics
                .mcp_sessions
                .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// Records a session ended (off the response path) and answers 204.
    fn session_ended(&self, event: AuditEvent) -> Response {
        let mut ev = event;
        ev.event = Kind::McpSessionClose.into();
        ev.decision = Outcome::Allow;
        if let Some(ev) = self.s.audit.admit_known(ev) {
            self.record_later(ev);
        }
        StatusCode::NO_CONTENT.into_response()
    }

    async fn fresh_view(&self, s: &Server, task: &TaskUse) -> Result<(), UpstreamError> {
        let stale = || {
            let v = s.view.read();
            v.fetched.is_none_or(|t| t.elapsed() > TOOLS_TTL)
                || v.generation != s.upstream.generation()
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
        event.event = Kind::McpToolsList.into();
        if let Err(e) = self.fresh_view(s, task).await {
            return self
                .refuse_rpc(event, &s.cfg.name, "tools/list", id, upstream_refusal(&e))
                .await;
        }
        let (usable, changed) = {
            let v = s.view.read();
            (v.usable.clone(), v.changed.len() + v.held.len())
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

    /// `tools/call`: read the call, check the tool's definition is the
    /// approved one, decide with its arguments, then call the upstream.
    async fn call_tool(&self, event: AuditEvent, call: &Call<'_>, params: Value) -> Response {
        let mut event = event;
        event.event = Kind::McpToolCall.into();
        let (name, arguments) = match self.admit_call(call, &params, &mut event).await {
            Ok(c) => c,
            Err(r) => {
                return self
                    .refuse_rpc(event, &call.s.cfg.name, "tools/call", call.id, r)
                    .await;
            }
        };
        let s = call.s;
        if let Transport::Http {
            credential: Some(c),
            ..
        } = &s.cfg.transport
        {
            self.s.metrics.upstream_credential(c);
        }
        let upstream_started = Instant::now();
        let answer = s
            .upstream
            .call(
                &self.providers(),
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
                s.cfg.timeout,
                Some(call.task),
            )
            .await;
        self.answer(event, call, "tools/call", answer, Some(upstream_started))
            .await
    }

    /// Every check of a tool call before the upstream sees it; the tool's
    /// name and arguments when it may go.
    async fn admit_call(
        &self,
        call: &Call<'_>,
        params: &Value,
        event: &mut AuditEvent,
    ) -> Result<(String, serde_json::Map<String, Value>), RpcRefusal> {
        let Call { s, task, .. } = *call;
        let server = s.cfg.name.as_str();
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(RpcRefusal::invalid(
                    INVALID_PARAMS,
                    "`arguments` must be an object".into(),
                ));
            }
        };
        describe_call(event, &s.cfg, &name, &arguments);
        self.fresh_view(s, task)
            .await
            .map_err(|e| upstream_refusal(&e))?;
        pinned(s, &name)?;
        let mut req = self.tool_request(s, task, &name, call.peer);
        req.context.arguments = Some(arguments.clone());
        let (decision, decided) = self.s.authorizer.decide_for_record(&req, event.take());
        *event = decided;
        event.event = Kind::McpToolCall.into();
        if decision.effect == Effect::Allow {
            return Ok((name, arguments));
        }
        if decision.effect == Effect::ApprovalRequired {
            self.step_up_call(&req, &name, &arguments, decision, event)
                .await?;
            return Ok((name, arguments));
        }
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
            // Say what failed: an argument of the wrong type, or a policy
            // that could not be applied to this tool (which an
            // administrator fixes), not a bare "default deny".
            format!(
                "refused by policy: {refused_by}: the call of `{server}/{name}` could not be decided: {}",
                decision.errors.join("; ")
            )
        };
        Err(RpcRefusal::denied(
            message,
            json!({
                "refused_by": refused_by,
                "policies": decision.policies,
                "how_to_get_access": format!("ask an administrator for a permit on Action::\"mcp:call_tool\" and Tool::\"{server}/{name}\""),
            }),
        ))
    }

    /// A call policy allows only with a person's approval: asked for (or
    /// found) bound to this server, tool and canonical arguments, for this
    /// task and user; it goes ahead only with a grant, spent on it now.
    async fn step_up_call(
        &self,
        req: &DecisionRequest,
        name: &str,
        arguments: &serde_json::Map<String, Value>,
        decision: warrant_core::decision::Decision,
        event: &mut AuditEvent,
    ) -> Result<(), RpcRefusal> {
        let args = Value::Object(arguments.clone());
        let canonical = warrant_core::mcp::canonical(&args);
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
        };
        let server = match &req.resource {
            Resource::Tool { server, .. } => server.clone(),
            other => other.to_string(),
        };
        let subject = ApprovalSubject::of(
            req,
            json!({ "server": server, "tool": name, "arguments_sha256": digest }),
        );
        // The approver sees what they approve, unless it is too large to
        // show (it is bound by digest either way).
        let shown = if canonical.len() <= MAX_SHOWN_ARGUMENTS {
            json!({ "arguments": args })
        } else {
            json!({ "arguments_bytes": canonical.len() })
        };
        let step = self
            .s
            .approvals
            .step_up(
                subject,
                shown,
                decision.approval.unwrap_or_default(),
                decision.policies,
                event,
            )
            .await;
        let outcome = match &step {
            StepUp::Approved(a) => {
                add_detail(event, json!({ "approval": a.id }));
                event.decision = Outcome::Allow;
                return Ok(());
            }
            StepUp::Pending(a) => {
                add_detail(event, json!({ "approval": a.id }));
                Outcome::Pending
            }
            StepUp::Denied(a) => {
                add_detail(event, json!({ "approval": a.id }));
                Outcome::Deny
            }
            StepUp::Refused(_) => Outcome::Deny,
            StepUp::Unavailable(e) => {
                tracing::error!(error = %e, "cannot read or write approvals; tool call refused");
                Outcome::Error
            }
        };
        let (message, data) = step.refusal().unwrap_or_default();
        Err(RpcRefusal {
            code: REFUSED,
            message,
            data: Some(data),
            outcome,
            status: StatusCode::OK,
        })
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
        let (decision, mut event) = self.s.authorizer.decide_for_record(&req, event);
        event.event = match method {
            "resources/list" => Kind::McpResourcesList,
            "resources/templates/list" => Kind::McpResourceTemplatesList,
            "resources/read" => Kind::McpResourcesRead,
            "prompts/list" => Kind::McpPromptsList,
            _ => Kind::McpPromptsGet,
        }
        .into();
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
