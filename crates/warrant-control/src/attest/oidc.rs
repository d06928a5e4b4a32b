//! The OIDC attestor: platform JWTs from trusted issuers.
//!
//! Trusted issuers are configured (`[[trust_provider]]`). A presented token is
//! matched to a provider by its (unverified) `iss`, then verified with that
//! provider's keys only: signature by [`warrant_token::jwt::verify`] (the key
//! decides the algorithm; header-supplied keys are refused), then issuer,
//! audience (the provider's configured audience) and lifetime.
//!
//! A provider's JWKS is cached. A token whose `kid` is unknown triggers a
//! refresh, at most once a minute per provider, so rotation at the issuer is
//! picked up and a flood of made-up `kid`s costs one fetch a minute.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use warrant_core::identity::{Evidence, OidcFacts};
use warrant_core::text::shown;
use warrant_core::time::Timestamp;
use warrant_token::jwt::{self, Expect, JwtError, VerifyingKeys};

/// How often an unknown `kid` may trigger a JWKS refresh, per provider.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// How long fetched (or read) keys are trusted before they are read again:
/// a key the issuer withdrew stops verifying within this.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(600);
/// Allowed clock difference with the issuer.
pub const LEEWAY_SECS: i64 = 30;
/// The largest JWKS accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A local file, re-read on refresh.
    File(PathBuf),
    /// An `http(s)` URL.
    Uri(String),
    /// A JWKS held in memory (the development issuer's).
    Inline(String),
}

/// One trusted issuer, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustProvider {
    /// Its name, for the audit trail.
    pub name: String,
    /// `iss` exactly.
    pub issuer: String,
    /// Its keys.
    pub jwks: JwksSource,
    /// The audience its tokens must carry for warrant.
    pub audience: String,
}

struct Provider {
    config: TrustProvider,
    keys: ArcSwap<VerifyingKeys>,
    /// When the keys were last fetched (or a fetch was tried). A tokio mutex:
    /// held across the fetch so concurrent misses share one.
    fetched: tokio::sync::Mutex<Option<Instant>>,
    /// When the keys in use were loaded (`None`: never, or held in memory
    /// for good).
    loaded: parking_lot::Mutex<Option<Instant>>,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The trusted providers and their cached keys.
pub struct Providers {
    list: Vec<Arc<Provider>>,
    client: Option<HttpClient>,
}

impl Providers {
    /// The configured providers' names.
    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|p| p.config.name.as_str()).collect()
    }
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|p| &p.config.name))
            .finish()
    }
}

/// Why a token did not attest. Safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// No provider has the token's issuer.
    #[error("the token's issuer `{0}` is not a trusted provider")]
    UnknownIssuer(String),
    /// The token failed verification.
    #[error("{0}")]
    Token(#[from] JwtError),
    /// The provider's keys could not be loaded.
    #[error("the keys of trusted provider `{0}` are unavailable; try again later")]
    Keys(String),
}

impl Providers {
    /// Builds the providers, loading every `jwks_file` now (a file that does
    /// not parse is an error: the broker refuses to start rather than trust
    /// nobody silently). URLs are fetched on first use.
    pub fn new(configs: Vec<TrustProvider>) -> Result<Self, String> {
        let needs_http = configs.iter().any(|c| matches!(c.jwks, JwksSource::Uri(_)));
        let client = if needs_http {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            Some(Client::builder(TokioExecutor::new()).build(https))
        } else {
            None
        };
        let mut list = Vec::new();
        for config in configs {
            let keys = match &config.jwks {
                JwksSource::File(path) => {
                    let bytes = std::fs::read(path).map_err(|e| {
                        format!(
                            "trust_provider `{}`: cannot read jwks_file `{}`: {e}",
                            config.name,
                            path.display()
                        )
                    })?;
                    parse(&config.name, &bytes)?
                }
                JwksSource::Uri(_) => VerifyingKeys::default(),
                JwksSource::Inline(json) => parse(&config.name, json.as_bytes())?,
            };
            let fetched = (!matches!(config.jwks, JwksSource::Uri(_))).then(Instant::now);
            list.push(Arc::new(Provider {
                keys: ArcSwap::from_pointee(keys),
                fetched: tokio::sync::Mutex::new(fetched),
                loaded: parking_lot::Mutex::new(
                    matches!(config.jwks, JwksSource::File(_)).then(Instant::now),
                ),
                config,
            }));
        }
        Ok(Self { list, client })
    }

    /// No providers.
    pub fn none() -> Self {
        Self {
            list: Vec::new(),
            client: None,
        }
    }

    /// Whether any provider is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Verifies `token` and returns the evidence it carries.
    pub async fn attest(&self, token: &str, now: Timestamp) -> Result<Evidence, OidcError> {
        let (provider, claims) = self.verify(token, now).await?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if sub.is_empty() {
            return Err(JwtError::Claim("the token has no `sub`".into()).into());
        }
        Ok(Evidence::Oidc(OidcFacts {
            provider: provider.name,
            iss: provider.issuer,
            sub,
            claims,
        }))
    }

    /// Verifies `token` with the keys of the provider its `iss` names, and
    /// checks issuer, audience and lifetime. Returns the provider and the claims.
    pub async fn verify(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<(TrustProvider, serde_json::Map<String, Value>), OidcError> {
        let claims = jwt::peek_claims_unverified(token)?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        let providers: Vec<&Arc<Provider>> = self
            .list
            .iter()
            .filter(|p| p.config.issuer == iss)
            .collect();
        if providers.is_empty() {
            return Err(OidcError::UnknownIssuer(shown(iss, 100)));
        }
        let mut last = None;
        for p in providers {
            match self.verify_with(p, token, now).await {
                Ok(e) => return Ok(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| OidcError::UnknownIssuer(shown(iss, 100))))
    }

    async fn verify_with(
        &self,
        p: &Provider,
        token: &str,
        now: Timestamp,
    ) -> Result<(TrustProvider, serde_json::Map<String, Value>), OidcError> {
        let stale = p.loaded.lock().is_some_and(|t| t.elapsed() >= KEYS_MAX_AGE);
        if p.keys.load().is_empty() || stale {
            self.refresh(p).await;
        }
        let verified = match jwt::verify(token, &p.keys.load()) {
            Err(JwtError::UnknownKid(_) | JwtError::NoKey(_)) if self.refresh(p).await => {
                jwt::verify(token, &p.keys.load())
            }
            other => other,
        };
        let verified = match verified {
            Ok(v) => v,
            Err(e) if p.keys.load().is_empty() => {
                tracing::warn!(provider = %p.config.name, error = %e, "no keys for trusted provider");
                return Err(OidcError::Keys(p.config.name.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        Expect {
            issuer: &p.config.issuer,
            audience: &p.config.audience,
            now,
            leeway_secs: LEEWAY_SECS,
        }
        .check(&verified.claims)?;
        Ok((p.config.clone(), verified.claims))
    }

    /// Re-reads the provider's keys unless that happened within
    /// [`REFRESH_INTERVAL`]. Returns whether new keys were loaded.
    async fn refresh(&self, p: &Provider) -> bool {
        let mut fetched = p.fetched.lock().await;
        if fetched.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
            return false;
        }
        *fetched = Some(Instant::now());
        let bytes = match &p.config.jwks {
            // Checked again at every read: the file or a directory above it
            // may have been opened to others since start.
            JwksSource::File(path) => warrant_host::trust::check_trusted(path, "jwks_file", false)
                .and_then(|()| std::fs::read(path).map_err(|e| e.to_string())),
            JwksSource::Uri(uri) => self.fetch(uri).await,
            JwksSource::Inline(json) => Ok(json.as_bytes().to_vec()),
        };
        match bytes.and_then(|b| parse(&p.config.name, &b)) {
            Ok(keys) => {
                tracing::info!(provider = %p.config.name, keys = keys.len(), "loaded trusted provider keys");
                p.keys.store(Arc::new(keys));
                if !matches!(p.config.jwks, JwksSource::Inline(_)) {
                    *p.loaded.lock() = Some(Instant::now());
                }
                true
            }
            Err(e) => {
                tracing::warn!(provider = %p.config.name, error = %e, "cannot refresh trusted provider keys; keeping the ones we have");
                false
            }
        }
    }

    async fn fetch(&self, uri: &str) -> Result<Vec<u8>, String> {
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let uri: hyper::Uri = uri.parse().map_err(|e| format!("bad jwks_uri: {e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .map_err(|_| "the JWKS request timed out after 10s".to_owned())?
            .map_err(|e| format!("the JWKS request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("the JWKS request answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the JWKS failed: {e}"))?;
        Ok(body.to_bytes().to_vec())
    }
}

fn parse(name: &str, bytes: &[u8]) -> Result<VerifyingKeys, String> {
    let (keys, skipped) =
        VerifyingKeys::from_jwks(bytes).map_err(|e| format!("trust_provider `{name}`: {e}"))?;
    for s in skipped {
        tracing::warn!(provider = name, key = %s, "skipped a key of a trusted provider");
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use warrant_core::keys::Alg;
    use warrant_token::{Kek, KeySet, generate_key};

    use super::*;

    fn issuer_key() -> KeySet {
        let kek = Kek::generate().unwrap();
        let t = Timestamp::from_millis(0);
        KeySet::open(vec![generate_key(Alg::Es256, &kek, t, t).unwrap()], &kek).unwrap()
    }

    fn token(set: &KeySet, now: Timestamp) -> String {
        let claims = serde_json::json!({
            "iss": "https://issuer.test", "aud": "warrant", "sub": "job-1",
            "exp": now.as_secs() + 300, "iat": now.as_secs(),
        });
        jwt::sign(set.active(now).unwrap(), "JWT", &claims).unwrap()
    }

    /// One provider whose keys are read from `file`.
    fn from_file(file: &std::path::Path) -> Providers {
        Providers::new(vec![TrustProvider {
            name: "ci".into(),
            issuer: "https://issuer.test".into(),
            jwks: JwksSource::File(file.to_owned()),
            audience: "warrant".into(),
        }])
        .unwrap()
    }

    #[tokio::test]
    async fn a_rotated_issuer_key_is_picked_up_once_the_interval_allows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        let old = issuer_key();
        let now = Timestamp::now();
        std::fs::write(&file, serde_json::to_vec(&old.jwks(now)).unwrap()).unwrap();
        let providers = from_file(&file);
        assert!(providers.attest(&token(&old, now), now).await.is_ok());

        // The issuer rotates: its new key is in the file, not yet in our cache.
        let new = issuer_key();
        std::fs::write(&file, serde_json::to_vec(&new.jwks(now)).unwrap()).unwrap();
        let fresh = token(&new, now);
        // Within the interval the unknown kid does not trigger a re-read...
        assert!(matches!(
            providers.attest(&fresh, now).await,
            Err(OidcError::Token(JwtError::UnknownKid(_)))
        ));
        // ...after it, the first unknown kid does, and the new key verifies.
        *providers.list[0].fetched.lock().await =
            Instant::now().checked_sub(REFRESH_INTERVAL + Duration::from_secs(1));
        let Ok(Evidence::Oidc(facts)) = providers.attest(&fresh, now).await else {
            panic!("the rotated key was not picked up");
        };
        assert_eq!(facts.sub, "job-1");
        assert_eq!(facts.provider, "ci");

        // Found in review: the file was re-read whatever had become of its
        // permissions since start. Opened to others, it is not read again.
        use std::os::unix::fs::PermissionsExt as _;
        let planted = issuer_key();
        std::fs::write(&file, serde_json::to_vec(&planted.jwks(now)).unwrap()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        *providers.list[0].fetched.lock().await =
            Instant::now().checked_sub(REFRESH_INTERVAL + Duration::from_secs(1));
        assert!(matches!(
            providers.attest(&token(&planted, now), now).await,
            Err(OidcError::Token(JwtError::UnknownKid(_)))
        ));
    }

    /// Found in review: fetched keys were trusted until an unknown `kid`
    /// came, so a key the issuer withdrew kept verifying until a restart.
    /// Keys older than KEYS_MAX_AGE are read again first.
    #[tokio::test]
    async fn a_withdrawn_issuer_key_stops_verifying_once_the_keys_are_old() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        let withdrawn = issuer_key();
        let now = Timestamp::now();
        std::fs::write(&file, serde_json::to_vec(&withdrawn.jwks(now)).unwrap()).unwrap();
        let providers = from_file(&file);
        let old = token(&withdrawn, now);
        assert!(providers.attest(&old, now).await.is_ok());
        // The issuer takes the key out of its set.
        let kept = issuer_key();
        std::fs::write(&file, serde_json::to_vec(&kept.jwks(now)).unwrap()).unwrap();
        assert!(
            providers.attest(&old, now).await.is_ok(),
            "still fresh: not read again"
        );
        // Once the keys are old (and the refresh interval allows), they are
        // read again and the withdrawn key no longer verifies.
        let past = Instant::now().checked_sub(KEYS_MAX_AGE + Duration::from_secs(1));
        *providers.list[0].loaded.lock() = past;
        *providers.list[0].fetched.lock().await = past;
        assert!(matches!(
            providers.attest(&old, now).await,
            Err(OidcError::Token(JwtError::UnknownKid(_)))
        ));
        assert!(providers.attest(&token(&kept, now), now).await.is_ok());
    }
}
