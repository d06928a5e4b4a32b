//! Credential providers: how the proxy obtains the upstream credential at
//! the last hop, for one request.
//!
//! Each provider yields an [`Injected`]: the header and value to set, the
//! values the response must never echo back, and the id and kind the audit
//! trail records (never the value). Credentials fetched from an endpoint
//! (OAuth tokens, token exchanges, AWS STS) are cached in [`cache`]; the
//! federations are in [`exchange`] and [`aws`].

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde::Serialize;
use warrant_core::secret::SecretName;
use warrant_core::task::Act;
use warrant_core::time::Timestamp;
use zeroize::Zeroizing;

pub mod aws;
pub mod cache;
pub mod config;
pub mod exchange;

pub use cache::TokenCache;
use config::{Credential, Template};

/// What a credential is obtained for: a route, or an MCP server.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The route's or server's name, for messages.
    pub name: &'a str,
    /// The credential provider.
    pub credential: &'a Credential,
    /// The audience a `warrant_jwt` is minted for.
    pub audience: &'a str,
    /// How long a token endpoint may take.
    pub timeout: Duration,
}

use warrant_core::secret::Resolved;
use warrant_core::task::TaskUse;

use crate::services::{CredentialSource, SecretUnavailable};

/// A credential ready to go into one request.
pub struct Injected {
    /// The header and its value (marked sensitive), if the credential is
    /// one.
    pub header: Option<(HeaderName, HeaderValue)>,
    /// The client certificate to present, for an `mtls` credential.
    pub tls: Option<Arc<ClientIdentity>>,
    /// What signs the request, for an `aws_sts` credential.
    pub sigv4: Option<aws::SigV4>,
    /// Byte strings to redact from the response.
    pub echoes: Vec<Vec<u8>>,
    /// The id the audit trail records.
    pub id: String,
}

/// A client certificate chain and its private key, parsed from a stored
/// secret (`id` names the secret's version, so a rotation is seen).
pub struct ClientIdentity {
    /// `name@vN`.
    pub id: String,
    /// SHA-256 of the stored value: what a client built for it is cached
    /// by (a secret deleted and stored again restarts at `v1`, so the id
    /// alone would keep a deleted key in use).
    pub fingerprint: [u8; 32],
    /// The chain, leaf first.
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("id", &self.id)
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injected")
            .field("header", &self.header.as_ref().map(|(h, _)| h))
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why no credential could be obtained.
#[derive(Debug)]
pub enum CredentialError {
    /// The request cannot have one (a per-user route without a user, or no
    /// secret stored for this user): 403 with what to do.
    Refused(String),
    /// The task's scope does not cover a credential the route has: 403,
    /// saying which scopes would.
    Scope(String),
    /// The route is misconfigured or an upstream token endpoint failed: 502/503.
    Unavailable(String),
}

impl From<SecretUnavailable> for CredentialError {
    fn from(e: SecretUnavailable) -> Self {
        Self::Unavailable(e.to_string())
    }
}

async fn shared_secret(
    secrets: &dyn CredentialSource,
    name: &SecretName,
    route: &str,
) -> Result<Arc<Resolved>, CredentialError> {
    secrets.secret(name, None).await?.ok_or_else(|| {
        CredentialError::Unavailable(format!(
            "route `{route}` uses secret `{name}`, which is not stored; an administrator must run `warrant secret put {name}`"
        ))
    })
}

fn header_value(bytes: &[u8], what: &str) -> Result<HeaderValue, CredentialError> {
    let mut v = HeaderValue::from_bytes(bytes).map_err(|_| {
        CredentialError::Unavailable(format!(
            "{what} has characters a header cannot carry (a newline?); store it again with `warrant secret rotate`"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The claims of a `warrant_jwt` credential.
#[derive(Serialize)]
struct UpstreamClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Act>,
    client_id: &'a str,
    scope: &'a str,
    task: &'a str,
    txn: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

/// The typ of a `warrant_jwt` credential (RFC 8725 §3.11 explicit typing):
/// never `at+jwt` (a task token) nor `JWT` (an identity token, a JWT-SVID),
/// so none of warrant's tokens can stand in for another at a relying party
/// that checks `typ`, as docs/proxy.md says an upstream must.
pub const UPSTREAM_JWT_TYP: &str = "warrant-upstream+jwt";

/// Everything providers need.
pub struct Providers<'a> {
    /// Stored secrets, and signing for `warrant_jwt`.
    pub source: &'a dyn CredentialSource,
    /// The issuer.
    pub issuer: &'a str,
}

impl std::fmt::Debug for Providers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Providers")
    }
}

impl Providers<'_> {
    /// Obtains the credential for `route` and this use of a task token
    /// (`task` may be absent only for kinds that do not depend on it).
    pub async fn obtain(
        &self,
        route: Target<'_>,
        cache: Option<&TokenCache>,
        task: Option<&TaskUse>,
    ) -> Result<Injected, CredentialError> {
        let needs_task = || {
            CredentialError::Unavailable(format!(
                "`{}`: credential kind `{}` needs a task token",
                route.name,
                route.credential.kind()
            ))
        };
        let no_cache = || CredentialError::Unavailable("no token cache".into());
        match route.credential {
            Credential::Secret {
                secret,
                header,
                format,
            } => {
                let s = shared_secret(self.source, secret, route.name).await?;
                filled(&s, secret, header, format)
            }
            Credential::PerUserSecret {
                secret,
                header,
                format,
            } => {
                let task = task.ok_or_else(needs_task)?;
                let s = self.users_secret(route, secret, task).await?;
                filled(&s, secret, header, format)
            }
            Credential::Basic { secret } => {
                let s = shared_secret(self.source, secret, route.name).await?;
                basic(&s, secret, route.name)
            }
            Credential::OAuth2ClientCredentials { .. } => {
                let cache = cache.ok_or_else(no_cache)?;
                self.client_credentials(route, cache).await
            }
            Credential::TokenExchange(x) => {
                let task = task.ok_or_else(needs_task)?;
                let cache = cache.ok_or_else(no_cache)?;
                self.token_exchange(route, x, cache, task).await
            }
            Credential::AwsSts(a) => {
                let task = task.ok_or_else(needs_task)?;
                let cache = cache.ok_or_else(no_cache)?;
                self.aws(route, a, cache, task).await
            }
            Credential::WarrantJwt {
                header,
                format,
                ttl,
            } => {
                let task = task.ok_or_else(needs_task)?;
                self.warrant_jwt(route, task, header, format, *ttl)
            }
            Credential::Mtls { secret } => {
                let s = shared_secret(self.source, secret, route.name).await?;
                client_identity(&s, secret, route.name)
            }
        }
    }

    /// The stored secret of the task's user.
    async fn users_secret(
        &self,
        route: Target<'_>,
        secret: &SecretName,
        task: &TaskUse,
    ) -> Result<Arc<Resolved>, CredentialError> {
        let Some(user) = task.claims.sub.strip_prefix("user:") else {
            return Err(CredentialError::Refused(format!(
                "route `{}` uses each user's own `{secret}`, and this task token acts for no user; use a token exchanged from a user's token",
                route.name
            )));
        };
        self.source.secret(secret, Some(user)).await?.ok_or_else(|| {
            CredentialError::Refused(format!(
                "no secret `{secret}` is stored for user `{}`; an administrator can add it with `warrant secret put {secret} --for-user {}`",
                warrant_core::text::shown(user, 100),
                warrant_core::text::shown(user, 100)
            ))
        })
    }

    /// A JWT warrant mints for the upstream: this task's user, chain and
    /// scope, audience-bound to the route, ending no later than the task.
    fn warrant_jwt(
        &self,
        route: Target<'_>,
        task: &TaskUse,
        header: &HeaderName,
        format: &Template,
        ttl: Duration,
    ) -> Result<Injected, CredentialError> {
        let now = Timestamp::now();
        let c = &task.claims;
        let exp = (now.as_secs() + i64::try_from(ttl.as_secs()).unwrap_or(60)).min(c.exp);
        let jti = warrant_host::random::ordered_id("ujt_", now.as_millis())
            .map_err(|e| CredentialError::Unavailable(e.to_string()))?;
        let claims = UpstreamClaims {
            iss: self.issuer,
            sub: &c.sub,
            aud: route.audience,
            act: c.act.as_ref(),
            client_id: &c.client_id,
            scope: &c.scope,
            task: &c.task,
            txn: &c.txn,
            jti: jti.clone(),
            iat: now.as_secs(),
            exp,
        };
        let claims = serde_json::to_value(&claims)
            .map_err(|e| CredentialError::Unavailable(e.to_string()))?;
        let token = self.source.sign_jwt(UPSTREAM_JWT_TYP, &claims)?;
        let value = format.fill(token.as_bytes());
        // The JWT is a credential at the upstream until it expires: an echo
        // of it (or of its signature, the one part the agent cannot
        // rebuild) is redacted like any secret's.
        let signature = token.rsplit('.').next().unwrap_or_default();
        Ok(Injected {
            header: Some((header.clone(), header_value(&value, "the minted JWT")?)),
            tls: None,
            sigv4: None,
            echoes: vec![token.as_bytes().to_vec(), signature.as_bytes().to_vec()],
            id: jti,
        })
    }
}

/// A stored secret in `header`, through its template.
fn filled(
    s: &Resolved,
    secret: &SecretName,
    header: &HeaderName,
    format: &Template,
) -> Result<Injected, CredentialError> {
    let value = Zeroizing::new(format.fill(s.value.expose()));
    Ok(Injected {
        header: Some((
            header.clone(),
            header_value(&value, &format!("secret `{secret}`"))?,
        )),
        tls: None,
        sigv4: None,
        echoes: vec![s.value.expose().to_vec()],
        id: s.id.clone(),
    })
}

/// A client certificate from a secret holding a PEM certificate chain
/// (leaf first) and its PEM private key.
fn client_identity(
    s: &Resolved,
    secret: &SecretName,
    route: &str,
) -> Result<Injected, CredentialError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = s.value.expose();
    let bad = |what: &str| {
        CredentialError::Unavailable(format!(
            "secret `{secret}` of route `{route}` must hold a PEM certificate chain and its PEM private key for `mtls`: {what}; store it again with `warrant secret rotate {secret} < bundle.pem`"
        ))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| bad("a certificate cannot be read"))?;
    if certs.is_empty() {
        return Err(bad("it has no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| bad("it has no private key"))?;
    Ok(Injected {
        header: None,
        sigv4: None,
        tls: Some(Arc::new(ClientIdentity {
            id: s.id.clone(),
            fingerprint: {
                use sha2::Digest as _;
                sha2::Sha256::digest(pem).into()
            },
            certs,
            key,
        })),
        echoes: Vec::new(),
        id: s.id.clone(),
    })
}

/// HTTP basic auth from a `user:password` secret.
fn basic(s: &Resolved, secret: &SecretName, route: &str) -> Result<Injected, CredentialError> {
    if !s.value.expose().contains(&b':') {
        return Err(CredentialError::Unavailable(format!(
            "secret `{secret}` of route `{route}` must be `user:password` for basic auth"
        )));
    }
    let encoded =
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(s.value.expose()));
    let value = Zeroizing::new(format!("Basic {}", encoded.as_str()));
    // The password alone is the secret part (the user name is not; a short
    // password is below the redactor's minimum and only redacted with its
    // user name).
    let v = s.value.expose();
    let colon = v.iter().position(|&b| b == b':').unwrap_or(0);
    Ok(Injected {
        header: Some((
            http::header::AUTHORIZATION,
            header_value(value.as_bytes(), &format!("secret `{secret}`"))?,
        )),
        tls: None,
        sigv4: None,
        echoes: vec![
            v.to_vec(),
            encoded.as_bytes().to_vec(),
            v[colon + 1..].to_vec(),
        ],
        id: s.id.clone(),
    })
}
