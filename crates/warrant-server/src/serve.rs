//! Starting, running and stopping the broker.
//!
//! [`Broker::start`] does everything that can fail before anything is served:
//! takes the data-directory lock, binds the listeners (before creating keys or
//! a database, so a taken port leaves nothing behind), then opens the KEK, the
//! store and migrations, signing keys and policies, so a misconfiguration is a clear error at start-up and
//! never a half-running broker. [`Broker::run`] serves until the cancellation
//! token fires (SIGINT/SIGTERM in [`Broker::run_until_signalled`]), drains
//! connections, records the stop and closes the store.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::time::Timestamp;
use warrant_policy::Problems;
use warrant_store::{
    PostgresOptions, PostgresStore, SqliteOptions, SqliteStore, Store, StoreError,
};

use crate::config::StoreChoice;

use crate::config::Config;
use crate::data_dir::{DataDir, DataDirError, KekSource, RunInfo};
use crate::state::AppState;
use warrant_control::keys::{KeyService, KeyServiceError};
use warrant_control::metrics::Metrics;
use warrant_control::policy::{PolicyService, ensure_policy_dir};

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory is unusable.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(StoreError),
    /// Signing keys could not be loaded or generated.
    #[error("cannot load the signing keys: {0}")]
    Keys(KeyServiceError),
    /// The policy set does not validate.
    #[error(
        "the policies in `{dir}` do not validate; fix them (check with `warrant policy validate`) and start again:\n{problems}"
    )]
    Policy {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        problems: Problems,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {reason}")]
    Bind {
        /// The config key (`api_addr`).
        key: &'static str,
        /// The address.
        addr: String,
        /// Why, and what to do.
        reason: String,
    },
    /// Some other IO failed.
    #[error("{0}")]
    Io(String),
}

// The causes are in the messages above, so they are not also `source()`s (the
// CLI prints the whole chain).
impl From<StoreError> for ServeError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<KeyServiceError> for ServeError {
    fn from(e: KeyServiceError) -> Self {
        Self::Keys(e)
    }
}

fn bind_error(key: &'static str, flag: &str, addr: String, e: &std::io::Error) -> ServeError {
    let reason = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "the address is already in use; stop the other process or choose another address with {flag}"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied; ports below 1024 need privileges, choose another with {flag}"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("no local interface has that address; choose another with {flag}")
        }
        _ => format!("{e}"),
    };
    ServeError::Bind { key, addr, reason }
}

/// A started broker: everything loaded, every listener bound.
pub struct Broker {
    state: AppState,
    data_dir: DataDir,
    api: TcpListener,
    edge: TcpListener,
    admin: UnixListener,
    agent: UnixListener,
    workload: UnixListener,
    api_addr: SocketAddr,
    edge_addr: SocketAddr,
    limits: crate::config::ListenerLimits,
    tls: Option<crate::tls::Tls>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("api_addr", &self.api_addr)
            .field("edge_addr", &self.edge_addr)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Prepares everything and binds the listeners.
    pub async fn start(config: Config) -> Result<Self, ServeError> {
        // Everything the broker creates (database, WAL, sockets, files) is
        // owner-only, whatever the caller's umask.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));

        let data_dir = DataDir::open(&config.data_dir)?;
        crate::live::check_trusted_files(&config).map_err(ServeError::Io)?;
        // Bind before creating keys or a database, so a taken port leaves nothing behind.
        let api = TcpListener::bind(config.api_addr)
            .await
            .map_err(|e| bind_error("api_addr", "--api-addr", config.api_addr.to_string(), &e))?;
        let edge = TcpListener::bind(config.edge_addr).await.map_err(|e| {
            bind_error("edge_addr", "--edge-addr", config.edge_addr.to_string(), &e)
        })?;
        let api_addr = api
            .local_addr()
            .map_err(|e| ServeError::Io(e.to_string()))?;
        let edge_addr = edge
            .local_addr()
            .map_err(|e| ServeError::Io(e.to_string()))?;
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::Tls::new(files.clone()).map_err(ServeError::Io)?),
            None => None,
        };
        for (name, key, addr) in [
            ("api", "api_addr", api_addr),
            ("edge", "edge_addr", edge_addr),
        ] {
            if addr.ip().is_loopback() || tls.is_some() {
                continue;
            }
            if !config.insecure_http {
                return Err(ServeError::Bind {
                    key,
                    addr: addr.to_string(),
                    reason: "a listener beyond loopback must serve TLS: give `[tls]` (or --tls-cert and --tls-key), or, when TLS is terminated by a proxy in front, say so with `insecure_http = true` (--insecure-http)".into(),
                });
            }
            tracing::warn!(listener = name, %addr, "serving plain HTTP beyond loopback (insecure_http): TLS must be terminated in front of it, and who can reach it restricted");
        }
        let (kek, kek_source) = data_dir.kek(config.kek.clone())?;
        match kek_source {
            KekSource::Environment => tracing::info!("key-encryption key from WARRANT_KEK"),
            KekSource::Created => tracing::warn!(
                path = %data_dir.root().join("kek").display(),
                "created a key-encryption key file next to the data it protects; in production supply WARRANT_KEK from a secret manager instead"
            ),
            KekSource::File => tracing::warn!(
                path = %data_dir.root().join("kek").display(),
                "using the key-encryption key file in the data directory; in production supply WARRANT_KEK from a secret manager instead"
            ),
        }

        // The audit chain is keyed with a key derived from the KEK, which the
        // database never holds.
        let chain_key: Arc<dyn warrant_core::audit::ChainLinker> = Arc::new(
            warrant_token::AuditChainKey::derive(&kek)
                .map_err(|e| ServeError::Io(e.to_string()))?,
        );
        let shared = matches!(config.store, StoreChoice::Postgres(_));
        let store: Arc<dyn Store> = match &config.store {
            StoreChoice::Sqlite => Arc::new(SqliteStore::open(
                &data_dir.db_path(),
                SqliteOptions {
                    chain: Some(chain_key.clone()),
                    ..SqliteOptions::default()
                },
            )?),
            StoreChoice::Postgres(url) => {
                let url = url.clone();
                let options = PostgresOptions {
                    chain: Some(chain_key.clone()),
                    ca_file: config.store_ca_file.clone(),
                    ..PostgresOptions::default()
                };
                let store = tokio::task::spawn_blocking(move || PostgresStore::open(&url, options))
                    .await
                    .map_err(|e| ServeError::Io(format!("opening the store failed: {e}")))??;
                tracing::info!(store = %store.shown(), "using a PostgreSQL store shared with other brokers");
                Arc::new(store)
            }
        };
        let edge_metrics = Arc::new(warrant_edge::metrics::EdgeMetrics::default());
        let metrics = Arc::new(Metrics::with(|r| edge_metrics.register(r)));
        let secrets = Arc::new(warrant_control::secrets::SecretService::new(
            store.clone(),
            kek.clone(),
        ));
        let keys = Arc::new(KeyService::bootstrap(store.clone(), kek, config.signing_alg).await?);
        if shared {
            // Every broker publishes a new key (the feed brings it within
            // milliseconds, a catch-up read within a second) before any signs.
            keys.set_min_activation(crate::follow::KEY_ACTIVATION_DELAY);
        }
        // Agents registered before platform selectors had to name their
        // provider are never chosen by a platform token now: say so.
        if let Ok(agents) = store.list_agents().await {
            use warrant_core::selector::SelectorKind;
            for a in &agents {
                let platform = a
                    .selectors
                    .iter()
                    .any(|s| matches!(s.kind(), SelectorKind::Oidc | SelectorKind::K8s));
                let provider = a
                    .selectors
                    .iter()
                    .any(|s| s.kind() == SelectorKind::Oidc && s.key() == "provider");
                if platform && !provider {
                    tracing::warn!(agent = %a.name, "this agent's platform-token selectors name no trust provider, so no platform token attests it; recreate it with `--selector oidc:provider=<name>`");
                }
            }
        }
        // Per-user secrets stored before user ids were issuer-qualified
        // belong to no user any more: say so, once, at start.
        if let Ok(list) = secrets.list().await {
            for s in list
                .iter()
                .filter(|s| s.owner.as_ref().is_some_and(|o| !o.contains('/')))
            {
                tracing::warn!(secret = %s.name, owner = %s.owner.as_deref().unwrap_or_default(), "this per-user secret's owner is not an issuer-qualified user id (`<namespace>/<subject>`), so no task can use it; store it again with `warrant secret put --for-user <namespace>/<subject>` and delete this one");
            }
        }

        let policy_dir = config.policy_dir.clone();
        match ensure_policy_dir(&policy_dir) {
            Ok(true) => {
                tracing::info!(dir = %policy_dir.display(), "created the policy directory with a commented example that permits nothing")
            }
            Ok(false) => {}
            Err(e) => {
                return Err(ServeError::Io(format!(
                    "cannot create the policy directory `{}`: {e}",
                    policy_dir.display()
                )));
            }
        }
        // Policies may name MCP tool arguments: type them from the approved
        // definitions the store holds, before any upstream is contacted.
        let mcp_names: Vec<&str> = config.mcp_servers.iter().map(|m| m.name.as_str()).collect();
        let tools = warrant_edge::mcp::arguments_of(&store.list_tool_pins(None).await?, &mcp_names);
        let policy = Arc::new(
            PolicyService::load(&policy_dir, store.clone(), metrics.clone(), tools).map_err(
                |problems| ServeError::Policy {
                    dir: policy_dir.clone(),
                    problems,
                },
            )?,
        );
        policy.set_configured(crate::live::configured(&config));
        if let Ok(known) = policy.known_names().await {
            for w in warrant_control::names::unknown_names(&policy.current().policies, &known) {
                tracing::warn!("{w}");
            }
        }
        if policy.current().policies.is_empty() {
            tracing::warn!(dir = %policy_dir.display(), "no policies are loaded: every decision is a deny until you write some");
        }

        let admin = bind_socket(&data_dir.admin_socket(), "admin", 0o600)?;
        // Any local process may connect to the agent socket: who it is comes
        // from the kernel.
        let agent = bind_socket(&data_dir.agent_socket(), "agent", 0o666)?;
        // INVARIANT (every byte carries its sender): sender credentials are
        // on for the listener, so each accepted connection has them from
        // its first byte (the kernel copies the flag at accept). Turned on
        // only after accept, a request sent in between arrived without
        // them and was refused as sent by another process.
        let workload = bind_socket(&data_dir.workload_socket(), "Workload API", 0o666)?;
        for (socket, name) in [(&agent, "agent"), (&workload, "Workload API")] {
            use std::os::fd::AsFd as _;
            rustix::net::sockopt::set_socket_passcred(socket.as_fd(), true).map_err(|e| {
                ServeError::Io(format!(
                    "cannot turn on sender credentials for the {name} socket: {e}"
                ))
            })?;
        }

        let issuer: Arc<str> = match &config.issuer {
            Some(i) => i.as_str().into(),
            None => {
                if api_addr.ip().is_unspecified() {
                    tracing::warn!(
                        "the issuer defaults to {}://{api_addr}; set --issuer to the URL clients use to reach this broker",
                        config.scheme()
                    );
                }
                format!("{}://{api_addr}", config.scheme()).into()
            }
        };

        let oidc = warrant_control::attest::oidc::Providers::new(config.trust_providers.clone())
            .map_err(ServeError::Io)?;
        let refusals = warrant_control::refusals::RefusalLog::start(store.clone(), metrics.clone());
        let common = warrant_control::IssuerParts {
            refusals: refusals.clone(),
            store: store.clone(),
            keys: keys.clone(),
            policy: policy.clone(),
            metrics: metrics.clone(),
            issuer: issuer.clone(),
            trust_domain: config.trust_domain.clone(),
        };
        crate::live::check_audiences(&config, edge_addr).map_err(ServeError::Io)?;
        let task_audiences = crate::live::task_audiences(&config, edge_addr);
        let attest = Arc::new(warrant_control::attest::AttestService::new(
            warrant_control::attest::Parts {
                common: common.clone(),
                oidc,
                task_audiences,
            },
        ));
        let dev = if config.dev {
            let d = warrant_control::dev::DevIssuer::new(&issuer).map_err(ServeError::Io)?;
            tracing::warn!(issuer = %d.issuer, "DEVELOPMENT MODE: the built-in user issuer is on; anyone with admin access can mint tokens for any user. Never use --dev in production");
            Some(Arc::new(d))
        } else {
            None
        };
        let user_issuers =
            crate::live::with_dev_issuer(config.user_issuers.clone(), dev.as_deref())
                .map_err(ServeError::Io)?;
        let anomaly = warrant_control::anomaly::AnomalyService::new(
            data_dir.root(),
            config.anomaly.clone(),
            metrics.clone(),
        );
        policy.set_anomaly(anomaly.clone());
        let (approvals, announcer) = warrant_control::approvals::ApprovalService::new(
            store.clone(),
            policy.clone(),
            config.approvals.clone(),
            metrics.clone(),
        );
        tokio::spawn(announcer);
        let tokens = Arc::new(
            warrant_control::token::TokenService::new(warrant_control::token::TokenParts {
                approvals: approvals.clone(),
                common,
                max_depth: config.max_delegation_depth,
                user_issuers,
            })
            .await
            .map_err(ServeError::Io)?,
        );
        let mut edge_hosts = config.edge_hosts.clone();
        let port = edge_addr.port();
        edge_hosts.extend([edge_addr.to_string(), format!("localhost:{port}")]);
        if edge_addr.ip().is_unspecified() {
            edge_hosts.extend([format!("127.0.0.1:{port}"), format!("[::1]:{port}")]);
            if config.edge_hosts.is_empty() {
                tracing::warn!(
                    "the edge listens on every interface but only answers requests whose Host is a loopback address; list the names agents use in `edge_hosts`"
                );
            }
        }
        if port == 80 {
            edge_hosts.push("localhost".into());
            edge_hosts.push(edge_addr.ip().to_string());
        }
        let audit_batch =
            warrant_control::audit_batch::AuditBatcher::start(store.clone(), metrics.clone());
        let control = Arc::new(crate::edge_services::ControlForEdge {
            tokens: tokens.clone(),
            policy: policy.clone(),
            secrets: secrets.clone(),
            keys: keys.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            batcher: audit_batch.clone(),
            refusals: refusals.clone(),
            approvals: approvals.clone(),
        });
        let services = warrant_edge::services::EdgeServices {
            tasks: control.clone(),
            authorizer: control.clone(),
            credentials: control.clone(),
            audit: control.clone(),
            pins: control.clone(),
            approvals: control,
            metrics: edge_metrics.clone(),
            issuer: issuer.clone(),
            edge_url: format!("{}://{edge_addr}", config.scheme()),
            edge_hosts,
        };
        let mcp = Arc::new(
            warrant_edge::mcp::gateway::Gateway::new(warrant_edge::mcp::gateway::GatewayParts {
                servers: config.mcp_servers.clone(),
                services: services.clone(),
            })
            .map_err(ServeError::Io)?,
        );
        for m in &config.mcp_servers {
            tracing::info!(server = %m.name, "MCP server behind the gateway");
        }
        let proxy = Arc::new(
            warrant_edge::proxy::ProxyService::new(warrant_edge::proxy::ProxyParts {
                routes: config.routes.clone(),
                services,
            })
            .map_err(ServeError::Io)?,
        );
        for r in &config.routes {
            tracing::info!(route = %r.name, upstream = %r.upstream.as_url(), credential = %r.credential.kind(), "egress route");
        }
        let state = AppState {
            audit_batch,
            refusals,
            mcp,
            proxy,
            secrets,
            dev,
            tokens,
            approvals,
            anomaly,
            chain_key,
            edge_metrics,
            store,
            keys,
            policy,
            metrics,
            attest,
            issuer,
            trust_domain: config.trust_domain.clone(),
            started_at: Timestamp::now(),
            live: Arc::new(crate::state::Live {
                config: arc_swap::ArcSwap::from_pointee(Config {
                    kek: None,
                    ..config.clone()
                }),
                loaded_at: parking_lot::Mutex::new(Timestamp::now()),
                reloading: tokio::sync::Mutex::new(()),
                edge_addr,
                api_addr,
                admin_socket: data_dir.admin_socket(),
                agent_socket: data_dir.agent_socket(),
                store: match &config.store {
                    StoreChoice::Sqlite => format!("sqlite:{}", data_dir.db_path().display()),
                    other => other.shown(),
                },
            }),
            broker_id: warrant_host::random::hex_id(8)
                .map(|id| Arc::from(format!("brk_{id}")))
                .map_err(|e| ServeError::Io(e.to_string()))?,
            console: Arc::default(),
        };
        let limits = fit_file_limit(config.limits);
        Ok(Self {
            state,
            data_dir,
            api,
            edge,
            admin,
            agent,
            workload,
            api_addr,
            edge_addr,
            limits,
            tls,
        })
    }

    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The bound edge address.
    pub fn edge_addr(&self) -> SocketAddr {
        self.edge_addr
    }

    /// The shared state (for in-process tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops cleanly.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Self {
            state,
            data_dir,
            api,
            edge,
            admin,
            agent,
            workload,
            api_addr,
            edge_addr,
            limits,
            tls,
        } = self;
        let socket_path = data_dir.admin_socket();

        let start = AuditEvent::new(Kind::BrokerStart, Outcome::Allow)
            .actor("broker")
            .detail(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "api_addr": api_addr.to_string(),
                "edge_addr": edge_addr.to_string(),
                "issuer": &*state.issuer,
                "policy_digest": state.policy.current().policies.digest(),
            }));
        state.store.append_audit(start).await?;
        let follower = state
            .store
            .follow()
            .map(|feed| crate::follow::spawn(state.clone(), feed, shutdown.clone()));

        let api_server = Arc::new(crate::listener::Server::new(
            "api",
            crate::http::api_router(state.clone()),
            limits.api,
            state.metrics.clone(),
        ));
        let edge_server = Arc::new(crate::listener::Server::new(
            "edge",
            crate::http::edge::router(state.clone()),
            limits.edge,
            state.metrics.clone(),
        ));
        let admin_server = Arc::new(crate::listener::Server::new(
            "admin",
            crate::http::socket_router(state.clone()),
            limits.admin,
            state.metrics.clone(),
        ));
        let agent_server = Arc::new(crate::listener::Server::new(
            "agent",
            crate::http::attest::agent_router(state.clone()),
            limits.agent,
            state.metrics.clone(),
        ));
        let tls_watch = tls.as_ref().map(|t| t.watch(shutdown.clone()));
        let (s, t, l) = (api_server.clone(), shutdown.clone(), tls.clone());
        let api_task = tokio::spawn(async move { crate::listener::run_tcp(&s, api, l, t).await });
        let (s, t, l) = (edge_server.clone(), shutdown.clone(), tls);
        let edge_task = tokio::spawn(async move { crate::listener::run_tcp(&s, edge, l, t).await });
        let (s, t) = (admin_server.clone(), shutdown.clone());
        let admin_task = tokio::spawn(async move {
            crate::listener::run_unix(&s, admin, t, |io| {
                let peer = crate::http::auth::SocketPeer::of(&io);
                (io, axum::extract::ConnectInfo(peer))
            })
            .await
        });
        let (s, t) = (agent_server.clone(), shutdown.clone());
        let agent_task = tokio::spawn(async move {
            crate::listener::run_unix(&s, agent, t, |io| {
                let (io, peer) = crate::http::attest::AgentPeer::accept(io);
                (io, axum::extract::ConnectInfo(peer))
            })
            .await
        });

        let workload_task = tokio::spawn(crate::workload::serve(
            state.clone(),
            workload,
            limits.agent,
            shutdown.clone(),
        ));

        let info = RunInfo {
            pid: std::process::id(),
            api_addr: api_addr.to_string(),
            edge_addr: edge_addr.to_string(),
            issuer: state.issuer.to_string(),
            admin_socket: socket_path.clone(),
            started_at: state.started_at.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        data_dir.write_run_info(&info).map_err(|e| {
            ServeError::Io(format!(
                "cannot write `{}`: {e}",
                data_dir.root().join("run.json").display()
            ))
        })?;
        tracing::info!(api = %api_addr, edge = %edge_addr, admin_socket = %socket_path.display(), agent_socket = %data_dir.agent_socket().display(), workload_socket = %data_dir.workload_socket().display(), issuer = %state.issuer, "warrant is ready");

        // List and pin the MCP servers' tools (a server that is down is tried
        // again on first use).
        {
            let mcp = state.mcp.clone();
            tokio::spawn(async move { mcp.discover_all().await });
        }

        // Signed checkpoints of the audit chain's head, every minute.
        let checkpointer = warrant_control::checkpoints::spawn(
            state.store.clone(),
            state.keys.clone(),
            state.issuer.clone(),
            shutdown.clone(),
        );

        // The audit trail streamed to the configured sinks, each following
        // the committed trail on its own.
        let exports = warrant_control::export::spawn(
            state.store.clone(),
            state.live.config.load().audit_export.clone(),
            data_dir.root(),
            state.metrics.clone(),
            shutdown.clone(),
        );

        // Anomaly detection, following the trail off the request path.
        let detector = state.anomaly.spawn(
            state.store.clone(),
            Arc::new(crate::governance::Responder(state.clone())),
            shutdown.clone(),
        );

        // Identity-health samples for the console's charts.
        let sampler = crate::http::health::spawn_sampler(state.clone(), shutdown.clone());

        // Last-use times of secrets are gathered in memory and written in
        // batches: a proxied request never waits for them.
        let flusher = {
            let (secrets, t) = (state.secrets.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(warrant_control::secrets::CACHE_TTL);
                loop {
                    tokio::select! {
                        _ = every.tick() => secrets.flush_used().await,
                        () = t.cancelled() => break,
                    }
                }
            })
        };

        shutdown.cancelled().await;
        let _ = flusher.await;
        let _ = sampler.await;
        if let Some(w) = tls_watch {
            let _ = w.await;
        }
        if let Some(f) = follower {
            let _ = f.await;
        }
        tracing::info!("shutting down: draining connections");
        let _ = tokio::join!(api_task, edge_task, admin_task, agent_task, workload_task);
        // Open connections finish their requests (within 10 s in all).
        let drain = async {
            for s in [api_server, edge_server, admin_server, agent_server] {
                if let Ok(s) = Arc::try_unwrap(s) {
                    s.drain(Duration::from_secs(10)).await;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 10s; closing anyway");
        }
        state.secrets.flush_used().await;
        state.audit_batch.flush().await;
        state.refusals.flush().await;
        let stop = AuditEvent::new(Kind::BrokerStop, Outcome::Allow).actor("broker");
        if let Err(e) = state.store.append_audit(stop).await {
            tracing::error!(error = %e, "could not record the stop in the audit trail");
        }
        let _ = checkpointer.await;
        for e in exports {
            let _ = e.await;
        }
        let _ = detector.await;
        if let Err(e) =
            warrant_control::checkpoints::make(&state.store, &state.keys, &state.issuer).await
        {
            tracing::warn!(error = %e, "could not make a last audit checkpoint");
        }
        state.store.close().await;
        data_dir.remove_runtime_files();
        tracing::info!("stopped");
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM; SIGHUP reloads the configuration
    /// and the policy set.
    pub async fn run_until_signalled(self) -> Result<(), ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let sig = |k| {
            signal(k).map_err(|e| ServeError::Io(format!("cannot install a signal handler: {e}")))
        };
        let mut int = sig(SignalKind::interrupt())?;
        let mut term = sig(SignalKind::terminate())?;
        let mut hup = sig(SignalKind::hangup())?;
        let token = CancellationToken::new();
        let state = self.state.clone();
        let watcher = {
            let token = token.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = int.recv() => { tracing::info!("SIGINT received"); token.cancel(); break; }
                        _ = term.recv() => { tracing::info!("SIGTERM received"); token.cancel(); break; }
                        _ = hup.recv() => {
                            tracing::info!("SIGHUP received: reloading the configuration and the policies");
                            let event = |kind: Kind| AuditEvent::new(kind, Outcome::Allow).actor("signal:SIGHUP").protocol("signal");
                            if let Err(e) = crate::http::live::reload_all(&state, event(Kind::ConfigReload).action("config.reload"), event(Kind::PolicyReload), crate::http::live::ReloadFrom::Operator).await {
                                tracing::error!(error = %e.message, "reload on SIGHUP failed; the running configuration and policies stay");
                            }
                        }
                        () = token.cancelled() => break,
                    }
                }
            })
        };
        let result = self.run(token.clone()).await;
        token.cancel();
        let _ = watcher.await;
        result
    }
}

/// Binds the Unix socket at `path` (the data-directory lock is ours, so a
/// socket file left there is stale) and sets its mode.
/// Raises the open-file limit and, if the listeners' caps could still
/// exhaust it (each proxied request also holds an upstream connection),
/// lowers the edge's and the API's caps to fit, saying so.
fn fit_file_limit(mut l: crate::config::ListenerLimits) -> crate::config::ListenerLimits {
    /// Descriptors kept for the store, logs, upstream pools and the admin path.
    const RESERVE: u64 = 256;
    let files = crate::listener::raise_file_limit();
    let fixed = (l.admin.max_connections + l.agent.max_connections) as u64 + RESERVE;
    let wanted = 2 * l.edge.max_connections as u64 + l.api.max_connections as u64 + fixed;
    if wanted > files {
        let room = files.saturating_sub(fixed).max(64);
        let api = (room / 5).max(16);
        let edge = ((room - api.min(room)) / 2).max(16);
        tracing::warn!(
            open_file_limit = files,
            edge_connections = edge,
            api_connections = api,
            "the open-file limit is too low for the configured [limits]; lowered the edge's and the API's connection caps to fit (raise `ulimit -n` for more)"
        );
        l.edge.max_connections = usize::try_from(edge).unwrap_or(16);
        l.api.max_connections = usize::try_from(api).unwrap_or(16);
    }
    l
}

fn bind_socket(path: &Path, name: &str, mode: u32) -> Result<UnixListener, ServeError> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| {
        let hint = if path.as_os_str().len() > 100 {
            " (Unix socket paths are limited to about 100 bytes; use a shorter --data-dir)"
        } else {
            ""
        };
        ServeError::Io(format!(
            "cannot create the {name} socket `{}`: {e}{hint}",
            path.display()
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        ServeError::Io(format!(
            "cannot set the mode of the {name} socket `{}`: {e}",
            path.display()
        ))
    })?;
    Ok(listener)
}
