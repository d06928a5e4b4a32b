//! The agent side, for `warrant token` and `warrant sidecar`: attest this
//! process, renew its identity before it expires, and get, cache and
//! refresh task tokens.
//!
//! The same rules as the Python SDK (clients/python): one identity per
//! process, task tokens cached per (kind, subject digest, audience, scope),
//! replaced a fifth of their lifetime before they expire (at least 1 s, at
//! most 60 s) by one request however many callers wait for it, and never
//! used past the earlier of their `exp` claim and the lifetime the broker
//! gave. It is not a general HTTP client and holds no admin power.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value};
use sha2::Digest as _;
use zeroize::Zeroizing;

use warrant_control::token::{JWT_BEARER, TOKEN_EXCHANGE};
pub use warrant_core::task::token_type::{ACCESS_TOKEN as TYPE_ACCESS_TOKEN, JWT as TYPE_JWT};

/// The HTTP(S) client to the broker and the edge.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What went wrong, in the terms the broker used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// The broker or the edge refused: its status, code and description,
    /// and for a policy's refusal which rule class and policies decided.
    #[error("{error}: {description}")]
    Refused {
        status: u16,
        error: String,
        description: String,
        refused_by: Option<String>,
        policies: Vec<String>,
        how_to_get_access: Option<String>,
    },
    /// The broker could not be reached or cannot answer now.
    #[error("{0}")]
    Unavailable(String),
    /// This side is misconfigured (a file that cannot be read, a bad URL).
    #[error("{0}")]
    Invalid(String),
}

impl AgentError {
    /// Whether a rule or policy refused (as opposed to a malformed request
    /// or an outage).
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Refused { error, status, .. } if error == "access_denied" || *status == 403)
    }

    /// The refusal in the edge's JSON shape (what provider SDKs and the
    /// Python SDK read), with its HTTP status.
    pub fn edge_body(&self) -> (u16, Value) {
        match self {
            Self::Refused {
                status,
                error,
                description,
                refused_by,
                policies,
                how_to_get_access,
            } => {
                let mut e =
                    serde_json::json!({ "message": description, "type": error, "code": error });
                if let Some(r) = refused_by {
                    e["refused_by"] = r.as_str().into();
                    e["policies"] = serde_json::json!(policies);
                }
                if let Some(h) = how_to_get_access {
                    e["how_to_get_access"] = h.as_str().into();
                }
                // The broker's 401 for a bad actor or subject is this
                // sidecar's problem or its caller's, never the edge's: 403.
                let status = if *status == 401 { 403 } else { *status };
                (status, serde_json::json!({ "error": e }))
            }
            Self::Unavailable(m) => (
                503,
                serde_json::json!({ "error": { "message": m, "type": "unavailable", "code": "unavailable" } }),
            ),
            Self::Invalid(m) => (
                500,
                serde_json::json!({ "error": { "message": m, "type": "sidecar_misconfigured", "code": "sidecar_misconfigured" } }),
            ),
        }
    }

    fn from_body(status: StatusCode, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (error, description, fields) = match v.get("error") {
            Some(Value::Object(e)) => (
                e.get("code")
                    .or_else(|| e.get("type"))
                    .and_then(Value::as_str),
                e.get("message").and_then(Value::as_str),
                Value::Object(e.clone()),
            ),
            Some(Value::String(code)) => (
                Some(code.as_str()),
                v.get("error_description").and_then(Value::as_str),
                v.clone(),
            ),
            _ => (None, None, Value::Null),
        };
        Self::Refused {
            status: status.as_u16(),
            error: error.map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned),
            description: description.map_or_else(
                || format!("the broker answered {status}"),
                |d| d.chars().take(500).collect(),
            ),
            refused_by: fields
                .get("refused_by")
                .and_then(Value::as_str)
                .map(str::to_owned),
            policies: fields
                .get("policies")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            how_to_get_access: fields
                .get("how_to_get_access")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// How this process proves what it is.
#[derive(Debug)]
pub enum Attestation {
    /// The broker's agent socket on this host (the kernel vouches).
    Socket(PathBuf),
    /// A platform token in a file, read again at every attestation.
    OidcFile(PathBuf),
    /// A one-time join token (taken when used); the identity is then
    /// renewed with itself.
    Join(parking_lot::Mutex<Option<Zeroizing<String>>>),
}

impl Attestation {
    /// A name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Socket(_) => "unix",
            Self::OidcFile(_) => "oidc",
            Self::Join(_) => "join",
        }
    }
}

/// A token and when this side stops using it.
#[derive(Clone)]
pub struct Held {
    /// The token.
    pub token: Arc<Zeroizing<String>>,
    /// The broker's answer, token included (for `--output json`).
    pub answer: Arc<Map<String, Value>>,
    /// When it stops being good (the earlier of `exp` and the lifetime).
    pub expires: Instant,
    lifetime: Duration,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("token", &"[redacted]")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Held {
    fn new(
        token_field: &str,
        answer: Map<String, Value>,
        sent: Instant,
    ) -> Result<Self, AgentError> {
        let bad = || AgentError::Invalid("the broker's answer is not what warrant sends".into());
        let token = answer
            .get(token_field)
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned();
        let life = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .ok_or_else(bad)?;
        let lifetime = Duration::from_secs(life);
        let mut expires = sent + lifetime;
        if let Some(exp) = claims(&token).and_then(|c| c.get("exp").and_then(Value::as_u64)) {
            let left = Duration::from_secs(exp).saturating_sub(since_epoch());
            expires = expires.min(Instant::now() + left);
        }
        Ok(Self {
            token: Arc::new(Zeroizing::new(token)),
            answer: Arc::new(answer),
            expires,
            lifetime,
        })
    }

    /// Whether it is not yet due for replacement.
    fn fresh(&self) -> bool {
        Instant::now() + margin(self.lifetime) < self.expires
    }

    /// Whether it is still good for a moment.
    fn usable(&self) -> bool {
        Instant::now() + Duration::from_millis(500) < self.expires
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// How long before expiry a token is replaced.
pub fn margin(lifetime: Duration) -> Duration {
    (lifetime / 5).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// A JWT's claims, decoded without verification (for display and expiry;
/// the broker and the edge verify).
pub fn claims(token: &str) -> Option<Map<String, Value>> {
    jwt_part(token, 1)
}

/// A JWT's header or claims (part 0 or 1), decoded without verification.
pub fn jwt_part(token: &str, i: usize) -> Option<Map<String, Value>> {
    let part = token.split('.').nth(i)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A cached value refreshed by one caller at a time.
type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;

/// Which task token: how it is obtained, and for what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskKey {
    /// `self`, `exchange` (a user's token) or `delegate` (a task token).
    kind: &'static str,
    /// SHA-256 of the subject token (never the token itself).
    subject: String,
    audience: String,
    scope: String,
}

/// The agent's connection to warrant.
#[derive(Debug)]
pub struct Agent {
    api: String,
    edge: String,
    attestation: Attestation,
    http: HttpClient,
    identity: Slot,
    tasks: parking_lot::Mutex<HashMap<TaskKey, Slot>>,
    resources: parking_lot::Mutex<HashMap<String, Arc<Map<String, Value>>>>,
}

/// Where to find the broker and how to attest.
#[derive(Debug)]
pub struct AgentConfig {
    /// The API listener's URL (`http://127.0.0.1:8700`).
    pub api: String,
    /// The edge listener's URL.
    pub edge: String,
    pub attestation: Attestation,
    /// The CA of the broker's TLS certificate, if private.
    pub ca_file: Option<PathBuf>,
}

impl Agent {
    /// A client; nothing is contacted yet.
    pub fn new(cfg: AgentConfig) -> anyhow::Result<Self> {
        for (what, u) in [("broker", &cfg.api), ("edge", &cfg.edge)] {
            if u.is_empty() {
                continue;
            }
            let parsed = url::Url::parse(u).map_err(|e| {
                anyhow::anyhow!(
                    "the {what} URL `{}` is not a URL: {e}",
                    warrant_core::text::shown_url(u)
                )
            })?;
            if parsed.scheme() != "http" && parsed.scheme() != "https" {
                anyhow::bail!("the {what} URL must be http:// or https://");
            }
        }
        let tls = crate::client::tls_config(cfg.ca_file.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            api: cfg.api.trim_end_matches('/').to_owned(),
            edge: cfg.edge.trim_end_matches('/').to_owned(),
            attestation: cfg.attestation,
            http,
            identity: Slot::default(),
            tasks: parking_lot::Mutex::default(),
            resources: parking_lot::Mutex::default(),
        })
    }

    /// The edge's URL.
    pub fn edge(&self) -> &str {
        &self.edge
    }

    /// How this process attests.
    pub fn attestation(&self) -> &Attestation {
        &self.attestation
    }

    /// This process's identity (attested, or renewed when due).
    pub async fn identity(&self) -> Result<Held, AgentError> {
        cached(&self.identity, |current| self.attest_for(current, None)).await
    }

    /// An identity for `audience` (not cached: `warrant token identity
    /// --audience`).
    pub async fn identity_for(&self, audience: &str) -> Result<Held, AgentError> {
        self.attest_for(None, Some(audience)).await
    }

    async fn attest_for(
        &self,
        current: Option<Held>,
        audience: Option<&str>,
    ) -> Result<Held, AgentError> {
        let mut body = Map::new();
        if let Some(a) = audience {
            body.insert("audience".into(), a.into());
        }
        let sent = Instant::now();
        let (status, bytes) = match &self.attestation {
            Attestation::Socket(path) => unix_identity(path, &Value::Object(body)).await?,
            Attestation::OidcFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    AgentError::Invalid(format!(
                        "cannot read the OIDC token file `{}`: {e}",
                        path.display()
                    ))
                })?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(AgentError::Invalid(format!(
                        "the OIDC token file `{}` is empty",
                        path.display()
                    )));
                }
                body.insert("token".into(), token.into());
                self.post_json("/v1/attest/oidc", &Value::Object(body), None)
                    .await?
            }
            Attestation::Join(join) => match current.filter(Held::usable) {
                Some(held) => {
                    self.post_json(
                        "/v1/identity/renew",
                        &Value::Object(body),
                        Some(held.token.as_str()),
                    )
                    .await?
                }
                None => {
                    let Some(token) = join.lock().take() else {
                        return Err(AgentError::Refused {
                            status: 400,
                            error: "invalid_grant".into(),
                            description: "the join token was used already and the identity it gave has expired; ask an administrator for a new one (`warrant agent join-token`)".into(),
                            refused_by: None,
                            policies: Vec::new(),
                            how_to_get_access: None,
                        });
                    };
                    body.insert("token".into(), token.as_str().into());
                    self.post_json("/v1/attest/join", &Value::Object(body), None)
                        .await?
                }
            },
        };
        if status != StatusCode::OK {
            return Err(AgentError::from_body(status, &bytes));
        }
        let answer: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| AgentError::Invalid("the broker's answer is not JSON".into()))?;
        Held::new("identity_token", answer, sent)
    }

    /// A task token for this agent acting for itself.
    pub async fn self_task(&self, audience: &[String], scope: &str) -> Result<Held, AgentError> {
        self.task("self", None, audience, scope).await
    }

    /// A task token for the holder of `subject` (a user's token, or a task
    /// token handed to this agent).
    pub async fn exchange(
        &self,
        subject: &str,
        subject_type: &'static str,
        audience: &[String],
        scope: &str,
    ) -> Result<Held, AgentError> {
        let kind = if subject_type == TYPE_ACCESS_TOKEN {
            "delegate"
        } else {
            "exchange"
        };
        self.task(kind, Some((subject, subject_type)), audience, scope)
            .await
    }

    async fn task(
        &self,
        kind: &'static str,
        subject: Option<(&str, &'static str)>,
        audience: &[String],
        scope: &str,
    ) -> Result<Held, AgentError> {
        let mut aud: Vec<String> = audience.to_vec();
        aud.sort();
        aud.dedup();
        let mut sc: Vec<&str> = scope.split_whitespace().collect();
        sc.sort_unstable();
        sc.dedup();
        let scope = sc.join(" ");
        if aud.is_empty() || scope.is_empty() {
            return Err(AgentError::Invalid(
                "a task token needs an audience and a scope".into(),
            ));
        }
        let key = TaskKey {
            kind,
            subject: subject
                .map(|(s, _)| hex::encode(sha2::Sha256::digest(s.as_bytes())))
                .unwrap_or_default(),
            audience: aud.join(" "),
            scope: scope.clone(),
        };
        let slot = {
            let mut tasks = self.tasks.lock();
            if tasks.len() >= MAX_CACHED && !tasks.contains_key(&key) {
                prune(&mut tasks);
            }
            tasks.entry(key).or_default().clone()
        };
        cached(&slot, |_| async {
            let identity = self.identity().await?;
            let mut form: Vec<(&str, &str)> = match subject {
                None => vec![("grant_type", "client_credentials")],
                Some((token, ty)) => vec![
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", token),
                    ("subject_token_type", ty),
                    ("actor_token", identity.token.as_str()),
                    ("actor_token_type", TYPE_JWT),
                ],
            };
            form.push(("client_assertion_type", JWT_BEARER));
            form.push(("client_assertion", identity.token.as_str()));
            form.push(("scope", &scope));
            for a in &aud {
                form.push(("audience", a));
            }
            let sent = Instant::now();
            let (status, bytes) = self.post_form("/oauth2/token", &form).await?;
            if status != StatusCode::OK {
                return Err(AgentError::from_body(status, &bytes));
            }
            let answer: Map<String, Value> = serde_json::from_slice(&bytes)
                .map_err(|_| AgentError::Invalid("the broker's answer is not JSON".into()))?;
            Held::new("access_token", answer, sent)
        })
        .await
    }

    /// Drops a cached task token (after the edge refused it).
    pub fn forget(&self, token: &str) {
        let slots: Vec<Slot> = self.tasks.lock().values().cloned().collect();
        for s in slots {
            if let Ok(mut g) = s.try_lock()
                && g.as_ref().is_some_and(|h| h.token.as_str() == token)
            {
                *g = None;
            }
        }
    }

    /// What the broker says of `token` now (RFC 7662), asked with this
    /// process's identity.
    pub async fn introspect(&self, token: &str) -> Result<Map<String, Value>, AgentError> {
        let identity = self.identity().await?;
        let form = [
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", identity.token.as_str()),
            ("token", token),
        ];
        let (status, bytes) = self.post_form("/oauth2/introspect", &form).await?;
        if status != StatusCode::OK {
            return Err(AgentError::from_body(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| AgentError::Invalid("the broker's answer is not JSON".into()))
    }

    /// The broker's JWKS (what its tokens are checked against).
    pub async fn jwks(&self) -> Result<Bytes, AgentError> {
        let req = Request::get(format!("{}/.well-known/jwks.json", self.api))
            .body(Full::new(Bytes::new()))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let (status, bytes) = self.send(req, "the broker", &self.api).await?;
        if status != StatusCode::OK {
            return Err(AgentError::from_body(status, &bytes));
        }
        Ok(bytes)
    }

    /// The edge's description of a route or `mcp/<server>` (RFC 9728).
    pub async fn resource(&self, path: &str) -> Result<Arc<Map<String, Value>>, AgentError> {
        if let Some(m) = self.resources.lock().get(path) {
            return Ok(m.clone());
        }
        let url = format!("{}/.well-known/oauth-protected-resource/{path}", self.edge);
        let req = Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let (status, bytes) = self.send(req, "the edge", &self.edge).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(AgentError::Refused {
                status: 404,
                error: "not_found".into(),
                description: format!(
                    "the edge at {} has no `{path}`",
                    warrant_core::text::shown_url(&self.edge)
                ),
                refused_by: None,
                policies: Vec::new(),
                how_to_get_access: None,
            });
        }
        if status != StatusCode::OK {
            return Err(AgentError::from_body(status, &bytes));
        }
        let m: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| AgentError::Invalid("the edge's metadata is not JSON".into()))?;
        let m = Arc::new(m);
        self.resources.lock().insert(path.to_owned(), m.clone());
        Ok(m)
    }

    async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), AgentError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = Request::post(format!("{}{path}", self.api))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        self.send(req, "the broker", &self.api).await
    }

    async fn post_json(
        &self,
        path: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, Bytes), AgentError> {
        let mut req =
            Request::post(format!("{}{path}", self.api)).header("content-type", "application/json");
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        self.send(req, "the broker", &self.api).await
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        what: &str,
        at: &str,
    ) -> Result<(StatusCode, Bytes), AgentError> {
        // A URL may carry credentials: never shown whole.
        let at = warrant_core::text::shown_url(at);
        let unreachable = |e: &dyn std::fmt::Display| {
            AgentError::Unavailable(format!("cannot reach {what} at {at}: {e}"))
        };
        let resp = tokio::time::timeout(Duration::from_secs(30), self.http.request(req))
            .await
            .map_err(|_| unreachable(&"no answer in 30 s"))?
            .map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// The most task tokens held at once. Each distinct user token the sidecar
/// is sent makes an entry, so a process on its port sending garbage must
/// not grow the map without bound.
const MAX_CACHED: usize = 1024;

/// Drops entries holding nothing usable (a refused exchange, an expired
/// token) that no caller is filling now; if that frees nothing, drops the
/// idle entries that expire soonest, down to three quarters of the cap.
fn prune(tasks: &mut HashMap<TaskKey, Slot>) {
    tasks.retain(|_, s| match s.try_lock() {
        Ok(g) => g.as_ref().is_some_and(Held::usable),
        Err(_) => true, // being filled
    });
    if tasks.len() < MAX_CACHED {
        return;
    }
    let mut idle: Vec<(Instant, TaskKey)> = tasks
        .iter()
        .filter_map(|(k, s)| {
            let g = s.try_lock().ok()?;
            Some((g.as_ref().map_or(Instant::now(), |h| h.expires), k.clone()))
        })
        .collect();
    idle.sort_by_key(|(at, _)| *at);
    let excess = tasks.len().saturating_sub(MAX_CACHED * 3 / 4);
    for (_, k) in idle.into_iter().take(excess) {
        tasks.remove(&k);
    }
}

/// The value in `slot`, or a new one from `fetch` when it is due; callers
/// that find it due together wait for one fetch. A fetch that fails because
/// the broker is unavailable leaves a still-good value in use.
async fn cached<F, Fut>(slot: &Slot, fetch: F) -> Result<Held, AgentError>
where
    F: FnOnce(Option<Held>) -> Fut,
    Fut: std::future::Future<Output = Result<Held, AgentError>>,
{
    let mut g = slot.lock().await;
    if let Some(h) = g.as_ref().filter(|h| h.fresh()) {
        return Ok(h.clone());
    }
    let current = g.clone();
    match fetch(current.clone()).await {
        Ok(h) => {
            *g = Some(h.clone());
            Ok(h)
        }
        Err(AgentError::Unavailable(m)) => match current.filter(Held::usable) {
            Some(h) => {
                tracing::warn!(error = %m, "the broker is unavailable; using the token held until it expires");
                Ok(h)
            }
            None => Err(AgentError::Unavailable(m)),
        },
        Err(e) => Err(e),
    }
}

/// `POST /v1/identity` on the agent socket, following the broker's `307`
/// (a one-time proof) on the same connection.
async fn unix_identity(path: &Path, body: &Value) -> Result<(StatusCode, Bytes), AgentError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        AgentError::Unavailable(format!(
            "cannot reach the agent socket `{}`: {e}; is the broker running, and is this its data directory?",
            path.display()
        ))
    };
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut uri = "/v1/identity".to_owned();
    for _ in 0..3 {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri.as_str())
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        match (status, location) {
            (StatusCode::TEMPORARY_REDIRECT, Some(l)) if l.starts_with("/v1/identity?") => {
                uri = l;
                sender.ready().await.map_err(|e| unreachable(&e))?;
            }
            _ => return Ok((status, bytes)),
        }
    }
    Err(AgentError::Unavailable(
        "the agent socket kept asking for the request again".into(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(i: usize) -> TaskKey {
        TaskKey {
            kind: "exchange",
            subject: format!("{i:064x}"),
            audience: "a".into(),
            scope: "s".into(),
        }
    }

    fn held(secs: u64) -> Held {
        let mut m = Map::new();
        m.insert("access_token".into(), "t".into());
        m.insert("expires_in".into(), secs.into());
        Held::new("access_token", m, Instant::now()).unwrap()
    }

    #[test]
    fn refused_and_expired_entries_do_not_pile_up() {
        let mut tasks: HashMap<TaskKey, Slot> = HashMap::new();
        // What garbage user tokens leave behind: empty slots.
        for i in 0..MAX_CACHED {
            tasks.insert(key(i), Slot::default());
        }
        tasks.insert(
            key(MAX_CACHED),
            Arc::new(tokio::sync::Mutex::new(Some(held(300)))),
        );
        prune(&mut tasks);
        assert_eq!(tasks.len(), 1, "only the usable token is kept");
        // Usable tokens over the cap: the soonest to expire go first.
        for i in 0..MAX_CACHED + 10 {
            tasks.insert(
                key(i),
                Arc::new(tokio::sync::Mutex::new(Some(held(100 + i as u64)))),
            );
        }
        prune(&mut tasks);
        assert_eq!(tasks.len(), MAX_CACHED * 3 / 4);
        assert!(
            tasks.contains_key(&key(MAX_CACHED + 9)),
            "the longest-lived stays"
        );
        assert!(!tasks.contains_key(&key(0)));
    }
}
