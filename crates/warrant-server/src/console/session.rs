//! Console sessions: an admin token (or the provider's word, see `oidc.rs`)
//! exchanged for a cookie.
//!
//! The cookie holds 32 random bytes; the broker keeps only their SHA-256,
//! with the hash of the admin token the session was made from. Every request
//! looks the admin token up again, so revoking it (or its expiry) ends the
//! session at once, and the role is always the token's. A change needs the
//! session's CSRF token in `x-warrant-csrf` and a same-origin `Origin` (or
//! `Sec-Fetch-Site`) besides the `SameSite=Strict` cookie.
//!
//! Sessions live in the memory of the broker that made them: a restart
//! signs everyone out, and behind a load balancer the console must stick to
//! one broker.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Bytes};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warrant_core::admin::{ADMIN_TOKEN_PREFIX, AdminTokenSecret, Role};
use warrant_core::audit::{Kind, Outcome};
use warrant_core::time::Timestamp;

use crate::http::auth::{Caller, Recheck, Surface, count, refuse, usable_token, what};
use crate::http::error::ApiError;
use crate::state::{AppState, ConsoleSession, SessionBasis};

/// The header a change carries its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-warrant-csrf";
/// The most cookies of the console's name looked at in one request.
const MAX_COOKIES: usize = 16;

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

pub(super) fn random_text() -> Result<String, ApiError> {
    warrant_host::random::bytes::<32>()
        .map(|b| URL_SAFE_NO_PAD.encode(b))
        .map_err(|_| ApiError::internal("the broker could not make a session"))
}

pub(super) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The name of the session cookie: `__Secure-` when it may only travel
/// over TLS.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Secure-warrant_console"
    } else {
        "warrant_console"
    }
}

/// Whether the console is reached over TLS (the broker's own, or a proxy in
/// front: the issuer says which).
pub(super) fn secure(state: &AppState) -> bool {
    state.issuer.starts_with("https://")
}

/// The well-formed session cookies a request carries (at most a few). Other
/// sites on the same host name can plant cookies for it (cookies do not
/// keep to a port), so a planted one must not lock the real one out: each
/// is tried, and the first live session counts.
fn session_cookies(headers: &HeaderMap, secure: bool) -> Vec<String> {
    let name = cookie_name(secure);
    let mut found = Vec::new();
    for v in headers.get_all(COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == name
                && val.len() == 43
                && val
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && found.len() < MAX_COOKIES
            {
                found.push(val.to_owned());
            }
        }
    }
    found
}

/// The `host[:port]` values the console answers to: the issuer's, the
/// address the API listener is bound to, and `localhost` at its port. A
/// page served under another name (DNS rebinding) gets nothing.
pub(super) fn known_host(state: &AppState, headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let api = state.live.api_addr;
    let issuer = url::Url::parse(&state.issuer).ok();
    let issuer_authority = issuer.as_ref().and_then(|u| {
        let h = u.host_str()?.to_ascii_lowercase();
        Some(match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    });
    host == api.to_string()
        || host == format!("localhost:{}", api.port())
        || issuer_authority.is_some_and(|a| a == host)
}

/// Whether a request comes from a page of this console: its `Origin` is
/// the console's (scheme as the issuer's, the host it was sent to), and the
/// browser does not call it cross-site.
fn same_origin(headers: &HeaderMap, secure: bool) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site != "same-origin"
    {
        return Err("the request came from another site");
    }
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let scheme = if secure { "https://" } else { "http://" };
    let mut origins = headers.get_all(ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) => {
            if headers.contains_key("sec-fetch-site") {
                Ok(())
            } else {
                Err("the request has no Origin")
            }
        }
        (Some(o), None) => {
            let o = o.to_str().unwrap_or("");
            match (o.strip_prefix(scheme), host) {
                (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
                _ => Err("the request's Origin is not this console"),
            }
        }
        (Some(_), Some(_)) => Err("the request has two Origins"),
    }
}

/// Whether the method changes something.
fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// A request's console session: who, its key, its CSRF token.
pub(super) struct Found {
    pub(super) caller: Caller,
    pub(super) key: [u8; 32],
    pub(super) csrf: String,
}

/// The caller of a live session the request carries; a change must also
/// carry its CSRF token from this origin. With `touch`, the request counts
/// as the session's use (a live audit stream's reconnections do not, so an
/// open page does not keep a session alive on its own).
pub(super) async fn authenticate(
    state: &AppState,
    addr: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    w: String,
    touch: bool,
) -> Result<Found, Response> {
    let source = Some(addr.to_string());
    let secure = secure(state);
    let config = state.live.config.load().console.clone();
    let cookies = session_cookies(headers, secure);
    if cookies.is_empty() {
        return Err(refuse(
            state,
            Surface::Console,
            source,
            None,
            w,
            "no console session",
            ApiError::unauthorized("sign in to the console first"),
        )
        .await);
    }
    let found = cookies.iter().find_map(|c| {
        let key = digest(c);
        state
            .console
            .session(&key, &config, touch)
            .map(|s| (key, s))
    });
    let Some((key, (basis, actor, person, csrf))) = found else {
        return Err(refuse(
            state,
            Surface::Console,
            source,
            None,
            w,
            "unknown or expired console session",
            ApiError::unauthorized("the console session has ended; sign in again"),
        )
        .await);
    };
    if changes(method) {
        let presented = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
        let why = match presented {
            Some(p) if constant_eq(p, csrf.as_bytes()) => same_origin(headers, secure).err(),
            Some(_) => Some("the CSRF token does not match the session"),
            None => Some("no CSRF token"),
        };
        if let Some(why) = why {
            return Err(refuse(
                state,
                Surface::Console,
                source,
                Some(actor),
                w,
                why,
                ApiError::forbidden(format!(
                    "{why}: changes are made from the console's own pages"
                )),
            )
            .await);
        }
    }
    let (role, person) = match session_role(state, &key, basis, &actor, person, &source, w).await {
        Ok(found) => found,
        Err(refused) => return Err(refused),
    };
    Ok(Found {
        caller: Caller {
            actor,
            role,
            surface: Surface::Console,
            source,
            person,
            recheck: Recheck::Session(key),
        },
        key,
        csrf,
    })
}

/// The role a session has now: its admin token's (looked up again), or
/// what the single sign-on mapping in force gives the person's groups. A
/// session that has none any more is ended, and the refusal recorded.
async fn session_role(
    state: &AppState,
    key: &[u8; 32],
    basis: SessionBasis,
    actor: &str,
    person: Option<String>,
    source: &Option<String>,
    w: String,
) -> Result<(Role, Option<String>), Response> {
    let role = match basis {
        SessionBasis::Token { hash } => {
            match usable_token(state, Surface::Console, source.clone(), w, &hash).await {
                Ok(r) => return Ok((r.role, r.person)),
                Err(refused) => {
                    state.console.sessions.lock().remove(key);
                    return Err(refused);
                }
            }
        }
        SessionBasis::Person {
            issuer,
            client_id,
            namespace,
            groups,
        } => state
            .live
            .config
            .load()
            .console_role(&issuer, &client_id, &namespace, &groups),
    };
    if let Some(role) = role {
        return Ok((role, person));
    }
    state.console.sessions.lock().remove(key);
    Err(refuse(
        state,
        Surface::Console,
        source.clone(),
        Some(actor.to_owned()),
        w,
        "single sign-on no longer gives this person a role",
        ApiError::unauthorized(
            "your groups no longer give you a role in this console (or single sign-on is off); sign in again",
        ),
    )
    .await)
}

/// Middleware for the admin API under `/console/api/v1`: a live session,
/// and for changes its CSRF token.
pub async fn console_admin(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let w = what(&req);
    let touch = !req.uri().path().ends_with("/audit/stream");
    let resp = match authenticate(&state, addr, req.method(), req.headers(), w, touch).await {
        Ok(found) => {
            req.extensions_mut().insert(found.caller);
            next.run(req).await
        }
        Err(refused) => refused,
    };
    count(&state, Surface::Console, &resp);
    resp
}

/// `POST /console/session`: the admin token to sign in with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// Who is signed in.
#[derive(Serialize)]
struct WhoAmI {
    actor: String,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    person: Option<String>,
    /// Sent back in `x-warrant-csrf` with every change.
    csrf: String,
    expires_at: Timestamp,
    idle_timeout_seconds: u64,
}

fn set_cookie(secure: bool, value: &str, max_age: u64) -> HeaderValue {
    let name = cookie_name(secure);
    let tls = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{tls}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("warrant_console=; Max-Age=0"))
}

/// Who a new session is for.
pub(super) struct NewSession {
    pub(super) basis: SessionBasis,
    pub(super) actor: String,
    pub(super) role: Role,
    pub(super) person: Option<String>,
    /// How long at most, before the console's own lifetime.
    pub(super) at_most: Duration,
    pub(super) source: Option<String>,
    /// Why the sign-in was allowed, for the record.
    pub(super) reason: String,
}

/// Makes a session, records the sign-in, and answers with its cookie set
/// and who is signed in (as JSON, or as a redirect to `redirect`).
pub(super) async fn open(state: &AppState, new: NewSession, redirect: Option<&str>) -> Response {
    let config = state.live.config.load().console.clone();
    let (cookie, csrf) = match (random_text(), random_text()) {
        (Ok(c), Ok(x)) => (c, x),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let ttl = config.session_ttl.min(new.at_most);
    let now = Instant::now();
    let ends_at = Timestamp::from_millis(
        Timestamp::now().as_millis() + i64::try_from(ttl.as_millis()).unwrap_or(0),
    );
    let key = digest(&cookie);
    let admitted = state.console.admit(
        key,
        ConsoleSession {
            basis: new.basis.clone(),
            actor: new.actor.clone(),
            person: new.person.clone(),
            csrf: csrf.clone(),
            created: now,
            ends: now + ttl,
            ends_at,
            last_used: now,
        },
        &config,
    );
    if !admitted {
        return refuse(
            state,
            Surface::Console,
            new.source.clone(),
            Some(new.actor.clone()),
            "POST /console/session".into(),
            "the console has as many sessions as it keeps",
            ApiError::unavailable("the console has too many sessions open; try again later"),
        )
        .await;
    }
    let caller = Caller {
        actor: new.actor.clone(),
        role: new.role,
        surface: Surface::Console,
        source: new.source,
        person: new.person.clone(),
        recheck: Recheck::Session(key),
    };
    let event = caller
        .event(Kind::AdminConsoleSignIn, Outcome::Allow)
        .reason(new.reason);
    if let Err(e) = state.store.append_audit(event).await {
        state.console.sessions.lock().remove(&key);
        state.metrics.audit_write_failures.inc();
        return ApiError::from(e).into_response();
    }
    let mut resp = match redirect {
        Some(to) => (
            axum::http::StatusCode::SEE_OTHER,
            [(axum::http::header::LOCATION, to.to_owned())],
        )
            .into_response(),
        None => Json(WhoAmI {
            actor: caller.actor,
            role: caller.role,
            person: caller.person,
            csrf,
            expires_at: ends_at,
            idle_timeout_seconds: config.idle_timeout.as_secs(),
        })
        .into_response(),
    };
    resp.headers_mut().append(
        SET_COOKIE,
        set_cookie(secure(state), &cookie, ttl.as_secs()),
    );
    resp
}

pub(super) async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = sign_in_checked(&state, addr, &headers, &body).await;
    count(&state, Surface::Console, &resp);
    resp
}

async fn sign_in_checked(
    state: &AppState,
    addr: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let source = Some(addr.to_string());
    let w = "POST /console/session".to_owned();
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    let refused = |why: &'static str, err: ApiError| {
        refuse(
            state,
            Surface::Console,
            source.clone(),
            None,
            w.clone(),
            why,
            err,
        )
    };
    if !json {
        return refused(
            "the sign-in was not JSON",
            ApiError::invalid("sign in with a JSON body: {\"token\": \"<admin token>\"}"),
        )
        .await;
    }
    if let Err(why) = same_origin(headers, secure(state)) {
        return refused(
            why,
            ApiError::forbidden(format!("{why}: sign in from the console's own page")),
        )
        .await;
    }
    let Ok(SignIn { token }) = serde_json::from_slice::<SignIn>(body) else {
        return refused(
            "the sign-in body was malformed",
            ApiError::invalid("sign in with a JSON body: {\"token\": \"<admin token>\"}"),
        )
        .await;
    };
    let token = token.trim();
    if !token.starts_with(ADMIN_TOKEN_PREFIX) {
        return refused(
            "the sign-in token is not an admin token",
            ApiError::unauthorized(
                "that is not a warrant admin token; create one with `warrant admin-token create --role ...`",
            ),
        )
        .await;
    }
    let hash = AdminTokenSecret::presented(token).hash();
    let record = match usable_token(state, Surface::Console, source.clone(), w, &hash).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    // Never past the admin token's own expiry.
    let left =
        u64::try_from(record.expires_at.as_millis() - Timestamp::now().as_millis()).unwrap_or(0);
    open(
        state,
        NewSession {
            basis: SessionBasis::Token { hash },
            actor: format!("admin-token:{}", record.id),
            role: record.role,
            person: record.person.clone(),
            at_most: Duration::from_millis(left),
            source,
            reason: format!("role {}", record.role),
        },
        None,
    )
    .await
}

/// `GET /console/session`: who is signed in, the CSRF token, and whether
/// single sign-on is offered.
pub(super) async fn current(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Opening the console before signing in is no attempt at anything.
    let config = state.live.config.load().console.clone();
    if session_cookies(&headers, secure(&state)).is_empty() {
        let mut r = ApiError::unauthorized("sign in to the console first").into_response();
        if config.oidc.is_some() {
            r.headers_mut()
                .insert("x-warrant-sso", HeaderValue::from_static("oidc"));
        }
        return r;
    }
    let w = "GET /console/session".to_owned();
    match authenticate(&state, addr, &Method::GET, &headers, w, true).await {
        Ok(found) => {
            let expires_at = state
                .console
                .sessions
                .lock()
                .get(&found.key)
                .map_or(Timestamp::now(), |s| s.ends_at);
            Json(WhoAmI {
                actor: found.caller.actor,
                role: found.caller.role,
                person: found.caller.person,
                csrf: found.csrf,
                expires_at,
                idle_timeout_seconds: config.idle_timeout.as_secs(),
            })
            .into_response()
        }
        Err(mut refused) => {
            if config.oidc.is_some() {
                refused
                    .headers_mut()
                    .insert("x-warrant-sso", HeaderValue::from_static("oidc"));
            }
            refused
        }
    }
}

/// `DELETE /console/session`: sign out.
pub(super) async fn sign_out(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let found = match authenticate(
        &state,
        addr,
        &Method::DELETE,
        &headers,
        "DELETE /console/session".into(),
        true,
    )
    .await
    {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    state.console.sessions.lock().remove(&found.key);
    let event = found
        .caller
        .event(Kind::AdminConsoleSignOut, Outcome::Allow);
    if let Err(e) = state.store.append_audit(event).await {
        state.metrics.audit_write_failures.inc();
        tracing::warn!(error = %e, "the console sign-out was not recorded");
    }
    let mut resp = axum::http::StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(SET_COOKIE, set_cookie(secure(&state), "", 0));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn every_well_formed_cookie_of_the_name_is_a_candidate() {
        let good = "a".repeat(43);
        let h = headers(&[("cookie", &format!("x=1; warrant_console={good}"))]);
        assert_eq!(session_cookies(&h, false), vec![good.clone()]);
        // The TLS name is not the plain one.
        assert!(session_cookies(&h, true).is_empty());
        let other = "b".repeat(43);
        let twice = headers(&[
            ("cookie", &format!("warrant_console={good}")),
            ("cookie", &format!("warrant_console={other}")),
        ]);
        assert_eq!(session_cookies(&twice, false), vec![good.clone(), other]);
        let short = headers(&[("cookie", "warrant_console=abc")]);
        assert!(session_cookies(&short, false).is_empty());
        let odd = headers(&[("cookie", &format!("warrant_console={}", "%".repeat(43)))]);
        assert!(session_cookies(&odd, false).is_empty());
        let many = headers(&[(
            "cookie",
            &vec![format!("warrant_console={good}"); 20].join("; "),
        )]);
        assert_eq!(session_cookies(&many, false).len(), MAX_COOKIES);
    }

    #[test]
    fn changes_come_from_the_same_origin() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut all = vec![("host", "127.0.0.1:8080")];
            all.extend_from_slice(pairs);
            headers(&all)
        };
        assert!(same_origin(&h(&[("origin", "http://127.0.0.1:8080")]), false).is_ok());
        // The scheme is the console's.
        assert!(same_origin(&h(&[("origin", "http://127.0.0.1:8080")]), true).is_err());
        assert!(same_origin(&h(&[("origin", "https://127.0.0.1:8080")]), true).is_ok());
        assert!(same_origin(&h(&[("origin", "https://127.0.0.1:8080")]), false).is_err());
        for bad in [
            "http://evil.test",
            "http://127.0.0.1:9090",
            "null",
            "http://127.0.0.1:8080/x",
            "ftp://127.0.0.1:8080",
        ] {
            assert!(same_origin(&h(&[("origin", bad)]), false).is_err(), "{bad}");
        }
        assert!(same_origin(&h(&[]), false).is_err());
        assert!(
            same_origin(
                &h(&[
                    ("origin", "http://127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080")
                ]),
                false
            )
            .is_err()
        );
        assert!(
            same_origin(
                &h(&[
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "cross-site")
                ]),
                false
            )
            .is_err()
        );
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")]), false).is_ok());
        assert!(same_origin(&h(&[("sec-fetch-site", "none")]), false).is_err());
    }

    #[test]
    fn csrf_comparison_is_exact() {
        assert!(constant_eq(b"abc", b"abc"));
        assert!(!constant_eq(b"abc", b"abd"));
        assert!(!constant_eq(b"abc", b"ab"));
        assert!(!constant_eq(b"", b"a"));
    }
}
