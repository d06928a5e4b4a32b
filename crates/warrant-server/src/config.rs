//! Configuration: `warrant.toml`, `WARRANT_*` variables and flags.
//!
//! Two stages. [`RawConfig`] is what the TOML file says, with unknown keys
//! refused. [`Settings`] holds what flags and the environment say (the binary
//! fills it with clap). [`Config::build`] layers them (flag or environment
//! first, then the file, then the default), validates every value, and names
//! the key and the file in every error. Every default is safe: listeners bind
//! to loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
pub use warrant_control::token::UserIssuer;
use warrant_core::TrustDomain;
use warrant_core::keys::Alg;
use warrant_core::text::shown_url;
use warrant_core::time::Ttl;

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./warrant-data";
/// The default API listener.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8700";
/// The default edge listener (egress proxy and MCP gateway).
pub const DEFAULT_EDGE_ADDR: &str = "127.0.0.1:8701";
/// The default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "warrant.local";
/// The default delegation depth limit.
pub const DEFAULT_MAX_DELEGATION_DEPTH: u32 = 4;

/// What `warrant.toml` may say. Keys are the contract in DESIGN §8.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the store, keys and sockets live.
    pub data_dir: Option<PathBuf>,
    /// The store: `sqlite` (in the data directory) or a `postgres://` URL.
    pub store: Option<String>,
    /// PEM CA certificate(s) for the PostgreSQL server's TLS certificate.
    pub store_ca_file: Option<PathBuf>,
    /// The API listener (OAuth, discovery, admin over HTTP).
    pub api_addr: Option<String>,
    /// The edge listener (egress proxy, MCP gateway).
    pub edge_addr: Option<String>,
    /// The SPIFFE trust domain.
    pub trust_domain: Option<String>,
    /// The issuer URL in tokens and discovery.
    pub issuer: Option<String>,
    /// Where Cedar policies live.
    pub policy_dir: Option<PathBuf>,
    /// The longest delegation chain allowed.
    pub max_delegation_depth: Option<u32>,
    /// The algorithm of newly generated signing keys.
    pub signing_alg: Option<String>,
    /// Platforms whose JWTs attest agents (the OIDC attestor).
    #[serde(default)]
    pub trust_provider: Vec<RawTrustProvider>,
    /// Identity providers whose user tokens agents may exchange.
    #[serde(default)]
    pub user_issuer: Vec<RawUserIssuer>,
    /// Egress proxy routes.
    #[serde(default)]
    pub route: Vec<warrant_edge::proxy::route::RawRoute>,
    /// MCP servers behind the gateway.
    #[serde(default)]
    pub mcp_server: Vec<warrant_edge::mcp::config::RawMcpServer>,
    /// `Host` values (`name:port`) the edge listener answers to, besides its
    /// own address and `localhost`.
    pub edge_hosts: Option<Vec<String>>,
    /// Connection caps and timeouts of the listeners.
    #[serde(default)]
    pub limits: RawLimits,
    /// Step-up approvals: holding, expiry, separation of duties, webhooks.
    #[serde(default)]
    pub approvals: RawApprovals,
    /// Sinks the audit trail is streamed to as it is committed.
    #[serde(default)]
    pub audit_export: Vec<RawAuditExport>,
    /// Anomaly detection: thresholds and what crossing them does.
    #[serde(default)]
    pub anomaly: RawAnomaly,
    /// The web console under `/console`.
    #[serde(default)]
    pub console: RawConsole,
    /// TLS for the API and edge listeners.
    pub tls: Option<RawTls>,
    /// Serve plain HTTP beyond loopback (TLS terminated by a proxy in
    /// front). Without it, a listener beyond loopback needs `[tls]`.
    pub insecure_http: Option<bool>,
}

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key, owner-only.
    pub key_file: PathBuf,
}

/// A TOML error as line, column and what is wrong, without the parser's
/// quote of the line: a line may hold a secret (a webhook URL is one), and
/// errors reach logs and the caller of a reload.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML parse error at line {line}, column {col}: {message}")
        }
        None => format!("TOML parse error: {message}"),
    }
}

/// `[approvals]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// How long the proxy and the MCP gateway hold a request waiting for
    /// approval before answering "pending" (default `0s`, at most `120s`).
    pub hold: Option<String>,
    /// How long a request waits for a decision (default `1h`, `1m` to `7d`).
    pub pending_ttl: Option<String>,
    /// The most approvals one agent may have pending (default 20).
    pub max_pending_per_agent: Option<u32>,
    /// The most one user (or task) of an agent may have pending (default 5).
    pub max_pending_per_requester: Option<u32>,
    /// An approver never decides a request made for themselves (default true).
    pub separation_of_duties: Option<bool>,
    /// Where new pending approvals are announced.
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
}

/// `[console]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// Serve the console under `/console` (default true).
    pub enabled: Option<bool>,
    /// How long a session lasts at most (default `8h`, `10s` to `24h`; never
    /// past the admin token's own expiry).
    pub session_ttl: Option<String>,
    /// A session unused this long ends (default `30m`, `5s` to `24h`).
    pub idle_timeout: Option<String>,
    /// How often the overview's identity-health figures are sampled
    /// (default `1m`, `1s` to `1h`).
    pub health_sample: Option<String>,
    /// Signing in to the console through a `[[user_issuer]]` (OpenID
    /// Connect authorization code with PKCE), groups mapped to roles.
    pub oidc: Option<RawConsoleOidc>,
}

/// `[console.oidc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsoleOidc {
    /// The `issuer` of a `[[user_issuer]]`: its keys verify the ID tokens,
    /// its claims name the person and their groups.
    pub issuer: String,
    /// The console's client id at the provider (the ID token's audience).
    pub client_id: String,
    /// The environment variable holding the client secret (none: a public
    /// client, PKCE only).
    pub client_secret_env: Option<String>,
    /// Scopes asked for (default `["openid"]`; `openid` is always asked).
    pub scopes: Option<Vec<String>>,
    /// Groups whose members sign in as `admin`.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Groups whose members sign in as `approver`.
    #[serde(default)]
    pub approver_groups: Vec<String>,
    /// Groups whose members sign in as `auditor`.
    #[serde(default)]
    pub auditor_groups: Vec<String>,
    /// The provider's authorization endpoint (default: from its discovery
    /// document).
    pub authorization_endpoint: Option<String>,
    /// Its token endpoint (default: from its discovery document).
    pub token_endpoint: Option<String>,
}

/// Signing in to the console through an OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOidc {
    /// The user issuer's `iss`.
    pub issuer: String,
    /// The console's client id.
    pub client_id: String,
    /// The environment variable holding the client secret, if any (read
    /// when used, never kept in the configuration).
    pub client_secret_env: Option<String>,
    /// Scopes, `openid` first.
    pub scopes: Vec<String>,
    /// Groups by the role they give (admin, approver, auditor).
    pub admin_groups: Vec<String>,
    /// See `admin_groups`.
    pub approver_groups: Vec<String>,
    /// See `admin_groups`.
    pub auditor_groups: Vec<String>,
    /// Overrides of the discovered endpoints.
    pub authorization_endpoint: Option<String>,
    /// See `authorization_endpoint`.
    pub token_endpoint: Option<String>,
}

/// The web console's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Served at all.
    pub enabled: bool,
    /// A session's longest life.
    pub session_ttl: std::time::Duration,
    /// A session's longest idle time.
    pub idle_timeout: std::time::Duration,
    /// How often health is sampled for the overview's charts.
    pub health_sample: std::time::Duration,
    /// Signing in through an OpenID Connect provider, when configured.
    pub oidc: Option<ConsoleOidc>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl: std::time::Duration::from_secs(8 * 3600),
            idle_timeout: std::time::Duration::from_secs(30 * 60),
            health_sample: std::time::Duration::from_secs(60),
            oidc: None,
        }
    }
}

impl ConsoleOidc {
    /// The role `groups` give, the strongest first; `None`: no role.
    pub fn role_of(&self, groups: &[String]) -> Option<warrant_core::admin::Role> {
        use warrant_core::admin::Role;
        let member = |of: &[String]| groups.iter().any(|g| of.contains(g));
        if member(&self.admin_groups) {
            Some(Role::Admin)
        } else if member(&self.approver_groups) {
            Some(Role::Approver)
        } else if member(&self.auditor_groups) {
            Some(Role::Auditor)
        } else {
            None
        }
    }
}

impl Config {
    /// The role a person signed in by single sign-on has under this
    /// configuration: the same issuer, client and namespace they signed in
    /// with, and a group the mapping names; `None` ends their session.
    pub fn console_role(
        &self,
        issuer: &str,
        client_id: &str,
        namespace: &str,
        groups: &[String],
    ) -> Option<warrant_core::admin::Role> {
        let oidc = self.console.oidc.as_ref()?;
        let user_issuer = self
            .user_issuers
            .iter()
            .find(|u| u.provider.issuer == issuer)?;
        (self.console.enabled
            && oidc.issuer == issuer
            && oidc.client_id == client_id
            && user_issuer.namespace.as_str() == namespace)
            .then(|| oidc.role_of(groups))
            .flatten()
    }
}

fn console_oidc(
    raw: RawConsoleOidc,
    issuers: &[UserIssuer],
    origin: &str,
) -> Result<ConsoleOidc, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: "console.oidc",
        origin: origin.to_owned(),
        message,
    };
    if !issuers.iter().any(|u| u.provider.issuer == raw.issuer) {
        return Err(bad(format!(
            "issuer `{}` is no [[user_issuer]]; sign-in goes through a configured user issuer",
            raw.issuer.escape_debug()
        )));
    }
    if raw.client_id.trim().is_empty() || raw.client_id.chars().any(char::is_control) {
        return Err(bad("client_id must be given".into()));
    }
    if raw.admin_groups.is_empty()
        && raw.approver_groups.is_empty()
        && raw.auditor_groups.is_empty()
    {
        return Err(bad(
            "name the groups that give a role (admin_groups, approver_groups, auditor_groups); without them nobody could sign in".into(),
        ));
    }
    if let Some(v) = &raw.client_secret_env
        && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(bad(
            "client_secret_env must name an environment variable".into()
        ));
    }
    for (what, u) in [
        ("authorization_endpoint", &raw.authorization_endpoint),
        ("token_endpoint", &raw.token_endpoint),
    ] {
        if let Some(u) = u {
            let parsed = url::Url::parse(u).map_err(|_| bad(format!("{what} is not a URL")))?;
            warrant_control::outbound::check_destination(&parsed, what).map_err(bad)?;
        }
    }
    let mut scopes = vec!["openid".to_owned()];
    for s in raw.scopes.unwrap_or_default() {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!("scope `{}` is not a scope", s.escape_debug())));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    Ok(ConsoleOidc {
        issuer: raw.issuer,
        client_id: raw.client_id,
        client_secret_env: raw.client_secret_env,
        scopes,
        admin_groups: raw.admin_groups,
        approver_groups: raw.approver_groups,
        auditor_groups: raw.auditor_groups,
        authorization_endpoint: raw.authorization_endpoint,
        token_endpoint: raw.token_endpoint,
    })
}

fn console(
    raw: RawConsole,
    issuers: &[UserIssuer],
    origin: &str,
) -> Result<ConsoleConfig, ConfigError> {
    use std::time::Duration;
    let d = ConsoleConfig::default();
    let within =
        |key: &str, value: Option<String>, default: Duration, low: Duration, high: Duration| {
            let Some(v) = value else { return Ok(default) };
            match humantime::parse_duration(&v) {
                Ok(t) if (low..=high).contains(&t) => Ok(t),
                _ => Err(ConfigError::Invalid {
                    key: "console",
                    origin: origin.to_owned(),
                    message: format!(
                        "{key} `{}` must be a duration from {} to {}",
                        v.escape_debug(),
                        humantime::format_duration(low),
                        humantime::format_duration(high)
                    ),
                }),
            }
        };
    let hour = Duration::from_secs(3600);
    let oidc = raw
        .oidc
        .map(|o| console_oidc(o, issuers, origin))
        .transpose()?;
    Ok(ConsoleConfig {
        oidc,
        enabled: raw.enabled.unwrap_or(d.enabled),
        session_ttl: within(
            "session_ttl",
            raw.session_ttl,
            d.session_ttl,
            Duration::from_secs(10),
            24 * hour,
        )?,
        idle_timeout: within(
            "idle_timeout",
            raw.idle_timeout,
            d.idle_timeout,
            Duration::from_secs(5),
            24 * hour,
        )?,
        health_sample: within(
            "health_sample",
            raw.health_sample,
            d.health_sample,
            Duration::from_secs(1),
            hour,
        )?,
    })
}

/// `[anomaly]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnomaly {
    /// Score decisions (default true).
    pub enabled: Option<bool>,
    /// Decisions a profile needs before "never seen before" counts (default 50).
    pub warmup: Option<u32>,
    /// Alert at this score (default 60).
    pub alert_at: Option<i64>,
    /// Quarantine the instance at this score (default: never).
    pub quarantine_instance_at: Option<i64>,
    /// Quarantine the agent at this score (default: never).
    pub quarantine_agent_at: Option<i64>,
    /// Where alerts are announced.
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
}

fn anomaly(
    raw: RawAnomaly,
    origin: &str,
) -> Result<warrant_control::anomaly::AnomalyConfig, ConfigError> {
    use warrant_control::anomaly::AnomalyConfig;
    let bad = |message: String| ConfigError::Invalid {
        key: "anomaly",
        origin: origin.to_owned(),
        message,
    };
    let d = AnomalyConfig::default();
    let score = |v: Option<i64>, key: &str| match v {
        Some(n) if !(1..=100).contains(&n) => {
            Err(bad(format!("{key} = {n} must be a score from 1 to 100")))
        }
        v => Ok(v),
    };
    let alert_at = score(raw.alert_at, "alert_at")?.unwrap_or(d.alert_at);
    let quarantine_instance_at = score(raw.quarantine_instance_at, "quarantine_instance_at")?;
    let quarantine_agent_at = score(raw.quarantine_agent_at, "quarantine_agent_at")?;
    for (k, v) in [
        ("quarantine_instance_at", quarantine_instance_at),
        ("quarantine_agent_at", quarantine_agent_at),
    ] {
        if let Some(v) = v
            && v < alert_at
        {
            return Err(bad(format!(
                "{k} = {v} is below alert_at = {alert_at}: a quarantine is always alerted first"
            )));
        }
    }
    let warmup = match raw.warmup {
        None => d.warmup,
        Some(n) if (1..=1_000_000).contains(&n) => n,
        Some(n) => return Err(bad(format!("warmup = {n} must be from 1 to 1000000"))),
    };
    let webhooks = raw
        .webhook
        .iter()
        .map(|w| {
            warrant_control::approvals::Webhook::parse(&w.url, w.format.as_deref())
                .map_err(|e| bad(format!("webhook: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AnomalyConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        warmup,
        alert_at,
        quarantine_instance_at,
        quarantine_agent_at,
        webhooks,
    })
}

/// `[[audit_export]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditExport {
    /// A name for metrics and the position file (letters, digits, `-`, `_`).
    pub name: String,
    /// `file`, `syslog` or `http`.
    pub kind: String,
    /// file: where.
    pub path: Option<PathBuf>,
    /// file: rotate before this size (default 100 MiB).
    pub max_bytes: Option<u64>,
    /// file: rotated files kept (default 5).
    pub keep: Option<u32>,
    /// syslog: `udp://host:port`, `tcp://host:port` or `unix:/dev/log`.
    pub address: Option<String>,
    /// syslog: APP-NAME (default `warrant`).
    pub app_name: Option<String>,
    /// http: where batches are POSTed.
    pub url: Option<String>,
    /// http: records per request (default 500, at most 10000).
    pub batch: Option<u32>,
    /// http: an environment variable holding a bearer token for the receiver.
    pub bearer_token_env: Option<String>,
}

fn audit_exports(
    raw: Vec<RawAuditExport>,
    layer: &Layer<'_>,
) -> Result<Vec<warrant_control::export::ExportSink>, ConfigError> {
    use warrant_control::export::{ExportSink, SyslogTransport, Target};
    let mut out: Vec<ExportSink> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let origin = layer.table_origin("audit_export", i);
        let bad = |message: String| ConfigError::Invalid {
            key: "audit_export",
            origin: origin.clone(),
            message,
        };
        let ok_name = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_name {
            return Err(bad(format!(
                "name `{}` must be 1-64 letters, digits, `-` or `_`",
                r.name.escape_debug()
            )));
        }
        if out.iter().any(|o| o.name == r.name) {
            return Err(bad(format!("name `{}` is used twice", r.name)));
        }
        let only = |allowed: &[&str]| -> Result<(), ConfigError> {
            let given = [
                ("path", r.path.is_some()),
                ("max_bytes", r.max_bytes.is_some()),
                ("keep", r.keep.is_some()),
                ("address", r.address.is_some()),
                ("app_name", r.app_name.is_some()),
                ("url", r.url.is_some()),
                ("batch", r.batch.is_some()),
                ("bearer_token_env", r.bearer_token_env.is_some()),
            ];
            match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
                Some((k, _)) => Err(bad(format!(
                    "`{k}` does not apply to kind = \"{}\"",
                    r.kind
                ))),
                None => Ok(()),
            }
        };
        let target = match r.kind.as_str() {
            "file" => {
                only(&["path", "max_bytes", "keep"])?;
                let path = r
                    .path
                    .clone()
                    .ok_or_else(|| bad("kind = \"file\" needs `path`".into()))?;
                let max_bytes = r.max_bytes.unwrap_or(100 * 1024 * 1024);
                if !(4096..=1 << 40).contains(&max_bytes) {
                    return Err(bad(format!(
                        "max_bytes = {max_bytes} must be from 4096 to 2^40"
                    )));
                }
                let keep = r.keep.unwrap_or(5);
                if keep > 1000 {
                    return Err(bad(format!("keep = {keep} must be at most 1000")));
                }
                Target::File {
                    path: layer.file_path(path),
                    max_bytes,
                    keep,
                }
            }
            "syslog" => {
                only(&["address", "app_name"])?;
                let a = r
                    .address
                    .as_deref()
                    .ok_or_else(|| bad("kind = \"syslog\" needs `address`".into()))?;
                let sock = |s: &str| {
                    s.parse::<SocketAddr>()
                        .map_err(|_| bad(format!("`{}` is not an ip:port", s.escape_debug())))
                };
                let transport = if let Some(s) = a.strip_prefix("udp://") {
                    SyslogTransport::Udp(sock(s)?)
                } else if let Some(s) = a.strip_prefix("tcp://") {
                    SyslogTransport::Tcp(sock(s)?)
                } else if let Some(p) = a.strip_prefix("unix:") {
                    SyslogTransport::Unix(PathBuf::from(p))
                } else {
                    return Err(bad(format!(
                        "address `{}` must be udp://ip:port, tcp://ip:port or unix:/path",
                        a.escape_debug()
                    )));
                };
                let app_name = r.app_name.clone().unwrap_or_else(|| "warrant".into());
                if app_name.is_empty()
                    || app_name.len() > 48
                    || !app_name.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(bad(
                        "app_name must be 1-48 printable ASCII characters".into()
                    ));
                }
                let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default();
                Target::Syslog {
                    transport,
                    app_name,
                    hostname,
                }
            }
            "http" => {
                only(&["url", "batch", "bearer_token_env"])?;
                let u = r
                    .url
                    .as_deref()
                    .ok_or_else(|| bad("kind = \"http\" needs `url`".into()))?;
                let url =
                    url::Url::parse(u).map_err(|e| bad(format!("the url does not parse ({e})")))?;
                warrant_control::outbound::check_destination(&url, "the audit trail")
                    .map_err(bad)?;
                let batch = r.batch.unwrap_or(500);
                if !(1..=10_000).contains(&batch) {
                    return Err(bad(format!("batch = {batch} must be from 1 to 10000")));
                }
                let bearer = match &r.bearer_token_env {
                    None => None,
                    Some(var) => match std::env::var(var) {
                        Ok(v) if !v.is_empty() => Some(std::sync::Arc::from(v.as_str())),
                        _ => {
                            return Err(bad(format!(
                                "bearer_token_env names `{}`, which is not set",
                                var.escape_debug()
                            )));
                        }
                    },
                };
                Target::Http { url, batch, bearer }
            }
            other => {
                return Err(bad(format!(
                    "kind `{}` is unknown; use \"file\", \"syslog\" or \"http\"",
                    other.escape_debug()
                )));
            }
        };
        out.push(ExportSink {
            name: r.name,
            target,
        });
    }
    Ok(out)
}

/// `[[approvals.webhook]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// `https://...` (or `http://` to loopback).
    pub url: String,
    /// `json` (default) or `slack`.
    pub format: Option<String>,
}

fn approvals(
    raw: RawApprovals,
    origin: &str,
) -> Result<warrant_control::approvals::ApprovalConfig, ConfigError> {
    use warrant_control::approvals::{ApprovalConfig, MAX_HOLD, Webhook};
    let bad = |message: String| ConfigError::Invalid {
        key: "approvals",
        origin: origin.to_owned(),
        message,
    };
    let d = ApprovalConfig::default();
    let hold = match raw.hold {
        None => d.hold,
        Some(t) => match humantime::parse_duration(&t) {
            Ok(h) if h <= MAX_HOLD => h,
            _ => {
                return Err(bad(format!(
                    "hold `{}` must be a duration from 0s to 120s, like `30s`",
                    t.escape_debug()
                )));
            }
        },
    };
    let pending_ttl = match raw.pending_ttl {
        None => d.pending_ttl,
        Some(t) => t
            .parse::<Ttl>()
            .and_then(|v| {
                v.within(
                    "pending_ttl",
                    Ttl::from_secs(60),
                    Ttl::from_secs(7 * 86_400),
                )
            })
            .map_err(|e| bad(e.to_string()))?,
    };
    let max_pending_per_agent = match raw.max_pending_per_agent {
        None => d.max_pending_per_agent,
        Some(n) if (1..=10_000).contains(&n) => n,
        Some(n) => {
            return Err(bad(format!(
                "max_pending_per_agent = {n} must be from 1 to 10000"
            )));
        }
    };
    let webhooks = raw
        .webhook
        .iter()
        .map(|w| {
            Webhook::parse(&w.url, w.format.as_deref()).map_err(|e| bad(format!("webhook: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_pending_per_requester = match raw.max_pending_per_requester {
        None => d.max_pending_per_requester.min(max_pending_per_agent),
        Some(n) if (1..=max_pending_per_agent).contains(&n) => n,
        Some(n) => {
            return Err(bad(format!(
                "max_pending_per_requester = {n} must be from 1 to max_pending_per_agent ({max_pending_per_agent})"
            )));
        }
    };
    Ok(ApprovalConfig {
        hold,
        pending_ttl,
        max_pending_per_agent,
        max_pending_per_requester,
        separation_of_duties: raw.separation_of_duties.unwrap_or(d.separation_of_duties),
        webhooks,
    })
}

/// `[limits]` as written: each listener's connection cap, and timeouts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Open connections of the API listener (default 1024).
    pub api_connections: Option<usize>,
    /// Open connections of the edge listener (default 4096).
    pub edge_connections: Option<usize>,
    /// Open connections of the agent socket (default 256).
    pub agent_connections: Option<usize>,
    /// Open connections of the agent socket per local user (default 32).
    pub agent_connections_per_user: Option<usize>,
    /// Open connections of the admin socket (default 64).
    pub admin_connections: Option<usize>,
    /// To send a request head; also how long an idle connection is kept
    /// (default `10s`).
    pub header_timeout: Option<String>,
    /// To answer a request on the API, admin and agent listeners (default
    /// `30s`).
    pub request_timeout: Option<String>,
}

/// Validated `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// The API listener's.
    pub api: crate::listener::Limits,
    /// The edge listener's.
    pub edge: crate::listener::Limits,
    /// The agent socket's.
    pub agent: crate::listener::Limits,
    /// The admin socket's.
    pub admin: crate::listener::Limits,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        let l = |n: usize, request: Option<std::time::Duration>| crate::listener::Limits {
            max_connections: n,
            per_user: None,
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: request,
        };
        let t = Some(std::time::Duration::from_secs(30));
        Self {
            api: l(1024, t),
            edge: l(4096, None),
            agent: crate::listener::Limits {
                per_user: Some(32),
                ..l(256, t)
            },
            admin: l(64, t),
        }
    }
}

fn limits(raw: RawLimits, origin: &str) -> Result<ListenerLimits, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: "limits",
        origin: origin.to_owned(),
        message,
    };
    let duration = |v: Option<String>, key: &str, default: std::time::Duration| match v {
        None => Ok(default),
        Some(t) => match humantime::parse_duration(&t) {
            Ok(d)
                if d >= std::time::Duration::from_secs(1)
                    && d <= std::time::Duration::from_secs(3600) =>
            {
                Ok(d)
            }
            _ => Err(bad(format!(
                "{key} `{}` must be a duration from 1s to 1h, like `10s`",
                t.escape_debug()
            ))),
        },
    };
    let count = |v: Option<usize>, key: &str, default: usize| match v {
        None => Ok(default),
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Some(n) => Err(bad(format!("{key} = {n} must be from 1 to 1000000"))),
    };
    let d = ListenerLimits::default();
    let header = duration(raw.header_timeout, "header_timeout", d.api.header_timeout)?;
    let request = duration(
        raw.request_timeout,
        "request_timeout",
        std::time::Duration::from_secs(30),
    )?;
    let l = |n: usize, request: Option<std::time::Duration>| crate::listener::Limits {
        max_connections: n,
        per_user: None,
        header_timeout: header,
        request_timeout: request,
    };
    let agent_per_user = count(
        raw.agent_connections_per_user,
        "agent_connections_per_user",
        d.agent.per_user.unwrap_or(32),
    )?;
    Ok(ListenerLimits {
        api: l(
            count(
                raw.api_connections,
                "api_connections",
                d.api.max_connections,
            )?,
            Some(request),
        ),
        edge: l(
            count(
                raw.edge_connections,
                "edge_connections",
                d.edge.max_connections,
            )?,
            None,
        ),
        agent: crate::listener::Limits {
            per_user: Some(agent_per_user),
            ..l(
                count(
                    raw.agent_connections,
                    "agent_connections",
                    d.agent.max_connections,
                )?,
                Some(request),
            )
        },
        admin: l(
            count(
                raw.admin_connections,
                "admin_connections",
                d.admin.max_connections,
            )?,
            Some(request),
        ),
    })
}

/// One `[[user_issuer]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserIssuer {
    /// The `iss` of its tokens, exactly.
    pub issuer: String,
    /// Where to fetch its JWKS.
    pub jwks_uri: Option<String>,
    /// A local copy of its JWKS.
    pub jwks_file: Option<PathBuf>,
    /// The audience its tokens must carry for warrant.
    pub audience: String,
    /// The claim naming the user (default `sub`).
    pub subject_claim: Option<String>,
    /// The claim listing the user's groups (default `groups`).
    pub groups_claim: Option<String>,
    /// The namespace its users and groups are qualified with
    /// (`<namespace>/<subject>`; default: the issuer's host). Two issuers
    /// given the same namespace on purpose share their users.
    pub namespace: Option<String>,
}

/// One `[[trust_provider]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustProvider {
    /// A name for the audit trail.
    pub name: String,
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// Where to fetch its JWKS.
    pub jwks_uri: Option<String>,
    /// A local copy of its JWKS.
    pub jwks_file: Option<PathBuf>,
    /// The audience its tokens must carry for warrant.
    pub audience: String,
}

/// Values from flags and the environment; `None` where neither gave one.
/// `Debug` shows the store URL without its credentials.
#[derive(Clone, Default)]
pub struct Settings {
    /// `--config` / `WARRANT_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--data-dir` / `WARRANT_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--store` / `WARRANT_STORE`.
    pub store: Option<String>,
    /// `--store-ca-file` / `WARRANT_STORE_CA_FILE`.
    pub store_ca_file: Option<PathBuf>,
    /// `--tls-cert` / `WARRANT_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `WARRANT_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
    /// `--insecure-http` / `WARRANT_INSECURE_HTTP`.
    pub insecure_http: bool,
    /// `--api-addr` / `WARRANT_API_ADDR`.
    pub api_addr: Option<String>,
    /// `--edge-addr` / `WARRANT_EDGE_ADDR`.
    pub edge_addr: Option<String>,
    /// `--trust-domain` / `WARRANT_TRUST_DOMAIN`.
    pub trust_domain: Option<String>,
    /// `--issuer` / `WARRANT_ISSUER`.
    pub issuer: Option<String>,
    /// `--policy-dir` / `WARRANT_POLICY_DIR`.
    pub policy_dir: Option<PathBuf>,
    /// `--max-delegation-depth` / `WARRANT_MAX_DELEGATION_DEPTH`.
    pub max_delegation_depth: Option<u32>,
    /// `--signing-alg` / `WARRANT_SIGNING_ALG`.
    pub signing_alg: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so a new one cannot be forgotten here.
        let Self {
            config,
            data_dir,
            store,
            store_ca_file,
            tls_cert,
            tls_key,
            insecure_http,
            api_addr,
            edge_addr,
            trust_domain,
            issuer,
            policy_dir,
            max_delegation_depth,
            signing_alg,
        } = self;
        f.debug_struct("Settings")
            .field("config", config)
            .field("data_dir", data_dir)
            .field(
                "store",
                &store.as_deref().map(warrant_store::shown_postgres_url),
            )
            .field("store_ca_file", store_ca_file)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("insecure_http", insecure_http)
            .field("api_addr", api_addr)
            .field("edge_addr", edge_addr)
            .field("trust_domain", trust_domain)
            .field("issuer", issuer)
            .field("policy_dir", policy_dir)
            .field("max_delegation_depth", max_delegation_depth)
            .field("signing_alg", signing_alg)
            .finish()
    }
}

/// A configuration problem, naming the key and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so not also a `source()`).
        error: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key.
    #[error("config file `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, key).
        message: String,
    },
    /// A value is not acceptable.
    #[error("{key} (from {origin}): {message}")]
    Invalid {
        /// The key, as written in the file (`api_addr`).
        key: &'static str,
        /// `--flag or WARRANT_VAR`, or the file.
        origin: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// Which store a broker uses.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// SQLite in the data directory: one broker.
    Sqlite,
    /// PostgreSQL, shared by several brokers. The URL may carry a password,
    /// so it is never shown whole ([`StoreChoice::shown`]).
    Postgres(String),
}

impl Config {
    /// `https` when the listeners serve TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

impl StoreChoice {
    /// What to show: `sqlite`, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite => "sqlite".into(),
            Self::Postgres(url) => warrant_store::shown_postgres_url(url),
        }
    }
}

impl std::fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store, keys and sockets live.
    pub data_dir: PathBuf,
    /// The store.
    pub store: StoreChoice,
    /// The CA to trust for the PostgreSQL server's certificate.
    pub store_ca_file: Option<PathBuf>,
    /// TLS for the API and edge listeners.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Plain HTTP beyond loopback is allowed (TLS terminated in front).
    pub insecure_http: bool,
    /// The API listener.
    pub api_addr: SocketAddr,
    /// The edge listener.
    pub edge_addr: SocketAddr,
    /// The SPIFFE trust domain.
    pub trust_domain: TrustDomain,
    /// The issuer; `None` means `http://<bound api address>`.
    pub issuer: Option<String>,
    /// Where Cedar policies live.
    pub policy_dir: PathBuf,
    /// The longest delegation chain allowed.
    pub max_delegation_depth: u32,
    /// The algorithm of newly generated signing keys.
    pub signing_alg: Alg,
    /// Trusted OIDC issuers.
    pub trust_providers: Vec<warrant_control::attest::oidc::TrustProvider>,
    /// Trusted user issuers.
    pub user_issuers: Vec<UserIssuer>,
    /// Egress proxy routes.
    pub routes: Vec<warrant_edge::proxy::route::Route>,
    /// Extra `Host` values the edge answers to.
    pub edge_hosts: Vec<String>,
    /// MCP servers behind the gateway.
    pub mcp_servers: Vec<warrant_edge::mcp::config::McpServerConfig>,
    /// Connection caps and timeouts of the listeners.
    pub limits: ListenerLimits,
    /// Step-up approvals.
    pub approvals: warrant_control::approvals::ApprovalConfig,
    /// Audit export sinks.
    pub audit_export: Vec<warrant_control::export::ExportSink>,
    /// Anomaly detection.
    pub anomaly: warrant_control::anomaly::AnomalyConfig,
    /// The web console.
    pub console: ConsoleConfig,
    /// The built-in development user issuer is on (`serve --dev`).
    pub dev: bool,
    /// The config file used, if any.
    pub config_file: Option<PathBuf>,
    /// The flags and environment it was built from (a reload builds it
    /// again from them and the file).
    pub settings: Settings,
    /// The SHA-256 of the config file's bytes, if there is a file.
    pub digest: Option<String>,
    /// The key-encryption key from `WARRANT_KEK`, if given; otherwise
    /// `<data-dir>/kek` is used (and created on first start).
    pub kek: Option<std::sync::Arc<warrant_token::Kek>>,
}

struct Layer<'a> {
    file: Option<&'a Path>,
    /// The line of each `[[table]]` header in the file, in order.
    tables: TableLines,
}

/// Where each `[[route]]`, `[[mcp_server]]`, `[[trust_provider]]` and
/// `[[user_issuer]]` header is in a config file (1-based lines, in order),
/// so an error names the line to fix.
#[derive(Debug, Default, Clone)]
pub struct TableLines(std::collections::HashMap<String, Vec<usize>>);

impl TableLines {
    /// Finds the array-of-tables headers in `text`.
    pub fn of(text: &str) -> Self {
        let mut map: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            if let Some(rest) = l.strip_prefix("[[")
                && let Some((name, _)) = rest.split_once("]]")
            {
                map.entry(name.trim().to_owned()).or_default().push(n + 1);
            }
        }
        Self(map)
    }
}

impl Layer<'_> {
    /// `[[table]] #n at <file>:<line>` (or `in <file>` when the line is
    /// not known).
    fn table_origin(&self, table: &str, i: usize) -> String {
        let file = self
            .file
            .map_or("the config".into(), |f| f.display().to_string());
        match self.tables.0.get(table).and_then(|l| l.get(i)) {
            Some(line) if self.file.is_some() => format!("[[{table}]] #{} at {file}:{line}", i + 1),
            _ => format!("[[{table}]] #{} in {file}", i + 1),
        }
    }

    fn origin(&self, from_settings: bool, flag: &str, env: &str) -> String {
        match (from_settings, self.file) {
            (true, _) => format!("{flag} or {env}"),
            (false, Some(f)) => format!("config file `{}`", f.display()),
            (false, None) => "the default".to_owned(),
        }
    }

    /// A relative path in the file is relative to the file's directory.
    fn file_path(&self, p: PathBuf) -> PathBuf {
        match self.file.and_then(Path::parent) {
            Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
            _ => p,
        }
    }
}

fn parse_addr(key: &'static str, origin: String, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse::<SocketAddr>()
        .map_err(|_| ConfigError::Invalid {
            key,
            origin,
            message: format!(
                "`{}` is not an IP address and port; write it like `127.0.0.1:8700`",
                value.escape_debug()
            ),
        })
}

/// Checks an issuer URL (RFC 8414 §2: https, no query, no fragment; http is
/// allowed for local use) and removes a trailing slash.
pub fn parse_issuer(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value)
        .map_err(|e| format!("`{}` is not a URL ({e})", shown_url(value).escape_debug()))?;
    let original = value;
    let shown = shown_url(value);
    let value = shown.as_str();
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!(
            "`{value}` must be an https:// URL (http:// for local use)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{value}` must not have a query or fragment (RFC 8414 §2)"
        ));
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{value}` must name a host and carry no credentials"
        ));
    }
    Ok(original.trim_end_matches('/').to_owned())
}

impl Config {
    /// Reads the file named in `settings` (if any) and builds the configuration.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        let raw = match &settings.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.clone(),
                    error,
                })?;
                let raw = toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: parse_message(&text, &e),
                })?;
                (raw, TableLines::of(&text), Some(digest(text.as_bytes())))
            }
            None => (RawConfig::default(), TableLines::default(), None),
        };
        let (raw, tables, digest) = raw;
        let mut config = Self::build_at(settings, raw, tables)?;
        config.digest = digest;
        Ok(config)
    }

    /// Layers `settings` over `raw` over the defaults and validates.
    pub fn build(settings: &Settings, raw: RawConfig) -> Result<Self, ConfigError> {
        Self::build_at(settings, raw, TableLines::default())
    }

    /// [`build`](Self::build), naming lines from `tables` in errors.
    fn build_at(
        settings: &Settings,
        raw: RawConfig,
        tables: TableLines,
    ) -> Result<Self, ConfigError> {
        let layer = Layer {
            file: settings.config.as_deref(),
            tables,
        };

        let data_dir = match (&settings.data_dir, raw.data_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => layer.file_path(d),
            (None, None) => PathBuf::from(DEFAULT_DATA_DIR),
        };

        let store = {
            let origin = layer.origin(settings.store.is_some(), "--store", "WARRANT_STORE");
            match settings.store.clone().or(raw.store).as_deref() {
                None | Some("sqlite") => StoreChoice::Sqlite,
                Some(url) => {
                    warrant_store::check_postgres_url(url).map_err(|message| {
                        ConfigError::Invalid {
                            key: "store",
                            origin,
                            message,
                        }
                    })?;
                    StoreChoice::Postgres(url.to_owned())
                }
            }
        };

        let tls = match (&settings.tls_cert, &settings.tls_key, raw.tls) {
            (Some(cert), Some(key), _) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, Some(t)) => Some(crate::tls::TlsFiles {
                cert: layer.file_path(t.cert_file),
                key: layer.file_path(t.key_file),
            }),
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "tls",
                    origin: "--tls-cert or WARRANT_TLS_CERT, --tls-key or WARRANT_TLS_KEY".into(),
                    message: "give both the certificate and the key, or neither".into(),
                });
            }
        };
        let insecure_http = settings.insecure_http || raw.insecure_http.unwrap_or(false);
        let store_ca_file = match (&settings.store_ca_file, raw.store_ca_file) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(f)) => Some(layer.file_path(f)),
            (None, None) => None,
        };

        let api_addr = {
            let origin = layer.origin(
                settings.api_addr.is_some(),
                "--api-addr",
                "WARRANT_API_ADDR",
            );
            let v = settings
                .api_addr
                .clone()
                .or(raw.api_addr)
                .unwrap_or_else(|| DEFAULT_API_ADDR.to_owned());
            parse_addr("api_addr", origin, &v)?
        };
        let edge_addr = {
            let origin = layer.origin(
                settings.edge_addr.is_some(),
                "--edge-addr",
                "WARRANT_EDGE_ADDR",
            );
            let v = settings
                .edge_addr
                .clone()
                .or(raw.edge_addr)
                .unwrap_or_else(|| DEFAULT_EDGE_ADDR.to_owned());
            parse_addr("edge_addr", origin, &v)?
        };
        if api_addr == edge_addr && api_addr.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "edge_addr",
                origin: layer.origin(
                    settings.edge_addr.is_some(),
                    "--edge-addr",
                    "WARRANT_EDGE_ADDR",
                ),
                message: format!(
                    "`{edge_addr}` is also the api_addr; the two listeners need different ports"
                ),
            });
        }

        let trust_domain = {
            let origin = layer.origin(
                settings.trust_domain.is_some(),
                "--trust-domain",
                "WARRANT_TRUST_DOMAIN",
            );
            let v = settings
                .trust_domain
                .clone()
                .or(raw.trust_domain)
                .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
            TrustDomain::new(v).map_err(|e| ConfigError::Invalid {
                key: "trust_domain",
                origin,
                message: e.to_string(),
            })?
        };

        let issuer = match settings.issuer.clone().or(raw.issuer) {
            None => None,
            Some(v) => {
                let origin = layer.origin(settings.issuer.is_some(), "--issuer", "WARRANT_ISSUER");
                Some(parse_issuer(&v).map_err(|message| ConfigError::Invalid {
                    key: "issuer",
                    origin,
                    message,
                })?)
            }
        };

        let policy_dir = match (&settings.policy_dir, raw.policy_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => layer.file_path(d),
            (None, None) => data_dir.join("policies"),
        };

        let max_delegation_depth = {
            let origin = layer.origin(
                settings.max_delegation_depth.is_some(),
                "--max-delegation-depth",
                "WARRANT_MAX_DELEGATION_DEPTH",
            );
            let v = settings
                .max_delegation_depth
                .or(raw.max_delegation_depth)
                .unwrap_or(DEFAULT_MAX_DELEGATION_DEPTH);
            if !(1..=16).contains(&v) {
                return Err(ConfigError::Invalid {
                    key: "max_delegation_depth",
                    origin,
                    message: format!("{v} is out of range; use 1 to 16"),
                });
            }
            v
        };

        let signing_alg = {
            let origin = layer.origin(
                settings.signing_alg.is_some(),
                "--signing-alg",
                "WARRANT_SIGNING_ALG",
            );
            match settings.signing_alg.clone().or(raw.signing_alg) {
                None => Alg::default(),
                Some(v) => v.parse::<Alg>().map_err(|message| ConfigError::Invalid {
                    key: "signing_alg",
                    origin,
                    message,
                })?,
            }
        };

        let trust_providers = trust_providers(&layer, "trust_provider", raw.trust_provider)?;
        let user_issuers = user_issuers(&layer, raw.user_issuer)?;
        let file_name = layer
            .file
            .map_or("the config".into(), |f| f.display().to_string());
        let mut routes: Vec<warrant_edge::proxy::route::Route> = Vec::new();
        for (i, r) in raw.route.into_iter().enumerate() {
            let origin = layer.table_origin("route", i);
            let built =
                r.build(|p| layer.file_path(p))
                    .map_err(|message| ConfigError::Invalid {
                        key: "route",
                        origin: origin.clone(),
                        message,
                    })?;
            if routes.iter().any(|o| o.name == built.name) {
                return Err(ConfigError::Invalid {
                    key: "route",
                    origin,
                    message: format!("name `{}` is used twice", built.name),
                });
            }
            routes.push(built);
        }
        let mut mcp_servers: Vec<warrant_edge::mcp::config::McpServerConfig> = Vec::new();
        for (i, m) in raw.mcp_server.into_iter().enumerate() {
            let origin = layer.table_origin("mcp_server", i);
            let built =
                m.build(|p| layer.file_path(p))
                    .map_err(|message| ConfigError::Invalid {
                        key: "mcp_server",
                        origin: origin.clone(),
                        message,
                    })?;
            if mcp_servers.iter().any(|o| o.name == built.name) {
                return Err(ConfigError::Invalid {
                    key: "mcp_server",
                    origin,
                    message: format!("name `{}` is used twice", built.name),
                });
            }
            mcp_servers.push(built);
        }
        let edge_hosts = raw.edge_hosts.unwrap_or_default();
        if let Some(bad) = edge_hosts.iter().find(|h| {
            h.is_empty()
                || h.contains('/')
                || h.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(ConfigError::Invalid {
                key: "edge_hosts",
                origin: format!("config file `{file_name}`"),
                message: format!("`{}` is not a host[:port]", bad.escape_debug()),
            });
        }

        let limits = limits(raw.limits, &format!("[limits] in {file_name}"))?;
        let approvals = approvals(raw.approvals, &format!("[approvals] in {file_name}"))?;
        let audit_export = audit_exports(raw.audit_export, &layer)?;
        let anomaly = anomaly(raw.anomaly, &format!("[anomaly] in {file_name}"))?;
        let console = console(
            raw.console,
            &user_issuers,
            &format!("[console] in {file_name}"),
        )?;
        Ok(Self {
            anomaly,
            console,
            limits,
            approvals,
            audit_export,
            data_dir,
            store,
            store_ca_file,
            tls,
            insecure_http,
            api_addr,
            edge_addr,
            trust_domain,
            issuer,
            policy_dir,
            max_delegation_depth,
            signing_alg,
            trust_providers,
            user_issuers,
            routes,
            edge_hosts,
            mcp_servers,
            dev: false,
            config_file: settings.config.clone(),
            settings: settings.clone(),
            digest: None,
            kek: None,
        })
    }
}

fn trust_providers(
    layer: &Layer<'_>,
    table: &str,
    raw: Vec<RawTrustProvider>,
) -> Result<Vec<warrant_control::attest::oidc::TrustProvider>, ConfigError> {
    use warrant_control::attest::oidc::{JwksSource, TrustProvider};
    let mut out: Vec<TrustProvider> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let origin = layer.table_origin(table, i);
        let bad = |message: String| ConfigError::Invalid {
            key: "trust_provider",
            origin: origin.clone(),
            message,
        };
        if p.name.is_empty()
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(format!(
                "name `{}` must be lower-case letters, digits and hyphens",
                p.name.escape_debug()
            )));
        }
        if out.iter().any(|o| o.name == p.name) {
            return Err(bad(format!("name `{}` is used twice", p.name)));
        }
        let issuer_ok = (p.issuer.starts_with("https://") || p.issuer.starts_with("http://"))
            && url::Url::parse(&p.issuer).is_ok_and(|u| {
                u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
        if !issuer_ok {
            return Err(bad(format!(
                "issuer `{}` must be the URL in the tokens' `iss` claim, with no user name, password, query or fragment",
                shown_url(&p.issuer).escape_debug()
            )));
        }
        if p.audience.is_empty() {
            return Err(bad(
                "audience must be set: the `aud` the platform puts in tokens meant for warrant"
                    .into(),
            ));
        }
        let jwks = match (p.jwks_uri, p.jwks_file) {
            (Some(u), None)
                if (u.starts_with("https://") || u.starts_with("http://"))
                    && url::Url::parse(&u)
                        .is_ok_and(|x| x.username().is_empty() && x.password().is_none()) =>
            {
                JwksSource::Uri(u)
            }
            (Some(u), None) => {
                return Err(bad(format!(
                    "jwks_uri `{}` must be an http(s) URL with no user name or password",
                    shown_url(&u).escape_debug()
                )));
            }
            (None, Some(f)) => JwksSource::File(layer.file_path(f)),
            _ => return Err(bad("set exactly one of jwks_uri and jwks_file".into())),
        };
        out.push(TrustProvider {
            name: p.name,
            issuer: p.issuer,
            jwks,
            audience: p.audience,
        });
    }
    Ok(out)
}

fn user_issuers(
    layer: &Layer<'_>,
    raw: Vec<RawUserIssuer>,
) -> Result<Vec<UserIssuer>, ConfigError> {
    let as_providers = raw
        .iter()
        .enumerate()
        .map(|(i, u)| RawTrustProvider {
            name: format!("user-issuer-{}", i + 1),
            issuer: u.issuer.clone(),
            jwks_uri: u.jwks_uri.clone(),
            jwks_file: u.jwks_file.clone(),
            audience: u.audience.clone(),
        })
        .collect();
    let providers = trust_providers(layer, "user_issuer", as_providers).map_err(|e| match e {
        ConfigError::Invalid {
            message, origin, ..
        } => ConfigError::Invalid {
            key: "user_issuer",
            origin,
            message,
        },
        other => other,
    })?;
    let mut out: Vec<(UserIssuer, bool)> = Vec::new();
    for (provider, u) in providers.into_iter().zip(raw) {
        let bad = |message: String| ConfigError::Invalid {
            key: "user_issuer",
            origin: layer.origin(false, "", ""),
            message,
        };
        let explicit = u.namespace.is_some();
        let namespace = match &u.namespace {
            Some(n) => warrant_core::user::Namespace::new(n)
                .map_err(|e| bad(format!("[[user_issuer]] `{}`: {e}", shown_url(&u.issuer))))?,
            None => warrant_core::user::Namespace::of_issuer(&u.issuer).map_err(|e| {
                bad(format!(
                    "[[user_issuer]] `{}`: its issuer gives no usable default namespace ({e}); set `namespace`",
                    shown_url(&u.issuer)
                ))
            })?,
        };
        if let Some((other, other_explicit)) = out.iter().find(|(o, _)| o.namespace == namespace)
            && !(explicit && *other_explicit)
        {
            return Err(bad(format!(
                "[[user_issuer]] `{}`: its users would share the namespace `{namespace}` with those of `{}`; set a distinct `namespace` on each, or the same `namespace` on both to treat their users as one on purpose",
                u.issuer, other.provider.issuer
            )));
        }
        out.push((
            UserIssuer {
                provider,
                subject_claim: u.subject_claim.unwrap_or_else(|| "sub".into()),
                groups_claim: u.groups_claim.unwrap_or_else(|| "groups".into()),
                namespace,
            },
            explicit,
        ));
    }
    Ok(out.into_iter().map(|(u, _)| u).collect())
}

#[cfg(test)]
mod tests;

/// The hex SHA-256 of `bytes` (what `sha256sum` prints).
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
