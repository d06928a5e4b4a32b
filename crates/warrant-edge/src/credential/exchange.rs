//! Credentials by federation at a token endpoint: RFC 8693 token exchange
//! of a token warrant mints at a security token service (Google Cloud's
//! workload identity federation, optionally followed by a service
//! account's token), and OAuth client credentials with the client
//! authenticated by a JWT warrant signs (RFC 7523 `private_key_jwt`).
//! Either way no client secret or cloud key is stored anywhere: the
//! provider trusts warrant's published keys.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use warrant_core::task::TaskUse;
use warrant_core::time::Timestamp;
use zeroize::Zeroizing;

use super::cache::{
    CachedToken, TokenCache, TokenClient, access_token, form, form_post, oauth_error, send,
};
use super::config::{AssertionIssuer, ClientAuth, Credential, TokenExchange};
use super::{CredentialError, Injected, Providers, Target, header_value, shared_secret};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The typ of a client assertion (draft-ietf-oauth-rfc7523bis): its own,
/// so it can never be taken for another of warrant's tokens.
pub const CLIENT_ASSERTION_TYP: &str = "client-authentication+jwt";

impl Providers<'_> {
    /// A token warrant mints for a federation: issued by warrant for
    /// `audience`, naming the agent, its environment and user, living at
    /// most 5 minutes and never past the task.
    pub(crate) fn federation_token(
        &self,
        audience: &str,
        subject: &str,
        task: &TaskUse,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, CredentialError> {
        let now = Timestamp::now();
        let c = &task.claims;
        let jti = warrant_host::random::ordered_id("fed_", now.as_millis())
            .map_err(|e| CredentialError::Unavailable(e.to_string()))?;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now.as_secs(),
            "nbf": now.as_secs(),
            "exp": (now.as_secs() + 300).min(c.exp),
            "jti": jti,
            "agent": task.agent.name.as_str(),
            "env": task.agent.env.as_str(),
        });
        if let Some(u) = c.sub.strip_prefix("user:") {
            claims["user"] = json!(u);
        }
        if let Some(o) = claims.as_object_mut() {
            o.extend(extra);
        }
        Ok(self
            .source
            .sign_jwt(super::aws::FEDERATION_JWT_TYP, &claims)?)
    }

    /// An access token by token exchange, cached per minted subject.
    pub(crate) async fn token_exchange(
        &self,
        route: Target<'_>,
        x: &TokenExchange,
        cache: &TokenCache,
        task: &TaskUse,
    ) -> Result<Injected, CredentialError> {
        let agent = task.agent.name.as_str();
        let env = task.agent.env.as_str();
        let user = task.claims.sub.strip_prefix("user:");
        let subject = x.subject.render(agent, env, user);
        let key = json!([subject, agent, env, user]).to_string();
        let t = cache
            .get(&key, |client| async move {
                let token =
                    self.federation_token(&x.token_audience, &subject, task, Default::default())?;
                let body = form(&[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("audience", &x.audience),
                    ("scope", &x.scope),
                    ("requested_token_type", ACCESS_TOKEN_TYPE),
                    ("subject_token", &token),
                    ("subject_token_type", JWT_TOKEN_TYPE),
                ]);
                let req = form_post(&x.token_url, body, None)?;
                let (status, body) =
                    send(&client, req, route.name, "security token service", route.timeout)
                        .await?;
                if !status.is_success() {
                    return Err(CredentialError::Unavailable(format!(
                        "`{}`: the security token service refused the exchange ({status}{}); check the workload identity provider trusts warrant's issuer with audience `{}` and maps subject `{subject}`",
                        route.name,
                        oauth_error(&body),
                        x.token_audience
                    )));
                }
                let (federated, life) = access_token(&body).map_err(|why| {
                    CredentialError::Unavailable(format!(
                        "`{}`: the security token service {why}",
                        route.name
                    ))
                })?;
                let Some((sa, url)) = &x.impersonate else {
                    return Ok(CachedToken::new(
                        federated,
                        format!("token_exchange:{subject} at {}", x.audience),
                        life,
                    ));
                };
                let (token, life) =
                    impersonate(&client, url, &federated, &x.scope, route).await?;
                Ok(CachedToken::new(
                    token,
                    format!("token_exchange:{subject} at {} as {sa}", x.audience),
                    life,
                ))
            })
            .await?;
        let value = Zeroizing::new(x.format.fill(t.token.as_bytes()));
        Ok(Injected {
            header: Some((
                x.header.clone(),
                header_value(&value, "the exchanged access token")?,
            )),
            tls: None,
            sigv4: None,
            echoes: vec![t.token.as_bytes().to_vec()],
            id: format!("{} (expires in {}s)", t.id, t.left()),
        })
    }

    /// A client-credentials token, the client authenticated by a stored
    /// secret or by an assertion warrant signs; one for the route.
    pub(crate) async fn client_credentials(
        &self,
        route: Target<'_>,
        cache: &TokenCache,
    ) -> Result<Injected, CredentialError> {
        let Credential::OAuth2ClientCredentials {
            client_auth,
            header,
            format,
            ..
        } = route.credential
        else {
            return Err(CredentialError::Unavailable("not an OAuth route".into()));
        };
        // The client secret is read for every request, so a rotation or a
        // deletion is seen at once, and its bytes redacted from answers.
        let secret = match client_auth {
            ClientAuth::Secret(name) => Some(shared_secret(self.source, name, route.name).await?),
            ClientAuth::PrivateKeyJwt { .. } => None,
        };
        let held = secret.as_ref().map(|s| s.value.expose());
        let t = cache
            .get("", |client| async move {
                self.request_client_token(&client, route, held).await
            })
            .await?;
        let value = Zeroizing::new(format.fill(t.token.as_bytes()));
        let mut echoes = vec![t.token.as_bytes().to_vec()];
        echoes.extend(held.map(<[u8]>::to_vec));
        Ok(Injected {
            header: Some((
                header.clone(),
                header_value(&value, "the upstream's access token")?,
            )),
            tls: None,
            sigv4: None,
            echoes,
            id: format!("{} (expires in {}s)", t.id, t.left()),
        })
    }

    /// The client-credentials request (RFC 6749 §4.4), the client
    /// authenticated by `client_secret_basic` with `secret`, or by an
    /// assertion warrant signs now.
    async fn request_client_token(
        &self,
        client: &TokenClient,
        route: Target<'_>,
        secret: Option<&[u8]>,
    ) -> Result<CachedToken, CredentialError> {
        let Credential::OAuth2ClientCredentials {
            token_url,
            client_id,
            client_auth,
            scope,
            resource,
            audience,
            ..
        } = route.credential
        else {
            return Err(CredentialError::Unavailable("not an OAuth route".into()));
        };
        let mut pairs = vec![("grant_type", "client_credentials")];
        for (k, v) in [
            ("scope", scope),
            ("resource", resource),
            ("audience", audience),
        ] {
            if let Some(v) = v {
                pairs.push((k, v.as_str()));
            }
        }
        let assertion;
        let (auth, how) = match (client_auth, secret) {
            (ClientAuth::Secret(name), Some(bytes)) => (
                Some(basic_auth(client_id, name, bytes)?),
                format!("via {name}"),
            ),
            (ClientAuth::Secret(_), None) => {
                return Err(CredentialError::Unavailable("no client secret".into()));
            }
            (
                ClientAuth::PrivateKeyJwt {
                    issuer,
                    subject,
                    audience,
                },
                _,
            ) => {
                assertion = self.client_assertion(client_id, *issuer, subject, audience)?;
                pairs.extend([
                    ("client_id", client_id.as_str()),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion.as_str()),
                ]);
                (None, "by private_key_jwt".to_owned())
            }
        };
        let req = form_post(token_url, form(&pairs), auth)?;
        let (status, body) = send(
            client,
            req,
            route.name,
            "OAuth token endpoint",
            route.timeout,
        )
        .await?;
        if !status.is_success() {
            return Err(CredentialError::Unavailable(format!(
                "`{}`: its OAuth token endpoint refused the client credentials ({status}{})",
                route.name,
                oauth_error(&body)
            )));
        }
        let (token, life) = access_token(&body).map_err(|why| {
            CredentialError::Unavailable(format!(
                "`{}`: its OAuth token endpoint {why}",
                route.name
            ))
        })?;
        Ok(CachedToken::new(
            token,
            format!("oauth2:{client_id} {how}"),
            life,
        ))
    }

    /// An RFC 7523 client assertion, signed with warrant's active key (so
    /// the authorization server verifies it with warrant's JWKS), living a
    /// minute, used once.
    fn client_assertion(
        &self,
        client_id: &str,
        issuer: AssertionIssuer,
        subject: &str,
        audience: &str,
    ) -> Result<String, CredentialError> {
        let now = Timestamp::now();
        let jti = warrant_host::random::ordered_id("cas_", now.as_millis())
            .map_err(|e| CredentialError::Unavailable(e.to_string()))?;
        let iss = match issuer {
            AssertionIssuer::ClientId => client_id,
            AssertionIssuer::Broker => self.issuer,
        };
        let claims = json!({
            "iss": iss,
            "sub": subject,
            "aud": audience,
            "iat": now.as_secs(),
            "nbf": now.as_secs(),
            "exp": now.as_secs() + 60,
            "jti": jti,
        });
        Ok(self.source.sign_jwt(CLIENT_ASSERTION_TYP, &claims)?)
    }
}

/// `client_secret_basic` (RFC 6749 §2.3.1): both parts form-encoded.
fn basic_auth(
    client_id: &str,
    name: &warrant_core::secret::SecretName,
    secret: &[u8],
) -> Result<http::HeaderValue, CredentialError> {
    let enc = |s: &[u8]| url::form_urlencoded::byte_serialize(s).collect::<String>();
    let basic = Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(client_id.as_bytes()),
            enc(secret)
        ))
    ));
    let mut auth = http::HeaderValue::from_str(&basic).map_err(|_| {
        CredentialError::Unavailable(format!("client secret `{name}` cannot be sent in a header"))
    })?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// A Google service account's access token for the federated token
/// (`generateAccessToken` of the IAM Credentials API).
async fn impersonate(
    client: &TokenClient,
    url: &url::Url,
    federated: &str,
    scope: &str,
    route: Target<'_>,
) -> Result<(Zeroizing<String>, Duration), CredentialError> {
    let bearer = Zeroizing::new(format!("Bearer {federated}"));
    let mut auth = http::HeaderValue::from_str(&bearer)
        .map_err(|_| CredentialError::Unavailable("the federated token cannot be sent".into()))?;
    auth.set_sensitive(true);
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let body = json!({ "scope": scopes, "lifetime": "3600s" }).to_string();
    let req = http::Request::post(url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::AUTHORIZATION, auth)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CredentialError::Unavailable(e.to_string()))?;
    let (status, body) = send(
        client,
        req,
        route.name,
        "service account impersonation endpoint",
        route.timeout,
    )
    .await?;
    if !status.is_success() {
        return Err(CredentialError::Unavailable(format!(
            "`{}`: the service account's token was refused ({status}); grant the federated principal `roles/iam.workloadIdentityUser` on it",
            route.name
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        CredentialError::Unavailable(format!(
            "`{}`: the impersonation endpoint answered with something that is not JSON",
            route.name
        ))
    })?;
    let token = v
        .get("accessToken")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CredentialError::Unavailable(format!(
                "`{}`: the impersonation endpoint answered without an accessToken",
                route.name
            ))
        })?;
    let life = v
        .get("expireTime")
        .and_then(|t| t.as_str())
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::from_secs(300))
        .clamp(Duration::from_secs(1), Duration::from_secs(86_400));
    Ok((Zeroizing::new(token.to_owned()), life))
}
