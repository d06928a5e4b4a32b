//! A Streamable HTTP MCP server: the gateway's client end.
//!
//! The gateway keeps one upstream session (the `initialize` handshake;
//! `Mcp-Session-Id` if the server issues one) and sends each request as its
//! own POST, with the upstream's credential from the provider (never the
//! agent's token) and the agent's nothing. Answers come as JSON or as a
//! server-sent-event stream ending with the response. A `404` for the
//! session starts a new one and retries once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::config::Transport;
use super::stdio::{HANDSHAKE_VERSION, UpstreamError};
use crate::credential::config::Credential;
use crate::credential::{CredentialError, Providers, Target, TokenCache};
use crate::redact::Redactor;
use crate::upstream::Scheme;
use warrant_core::task::TaskUse;

/// The most upstream sessions kept (one per user for per-user credentials).
const MAX_SESSIONS: usize = 4096;
/// The largest answer read from an upstream.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, Clone)]
struct Session {
    id: Option<String>,
    version: String,
}

/// An HTTP MCP server.
pub struct HttpUpstream {
    name: String,
    url: url::Url,
    credential: Option<Credential>,
    oauth: Option<TokenCache>,
    client: HttpClient,
    next_id: AtomicU64,
    // A tokio mutex: held while a session is set up, so one handshake runs
    // per key at a time. Keyed by whose credential the session uses.
    sessions: tokio::sync::Mutex<std::collections::HashMap<String, Session>>,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUpstream")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpUpstream {
    /// A client for `transport` (which must be `Transport::Http`).
    pub fn new(name: &str, transport: &Transport, timeout: Duration) -> Result<Self, String> {
        let Transport::Http {
            url,
            origin,
            credential,
            ca_file,
        } = transport
        else {
            return Err("not an HTTP server".into());
        };
        let conn = crate::upstream::connector(
            origin.scheme == Scheme::Https,
            ca_file.as_deref(),
            timeout.min(Duration::from_secs(10)),
        )
        .map_err(|e| format!("MCP server `{name}`: {e}"))?;
        let oauth = match credential.as_deref().and_then(Credential::token_endpoint) {
            Some((token_url, ca_file)) => {
                let c = crate::upstream::connector(
                    token_url.scheme() == "https",
                    ca_file,
                    Duration::from_secs(10),
                )
                .map_err(|e| format!("MCP server `{name}`: {e}"))?;
                Some(TokenCache::new(
                    Client::builder(TokioExecutor::new()).build(c),
                ))
            }
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            url: url.clone(),
            credential: credential.as_deref().cloned(),
            oauth,
            client: Client::builder(TokioExecutor::new()).build(conn),
            next_id: AtomicU64::new(1),
            sessions: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn unavailable(&self, why: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            server: self.name.clone(),
            why: why.into(),
        }
    }

    /// The credential for this request, and the upstream session it
    /// belongs to: one per user for per-user credentials, one per acting
    /// subject for minted JWTs, one shared otherwise.
    async fn credential(
        &self,
        providers: &Providers<'_>,
        timeout: Duration,
        task: Option<&TaskUse>,
    ) -> Result<(String, Option<(HeaderName, HeaderValue)>, Redactor), UpstreamError> {
        let Some(c) = &self.credential else {
            return Ok(("shared".into(), None, Redactor::new(Vec::new())));
        };
        let target = Target {
            name: &self.name,
            credential: c,
            audience: self.url.as_str(),
            timeout,
        };
        let injected = providers
            .obtain(target, self.oauth.as_ref(), task)
            .await
            .map_err(|e| match e {
                CredentialError::Refused(m) | CredentialError::Scope(m) => {
                    UpstreamError::Refused(m)
                }
                CredentialError::Unavailable(m) => self.unavailable(m),
            })?;
        let key = match c {
            Credential::PerUserSecret { .. } => injected.id.clone(),
            Credential::WarrantJwt { .. } => {
                format!("jwt:{}", task.map(|t| t.claims.sub.as_str()).unwrap_or(""))
            }
            // Exchanged for the acting agent and its user: a session each.
            Credential::TokenExchange(_) => task
                .map(|t| format!("sts:{}\n{}", t.agent.name.as_str(), t.claims.sub))
                .unwrap_or_default(),
            _ => "shared".into(),
        };
        let redactor = Redactor::new(injected.echoes);
        Ok((key, injected.header, redactor))
    }

    /// Sends a request and waits for its result (`task`: the use it is for,
    /// needed by per-user and minted credentials).
    pub async fn call(
        &self,
        providers: &Providers<'_>,
        method: &str,
        params: Value,
        timeout: Duration,
        task: Option<&TaskUse>,
    ) -> Result<Value, UpstreamError> {
        let (key, cred, redactor) = self.credential(providers, timeout, task).await?;
        for attempt in 0..2 {
            let session = self.session(&key, cred.as_ref(), timeout).await?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let msg = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
            match self
                .post_raw(&session, &msg, timeout, cred.as_ref())
                .await?
            {
                (StatusCode::NOT_FOUND, _, _) if session.id.is_some() && attempt == 0 => {
                    // The upstream forgot the session: start another, once.
                    self.sessions.lock().await.remove(&key);
                }
                (status, body, _) => {
                    // An upstream that echoes its credential does not hand
                    // it to the agent: redacted in the parsed answer, so no
                    // JSON escape hides it.
                    return self.answer(status, &body, id, &redactor);
                }
            }
        }
        Err(self.unavailable("its session kept expiring"))
    }

    async fn session(
        &self,
        key: &str,
        cred: Option<&(HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Result<Session, UpstreamError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(key) {
            return Ok(s.clone());
        }
        let bare = Session {
            id: None,
            version: HANDSHAKE_VERSION.into(),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let init = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "warrant-gateway", "version": env!("CARGO_PKG_VERSION") },
            }
        });
        let (status, body, session_id) = self.post_raw(&bare, &init, timeout, cred).await?;
        let result = self.answer(status, &body, id, &Redactor::new(Vec::new()))?;
        let session = Session {
            id: session_id,
            version: result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(HANDSHAKE_VERSION)
                .to_owned(),
        };
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let (status, _, _) = self.post_raw(&session, &note, timeout, cred).await?;
        if !status.is_success() {
            return Err(self.unavailable(format!(
                "it refused the initialized notification ({status})"
            )));
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(key.to_owned(), session.clone());
        Ok(session)
    }

    async fn post_raw(
        &self,
        session: &Session,
        msg: &Value,
        timeout: Duration,
        cred: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<(StatusCode, Bytes, Option<String>), UpstreamError> {
        let mut req = Request::post(self.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            // Uncompressed, so what it answers can be read and redacted.
            .header(header::ACCEPT_ENCODING, "identity")
            .header("mcp-protocol-version", session.version.as_str());
        if let Some(id) = &session.id {
            req = req.header("mcp-session-id", id.as_str());
        }
        let mut req = req
            .body(Full::from(msg.to_string()))
            .map_err(|e| self.unavailable(e.to_string()))?;
        if let Some((name, value)) = cred {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| UpstreamError::Timeout(self.name.clone()))?
            .map_err(|e| {
                tracing::warn!(server = %self.name, error = %e, "MCP server unreachable");
                self.unavailable("it could not be reached")
            })?;
        let status = resp.status();
        let session_id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(coding) = crate::upstream::uninspectable(resp.headers()) {
            return Err(self.unavailable(format!(
                "it answered with encoding `{}` though warrant asked for none, and warrant relays only what it can read",
                warrant_core::text::shown(&coding, 40)
            )));
        }
        let sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body = tokio::time::timeout(
            timeout,
            http_body_util::Limited::new(resp.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(self.name.clone()))?
        .map_err(|_| self.unavailable("its answer was unreadable or too large"))?
        .to_bytes();
        let body = if sse {
            last_message(&body, msg.get("id"))
        } else {
            body
        };
        Ok((status, body, session_id))
    }

    fn answer(
        &self,
        status: StatusCode,
        body: &[u8],
        id: u64,
        redactor: &Redactor,
    ) -> Result<Value, UpstreamError> {
        if !status.is_success() {
            return Err(self.unavailable(format!("it answered {status}")));
        }
        let mut v: Value = serde_json::from_slice(body)
            .map_err(|_| self.unavailable("its answer is not JSON-RPC"))?;
        redactor.redact_value(&mut v);
        if v.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(self.unavailable("its answer is for another request"));
        }
        // Taken out of the answer, not copied: the result is most of it.
        let Value::Object(mut m) = v else {
            return Err(self.unavailable("its answer is not JSON-RPC"));
        };
        match (m.remove("result"), m.get("error")) {
            (Some(r), _) => Ok(r),
            (None, Some(e)) => Err(UpstreamError::from_rpc(e)),
            _ => Err(self.unavailable("its answer has neither result nor error")),
        }
    }
}

/// The JSON-RPC response for `id` in a server-sent-event stream (its
/// notifications are dropped: the gateway relays only the answer). The
/// stream is parsed by `eventsource-stream` as the WHATWG specification
/// says (any line ending, multi-line `data`, comments); an event cut off
/// before its blank line is not dispatched.
pub fn last_message(stream: &[u8], id: Option<&Value>) -> Bytes {
    use eventsource_stream::Eventsource as _;
    use futures_util::{FutureExt as _, StreamExt as _};
    let events = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(stream)])
        .eventsource()
        .collect::<Vec<_>>()
        // The whole stream is in memory: every poll is ready.
        .now_or_never()
        .unwrap_or_default();
    let mut found = Bytes::new();
    for event in events.into_iter().flatten() {
        if let Ok(v) = serde_json::from_str::<Value>(&event.data)
            && (id.is_none() || v.get("id") == id)
            && (v.get("result").is_some() || v.get("error").is_some())
        {
            found = Bytes::from(event.data);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_found_in_an_event_stream() {
        let s = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"ok\":true}}\r\n\r\n";
        let b = last_message(s, Some(&json!(7)));
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap()["result"]["ok"],
            true
        );
        assert!(last_message(s, Some(&json!(8))).is_empty());
        // Bare CR line endings, a comment, data over two lines.
        let s =
            b": keep-alive\rdata: {\"jsonrpc\":\"2.0\",\rdata: \"id\":7,\"result\":{\"ok\":1}}\r\n\n";
        let b = last_message(s, Some(&json!(7)));
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap()["result"]["ok"],
            1
        );
        // An event cut off before its blank line is not an answer.
        assert!(
            last_message(
                b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}",
                Some(&json!(7))
            )
            .is_empty()
        );
    }
}
