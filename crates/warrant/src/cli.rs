//! The command line, declared with clap derive.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// warrant: identity and access broker for AI agents.
#[derive(Debug, Parser)]
#[command(name = "warrant", version, propagate_version = true)]
pub struct Cli {
    /// The data directory of the broker (its store, keys and admin socket).
    #[arg(long, global = true, env = "WARRANT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// warrant.toml to read settings from.
    #[arg(long, global = true, env = "WARRANT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Talk to the broker's admin API over HTTP at this URL instead of the admin
    /// socket; the admin token comes from WARRANT_ADMIN_TOKEN.
    #[arg(long, global = true, env = "WARRANT_URL", value_name = "URL")]
    pub url: Option<String>,

    /// With an https:// --url: the PEM CA certificate(s) to trust for the
    /// broker's certificate [default: the system's roots]
    #[arg(long, global = true, env = "WARRANT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and sentences.
    Human,
    /// JSON, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker in the foreground.
    Serve(Serve),
    /// Manage the agent inventory.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage admin bearer tokens for the HTTP admin API.
    #[command(subcommand, name = "admin-token")]
    AdminToken(AdminTokenCmd),
    /// Store the upstream credentials the egress proxy injects (values go in, never out).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// The MCP gateway's servers and tools: pin status and approval of changed definitions.
    #[command(subcommand)]
    Mcp(McpCmd),
    /// Step-up approvals: requests a permit marked @approval("required")
    /// holds until a person decides. Each covers one exact request.
    #[command(subcommand)]
    Approval(ApprovalCmd),
    /// Read and verify the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Validate, reload, inspect and test Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Revoke task tokens: a task and every task delegated from it, a whole
    /// transaction, or everything an instance or agent holds.
    Revoke(RevokeArgs),
    /// Development helpers (need `warrant serve --dev`; not for production).
    #[command(subcommand)]
    Dev(DevCmd),
    /// Put a changed warrant.toml (routes, MCP servers, user issuers, trust
    /// providers) and the policy directory in force without a restart, as
    /// SIGHUP does. A bad file changes nothing and says where it is wrong.
    Reload,
    /// Identity health: standing credentials left, the share of upstream
    /// requests made with ephemeral ones, delegated vs self-acting grants,
    /// inventory hygiene, enforcement times, pending approvals, anomalies
    /// (docs/health.md).
    Health,
    /// Console sessions: who is signed in to the web console, and ending a
    /// person's (or an admin token's) sessions (docs/console.md).
    #[command(subcommand)]
    Console(ConsoleCmd),
    /// What the running broker is: listeners, store, policy and config
    /// digests, signing key ids, uptime.
    Status {
        /// Every broker sharing the store (PostgreSQL): version, digests,
        /// change-feed position and lag, and where they differ (exit code 1
        /// when they do).
        #[arg(long)]
        all: bool,
    },
    /// The egress proxy's routes in force.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Move the store (offline: the broker must be stopped).
    #[command(subcommand)]
    Store(StoreCmd),
    /// Tokens for a shell agent, and for debugging: this process's
    /// identity, task tokens, and what a token says.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run next to an agent that cannot be changed: attest, then forward
    /// http://127.0.0.1:<port>/<route>/... to the edge with a fresh task
    /// token. Anything that can reach the port acts as this workload.
    Sidecar(SidecarArgs),
}

/// How an agent-side command attests and finds the broker.
#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// The broker's edge listener [default: from the data directory's run
    /// file, else http://127.0.0.1:8701]
    #[arg(long, env = "WARRANT_EDGE_URL", value_name = "URL")]
    pub edge_url: Option<String>,
    /// Attest on this agent socket [default: <data-dir>/agent.sock]
    #[arg(long, env = "WARRANT_AGENT_SOCKET", value_name = "PATH")]
    pub agent_socket: Option<PathBuf>,
    /// Attest with the platform token in this file (a Kubernetes projected
    /// service-account token), read again at every renewal.
    #[arg(long, env = "WARRANT_OIDC_TOKEN_FILE", value_name = "PATH")]
    pub oidc_token_file: Option<PathBuf>,
    /// Attest with a one-time join token (`warrant agent join-token`); the
    /// identity is then renewed with itself. Prefer --join-token-file: a
    /// command line is visible to other local users.
    #[arg(
        long,
        env = "WARRANT_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub join_token: Option<String>,
    /// Attest with the one-time join token in this file.
    #[arg(long, env = "WARRANT_JOIN_TOKEN_FILE", value_name = "PATH")]
    pub join_token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// This process's identity token (a JWT-SVID), from the attestation
    /// given (default: the agent socket). Prints the token alone.
    Identity {
        #[command(flatten)]
        agent: AgentArgs,
        /// The audience (default: the broker).
        #[arg(long)]
        audience: Option<String>,
    },
    /// A task token for this agent acting for itself. Prints the token alone.
    #[command(name = "self")]
    SelfToken {
        #[command(flatten)]
        agent: AgentArgs,
        /// Audience (repeat for several).
        #[arg(long, required = true)]
        audience: Vec<String>,
        /// Scopes, space-separated.
        #[arg(long)]
        scope: String,
    },
    /// A task token for a user (their token) or for part of a task another
    /// agent handed over (its task token): RFC 8693 token exchange. Prints
    /// the token alone.
    Exchange {
        #[command(flatten)]
        agent: AgentArgs,
        /// The user's token (`-` reads it from standard input; a value on
        /// the command line is visible to other local users, so prefer `-`
        /// or WARRANT_USER_TOKEN).
        #[arg(
            long,
            env = "WARRANT_USER_TOKEN",
            hide_env_values = true,
            required_unless_present = "task_token",
            conflicts_with = "task_token"
        )]
        user_token: Option<String>,
        /// A task token handed to this agent (`-` reads it from standard
        /// input; prefer `-` or WARRANT_TASK_TOKEN to the command line).
        #[arg(long, env = "WARRANT_TASK_TOKEN", hide_env_values = true)]
        task_token: Option<String>,
        /// Audience (repeat for several).
        #[arg(long, required = true)]
        audience: Vec<String>,
        /// Scopes, space-separated.
        #[arg(long)]
        scope: String,
    },
    /// What a token says: kind, subject, delegation chain, audience,
    /// scope, task, expiry, whether its signature is the broker's (checked
    /// with the broker's JWKS), and whether the broker still considers it
    /// active (asked with this process's identity). Exit code 0 only for a
    /// token signed by the broker and good now; 3 for one that is not
    /// (forged, expired, revoked); 1 when the broker cannot be asked.
    Inspect {
        #[command(flatten)]
        agent: AgentArgs,
        /// The token (`-` reads it from standard input, which other local
        /// users cannot see, unlike the command line).
        token: String,
    },
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Where to listen: a loopback address and port.
    #[arg(long, env = "WARRANT_SIDECAR_LISTEN", default_value = "127.0.0.1:8780")]
    pub listen: std::net::SocketAddr,
    /// A route to forward and the scopes to ask for on it: `openai=llm:chat`
    /// (repeat; only these are forwarded).
    #[arg(long = "route", value_name = "ROUTE=SCOPES")]
    pub routes: Vec<String>,
    /// An MCP server to forward (`/mcp/<server>`) and its scopes:
    /// `files=files:read` (repeat).
    #[arg(long = "mcp", value_name = "SERVER=SCOPES")]
    pub mcp: Vec<String>,
    /// The request header in which the agent may pass a user's token to act
    /// for that user (exchanged and cached; never forwarded).
    #[arg(long, default_value = "x-warrant-user-token")]
    pub user_header: String,
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy a single-node SQLite store, audit trail included, into an empty
    /// PostgreSQL database, and verify the trail there. The key-encryption
    /// key comes from WARRANT_KEK or <from>/kek; every broker on the new
    /// store needs that same key (WARRANT_KEK).
    Copy {
        /// The data directory of the stopped broker.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The empty PostgreSQL database: postgres://user:password@host:port/db
        #[arg(
            long,
            value_name = "URL",
            env = "WARRANT_STORE",
            hide_env_values = true
        )]
        to: String,
        /// PEM CA certificate(s) for the PostgreSQL server's TLS certificate.
        #[arg(long, value_name = "FILE", env = "WARRANT_STORE_CA_FILE")]
        to_ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouteCmd {
    /// List the routes in force: upstream, audience, credential kind, allow rules.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DevCmd {
    /// Mint a user token from the built-in development issuer, to exchange
    /// as a subject token. Needs `warrant serve --dev`.
    UserToken {
        /// The user (the token's `sub`).
        user: String,
        /// The user's groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RevokeArgs {
    /// The task whose token has this jti.
    #[arg(long)]
    pub jti: Option<String>,
    /// A task (`tsk_...`) and its descendants.
    #[arg(long)]
    pub task: Option<String>,
    /// Every task of a transaction (`txn_...`).
    #[arg(long)]
    pub txn: Option<String>,
    /// Every task of an instance; it gets nothing more until its agent is re-enabled.
    #[arg(long)]
    pub instance: Option<String>,
    /// Every task of an agent; the agent is disabled.
    #[arg(long)]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct Serve {
    /// The store: `sqlite` (in the data directory) or `postgres://user:password@host:port/db`,
    /// shared by several brokers [default: sqlite]
    #[arg(
        long,
        env = "WARRANT_STORE",
        value_name = "STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// PEM CA certificate(s) to trust for the PostgreSQL server's TLS certificate
    /// (`?sslmode=require` in the store URL) [default: the system's roots]
    #[arg(long, env = "WARRANT_STORE_CA_FILE", value_name = "FILE")]
    pub store_ca_file: Option<PathBuf>,
    /// PEM certificate chain for the API and edge listeners (with --tls-key);
    /// re-read when it changes
    #[arg(
        long,
        env = "WARRANT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert (owner-only)
    #[arg(
        long,
        env = "WARRANT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP beyond loopback, because TLS is terminated by a proxy in front
    #[arg(long, env = "WARRANT_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Address of the API listener (OAuth, discovery, admin over HTTP) [default: 127.0.0.1:8700]
    #[arg(long, env = "WARRANT_API_ADDR", value_name = "ADDR")]
    pub api_addr: Option<String>,
    /// Address of the edge listener (egress proxy, MCP gateway) [default: 127.0.0.1:8701]
    #[arg(long, env = "WARRANT_EDGE_ADDR", value_name = "ADDR")]
    pub edge_addr: Option<String>,
    /// SPIFFE trust domain of issued identities [default: warrant.local]
    #[arg(long, env = "WARRANT_TRUST_DOMAIN", value_name = "NAME")]
    pub trust_domain: Option<String>,
    /// Issuer URL in tokens and discovery [default: http://<api-addr>]
    #[arg(long, env = "WARRANT_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// Directory of Cedar policies [default: <data-dir>/policies]
    #[arg(long, env = "WARRANT_POLICY_DIR", value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Longest delegation chain allowed [default: 4]
    #[arg(long, env = "WARRANT_MAX_DELEGATION_DEPTH", value_name = "N")]
    pub max_delegation_depth: Option<u32>,
    /// Algorithm of newly generated signing keys: ES256 or EdDSA [default: ES256]
    #[arg(long, env = "WARRANT_SIGNING_ALG", value_name = "ALG")]
    pub signing_alg: Option<String>,
    /// Log format.
    #[arg(long, env = "WARRANT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Turn on the built-in development user issuer (`warrant dev user-token`).
    /// NOT FOR PRODUCTION: anyone with admin access can mint any user.
    #[arg(long)]
    pub dev: bool,
    /// Log filter, e.g. `info` or `warrant_server=debug` (RUST_LOG syntax).
    #[arg(
        long,
        env = "WARRANT_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Register an agent.
    Create(AgentCreate),
    /// List agents.
    List,
    /// Show one agent.
    Show {
        /// Agent name.
        name: String,
    },
    /// Stop issuing anything to an agent.
    Disable {
        /// Agent name.
        name: String,
    },
    /// Allow a disabled agent again.
    Enable {
        /// Agent name.
        name: String,
    },
    /// Quarantine an agent: every live task it acts in is revoked and it
    /// gets nothing until released (what anomaly detection does past
    /// `quarantine_agent_at`).
    Quarantine {
        /// Agent name.
        name: String,
    },
    /// Lift a quarantine: the agent is active again and its anomaly
    /// signals are forgotten (revoked tasks stay revoked).
    Release {
        /// Agent name.
        name: String,
    },
    /// Remove an agent from the inventory (with its instances).
    Delete {
        /// Agent name.
        name: String,
    },
    /// Print a one-time join token that attests one instance of the agent
    /// (POST /v1/attest/join), for hosts where neither unix nor OIDC fits.
    JoinToken {
        /// Agent name.
        name: String,
        /// How long it may be redeemed.
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        ttl: String,
    },
    /// List an agent's attested instances.
    Instances {
        /// Agent name.
        name: String,
    },
    /// Workloads that tried to attest and matched no agent, with the
    /// command that would register each (from the audit trail).
    Discovered {
        /// Look this far back (a duration such as 30d, or an RFC 3339 time).
        #[arg(long, default_value = "30d")]
        since: String,
    },
}

#[derive(Debug, Args)]
pub struct AgentCreate {
    /// Agent name: lower-case letters, digits and hyphens, starting with a letter.
    pub name: String,
    /// Who answers for the agent (person, team or list).
    #[arg(long)]
    pub owner: String,
    /// Environment it runs in, e.g. prod or staging.
    #[arg(long)]
    pub env: String,
    /// What the agent is for.
    #[arg(long)]
    pub purpose: Option<String>,
    /// Trust level: low, medium or high [default: low]
    #[arg(long)]
    pub trust: Option<String>,
    /// KIND:KEY=VALUE fact its instances must prove (repeatable), e.g. unix:uid=1001, k8s:ns=agents.
    #[arg(long = "selector", value_name = "KIND:KEY=VALUE")]
    pub selectors: Vec<String>,
    /// Longest lifetime of anything issued to it, e.g. 15m [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub max_ttl: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// List signing keys and their state.
    List,
    /// Generate a new signing key: published now, signing after --activate-in.
    Rotate {
        /// ES256 or EdDSA [default: the configured algorithm]
        #[arg(long)]
        alg: Option<String>,
        /// How long to publish the key before it signs, so relying parties' JWKS caches pick it up [default: 5m]
        #[arg(long, value_name = "DURATION")]
        activate_in: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct SecretValueArgs {
    /// The user this secret belongs to (per-user credentials; a route with a
    /// `per_user_secret` credential picks it by the task token's user).
    #[arg(long, value_name = "USER")]
    pub for_user: Option<String>,
    /// Read the value from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// What the secret is for.
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a new secret; the value comes from standard input or --from-file
    /// (one trailing newline is removed).
    Put {
        /// The secret's name, as routes name it (e.g. `openai-key`).
        name: String,
        #[command(flatten)]
        value: SecretValueArgs,
    },
    /// List secrets: names, versions, owners, when stored and last used; never values.
    List,
    /// Replace a secret's value (a new version under a fresh data key; the
    /// old value is overwritten); the value comes as for `put`.
    Rotate {
        /// The secret's name.
        name: String,
        #[command(flatten)]
        value: SecretValueArgs,
    },
    /// Delete a secret.
    Delete {
        /// The secret's name.
        name: String,
        /// The user it belongs to, for a per-user secret.
        #[arg(long, value_name = "USER")]
        for_user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsoleCmd {
    /// The console sessions this broker holds: who, how, since when.
    Sessions,
    /// End every console session of one actor: a person signed in by single
    /// sign-on (`user:<namespace>/<subject>`) or an admin token
    /// (`admin-token:<id>`; revoking the token does that too).
    End {
        /// The actor, as `warrant console sessions` shows it.
        actor: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalCmd {
    /// Approvals, newest first (pending ones unless --state says).
    List {
        /// pending, approved, denied, used, expired or all.
        #[arg(long, default_value = "pending")]
        state: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Everything an approval covers: the exact request (tool and
    /// arguments, or method, path and body digest, or audiences and
    /// scopes), who asks, for whom, and where it stands.
    Show {
        /// The approval id (apr_...).
        id: String,
    },
    /// Grant it: the same request, sent again, goes ahead once.
    Approve {
        /// The approval id (apr_...).
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse it: the same request is refused until the approval lapses.
    Deny {
        /// The approval id (apr_...).
        id: String,
        /// Why (recorded, and told to the agent).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum McpCmd {
    /// List the MCP servers in force: transport, audience, and how many of
    /// their tools are usable, changed or held for approval.
    Servers,
    /// List an MCP server's tools (or every server's) with their pin status.
    Tools {
        /// The server's name in warrant.toml.
        server: Option<String>,
    },
    /// Accept a tool's new or changed definition, so it is listed and
    /// callable. Without --digest, shows the definition waiting and its
    /// digest, and approves nothing.
    Approve {
        /// The server's name.
        server: String,
        /// The tool's name.
        tool: String,
        /// The digest of the definition you reviewed (64 hex digits, as
        /// shown): if the server announced another since, nothing is
        /// approved.
        #[arg(long)]
        digest: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCmd {
    /// Mint an admin bearer token (shown once; stored hashed).
    Create {
        /// admin, auditor (read-only) or approver.
        #[arg(long)]
        role: String,
        /// Lifetime [default: 24h, at most 90d]
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// A label to tell tokens apart.
        #[arg(long)]
        name: Option<String>,
        /// The person who holds it, as users are named (`<namespace>/<subject>`,
        /// e.g. `dev/alice`): an approver never approves a request made for
        /// themselves.
        #[arg(long, value_name = "USER")]
        person: Option<String>,
    },
    /// List admin tokens (never their values).
    List,
    /// Revoke an admin token by id.
    Revoke {
        /// The token id (adt_...).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit records, most recent last.
    List {
        /// Only records about this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only this event kind or its sub-kinds (e.g. `admin` or `admin.agent.create`).
        #[arg(long)]
        event: Option<String>,
        /// Only records since an RFC 3339 time or a duration ago (e.g. 1h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only records about this user.
        #[arg(long)]
        user: Option<String>,
        /// Only records of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only records of this transaction.
        #[arg(long)]
        txn: Option<String>,
        /// Only records with this decision.
        #[arg(long, value_parser = ["allow", "deny", "pending", "error"])]
        decision: Option<String>,
    },
    /// Recompute the keyed hash chain and check it against the stored
    /// checkpoints and any given ones; on tampering, name the first bad
    /// record and exit 4.
    Verify {
        /// A file of signed checkpoints (one per line), as `warrant audit
        /// checkpoint` printed them and you kept them elsewhere. Repeatable.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<std::path::PathBuf>,
    },
    /// Verify an audit export (the files a `[[audit_export]]` file sink
    /// wrote, oldest first: `audit.jsonl.2 audit.jsonl.1 audit.jsonl`): every
    /// record's keyed hash, the links between them, and that they are the
    /// broker's own records. Exit 4 on the first bad one.
    VerifyExport {
        /// The files, oldest first (`-` for standard input).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Make a signed checkpoint of the chain's head now and print it, to be
    /// kept outside the broker: later, `audit verify --checkpoint` detects
    /// records deleted from the end of the chain since.
    Checkpoint,
    /// Print the delegation tree of a transaction: user, agents, every token
    /// issued and every decision.
    Trace {
        /// The transaction id (`txn_...`), or the id of any task in it
        /// (`tsk_...`).
        txn: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy directory [default: the configured policy directory]
    /// as the running broker would load it: against the argument types of the
    /// MCP tools it has pinned. Without a reachable broker (or with
    /// --offline), tool arguments are not checked.
    Validate {
        /// Directory of *.cedar files.
        dir: Option<PathBuf>,
        /// Check locally only, without the broker's pinned MCP tools.
        #[arg(long)]
        offline: bool,
    },
    /// Reload the broker's policies without a restart.
    Reload,
    /// Show the policy set in force.
    Show,
    /// Print the Cedar schema policies are validated against.
    Schema,
    /// Ask the running broker whether a request would be allowed (audited).
    Check(Box<PolicyCheckArgs>),
}

#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// The agent (its inventory facts are used).
    #[arg(long)]
    pub agent: String,
    /// The action, e.g. token:exchange.
    #[arg(long)]
    pub action: String,
    /// The resource, e.g. 'Audience::"https://api.openai.com"'.
    #[arg(long)]
    pub resource: String,
    /// The instance id.
    #[arg(long)]
    pub instance: Option<String>,
    /// The attestor (unix, oidc, join).
    #[arg(long)]
    pub attestor: Option<String>,
    /// The user the work is for.
    #[arg(long)]
    pub user: Option<String>,
    /// A group of the user (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// A requested scope (repeatable).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Delegation depth.
    #[arg(long, default_value_t = 0)]
    pub depth: u32,
    /// An agent in the delegation chain (repeatable).
    #[arg(long = "chain")]
    pub chain: Vec<String>,
    /// Source IP address.
    #[arg(long)]
    pub source_ip: Option<String>,
    /// Evaluate at this RFC 3339 time instead of now.
    #[arg(long)]
    pub time: Option<String>,
    /// For http:request: method.
    #[arg(long)]
    pub method: Option<String>,
    /// For http:request: path.
    #[arg(long)]
    pub path: Option<String>,
    /// For http:request: upstream host.
    #[arg(long)]
    pub host: Option<String>,
    /// For mcp:call_tool: the call's arguments, a JSON object, e.g.
    /// '{"path": "/etc/passwd"}'.
    #[arg(long)]
    pub arguments: Option<String>,
}
