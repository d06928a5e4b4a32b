//! Audit records and the hash chain that makes them tamper-evident.
//!
//! A caller describes what happened in an [`AuditEvent`]. The store assigns the
//! sequence number and time, serialises the record to its canonical body (JSON,
//! fields in declaration order, empty fields left out), and chains it:
//! `hash = SHA-256(prev_hash || body)`. The body is stored verbatim next to the
//! hash, so verification never depends on re-serialising, and fields added by
//! later releases (always optional) leave old bodies and hashes untouched.
//!
//! INVARIANT (append-only): a record is never updated or deleted; verification
//! detects a changed body, a changed indexed column, a removed or reordered
//! record and a broken link.
//!
//! What an event may carry is listed here, and none of it is a secret: credential
//! *ids* and *kinds*, never values.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

/// What an audit record is about: its `event` field. Every record the
/// broker writes has one of these kinds (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The broker started.
    BrokerStart,
    /// The broker stopped.
    BrokerStop,
    /// The configuration file was reloaded (or a reload refused).
    ConfigReload,
    /// A signing key was generated.
    KeyGenerate,
    /// The policy set was reloaded (or a reload refused).
    PolicyReload,
    /// The policy set was re-typed for MCP tools' arguments.
    PolicyRetype,
    /// An offline decision by `warrant policy check`.
    PolicyCheck,
    /// An identity for a process proven by the kernel.
    AttestUnix,
    /// An identity for a platform token.
    AttestOidc,
    /// An identity for a join token.
    AttestJoin,
    /// An identity renewed.
    AttestRenew,
    /// A token endpoint request refused before its grant was known.
    TokenRequest,
    /// An RFC 8693 token exchange.
    TokenExchange,
    /// A client-credentials grant of an agent acting for itself.
    TokenSelf,
    /// An introspection request.
    TokenIntrospect,
    /// A revocation request at the OAuth endpoint.
    TokenRevoke,
    /// A request through the egress proxy.
    ProxyRequest,
    /// An MCP gateway request refused before its method was handled.
    McpRequest,
    /// An MCP session opened.
    McpSessionOpen,
    /// An MCP session closed.
    McpSessionClose,
    /// An MCP tools listing.
    McpToolsList,
    /// An MCP tool call.
    McpToolCall,
    /// An MCP resources listing.
    McpResourcesList,
    /// An MCP resource templates listing.
    McpResourceTemplatesList,
    /// An MCP resource read.
    McpResourcesRead,
    /// An MCP prompts listing.
    McpPromptsList,
    /// An MCP prompt fetched.
    McpPromptsGet,
    /// An MCP tool's definition pinned on first sight.
    McpToolPin,
    /// A new MCP tool held for approval.
    McpToolNew,
    /// An MCP tool's changed definition held for approval.
    McpToolChange,
    /// An admin request refused at authentication.
    AdminAuth,
    /// An agent registered.
    AdminAgentCreate,
    /// An agent enabled.
    AdminAgentEnable,
    /// An agent disabled or quarantined.
    AdminAgentDisable,
    /// An agent deleted.
    AdminAgentDelete,
    /// A revocation by an administrator.
    AdminRevoke,
    /// A signing key rotation.
    AdminKeyRotate,
    /// An admin token minted.
    AdminTokenCreate,
    /// A join token minted for an agent.
    AdminJoinToken,
    /// A development user token minted (`serve --dev`).
    AdminDevUserToken,
    /// An admin token revoked.
    AdminTokenRevoke,
    /// An MCP tool definition approved.
    AdminMcpApprove,
    /// A secret stored.
    AdminSecretPut,
    /// A secret rotated.
    AdminSecretRotate,
    /// A secret deleted.
    AdminSecretDelete,
    /// The audit trail verified.
    AuditVerify,
    /// A request held for a person's approval (a new approval).
    ApprovalRequest,
    /// A pending approval granted.
    ApprovalApprove,
    /// A pending approval refused.
    ApprovalDeny,
    /// A granted approval spent on the one request it covers.
    ApprovalUse,
    /// The anomaly detector acted (alert or quarantine).
    Anomaly,
    /// An agent quarantined by an administrator.
    AdminAgentQuarantine,
    /// A quarantined agent released.
    AdminAgentRelease,
    /// More kinds of unauthenticated refusal in a window than are kept
    /// apart: counted only.
    RefusalsOverflow,
    /// A person signed in to the console with an admin token.
    AdminConsoleSignIn,
    /// A console session ended by signing out.
    AdminConsoleSignOut,
}

impl Kind {
    /// Every kind.
    pub const ALL: &[Kind] = &[
        Self::BrokerStart,
        Self::BrokerStop,
        Self::ConfigReload,
        Self::KeyGenerate,
        Self::PolicyReload,
        Self::PolicyRetype,
        Self::PolicyCheck,
        Self::AttestUnix,
        Self::AttestOidc,
        Self::AttestJoin,
        Self::AttestRenew,
        Self::TokenRequest,
        Self::TokenExchange,
        Self::TokenSelf,
        Self::TokenIntrospect,
        Self::TokenRevoke,
        Self::ProxyRequest,
        Self::McpRequest,
        Self::McpSessionOpen,
        Self::McpSessionClose,
        Self::McpToolsList,
        Self::McpToolCall,
        Self::McpResourcesList,
        Self::McpResourceTemplatesList,
        Self::McpResourcesRead,
        Self::McpPromptsList,
        Self::McpPromptsGet,
        Self::McpToolPin,
        Self::McpToolNew,
        Self::McpToolChange,
        Self::AdminAuth,
        Self::AdminAgentCreate,
        Self::AdminAgentEnable,
        Self::AdminAgentDisable,
        Self::AdminAgentDelete,
        Self::AdminRevoke,
        Self::AdminKeyRotate,
        Self::AdminTokenCreate,
        Self::AdminJoinToken,
        Self::AdminDevUserToken,
        Self::AdminTokenRevoke,
        Self::AdminMcpApprove,
        Self::AdminSecretPut,
        Self::AdminSecretRotate,
        Self::AdminSecretDelete,
        Self::AuditVerify,
        Self::ApprovalRequest,
        Self::ApprovalApprove,
        Self::ApprovalDeny,
        Self::ApprovalUse,
        Self::Anomaly,
        Self::AdminAgentQuarantine,
        Self::AdminAgentRelease,
        Self::RefusalsOverflow,
        Self::AdminConsoleSignIn,
        Self::AdminConsoleSignOut,
    ];

    /// The dotted name stored in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BrokerStart => "broker.start",
            Self::BrokerStop => "broker.stop",
            Self::ConfigReload => "config.reload",
            Self::KeyGenerate => "key.generate",
            Self::PolicyReload => "policy.reload",
            Self::PolicyRetype => "policy.retype",
            Self::PolicyCheck => "policy.check",
            Self::AttestUnix => "attest.unix",
            Self::AttestOidc => "attest.oidc",
            Self::AttestJoin => "attest.join",
            Self::AttestRenew => "attest.renew",
            Self::TokenRequest => "token.request",
            Self::TokenExchange => "token.exchange",
            Self::TokenSelf => "token.self",
            Self::TokenIntrospect => "token.introspect",
            Self::TokenRevoke => "token.revoke",
            Self::ProxyRequest => "proxy.request",
            Self::McpRequest => "mcp.request",
            Self::McpSessionOpen => "mcp.session.open",
            Self::McpSessionClose => "mcp.session.close",
            Self::McpToolsList => "mcp.tools.list",
            Self::McpToolCall => "mcp.tool.call",
            Self::McpResourcesList => "mcp.resources.list",
            Self::McpResourceTemplatesList => "mcp.resources.templates.list",
            Self::McpResourcesRead => "mcp.resources.read",
            Self::McpPromptsList => "mcp.prompts.list",
            Self::McpPromptsGet => "mcp.prompts.get",
            Self::McpToolPin => "mcp.tool.pin",
            Self::McpToolNew => "mcp.tool.new",
            Self::McpToolChange => "mcp.tool.change",
            Self::AdminAuth => "admin.auth",
            Self::AdminAgentCreate => "admin.agent.create",
            Self::AdminAgentEnable => "admin.agent.enable",
            Self::AdminAgentDisable => "admin.agent.disable",
            Self::AdminAgentDelete => "admin.agent.delete",
            Self::AdminRevoke => "admin.revoke",
            Self::AdminKeyRotate => "admin.key.rotate",
            Self::AdminTokenCreate => "admin.token.create",
            Self::AdminJoinToken => "admin.agent.join-token",
            Self::AdminDevUserToken => "admin.dev.user-token",
            Self::AdminTokenRevoke => "admin.token.revoke",
            Self::AdminMcpApprove => "admin.mcp.approve",
            Self::AdminSecretPut => "admin.secret.put",
            Self::AdminSecretRotate => "admin.secret.rotate",
            Self::AdminSecretDelete => "admin.secret.delete",
            Self::AuditVerify => "audit.verify",
            Self::ApprovalRequest => "approval.request",
            Self::ApprovalApprove => "approval.approve",
            Self::ApprovalDeny => "approval.deny",
            Self::ApprovalUse => "approval.use",
            Self::Anomaly => "anomaly",
            Self::AdminAgentQuarantine => "admin.agent.quarantine",
            Self::AdminAgentRelease => "admin.agent.release",
            Self::RefusalsOverflow => "refusals.overflow",
            Self::AdminConsoleSignIn => "admin.console.signin",
            Self::AdminConsoleSignOut => "admin.console.signout",
        }
    }

    /// The kind of this dotted name, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> Self {
        k.as_str().to_owned()
    }
}

/// The outcome recorded for an event (DESIGN §5 calls the field `decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action was allowed and performed.
    Allow,
    /// The action was refused (policy, authentication, authorisation).
    Deny,
    /// The action waits for a person's approval.
    Pending,
    /// The action failed: bad input or an internal error. Nothing changed.
    Error,
}

impl Outcome {
    /// The outcome as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Pending => "pending",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, as the caller describes it. Fields follow DESIGN §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Dotted event kind, e.g. `admin.agent.create`, `policy.reload`, `policy.decision`.
    pub event: String,
    /// The outcome.
    pub decision: Outcome,
    /// Determining policy ids, or the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Who did it: `local:uid=1000`, `admin-token:adt_...`, `instance:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The agent concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent instance concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The user the work is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The delegation chain, outermost actor first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// The task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The parent task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The transaction id shared by a delegation tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    /// The protocol or surface (`admin-socket`, `admin-http`, `oauth`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The kind of credential issued or used (never its value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<String>,
    /// The id of the credential issued or used (never its value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Scopes granted or requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the issued credential expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// The resource acted on (`Agent::"triage"`, `Audience::"..."`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The action (`agent.create`, `token:exchange`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Where the request came from (address or socket peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Further non-secret facts, e.g. the fields of a created agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

macro_rules! setters {
    ($($field:ident),*) => {$(
        #[doc = concat!("Sets `", stringify!($field), "`.")]
        #[must_use]
        pub fn $field(mut self, v: impl Into<String>) -> Self {
            self.$field = Some(v.into());
            self
        }
    )*};
}

impl AuditEvent {
    /// The event, taken out of `self` for a step that consumes it (a
    /// decision, a write); what is left behind is empty and never written.
    pub fn take(&mut self) -> Self {
        std::mem::replace(self, Self::new(String::new(), Outcome::Deny))
    }

    /// An event with only its kind and outcome set.
    pub fn new(event: impl Into<String>, decision: Outcome) -> Self {
        Self {
            event: event.into(),
            decision,
            reasons: Vec::new(),
            actor: None,
            agent: None,
            instance: None,
            user: None,
            chain: Vec::new(),
            task: None,
            parent: None,
            txn: None,
            protocol: None,
            credential_type: None,
            credential_id: None,
            scope: None,
            expires_at: None,
            resource: None,
            action: None,
            source: None,
            detail: None,
        }
    }

    setters!(
        actor,
        agent,
        instance,
        user,
        task,
        parent,
        txn,
        protocol,
        credential_type,
        credential_id,
        scope,
        resource,
        action,
        source
    );

    /// Adds a reason (a policy id or an error message).
    #[must_use]
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reasons.push(r.into());
        self
    }

    /// Sets the reasons.
    #[must_use]
    pub fn reasons(mut self, r: impl IntoIterator<Item = String>) -> Self {
        self.reasons = r.into_iter().collect();
        self
    }

    /// Sets when the issued credential expires.
    #[must_use]
    pub fn expires(mut self, t: Timestamp) -> Self {
        self.expires_at = Some(t);
        self
    }

    /// Sets the non-secret detail object.
    #[must_use]
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = Some(d);
        self
    }

    /// Cuts every field to a bounded size: what callers supply (a JSON-RPC
    /// method, a path, a header) must not grow the trail, or the memory of
    /// the queues that carry records to it, without limit. A cut says so,
    /// with the size of what was cut.
    pub fn bound(&mut self) {
        cut(&mut self.event, MAX_EVENT_KIND);
        self.reasons.truncate(MAX_LIST);
        for r in &mut self.reasons {
            cut(r, MAX_FIELD * 2);
        }
        self.chain.truncate(MAX_LIST);
        for c in &mut self.chain {
            cut(c, MAX_FIELD);
        }
        for f in [
            &mut self.actor,
            &mut self.agent,
            &mut self.instance,
            &mut self.user,
            &mut self.task,
            &mut self.parent,
            &mut self.txn,
            &mut self.protocol,
            &mut self.credential_type,
            &mut self.credential_id,
            &mut self.scope,
            &mut self.resource,
            &mut self.action,
            &mut self.source,
        ]
        .into_iter()
        .flatten()
        {
            cut(f, MAX_FIELD);
        }
        if let Some(d) = &mut self.detail {
            bound_value(d, 0);
            let size = json_len(d);
            if size > MAX_DETAIL {
                *d = serde_json::json!({ "truncated": true, "bytes": size });
            }
        }
    }

    /// Turns this event into an error record of the same kind: the outcome
    /// becomes `error` and `why` the only reason. Used to audit refused input.
    #[must_use]
    pub fn failed(mut self, outcome: Outcome, why: impl Into<String>) -> Self {
        self.decision = outcome;
        self.reasons = vec![why.into()];
        self
    }
}

/// The longest event kind kept.
const MAX_EVENT_KIND: usize = 128;
/// The longest string field kept (reasons twice as long).
const MAX_FIELD: usize = 1024;
/// The most reasons, chain members, array items or object keys kept.
const MAX_LIST: usize = 64;
/// The deepest nesting of a detail kept.
const MAX_DEPTH: usize = 8;
/// The largest detail kept, serialised.
const MAX_DETAIL: usize = 32 * 1024;

/// The length of `v` as JSON text, counted without building the text.
fn json_len(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Cuts `s` to at most `max` bytes (at a character boundary), saying so.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("…[{dropped} more bytes]"));
}

fn bound_value(v: &mut serde_json::Value, depth: usize) {
    use serde_json::Value;
    match v {
        Value::String(s) => cut(s, MAX_FIELD * 2),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                *v = Value::String("[nested too deep]".into());
                return;
            }
            items.truncate(MAX_LIST);
            for i in items {
                bound_value(i, depth + 1);
            }
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                *v = Value::String("[nested too deep]".into());
                return;
            }
            if map.len() > MAX_LIST {
                let keep: Vec<String> = map.keys().take(MAX_LIST).cloned().collect();
                map.retain(|k, _| keep.contains(k));
            }
            let long: Vec<String> = map
                .keys()
                .filter(|k| k.len() > MAX_FIELD)
                .cloned()
                .collect();
            for k in long {
                if let Some(val) = map.remove(&k) {
                    let mut short = k.clone();
                    cut(&mut short, MAX_FIELD);
                    map.insert(short, val);
                }
            }
            for val in map.values_mut() {
                bound_value(val, depth + 1);
            }
        }
        _ => {}
    }
}

/// A SHA-256 hash in the chain, written as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the first record.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// The hash of a record with `body` following `prev`.
    pub fn link(prev: &ChainHash, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(prev.0);
        h.update(body);
        Self(h.finalize().into())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        let a: [u8; 32] = v
            .try_into()
            .map_err(|_| serde::de::Error::custom("hash is not 32 bytes"))?;
        Ok(Self(a))
    }
}

/// Computes the links of the chain. The keyed one (warrant-token's, with a
/// key derived from the KEK, which the database never holds) makes a link
/// that someone with write access to the database cannot forge: they cannot
/// delete or edit a record and re-link the rest.
pub trait ChainLinker: Send + Sync + fmt::Debug {
    /// The hash of a record with `body` following `prev`.
    fn link(&self, prev: &ChainHash, body: &[u8]) -> ChainHash;
}

/// The canonical body of a record as read back: `seq`, `time`, `keyed`
/// and every field of [`AuditEvent`], in one struct rather than through
/// `#[serde(flatten)]`, which buffers the whole record in an intermediate
/// tree before reading it (twice the work: the anomaly follower's reads of
/// each proxied request's record were 7% of its instructions). A test
/// checks that it names every field [`AuditEvent`] has.
#[derive(Deserialize)]
struct Body {
    seq: u64,
    time: Timestamp,
    #[serde(default)]
    keyed: bool,
    event: String,
    decision: Outcome,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    chain: Vec<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    txn: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    credential_type: Option<String>,
    #[serde(default)]
    credential_id: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expires_at: Option<Timestamp>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

impl Body {
    /// The record's sequence, time, whether it is keyed, and its event.
    fn into_parts(self) -> (u64, Timestamp, bool, AuditEvent) {
        let event = AuditEvent {
            event: self.event,
            decision: self.decision,
            reasons: self.reasons,
            actor: self.actor,
            agent: self.agent,
            instance: self.instance,
            user: self.user,
            chain: self.chain,
            task: self.task,
            parent: self.parent,
            txn: self.txn,
            protocol: self.protocol,
            credential_type: self.credential_type,
            credential_id: self.credential_id,
            scope: self.scope,
            expires_at: self.expires_at,
            resource: self.resource,
            action: self.action,
            source: self.source,
            detail: self.detail,
        };
        (self.seq, self.time, self.keyed, event)
    }
}

/// The canonical body, serialised from a borrowed event (same field order as [`Body`]).
#[derive(Serialize)]
struct BodyRef<'a> {
    seq: u64,
    time: Timestamp,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keyed: bool,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// A committed audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When it was written (non-decreasing along the chain).
    pub time: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hash of the previous record.
    pub prev_hash: ChainHash,
    /// Over `prev_hash` and the canonical body: HMAC-SHA-256 with the chain
    /// key when `keyed`, else SHA-256 (records written before the chain was
    /// keyed).
    pub hash: ChainHash,
    /// Whether `hash` is keyed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyed: bool,
}

/// Columns a store keeps beside the body for querying. Verification checks that
/// they agree with the body, so filtering can't be misled by editing a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedColumns {
    /// `time` in milliseconds.
    pub time: Timestamp,
    /// The event kind.
    pub event: String,
    /// The outcome.
    pub decision: String,
    /// The agent, if any.
    pub agent: Option<String>,
    /// The instance, if any.
    pub instance: Option<String>,
    /// The user, if any.
    pub user: Option<String>,
    /// The task, if any.
    pub task: Option<String>,
    /// The transaction, if any.
    pub txn: Option<String>,
}

/// A record ready to be written: everything the store needs.
#[derive(Debug, Clone)]
pub struct SealedRecord {
    /// The record.
    pub record: AuditRecord,
    /// The exact bytes hashed, to be stored verbatim.
    pub body: String,
}

impl AuditRecord {
    /// Seals `event` as record `seq` at `time` after `prev`, keyed by
    /// `linker` if given.
    pub fn seal(
        seq: u64,
        time: Timestamp,
        mut event: AuditEvent,
        prev: ChainHash,
        linker: Option<&dyn ChainLinker>,
    ) -> Result<SealedRecord, serde_json::Error> {
        // A JSON null detail is written as `null` but reads back as no detail;
        // normalise first so the record returned is exactly what the body says.
        if event
            .detail
            .as_ref()
            .is_some_and(serde_json::Value::is_null)
        {
            event.detail = None;
        }
        // INVARIANT (bounded records): nothing a caller supplied makes a
        // record bigger than the limits `bound` sets.
        event.bound();
        let keyed = linker.is_some();
        let body = serde_json::to_string(&BodyRef {
            seq,
            time,
            keyed,
            event: &event,
        })?;
        let hash = match linker {
            Some(l) => l.link(&prev, body.as_bytes()),
            None => ChainHash::link(&prev, body.as_bytes()),
        };
        Ok(SealedRecord {
            record: AuditRecord {
                seq,
                time,
                event,
                prev_hash: prev,
                hash,
                keyed,
            },
            body,
        })
    }

    /// The indexed columns derived from the record.
    pub fn indexed(&self) -> IndexedColumns {
        IndexedColumns {
            time: self.time,
            event: self.event.event.clone(),
            decision: self.event.decision.as_str().to_owned(),
            agent: self.event.agent.clone(),
            instance: self.event.instance.clone(),
            user: self.event.user.clone(),
            task: self.event.task.clone(),
            txn: self.event.txn.clone(),
        }
    }
}

/// One stored row, as read back for listing or verification.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// The sequence column.
    pub seq: u64,
    /// The stored body.
    pub body: String,
    /// The stored previous hash.
    pub prev_hash: Vec<u8>,
    /// The stored hash.
    pub hash: Vec<u8>,
    /// The stored indexed columns.
    pub indexed: IndexedColumns,
}

/// The end of an export line: the hashes after the exact body.
const EXPORT_SUFFIX_LEN: usize =
    r#","prev_hash":""#.len() + 64 + r#"","hash":""#.len() + 64 + r#""}"#.len();

impl StoredRow {
    /// The row as one line of an audit export: the stored body, exactly as
    /// hashed, with `prev_hash` and `hash` (hex) added at its end. A
    /// reader sees one JSON object with every field of the record; the
    /// broker recovers the hashed bytes exactly to verify it
    /// ([`StoredRow::from_export_line`]).
    pub fn export_line(&self) -> String {
        let body = self.body.strip_suffix('}').unwrap_or(&self.body);
        format!(
            r#"{body},"prev_hash":"{}","hash":"{}"}}"#,
            hex::encode(&self.prev_hash),
            hex::encode(&self.hash)
        )
    }

    /// The row an export line holds (its indexed columns from its body).
    pub fn from_export_line(line: &str) -> Result<Self, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        let cut = line
            .len()
            .checked_sub(EXPORT_SUFFIX_LEN)
            .filter(|c| line.is_char_boundary(*c))
            .ok_or("the line is too short to be an exported record")?;
        let (body, suffix) = line.split_at(cut);
        #[derive(Deserialize)]
        struct Hashes {
            prev_hash: String,
            hash: String,
        }
        let h: Hashes = serde_json::from_str(&format!("{{{}", &suffix[1..]))
            .map_err(|_| "the line does not end with its prev_hash and hash".to_owned())?;
        let hex32 = |s: &str| {
            hex::decode(s)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| "a hash is not 64 hex digits".to_owned())
        };
        let body = format!("{body}}}");
        let (seq, time, keyed, event) = serde_json::from_str::<Body>(&body)
            .map_err(|e| format!("the record does not parse: {e}"))?
            .into_parts();
        let record = AuditRecord {
            seq,
            time,
            keyed,
            event,
            prev_hash: ChainHash([0; 32]),
            hash: ChainHash([0; 32]),
        };
        Ok(Self {
            seq,
            indexed: record.indexed(),
            body,
            prev_hash: hex32(&h.prev_hash)?,
            hash: hex32(&h.hash)?,
        })
    }

    /// Parses the row into a record, without checking the chain.
    pub fn to_record(&self) -> Result<AuditRecord, serde_json::Error> {
        let (seq, time, keyed, event) = serde_json::from_str::<Body>(&self.body)?.into_parts();
        Ok(AuditRecord {
            seq,
            time,
            keyed,
            event,
            prev_hash: ChainHash(self.prev_hash.as_slice().try_into().unwrap_or([0; 32])),
            hash: ChainHash(self.hash.as_slice().try_into().unwrap_or([0; 32])),
        })
    }
}

/// A signed statement of the chain's head: record `seq` has hash `hash`.
/// Exported and kept elsewhere, it lets `audit verify` detect records
/// deleted from the tail since, which the chain alone cannot show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The record.
    pub seq: u64,
    /// Its hash.
    pub hash: ChainHash,
    /// When the checkpoint was made.
    pub time: Timestamp,
    /// The same, as a JWS signed by the broker (`typ`
    /// `warrant-audit-checkpoint+jwt`), verifiable with its JWKS.
    pub signed: String,
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq} fails verification: {why}")]
pub struct ChainBreak {
    /// The first bad record (or the sequence number expected where one is missing).
    pub seq: u64,
    /// What is wrong with it.
    pub why: String,
}

/// Verifies rows in sequence order, one at a time, so a long trail streams.
#[derive(Debug)]
pub struct ChainVerifier {
    next_seq: u64,
    prev: ChainHash,
    last_time: Timestamp,
    /// The chain key, to check keyed records.
    linker: Option<std::sync::Arc<dyn ChainLinker>>,
    /// Whether a keyed record was seen: every later one must be keyed.
    keyed_seen: bool,
    /// How many verified rows are not keyed (hash-chained only).
    unkeyed: u64,
    /// With a key: the last record that may be unkeyed (written before the
    /// chain was keyed).
    legacy_until: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev: ChainHash::GENESIS,
            last_time: Timestamp::from_millis(i64::MIN),
            linker: None,
            keyed_seen: false,
            unkeyed: 0,
            legacy_until: u64::MAX,
        }
    }
}

impl ChainVerifier {
    /// A verifier that checks keyed records with `linker`, and requires
    /// every record after `legacy_until` to be keyed.
    pub fn keyed(linker: std::sync::Arc<dyn ChainLinker>, legacy_until: u64) -> Self {
        Self {
            linker: Some(linker),
            legacy_until,
            ..Self::default()
        }
    }

    /// A keyed verifier that starts after record `seq - 1`, whose hash is
    /// `prev` (for part of a chain, as an export holds it).
    pub fn keyed_from(linker: std::sync::Arc<dyn ChainLinker>, seq: u64, prev: ChainHash) -> Self {
        Self {
            linker: Some(linker),
            next_seq: seq,
            prev,
            ..Self::default()
        }
    }

    /// Checks the next row.
    pub fn push(&mut self, row: &StoredRow) -> Result<(), ChainBreak> {
        let expect = self.next_seq;
        let brk = |why: String| ChainBreak { seq: row.seq, why };
        if row.seq != expect {
            return Err(ChainBreak {
                seq: expect.min(row.seq),
                why: if row.seq > expect {
                    format!("records {expect}..{} are missing (deleted)", row.seq - 1)
                } else {
                    format!(
                        "sequence number {} repeats or goes backwards (expected {expect})",
                        row.seq
                    )
                },
            });
        }
        if row.prev_hash.as_slice() != self.prev.0 {
            return Err(brk(
                "its prev_hash does not match the hash of the record before it".into(),
            ));
        }
        let record = row
            .to_record()
            .map_err(|e| brk(format!("its body is not a valid record: {e}")))?;
        let computed = match (record.keyed, &self.linker) {
            (true, Some(l)) => l.link(&self.prev, row.body.as_bytes()),
            (true, None) => {
                return Err(brk(
                    "it is keyed with the chain key, which only the broker (holding the KEK) can check".into(),
                ));
            }
            // INVARIANT (keyed from then on): an unkeyed record after a
            // keyed one was written by someone without the key.
            (false, Some(_)) if row.seq > self.legacy_until => {
                return Err(brk(format!(
                    "it is not keyed, but every record after {} must be: it was written by someone without the chain key",
                    self.legacy_until
                )));
            }
            (false, _) if self.keyed_seen => {
                return Err(brk(
                    "it is not keyed, but records before it are: the chain was re-linked by someone without the chain key (a record deleted, inserted or edited)".into(),
                ));
            }
            (false, _) => ChainHash::link(&self.prev, row.body.as_bytes()),
        };
        if row.hash.as_slice() != computed.0 {
            return Err(brk(if record.keyed {
                "its keyed hash does not match its contents and the record before it (a record was altered, deleted or inserted)".into()
            } else {
                "its hash does not match its contents (the record was altered)".into()
            }));
        }
        if record.seq != row.seq {
            return Err(brk(format!(
                "its body says sequence {} (the record was moved)",
                record.seq
            )));
        }
        if record.indexed() != row.indexed {
            return Err(brk(
                "its indexed columns do not match its hashed contents (a column was altered)"
                    .into(),
            ));
        }
        if record.time < self.last_time {
            return Err(brk("its time is earlier than the record before it".into()));
        }
        self.next_seq += 1;
        self.prev = computed;
        self.last_time = record.time;
        self.keyed_seen |= record.keyed;
        self.unkeyed += u64::from(!record.keyed);
        Ok(())
    }

    /// How many rows verified so far.
    pub fn verified(&self) -> u64 {
        self.next_seq - 1
    }

    /// How many verified rows are not keyed: written before the chain was
    /// keyed, so they are hash-chained only (anyone who can write the
    /// database could have rewritten them).
    pub fn unkeyed(&self) -> u64 {
        self.unkeyed
    }

    /// The hash of the last verified row (the chain head).
    pub fn head(&self) -> ChainHash {
        self.prev
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod kind_tests {
    use super::Kind;

    #[test]
    fn every_kind_has_one_name_that_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for k in Kind::ALL {
            assert!(seen.insert(k.as_str()), "{k} twice");
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
            assert_eq!(String::from(*k), k.to_string());
        }
        assert_eq!(Kind::parse("proxy.requests"), None);
    }
}
