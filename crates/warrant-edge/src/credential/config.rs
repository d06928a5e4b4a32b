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
    /// An OAuth 2 client-credentials token, the client authenticated by a
    /// JWT warrant signs with its own key (RFC 7523 `private_key_jwt`): no
    /// client secret exists anywhere.
    Oauth2PrivateKeyJwt {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// Scope to request.
        scope: Option<String>,
        /// Resource indicator to request (RFC 8707).
        resource: Option<String>,
        /// Audience to request (some servers need it).
        audience: Option<String>,
        /// The assertion's `aud` (default: the token endpoint).
        assertion_audience: Option<String>,
        /// The assertion's `iss`: `client_id` (RFC 7523 client
        /// authentication, the default) or `broker` (warrant's issuer, as
        /// federated credentials such as Entra ID's expect).
        assertion_issuer: Option<String>,
        /// The assertion's `sub` (default: the client id).
        assertion_subject: Option<String>,
        /// PEM file of the CAs trusted for the token endpoint.
        ca_file: Option<PathBuf>,
        /// The header (default `authorization`).
        header: Option<String>,
        /// The value, with `{token}` (default `Bearer {token}`).
        format: Option<String>,
    },
    /// An access token from a security token service by RFC 8693 token
    /// exchange of a token warrant mints (Google Cloud's workload identity
    /// federation; optionally then a service account's token).
    TokenExchange {
        /// The STS token endpoint (default Google's).
        token_url: Option<String>,
        /// The `audience` parameter (for Google: the workload identity
        /// provider's resource name, `//iam.googleapis.com/projects/...`).
        audience: String,
        /// Scope to request (default Google's `cloud-platform`).
        scope: Option<String>,
        /// The `aud` of the token warrant mints (default: `audience`, with
        /// `https:` before a leading `//`).
        token_audience: Option<String>,
        /// Its `sub`, a template (default `agent:{agent}`).
        subject: Option<String>,
        /// A Google service account to impersonate with the federated token.
        service_account: Option<String>,
        /// Where to ask for the service account's token (default Google's
        /// IAM Credentials API; `{service_account}` is replaced).
        impersonation_url: Option<String>,
        /// PEM file of the CAs trusted for those endpoints.
        ca_file: Option<PathBuf>,
        /// The header (default `authorization`).
        header: Option<String>,
        /// The value, with `{token}` (default `Bearer {token}`).
        format: Option<String>,
    },
    /// AWS temporary credentials by `AssumeRoleWithWebIdentity` with a token
    /// warrant mints; every request re-signed with SigV4 at the last hop.
    AwsSts {
        /// The role to assume.
        role_arn: String,
        /// The signing region.
        region: String,
        /// The signing service name (`s3`, `sqs`, `dynamodb`, ...).
        service: String,
        /// The STS endpoint (default `https://sts.<region>.amazonaws.com`).
        sts_url: Option<String>,
        /// The `aud` of the web identity token (default `sts.amazonaws.com`).
        token_audience: Option<String>,
        /// Its `sub`, a template (default `agent:{agent}`).
        subject: Option<String>,
        /// How long the credentials last (`1h`; 15 minutes to 12 hours).
        session_duration: Option<String>,
        /// Task scope -> file of an IAM policy: the session policy is the
        /// union of the statements of the task's scopes.
        #[serde(default)]
        session_policies: std::collections::BTreeMap<String, PathBuf>,
        /// Session tags naming the agent, its environment and the user
        /// (default true; the role's trust policy must allow
        /// `sts:TagSession`).
        session_tags: Option<bool>,
        /// S3 requests that change access or retention beyond objects'
        /// data (`acl`, `policy`, `lifecycle`, `tagging`, `delete`, ...)
        /// the route admits; none by default.
        #[serde(default)]
        s3_control: Vec<String>,
        /// For services whose operation is named in `X-Amz-Target` or an
        /// `Action` parameter (SQS, DynamoDB, SNS, ...): the operations the
        /// route admits (`["SendMessage", "ReceiveMessage"]`).
        actions: Option<Vec<String>>,
        /// PEM file of the CAs trusted for the STS endpoint.
        ca_file: Option<PathBuf>,
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
#[expect(
    clippy::large_enum_variant,
    reason = "built once per route at start or reload and read by reference"
)]
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
        /// How the client authenticates.
        client_auth: ClientAuth,
        /// Scope.
        scope: Option<String>,
        /// Resource indicator.
        resource: Option<String>,
        /// Audience.
        audience: Option<String>,
        /// CAs for the token endpoint.
        ca_file: Option<PathBuf>,
        /// The header.
        header: HeaderName,
        /// Its value.
        format: Template,
    },
    /// An access token by RFC 8693 exchange of a token warrant mints.
    TokenExchange(Box<TokenExchange>),
    /// AWS temporary credentials; requests signed with SigV4.
    AwsSts(Box<AwsSts>),
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

/// How an OAuth client authenticates at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic` with a stored secret.
    Secret(SecretName),
    /// `private_key_jwt`: an assertion warrant signs.
    PrivateKeyJwt {
        /// Its `iss`.
        issuer: AssertionIssuer,
        /// Its `sub`.
        subject: String,
        /// Its `aud`.
        audience: String,
    },
}

/// Who a client assertion says issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionIssuer {
    /// The client itself (RFC 7523 §3 for client authentication).
    ClientId,
    /// warrant's issuer URL (federated credentials).
    Broker,
}

/// The `sub` of a token warrant mints for a federation: a template over
/// the acting agent, its environment and the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate(String);

/// The placeholders a subject template may use.
const SUBJECT_PLACEHOLDERS: [&str; 3] = ["{agent}", "{env}", "{user}"];

impl SubjectTemplate {
    /// The default: the agent's name.
    pub const DEFAULT: &'static str = "agent:{agent}";

    fn parse(v: Option<&str>, key: &str) -> Result<Self, String> {
        let v = v.unwrap_or(Self::DEFAULT);
        if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
            return Err(format!(
                "{key} must be 1 to 200 characters, none a control character"
            ));
        }
        let mut rest = v.to_owned();
        for p in SUBJECT_PLACEHOLDERS {
            rest = rest.replace(p, "");
        }
        if rest.contains('{') || rest.contains('}') {
            return Err(format!(
                "{key} `{}` may use only {}",
                v.escape_debug(),
                SUBJECT_PLACEHOLDERS.join(", ")
            ));
        }
        // A user id is the identity provider's to choose, so it cannot be
        // allowed to spell what follows it: a trust policy matching
        // `agent:billing:user:*` must not be met by a user named
        // `x:agent:billing`. Agent and environment names are slugs.
        if let Some(i) = v.find("{user}")
            && (i + "{user}".len() != v.len() || v.matches("{user}").count() > 1)
        {
            return Err(format!(
                "{key} `{}`: `{{user}}` must come last (a user id may contain any character)",
                v.escape_debug()
            ));
        }
        Ok(Self(v.to_owned()))
    }

    /// The subject for this agent and user (`-` when the agent acts for
    /// itself).
    pub fn render(&self, agent: &str, env: &str, user: Option<&str>) -> String {
        self.0
            .replace("{agent}", agent)
            .replace("{env}", env)
            .replace("{user}", user.unwrap_or("-"))
    }
}

/// A validated `token_exchange` credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchange {
    /// The STS token endpoint.
    pub token_url: url::Url,
    /// The `audience` parameter.
    pub audience: String,
    /// The `scope` parameter.
    pub scope: String,
    /// The minted token's `aud`.
    pub token_audience: String,
    /// The minted token's `sub`.
    pub subject: SubjectTemplate,
    /// A service account to impersonate, and where.
    pub impersonate: Option<(String, url::Url)>,
    /// CAs for those endpoints.
    pub ca_file: Option<PathBuf>,
    /// The header.
    pub header: HeaderName,
    /// Its value.
    pub format: Template,
}

/// A validated `aws_sts` credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSts {
    /// The role.
    pub role_arn: String,
    /// The signing region.
    pub region: String,
    /// The signing service.
    pub service: String,
    /// The STS endpoint.
    pub sts_url: url::Url,
    /// The web identity token's `aud`.
    pub token_audience: String,
    /// Its `sub`.
    pub subject: SubjectTemplate,
    /// `DurationSeconds`.
    pub session_duration: Duration,
    /// Scope -> the statements of its session policy.
    pub session_policies: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    /// The files they were read from (held to the configuration's trust).
    pub session_policy_files: Vec<PathBuf>,
    /// Whether to ask for session tags.
    pub session_tags: bool,
    /// The S3 control subresources admitted (lower case).
    pub s3_control: Vec<String>,
    /// The operations admitted, when the route limits them.
    pub actions: Option<Vec<String>>,
    /// CAs for the STS endpoint.
    pub ca_file: Option<PathBuf>,
}

/// S3 subresources (query keys) and the requests they make that change
/// who may read, keep or delete data, or how; each names the request
/// headers that do the same on an object write. A route admits them only
/// when its `s3_control` lists them.
pub const S3_CONTROL: &[(&str, &[&str])] = &[
    ("acl", &["x-amz-acl", "x-amz-grant-"]),
    ("policy", &[]),
    ("policystatus", &[]),
    ("publicaccessblock", &[]),
    ("ownershipcontrols", &[]),
    ("cors", &[]),
    ("website", &["x-amz-website-redirect-location"]),
    ("lifecycle", &[]),
    ("replication", &[]),
    ("versioning", &[]),
    ("object-lock", &["x-amz-object-lock-"]),
    ("retention", &["x-amz-bypass-governance-retention"]),
    ("legal-hold", &[]),
    ("tagging", &["x-amz-tagging", "x-amz-tagging-directive"]),
    // (Creating or deleting a bucket is a request on the bucket's own path,
    // one segment, with no query key; its headers set ownership and lock.)
    (
        "createbucket",
        &["x-amz-object-ownership", "x-amz-bucket-object-lock-enabled"],
    ),
    ("deletebucket", &[]),
    ("abac", &[]),
    ("encryption", &[]),
    ("logging", &[]),
    ("notification", &[]),
    ("accelerate", &[]),
    ("requestpayment", &[]),
    ("inventory", &[]),
    ("metrics", &[]),
    ("analytics", &[]),
    ("intelligent-tiering", &[]),
    ("metadatatable", &[]),
    ("metadataconfiguration", &[]),
    ("metadatainventorytable", &[]),
    ("metadatajournaltable", &[]),
    ("restore", &[]),
    ("renameobject", &[]),
    ("session", &[]),
    ("delete", &[]),
];

impl Credential {
    /// The kind, as the audit trail and metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "secret",
            Self::PerUserSecret { .. } => "per_user_secret",
            Self::Basic { .. } => "basic",
            Self::OAuth2ClientCredentials {
                client_auth: ClientAuth::PrivateKeyJwt { .. },
                ..
            } => "oauth2_private_key_jwt",
            Self::OAuth2ClientCredentials { .. } => "oauth2_client_credentials",
            Self::TokenExchange(_) => "token_exchange",
            Self::AwsSts(_) => "aws_sts",
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
            Self::OAuth2ClientCredentials { .. }
                | Self::WarrantJwt { .. }
                | Self::TokenExchange(_)
                | Self::AwsSts(_)
        )
    }

    /// Whether the edge signs each request itself (AWS SigV4), replacing
    /// the agent's signature.
    pub fn signs_requests(&self) -> bool {
        matches!(self, Self::AwsSts(_))
    }

    /// The endpoint the credential is fetched from and the CA file trusted
    /// for it, for kinds that fetch one.
    pub fn token_endpoint(&self) -> Option<(&url::Url, Option<&std::path::Path>)> {
        match self {
            Self::OAuth2ClientCredentials {
                token_url, ca_file, ..
            } => Some((token_url, ca_file.as_deref())),
            Self::TokenExchange(t) => Some((&t.token_url, t.ca_file.as_deref())),
            Self::AwsSts(a) => Some((&a.sts_url, a.ca_file.as_deref())),
            _ => None,
        }
    }

    /// The CA file trusted for the credential's own endpoint (an OAuth
    /// token endpoint), if any: a file whose content decides where the
    /// client secret may be sent, so it is held to the same trust as the
    /// configuration.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.token_endpoint().and_then(|(_, ca)| ca)
    }

    /// The AWS session policy files (held to the configuration's trust:
    /// they decide what a session may do).
    pub fn session_policy_files(&self) -> &[PathBuf] {
        match self {
            Self::AwsSts(a) => &a.session_policy_files,
            _ => &[],
        }
    }

    /// The header the credential goes in (none for a client certificate).
    pub fn header(&self) -> Option<HeaderName> {
        match self {
            Self::Secret { header, .. }
            | Self::PerUserSecret { header, .. }
            | Self::OAuth2ClientCredentials { header, .. }
            | Self::WarrantJwt { header, .. } => Some(header.clone()),
            Self::TokenExchange(t) => Some(t.header.clone()),
            Self::Basic { .. } | Self::AwsSts(_) => Some(http::header::AUTHORIZATION),
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
                    client_auth: ClientAuth::Secret(secret_name(
                        &client_secret,
                        "credential.client_secret",
                    )?),
                    scope,
                    resource: None,
                    audience,
                    ca_file: ca_file.map(resolve),
                    format: template(format.as_deref(), &header, "{token}")?,
                    header,
                }
            }
            RawCredential::Oauth2PrivateKeyJwt {
                token_url,
                client_id,
                scope,
                resource,
                audience,
                assertion_audience,
                assertion_issuer,
                assertion_subject,
                ca_file,
                header,
                format,
            } => {
                let token_url = endpoint(&token_url, "credential.token_url", allow_plaintext)?;
                let client_id = plain_text(client_id, "credential.client_id")?;
                let issuer = match assertion_issuer.as_deref() {
                    None | Some("client_id") => AssertionIssuer::ClientId,
                    Some("broker") => AssertionIssuer::Broker,
                    Some(other) => {
                        return Err(format!(
                            "credential.assertion_issuer `{}` must be `client_id` or `broker`",
                            other.escape_debug()
                        ));
                    }
                };
                let header = header_name(header.as_deref(), "credential.header")?;
                Credential::OAuth2ClientCredentials {
                    client_auth: ClientAuth::PrivateKeyJwt {
                        issuer,
                        subject: plain_text(
                            assertion_subject.unwrap_or_else(|| client_id.clone()),
                            "credential.assertion_subject",
                        )?,
                        audience: plain_text(
                            assertion_audience.unwrap_or_else(|| token_url.to_string()),
                            "credential.assertion_audience",
                        )?,
                    },
                    token_url,
                    client_id,
                    scope: scope
                        .map(|s| plain_text(s, "credential.scope"))
                        .transpose()?,
                    resource: resource
                        .map(|s| plain_text(s, "credential.resource"))
                        .transpose()?,
                    audience: audience
                        .map(|s| plain_text(s, "credential.audience"))
                        .transpose()?,
                    ca_file: ca_file.map(resolve),
                    format: template(format.as_deref(), &header, "{token}")?,
                    header,
                }
            }
            RawCredential::TokenExchange {
                token_url,
                audience,
                scope,
                token_audience,
                subject,
                service_account,
                impersonation_url,
                ca_file,
                header,
                format,
            } => {
                let token_url = endpoint(
                    token_url.as_deref().unwrap_or(GOOGLE_STS),
                    "credential.token_url",
                    allow_plaintext,
                )?;
                let audience = plain_text(audience, "credential.audience")?;
                let token_audience = match token_audience {
                    Some(a) => plain_text(a, "credential.token_audience")?,
                    None if audience.starts_with("//") => format!("https:{audience}"),
                    None => audience.clone(),
                };
                let impersonate = match service_account {
                    None if impersonation_url.is_some() => {
                        return Err(
                            "credential.impersonation_url needs credential.service_account".into(),
                        );
                    }
                    None => None,
                    Some(sa) => {
                        if sa.is_empty()
                            || !sa.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'-' | b'_')
                            })
                        {
                            return Err(format!(
                                "credential.service_account `{}` must be a service account's email",
                                sa.escape_debug()
                            ));
                        }
                        let url = impersonation_url
                            .as_deref()
                            .unwrap_or(GOOGLE_IMPERSONATION)
                            .replace("{service_account}", &sa);
                        let url = endpoint(&url, "credential.impersonation_url", allow_plaintext)?;
                        Some((sa, url))
                    }
                };
                let header = header_name(header.as_deref(), "credential.header")?;
                Credential::TokenExchange(Box::new(TokenExchange {
                    token_url,
                    audience,
                    scope: plain_text(
                        scope.unwrap_or_else(|| GOOGLE_SCOPE.to_owned()),
                        "credential.scope",
                    )?,
                    token_audience,
                    subject: SubjectTemplate::parse(subject.as_deref(), "credential.subject")?,
                    impersonate,
                    ca_file: ca_file.map(resolve),
                    format: template(format.as_deref(), &header, "{token}")?,
                    header,
                }))
            }
            RawCredential::AwsSts {
                role_arn,
                region,
                service,
                sts_url,
                token_audience,
                subject,
                session_duration,
                session_policies,
                session_tags,
                s3_control,
                actions,
                ca_file,
            } => {
                let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
                if parts.len() != 6
                    || parts[0] != "arn"
                    || parts[2] != "iam"
                    || !parts[5].starts_with("role/")
                    || role_arn
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(format!(
                        "credential.role_arn `{}` must be a role's ARN, `arn:aws:iam::<account>:role/<name>`",
                        role_arn.escape_debug()
                    ));
                }
                let slug = |v: &str, key: &str| {
                    if !v.is_empty()
                        && v.len() <= 64
                        && v.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    {
                        Ok(v.to_owned())
                    } else {
                        Err(format!(
                            "{key} `{}` must be lower-case letters, digits and `-`",
                            v.escape_debug()
                        ))
                    }
                };
                let region = slug(&region, "credential.region")?;
                let service = slug(&service, "credential.service")?;
                let sts_url = endpoint(
                    &sts_url.unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
                    "credential.sts_url",
                    allow_plaintext,
                )?;
                let session_duration = duration(
                    session_duration.as_deref(),
                    "credential.session_duration",
                    Duration::from_secs(3600),
                    Duration::from_secs(12 * 3600),
                )?;
                if session_duration < Duration::from_secs(900) {
                    return Err(
                        "credential.session_duration must be at least 15m (AWS's minimum)".into(),
                    );
                }
                let mut policies = std::collections::BTreeMap::new();
                let mut files = Vec::new();
                for (scope, file) in session_policies {
                    let file = resolve(file);
                    policies.insert(scope.clone(), policy_statements(&scope, &file)?);
                    files.push(file);
                }
                let s3 = service == "s3" || service.starts_with("s3-");
                let s3_control = s3_control
                    .into_iter()
                    .map(|c| {
                        let c = c.to_ascii_lowercase();
                        if !s3 {
                            Err(format!(
                                "credential.s3_control is for service `s3`, not `{service}`"
                            ))
                        } else if S3_CONTROL.iter().any(|(k, _)| *k == c) {
                            Ok(c)
                        } else {
                            Err(format!(
                                "credential.s3_control: `{}` is not one of {}",
                                c.escape_debug(),
                                S3_CONTROL
                                    .iter()
                                    .map(|(k, _)| *k)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(list) = &actions {
                    if s3 {
                        return Err("credential.actions is for services that name their operation in `X-Amz-Target` or `Action`; S3's requests are limited by the route's `allow` rules and `s3_control`".into());
                    }
                    if list.is_empty()
                        || !list.iter().all(|a| {
                            !a.is_empty()
                                && a.len() <= 128
                                && a.bytes().all(|b| b.is_ascii_alphanumeric())
                        })
                    {
                        return Err(
                            "credential.actions must list operation names such as `SendMessage`"
                                .into(),
                        );
                    }
                }
                Credential::AwsSts(Box::new(AwsSts {
                    role_arn,
                    region,
                    service,
                    sts_url,
                    token_audience: plain_text(
                        token_audience.unwrap_or_else(|| "sts.amazonaws.com".to_owned()),
                        "credential.token_audience",
                    )?,
                    subject: SubjectTemplate::parse(subject.as_deref(), "credential.subject")?,
                    session_duration,
                    session_policies: policies,
                    session_policy_files: files,
                    session_tags: session_tags.unwrap_or(true),
                    s3_control,
                    actions,
                    ca_file: ca_file.map(resolve),
                }))
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

/// Google's security token service.
pub const GOOGLE_STS: &str = "https://sts.googleapis.com/v1/token";
/// Google's IAM Credentials API, for a service account's token.
pub const GOOGLE_IMPERSONATION: &str = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken";
/// The scope Google's own clients ask for.
pub const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// An endpoint a credential is fetched from: https, or http to loopback
/// (or anywhere with `allow_plaintext`).
fn endpoint(v: &str, key: &str, allow_plaintext: bool) -> Result<url::Url, String> {
    let o = Origin::parse(v, key)?;
    if o.scheme == Scheme::Http && !o.is_loopback() && !allow_plaintext {
        return Err(format!(
            "{key} `{}` is plain http to a host that is not loopback; use https",
            crate::upstream::shown_url(v)
        ));
    }
    let u = url::Url::parse(v).map_err(|e| format!("{key}: {e}"))?;
    if !u.username().is_empty() || u.password().is_some() || u.fragment().is_some() {
        return Err(format!(
            "{key} must not carry credentials or a fragment; secrets belong in the secret store"
        ));
    }
    Ok(u)
}

/// A value sent as it is: set, without control characters.
fn plain_text(v: String, key: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 2048 || v.chars().any(char::is_control) {
        return Err(format!("{key} must be set, without control characters"));
    }
    Ok(v)
}

/// The statements of an IAM policy file (one policy document, or a list
/// of statements), for a scope's session policy.
fn policy_statements(
    scope: &str,
    file: &std::path::Path,
) -> Result<Vec<serde_json::Value>, String> {
    let key = format!("credential.session_policies.\"{}\"", scope.escape_debug());
    if scope.is_empty() || scope.contains(char::is_whitespace) {
        return Err(format!("{key}: a scope has no spaces"));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{key}: cannot read `{}`: {e}", file.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{key}: `{}` is not JSON: {e}", file.display()))?;
    let statements = match v {
        serde_json::Value::Object(mut o) => match o.remove("Statement") {
            Some(serde_json::Value::Array(a)) => a,
            Some(s @ serde_json::Value::Object(_)) => vec![s],
            _ => {
                return Err(format!(
                    "{key}: `{}` must be an IAM policy with a `Statement`",
                    file.display()
                ));
            }
        },
        serde_json::Value::Array(a) => a,
        _ => {
            return Err(format!(
                "{key}: `{}` must be an IAM policy with a `Statement`",
                file.display()
            ));
        }
    };
    if statements.is_empty() || !statements.iter().all(serde_json::Value::is_object) {
        return Err(format!("{key}: `{}` has no statements", file.display()));
    }
    Ok(statements)
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
