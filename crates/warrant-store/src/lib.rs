//! Persistence behind one trait.
//!
//! [`Store`] is everything the broker keeps: the agent inventory, signing keys
//! (sealed), admin tokens (hashed) and the audit trail. Every mutation takes the
//! audit event that records it and commits both atomically, so a change is never
//! visible without its record, and a failed audit write leaves nothing changed
//! (fail closed).
//!
//! [`SqliteStore`] is the embedded default, owned by one broker.
//! [`PostgresStore`] is shared by several brokers: it passes the same
//! [`conformance`] suite, keeps one audit chain however many brokers write
//! to it, and tells each broker what the others changed ([`Change`]), so
//! what each keeps in memory follows the store.

mod agents;
mod chain;
mod columns;
pub mod conformance;
pub mod copy;
mod error;
mod pins;
mod postgres;
mod sqlite;

use async_trait::async_trait;
pub use error::StoreError;
pub use postgres::{
    FeedStatus, PostgresOptions, PostgresStore, check_postgres_url, shown_postgres_url,
};
pub use sqlite::{SqliteOptions, SqliteStore};
use warrant_core::admin::AdminTokenRecord;
use warrant_core::agent::{Agent, AgentStatus};
use warrant_core::approval::{Approval, ApprovalState, Verdict};
use warrant_core::audit::{AuditEvent, AuditRecord, ChainBreak, ChainHash, Checkpoint};
use warrant_core::identity::{Instance, JoinTokenRecord};
use warrant_core::keys::SigningKeyRecord;
use warrant_core::mcp::{PinOutcome, ToolDefinition, ToolPin};
use warrant_core::name::AgentName;
use warrant_core::secret::{SecretName, SecretRecord};
use warrant_core::task::{RevokeTarget, TaskRecord};
use warrant_core::time::Timestamp;

/// How many approvals may wait at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalLimits {
    /// Per agent, over all its users and instances.
    pub per_agent: u32,
    /// Per requester (a user, else a task) of an agent: one user cannot
    /// use up the agent's share.
    pub per_requester: u32,
}

/// A filter over the audit trail. Results are the newest `limit` matches, in
/// chronological order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records about this agent.
    pub agent: Option<String>,
    /// Only records of this event kind or its sub-kinds (`admin` matches `admin.agent.create`).
    pub event: Option<String>,
    /// Only records at or after this time.
    pub since: Option<Timestamp>,
    /// Only records about this user (as recorded: `user:<subject>` or a SPIFFE ID).
    pub user: Option<String>,
    /// Only records of this task.
    pub task: Option<String>,
    /// Only records of this transaction.
    pub txn: Option<String>,
    /// Only records with this decision (`allow`, `deny`, `pending`, `error`).
    pub decision: Option<String>,
    /// At most this many records.
    pub limit: u32,
}

/// The result of verifying the whole audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Records that verified (all of them when `broken` is `None`).
    pub verified: u64,
    /// The hash of the last verified record.
    pub head: ChainHash,
    /// The first problem, if any.
    pub broken: Option<ChainBreak>,
    /// How many verified records are not keyed (from before the chain was
    /// keyed): hash-chained only.
    pub unkeyed: u64,
}

/// What a committed change touched, for the memory of every broker sharing
/// the store. Each kind names what a broker must drop or re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// An agent was created, changed status or deleted (key: its name).
    Agent,
    /// A task was revoked (key: the task id).
    TaskRevoked,
    /// An instance was blocked (key: the instance id).
    InstanceBlocked,
    /// Instance blocks were lifted (key: the agent re-enabled or deleted).
    BlocksLifted,
    /// A signing key was added (key: its kid).
    SigningKey,
    /// A secret was rotated or deleted (key: `name` or `name@owner`).
    Secret,
    /// A tool pin changed (key: the MCP server).
    ToolPin,
    /// A broker reloaded its configuration and policies (key: the digests
    /// it loaded): the others reload theirs.
    Reload,
    /// The follower missed changes (its position is older than the oldest
    /// change kept): everything must be re-read.
    Resync,
}

impl ChangeKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::TaskRevoked => "task.revoked",
            Self::InstanceBlocked => "instance.blocked",
            Self::BlocksLifted => "blocks.lifted",
            Self::SigningKey => "signing_key",
            Self::Secret => "secret",
            Self::ToolPin => "tool_pin",
            Self::Reload => "reload",
            Self::Resync => "resync",
        }
    }

    /// The kind with this stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Agent,
            Self::TaskRevoked,
            Self::InstanceBlocked,
            Self::BlocksLifted,
            Self::SigningKey,
            Self::Secret,
            Self::ToolPin,
            Self::Reload,
            Self::Resync,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One committed change, in commit order across every broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position in the feed: strictly increasing in commit order, so a
    /// follower applies each once and never an older after a newer.
    pub version: u64,
    /// What it touched.
    pub kind: ChangeKind,
    /// Which one.
    pub key: String,
    /// When the writing broker committed it (its clock).
    pub time: Timestamp,
}

/// How long a broker sharing a store may go without reading the change
/// feed before it stops vouching for task tokens (the feed is read at
/// least every half second while the database answers).
pub const FEED_STALE: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything warrant persists.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the store answers, and that its audit trail is as this
    /// broker wrote it (nothing removed from its end, no foreign trigger).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Registers an agent. `Conflict` if the name is taken.
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<Agent, StoreError>;
    /// One agent by name.
    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError>;
    /// Every agent, by name.
    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError>;
    /// Changes an agent's status. `NotFound` if there is no such agent.
    async fn set_agent_status(
        &self,
        name: &AgentName,
        status: AgentStatus,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Agent, StoreError>;
    /// Removes an agent, returning what it was. `NotFound` if there is no such agent.
    async fn delete_agent(&self, name: &AgentName, audit: AuditEvent) -> Result<Agent, StoreError>;

    /// Adds a signing key. `Conflict` if the kid exists.
    async fn insert_signing_key(
        &self,
        key: SigningKeyRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;
    /// Adds the first signing key, unless there is one already (another
    /// broker sharing the store started first): checked and inserted in one
    /// transaction. Returns whether this one was added.
    async fn insert_first_signing_key(
        &self,
        key: SigningKeyRecord,
        audit: AuditEvent,
    ) -> Result<bool, StoreError>;
    /// Every signing key.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Adds an admin token (hash only).
    async fn create_admin_token(
        &self,
        token: AdminTokenRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;
    /// The token with this hash, valid or not.
    async fn admin_token_by_hash(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<AdminTokenRecord>, StoreError>;
    /// Every admin token, newest first.
    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError>;
    /// Revokes a token by id. `NotFound` if there is no such token.
    async fn revoke_admin_token(
        &self,
        id: &str,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<AdminTokenRecord, StoreError>;

    /// Creates or refreshes an instance (keeping its `first_seen`) with the
    /// audit record of the attestation, atomically. Returns the stored instance.
    async fn record_instance(
        &self,
        instance: Instance,
        audit: AuditEvent,
    ) -> Result<Instance, StoreError>;
    /// An agent's instances, most recently seen first.
    async fn list_instances(&self, agent: &AgentName) -> Result<Vec<Instance>, StoreError>;
    /// Instances whose latest identity has not expired at `now`, per agent name.
    async fn live_instances(&self, now: Timestamp) -> Result<Vec<(String, u64)>, StoreError>;

    /// Adds a join token (hash only).
    async fn create_join_token(
        &self,
        token: JoinTokenRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;
    /// The join token with this hash, redeemed or not.
    async fn join_token_by_hash(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<JoinTokenRecord>, StoreError>;
    /// Marks the join token redeemed and records the instance it admitted, with
    /// the audit record, atomically. Exactly one of any number of concurrent
    /// redemptions succeeds; the others get `Conflict` and change nothing.
    /// A token that expired by `now` is a `Conflict` too.
    async fn redeem_join_token(
        &self,
        hash: &[u8; 32],
        now: Timestamp,
        instance: Instance,
        audit: AuditEvent,
    ) -> Result<Instance, StoreError>;

    /// Records an issued task with its audit record, atomically. `Conflict` if
    /// its parent task was revoked or its instance is blocked meanwhile (the
    /// check and the insert are one transaction, so a revocation either sees
    /// the new task and revokes it too, or the task is never recorded).
    async fn record_task(&self, task: TaskRecord, audit: AuditEvent) -> Result<(), StoreError>;
    /// One task.
    async fn get_task(&self, task: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Every task of a transaction, in issuance order.
    async fn tasks_of_txn(&self, txn: &str) -> Result<Vec<TaskRecord>, StoreError>;
    /// Revokes `target` and every task descending from it, with the audit
    /// record; blocks an instance, disables an agent. Returns the task ids
    /// revoked now (already-revoked ones are left as they were).
    async fn revoke(
        &self,
        target: RevokeTarget,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Vec<String>, StoreError>;
    /// What is revoked and still matters at `now`: task ids of unexpired revoked
    /// tasks, and blocked instances. Loaded into memory at start.
    async fn revoked_state(&self, now: Timestamp)
    -> Result<(Vec<String>, Vec<String>), StoreError>;

    /// Stores the first version of a secret with its audit record.
    /// `Conflict` if `name` already exists for that owner.
    async fn create_secret(
        &self,
        secret: SecretRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;
    /// Replaces a secret's sealed value with the next version, if its stored
    /// version is still `secret.version - 1` (`Conflict` if another rotation
    /// won, `NotFound` if there is no such secret). The old version's sealed
    /// value is overwritten, so it cannot be recovered from the store.
    async fn rotate_secret(
        &self,
        secret: SecretRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;
    /// Deletes a secret (every version). `NotFound` if there is none.
    async fn delete_secret(
        &self,
        name: &SecretName,
        owner: Option<&str>,
        audit: AuditEvent,
    ) -> Result<SecretRecord, StoreError>;
    /// One secret, sealed.
    async fn get_secret(
        &self,
        name: &SecretName,
        owner: Option<&str>,
    ) -> Result<Option<SecretRecord>, StoreError>;
    /// Every secret, sealed, by name then owner.
    async fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError>;
    /// Records when secrets were last used (not audited: each use is
    /// already recorded by the request that used it).
    async fn touch_secrets(
        &self,
        used: Vec<(SecretName, Option<String>, Timestamp)>,
    ) -> Result<(), StoreError>;

    /// Records that `server` announces `def`: a tool seen for the first time
    /// is pinned, or, with `hold_new`, held as `New` with the announced
    /// definition pending and none approved; a pinned tool whose definition
    /// differs becomes `Changed` (the announced one pending, the approved one
    /// kept). `audit` is recorded (its `event` set to `mcp.tool.pin`,
    /// `mcp.tool.new` or `mcp.tool.change`) only when something changed.
    async fn observe_tool(
        &self,
        server: &str,
        def: ToolDefinition,
        hold_new: bool,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<PinOutcome, StoreError>;
    /// Accepts a changed or new tool's pending definition, the one with
    /// `digest` (what the approver reviewed). `NotFound` if there is no such
    /// tool, `Conflict` if nothing is pending or what is pending now has
    /// another digest.
    async fn approve_tool(
        &self,
        server: &str,
        tool: &str,
        digest: &str,
        approved_by: &str,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<ToolPin, StoreError>;
    /// Every pin, or one server's, by server then tool.
    async fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError>;
    /// Notes that `server`'s tools were listed (even none); returns whether
    /// they had been listed before. Once a server has been listed, a tool
    /// it announces for the first time can be held for approval.
    async fn note_server_listed(&self, server: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// Appends a record on its own (a decision, a refusal). Durable on return.
    /// Asks for `approval` (pending): unless an approval with its binding
    /// is pending or granted and unexpired at `approval.created_at`, which
    /// is returned instead with nothing written (`false`). Refused when
    /// the agent already has `limits.per_agent` pending, or its requester
    /// (user, else task) `limits.per_requester`. Rows expired for 30 days
    /// are removed.
    async fn request_approval(
        &self,
        approval: Approval,
        limits: ApprovalLimits,
        audit: AuditEvent,
    ) -> Result<(Approval, bool), StoreError>;

    /// The newest refusal of the request `loose` names (whatever its task
    /// or instance) still standing at `now`.
    async fn standing_denial(
        &self,
        loose: &str,
        now: Timestamp,
    ) -> Result<Option<Approval>, StoreError>;

    /// The approval `id`.
    async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError>;

    /// The newest `limit` approvals in `state` at `now` (all when `None`),
    /// newest first.
    async fn list_approvals(
        &self,
        state: Option<ApprovalState>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError>;

    /// Decides the pending approval `id` (granted ones usable until
    /// `now + ttl`). [`StoreError::Precondition`] when it is not pending or
    /// has expired: exactly one decision wins.
    async fn decide_approval(
        &self,
        id: &str,
        verdict: Verdict,
        by: &str,
        reason: Option<String>,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Approval, StoreError>;

    /// Spends the granted approval `id` on its request.
    /// [`StoreError::Precondition`] when it is not granted, already spent or
    /// expired: exactly one use wins, through any broker.
    async fn use_approval(
        &self,
        id: &str,
        now: Timestamp,
        audit: AuditEvent,
    ) -> Result<Approval, StoreError>;

    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord, StoreError>;
    /// Appends several records in one transaction, in order (records of
    /// requests already answered, gathered so each does not cost a commit).
    /// Durable on return; if one cannot be written, none is.
    async fn append_audits(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;
    /// Records matching `query`.
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
    /// Recomputes the whole chain.
    async fn verify_audit(&self) -> Result<ChainReport, StoreError>;

    /// At most `limit` records after `seq`, in chain order: what a reader
    /// following the trail as it is committed (export, anomaly detection)
    /// reads next.
    async fn audit_after(
        &self,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<warrant_core::audit::StoredRow>, StoreError>;
    /// The newest record's sequence number and hash (`None` when empty).
    async fn audit_head(&self) -> Result<Option<(u64, ChainHash)>, StoreError>;
    /// The last audit record this store's writer wrote (`None`: none yet),
    /// once it checked the trail is as it left it (nothing past it, that
    /// record unchanged, no foreign trigger): what a checkpoint may vouch
    /// for. `AuditUnavailable` otherwise.
    async fn audit_written_head(&self) -> Result<Option<(u64, ChainHash)>, StoreError>;
    /// The hash of record `seq`, if there is one.
    async fn audit_hash(&self, seq: u64) -> Result<Option<ChainHash>, StoreError>;
    /// Keeps a checkpoint (one per sequence number; a second is ignored).
    async fn add_checkpoint(&self, cp: Checkpoint) -> Result<(), StoreError>;
    /// The newest checkpoints, newest first.
    async fn list_checkpoints(&self, limit: usize) -> Result<Vec<Checkpoint>, StoreError>;

    /// The changes committed to this store by any broker, in commit order,
    /// from when the store was opened: for a store several brokers share.
    /// Taken once (later calls get `None`); `None` too for a store one
    /// broker owns, whose memory follows its own writes.
    fn follow(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        None
    }

    /// Acknowledges that the change `version` from [`Store::follow`], and
    /// every one before it, is applied to this broker's memory: until then
    /// the feed is not [`Store::feed_fresh`].
    fn feed_applied(&self, version: u64) {
        let _ = version;
    }

    /// Whether this broker hears the feed of a shared store (always true for
    /// a store one broker owns).
    fn feed_connected(&self) -> bool {
        true
    }

    /// Whether this broker has read the feed of a shared store recently
    /// enough to know of every revocation committed before the last
    /// [`FEED_STALE`]. When it has not, a use of a task token cannot be
    /// checked against revocations made through other brokers, and is
    /// refused. Always true for a store one broker owns.
    fn feed_fresh(&self) -> bool {
        true
    }

    /// Reports this broker as alive, with what it runs (a shared store
    /// keeps every broker's last report; nothing to do for one broker).
    async fn heartbeat(&self, me: &warrant_core::api::ClusterMember) -> Result<(), StoreError> {
        let _ = me;
        Ok(())
    }

    /// Removes this broker's report (at a clean stop).
    async fn leave(&self, broker: &str) -> Result<(), StoreError> {
        let _ = broker;
        Ok(())
    }

    /// Every broker's last report, newest first (empty for a store one
    /// broker owns).
    async fn brokers(&self) -> Result<Vec<warrant_core::api::ClusterMember>, StoreError> {
        Ok(Vec::new())
    }

    /// Records that this broker applied a reload (`digests` names what it
    /// loaded), so the others sharing the store reload too. Nothing to do
    /// for a store one broker owns.
    async fn announce_reload(&self, digests: &str) -> Result<(), StoreError> {
        let _ = digests;
        Ok(())
    }

    /// Finishes pending writes and stops accepting new ones.
    async fn close(&self);
}
