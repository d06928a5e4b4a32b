//! Credentials fetched from an endpoint (an OAuth token endpoint, a
//! security token service, AWS STS), cached per key until shortly before
//! they expire and refreshed by one request while the others wait (single
//! flight). The key is what the fetched credential depends on: nothing for
//! a client's own token, the minted subject for a federation.
//!
//! Not here: what to send and how to read the answer (each kind's module).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::CredentialError;
use super::aws::AwsKeys;

pub(crate) type TokenClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A fetched credential.
pub struct CachedToken {
    /// The access token (empty for AWS keys).
    pub(crate) token: Zeroizing<String>,
    /// AWS temporary credentials.
    pub(crate) aws: Option<AwsKeys>,
    /// What the audit trail names it by (never a secret).
    pub(crate) id: String,
    pub(crate) refresh_at: Instant,
    pub(crate) expires_at: Instant,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    /// A token living `life` from now, refreshed a little early: at 80% of
    /// its life, and at least 30 s before expiry when the life allows.
    pub(crate) fn new(token: Zeroizing<String>, id: String, life: Duration) -> Self {
        let now = Instant::now();
        let early = (life / 5).max(Duration::from_secs(30)).min(life / 2);
        Self {
            token,
            aws: None,
            id,
            refresh_at: now + life - early,
            expires_at: now + life,
        }
    }

    /// Seconds left, for the audit trail.
    pub(crate) fn left(&self) -> u64 {
        self.expires_at
            .saturating_duration_since(Instant::now())
            .as_secs()
    }
}

#[derive(Default)]
struct Slot {
    // A std mutex: held only to read or replace the cached token.
    current: Mutex<Option<Arc<CachedToken>>>,
    // A tokio mutex: held across the fetch, so one runs while concurrent
    // requests for the same key wait for its result.
    refresh: tokio::sync::Mutex<()>,
}

impl Slot {
    fn fresh(&self) -> Option<Arc<CachedToken>> {
        self.current
            .lock()
            .clone()
            .filter(|t| Instant::now() < t.refresh_at)
    }

    /// The current token if it is still good for a while, when a refresh
    /// failed: the endpoint being down for a moment does not stop requests
    /// a valid credential can still carry.
    fn still_valid(&self) -> Option<Arc<CachedToken>> {
        self.current
            .lock()
            .clone()
            .filter(|t| Instant::now() + Duration::from_secs(10) < t.expires_at)
    }
}

/// The most keys one provider caches: beyond it, expired and unused
/// entries go first.
const MAX_KEYS: usize = 4096;

/// The per-route (or per-server) state of a provider that fetches its
/// credential.
pub struct TokenCache {
    client: TokenClient,
    // A std mutex: held only to find or add a slot.
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache fetching through `client`.
    pub fn new(client: TokenClient) -> Self {
        Self {
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut m = self.slots.lock();
        if let Some(s) = m.get(key) {
            return s.clone();
        }
        if m.len() >= MAX_KEYS {
            let now = Instant::now();
            m.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.current
                        .lock()
                        .as_ref()
                        .is_some_and(|t| now < t.expires_at)
            });
            if m.len() >= MAX_KEYS {
                m.retain(|_, s| Arc::strong_count(s) > 1);
            }
        }
        m.entry(key.to_owned()).or_default().clone()
    }

    /// The credential cached for `key`, or the one `fetch` gets (once, for
    /// every caller waiting on the same key).
    pub(crate) async fn get<F, Fut>(
        &self,
        key: &str,
        fetch: F,
    ) -> Result<Arc<CachedToken>, CredentialError>
    where
        F: FnOnce(TokenClient) -> Fut,
        Fut: Future<Output = Result<CachedToken, CredentialError>>,
    {
        let slot = self.slot(key);
        if let Some(t) = slot.fresh() {
            return Ok(t);
        }
        let _one = slot.refresh.lock().await;
        if let Some(t) = slot.fresh() {
            return Ok(t);
        }
        match fetch(self.client.clone()).await {
            Ok(t) => {
                let t = Arc::new(t);
                *slot.current.lock() = Some(t.clone());
                Ok(t)
            }
            Err(e) => slot.still_valid().ok_or(e),
        }
    }
}

/// Sends `req` to a credential endpoint and reads its answer (at most
/// 64 KiB). Errors say which route and what went wrong, never the
/// endpoint's address or a library's words (the log has both).
pub(crate) async fn send(
    client: &TokenClient,
    req: http::Request<Full<Bytes>>,
    route: &str,
    what: &str,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), CredentialError> {
    let endpoint = req
        .uri()
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    let unavailable = |why: &str| {
        tracing::warn!(route, endpoint = %endpoint, why, "{what} failed");
        CredentialError::Unavailable(format!("`{route}`: its {what} {why}"))
    };
    // One limit for the whole exchange, answer body included: an endpoint
    // that trickles its answer must not hold the fetch (and every request
    // waiting on it) open.
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            tracing::warn!(route, endpoint = %endpoint, error = %e, "{what} unreachable");
            unavailable("could not be reached")
        })?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|_| unavailable("sent an unreadable or oversized answer"))?
            .to_bytes();
        Ok::<_, CredentialError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout.min(Duration::from_secs(30)), exchange)
        .await
        .map_err(|_| unavailable("did not answer in time"))??;
    Ok((status, body))
}

/// A form POST.
pub(crate) fn form_post(
    url: &url::Url,
    form: String,
    authorization: Option<http::HeaderValue>,
) -> Result<http::Request<Full<Bytes>>, CredentialError> {
    let mut b = http::Request::post(url.as_str())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    if let Some(a) = authorization {
        b = b.header(http::header::AUTHORIZATION, a);
    }
    b.body(Full::from(form))
        .map_err(|e| CredentialError::Unavailable(e.to_string()))
}

/// A form body from pairs (built in a function: the serializer is not
/// `Send`, so it must not live across an await).
pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    f.finish()
}

/// An OAuth token endpoint's JSON answer: the access token and its
/// lifetime (`expires_in`, 300 s when absent; 1 s to a day).
pub(crate) fn access_token(body: &[u8]) -> Result<(Zeroizing<String>, Duration), String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "answered with something that is not JSON".to_owned())?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "answered without an access_token".to_owned())?;
    let life = v
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(300)
        .clamp(1, 86_400);
    Ok((Zeroizing::new(token.to_owned()), Duration::from_secs(life)))
}

/// What an OAuth error answer says (`error`, a short code), for messages:
/// never its description, which an endpoint may fill with anything.
pub(crate) fn oauth_error(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .filter(|e| {
            e.len() <= 64
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .map(|e| format!(", `{e}`"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cache() -> TokenCache {
        let conn = crate::upstream::connector(false, None, Duration::from_secs(1)).unwrap();
        TokenCache::new(Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn))
    }

    fn token(v: &str, refresh_in: Duration, expires_in: Duration) -> CachedToken {
        let now = Instant::now();
        CachedToken {
            token: Zeroizing::new(v.into()),
            aws: None,
            id: v.into(),
            refresh_at: now + refresh_in,
            expires_at: now + expires_in,
        }
    }

    #[tokio::test]
    async fn one_fetch_per_key_for_concurrent_callers() {
        let c = cache();
        let fetched = AtomicUsize::new(0);
        let fetch = |v: &'static str| {
            let fetched = &fetched;
            move |_| async move {
                fetched.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(token(v, Duration::from_secs(60), Duration::from_secs(120)))
            }
        };
        let (a, b, other) = tokio::join!(
            c.get("alice", fetch("a")),
            c.get("alice", fetch("a2")),
            c.get("bob", fetch("b"))
        );
        assert_eq!(fetched.load(Ordering::SeqCst), 2, "one per key");
        assert_eq!(a.unwrap().token.as_str(), b.unwrap().token.as_str());
        assert_eq!(other.unwrap().token.as_str(), "b");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_a_credential_that_is_still_good() {
        let c = cache();
        let due = |v: &'static str, expires: Duration| {
            move |_| async move { Ok(token(v, Duration::ZERO, expires)) }
        };
        let fail = |_| async { Err(CredentialError::Unavailable("down".into())) };
        c.get("k", due("old", Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(c.get("k", fail).await.unwrap().token.as_str(), "old");
        // Within 10 s of its expiry it is not used.
        c.get("k", due("brief", Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(c.get("k", fail).await.is_err());
    }

    #[test]
    fn oauth_errors_are_named_only_when_they_are_codes() {
        assert_eq!(
            oauth_error(br#"{"error":"invalid_client"}"#),
            ", `invalid_client`"
        );
        assert_eq!(oauth_error(br#"{"error":"<script>"}"#), "");
        assert_eq!(oauth_error(b"not json"), "");
    }
}
