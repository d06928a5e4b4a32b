//! Console sessions: an admin token exchanged for a cookie.
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

use crate::http::auth::{Caller, Surface, count, refuse, usable_token, what};
use crate::http::error::ApiError;
use crate::state::{AppState, ConsoleSession};

/// The header a change carries its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-warrant-csrf";
/// The most sessions a broker keeps.
const MAX_SESSIONS: usize = 1024;
/// The most sessions one admin token may have open (the oldest goes).
const MAX_PER_TOKEN: usize = 16;

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn random_text() -> Result<String, ApiError> {
    warrant_host::random::bytes::<32>()
        .map(|b| URL_SAFE_NO_PAD.encode(b))
        .map_err(|_| ApiError::internal("the broker could not make a session"))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
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
fn secure(state: &AppState) -> bool {
    state.issuer.starts_with("https://")
}

fn session_cookie(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = cookie_name(secure);
    let mut found = None;
    for v in headers.get_all(COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == name
            {
                // Two cookies of the name (one planted by a sibling site):
                // trust neither.
                if found.is_some() {
                    return None;
                }
                found = Some(val.to_owned());
            }
        }
    }
    found.filter(|v| {
        v.len() == 43
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Whether a request comes from a page of this console: its `Origin` names
/// the host it was sent to, and the browser does not call it cross-site.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site != "same-origin"
    {
        return Err("the request came from another site");
    }
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    match headers.get(ORIGIN) {
        None => {
            if headers.contains_key("sec-fetch-site") {
                Ok(())
            } else {
                Err("the request has no Origin")
            }
        }
        Some(o) => {
            let o = o.to_str().unwrap_or("");
            let authority = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            match (authority, host) {
                (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
                _ => Err("the request's Origin is not this console"),
            }
        }
    }
}

/// Whether the method changes something.
fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// A session's caller, and the hash its cookie maps to.
async fn authenticate(
    state: &AppState,
    addr: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    w: String,
) -> Result<(Caller, [u8; 32], String), Response> {
    let source = Some(addr.to_string());
    let console = &state.console;
    let secure = secure(state);
    let Some(cookie) = session_cookie(headers, secure) else {
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
    };
    let key = digest(&cookie);
    let now = Instant::now();
    let found = {
        let mut map = console.sessions.lock();
        match map.get(&key) {
            Some(s) if s.live(now) => Some((s.token_hash, s.token_id.clone(), s.csrf.clone())),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    };
    let Some((token_hash, token_id, csrf)) = found else {
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
    let actor = format!("admin-token:{token_id}");
    if changes(method) {
        let presented = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
        let why = match presented {
            Some(p) if constant_eq(p, csrf.as_bytes()) => same_origin(headers).err(),
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
    let record = match usable_token(state, Surface::Console, source.clone(), w, &token_hash).await {
        Ok(r) => r,
        Err(refused) => {
            console.sessions.lock().remove(&key);
            return Err(refused);
        }
    };
    if let Some(s) = console.sessions.lock().get_mut(&key) {
        s.last_used = Instant::now();
    }
    Ok((
        Caller {
            actor,
            role: record.role,
            surface: Surface::Console,
            source,
            person: record.person,
        },
        key,
        csrf,
    ))
}

/// Middleware for the admin API under `/console/api/v1`: a live session,
/// and for changes its CSRF token.
pub async fn console_admin(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    if !state.live.config.load().console.enabled {
        return ApiError::not_found("the console is turned off ([console] enabled = false)")
            .into_response();
    }
    let w = what(&req);
    let resp = match authenticate(&state, addr, req.method(), req.headers(), w).await {
        Ok((caller, _, _)) => {
            req.extensions_mut().insert(caller);
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

fn who(caller: &Caller, csrf: String, expires_at: Timestamp, idle: Duration) -> WhoAmI {
    WhoAmI {
        actor: caller.actor.clone(),
        role: caller.role,
        person: caller.person.clone(),
        csrf,
        expires_at,
        idle_timeout_seconds: idle.as_secs(),
    }
}

fn set_cookie(secure: bool, value: &str, max_age: u64) -> HeaderValue {
    let name = cookie_name(secure);
    let tls = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{tls}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("warrant_console=; Max-Age=0"))
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
    if let Err(why) = same_origin(headers) {
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
    let config = state.live.config.load().console.clone();
    let (cookie, csrf) = match (random_text(), random_text()) {
        (Ok(c), Ok(x)) => (c, x),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    // Never past the admin token's own expiry.
    let now_ms = Timestamp::now().as_millis();
    let token_left = u64::try_from(record.expires_at.as_millis() - now_ms).unwrap_or(0);
    let ttl = config.session_ttl.min(Duration::from_millis(token_left));
    let expires_at = Timestamp::from_millis(now_ms + i64::try_from(ttl.as_millis()).unwrap_or(0));
    let now = Instant::now();
    {
        let mut map = state.console.sessions.lock();
        map.retain(|_, s| s.live(now));
        let mut mine: Vec<([u8; 32], Instant)> = map
            .iter()
            .filter(|(_, s)| s.token_id == record.id)
            .map(|(k, s)| (*k, s.last_used))
            .collect();
        if mine.len() >= MAX_PER_TOKEN {
            mine.sort_by_key(|(_, used)| *used);
            for (k, _) in &mine[..=mine.len() - MAX_PER_TOKEN] {
                map.remove(k);
            }
        }
        if map.len() >= MAX_SESSIONS {
            drop(map);
            return ApiError::unavailable(
                "the console has too many sessions open; try again later",
            )
            .into_response();
        }
        map.insert(
            digest(&cookie),
            ConsoleSession {
                token_hash: hash,
                token_id: record.id.clone(),
                csrf: csrf.clone(),
                expires: now + ttl,
                expires_at,
                last_used: now,
                idle: config.idle_timeout,
            },
        );
    }
    let caller = Caller {
        actor: format!("admin-token:{}", record.id),
        role: record.role,
        surface: Surface::Console,
        source,
        person: record.person.clone(),
    };
    let event = caller
        .event(Kind::AdminConsoleSignIn, Outcome::Allow)
        .reason(format!("role {}", record.role));
    if let Err(e) = state.store.append_audit(event).await {
        state.console.sessions.lock().remove(&digest(&cookie));
        state.metrics.audit_write_failures.inc();
        return ApiError::from(e).into_response();
    }
    let mut resp = Json(who(&caller, csrf, expires_at, config.idle_timeout)).into_response();
    resp.headers_mut().insert(
        SET_COOKIE,
        set_cookie(secure(state), &cookie, ttl.as_secs()),
    );
    resp
}

/// `GET /console/session`: who is signed in, and the CSRF token.
pub(super) async fn current(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Opening the console before signing in is no attempt at anything.
    if session_cookie(&headers, secure(&state)).is_none() {
        return ApiError::unauthorized("sign in to the console first").into_response();
    }
    match authenticate(
        &state,
        addr,
        &Method::GET,
        &headers,
        "GET /console/session".into(),
    )
    .await
    {
        Ok((caller, key, csrf)) => {
            let (expires_at, idle) = state
                .console
                .sessions
                .lock()
                .get(&key)
                .map_or((Timestamp::now(), Duration::ZERO), |s| {
                    (s.expires_at, s.idle)
                });
            Json(who(&caller, csrf, expires_at, idle)).into_response()
        }
        Err(refused) => refused,
    }
}

/// `DELETE /console/session`: sign out.
pub(super) async fn sign_out(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (caller, key, _) = match authenticate(
        &state,
        addr,
        &Method::DELETE,
        &headers,
        "DELETE /console/session".into(),
    )
    .await
    {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    state.console.sessions.lock().remove(&key);
    let event = caller.event(Kind::AdminConsoleSignOut, Outcome::Allow);
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
    fn only_one_well_formed_cookie_of_the_name_counts() {
        let good = "a".repeat(43);
        let h = headers(&[("cookie", &format!("x=1; warrant_console={good}"))]);
        assert_eq!(session_cookie(&h, false).as_deref(), Some(good.as_str()));
        // The TLS name is not the plain one.
        assert_eq!(session_cookie(&h, true), None);
        let twice = headers(&[
            ("cookie", &format!("warrant_console={good}")),
            ("cookie", &format!("warrant_console={}", "b".repeat(43))),
        ]);
        assert_eq!(session_cookie(&twice, false), None);
        let short = headers(&[("cookie", "warrant_console=abc")]);
        assert_eq!(session_cookie(&short, false), None);
        let odd = headers(&[("cookie", &format!("warrant_console={}", "%".repeat(43)))]);
        assert_eq!(session_cookie(&odd, false), None);
    }

    #[test]
    fn changes_come_from_the_same_origin() {
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin(&ok).is_ok());
        let other = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.test")]);
        assert!(same_origin(&other).is_err());
        let port = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:9090"),
        ]);
        assert!(same_origin(&port).is_err());
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(same_origin(&null).is_err());
        let none = headers(&[("host", "127.0.0.1:8080")]);
        assert!(same_origin(&none).is_err());
        let site = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(same_origin(&site).is_err());
        let fetch = headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(same_origin(&fetch).is_ok());
    }

    #[test]
    fn csrf_comparison_is_exact() {
        assert!(constant_eq(b"abc", b"abc"));
        assert!(!constant_eq(b"abc", b"abd"));
        assert!(!constant_eq(b"abc", b"ab"));
        assert!(!constant_eq(b"", b"a"));
    }
}
