//! Wire types of the admin API, shared by the broker and the CLI.
//!
//! Requests carry user input as plain strings; the broker validates them (one
//! place, so every refusal is audited) and answers with the typed records.

use serde::{Deserialize, Serialize};

use crate::admin::Role;
use crate::audit::{AuditRecord, ChainBreak};
use crate::decision::{Decision, Effect};
use crate::keys::Alg;
use crate::time::Timestamp;

/// `POST /admin/v1/agents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Name (lower-case slug).
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Environment.
    pub env: String,
    /// Purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `low`, `medium` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
    /// `KIND:KEY=VALUE` selectors.
    #[serde(default)]
    pub selectors: Vec<String>,
    /// Longest lifetime, e.g. `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<String>,
}

/// A signing key as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: Alg,
    /// `next`, `active`, `retired` or `expired`.
    pub state: String,
    /// Generated and published.
    pub created_at: Timestamp,
    /// Signs from.
    pub activates_at: Timestamp,
    /// Stopped signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
    /// Leaves the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_until: Option<Timestamp>,
}

/// `POST /admin/v1/keys/rotate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeys {
    /// `ES256` or `EdDSA`; default: the configured algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Delay before the new key signs, e.g. `5m`; default: the JWKS cache lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_in: Option<String>,
}

/// `POST /admin/v1/admin-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminToken {
    /// `admin`, `auditor` or `approver`.
    pub role: String,
    /// Lifetime, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// A label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The person who holds it, as users are named (`<namespace>/<subject>`,
    /// optionally written `user:<namespace>/<subject>`): separation of
    /// duties keeps them from approving requests made for themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

/// The answer to `POST /admin/v1/admin-tokens`: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAdminToken {
    /// Public id.
    pub id: String,
    /// The bearer token. Shown once; warrant keeps only its hash.
    pub token: String,
    /// Role.
    pub role: Role,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// `GET /admin/v1/audit` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditListQuery {
    /// Agent name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Event kind or prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// RFC 3339 time, or a duration meaning "that long ago" (`1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Most records to return (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The user the work was for (`alice`, `user:alice` or a SPIFFE ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    /// Decision: `allow`, `deny`, `pending` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// `GET /admin/v1/audit/trace/{txn}` answer: a delegation tree and its records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditTrace {
    /// The transaction.
    pub txn: String,
    /// Its tasks, in issuance order.
    pub tasks: Vec<crate::task::TaskRecord>,
    /// Every audit record of the transaction, oldest first.
    pub records: Vec<AuditRecord>,
}

/// `GET /admin/v1/audit` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    /// Records, oldest first.
    pub records: Vec<AuditRecord>,
}

/// `GET /admin/v1/audit/verify` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Whether the whole chain verified.
    pub ok: bool,
    /// Records verified.
    pub verified: u64,
    /// The chain head's hash (hex).
    pub head: String,
    /// How many of the verified records (the first ones) predate the keyed
    /// chain and are hash-chained only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unkeyed: u64,
    /// The first broken record, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenRecord>,
    /// The checkpoints checked against the chain (stored and given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointCheck>,
}

/// `POST /admin/v1/audit/verify-export`: consecutive lines of an audit
/// export, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyExport {
    /// The lines, as the sink wrote them.
    pub lines: Vec<String>,
}

/// `POST /admin/v1/audit/verify-export`: what part of an audit export (its
/// lines, as a sink wrote them) verified against the broker's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportVerification {
    /// Whether every line verified and the part continues the broker's chain.
    pub ok: bool,
    /// Records verified.
    pub verified: u64,
    /// The first and last sequence numbers given.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// The hash of the last verified record (hex).
    pub head: String,
    /// The broker's newest record now: an export that ends well before it
    /// is behind or cut short.
    #[serde(default)]
    pub broker_last_seq: u64,
    /// The first broken record, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenRecord>,
}

/// `POST /admin/v1/audit/verify`: verify, also against these exported
/// checkpoints (signed JWS, as `warrant audit checkpoint` prints them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerify {
    /// The checkpoints.
    #[serde(default)]
    pub checkpoints: Vec<String>,
}

/// How one checkpoint compared with the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCheck {
    /// The record it is about.
    pub seq: u64,
    /// Whether the chain agrees with it.
    pub ok: bool,
    /// `valid`, `invalid`, or why it could not be checked.
    pub signature: String,
    /// What is wrong, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenRecord {
    /// Sequence number.
    pub seq: u64,
    /// What is wrong.
    pub why: String,
}

impl From<ChainBreak> for BrokenRecord {
    fn from(b: ChainBreak) -> Self {
        Self {
            seq: b.seq,
            why: b.why,
        }
    }
}

/// `GET /admin/v1/policy` and a successful reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The policy directory.
    pub dir: String,
    /// Policy ids in force.
    pub policies: Vec<String>,
    /// Files loaded.
    pub files: Vec<String>,
    /// SHA-256 of the files.
    pub digest: String,
    /// When loaded.
    pub loaded_at: Timestamp,
    /// Validator warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One policy file sent for validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFileText {
    /// Its name, as problems show it.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// `POST /admin/v1/policy/validate`: would these files load, with the MCP
/// tools the broker has pinned?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyValidate {
    /// The files, in name order.
    pub files: Vec<PolicyFileText>,
}

/// What validation found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyValidation {
    /// Whether the set would load.
    pub ok: bool,
    /// Policy ids, if it would.
    pub policies: Vec<String>,
    /// SHA-256 of the files, if it would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why it would not.
    pub problems: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// How many pinned MCP tools' argument types it was checked against
    /// (`None` offline: not checked against any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<usize>,
}

/// `POST /admin/v1/policy/check`: would this request be allowed?
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCheck {
    /// The agent (must be inventoried; its facts are used).
    pub agent: String,
    /// The instance id (default `check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The attestor (default `unix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestor: Option<String>,
    /// The action, e.g. `token:exchange`.
    pub action: String,
    /// The resource, e.g. `Audience::"https://api.openai.com"`.
    pub resource: String,
    /// The user the work is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Requested scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Delegation depth.
    #[serde(default)]
    pub depth: u32,
    /// Agent names in the chain.
    #[serde(default)]
    pub chain: Vec<String>,
    /// Source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Evaluation time (RFC 3339), default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// For `http:request`: method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// For `http:request`: path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `http:request`: host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For `mcp:call_tool`: the call's arguments (a JSON object), typed by
    /// the broker's pinned definition of the tool, as the gateway does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The answer to a policy check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCheckResult {
    /// The effect.
    pub effect: Effect,
    /// Determining policies and errors.
    pub decision: Decision,
}

/// Error body of every admin API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: String,
    /// What to do.
    pub message: String,
}

/// `POST /admin/v1/agents/{name}/join-tokens` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// How long it may be redeemed, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// The answer: the only time the join token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedJoinToken {
    /// Public id.
    pub id: String,
    /// The one-time token. Shown once; warrant keeps only its hash.
    pub token: String,
    /// The agent it admits.
    pub agent: String,
    /// Until when it may be redeemed.
    pub expires_at: Timestamp,
}

/// The answer to `POST /admin/v1/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// What was revoked.
    pub target: String,
    /// Task ids revoked now (descendants included).
    pub tasks: Vec<String>,
    /// How long the revocation took to commit, in microseconds.
    pub micros: u64,
}

/// `POST /admin/v1/dev/user-token` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDevUserToken {
    /// The user.
    pub user: String,
    /// Their groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lifetime, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedDevUserToken {
    /// The user token.
    pub token: String,
    /// The user.
    pub user: String,
    /// The development issuer.
    pub issuer: String,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// `POST /admin/v1/secrets` (put) and `POST /admin/v1/secrets/{name}/rotate`.
/// Deserialize only: the value is a [`SecretValue`](crate::secret::SecretValue),
/// which never serialises; the CLI writes this body by hand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The name (ignored on rotate, where the path names it).
    #[serde(default)]
    pub name: Option<String>,
    /// The user it belongs to, for per-user credentials.
    #[serde(default)]
    pub for_user: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The value.
    pub value: crate::secret::SecretValue,
}

/// A stored secret as the admin API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The name.
    pub name: String,
    /// The user it belongs to; absent for a shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The current version.
    pub version: u32,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who stored it.
    pub created_by: String,
    /// When the first version was stored.
    pub created_at: Timestamp,
    /// When the current version was stored.
    pub updated_at: Timestamp,
    /// When a request last used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
}

impl From<&crate::secret::SecretRecord> for SecretInfo {
    fn from(s: &crate::secret::SecretRecord) -> Self {
        Self {
            name: s.name.to_string(),
            owner: s.owner.clone(),
            version: s.version,
            description: s.description.clone(),
            created_by: s.created_by.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            last_used_at: s.last_used_at,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What changed in one kind of configured thing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// Names new in the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Names no longer in the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Names whose settings changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

impl Changed {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The configuration in force: `POST /admin/v1/reload` and `warrant status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The config file, if any.
    pub file: Option<String>,
    /// SHA-256 of the file's bytes (what `sha256sum` prints).
    pub digest: Option<String>,
    /// When it was put in force.
    pub loaded_at: Timestamp,
}

/// The answer to `POST /admin/v1/reload`: routes, MCP servers, user
/// issuers and trust providers from the config file, then the policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The configuration now in force.
    pub config: ConfigStatus,
    /// `[[route]]` tables.
    pub routes: Changed,
    /// `[[mcp_server]]` tables.
    pub mcp_servers: Changed,
    /// `[[user_issuer]]` tables (by issuer URL).
    pub user_issuers: Changed,
    /// `[[trust_provider]]` tables.
    pub trust_providers: Changed,
    /// Keys that changed in the file but apply only at the next start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
    /// The policy set now in force.
    pub policy: PolicyStatus,
}

/// One route in force: `GET /admin/v1/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Its name: `http://<edge>/<name>/...`.
    pub name: String,
    /// Where requests go.
    pub upstream: String,
    /// The audience task tokens for it carry.
    pub audience: String,
    /// Where the agent puts its task token.
    pub agent_header: String,
    /// The credential provider's kind.
    pub credential: String,
    /// Its `allow` rules, as `METHODS path` lines.
    pub allow: Vec<String>,
}

/// One MCP server in force: `GET /admin/v1/mcp/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServerInfo {
    /// Its name: `http://<edge>/mcp/<name>`.
    pub name: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// The command, or the upstream URL.
    pub target: String,
    /// The audience task tokens for it carry.
    pub audience: String,
    /// Scopes a task token needs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Tools usable now.
    pub tools: usize,
    /// Tools whose definition changed since approval.
    pub changed: usize,
    /// Tools new since the server was pinned, held for approval.
    pub held: usize,
    /// Whether its tools were listed since it was put in force.
    pub listed: bool,
}

/// `GET /admin/v1/status`: what a running broker is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// The broker's version.
    pub version: String,
    /// The issuer URL.
    pub issuer: String,
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// The API listener.
    pub api_addr: String,
    /// The edge listener.
    pub edge_addr: String,
    /// The admin socket.
    pub admin_socket: String,
    /// The agent socket.
    pub agent_socket: String,
    /// The store (`sqlite:<path>`).
    pub store: String,
    /// When the broker started.
    pub started_at: Timestamp,
    /// Seconds since.
    pub uptime_secs: i64,
    /// The configuration in force.
    pub config: ConfigStatus,
    /// The policy set in force: SHA-256 of its files and how many policies.
    pub policy_digest: String,
    /// Policies in force.
    pub policies: usize,
    /// Ids of the published signing keys, the active one first.
    pub key_ids: Vec<String>,
    /// Routes in force.
    pub routes: usize,
    /// MCP servers in force.
    pub mcp_servers: usize,
    /// This broker's id among those sharing a store.
    pub broker: String,
}

/// One broker sharing the store, as it last reported itself (every 2 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its id (`brk_...`, new at each start).
    pub broker: String,
    /// Its version.
    pub version: String,
    /// Its API listener.
    pub api_addr: String,
    /// The policy set it enforces.
    pub policy_digest: String,
    /// Its config file's digest, if it has one.
    pub config_digest: Option<String>,
    /// The last change of the shared store it applied.
    pub feed_position: u64,
    /// Milliseconds from a change's commit to it applying it, last time.
    pub feed_lag_ms: i64,
    /// Whether it hears the change feed.
    pub feed_connected: bool,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last reported.
    pub seen_at: Timestamp,
}

/// `GET /admin/v1/cluster` and `warrant status --all`: every broker that
/// reported lately, and where they differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The store they share.
    pub store: String,
    /// The brokers that reported in the last 10 s, by id.
    pub members: Vec<ClusterMember>,
    /// What differs between them, in words (policy or config digests,
    /// versions, a broker deaf to the feed); empty when they agree.
    pub diverged: Vec<String>,
}

/// `GET /admin/v1/health`: whether the identity programme is reducing risk
/// (docs/health.md says why each figure matters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// When it was computed.
    pub generated_at: crate::time::Timestamp,
    /// Stored secrets: the standing credentials warrant still holds.
    pub secrets: SecretsHealth,
    /// Upstream requests since the broker started, by credential class.
    pub upstream: UpstreamHealth,
    /// Task tokens issued since the broker started: for a user, or for itself.
    pub grants: GrantsHealth,
    /// The inventory.
    pub agents: AgentsHealth,
    /// Instances whose identity has not expired.
    pub instances_alive: u64,
    /// From a revocation or quarantine being triggered to its enforcement,
    /// since the broker started, by trigger (`revoke`, `quarantine`, `anomaly`).
    pub enforcement: std::collections::BTreeMap<String, Enforcement>,
    /// Step-up approvals waiting for a person.
    pub approvals: ApprovalsHealth,
    /// Agents with a non-zero anomaly score, highest first.
    pub anomalies: Vec<AnomalyScore>,
}

/// Standing credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsHealth {
    /// Stored secrets (shared and per user).
    pub stored: u64,
    /// Of which per user.
    pub per_user: u64,
    /// Days since the least recently rotated one was set.
    pub oldest_rotation_days: Option<u64>,
    /// Secrets not used for 30 days (or never, and stored 30 days ago): candidates to delete.
    pub unused_30d: Vec<String>,
    /// Each secret: name (`name@owner` for a per-user one), version, days since rotation, last use.
    pub list: Vec<SecretHealth>,
}

/// One stored secret's age and use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHealth {
    /// `name`, or `name@owner`.
    pub name: String,
    /// Its version (rotations + 1).
    pub version: u32,
    /// Days since it was last set.
    pub rotated_days_ago: u64,
    /// When it was last injected, if ever.
    pub last_used_at: Option<crate::time::Timestamp>,
}

/// Upstream requests by credential class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamHealth {
    /// Requests that carried an injected credential.
    pub requests: u64,
    /// Of which with a credential minted per use (warrant JWT, OAuth token).
    pub ephemeral: u64,
    /// `ephemeral / requests`, when there were any.
    pub ephemeral_share: Option<f64>,
    /// Requests by credential kind.
    pub by_kind: std::collections::BTreeMap<String, u64>,
}

/// Task tokens issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantsHealth {
    /// By token exchange, for a user or an upstream task (delegation).
    pub delegated: u64,
    /// For the agent itself (client credentials).
    pub self_acting: u64,
    /// `delegated / (delegated + self_acting)`, when there were any.
    pub delegated_share: Option<f64>,
}

/// The inventory's hygiene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsHealth {
    /// Agents registered.
    pub total: u64,
    /// By state.
    pub active: u64,
    /// See `active`.
    pub disabled: u64,
    /// See `active`.
    pub quarantined: u64,
    /// Agents whose owner is a placeholder (`-`, `none`, `unknown`, `tbd`, ...).
    pub without_owner: Vec<String>,
    /// Active agents with no attestation in 30 days (or ever, registered 30 days ago).
    pub not_attested_30d: Vec<String>,
}

/// How fast revocations are enforced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforcement {
    /// How many.
    pub count: u64,
    /// Their mean, in milliseconds.
    pub mean_ms: f64,
    /// The slowest, in milliseconds.
    pub max_ms: f64,
}

/// Approvals waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalsHealth {
    /// Pending now.
    pub pending: u64,
    /// How long the oldest has waited, in seconds.
    pub oldest_pending_seconds: Option<u64>,
}

/// An agent's anomaly score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyScore {
    /// The agent.
    pub agent: String,
    /// 0 to 100.
    pub score: i64,
}

/// One sample of the identity-health figures, for charts over time
/// (`GET /admin/v1/health/history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthPoint {
    /// When it was taken.
    pub at: crate::time::Timestamp,
    /// Stored secrets (standing credentials).
    pub secrets_stored: u64,
    /// Share of upstream requests with a credential minted per use.
    pub ephemeral_share: Option<f64>,
    /// Share of task tokens issued for a user or an upstream task.
    pub delegated_share: Option<f64>,
    /// Instances whose identity has not expired.
    pub instances_alive: u64,
    /// Approvals waiting for a person.
    pub approvals_pending: u64,
    /// Agents active.
    pub agents_active: u64,
    /// Agents quarantined.
    pub agents_quarantined: u64,
    /// Agents with a non-zero anomaly score.
    pub agents_anomalous: u64,
}

/// `GET /admin/v1/health/history`: samples oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthHistory {
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// The samples kept (at most a day's worth).
    pub points: Vec<HealthPoint>,
}

/// A console session, as `GET /admin/v1/console/sessions` lists it (never
/// its cookie or the token behind it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSessionInfo {
    /// Who: `admin-token:<id>`, or `user:<namespace>/<subject>`.
    pub actor: String,
    /// The person, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// `admin-token` or `single-sign-on`.
    pub via: String,
    /// Seconds since sign-in.
    pub age_seconds: u64,
    /// Seconds since last use.
    pub idle_seconds: u64,
    /// When it ends at the latest.
    pub ends_at: crate::time::Timestamp,
}

/// `POST /admin/v1/console/sessions/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndConsoleSessions {
    /// Whose sessions end.
    pub actor: String,
}

/// How many sessions ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedConsoleSessions {
    /// Whose.
    pub actor: String,
    /// How many.
    pub ended: u64,
}
