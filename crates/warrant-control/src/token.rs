//! The token service: task tokens by exchange and client credentials,
//! introspection and cascading revocation.
//!
//! Exchange (RFC 8693): the subject is a user's token from a trusted user
//! issuer, or a warrant task token for sub-delegation; the actor is always the
//! calling agent's identity token. The new token names the user (`sub`) and
//! every agent acting (`act`, current actor outermost), and can only narrow:
//! scope ⊆ the subject's, audience ⊆ the subject's, `exp` ≤ the subject's,
//! depth ≤ `max_delegation_depth`, no agent twice in a chain. Every grant is a
//! policy decision; every issuance and refusal is one audit record; a token
//! leaves only after its task and that record are durable.
//!
//! Revocation is held in memory (task ids, blocked instances), loaded from the
//! store at start and updated after each revocation commits, so every use is
//! checked in O(1).

use parking_lot::RwLock;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use serde::Serialize;
use serde_json::{Map, Value};
use warrant_core::TrustDomain;
use warrant_core::agent::{Agent, AgentStatus};
use warrant_core::approval::{ApprovalSubject, ApprovalTerms, StepUp};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::decision::{
    Action, AgentFacts, Context, DecisionRequest, Effect, Principal, Resource, UserRef,
};
use warrant_core::identity::{IDENTITY_TOKEN_TYP, IdentityClaims};
use warrant_core::name::AgentName;
use warrant_core::task::{
    Act, RevokeTarget, ScopeSet, TASK_TOKEN_TYP, TaskClaims, TaskRecord, token_type,
};
use warrant_core::text::shown;
use warrant_core::time::{MAX_TOKEN_LIFETIME, Timestamp};
use warrant_store::{Store, StoreError};
use warrant_token::VerifiedCache;
use warrant_token::jwt::{self, Expect, VerifyingKeys};

use crate::attest::oidc::Providers;
use crate::delegation;
use crate::keys::KeyService;
use crate::metrics::Metrics;
use crate::policy::PolicyService;
pub use warrant_core::task::{TaskUse, UseError};

/// The default lifetime of a task token.
pub const DEFAULT_TASK_TTL_SECS: i64 = 300;
/// The most audiences one request may name.
const MAX_AUDIENCES: usize = 16;
/// The RFC 7523 assertion type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

pub use crate::oauth::OAuthError;

/// A token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    /// The task token.
    pub access_token: String,
    /// Always the access-token type URI.
    pub issued_token_type: &'static str,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    /// Granted scope.
    pub scope: String,
}

/// Request parameters: a form may repeat `audience` and `resource`.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The single value of `name`; an error if it is repeated.
    pub fn one(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut it = self.0.iter().filter(|(k, _)| k == name);
        match (it.next(), it.next()) {
            (None, _) => Ok(None),
            (Some((_, v)), None) => Ok(Some(v.as_str())),
            _ => Err(OAuthError::invalid_request(format!(
                "`{name}` is given more than once"
            ))),
        }
    }

    fn required(&self, name: &str) -> Result<&str, OAuthError> {
        match self.one(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(OAuthError::invalid_request(format!("`{name}` is required"))),
        }
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// For policy.
    pub source_ip: Option<IpAddr>,
    /// For the audit trail.
    pub source: Option<String>,
}

/// An actor proven by its identity token.
#[derive(Debug, Clone)]
struct Actor {
    claims: IdentityClaims,
    agent: Agent,
    instance: String,
}

impl Actor {
    /// The acting instance, in its agent, as policy sees it.
    fn principal(&self) -> Principal {
        Principal {
            agent: AgentFacts::from(&self.agent),
            instance: self.instance.clone(),
            attestor: self.claims.attestor.as_str().to_owned(),
        }
    }
}

/// The parameters of a token-exchange request, checked for shape.
struct ExchangeRequest<'a> {
    subject_token: &'a str,
    subject_type: &'a str,
    actor_token: &'a str,
}

impl<'a> ExchangeRequest<'a> {
    fn read(params: &'a Params) -> Result<Self, OAuthError> {
        let subject_token = params.required("subject_token")?;
        let subject_type = params.required("subject_token_type")?;
        let actor_token = params.one("actor_token")?.filter(|a| !a.is_empty()).ok_or_else(|| {
            OAuthError::invalid_request(
                "`actor_token` is required: warrant issues a token for a user only to an agent acting for them, never an impersonation",
            )
        })?;
        if params
            .one("actor_token_type")?
            .is_some_and(|t| t != token_type::JWT)
        {
            return Err(OAuthError::invalid_request(format!(
                "actor_token_type must be {}",
                token_type::JWT
            )));
        }
        if let Some(t) = params.one("requested_token_type")?
            && t != token_type::ACCESS_TOKEN
            && t != token_type::JWT
        {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type must be {}",
                token_type::ACCESS_TOKEN
            )));
        }
        Ok(Self {
            subject_token,
            subject_type,
            actor_token,
        })
    }
}

/// What the subject token says.
struct Subject {
    /// `sub` of the new token.
    sub: String,
    /// The user, for policy (absent when an agent's self token is delegated).
    user: Option<UserRef>,
    /// Actors so far (current first).
    act: Option<Act>,
    scope: Option<ScopeSet>,
    audience: Option<Vec<String>>,
    exp: i64,
    parent: Option<String>,
    txn: Option<String>,
    may_act: Option<Value>,
}

/// What a new task token says, decided before it is signed.
struct Grant {
    /// The user (`user:<id>`) or, acting for itself, the agent's SPIFFE ID.
    sub: String,
    /// The chain, current actor outermost.
    act: Option<Act>,
    scope: ScopeSet,
    aud: Vec<String>,
    /// The subject token's expiry: the new one ends no later.
    subject_exp: i64,
    parent: Option<String>,
    txn: Option<String>,
    depth: u32,
    groups: Vec<String>,
    /// The user's `may_act`, carried to every hop.
    may_act: Option<Value>,
}

/// Why a task token's chain is not accepted.
enum ChainError {
    /// An agent or instance in it may no longer act (the text says which).
    Refused(String),
    /// The store could not be read.
    Unavailable,
}

/// User issuers built, ready to be put in force.
#[allow(missing_debug_implementations)]
pub struct PreparedUsers(Arc<UserTrust>);

/// The trusted user issuers and their keys, swapped whole.
struct UserTrust {
    providers: Providers,
    claims: Vec<UserIssuer>,
}

impl UserTrust {
    fn new(claims: Vec<UserIssuer>) -> Result<Self, String> {
        Ok(Self {
            providers: Providers::new(claims.iter().map(|u| u.provider.clone()).collect())?,
            claims,
        })
    }
}

/// A trusted user issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIssuer {
    /// Issuer, keys and audience.
    pub provider: crate::attest::oidc::TrustProvider,
    /// The claim naming the user.
    pub subject_claim: String,
    /// The claim listing the user's groups.
    pub groups_claim: String,
    /// What its users' and groups' ids are qualified with.
    pub namespace: warrant_core::user::Namespace,
}

/// The token service.
pub struct TokenService {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    policy: Arc<PolicyService>,
    metrics: Arc<Metrics>,
    issuer: Arc<str>,
    trust_domain: TrustDomain,
    max_depth: u32,
    /// The trusted user issuers: replaced whole by a reload.
    users: ArcSwap<UserTrust>,
    // std RwLocks: held only to look up or insert ids, never across an await.
    revoked_tasks: RwLock<HashSet<String>>,
    blocked_instances: RwLock<HashSet<String>>,
    /// Identity tokens already verified and checked, by their exact bytes.
    identities: VerifiedCache<Identity>,
    /// Refusals of callers not authenticated, recorded in aggregate.
    refusals: Arc<crate::refusals::RefusalLog>,
    /// Task tokens already verified and checked, by their exact bytes.
    task_tokens: VerifiedCache<CheckedTask>,
    /// Step-up approvals.
    approvals: Arc<crate::approvals::ApprovalService>,
}

/// How many verified tokens of each kind are remembered.
const VERIFIED_CACHE_CAPACITY: usize = 16_384;

/// An identity token that verified and names an agent of this trust domain.
struct Identity {
    claims: IdentityClaims,
    name: AgentName,
    instance: String,
}

/// A task token of this broker that verified.
struct CheckedTask {
    claims: TaskClaims,
    /// Every claim as signed, for introspection.
    raw: Map<String, Value>,
    /// What the task's record adds (groups, attestor): read once, on first
    /// use as a subject or at the edge (neither ever changes).
    facts: std::sync::OnceLock<TaskFacts>,
}

/// What a task's record says beyond its token.
#[derive(Debug, Clone)]
struct TaskFacts {
    groups: Vec<String>,
    attestor: String,
    /// When the task was issued, in milliseconds (the token's `iat` is in
    /// seconds).
    issued_ms: i64,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").finish_non_exhaustive()
    }
}

/// What the token service is built from.
#[allow(missing_debug_implementations)]
pub struct TokenParts {
    /// What every issuing service shares.
    pub common: crate::IssuerParts,
    /// Step-up approvals, for exchanges policy allows only with one.
    pub approvals: Arc<crate::approvals::ApprovalService>,
    /// The longest chain.
    pub max_depth: u32,
    /// Trusted user issuers.
    pub user_issuers: Vec<UserIssuer>,
}

/// A user token's `may_act` (RFC 8693 §4.4): an object naming a `sub`, or
/// nothing; anything else refuses the exchange, since it cannot be honoured.
fn user_may_act(claims: &Map<String, Value>) -> Result<Option<Value>, OAuthError> {
    match claims.get("may_act") {
        None => Ok(None),
        Some(v @ Value::Object(m)) if m.get("sub").is_some_and(Value::is_string) => {
            Ok(Some(v.clone()))
        }
        Some(_) => Err(OAuthError::invalid_grant(
            "the user token's `may_act` claim is not an object with a `sub`; it cannot be honoured, so nothing is issued",
        )),
    }
}

fn random_id(prefix: &str, now: Timestamp) -> Result<String, OAuthError> {
    Ok(crate::random::ordered_id(prefix, now.as_millis())?)
}

impl TokenService {
    /// The trusted user issuers in force.
    pub fn user_issuers(&self) -> Vec<UserIssuer> {
        self.users.load().claims.clone()
    }

    /// Builds a new set of trusted user issuers (a set equal to the current
    /// one keeps its cached keys); nothing is in force until
    /// [`install_user_issuers`](Self::install_user_issuers).
    pub fn prepare_user_issuers(&self, issuers: Vec<UserIssuer>) -> Result<PreparedUsers, String> {
        let current = self.users.load_full();
        if current.claims == issuers {
            return Ok(PreparedUsers(current));
        }
        Ok(PreparedUsers(Arc::new(UserTrust::new(issuers)?)))
    }

    /// Puts prepared user issuers in force.
    pub fn install_user_issuers(&self, users: PreparedUsers) {
        self.users.store(users.0);
    }

    /// The namespaces of the trusted user issuers (user ids are
    /// `<namespace>/<subject>`).
    pub fn user_namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .users
            .load()
            .claims
            .iter()
            .map(|u| u.namespace.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Builds the service and loads what is revoked.
    pub async fn new(p: TokenParts) -> Result<Self, String> {
        let users = UserTrust::new(p.user_issuers)?;
        let c = p.common;
        let (tasks, instances) = c
            .store
            .revoked_state(Timestamp::now())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            store: c.store,
            keys: c.keys,
            policy: c.policy,
            metrics: c.metrics,
            issuer: c.issuer,
            trust_domain: c.trust_domain,
            max_depth: p.max_depth,
            users: ArcSwap::from_pointee(users),
            revoked_tasks: RwLock::new(tasks.into_iter().collect()),
            blocked_instances: RwLock::new(instances.into_iter().collect()),
            identities: VerifiedCache::new(VERIFIED_CACHE_CAPACITY),
            refusals: c.refusals,
            task_tokens: VerifiedCache::new(VERIFIED_CACHE_CAPACITY),
            approvals: p.approvals,
        })
    }

    /// Whether a task is revoked or its instance blocked: sessions and
    /// other state kept for it end.
    pub fn ended(&self, task: &str, instance: &str) -> bool {
        self.is_revoked(task) || self.is_blocked(instance)
    }

    /// Whether a task is revoked already.
    pub fn is_revoked(&self, task: &str) -> bool {
        self.revoked_tasks.read().contains(task)
    }

    /// Whether `instance` was revoked (it may no longer act).
    pub fn is_blocked(&self, instance: &str) -> bool {
        self.blocked_instances.read().contains(instance)
    }

    /// The token endpoint.
    pub async fn token(
        &self,
        params: &Params,
        caller: &Caller,
    ) -> Result<TokenResponse, OAuthError> {
        let grant = match params.one("grant_type") {
            Ok(g) => g.unwrap_or(""),
            Err(e) => return Err(self.refuse(self.event(Kind::TokenRequest, caller), e).await),
        };
        match grant {
            TOKEN_EXCHANGE => self.exchange(params, caller).await,
            "client_credentials" => self.client_credentials(params, caller).await,
            "" => {
                let e = OAuthError::invalid_request("`grant_type` is required");
                Err(self.refuse(self.event(Kind::TokenRequest, caller), e).await)
            }
            other => {
                let e = OAuthError::new(
                    "unsupported_grant_type",
                    format!(
                        "grant type `{}` is not supported; use {TOKEN_EXCHANGE} or client_credentials",
                        shown(other, 100)
                    ),
                );
                Err(self.refuse(self.event(Kind::TokenRequest, caller), e).await)
            }
        }
    }

    /// A refusal record of a request to the token endpoint, before it is
    /// known who asks.
    pub fn event(&self, kind: Kind, caller: &Caller) -> AuditEvent {
        let mut e = AuditEvent::new(kind, Outcome::Deny).protocol("oauth");
        if let Some(s) = &caller.source {
            e = e.source(s.clone());
        }
        e
    }

    /// Records a refusal and returns it (or the audit failure).
    pub async fn refuse(&self, event: AuditEvent, e: OAuthError) -> OAuthError {
        let mut event = event;
        if event.reasons.is_empty() {
            event = event.reason(format!("{}: {}", e.error, e.description));
        }
        if e.error == "invalid_request" || e.error == "unsupported_grant_type" {
            event.decision = Outcome::Error;
        }
        self.metrics.token_grant(&event.event, e.error);
        // INVARIANT (unauthenticated refusals cost no durable write each): a
        // caller not yet known to be an agent is recorded in aggregate.
        let Some(event) = self.refusals.admit_known(event) else {
            return e;
        };
        match self.store.append_audit(event).await {
            Ok(_) => e,
            Err(err) => {
                tracing::error!(error = %err, "cannot write the audit trail; grant refused");
                self.metrics.audit_write_failures.inc();
                OAuthError::unavailable()
            }
        }
    }

    /// Verifies an identity token presented as actor or client assertion.
    async fn actor(&self, token: &str, now: Timestamp) -> Result<Actor, OAuthError> {
        let keys = self.keys.verifying_keys(now);
        let id = match self.identities.get(token, &keys, now) {
            Some(id) => id,
            None => {
                let (kid, id) = self.check_identity(token, &keys, now)?;
                let id = Arc::new(id);
                self.identities
                    .insert(token, &kid, id.claims.exp, now, id.clone());
                id
            }
        };
        let (name, instance) = (&id.name, id.instance.as_str());
        if self.is_blocked(instance) {
            return Err(OAuthError::invalid_grant(format!(
                "instance {instance} has been revoked"
            )));
        }
        let agent = match self.store.get_agent(name).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(OAuthError::invalid_grant(format!(
                    "agent `{name}` no longer exists"
                )));
            }
            Err(_) => return Err(OAuthError::unavailable()),
        };
        if agent.status != AgentStatus::Active {
            return Err(OAuthError::invalid_grant(format!(
                "agent `{name}` is {}; nothing is issued to it",
                agent.status.as_str()
            )));
        }
        if created_after(&agent, &id.claims.jti, id.claims.iat) {
            return Err(OAuthError::invalid_grant(format!(
                "agent `{name}` was deleted and created again after this identity token was issued; attest again"
            )));
        }
        Ok(Actor {
            instance: instance.to_owned(),
            claims: id.claims.clone(),
            agent,
        })
    }

    /// The part of [`actor`](Self::actor) that depends only on the token's
    /// bytes: signature, kind, issuer, audience, expiry, subject. Returns the
    /// `kid` that verified it with what it says.
    fn check_identity(
        &self,
        token: &str,
        keys: &VerifyingKeys,
        now: Timestamp,
    ) -> Result<(String, Identity), OAuthError> {
        let v = jwt::verify(token, keys).map_err(|e| {
            OAuthError::invalid_grant(format!("the identity token does not verify: {e}"))
        })?;
        match v.header.typ.as_deref() {
            Some(IDENTITY_TOKEN_TYP) => {}
            Some(TASK_TOKEN_TYP) => {
                return Err(OAuthError::invalid_grant(
                    "a task token cannot act: the actor must present its own identity token",
                ));
            }
            _ => {
                return Err(OAuthError::invalid_grant(
                    "the token is not a warrant identity token",
                ));
            }
        }
        // Either the broker or its token endpoint is a right audience. The
        // refusal names the first check that failed: a token for another
        // audience says so; one for the broker that expired says it expired.
        let token_endpoint = format!("{}/oauth2/token", self.issuer);
        let audience = if jwt::names_audience(&v.claims, &token_endpoint) {
            token_endpoint.as_str()
        } else if jwt::names_audience(&v.claims, &self.issuer) {
            &*self.issuer
        } else {
            return Err(OAuthError::invalid_grant(format!(
                "the identity token is not for this broker; request it with the broker (`{}`) as its audience",
                self.issuer
            )));
        };
        let expect = Expect {
            issuer: &self.issuer,
            audience,
            now,
            leeway_secs: 0,
        };
        if let Err(e) = expect.check(&v.claims) {
            return Err(OAuthError::invalid_grant(format!("identity token: {e}")));
        }
        let claims: IdentityClaims = serde_json::from_value(Value::Object(v.claims))
            .map_err(|_| OAuthError::invalid_grant("the token is not a warrant identity token"))?;
        let foreign = || {
            OAuthError::invalid_grant("the identity token's subject is not of this trust domain")
        };
        let prefix = format!("spiffe://{}/agent/", self.trust_domain);
        let (name, instance) = claims
            .sub
            .strip_prefix(&prefix)
            .and_then(|r| r.split_once('/'))
            .ok_or_else(foreign)?;
        let name = AgentName::new(name).map_err(|_| foreign())?;
        let instance = instance.to_owned();
        Ok((
            v.header.kid.unwrap_or_default(),
            Identity {
                claims,
                name,
                instance,
            },
        ))
    }

    /// The user's groups a task carries (asserted at its first hop).
    async fn task_groups(&self, t: &CheckedTask) -> Result<Vec<String>, OAuthError> {
        match self.task_facts(t).await {
            Ok(f) => Ok(f.groups.clone()),
            Err(None) => Err(OAuthError::invalid_grant(
                "the subject token's task is unknown to this broker",
            )),
            Err(Some(_)) => Err(OAuthError::unavailable()),
        }
    }

    /// The task's record facts, read once per token; `Err(None)` if the task
    /// is unknown, `Err(Some(e))` if the store failed.
    async fn task_facts<'a>(
        &self,
        t: &'a CheckedTask,
    ) -> Result<&'a TaskFacts, Option<StoreError>> {
        if let Some(f) = t.facts.get() {
            return Ok(f);
        }
        let record = self
            .store
            .get_task(&t.claims.task)
            .await
            .map_err(Some)?
            .ok_or(None)?;
        Ok(t.facts.get_or_init(|| TaskFacts {
            issued_ms: record.issued_at.as_millis(),
            groups: record.groups,
            // Tasks recorded before the attestor was kept.
            attestor: record.attestor.unwrap_or_else(|| "unknown".into()),
        }))
    }

    /// Checks a task token presented at the edge for one use: signature,
    /// kind, issuer, lifetime, `audience`, revocation of its task, the acting
    /// instance not blocked and its agent active. Checked on every use, cache
    /// hit or not.
    pub async fn task_for_use(
        &self,
        token: &str,
        audience: &str,
        now: Timestamp,
    ) -> Result<TaskUse, UseError> {
        let t = self.check_task_token(token, now).map_err(|e| {
            UseError::Invalid(
                e.description
                    .trim_start_matches("subject token: ")
                    .replace("a subject token", "presented at the edge")
                    .replace("the subject token", "the token"),
            )
        })?;
        let c = &t.claims;
        // The token is warrant's own from here: a refusal carries what it
        // says, so the record names the agent, user, task and txn.
        let refused = |why: String| UseError::Refused {
            why,
            claims: Box::new(c.clone()),
        };
        if now.as_secs() >= c.exp {
            return Err(refused("the task token has expired; get a new one".into()));
        }
        if now.as_secs() < c.nbf - 5 {
            return Err(refused("the task token is not valid yet".into()));
        }
        if !c.aud.iter().any(|a| a == audience) {
            return Err(refused(format!(
                "the task token is not for this route: its audience does not include `{audience}`; exchange for a token with that audience"
            )));
        }
        if self.is_revoked(&c.task) {
            return Err(refused(format!("task {} has been revoked", c.task)));
        }
        let facts = match self.task_facts(&t).await {
            Ok(f) => f.clone(),
            Err(None) => {
                return Err(refused(
                    "the task token's task is unknown to this broker".into(),
                ));
            }
            Err(Some(_)) => return Err(UseError::Unavailable),
        };
        // Every agent and instance of the chain, not only the current actor:
        // a disabled or deleted agent's delegation ends everywhere at once.
        let agent = match self.check_chain(c, facts.issued_ms).await {
            Ok(a) => a,
            Err(ChainError::Refused(m)) => return Err(refused(m)),
            Err(ChainError::Unavailable) => return Err(UseError::Unavailable),
        };
        let actor_id = c.act.as_ref().map_or(c.sub.as_str(), |a| a.sub.as_str());
        let instance = actor_id.rsplit('/').next().unwrap_or_default().to_owned();
        Ok(TaskUse {
            claims: t.claims.clone(),
            agent,
            instance,
            attestor: facts.attestor,
            groups: facts.groups,
        })
    }

    /// Checks every agent acting in a task token's chain (or the agent it
    /// names, when it acts for itself): each instance unblocked, each agent
    /// still inventoried, active, and the same one that acted (not deleted
    /// and created again since the token was issued). Returns the current
    /// actor's agent.
    async fn check_chain(&self, c: &TaskClaims, issued_ms: i64) -> Result<Agent, ChainError> {
        // INVARIANT (revocation through any broker is seen): with a shared
        // store, a broker that has not heard the change feed lately may not
        // know of a revocation made elsewhere; it vouches for nothing.
        if !self.store.feed_fresh() {
            tracing::warn!(
                "refusing a task token: this broker has not heard the shared store's change feed lately, so it cannot rule out a revocation made through another broker"
            );
            return Err(ChainError::Unavailable);
        }
        // INVARIANT (revocation is checked after freshness): a caller's
        // earlier check may have run before this broker applied a
        // revocation it had heard; only now, with the feed known to be
        // applied, does "not revoked" mean what it says.
        if self.is_revoked(&c.task) {
            return Err(ChainError::Refused(format!(
                "task {} has been revoked",
                c.task
            )));
        }
        // INVARIANT (every agent of the chain): the acting agents, and the
        // agent the work began with when it acted for itself (`sub`, its
        // SPIFFE ID) and handed its task on.
        let ids: Vec<&str> = match &c.act {
            Some(a) => {
                let mut ids = a.chain();
                if c.sub.starts_with("spiffe://") {
                    ids.push(c.sub.as_str());
                }
                ids
            }
            None => vec![c.sub.as_str()],
        };
        let prefix = format!("spiffe://{}/agent/", self.trust_domain);
        let mut current = None;
        for (i, id) in ids.iter().enumerate() {
            let Some((name, instance)) = id.strip_prefix(&prefix).and_then(|r| r.split_once('/'))
            else {
                return Err(ChainError::Refused(
                    "the task token names an actor that is not an agent of this trust domain"
                        .into(),
                ));
            };
            if self.is_blocked(instance) {
                return Err(ChainError::Refused(format!(
                    "instance {instance} (of agent `{}`) in this task's delegation chain has been revoked",
                    shown(name, 64)
                )));
            }
            let Ok(name) = AgentName::new(name) else {
                return Err(ChainError::Refused(
                    "the task token names an actor that is not an agent".into(),
                ));
            };
            let agent = match self.store.get_agent(&name).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    return Err(ChainError::Refused(format!(
                        "agent `{name}` in this task's delegation chain no longer exists"
                    )));
                }
                Err(_) => return Err(ChainError::Unavailable),
            };
            if agent.status != AgentStatus::Active {
                return Err(ChainError::Refused(format!(
                    "agent `{name}` in this task's delegation chain is {}",
                    agent.status.as_str()
                )));
            }
            // A token issued before this agent was created was issued to an
            // earlier agent of the same name, which was deleted.
            if agent.created_at.as_millis() > issued_ms {
                return Err(ChainError::Refused(format!(
                    "agent `{name}` in this task's delegation chain was deleted and created again after the task began"
                )));
            }
            if i == 0 {
                current = Some(agent);
            }
        }
        if current.as_ref().map(|a| a.name.as_str()) != Some(c.client_id.as_str()) {
            return Err(ChainError::Refused(
                "the task token's client_id is not its acting agent".into(),
            ));
        }
        current.ok_or(ChainError::Refused("the task token names no agent".into()))
    }

    /// Verifies a task token of this broker (signature, kind, issuer, claims;
    /// not expiry or revocation, which the caller checks on every use).
    fn check_task_token(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<Arc<CheckedTask>, OAuthError> {
        let keys = self.keys.verifying_keys(now);
        if let Some(t) = self.task_tokens.get(token, &keys, now) {
            return Ok(t);
        }
        let v = jwt::verify(token, &keys)
            .map_err(|e| OAuthError::invalid_grant(format!("subject token: {e}")))?;
        match v.header.typ.as_deref() {
            Some(TASK_TOKEN_TYP) => {}
            Some(IDENTITY_TOKEN_TYP) => {
                return Err(OAuthError::invalid_grant(
                    "an identity token cannot be a subject token: exchange a user's token or a task token",
                ));
            }
            // The tokens warrant mints for upstreams and federations are
            // signed by the same keys and are never task tokens.
            _ => {
                return Err(OAuthError::invalid_grant(
                    "a token warrant minted for an upstream or a federation cannot be a subject token: exchange a user's token or a task token",
                ));
            }
        }
        let not_task =
            || OAuthError::invalid_grant("the subject token is not a warrant task token");
        let claims: TaskClaims =
            serde_json::from_value(Value::Object(v.claims.clone())).map_err(|_| not_task())?;
        if claims.iss != *self.issuer {
            return Err(not_task());
        }
        let exp = claims.exp;
        let t = Arc::new(CheckedTask {
            claims,
            raw: v.claims,
            facts: std::sync::OnceLock::new(),
        });
        self.task_tokens.insert(
            token,
            v.header.kid.as_deref().unwrap_or_default(),
            exp,
            now,
            t.clone(),
        );
        Ok(t)
    }

    /// Reads the subject token: a warrant task token or a user's token.
    async fn subject(&self, token: &str, ty: &str, now: Timestamp) -> Result<Subject, OAuthError> {
        let unverified = jwt::peek_claims_unverified(token)
            .map_err(|e| OAuthError::invalid_grant(format!("subject token: {e}")))?;
        let iss = unverified.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss == &*self.issuer {
            self.task_subject(token, ty, now).await
        } else {
            self.user_subject(token, ty, now).await
        }
    }

    /// A warrant task token as subject: a task handed on.
    async fn task_subject(
        &self,
        token: &str,
        ty: &str,
        now: Timestamp,
    ) -> Result<Subject, OAuthError> {
        if ty != token_type::ACCESS_TOKEN && ty != token_type::JWT {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type for a warrant task token is {}",
                token_type::ACCESS_TOKEN
            )));
        }
        let checked = self.check_task_token(token, now)?;
        let c = &checked.claims;
        if now.as_secs() >= c.exp {
            return Err(OAuthError::invalid_grant("the subject token has expired"));
        }
        if self.is_revoked(&c.task) {
            return Err(OAuthError::invalid_grant(
                "the subject token's task has been revoked",
            ));
        }
        let issued_ms = match self.task_facts(&checked).await {
            Ok(f) => f.issued_ms,
            Err(None) => {
                return Err(OAuthError::invalid_grant(
                    "the subject token's task is unknown to this broker",
                ));
            }
            Err(Some(_)) => return Err(OAuthError::unavailable()),
        };
        match self.check_chain(c, issued_ms).await {
            Ok(_) => {}
            Err(ChainError::Refused(m)) => {
                return Err(OAuthError::invalid_grant(format!("subject token: {m}")));
            }
            Err(ChainError::Unavailable) => return Err(OAuthError::unavailable()),
        }
        let user = match c.sub.strip_prefix("user:") {
            Some(u) => Some(UserRef {
                id: u.to_owned(),
                groups: self.task_groups(&checked).await?,
            }),
            None => None,
        };
        let scope =
            ScopeSet::parse(&c.scope).map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
        Ok(Subject {
            sub: c.sub.clone(),
            user,
            act: c.act.clone(),
            scope: Some(scope),
            audience: Some(c.aud.clone()),
            exp: c.exp,
            parent: Some(c.task.clone()),
            txn: Some(c.txn.clone()),
            may_act: c.may_act.clone(),
        })
    }

    /// A user's token from a trusted issuer as subject: the user, their
    /// groups and scope, and whom they allow to act (`may_act`).
    async fn user_subject(
        &self,
        token: &str,
        ty: &str,
        now: Timestamp,
    ) -> Result<Subject, OAuthError> {
        if ![
            token_type::JWT,
            token_type::ID_TOKEN,
            token_type::ACCESS_TOKEN,
        ]
        .contains(&ty)
        {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type `{}` is not supported; use {}",
                shown(ty, 100),
                token_type::JWT
            )));
        }
        let users = self.users.load_full();
        if users.providers.is_empty() {
            return Err(OAuthError::invalid_grant(
                "no user issuers are trusted ([[user_issuer]] in warrant.toml)",
            ));
        }
        let (provider, claims) = users
            .providers
            .verify(token, now)
            .await
            .map_err(|e| OAuthError::invalid_grant(format!("subject token: {e}")))?;
        let cfg = users
            .claims
            .iter()
            .find(|u| u.provider.issuer == provider.issuer)
            .ok_or_else(|| OAuthError::invalid_grant("subject token: issuer not trusted"))?;
        let subject = claims
            .get(&cfg.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control))
            .ok_or_else(|| {
                OAuthError::invalid_grant(format!(
                    "the user token has no usable `{}` claim",
                    cfg.subject_claim
                ))
            })?;
        // INVARIANT (users are issuer-qualified): the id and the groups are
        // this issuer's, `<namespace>/<subject>`; another issuer's `alice` is
        // another user.
        let user = cfg
            .namespace
            .user(subject)
            .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
        let groups: Vec<String> = user_groups(&claims, &cfg.groups_claim)?
            .iter()
            .map(|g| cfg.namespace.group(g))
            .collect();
        let scope = user_scope(&claims)?;
        let may_act = user_may_act(&claims)?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        // A user token's own `act` is never read: only warrant builds chains.
        Ok(Subject {
            sub: format!("user:{user}"),
            user: Some(UserRef {
                id: user.to_string(),
                groups,
            }),
            act: None,
            scope,
            audience: None,
            exp,
            parent: None,
            txn: None,
            may_act,
        })
    }

    fn audiences(params: &Params) -> Result<Vec<String>, OAuthError> {
        let mut out: Vec<String> = Vec::new();
        for a in params.all("audience").chain(params.all("resource")) {
            if a.is_empty() || a.len() > 512 || a.chars().any(char::is_control) {
                return Err(OAuthError::new(
                    "invalid_target",
                    "an audience is empty, longer than 512 characters or has control characters",
                ));
            }
            if !out.iter().any(|o| o == a) {
                out.push(a.to_owned());
            }
        }
        if out.len() > MAX_AUDIENCES {
            return Err(OAuthError::new(
                "invalid_target",
                format!("at most {MAX_AUDIENCES} audiences"),
            ));
        }
        Ok(out)
    }

    /// Decides `action` for every audience (all must be allowed) and
    /// writes the decision into the record. When the permits that allow it
    /// ask for a person's approval, one approval covers the whole request
    /// (its audiences and scopes, for this task and user): `Err(Some(_))`
    /// answers it pending or denied; it goes ahead once granted. `Err(None)`
    /// is a policy's refusal.
    async fn decide(
        &self,
        action: Action,
        actor: &Actor,
        audiences: &[String],
        context: &Context,
        event: &mut AuditEvent,
    ) -> Result<(), Option<OAuthError>> {
        let mut allowed = true;
        let mut reasons = Vec::new();
        let mut approval: Option<(ApprovalTerms, Vec<String>, DecisionRequest)> = None;
        for aud in audiences {
            let req = DecisionRequest {
                principal: actor.principal(),
                action,
                resource: Resource::Audience(aud.clone()),
                context: context.clone(),
            };
            let (d, e) = self.policy.decide_for_record(&req, event.take());
            *event = e;
            reasons.extend(d.reasons());
            match d.effect {
                Effect::Allow => {}
                Effect::ApprovalRequired => {
                    let terms = d.approval.unwrap_or_default();
                    approval = Some(match approval {
                        None => (terms, d.policies, req),
                        Some((t, mut p, first)) => {
                            p.extend(d.policies);
                            (t.and(terms), p, first)
                        }
                    });
                }
                Effect::Deny => {
                    allowed = false;
                    break;
                }
            }
        }
        reasons.dedup();
        event.reasons = reasons;
        event.resource = Some(audiences.join(" "));
        event.decision = if allowed {
            Outcome::Allow
        } else {
            Outcome::Deny
        };
        if !allowed {
            return Err(None);
        }
        match approval {
            None => Ok(()),
            Some((terms, policies, first)) => {
                self.step_up(terms, policies, &first, audiences, event)
                    .await
            }
        }
    }

    /// A grant every applying permit allows only with a person's approval:
    /// one approval for its audiences and scopes, for this task and user,
    /// asked at once (a client asks again); it goes ahead once granted.
    async fn step_up(
        &self,
        terms: ApprovalTerms,
        mut policies: Vec<String>,
        first: &DecisionRequest,
        audiences: &[String],
        event: &mut AuditEvent,
    ) -> Result<(), Option<OAuthError>> {
        policies.sort();
        policies.dedup();
        let mut auds = audiences.to_vec();
        auds.sort();
        let mut scopes = first.context.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let mut subject = ApprovalSubject::of(
            first,
            serde_json::json!({ "audiences": auds, "scopes": scopes }),
        );
        subject.resource = auds
            .iter()
            .map(|a| Resource::Audience(a.clone()).to_string())
            .collect::<Vec<_>>()
            .join(" ");
        event.decision = Outcome::Pending;
        let step = self
            .approvals
            .step_up(
                subject,
                Value::Null,
                terms,
                policies,
                event,
                Some(std::time::Duration::ZERO),
            )
            .await;
        add_detail(event, serde_json::json!({ "approval": approval_id(&step) }));
        match step {
            StepUp::Approved(_) => {
                event.decision = Outcome::Allow;
                Ok(())
            }
            StepUp::Unavailable(e) => {
                tracing::error!(error = %e, "cannot read or write approvals; grant refused");
                Err(Some(OAuthError::new(
                    "temporarily_unavailable",
                    "this request needs a person's approval, and the approval store is unavailable; try again later",
                )))
            }
            other => {
                if matches!(other, StepUp::Denied(_)) {
                    event.decision = Outcome::Deny;
                }
                let (description, data) = other.refusal().unwrap_or_default();
                Err(Some(OAuthError {
                    extra: Some(Box::new(data)),
                    ..OAuthError::new("access_denied", description)
                }))
            }
        }
    }

    /// RFC 8693 token exchange: authenticate the acting agent, read the
    /// subject token, narrow, decide, then issue; a refusal at any step is
    /// recorded and answered.
    async fn exchange(
        &self,
        params: &Params,
        caller: &Caller,
    ) -> Result<TokenResponse, OAuthError> {
        let now = Timestamp::now();
        let mut event = self
            .event(Kind::TokenExchange, caller)
            .action("token:exchange");
        match self.exchange_grant(params, caller, now, &mut event).await {
            Ok((actor, grant)) => self.issue(&actor, grant, now, event).await,
            Err(e) => Err(self.refuse(event, e).await),
        }
    }

    /// The grant an exchange may issue, and who acts.
    async fn exchange_grant(
        &self,
        params: &Params,
        caller: &Caller,
        now: Timestamp,
        event: &mut AuditEvent,
    ) -> Result<(Actor, Grant), OAuthError> {
        let asked = ExchangeRequest::read(params)?;
        let actor = self.actor(asked.actor_token, now).await?;
        event.agent = Some(actor.agent.name.to_string());
        event.instance = Some(actor.instance.clone());
        let subject = self
            .subject(asked.subject_token, asked.subject_type, now)
            .await?;
        let prior_chain: Vec<String> = subject
            .act
            .as_ref()
            .map(|a| a.chain().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        event.user = Some(subject.sub.clone());
        event.chain.clone_from(&prior_chain);
        event.parent.clone_from(&subject.parent);
        event.txn.clone_from(&subject.txn);
        if !delegation::may_act_allows(
            subject.may_act.as_ref(),
            &self.issuer,
            &actor.claims.sub,
            actor.agent.name.as_str(),
        ) {
            return Err(OAuthError::invalid_grant(
                "the subject token's `may_act` does not name this agent",
            ));
        }
        let audiences = Self::audiences(params)?;
        let narrowed = delegation::narrow(
            delegation::Handed {
                sub: &subject.sub,
                chain: &prior_chain,
                scope: subject.scope.as_ref(),
                audience: subject.audience.as_deref(),
            },
            delegation::Asked {
                agent: actor.agent.name.as_str(),
                scope: params.one("scope")?,
                audience: &audiences,
            },
            self.max_depth,
        )?;
        let context = Context {
            user: subject.user.clone(),
            scopes: narrowed.scope.iter().map(str::to_owned).collect(),
            depth: narrowed.depth,
            chain: narrowed.chain,
            task: subject.parent.clone(),
            txn: subject.txn.clone(),
            source_ip: caller.source_ip,
            ..Context::at(now)
        };
        if let Err(held) = self
            .decide(
                Action::TokenExchange,
                &actor,
                &narrowed.audience,
                &context,
                event,
            )
            .await
        {
            return Err(held.unwrap_or_else(|| OAuthError::denied_by_policy(
                format!(
                    "policy does not allow agent `{}` this exchange (scope `{}`, audience `{}`)",
                    actor.agent.name,
                    narrowed.scope,
                    shown(&narrowed.audience.join(" "), 100)
                ),
                event.reasons.clone(),
            )));
        }
        let grant = Grant {
            sub: subject.sub,
            act: Some(Act::push(actor.claims.sub.clone(), subject.act)),
            scope: narrowed.scope,
            aud: narrowed.audience,
            subject_exp: subject.exp,
            parent: subject.parent,
            txn: subject.txn,
            depth: narrowed.depth,
            groups: subject.user.map(|u| u.groups).unwrap_or_default(),
            may_act: subject.may_act,
        };
        Ok((actor, grant))
    }

    /// Client credentials for an agent acting for itself: authenticate by
    /// its identity token as client assertion, read scope and audience,
    /// decide, then issue.
    async fn client_credentials(
        &self,
        params: &Params,
        caller: &Caller,
    ) -> Result<TokenResponse, OAuthError> {
        let now = Timestamp::now();
        let mut event = self.event(Kind::TokenSelf, caller).action("token:self");
        match self.self_grant(params, caller, now, &mut event).await {
            Ok((actor, grant)) => self.issue(&actor, grant, now, event).await,
            Err(e) => Err(self.refuse(event, e).await),
        }
    }

    /// The grant of a client-credentials request, and who acts.
    async fn self_grant(
        &self,
        params: &Params,
        caller: &Caller,
        now: Timestamp,
        event: &mut AuditEvent,
    ) -> Result<(Actor, Grant), OAuthError> {
        if params.one("client_assertion_type")? != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be {JWT_BEARER} with the agent's identity token as client_assertion"
            )));
        }
        let assertion = params
            .required("client_assertion")
            .map_err(|e| OAuthError::invalid_client(e.description))?;
        let actor = self
            .actor(assertion, now)
            .await
            .map_err(|e| OAuthError::invalid_client(e.description))?;
        if let Ok(Some(id)) = params.one("client_id")
            && id != actor.agent.name.as_str()
        {
            return Err(OAuthError::invalid_client(
                "client_id does not match the client assertion's agent",
            ));
        }
        event.agent = Some(actor.agent.name.to_string());
        event.instance = Some(actor.instance.clone());
        event.user = Some(actor.claims.sub.clone());
        let requested = match params.one("scope")? {
            Some(s) => {
                ScopeSet::parse(s).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?
            }
            None => ScopeSet::default(),
        };
        if requested.is_empty() {
            return Err(OAuthError::new("invalid_scope", "`scope` is required"));
        }
        let audiences = Self::audiences(params)?;
        if audiences.is_empty() {
            return Err(OAuthError::new(
                "invalid_target",
                "`audience` (or `resource`) is required",
            ));
        }
        let mut context = Context::at(now);
        context.scopes = requested.iter().map(str::to_owned).collect();
        context.source_ip = caller.source_ip;
        if let Err(held) = self
            .decide(Action::TokenSelf, &actor, &audiences, &context, event)
            .await
        {
            return Err(held.unwrap_or_else(|| OAuthError::denied_by_policy(
                format!(
                    "policy does not allow agent `{}` a token for itself (scope `{requested}`, audience `{}`)",
                    actor.agent.name,
                    shown(&audiences.join(" "), 100)
                ),
                event.reasons.clone(),
            )));
        }
        let grant = Grant {
            sub: actor.claims.sub.clone(),
            act: None,
            scope: requested,
            aud: audiences,
            subject_exp: i64::MAX,
            parent: None,
            txn: None,
            depth: 0,
            groups: Vec::new(),
            may_act: None,
        };
        Ok((actor, grant))
    }

    /// Issues a decided grant: its lifetime (no longer than the agent's
    /// limit or the subject token's), claims, signature, and the durable
    /// record of the task before the token leaves the broker.
    async fn issue(
        &self,
        actor: &Actor,
        grant: Grant,
        now: Timestamp,
        event: AuditEvent,
    ) -> Result<TokenResponse, OAuthError> {
        let cap = i64::try_from(MAX_TOKEN_LIFETIME.as_secs()).unwrap_or(3600);
        let ttl = DEFAULT_TASK_TTL_SECS
            .min(i64::try_from(actor.agent.max_ttl.as_secs()).unwrap_or(cap))
            .min(cap);
        let exp = (now.as_secs() + ttl).min(grant.subject_exp);
        if exp <= now.as_secs() {
            return Err(self
                .refuse(
                    event,
                    OAuthError::invalid_grant("the subject token has expired"),
                )
                .await);
        }
        let (claims, record) = self.new_task(actor, grant, exp, now)?;
        let token = {
            let set = self.keys.current();
            let Some(key) = set.active(now) else {
                return Err(OAuthError::new(
                    "temporarily_unavailable",
                    "no signing key is active",
                ));
            };
            jwt::sign(key, TASK_TOKEN_TYP, &claims).map_err(|e| {
                tracing::error!(error = %e, "signing a task token failed");
                OAuthError::new("server_error", "the broker could not sign the token")
            })?
        };
        let mut event = event
            .task(record.task.clone())
            .txn(record.txn.clone())
            .scope(record.scope.clone())
            .credential_type("task_token")
            .credential_id(record.jti.clone())
            .expires(record.expires_at);
        event.parent.clone_from(&record.parent);
        let kind = event.event.clone();
        let scope = record.scope.clone();
        self.record_issued(actor, record, event).await?;
        self.metrics.token_grant(&kind, "issued");
        Ok(TokenResponse {
            access_token: token,
            issued_token_type: token_type::ACCESS_TOKEN,
            token_type: "Bearer",
            expires_in: exp - now.as_secs(),
            scope,
        })
    }

    /// The claims of a new task token and the record of its task.
    fn new_task(
        &self,
        actor: &Actor,
        grant: Grant,
        exp: i64,
        now: Timestamp,
    ) -> Result<(TaskClaims, TaskRecord), OAuthError> {
        let task = random_id("tsk_", now)?;
        let txn = match grant.txn {
            Some(t) => t,
            None => random_id("txn_", now)?,
        };
        let jti = random_id("", now)?;
        let claims = TaskClaims {
            iss: self.issuer.to_string(),
            sub: grant.sub.clone(),
            aud: grant.aud.clone(),
            scope: grant.scope.to_string(),
            act: grant.act,
            client_id: actor.agent.name.to_string(),
            task: task.clone(),
            parent: grant.parent.clone(),
            txn: txn.clone(),
            jti: jti.clone(),
            iat: now.as_secs(),
            nbf: now.as_secs(),
            exp,
            may_act: grant.may_act,
        };
        let record = TaskRecord {
            task,
            jti,
            parent: grant.parent,
            txn,
            agent: actor.agent.name.to_string(),
            instance: actor.instance.clone(),
            subject: grant.sub,
            scope: grant.scope.to_string(),
            audience: grant.aud,
            depth: grant.depth,
            issued_at: now,
            expires_at: Timestamp::from_millis(exp * 1000),
            revoked_at: None,
            groups: grant.groups,
            attestor: Some(actor.claims.attestor.as_str().to_owned()),
        };
        Ok((claims, record))
    }

    /// Records the task and its issuance in one transaction; a parent
    /// task or the instance revoked meanwhile refuses the grant.
    async fn record_issued(
        &self,
        actor: &Actor,
        record: TaskRecord,
        event: AuditEvent,
    ) -> Result<(), OAuthError> {
        match self.store.record_task(record, event.clone()).await {
            Ok(()) => Ok(()),
            Err(StoreError::Revoked { what, .. }) => {
                let e = OAuthError::invalid_grant(if what == "instance" {
                    format!("instance {} has been revoked", actor.instance)
                } else {
                    format!("the {what} was revoked while this grant was decided")
                });
                let mut ev = event;
                ev.decision = Outcome::Deny;
                ev.credential_id = None;
                ev.credential_type = None;
                ev.expires_at = None;
                ev.reasons = Vec::new();
                Err(self.refuse(ev, e).await)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record a task; grant refused");
                self.metrics.audit_write_failures.inc();
                Err(OAuthError::unavailable())
            }
        }
    }

    /// Introspection (RFC 7662): `None` for anything not active, including
    /// a token whose chain names an agent or instance that may no longer act.
    pub async fn introspect(&self, token: &str) -> Option<Map<String, Value>> {
        let now = Timestamp::now();
        let t = self.check_task_token(token, now).ok()?;
        let c = &t.claims;
        if now.as_secs() >= c.exp || now.as_secs() < c.nbf - 5 || self.is_revoked(&c.task) {
            return None;
        }
        let issued_ms = self.task_facts(&t).await.ok()?.issued_ms;
        self.check_chain(c, issued_ms).await.ok()?;
        let mut out = t.raw.clone();
        out.insert("active".into(), Value::Bool(true));
        out.insert("token_type".into(), Value::String("Bearer".into()));
        Some(out)
    }

    /// Identifies a caller by client assertion, for introspection and revocation.
    pub async fn client(&self, assertion: &str) -> Result<(String, String), OAuthError> {
        let a = self.actor(assertion, Timestamp::now()).await?;
        Ok((a.agent.name.to_string(), a.claims.sub))
    }

    /// Revokes `target` (an admin, or an agent for its own task) and returns
    /// the task ids revoked now. Memory is updated once the store committed.
    pub async fn revoke(
        &self,
        target: RevokeTarget,
        event: AuditEvent,
    ) -> Result<Vec<String>, StoreError> {
        let revoked = self
            .store
            .revoke(target.clone(), Timestamp::now(), event)
            .await?;
        {
            let mut set = self.revoked_tasks.write();
            set.extend(revoked.iter().cloned());
        }
        if let RevokeTarget::Instance(i) = &target {
            self.blocked_instances.write().insert(i.clone());
        }
        Ok(revoked)
    }

    /// Follows a revocation committed by another broker sharing the store.
    pub fn note_revoked(&self, task: &str) {
        self.revoked_tasks.write().insert(task.to_owned());
    }

    /// Follows an instance block committed by another broker.
    pub fn note_blocked(&self, instance: &str) {
        self.blocked_instances.write().insert(instance.to_owned());
    }

    /// Re-reads every revocation and block from the store (this broker
    /// missed changes). Revocations are only ever added here: a task
    /// revoked is never un-revoked, whatever the store says.
    pub async fn reload_revocations(&self) -> Result<(), StoreError> {
        let (tasks, instances) = self.store.revoked_state(Timestamp::now()).await?;
        self.revoked_tasks.write().extend(tasks);
        *self.blocked_instances.write() = instances.into_iter().collect();
        Ok(())
    }

    /// Re-reads the instance blocks from the store (after an agent was
    /// re-enabled, which lifts its instances' blocks).
    pub async fn reload_blocks(&self) -> Result<(), StoreError> {
        let (_, instances) = self.store.revoked_state(Timestamp::now()).await?;
        {
            let mut set = self.blocked_instances.write();
            *set = instances.into_iter().collect();
        }
        Ok(())
    }

    /// The task a token names, if it verifies (expired or not): for an agent
    /// revoking its own task.
    pub fn task_of(&self, token: &str) -> Option<TaskClaims> {
        self.check_task_token(token, Timestamp::now())
            .ok()
            .map(|t| t.claims.clone())
    }
}

/// Whether `agent` was created after an identity token was issued: then the
/// token was issued to an earlier agent of that name, since deleted. The
/// token's `jti` starts with its issuance in milliseconds (12 hex digits);
/// for a token without one, `iat` (seconds) decides, and a creation in the
/// same second counts as after.
fn created_after(agent: &Agent, jti: &str, iat: i64) -> bool {
    let issued_ms = match jti.get(..12).map(|h| i64::from_str_radix(h, 16)) {
        Some(Ok(ms)) if jti.len() == 28 && jti.bytes().all(|b| b.is_ascii_hexdigit()) => ms,
        _ => iat.saturating_add(1).saturating_mul(1000) - 1,
    };
    agent.created_at.as_millis() > issued_ms
}

/// The most groups a user token may name.
const MAX_GROUPS: usize = 256;

/// The user's groups from `claim`: a list of strings or a space-separated
/// string. Anything else present is an error, never "no groups": a forbid on
/// a group must not be dodged by an IdP sending it in another shape.
fn user_groups(claims: &Map<String, Value>, claim: &str) -> Result<Vec<String>, OAuthError> {
    let unreadable = || {
        OAuthError::invalid_grant(format!(
            "the user token's `{claim}` claim is not a list of strings (or a space-separated string) of at most {MAX_GROUPS} groups; nothing is issued for a user whose groups cannot be read"
        ))
    };
    let groups: Vec<String> = match claims.get(claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|g| g.as_str().map(str::to_owned).ok_or_else(unreadable))
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(unreadable()),
    };
    if groups.len() > MAX_GROUPS
        || groups
            .iter()
            .any(|g| g.is_empty() || g.len() > 256 || g.chars().any(char::is_control))
    {
        return Err(unreadable());
    }
    Ok(groups)
}

/// What a user token's scope allows: `scope` (RFC 8693 §4.2, a
/// space-separated string) and `scp` (Okta, Entra ID), each a string or a
/// list of strings. When both are present, only what both allow. A scope
/// claim that is present but cannot be read is an error, never "no limit".
fn user_scope(claims: &Map<String, Value>) -> Result<Option<ScopeSet>, OAuthError> {
    let mut bound: Option<ScopeSet> = None;
    for claim in ["scope", "scp"] {
        let text = match claims.get(claim) {
            None => continue,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => {
                let items: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
                match items {
                    Some(items) if items.iter().all(|i| !i.contains(' ')) => items.join(" "),
                    _ => {
                        return Err(OAuthError::invalid_grant(format!(
                            "the user token's `{claim}` claim is a list with an item that is not one scope; nothing is issued for a token whose scope cannot be read"
                        )));
                    }
                }
            }
            Some(_) => {
                return Err(OAuthError::invalid_grant(format!(
                    "the user token's `{claim}` claim is neither a string nor a list of strings; nothing is issued for a token whose scope cannot be read"
                )));
            }
        };
        let set = ScopeSet::parse(&text).map_err(|e| {
            OAuthError::invalid_grant(format!("the user token's `{claim}` claim: {e}"))
        })?;
        bound = Some(match bound {
            None => set,
            Some(b) => b.intersection(&set),
        });
    }
    Ok(bound)
}

/// The approval id a step-up answered with, if any.
fn approval_id(step: &StepUp) -> Option<&str> {
    match step {
        StepUp::Approved(a) | StepUp::Pending(a) | StepUp::Denied(a) => Some(&a.id),
        StepUp::Refused(_) | StepUp::Unavailable(_) => None,
    }
}

/// Adds `more`'s members to the record's detail.
fn add_detail(event: &mut AuditEvent, more: Value) {
    match (&mut event.detail, more) {
        (Some(Value::Object(d)), Value::Object(m)) => d.extend(m),
        (d @ None, m) => *d = Some(m),
        _ => {}
    }
}
