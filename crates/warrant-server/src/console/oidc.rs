//! Signing in to the console through an OpenID Connect provider: the
//! authorization code flow with PKCE (S256), a `state` bound to the browser
//! by a cookie and used once, a `nonce` in the ID token, the ID token
//! verified with the `[[user_issuer]]`'s keys for the console's client id,
//! and the person's groups mapped to a role (`[console.oidc]`).
//!
//! A session made this way has the role its groups gave at sign-in and ends
//! with the console's session lifetime and idle timeout; the person is
//! recorded as `user:<namespace>/<subject>`, as the user issuer names its
//! users, so separation of duties holds for approvers who sign in this way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use sha2::{Digest, Sha256};
use warrant_control::attest::oidc::{Providers, TrustProvider};
use warrant_core::admin::Role;
use warrant_core::text::shown;
use warrant_core::time::Timestamp;

use super::session::{NewSession, constant_eq, open, random_text, secure};
use crate::http::auth::{Surface, count, refuse};
use crate::http::error::ApiError;
use crate::state::{AppState, OidcClient, SessionBasis};

/// How long a person has to come back from the provider.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// What the sealed state cookie is bound to.
const SEAL_AAD: &[u8] = b"warrant console sign-in v1";
/// The most state cookies of the name looked at.
const MAX_STATE_COOKIES: usize = 8;
/// The longest an ID token may still be valid for.
const MAX_ID_TOKEN_LIFE: i64 = 24 * 3600;
/// The most bytes read from the provider in one answer.
const MAX_ANSWER: usize = 256 * 1024;
/// How long the provider may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Secure-warrant_console_oidc"
    } else {
        "warrant_console_oidc"
    }
}

/// The cookie binding a sign-in to the browser that started it: `Lax`, as
/// it must come back on the provider's redirect (a cross-site navigation).
fn state_cookie(secure: bool, value: &str, max_age: u64) -> HeaderValue {
    let tls = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/console/oidc; Max-Age={max_age}; HttpOnly; SameSite=Lax{tls}",
        cookie_name(secure)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("warrant_console_oidc=; Max-Age=0"))
}

fn redirect_uri(state: &AppState) -> String {
    format!(
        "{}/console/oidc/callback",
        state.issuer.trim_end_matches('/')
    )
}

/// Back to the sign-in page, saying why (a code the page turns into words).
fn back(why: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, format!("/console/signin?error={why}"))],
    )
        .into_response()
}

async fn fetch(req: http::Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
    let client = warrant_control::outbound::client()
        .ok_or("the broker has no HTTP client (no root certificates)")?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| warrant_control::outbound::error_chain(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn endpoint(u: &str, what: &str) -> Result<String, String> {
    let parsed = url::Url::parse(u).map_err(|_| format!("{what} is not a URL"))?;
    warrant_control::outbound::check_destination(&parsed, what)?;
    Ok(u.to_owned())
}

/// What signing in needs for the configuration in force: made once, again
/// when the configuration changes.
async fn client(state: &AppState) -> Result<Arc<OidcClient>, String> {
    let config = state.live.config.load_full();
    let cfg = config
        .console
        .oidc
        .clone()
        .ok_or("single sign-on is not configured")?;
    if let Some(c) = state.console.oidc.lock().clone()
        && c.config == cfg
    {
        return Ok(c);
    }
    let issuer = config
        .user_issuers
        .iter()
        .find(|u| u.provider.issuer == cfg.issuer)
        .ok_or("the [console.oidc] issuer is no [[user_issuer]]")?;
    let (authorization_endpoint, token_endpoint) =
        match (&cfg.authorization_endpoint, &cfg.token_endpoint) {
            (Some(a), Some(t)) => (a.clone(), t.clone()),
            _ => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    cfg.issuer.trim_end_matches('/')
                );
                endpoint(&url, "the provider's discovery document")?;
                let req = http::Request::get(url.as_str())
                    .header(ACCEPT, "application/json")
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                let (status, body) = fetch(req).await?;
                if !status.is_success() {
                    return Err(format!("the discovery document answered {status}"));
                }
                let doc: Value = serde_json::from_slice(&body)
                    .map_err(|_| "the discovery document is not JSON".to_owned())?;
                if doc.get("issuer").and_then(Value::as_str) != Some(cfg.issuer.as_str()) {
                    return Err("the discovery document names another issuer".into());
                }
                let get = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
                (
                    cfg.authorization_endpoint
                        .clone()
                        .or_else(|| get("authorization_endpoint"))
                        .ok_or("the discovery document has no authorization_endpoint")?,
                    cfg.token_endpoint
                        .clone()
                        .or_else(|| get("token_endpoint"))
                        .ok_or("the discovery document has no token_endpoint")?,
                )
            }
        };
    let verifier = Providers::new(vec![TrustProvider {
        name: "console sign-in".into(),
        issuer: cfg.issuer.clone(),
        jwks: issuer.provider.jwks.clone(),
        audience: cfg.client_id.clone(),
    }])?;
    let made = Arc::new(OidcClient {
        authorization_endpoint: endpoint(&authorization_endpoint, "authorization_endpoint")?,
        token_endpoint: endpoint(&token_endpoint, "token_endpoint")?,
        config: cfg,
        verifier,
    });
    *state.console.oidc.lock() = Some(made.clone());
    Ok(made)
}

/// A sign-in under way, sealed into the browser's state cookie.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    /// The `state` sent to the provider.
    s: String,
    /// The PKCE verifier.
    v: String,
    /// The nonce the ID token must carry.
    n: String,
    /// Until when (seconds since the epoch).
    e: i64,
}

fn sealer(state: &AppState) -> Option<Arc<warrant_token::Kek>> {
    let mut held = state.console.oidc_sealer.lock();
    if held.is_none() {
        *held = warrant_token::Kek::generate().ok().map(Arc::new);
    }
    held.clone()
}

fn seal(state: &AppState, p: &Pending) -> Option<String> {
    let json = serde_json::to_vec(p).ok()?;
    let sealed = sealer(state)?.seal(SEAL_AAD, &json).ok()?;
    Some(URL_SAFE_NO_PAD.encode(sealed))
}

/// The sign-in a state cookie holds, if this broker sealed it.
fn unseal(state: &AppState, cookie: &str) -> Option<Pending> {
    let bytes = URL_SAFE_NO_PAD.decode(cookie).ok()?;
    let json = sealer(state)?.open(SEAL_AAD, &bytes)?;
    serde_json::from_slice(&json).ok()
}

/// `GET /console/oidc/start`: off to the provider.
pub(super) async fn start(State(state): State<AppState>) -> Response {
    let client = match client(&state).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "console single sign-on is unavailable");
            return back("unavailable");
        }
    };
    let (Ok(st), Ok(nonce), Ok(verifier)) = (random_text(), random_text(), random_text()) else {
        return back("unavailable");
    };
    // Nothing is kept here: the sign-in travels sealed in the browser's
    // cookie, so no number of starts can crowd out anyone's.
    let Some(sealed) = seal(
        &state,
        &Pending {
            s: st.clone(),
            v: verifier.clone(),
            n: nonce.clone(),
            e: Timestamp::now().as_millis() / 1000 + PENDING_TTL.as_secs() as i64,
        },
    ) else {
        return back("unavailable");
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let Ok(mut to) = url::Url::parse(&client.authorization_endpoint) else {
        return back("unavailable");
    };
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.config.client_id)
        .append_pair("redirect_uri", &redirect_uri(&state))
        .append_pair("scope", &client.config.scopes.join(" "))
        .append_pair("state", &st)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut resp = (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response();
    resp.headers_mut().insert(
        SET_COOKIE,
        state_cookie(secure(&state), &sealed, PENDING_TTL.as_secs()),
    );
    resp
}

/// What the ID token's claims must say beyond what the verifier checked
/// (signature, issuer, audience, lifetime): this sign-in's nonce; issued to
/// this client when it names a party or several audiences; valid for a day
/// at most.
fn id_claims_fit(
    claims: &serde_json::Map<String, Value>,
    client_id: &str,
    nonce: &str,
    now: Timestamp,
) -> Result<(), &'static str> {
    let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if !constant_eq(got.as_bytes(), nonce.as_bytes()) {
        return Err("the ID token's nonce is not this sign-in's");
    }
    let azp = claims.get("azp").and_then(Value::as_str);
    if azp.is_some_and(|a| a != client_id) {
        return Err("the ID token was issued to another client");
    }
    let audiences = claims
        .get("aud")
        .and_then(Value::as_array)
        .map_or(1, Vec::len);
    if audiences > 1 && azp.is_none() {
        return Err("the ID token has several audiences and no azp");
    }
    // Times may be written with a fraction: read them as numbers.
    let Some(exp) = claims.get("exp").and_then(Value::as_f64) else {
        return Err("the ID token has no expiry");
    };
    if !exp.is_finite() || exp - (now.as_millis() / 1000) as f64 > MAX_ID_TOKEN_LIFE as f64 {
        return Err("the ID token is valid for more than a day");
    }
    Ok(())
}

/// Whether a person's id reads as what it is: in NFC (so `e` + U+0301 and
/// `é` are not two people who look alike), without whitespace, invisible or
/// format characters, non-characters or private-use characters.
fn readable_name(s: &str) -> bool {
    use unicode_normalization::UnicodeNormalization as _;
    let odd = |c: char| {
        let n = c as u32;
        c.is_whitespace()
            || warrant_core::approval::is_invisible(c)
            || (0xFDD0..=0xFDEF).contains(&n)
            || n & 0xFFFE == 0xFFFE
            || (0xE000..=0xF8FF).contains(&n)
            || n >= 0xF0000
            || matches!(n, 0x0600..=0x0605 | 0x06DD | 0x070F | 0x0890 | 0x0891 | 0x08E2
                | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0xFFF0..=0xFFFC)
    };
    !s.chars().any(odd) && s.nfc().eq(s.chars())
}

/// The groups claim: a list of names (or one name).
fn groups(claims: &serde_json::Map<String, Value>, claim: &str) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .take(1000)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `GET /console/oidc/callback`: back from the provider.
pub(super) async fn callback(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let resp = callback_checked(&state, addr, &headers, &q).await;
    count(&state, Surface::Console, &resp);
    resp
}

/// Why a callback is refused: the code the sign-in page turns into words,
/// and the reason recorded.
type Refusal = (&'static str, String);

async fn callback_checked(
    state: &AppState,
    addr: SocketAddr,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Response {
    let source = Some(addr.to_string());
    let secure = secure(state);
    let signed_in = signed_in(state, headers, q).await;
    let ((basis, person, role), issuer) = match signed_in {
        Ok(found) => found,
        Err((code, why)) => {
            // Recorded, the state cookie cleared, back to sign-in.
            let _ = refuse(
                state,
                Surface::Console,
                source,
                None,
                "GET /console/oidc/callback".into(),
                &format!("single sign-on refused: {why}"),
                ApiError::unauthorized(""),
            )
            .await;
            let mut r = back(code);
            r.headers_mut()
                .insert(SET_COOKIE, state_cookie(secure, "", 0));
            return r;
        }
    };
    let mut resp = open(
        state,
        NewSession {
            basis,
            actor: person.clone(),
            role,
            person: Some(person),
            at_most: state.live.config.load().console.session_ttl,
            source,
            reason: format!("role {role} by the groups {issuer} gives"),
        },
        Some("/console/"),
    )
    .await;
    resp.headers_mut()
        .append(SET_COOKIE, state_cookie(secure, "", 0));
    resp
}

/// The person a callback signs in, in steps: the sign-in this browser
/// started, the code redeemed, the ID token checked, their role; spent once.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<((SessionBasis, String, Role), String), Refusal> {
    let pending = returning(state, headers, q)?;
    let code = q.get("code").ok_or(("state", "no code".to_owned()))?;
    let client = client(state).await.map_err(|e| ("unavailable", e))?;
    let id_token = redeem(state, &client, code, &pending.v).await?;
    let found = person(state, &client, &id_token, &pending.n).await?;
    // Used once, decided here and now: two callbacks racing with one code
    // (a provider that takes a code twice) make one session.
    if !state
        .console
        .spend_sign_in(&pending.s, pending.e, Timestamp::now().as_millis() / 1000)
    {
        return Err(("state", "the sign-in was used already".into()));
    }
    Ok((found, client.config.issuer.clone()))
}

/// The sign-in this browser started (its sealed cookie holds the state the
/// provider sends back), still in time, from the provider we sent to.
fn returning(
    state: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Pending, Refusal> {
    let name = cookie_name(secure(state));
    let st = q.get("state").ok_or(("state", "no state".to_owned()))?;
    let pending = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .take(MAX_STATE_COOKIES)
        .filter_map(|(_, v)| unseal(state, v))
        .find(|p| constant_eq(p.s.as_bytes(), st.as_bytes()))
        .ok_or(("state", "the state is not this browser's".to_owned()))?;
    if pending.e <= Timestamp::now().as_millis() / 1000 {
        return Err(("expired", "the sign-in took too long".into()));
    }
    // RFC 9207: a provider that names itself must be the one we sent to.
    if let Some(iss) = q.get("iss")
        && state
            .live
            .config
            .load()
            .console
            .oidc
            .as_ref()
            .is_none_or(|o| &o.issuer != iss)
    {
        return Err(("token", "the callback names another issuer".into()));
    }
    if let Some(e) = q.get("error") {
        return Err(("denied", format!("the provider answered {}", shown(e, 64))));
    }
    Ok(pending)
}

/// The ID token the provider gives for `code`, redeemed with the verifier
/// only this broker held (and the client secret, when there is one).
async fn redeem(
    state: &AppState,
    client: &OidcClient,
    code: &str,
    verifier: &str,
) -> Result<String, Refusal> {
    let cfg = &client.config;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &redirect_uri(state))
        .append_pair("code_verifier", verifier)
        .append_pair("client_id", &cfg.client_id)
        .finish();
    let mut req = http::Request::post(client.token_endpoint.as_str())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json");
    if let Some(var) = &cfg.client_secret_env {
        let secret = std::env::var(var).map_err(|_| {
            (
                "unavailable",
                format!("${var} (the client secret) is not set"),
            )
        })?;
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = STANDARD.encode(format!("{}:{}", enc(&cfg.client_id), enc(&secret)));
        req = req.header(AUTHORIZATION, format!("Basic {basic}"));
    }
    let req = req.body(Full::new(Bytes::from(form))).map_err(|_| {
        (
            "unavailable",
            "the token request could not be made".to_owned(),
        )
    })?;
    let body = match fetch(req).await {
        Ok((status, body)) if status.is_success() => body,
        Ok((status, _)) => return Err(("token", format!("the token endpoint answered {status}"))),
        Err(e) => return Err(("unavailable", format!("the token endpoint: {e}"))),
    };
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("id_token").and_then(Value::as_str).map(str::to_owned))
        .ok_or(("token", "the token endpoint gave no ID token".to_owned()))
}

/// Who the ID token names and the role their groups give: its signature,
/// issuer and audience by the user issuer's keys, then this sign-in's
/// nonce and the rest (`id_claims_fit`), a readable id, a mapped group.
async fn person(
    state: &AppState,
    client: &OidcClient,
    id_token: &str,
    nonce: &str,
) -> Result<(SessionBasis, String, Role), Refusal> {
    let cfg = &client.config;
    let (_, claims) = client
        .verifier
        .verify(id_token, Timestamp::now())
        .await
        .map_err(|e| ("token", format!("the ID token: {e}")))?;
    id_claims_fit(&claims, &cfg.client_id, nonce, Timestamp::now())
        .map_err(|why| ("token", why.to_owned()))?;
    let config = state.live.config.load_full();
    let issuer = config
        .user_issuers
        .iter()
        .find(|u| u.provider.issuer == cfg.issuer)
        .ok_or(("unavailable", "the user issuer is gone".to_owned()))?;
    let subject = claims
        .get(&issuer.subject_claim)
        .and_then(Value::as_str)
        .unwrap_or("");
    let user = issuer
        .namespace
        .user(subject)
        .ok()
        .filter(|_| readable_name(subject))
        .ok_or((
            "token",
            format!("the ID token has no usable `{}`", issuer.subject_claim),
        ))?;
    let person = format!("user:{user}");
    let groups = groups(&claims, &issuer.groups_claim);
    let role = cfg.role_of(&groups).ok_or((
        "no_role",
        format!("{person} is in none of the console's groups"),
    ))?;
    let basis = SessionBasis::Person {
        issuer: cfg.issuer.clone(),
        client_id: cfg.client_id.clone(),
        namespace: issuer.namespace.as_str().to_owned(),
        groups,
    };
    Ok((basis, person, role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> crate::config::ConsoleOidc {
        crate::config::ConsoleOidc {
            issuer: "https://login.test".into(),
            client_id: "console".into(),
            client_secret_env: None,
            scopes: vec!["openid".into()],
            admin_groups: vec!["sec-admins".into()],
            approver_groups: vec!["approvers".into()],
            auditor_groups: vec!["security".into()],
            authorization_endpoint: None,
            token_endpoint: None,
        }
    }

    #[test]
    fn the_strongest_role_the_groups_give_wins_and_none_gives_nothing() {
        let g = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            cfg().role_of(&g(&["security", "approvers"])),
            Some(Role::Approver)
        );
        assert_eq!(cfg().role_of(&g(&["sec-admins"])), Some(Role::Admin));
        assert_eq!(cfg().role_of(&g(&["security"])), Some(Role::Auditor));
        assert_eq!(cfg().role_of(&g(&["Sec-Admins", "everyone"])), None);
        assert_eq!(cfg().role_of(&[]), None);
    }

    #[test]
    fn groups_are_a_list_or_one_name() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            groups(&m(serde_json::json!({"groups": ["a", 1, "b"]})), "groups"),
            vec!["a", "b"]
        );
        assert_eq!(
            groups(&m(serde_json::json!({"groups": "a"})), "groups"),
            vec!["a"]
        );
        assert!(groups(&m(serde_json::json!({"groups": {"a": 1}})), "groups").is_empty());
        assert!(groups(&m(serde_json::json!({})), "groups").is_empty());
    }

    #[test]
    fn id_token_claims_must_fit_this_sign_in() {
        let now = Timestamp::from_millis(1_000_000_000);
        let exp = now.as_millis() / 1000 + 300;
        let m = |v: Value| v.as_object().unwrap().clone();
        let fit = |v: Value| id_claims_fit(&m(v), "console", "n1", now);
        assert!(fit(serde_json::json!({"nonce": "n1", "aud": "console", "exp": exp})).is_ok());
        assert!(fit(serde_json::json!({"nonce": "n1", "aud": ["console", "x"], "azp": "console", "exp": exp})).is_ok());
        for bad in [
            serde_json::json!({"aud": "console", "exp": exp}),
            serde_json::json!({"nonce": "n2", "aud": "console", "exp": exp}),
            serde_json::json!({"nonce": ["n1"], "aud": "console", "exp": exp}),
            serde_json::json!({"nonce": "n1", "aud": "console", "azp": "other", "exp": exp}),
            serde_json::json!({"nonce": "n1", "aud": ["console", "other"], "exp": exp}),
            serde_json::json!({"nonce": "n1", "aud": "console", "exp": exp + 30 * 365 * 86_400}),
            serde_json::json!({"nonce": "n1", "aud": "console", "exp": (exp + 2 * 86_400) as f64 + 0.5}),
            serde_json::json!({"nonce": "n1", "aud": "console", "exp": 1e10}),
            serde_json::json!({"nonce": "n1", "aud": "console"}),
        ] {
            assert!(fit(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_must_read_as_what_it_is() {
        for ok in ["carol", "carol@example.com", "渡辺", "alicé", "0b6f-11ee"] {
            assert!(readable_name(ok), "{ok}");
        }
        for bad in [
            "carol ",
            "ca rol",
            "carol\u{a0}",
            "carol\u{2028}",
            "carol\u{202e}",
            "carol\u{200b}",
            "alice\u{301}",
            "alice\u{ffff}",
            "alice\u{fdd0}",
            "alice\u{e000}",
            "alice\u{10ffff}",
            "alice\u{13430}",
            "alice\u{600}",
            "alice\u{fffc}",
            "ca\u{1bca0}rol",
        ] {
            assert!(!readable_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_sign_in_makes_one_session() {
        let c = crate::state::ConsoleState::default();
        assert!(c.spend_sign_in("s1", 700, 100));
        assert!(
            !c.spend_sign_in("s1", 700, 100),
            "a second callback of the same sign-in"
        );
        assert!(c.spend_sign_in("s2", 700, 100));
        assert!(
            c.spend_sign_in("s1", 900, 701),
            "forgotten once it could not be used anyway"
        );
    }
}
