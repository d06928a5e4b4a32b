//! Credential providers as written in `warrant.toml` (`credential = { kind =
//! ... }` on a `[[route]]` or `[[mcp_server]]`) and as validated.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;
use warrant_core::secret::SecretName;

use crate::upstream::{Origin, Scheme, is_hop_by_hop};

/// The default lifetime of a `warrant_jwt` credential.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(60);

/// A `credential = { kind = ..., ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawCredential {
    /// A stored secret in a header.
    Secret {
        /// The secret's name.
        secret: String,
        /// The header (default `authorization`).
        header: Option<String>,
        /// The value, with `{secret}` (default `Bearer {secret}` for
        /// `authorization`, `{secret}` otherwise).
        format: Option<String>,
    },
    /// The secret stored for the task token's user.
    PerUserSecret {
        /// The secret's name.
        secret: String,
        /// The header.
        header: Option<String>,
        /// The value template.
        format: Option<String>,
    },
    /// HTTP basic auth from a secret whose value is `user:password`.
    Basic {
        /// The secret's name.
        secret: String,
    },
    /// An OAuth 2 client-credentials token from the upstream's token endpoint.
    Oauth2ClientCredentials {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// The name of the stored client secret.
        client_secret: String,
        /// Scope to request.
        scope: Option<String>,
        /// Audience to request (some servers need it).
        audience: Option<String>,
        /// PEM file of the CAs trusted for the token endpoint.
        ca_file: Option<PathBuf>,
        /// The header (default `authorization`).
        header: Option<String>,
        /// The value, with `{token}` (default `Bearer {token}`).
        format: Option<String>,
    },
    /// A short-lived JWT minted by warrant for this route.
    WarrantJwt {
        /// The header (default `authorization`).
        header: Option<String>,
        /// The value, with `{token}` (default `Bearer {token}`).
        format: Option<String>,
        /// Lifetime (`60s`, at most `5m`).
        ttl: Option<String>,
    },
    /// A client certificate presented in the TLS handshake with the
    /// upstream: a secret holding a PEM certificate chain and its key.
    Mtls {
        /// The secret's name.
        secret: String,
    },
}

/// A header value template with one placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Before the placeholder.
    pub before: String,
    /// After it.
    pub after: String,
}

impl Template {
    fn parse(format: &str, placeholder: &str) -> Result<Self, String> {
        match format.split_once(placeholder) {
            Some((b, a)) if !a.contains(placeholder) => Ok(Self {
                before: b.to_owned(),
                after: a.to_owned(),
            }),
            _ => Err(format!(
                "format `{}` must contain `{placeholder}` exactly once",
                format.escape_debug()
            )),
        }
    }

    /// The header value for `v`.
    pub fn fill(&self, v: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.before.len() + v.len() + self.after.len());
        out.extend_from_slice(self.before.as_bytes());
        out.extend_from_slice(v);
        out.extend_from_slice(self.after.as_bytes());
        out
    }
}

/// A validated credential provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A shared stored secret in `header`.
    Secret {
        /// The secret.
        secret: SecretName,
        /// The header.
        header: HeaderName,
        /// Its value.
        format: Template,
    },
    /// The stored secret of the task's user.
    PerUserSecret {
        /// The secret.
        secret: SecretName,
        /// The header.
        header: HeaderName,
        /// Its value.
        format: Template,
    },
    /// Basic auth from a `user:password` secret.
    Basic {
        /// The secret.
        secret: SecretName,
    },
    /// A cached client-credentials token.
    OAuth2ClientCredentials {
        /// The token endpoint.
        token_url: url::Url,
        /// The client id.
        client_id: String,
        /// The stored client secret.
        client_secret: SecretName,
        /// Scope.
        scope: Option<String>,
        /// Audience.
        audience: Option<String>,
        /// CAs for the token endpoint.
        ca_file: Option<PathBuf>,
        /// The header.
        header: HeaderName,
        /// Its value.
        format: Template,
    },
    /// A JWT minted by warrant, audience-bound to the route.
    WarrantJwt {
        /// The header.
        header: HeaderName,
        /// Its value.
        format: Template,
        /// Its lifetime.
        ttl: Duration,
    },
    /// A client certificate for the upstream's TLS handshake.
    Mtls {
        /// The secret holding the PEM chain and key.
        secret: SecretName,
    },
}

impl Credential {
    /// The kind, as the audit trail and metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "secret",
            Self::PerUserSecret { .. } => "per_user_secret",
            Self::Basic { .. } => "basic",
            Self::OAuth2ClientCredentials { .. } => "oauth2_client_credentials",
            Self::WarrantJwt { .. } => "warrant_jwt",
            Self::Mtls { .. } => "mtls",
        }
    }

    /// Whether what reaches the upstream lives minutes, not months: a token
    /// warrant signs or fetches per use. A stored key, password or
    /// certificate sent as it is is a standing credential.
    pub fn is_ephemeral(&self) -> bool {
        matches!(
            self,
            Self::OAuth2ClientCredentials { .. } | Self::WarrantJwt { .. }
        )
    }

    /// Whether the edge signs each request itself (AWS SigV4), replacing
    /// the agent's signature.
    pub fn signs_requests(&self) -> bool {
        false
    }

    /// The CA file trusted for the credential's own endpoint (an OAuth
    /// token endpoint), if any: a file whose content decides where the
    /// client secret may be sent, so it is held to the same trust as the
    /// configuration.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        match self {
            Self::OAuth2ClientCredentials { ca_file, .. } => ca_file.as_deref(),
            _ => None,
        }
    }

    /// The header the credential goes in (none for a client certificate).
    pub fn header(&self) -> Option<HeaderName> {
        match self {
            Self::Secret { header, .. }
            | Self::PerUserSecret { header, .. }
            | Self::OAuth2ClientCredentials { header, .. }
            | Self::WarrantJwt { header, .. } => Some(header.clone()),
            Self::Basic { .. } => Some(http::header::AUTHORIZATION),
            Self::Mtls { .. } => None,
        }
    }
}

pub(crate) fn header_name(v: Option<&str>, key: &str) -> Result<HeaderName, String> {
    let v = v.unwrap_or("authorization");
    let h = HeaderName::from_bytes(v.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{key} `{}` is not a header name", v.escape_debug()))?;
    if is_hop_by_hop(&h) || h == http::header::HOST || h == http::header::CONTENT_LENGTH {
        return Err(format!("{key} `{h}` is a header the proxy manages itself"));
    }
    Ok(h)
}

fn secret_name(v: &str, key: &str) -> Result<SecretName, String> {
    SecretName::new(v).map_err(|e| format!("{key}: {e}"))
}

fn template(
    format: Option<&str>,
    header: &HeaderName,
    placeholder: &str,
) -> Result<Template, String> {
    let default = if header == http::header::AUTHORIZATION {
        format!("Bearer {placeholder}")
    } else {
        placeholder.to_owned()
    };
    let f = format.unwrap_or(&default);
    if f.chars().any(char::is_control) {
        return Err("format must not contain control characters".into());
    }
    Template::parse(f, placeholder)
}

impl RawCredential {
    /// Validates a credential (`allow_plaintext` also admits an http token
    /// endpoint beyond loopback; `resolve` places relative paths).
    pub fn build(
        self,
        allow_plaintext: bool,
        resolve: &impl Fn(PathBuf) -> PathBuf,
    ) -> Result<Credential, String> {
        Ok(match self {
            RawCredential::Secret {
                secret,
                header,
                format,
            } => {
                let header = header_name(header.as_deref(), "credential.header")?;
                Credential::Secret {
                    secret: secret_name(&secret, "credential.secret")?,
                    format: template(format.as_deref(), &header, "{secret}")?,
                    header,
                }
            }
            RawCredential::PerUserSecret {
                secret,
                header,
                format,
            } => {
                let header = header_name(header.as_deref(), "credential.header")?;
                Credential::PerUserSecret {
                    secret: secret_name(&secret, "credential.secret")?,
                    format: template(format.as_deref(), &header, "{secret}")?,
                    header,
                }
            }
            RawCredential::Basic { secret } => Credential::Basic {
                secret: secret_name(&secret, "credential.secret")?,
            },
            RawCredential::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                audience,
                ca_file,
                header,
                format,
            } => {
                let o = Origin::parse(&token_url, "credential.token_url")?;
                if o.scheme == Scheme::Http && !o.is_loopback() && !allow_plaintext {
                    return Err(format!(
                        "credential.token_url `{}` is plain http to a host that is not loopback; use https",
                        crate::upstream::shown_url(&token_url)
                    ));
                }
                if client_id.is_empty() || client_id.chars().any(char::is_control) {
                    return Err("credential.client_id must be set".into());
                }
                let header = header_name(header.as_deref(), "credential.header")?;
                Credential::OAuth2ClientCredentials {
                    token_url: url::Url::parse(&token_url).map_err(|e| e.to_string())?,
                    client_id,
                    client_secret: secret_name(&client_secret, "credential.client_secret")?,
                    scope,
                    audience,
                    ca_file: ca_file.map(resolve),
                    format: template(format.as_deref(), &header, "{token}")?,
                    header,
                }
            }
            RawCredential::WarrantJwt {
                header,
                format,
                ttl,
            } => {
                let header = header_name(header.as_deref(), "credential.header")?;
                Credential::WarrantJwt {
                    format: template(format.as_deref(), &header, "{token}")?,
                    header,
                    ttl: duration(
                        ttl.as_deref(),
                        "credential.ttl",
                        DEFAULT_JWT_TTL,
                        Duration::from_secs(300),
                    )?,
                }
            }
            RawCredential::Mtls { secret } => Credential::Mtls {
                secret: secret_name(&secret, "credential.secret")?,
            },
        })
    }
}

pub(crate) fn duration(
    v: Option<&str>,
    key: &str,
    default: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let Some(v) = v else { return Ok(default) };
    let d = humantime::parse_duration(v)
        .map_err(|_| format!("{key} `{}` is not a duration like `30s`", v.escape_debug()))?;
    if d.is_zero() || d > max {
        return Err(format!(
            "{key} `{v}` must be more than 0 and at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}
