//! `warrant sidecar`: warrant for an agent that cannot be changed.
//!
//! It attests itself (agent socket, OIDC token file or join token), listens
//! on loopback, and forwards `http://127.0.0.1:<port>/<route>/...` (and
//! `/mcp/<server>`) to the edge with a fresh task token for the route's
//! audience, so an unmodified SDK works by changing only its base URL. The
//! agent's own `Authorization`/`x-api-key` (a placeholder) is dropped. A
//! user's token in `x-warrant-user-token` makes the task one for that user
//! (exchanged and cached, never forwarded).
//!
//! Trust boundary: anything that can reach the port acts as this workload.
//! So it listens on loopback only, answers only requests addressed to a
//! loopback host (no DNS rebinding), refuses requests a browser made (an
//! `Origin` or `Sec-Fetch-Site` header: a web page cannot drive it), and
//! forwards only the routes it was started with. It is not a general proxy:
//! everything goes to the one edge it was given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::agent::{Agent, AgentError, Held, TYPE_JWT};
use crate::cli::{Cli, SidecarArgs};

type Forwarder =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Body>;

struct Sidecar {
    agent: Agent,
    forward: Forwarder,
    /// `route` or `mcp/<server>` -> the scopes asked for on it.
    scopes: HashMap<String, String>,
    user_header: HeaderName,
    port: u16,
}

/// Parses `name=scopes`.
fn parse_pair(s: &str, flag: &str) -> anyhow::Result<(String, String)> {
    let Some((name, scopes)) = s.split_once('=') else {
        bail!("{flag} `{s}`: write NAME=SCOPES, for example `openai=llm:chat`");
    };
    let name = name.trim();
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!(
            "{flag} `{s}`: `{name}` is not a route or server name (lower-case letters, digits, - and _)"
        );
    }
    let scopes = scopes.split_whitespace().collect::<Vec<_>>().join(" ");
    if scopes.is_empty() {
        bail!("{flag} `{s}`: give the scopes to ask for, for example `{name}=llm:chat`");
    }
    Ok((name.to_owned(), scopes))
}

pub async fn run(cli: &Cli, args: &SidecarArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the sidecar listens on loopback only; anything that can reach its port acts as this workload",
            args.listen
        );
    }
    let mut scopes = HashMap::new();
    for r in &args.routes {
        let (name, s) = parse_pair(r, "--route")?;
        if name == "mcp" {
            bail!("--route `mcp` is the MCP gateway's path; use --mcp SERVER=SCOPES");
        }
        scopes.insert(name, s);
    }
    for m in &args.mcp {
        let (name, s) = parse_pair(m, "--mcp")?;
        scopes.insert(format!("mcp/{name}"), s);
    }
    if scopes.is_empty() {
        bail!("give at least one --route ROUTE=SCOPES or --mcp SERVER=SCOPES to forward");
    }
    let user_header = HeaderName::try_from(args.user_header.as_str())
        .with_context(|| format!("--user-header `{}` is not a header name", args.user_header))?;
    let agent = super::agent_client(cli, &args.agent)?;
    if agent.edge().is_empty() {
        bail!(
            "say where the edge is: --edge-url (or WARRANT_EDGE_URL), or --data-dir naming a running broker's data directory owned by you or root"
        );
    }
    // Attest now: a sidecar that cannot get an identity says so at start.
    let id = agent.identity().await.map_err(|e| {
        anyhow::anyhow!(
            "the sidecar could not attest ({}): {e}",
            agent.attestation().kind()
        )
    })?;
    let spiffe = id
        .answer
        .get("spiffe_id")
        .and_then(|v| v.as_str())
        .unwrap_or("-")
        .to_owned();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::client::tls_config(cli.ca_file.as_deref())?)
        .https_or_http()
        .enable_http1()
        .build();
    let forward = Client::builder(TokioExecutor::new()).build(https);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let state = Arc::new(Sidecar {
        agent,
        forward,
        scopes,
        user_header,
        port: local.port(),
    });
    let mut names: Vec<&String> = state.scopes.keys().collect();
    names.sort();
    tracing::info!(
        listen = %local,
        edge = %state.agent.edge(),
        identity = %spiffe,
        forwards = ?names,
        "warrant sidecar is ready; anything that can reach this port acts as this workload"
    );
    let app = axum::Router::new().fallback(handle).with_state(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// What the sidecar answers instead of forwarding (boxed: every step of
/// the request path returns it).
type Refused = Box<Response>;

/// A refusal of the sidecar's own, in the edge's JSON shape.
fn refuse(status: StatusCode, code: &str, message: String) -> Refused {
    Box::new(
        (
            status,
            axum::Json(
                serde_json::json!({ "error": { "message": message, "type": code, "code": code } }),
            ),
        )
            .into_response(),
    )
}

fn agent_error(e: &AgentError) -> Refused {
    let (status, body) = e.edge_body();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Box::new((status, axum::Json(body)).into_response())
}

/// Whether `Host` names this sidecar on a loopback address.
fn addressed_here(headers: &HeaderMap, port: u16) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let (name, p) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => (n, p.parse::<u16>().ok()),
        _ => (host, Some(80)),
    };
    let loopback = matches!(name, "127.0.0.1" | "localhost" | "[::1]");
    loopback && p == Some(port)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Refuses what the sidecar never serves: another host's requests (DNS
/// rebinding) and a browser's.
fn check_caller(s: &Sidecar, headers: &HeaderMap) -> Result<(), Refused> {
    if !addressed_here(headers, s.port) {
        return Err(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "invalid_request",
            format!(
                "the sidecar answers requests addressed to 127.0.0.1:{} (or localhost) only",
                s.port
            ),
        ));
    }
    // A web page in a browser on this host can reach loopback; it must not
    // act as this workload.
    if headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site") {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the sidecar does not serve browsers (the request has an Origin or Sec-Fetch-Site header)".into(),
        ));
    }
    Ok(())
}

/// The route (or `mcp/<server>`) a path is for, and the scopes to ask for
/// on it; only those the sidecar was started with.
fn route_of<'a>(s: &'a Sidecar, path: &str) -> Result<(String, &'a str), Refused> {
    let mut segs = path.trim_start_matches('/').splitn(3, '/');
    let key = match (segs.next(), segs.next()) {
        (Some("mcp"), Some(server)) => format!("mcp/{server}"),
        (Some(route), _) => route.to_owned(),
        _ => String::new(),
    };
    match s.scopes.get(&key) {
        Some(scope) => Ok((key, scope.as_str())),
        None => {
            let mut known: Vec<&str> = s.scopes.keys().map(String::as_str).collect();
            known.sort_unstable();
            Err(refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "the sidecar does not forward `{}`; it forwards {}",
                    key.chars().take(100).collect::<String>(),
                    known.join(", ")
                ),
            ))
        }
    }
}

/// The user token the caller passed, if one (never two).
fn user_token(s: &Sidecar, headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let mut users = headers.get_all(&s.user_header).iter();
    match (users.next(), users.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => match v.to_str() {
            Ok(t) if !t.trim().is_empty() => {
                Ok(Some(t.trim().trim_start_matches("Bearer ").to_owned()))
            }
            _ => Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("`{}` must hold a user's token", s.user_header),
            )),
        },
        (Some(_), Some(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("send one `{}` header, not several", s.user_header),
        )),
    }
}

/// A fresh task token for `key` (for the user, or for the sidecar itself)
/// and the header the edge reads it from on that route.
async fn task_for(
    s: &Sidecar,
    key: &str,
    scope: &str,
    user: Option<&str>,
) -> Result<(Held, HeaderName), Refused> {
    let meta = s.agent.resource(key).await.map_err(|e| agent_error(&e))?;
    let Some(audience) = meta.get("warrant_audience").and_then(|v| v.as_str()) else {
        return Err(refuse(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("the edge does not say which audience `{key}` needs"),
        ));
    };
    let token_header = meta
        .get("warrant_token_header")
        .and_then(|v| v.as_str())
        .and_then(|h| HeaderName::try_from(h).ok())
        .unwrap_or(header::AUTHORIZATION);
    let audience = [audience.to_owned()];
    let task = match user {
        Some(u) => s.agent.exchange(u, TYPE_JWT, &audience, scope).await,
        None => s.agent.self_task(&audience, scope).await,
    };
    task.map(|t| (t, token_header)).map_err(|e| agent_error(&e))
}

/// Drops the hop-by-hop headers, and those a `Connection` header names.
fn drop_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
}

/// The request for the edge: its address, the agent's own credentials and
/// the user header dropped, the task token in the route's header.
fn outbound(
    s: &Sidecar,
    req: Request<Body>,
    task: &Held,
    token_header: HeaderName,
) -> Result<Request<Body>, Refused> {
    let (mut parts, body) = req.into_parts();
    let target = format!(
        "{}{}",
        s.agent.edge(),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    parts.uri = target.parse().map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request's path is not valid".into(),
        )
    })?;
    let h = &mut parts.headers;
    drop_hop_by_hop(h);
    // The agent's placeholder key goes nowhere; the edge puts the real one on.
    for name in [
        header::HOST,
        header::AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("api-key"),
    ] {
        h.remove(name);
    }
    h.remove(&s.user_header);
    h.remove(&token_header);
    let value = if token_header == header::AUTHORIZATION {
        format!("Bearer {}", task.token.as_str())
    } else {
        task.token.as_str().to_owned()
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        refuse(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the task token is not a header value".into(),
        )
    })?;
    value.set_sensitive(true);
    h.insert(token_header, value);
    Ok(Request::from_parts(parts, body))
}

async fn handle(
    State(s): State<Arc<Sidecar>>,
    ConnectInfo(_peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    match forward(&s, req).await {
        Ok(r) => r,
        Err(r) => *r,
    }
}

async fn forward(s: &Sidecar, req: Request<Body>) -> Result<Response, Refused> {
    check_caller(s, req.headers())?;
    let (key, scope) = route_of(s, req.uri().path())?;
    let user = user_token(s, req.headers())?;
    let (task, token_header) = task_for(s, &key, scope, user.as_deref()).await?;
    let out = outbound(s, req, &task, token_header)?;
    let resp = s.forward.request(out).await.map_err(|e| {
        refuse(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!(
                "cannot reach the edge at {}: {e}",
                warrant_core::text::shown_url(s.agent.edge())
            ),
        )
    })?;
    let from_edge = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("realm=\"warrant\""));
    if resp.status() == StatusCode::UNAUTHORIZED && from_edge {
        // The edge refused the token (revoked, or an agent in its chain may
        // no longer act): the next request starts over. An upstream's own
        // 401 keeps it.
        s.agent.forget(task.token.as_str());
    }
    let (mut parts, body) = resp.into_parts();
    drop_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}
