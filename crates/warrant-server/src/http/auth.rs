//! Who is calling the admin API, and may they do this.
//!
//! On the admin socket the kernel says who connected (`SO_PEERCRED`); the socket
//! is mode 0600, and the peer must also be the broker's own user or root. Over
//! HTTP a bearer admin token is required; it is looked up by hash and must be
//! unexpired and unrevoked. Handlers then state the permission they need by
//! taking a [`Reader`] or [`Writer`] argument, so a route can't
//! forget its check. Every refusal is audited as `admin.auth`.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warrant_core::admin::{
    ADMIN_TOKEN_PREFIX, AdminTokenRecord, AdminTokenSecret, Permission, Role,
};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::time::Timestamp;

use crate::http::error::ApiError;
use crate::state::AppState;

/// The peer of an admin-socket connection, from the kernel.
#[derive(Clone, Copy, Debug)]
pub struct SocketPeer {
    /// The peer's uid, if the kernel told.
    pub uid: Option<u32>,
    /// The peer's pid, if the kernel told.
    pub pid: Option<i32>,
}

impl SocketPeer {
    /// What the kernel says of the process connected on `stream`.
    pub fn of(stream: &tokio::net::UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        Self {
            uid: cred.as_ref().map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

/// Which surface a call came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The admin Unix socket.
    Socket,
    /// HTTP with an admin token.
    Http,
    /// The console: a session cookie made from an admin token.
    Console,
}

impl Surface {
    /// The audit `protocol` value.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Socket => "admin-socket",
            Self::Http => "admin-http",
            Self::Console => "console",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Http => "http",
            Self::Console => "console",
        }
    }
}

/// An authenticated admin caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who, as recorded in the audit trail.
    pub actor: String,
    /// What they may do.
    pub role: Role,
    /// How they came in.
    pub surface: Surface,
    /// Where from.
    pub source: Option<String>,
    /// The person holding the admin token, when it names one
    /// (`user:<namespace>/<subject>`); `None` on the admin socket.
    pub person: Option<String>,
    /// What to look up again to know the caller may still act (a long
    /// answer, such as the live audit stream, asks now and then).
    pub recheck: Recheck,
}

/// What makes a caller's standing, to check it again later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recheck {
    /// The admin socket: the kernel's word at connect time.
    Socket,
    /// A bearer admin token, by hash.
    Token([u8; 32]),
    /// A console session, by the hash of its cookie.
    Session([u8; 32]),
}

/// Whether the caller may still act: the admin token unrevoked and
/// unexpired, the console session live (without counting as its use).
/// Records nothing.
pub async fn still_valid(state: &AppState, recheck: &Recheck) -> bool {
    let hash = match recheck {
        Recheck::Socket => return true,
        Recheck::Token(h) => *h,
        Recheck::Session(key) => {
            let config = state.live.config.load().console.clone();
            if !config.enabled {
                return false;
            }
            match state.console.session(key, &config, false) {
                Some((crate::state::SessionBasis::Token { hash }, ..)) => hash,
                Some((
                    crate::state::SessionBasis::Person {
                        issuer,
                        client_id,
                        namespace,
                        groups,
                    },
                    ..,
                )) => {
                    let role = state
                        .live
                        .config
                        .load()
                        .console_role(&issuer, &client_id, &namespace, &groups);
                    if role.is_none() {
                        state.console.sessions.lock().remove(key);
                    }
                    return role.is_some();
                }
                None => return false,
            }
        }
    };
    matches!(
        state.store.admin_token_by_hash(&hash).await,
        Ok(Some(r)) if r.revoked_at.is_none() && r.is_valid_at(Timestamp::now())
    )
}

impl Caller {
    /// An audit event of `kind` with this caller's facts filled in.
    pub fn event(&self, kind: Kind, outcome: Outcome) -> AuditEvent {
        let e = AuditEvent::new(kind, outcome)
            .actor(self.actor.clone())
            .protocol(self.surface.protocol());
        match &self.source {
            Some(s) => e.source(s.clone()),
            None => e,
        }
    }
}

pub(crate) async fn refuse(
    state: &AppState,
    surface: Surface,
    source: Option<String>,
    actor: Option<String>,
    what: String,
    why: &str,
    err: ApiError,
) -> Response {
    let mut event = AuditEvent::new(Kind::AdminAuth, Outcome::Deny)
        .protocol(surface.protocol())
        .action(what)
        .reason(why);
    let anonymous = actor.is_none();
    event.actor = actor;
    if let Some(s) = source {
        event = event.source(s);
    }
    // A caller that proved nothing is recorded in aggregate.
    let event = if anonymous {
        match state.refusals.admit(event) {
            Some(ev) => ev,
            None => return err.into_response(),
        }
    } else {
        event
    };
    if let Err(e) = state.store.append_audit(event).await {
        state.metrics.audit_write_failures.inc();
        return ApiError::from(e).into_response();
    }
    err.into_response()
}

/// `METHOD /path` of a request, the path as sent (a nested router, such as
/// the console's API, sees it shortened).
pub(crate) fn what(req: &Request) -> String {
    what_parts(req.method(), req.uri(), req.extensions())
}

fn what_parts(
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    ext: &axum::http::Extensions,
) -> String {
    let path = ext
        .get::<axum::extract::OriginalUri>()
        .map_or(uri.path(), |u| u.0.path());
    format!("{method} {path}")
}

/// Counts an admin response by outcome: refused (401/403), ok, or an error.
pub(crate) fn count(state: &AppState, surface: Surface, resp: &Response) {
    let status = resp.status();
    let outcome = if status.is_success() {
        "ok"
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        "denied"
    } else {
        "error"
    };
    state.metrics.admin_request(surface.metric(), outcome);
}

/// Middleware for the admin socket.
pub async fn socket_admin(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketPeer>,
    req: Request,
    next: Next,
) -> Response {
    let resp = socket_admin_checked(&state, peer, req, next).await;
    count(&state, Surface::Socket, &resp);
    resp
}

async fn socket_admin_checked(
    state: &AppState,
    peer: SocketPeer,
    mut req: Request,
    next: Next,
) -> Response {
    let me = rustix::process::geteuid().as_raw();
    let source = format!(
        "uid={} pid={}",
        peer.uid.map_or("?".into(), |u| u.to_string()),
        peer.pid.map_or("?".into(), |p| p.to_string())
    );
    match peer.uid {
        Some(uid) if uid == me || uid == 0 => {}
        _ => {
            let w = what(&req);
            return refuse(
                state,
                Surface::Socket,
                Some(source),
                None,
                w,
                "the admin socket peer is not the broker's user or root",
                ApiError::forbidden(
                    "only the user running warrant (or root) may use the admin socket",
                ),
            )
            .await;
        }
    }
    let uid = peer.uid.unwrap_or(me);
    req.extensions_mut().insert(Caller {
        actor: format!("local:uid={uid}"),
        role: Role::Admin,
        surface: Surface::Socket,
        source: Some(source),
        person: None,
        recheck: Recheck::Socket,
    });
    next.run(req).await
}

/// Middleware for the admin API over HTTP: a valid admin token is required.
pub async fn http_admin(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let resp = http_admin_checked(&state, addr, req, next).await;
    count(&state, Surface::Http, &resp);
    resp
}

async fn http_admin_checked(
    state: &AppState,
    addr: SocketAddr,
    mut req: Request,
    next: Next,
) -> Response {
    let source = Some(addr.to_string());
    let w = what(&req);
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = match header.and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    }) {
        Some(t) if t.starts_with(ADMIN_TOKEN_PREFIX) => AdminTokenSecret::presented(t.trim()),
        Some(_) => {
            return refuse(state, Surface::Http, source, None, w, "the bearer token is not an admin token", ApiError::unauthorized("the bearer token is not a warrant admin token; create one with `warrant admin-token create --role ...`")).await;
        }
        None => {
            return refuse(
                state,
                Surface::Http,
                source,
                None,
                w,
                "no admin token",
                ApiError::unauthorized("the admin API needs `Authorization: Bearer <admin token>`"),
            )
            .await;
        }
    };
    let record =
        match usable_token(state, Surface::Http, source.clone(), w, &presented.hash()).await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    req.extensions_mut().insert(Caller {
        actor: format!("admin-token:{}", record.id),
        role: record.role,
        surface: Surface::Http,
        source,
        person: record.person.clone(),
        recheck: Recheck::Token(presented.hash()),
    });
    next.run(req).await
}

/// The admin token whose hash is `hash`, when it may be used now; otherwise
/// the refusal, recorded (`what` is the request refused).
pub(crate) async fn usable_token(
    state: &AppState,
    surface: Surface,
    source: Option<String>,
    what: String,
    hash: &[u8; 32],
) -> Result<AdminTokenRecord, Response> {
    let record = match state.store.admin_token_by_hash(hash).await {
        Ok(r) => r,
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let (why, err) = match record {
        None => (
            "unknown admin token".to_owned(),
            ApiError::unauthorized("the admin token is not recognised"),
        ),
        Some(r) if r.revoked_at.is_some() => (
            format!("admin token {} is revoked", r.id),
            ApiError::unauthorized("the admin token has been revoked"),
        ),
        Some(r) if !r.is_valid_at(Timestamp::now()) => (
            format!("admin token {} expired", r.id),
            ApiError::unauthorized("the admin token has expired; create a new one"),
        ),
        Some(r) => return Ok(r),
    };
    Err(refuse(state, surface, source, None, what, &why, err).await)
}

async fn require(parts: &Parts, state: &AppState, perm: Permission) -> Result<Caller, Response> {
    let Some(caller) = parts.extensions.get::<Caller>().cloned() else {
        return Err(
            ApiError::internal("the admin route is not behind authentication").into_response(),
        );
    };
    if caller.role.allows(perm) {
        return Ok(caller);
    }
    let need = match perm {
        Permission::Read => "read",
        Permission::Write => "change anything",
        Permission::Approve => "decide approvals",
    };
    let why = format!("role {} may not {need}", caller.role);
    let roles = if perm == Permission::Approve {
        "approver or admin"
    } else {
        "admin"
    };
    let w = what_parts(&parts.method, &parts.uri, &parts.extensions);
    // A person signed in by single sign-on holds no admin token.
    let message = if caller.actor.starts_with("user:") {
        format!("your {why}; it needs role {roles}")
    } else {
        format!("this admin token's {why}; use a token with role {roles}")
    };
    Err(refuse(
        state,
        caller.surface,
        caller.source.clone(),
        Some(caller.actor.clone()),
        w,
        &why,
        ApiError::forbidden(message),
    )
    .await)
}

macro_rules! permission_extractor {
    ($(#[$doc:meta])* $name:ident, $perm:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequestParts<AppState> for $name {
            type Rejection = Response;
            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
                require(parts, state, $perm).await.map($name)
            }
        }
    };
}

permission_extractor!(
    /// A caller allowed to read.
    Reader,
    Permission::Read
);
permission_extractor!(
    /// A caller allowed to change things.
    Writer,
    Permission::Write
);
permission_extractor!(
    /// A caller allowed to decide approvals.
    Approving,
    Permission::Approve
);
