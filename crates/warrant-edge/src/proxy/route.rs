//! `[[route]]` tables: what the egress proxy may reach and how.
//!
//! [`RawRoute`] is the TOML as written (unknown keys refused); [`Route`] is
//! validated: an upstream origin (https, or http only to a loopback host or
//! with `allow_plaintext = true`), the audience task tokens must carry, where
//! the agent puts its token, `allow` rules, the credential provider and the
//! limits. Everything a request may do is decided from these types.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use serde::Deserialize;
use warrant_core::secret::SecretName;

/// The default most bytes of a request body.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default wait for the upstream's response headers (LLM calls are slow).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The default lifetime of a `warrant_jwt` credential.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(60);

/// Names the edge keeps for itself.
const RESERVED: &[&str] = &[
    "mcp",
    "healthz",
    "readyz",
    "metrics",
    ".well-known",
    "v1",
    "oauth2",
];

/// One `[[route]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The first path segment at the edge: `http://<edge>/<name>/...`.
    pub name: String,
    /// The upstream origin, e.g. `https://api.openai.com`.
    pub upstream: String,
    /// The audience task tokens must carry (default: the upstream).
    pub audience: Option<String>,
    /// Where the agent puts its task token (default `authorization`, as
    /// `Bearer <token>`; any other header carries the bare token).
    pub agent_header: Option<String>,
    /// PEM file of the CAs trusted for this upstream, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Permit `http://` to a host that is not loopback (credentials in clear).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Which methods and paths may pass.
    #[serde(default)]
    pub allow: Vec<RawAllow>,
    /// How the upstream credential is obtained.
    pub credential: RawCredential,
    /// Connect timeout (`10s`).
    pub connect_timeout: Option<String>,
    /// Wait for the response headers (`300s`).
    pub timeout: Option<String>,
    /// The most bytes of a request body.
    pub max_request_bytes: Option<u64>,
}

/// One `allow` rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    /// Methods (`["POST"]`, `["*"]` for any).
    pub methods: Vec<String>,
    /// Path patterns below the route: `*` is one segment's characters,
    /// `/**` at the end is anything below.
    pub paths: Vec<String>,
}

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
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// An upstream origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The scheme.
    pub scheme: Scheme,
    /// The host as written (a name, an IPv4 address, or `[v6]`).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Origin {
    /// `scheme://host[:port]`, default ports left out.
    pub fn as_url(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.authority())
    }

    /// `host[:port]` as a `Host` header says it.
    pub fn authority(&self) -> String {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(crate) fn parse(value: &str, what: &str) -> Result<Self, String> {
        let url = url::Url::parse(value)
            .map_err(|e| format!("{what} `{}` is not a URL ({e})", value.escape_debug()))?;
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            _ => return Err(format!("{what} `{value}` must be an https:// URL")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{what} `{value}` must not carry credentials; the credential provider supplies them"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            None => return Err(format!("{what} `{value}` names no host")),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Self { scheme, host, port })
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
    }
}

/// Methods one rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// Any method (but never CONNECT, which the edge refuses outright).
    Any,
    /// These.
    Only(Vec<Method>),
}

/// One validated `allow` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// Methods.
    pub methods: Methods,
    /// Path patterns.
    pub paths: Vec<String>,
}

impl AllowRule {
    /// Whether the rule admits `method` on `path` (already normalised).
    pub fn admits(&self, method: &Method, path: &str) -> bool {
        let m = match &self.methods {
            Methods::Any => true,
            Methods::Only(list) => list.contains(method),
        };
        m && self.paths.iter().any(|p| path_matches(p, path))
    }
}

/// `*` matches within one segment; a trailing `/**` matches the prefix and
/// anything below it.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/**") {
        if path_matches(prefix, path) {
            return true;
        }
        let segs = prefix.split('/').count();
        let parts: Vec<&str> = path.splitn(segs + 1, '/').collect();
        return parts.len() == segs + 1 && path_matches(prefix, &parts[..segs].join("/"));
    }
    let (ps, xs): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), path.split('/').collect());
    ps.len() == xs.len() && ps.iter().zip(&xs).all(|(p, x)| segment_matches(p, x))
}

/// Whether segment `x` matches pattern `p` (`*`: any run of characters).
/// Greedy with one backtrack point, so at most `|p| * |x|` steps however
/// many `*` a pattern has (trying every split recursively was exponential
/// in them). Byte-wise, which on UTF-8 text gives the same answer as
/// character-wise.
fn segment_matches(p: &str, x: &str) -> bool {
    let (p, x) = (p.as_bytes(), x.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < x.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == x[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
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
        }
    }

    /// The header the credential goes in.
    pub fn header(&self) -> HeaderName {
        match self {
            Self::Secret { header, .. }
            | Self::PerUserSecret { header, .. }
            | Self::OAuth2ClientCredentials { header, .. }
            | Self::WarrantJwt { header, .. } => header.clone(),
            Self::Basic { .. } => http::header::AUTHORIZATION,
        }
    }
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The name (first path segment).
    pub name: String,
    /// Where requests go, and nowhere else.
    pub upstream: Origin,
    /// The audience task tokens must carry.
    pub audience: String,
    /// Where the agent puts its task token.
    pub agent_header: HeaderName,
    /// CAs trusted for the upstream instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// What may pass.
    pub allow: Vec<AllowRule>,
    /// How the upstream credential is obtained.
    pub credential: Credential,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Wait for response headers.
    pub timeout: Duration,
    /// Most bytes of a request body.
    pub max_request_bytes: u64,
}

fn header_name(v: Option<&str>, key: &str) -> Result<HeaderName, String> {
    let v = v.unwrap_or("authorization");
    let h = HeaderName::from_bytes(v.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{key} `{}` is not a header name", v.escape_debug()))?;
    if is_hop_by_hop(&h) || h == http::header::HOST || h == http::header::CONTENT_LENGTH {
        return Err(format!("{key} `{h}` is a header the proxy manages itself"));
    }
    Ok(h)
}

/// Checks a route's or MCP server's name: 1 to 64 lower-case letters,
/// digits, `-` or `_`, starting with a letter or digit (it is a path segment).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{}` must be 1 to 64 lower-case letters, digits, `-` or `_`",
            name.escape_debug()
        ))
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(h: &HeaderName) -> bool {
    matches!(
        h.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn duration(
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
                        "credential.token_url `{token_url}` is plain http to a host that is not loopback; use https"
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
        })
    }
}

impl RawRoute {
    /// Validates; `resolve` makes relative paths relative to the config file.
    pub fn build(self, resolve: impl Fn(PathBuf) -> PathBuf) -> Result<Route, String> {
        let name = self.name;
        check_name(&name)?;
        if RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "name `{name}` is reserved by the edge listener; choose another"
            ));
        }
        let upstream = Origin::parse(&self.upstream, "upstream")?;
        let url = url::Url::parse(&self.upstream).map_err(|e| e.to_string())?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "upstream `{}` must be an origin (scheme, host, port) without a path: the agent's path below /{name}/ is forwarded as it is",
                self.upstream
            ));
        }
        if upstream.scheme == Scheme::Http && !upstream.is_loopback() && !self.allow_plaintext {
            return Err(format!(
                "upstream `{}` is plain http to a host that is not loopback: the credential would cross the network in clear; use https, or set allow_plaintext = true if you accept that",
                self.upstream
            ));
        }
        if self.ca_file.is_some() && upstream.scheme == Scheme::Http {
            return Err("ca_file is set but the upstream is not https".into());
        }
        let audience = self.audience.unwrap_or_else(|| upstream.as_url());
        if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control) {
            return Err("audience must be 1 to 512 characters without control characters".into());
        }
        let agent_header = header_name(self.agent_header.as_deref(), "agent_header")?;
        if self.allow.is_empty() {
            return Err(
                "allow is empty, so nothing could pass; list what may, e.g. allow = [ { methods = [\"POST\"], paths = [\"/v1/chat/completions\"] } ]"
                    .into(),
            );
        }
        let mut allow = Vec::new();
        for (i, r) in self.allow.into_iter().enumerate() {
            let methods = if r.methods.iter().any(|m| m == "*") {
                Methods::Any
            } else {
                let mut list = Vec::new();
                for m in &r.methods {
                    let up = m.to_ascii_uppercase();
                    if up == "CONNECT" {
                        return Err(format!("allow[{i}]: CONNECT is never proxied"));
                    }
                    list.push(Method::from_bytes(up.as_bytes()).map_err(|_| {
                        format!("allow[{i}]: `{}` is not an HTTP method", m.escape_debug())
                    })?);
                }
                if list.is_empty() {
                    return Err(format!("allow[{i}]: methods is empty"));
                }
                Methods::Only(list)
            };
            if r.paths.is_empty() {
                return Err(format!("allow[{i}]: paths is empty"));
            }
            for p in &r.paths {
                let body = p.strip_suffix("/**").unwrap_or(p);
                if !p.starts_with('/')
                    || body.contains("**")
                    || p.split('/').any(|s| s == "." || s == "..")
                    || p.contains('%')
                    || p.contains('?')
                {
                    return Err(format!(
                        "allow[{i}]: path `{}` must start with `/`, use `*` within a segment and `/**` only at the end, with no `.`/`..` segments, `%` or `?`",
                        p.escape_debug()
                    ));
                }
            }
            allow.push(AllowRule {
                methods,
                paths: r.paths,
            });
        }
        let credential = self.credential.build(self.allow_plaintext, &resolve)?;
        Ok(Route {
            name,
            upstream,
            audience,
            agent_header,
            ca_file: self.ca_file.map(&resolve),
            allow,
            credential,
            connect_timeout: duration(
                self.connect_timeout.as_deref(),
                "connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
                Duration::from_secs(120),
            )?,
            timeout: duration(
                self.timeout.as_deref(),
                "timeout",
                DEFAULT_TIMEOUT,
                Duration::from_secs(3600),
            )?,
            max_request_bytes: match self.max_request_bytes {
                None => DEFAULT_MAX_REQUEST_BYTES,
                Some(0) => return Err("max_request_bytes must be more than 0".into()),
                Some(n) => n,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The recursive matcher `segment_matches` replaced: every split tried.
    fn reference(p: &str, x: &str) -> bool {
        match p.split_once('*') {
            None => p == x,
            Some((head, rest)) => x.strip_prefix(head).is_some_and(|tail| {
                (0..=tail.len()).any(|i| tail.is_char_boundary(i) && reference(rest, &tail[i..]))
            }),
        }
    }

    proptest! {
        #[test]
        fn wildcards_match_as_before(p in "[ab*]{0,8}", x in "[ab]{0,10}") {
            prop_assert_eq!(segment_matches(&p, &x), reference(&p, &x));
        }
    }

    /// Found in review: a pattern with many `*` in one segment cost time
    /// exponential in them on a long segment that does not match.
    #[test]
    fn many_wildcards_on_a_long_segment_answer() {
        let x = "a".repeat(5000);
        assert!(!segment_matches("*a*a*a*a*a*a*a*a*b", &x));
        assert!(segment_matches("*a*a*a*a*a*a*a*a*", &x));
    }

    fn raw(extra: &str) -> Result<Route, String> {
        let text = format!(
            "name = \"openai\"\nupstream = \"https://api.openai.com\"\nallow = [ {{ methods = [\"POST\"], paths = [\"/v1/chat/completions\", \"/v1/files/*\", \"/v1/batches/**\"] }} ]\n{extra}"
        );
        let text = if text.contains("credential") {
            text
        } else {
            format!("{text}\ncredential = {{ kind = \"secret\", secret = \"openai-key\" }}\n")
        };
        toml::from_str::<RawRoute>(&text)
            .map_err(|e| e.to_string())?
            .build(|p| p)
    }

    #[test]
    fn a_route_defaults_safely() {
        let r = raw("").unwrap();
        assert_eq!(r.audience, "https://api.openai.com");
        assert_eq!(r.upstream.authority(), "api.openai.com");
        assert_eq!(r.agent_header, http::header::AUTHORIZATION);
        let Credential::Secret { format, .. } = &r.credential else {
            panic!()
        };
        assert_eq!(format.fill(b"k"), b"Bearer k");
        assert_eq!(r.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    }

    #[test]
    fn paths_match_by_segment() {
        let r = raw("").unwrap();
        let post = Method::POST;
        let a = |p: &str| r.allow.iter().any(|x| x.admits(&post, p));
        assert!(a("/v1/chat/completions"));
        assert!(!a("/v1/chat/completions/x"));
        assert!(a("/v1/files/file-1"));
        assert!(!a("/v1/files/a/b"));
        assert!(!a("/v1/files"), "`*` needs a segment");
        assert!(a("/v1/batches"));
        assert!(a("/v1/batches/b/c"));
        assert!(!a("/v1/batchesX"));
        assert!(
            !r.allow
                .iter()
                .any(|x| x.admits(&Method::GET, "/v1/chat/completions"))
        );
        assert!(path_matches("/a/x*y", "/a/xzzy"));
        assert!(!path_matches("/a/x*y", "/a/xzz"));
    }

    #[test]
    fn bad_routes_say_what_to_fix() {
        let e = raw("upstream = \"x\"").unwrap_err();
        assert!(e.contains("duplicate"), "{e}");
        let bad = |t: &str| {
            toml::from_str::<RawRoute>(t)
                .map_err(|e| e.to_string())
                .and_then(|r| r.build(|p| p))
                .unwrap_err()
        };
        let base = "name = \"r\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n";
        for (t, needle) in [
            ("upstream = \"http://api.example.com\"", "plain http"),
            (
                "upstream = \"https://api.example.com/v1\"",
                "without a path",
            ),
            ("upstream = \"https://u:p@api.example.com\"", "credentials"),
            ("upstream = \"ftp://x\"", "https://"),
        ] {
            let e = bad(&format!("{base}{t}\n"));
            assert!(e.contains(needle), "{t}: {e}");
        }
        let e = bad(
            "name = \"mcp\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("reserved"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("allow is empty"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"CONNECT\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("CONNECT"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/a/../b\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("`..`"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\", format = \"Bearer\" }\n",
        );
        assert!(e.contains("{secret}"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"magic\" }\n",
        );
        assert!(e.contains("magic"), "{e}");
        assert!(raw("upstream_x = 1").is_err(), "unknown keys refused");
        let ok = toml::from_str::<RawRoute>("name = \"r\"\nupstream = \"http://127.0.0.1:9\"\nallow = [ { methods = [\"*\"], paths = [\"/**\"] } ]\ncredential = { kind = \"warrant_jwt\" }\n").unwrap().build(|p| p).unwrap();
        assert_eq!(ok.upstream.port, 9);
        assert!(ok.allow[0].admits(&Method::DELETE, "/x/y"));
    }
}
