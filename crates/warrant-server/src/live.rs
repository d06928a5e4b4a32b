//! Live configuration: `warrant reload` and SIGHUP put a changed
//! `warrant.toml` in force without a restart.
//!
//! What reloads: routes, MCP servers, user issuers and trust providers
//! (and, with them, the audiences only task tokens carry). The file is read
//! and validated exactly as at start, every file it names is checked for
//! trust, and every client, upstream and key set is built before anything
//! changes; any problem refuses the whole reload, with file, line and
//! reason, and the running configuration stays. The reload is recorded in
//! the audit trail before it takes effect. Each service then swaps its
//! whole set at once (the edges read theirs once per request), in an order
//! that never lets an identity token be issued for an audience a route or
//! MCP server accepts. Listeners, the data directory, trust domain, issuer,
//! policy directory, delegation depth, signing algorithm, `edge_hosts` and
//! `[limits]` apply at the next start: a reload that changes them says so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use warrant_control::token::UserIssuer;
use warrant_core::api::{Changed, ConfigStatus};
use warrant_core::audit::AuditEvent;
use warrant_core::time::Timestamp;

use crate::config::{Config, ConfigError};
use crate::state::AppState;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load (its message names file, line and reason).
    #[error("the configuration was not reloaded; the running one stays in force: {0}")]
    Invalid(String),
    /// The audit trail cannot record the reload.
    #[error("the audit trail cannot record the reload, so nothing changed")]
    AuditUnavailable,
}

impl From<ConfigError> for ReloadError {
    fn from(e: ConfigError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default)]
pub struct ConfigChanges {
    /// `[[route]]` tables.
    pub routes: Changed,
    /// `[[mcp_server]]` tables.
    pub mcp_servers: Changed,
    /// `[[user_issuer]]` tables, by issuer URL.
    pub user_issuers: Changed,
    /// `[[trust_provider]]` tables.
    pub trust_providers: Changed,
    /// Keys that changed but apply only at the next start.
    pub restart_needed: Vec<String>,
}

/// The audiences only task tokens carry: every route's and MCP server's,
/// and an HTTP MCP server's own URL (the audience of the credentials the
/// gateway mints for it). An identity token is never issued for one.
pub(crate) fn task_audiences(config: &Config, edge_addr: SocketAddr) -> Vec<String> {
    use warrant_edge::mcp::config::Transport;
    config
        .routes
        .iter()
        .map(|r| r.audience.clone())
        .chain(config.mcp_servers.iter().map(|m| {
            m.audience
                .clone()
                .unwrap_or_else(|| format!("{}://{edge_addr}/mcp/{}", config.scheme(), m.name))
        }))
        .chain(
            config
                .mcp_servers
                .iter()
                .filter_map(|m| match &m.transport {
                    Transport::Http { url, .. } => Some(url.to_string()),
                    Transport::Stdio(_) => None,
                }),
        )
        .collect()
}

/// Each route and MCP server has its own audience: a task token for one is
/// never accepted at another (compared as the attestation service compares
/// audiences: case, trailing `/`, default ports and escapes aside).
pub(crate) fn check_audiences(config: &Config, edge_addr: SocketAddr) -> Result<(), String> {
    let owners = config
        .routes
        .iter()
        .map(|r| (format!("route `{}`", r.name), r.audience.clone()))
        .chain(config.mcp_servers.iter().map(|m| {
            (
                format!("MCP server `{}`", m.name),
                m.audience
                    .clone()
                    .unwrap_or_else(|| format!("{}://{edge_addr}/mcp/{}", config.scheme(), m.name)),
            )
        }));
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (who, audience) in owners {
        let key = warrant_control::attest::audience_key(&audience);
        if let Some(other) = seen.insert(key, who.clone()) {
            return Err(format!(
                "{other} and {who} have the same audience `{}`; give each its own `audience`, so a task token for one is never accepted at the other",
                warrant_core::text::shown(&audience, 200)
            ));
        }
    }
    Ok(())
}

/// The configured user issuers, with the development issuer when
/// `serve --dev` (whose users are `dev/<user>`: no configured issuer may
/// take that namespace).
pub(crate) fn with_dev_issuer(
    mut issuers: Vec<UserIssuer>,
    dev: Option<&warrant_control::dev::DevIssuer>,
) -> Result<Vec<UserIssuer>, String> {
    let Some(d) = dev else {
        return Ok(issuers);
    };
    let dev_issuer = d.user_issuer()?;
    if let Some(clash) = issuers.iter().find(|u| u.namespace == dev_issuer.namespace) {
        return Err(format!(
            "--dev: the development issuer's users are `dev/<user>`, but [[user_issuer]] `{}` uses the namespace `dev` too; give it another `namespace`",
            clash.provider.issuer
        ));
    }
    issuers.push(dev_issuer);
    Ok(issuers)
}

/// The route and MCP server names policies may use.
pub(crate) fn configured(config: &Config) -> warrant_control::policy::Configured {
    warrant_control::policy::Configured {
        routes: config.routes.iter().map(|r| r.name.clone()).collect(),
        servers: config.mcp_servers.iter().map(|m| m.name.clone()).collect(),
    }
}

/// What is in force, for `warrant status`.
pub(crate) fn status(config: &Config, loaded_at: Timestamp) -> ConfigStatus {
    ConfigStatus {
        file: config.config_file.as_ref().map(|f| f.display().to_string()),
        digest: config.digest.clone(),
        loaded_at,
    }
}

/// Reads the config file again and puts its routes, MCP servers, user
/// issuers and trust providers in force, all or nothing.
pub async fn reload(state: &AppState, actor: AuditEvent) -> Result<ConfigChanges, ReloadError> {
    let _one = state.live.reloading.lock().await;
    let running = state.live.config.load_full();
    let settings = running.settings.clone();
    let new = tokio::task::spawn_blocking(move || Config::load(&settings))
        .await
        .map_err(|e| ReloadError::Invalid(e.to_string()))??;
    check_trusted_files(&new).map_err(ReloadError::Invalid)?;
    check_audiences(&new, state.live.edge_addr).map_err(ReloadError::Invalid)?;
    let users = with_dev_issuer(new.user_issuers.clone(), state.dev.as_deref())
        .map_err(ReloadError::Invalid)?;

    // Everything built before anything changes.
    let routes = state
        .proxy
        .prepare(new.routes.clone())
        .map_err(ReloadError::Invalid)?;
    let servers = state
        .mcp
        .prepare(new.mcp_servers.clone())
        .map_err(ReloadError::Invalid)?;
    let users = state
        .tokens
        .prepare_user_issuers(users)
        .map_err(ReloadError::Invalid)?;
    let oidc = if new.trust_providers == running.trust_providers {
        None
    } else {
        Some(
            warrant_control::attest::oidc::Providers::new(new.trust_providers.clone())
                .map_err(ReloadError::Invalid)?,
        )
    };
    let changes = changes(&running, &new);

    // Recorded before it takes effect.
    let event = actor.detail(serde_json::json!({
        "file": new.config_file.as_ref().map(|f| f.display().to_string()),
        "digest": new.digest,
        "routes": changes.routes,
        "mcp_servers": changes.mcp_servers,
        "user_issuers": changes.user_issuers,
        "trust_providers": changes.trust_providers,
        "restart_needed": changes.restart_needed,
    }));
    if let Err(e) = state.store.append_audit(event).await {
        tracing::error!(error = %e, "cannot record a configuration reload; nothing changed");
        state.metrics.audit_write_failures.inc();
        return Err(ReloadError::AuditUnavailable);
    }

    // Tighten first: while the edges change, no identity token is issued
    // for an audience either the old or the new edges accept.
    let edge = state.live.edge_addr;
    let mut guarded = task_audiences(&running, edge);
    guarded.extend(task_audiences(&new, edge));
    state.attest.set_task_audiences(&guarded);
    state.tokens.install_user_issuers(users);
    if let Some(oidc) = oidc {
        state.attest.set_oidc(oidc);
    }
    state.proxy.install(routes);
    let fresh = state.mcp.install(servers).await;
    state.attest.set_task_audiences(&task_audiences(&new, edge));
    state.policy.set_configured(configured(&new));
    state.approvals.set_config(new.approvals.clone());
    state.anomaly.set_config(new.anomaly.clone());
    let mut in_force = new;
    in_force.kek = None;
    state.live.config.store(Arc::new(in_force));
    // The console follows at once: turned off, every session ends (turning
    // it on again revives none); single sign-on is made again from the new
    // settings and user issuers.
    if !state.live.config.load().console.enabled {
        state.console.sessions.lock().clear();
    }
    *state.console.oidc.lock() = None;

    *state.live.loaded_at.lock() = Timestamp::now();
    if !fresh.is_empty() {
        let mcp = state.mcp.clone();
        tokio::spawn(async move { mcp.discover(&fresh).await });
    }
    for key in &changes.restart_needed {
        tracing::warn!(key = %key, "changed in the config file; applies at the next start");
    }
    tracing::info!(
        routes = ?changes.routes,
        mcp_servers = ?changes.mcp_servers,
        "configuration reloaded"
    );
    Ok(changes)
}

/// What differs between the running configuration and a new one.
fn changes(old: &Config, new: &Config) -> ConfigChanges {
    ConfigChanges {
        routes: changed(
            old.routes.iter().map(|r| (r.name.clone(), r)),
            new.routes.iter().map(|r| (r.name.clone(), r)),
        ),
        mcp_servers: changed(
            old.mcp_servers.iter().map(|m| (m.name.clone(), m)),
            new.mcp_servers.iter().map(|m| (m.name.clone(), m)),
        ),
        user_issuers: changed(
            old.user_issuers
                .iter()
                .map(|u| (u.provider.issuer.clone(), u)),
            new.user_issuers
                .iter()
                .map(|u| (u.provider.issuer.clone(), u)),
        ),
        trust_providers: changed(
            old.trust_providers.iter().map(|p| (p.name.clone(), p)),
            new.trust_providers.iter().map(|p| (p.name.clone(), p)),
        ),
        restart_needed: restart_needed(old, new),
    }
}

fn changed<'a, T: PartialEq + 'a>(
    old: impl Iterator<Item = (String, &'a T)>,
    new: impl Iterator<Item = (String, &'a T)>,
) -> Changed {
    let old: BTreeMap<String, &T> = old.collect();
    let new: BTreeMap<String, &T> = new.collect();
    Changed {
        added: new
            .keys()
            .filter(|k| !old.contains_key(*k))
            .cloned()
            .collect(),
        removed: old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect(),
        changed: new
            .iter()
            .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// Keys whose new value applies only at the next start.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |key: &str, same: bool| {
        if !same {
            out.push(key.to_owned());
        }
    };
    check("data_dir", old.data_dir == new.data_dir);
    check("store", old.store == new.store);
    check("store_ca_file", old.store_ca_file == new.store_ca_file);
    check("tls", old.tls == new.tls);
    check("insecure_http", old.insecure_http == new.insecure_http);
    check("api_addr", old.api_addr == new.api_addr);
    check("edge_addr", old.edge_addr == new.edge_addr);
    check("trust_domain", old.trust_domain == new.trust_domain);
    check("issuer", old.issuer == new.issuer);
    check("policy_dir", old.policy_dir == new.policy_dir);
    check(
        "max_delegation_depth",
        old.max_delegation_depth == new.max_delegation_depth,
    );
    check("signing_alg", old.signing_alg == new.signing_alg);
    check("edge_hosts", old.edge_hosts == new.edge_hosts);
    check("limits", old.limits == new.limits);
    check("audit_export", old.audit_export == new.audit_export);
    out
}

/// Refuses to start if a file the configuration names, outside the data
/// directory, can be changed by someone other than the broker's user or
/// root (the policy directory is checked at every load).
pub(crate) fn check_trusted_files(config: &Config) -> Result<(), String> {
    // (file, what, whether it is a program or script that runs)
    let mut files: Vec<(std::path::PathBuf, &str, bool)> = Vec::new();
    if let Some(f) = &config.config_file {
        files.push((f.clone(), "the configuration file", false));
    }
    for p in &config.trust_providers {
        if let warrant_control::attest::oidc::JwksSource::File(f) = &p.jwks {
            files.push((f.clone(), "jwks_file (of a [[trust_provider]])", false));
        }
    }
    for u in &config.user_issuers {
        if let warrant_control::attest::oidc::JwksSource::File(f) = &u.provider.jwks {
            files.push((f.clone(), "jwks_file (of a [[user_issuer]])", false));
        }
    }
    // Every CA file: one decides where a credential may be sent.
    for r in &config.routes {
        if let Some(f) = &r.ca_file {
            files.push((f.clone(), "ca_file (of a [[route]])", false));
        }
        if let Some(f) = r.credential.ca_file() {
            files.push((f.to_owned(), "credential.ca_file (of a [[route]])", false));
        }
        // A session policy file decides what an AWS session may do.
        for f in r.credential.session_policy_files() {
            files.push((
                f.clone(),
                "credential.session_policies (of a [[route]])",
                false,
            ));
        }
    }
    for m in &config.mcp_servers {
        match &m.transport {
            warrant_edge::mcp::config::Transport::Http {
                ca_file,
                credential,
                ..
            } => {
                if let Some(f) = ca_file {
                    files.push((f.clone(), "ca_file (of an [[mcp_server]])", false));
                }
                if let Some(f) = credential.as_ref().and_then(|c| c.ca_file()) {
                    files.push((
                        f.to_owned(),
                        "credential.ca_file (of an [[mcp_server]])",
                        false,
                    ));
                }
            }
            warrant_edge::mcp::config::Transport::Stdio(s) => {
                warrant_edge::mcp::stdio::check_sources(s, &m.name)?;
            }
        }
    }
    for (f, what, program) in files {
        warrant_host::trust::check_trusted(&f, what, program)?;
    }
    // An audit export file's directory: the broker appends to, renames and
    // creates files in it, so nobody else may write there (no planted
    // symlink or file decides where the trail goes).
    for s in &config.audit_export {
        if let warrant_control::export::Target::File { path, .. } = &s.target {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            warrant_host::trust::check_trusted_as(
                dir,
                "the directory of an [[audit_export]] file",
                warrant_host::trust::Trust::CodeDir,
            )?;
        }
    }
    Ok(())
}
