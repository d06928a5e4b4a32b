//! Attestation: evidence in, identity token out.
//!
//! Each attestor ([`unix`], [`oidc`], join tokens) establishes [`Evidence`];
//! [`AttestService::issue`] does the rest, the same for all of them:
//! 1. find the one agent whose selectors the evidence satisfies (none: refused;
//!    several: refused, and the conflict is named to the operator in the log and
//!    the audit trail, never to the caller);
//! 2. refuse agents that are not active;
//! 3. decide `Action::"identity:issue"` on the requested audience;
//! 4. sign the identity token, then record the instance and the issuance in one
//!    durable transaction, and only then hand the token out.
//!
//! Every outcome, success or refusal, is one audit record `attest.<attestor>`.

pub mod oidc;
pub mod unix;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use serde::Serialize;
use warrant_core::TrustDomain;
use warrant_core::agent::{Agent, AgentStatus};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::decision::{
    Action, AgentFacts, Context, DecisionRequest, Effect, Principal, Resource,
};
use warrant_core::identity::{
    Attestor, Evidence, IDENTITY_TOKEN_TYP, IdentityClaims, Instance, JoinTokenSecret, spiffe_id,
};
use warrant_core::name::AgentName;
use warrant_core::text::shown;
use warrant_core::time::{Timestamp, Ttl};
use warrant_store::{Store, StoreError};

use crate::keys::KeyService;
use crate::metrics::Metrics;
use crate::policy::PolicyService;

/// The default lifetime of an identity token.
pub const DEFAULT_IDENTITY_TTL: Ttl = Ttl::from_secs(300);

/// The longest audience accepted.
const MAX_AUDIENCE_LEN: usize = 512;

/// An issued identity.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityResponse {
    /// The JWT.
    pub identity_token: String,
    /// `spiffe://<td>/agent/<name>/<instance>`.
    pub spiffe_id: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Why nothing was issued. The message is for the caller: it never names
/// another agent or a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request is malformed (bad audience, body, token syntax).
    Invalid(String),
    /// The evidence did not prove an identity warrant issues.
    Denied(String),
    /// Something on our side failed (the audit trail, signing).
    Unavailable(String),
}

impl Refusal {
    /// The text.
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid(m) | Self::Denied(m) | Self::Unavailable(m) => m,
        }
    }
}

/// What the caller asked for and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The audience the identity token is for (default: the issuer).
    pub audience: Option<String>,
    /// The caller's address, for policy and the audit trail.
    pub source_ip: Option<IpAddr>,
    /// How the source is described in the audit trail.
    pub source: Option<String>,
}

/// The attestation service.
pub struct AttestService {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    policy: Arc<PolicyService>,
    metrics: Arc<Metrics>,
    issuer: Arc<str>,
    trust_domain: TrustDomain,
    /// Trusted OIDC issuers: replaced whole by a reload.
    oidc: ArcSwap<oidc::Providers>,
    /// Executable hashes, by file identity.
    pub exe_hashes: unix::HashCache,
    /// Audiences only task tokens carry: replaced whole by a reload.
    task_audiences: ArcSwap<std::collections::HashSet<String>>,
    /// Refusals of callers that proved no agent, recorded in aggregate.
    refusals: Arc<crate::refusals::RefusalLog>,
    /// One-time proofs that a unix peer's next request is sent after the
    /// broker looked at it. A std mutex: held for a map operation only.
    proofs: parking_lot::Mutex<std::collections::HashMap<String, Proof>>,
}

/// What a proof was minted for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proof {
    pid: u32,
    uid: u32,
    gid: u32,
    start_time: u64,
    exe: (u64, u64),
    expires: std::time::Instant,
}

/// How long a proof may wait for its request.
const PROOF_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// The most proofs waiting at once.
const MAX_PROOFS: usize = 4096;

impl std::fmt::Debug for AttestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestService").finish_non_exhaustive()
    }
}

/// The parts an attestation needs.
#[allow(missing_debug_implementations)]
pub struct Parts {
    /// What every issuing service shares.
    pub common: crate::IssuerParts,
    /// Trusted OIDC issuers.
    pub oidc: oidc::Providers,
    /// Audiences only task tokens carry (the routes' and MCP servers'):
    /// an identity token is never issued for one.
    pub task_audiences: Vec<String>,
}

/// An audience as relying parties might compare it loosely. Identity
/// tokens are refused for any audience that compares equal to a route's or
/// MCP server's this way, so a spelling variant cannot slip past the
/// one-kind-per-audience rule at an upstream that normalises: surrounding
/// space, case, a default port, user information, a trailing dot on the
/// host, dot segments, percent-escapes, a query or fragment, trailing `/`.
pub fn audience_key(audience: &str) -> String {
    let t = audience.trim();
    let text = match url::Url::parse(t) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            if let Some(h) = u.host_str().map(str::to_owned)
                && let Some(bare) = h.strip_suffix('.')
            {
                let _ = u.set_host(Some(bare));
            }
            u.to_string()
        }
        _ => t.to_owned(),
    };
    percent_decoded(&text)
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

/// `s` with every percent-escape decoded (invalid UTF-8 replaced).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl From<crate::random::RandomFailed> for Refusal {
    fn from(e: crate::random::RandomFailed) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl AttestService {
    /// Assembles the service.
    pub fn new(p: Parts) -> Self {
        let c = p.common;
        Self {
            store: c.store,
            keys: c.keys,
            policy: c.policy,
            metrics: c.metrics,
            issuer: c.issuer,
            trust_domain: c.trust_domain,
            oidc: ArcSwap::from_pointee(p.oidc),
            exe_hashes: unix::HashCache::default(),
            task_audiences: ArcSwap::from_pointee(
                p.task_audiences.iter().map(|a| audience_key(a)).collect(),
            ),
            refusals: c.refusals,
            proofs: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn event(&self, evidence: Option<&Evidence>, attestor: &str, req: &Request) -> AuditEvent {
        let kind = match attestor {
            "unix" => Kind::AttestUnix,
            "oidc" => Kind::AttestOidc,
            "join" => Kind::AttestJoin,
            _ => Kind::AttestRenew,
        };
        let mut e = AuditEvent::new(kind, Outcome::Deny)
            .protocol(format!("attest-{attestor}"))
            .action("identity:issue");
        if let Some(ev) = evidence {
            e = e.detail(serde_json::json!({ "attestor": attestor, "evidence": ev.summary() }));
        } else {
            e = e.detail(serde_json::json!({ "attestor": attestor }));
        }
        if let Some(s) = &req.source {
            e = e.source(s.clone());
        }
        e
    }

    fn count(&self, attestor: &str, outcome: &str) {
        self.metrics.attestation(attestor, outcome);
    }

    /// Records a refusal that happened before there was any evidence (a
    /// malformed request, an unverifiable token) and returns it.
    pub async fn refuse_early(&self, attestor: &str, req: &Request, refusal: Refusal) -> Refusal {
        let why = refusal.message().to_owned();
        tracing::info!(attestor, reason = %why, source = req.source.as_deref().unwrap_or("-"), "attestation refused");
        let mut event = self.event(None, attestor, req).reason(why);
        if matches!(refusal, Refusal::Invalid(_)) {
            event.decision = Outcome::Error;
        }
        self.count(attestor, outcome_label(&refusal));
        // Nothing was proven yet: within the budget one by one, else in
        // aggregate.
        let Some(event) = self.refusals.admit(event) else {
            return refusal;
        };
        match self.store.append_audit(event).await {
            Ok(_) => refusal,
            Err(e) => audit_failed(&e),
        }
    }

    async fn refuse(
        &self,
        evidence: &Evidence,
        req: &Request,
        event: AuditEvent,
        operator_reason: String,
        refusal: Refusal,
    ) -> Refusal {
        let attestor = evidence.attestor().as_str();
        tracing::info!(attestor, reason = %operator_reason, evidence = %evidence.summary(), source = req.source.as_deref().unwrap_or("-"), "attestation refused");
        self.count(attestor, outcome_label(&refusal));
        let mut event = event;
        if event.reasons.is_empty() {
            event = event.reason(operator_reason);
        }
        // Evidence that names no agent is a refusal of a caller warrant does
        // not know: recorded in aggregate.
        let event = if event.agent.is_none() {
            match self.refusals.admit(event) {
                Some(ev) => ev,
                None => return refusal,
            }
        } else {
            event
        };
        match self.store.append_audit(event).await {
            Ok(_) => refusal,
            Err(e) => audit_failed(&e),
        }
    }

    /// Mints a one-time proof for `peer`: it has just been seen running the
    /// file it ran at accept. `None` if it no longer does, or too many
    /// proofs wait.
    pub fn mint_proof(&self, peer: &unix::Peer) -> Option<String> {
        let (Some(start_time), Some(exe)) = (peer.start_time, peer.exe) else {
            return None;
        };
        // Looked at again now: the request carrying the proof is sent after.
        if peer.exited()
            || unix::start_time(peer.pid).ok() != Some(start_time)
            || unix::exe_id(peer.pid).ok() != Some(exe)
        {
            return None;
        }
        let id = crate::random::hex_id(16).ok()?;
        let now = std::time::Instant::now();
        let mut proofs = self.proofs.lock();
        proofs.retain(|_, p| p.expires > now);
        if proofs.len() >= MAX_PROOFS {
            return None;
        }
        proofs.insert(
            id.clone(),
            Proof {
                pid: peer.pid,
                uid: peer.uid,
                gid: peer.gid,
                start_time,
                exe,
                expires: now + PROOF_TTL,
            },
        );
        Some(id)
    }

    /// Spends a proof: whether it was minted, unexpired, for this same
    /// process running this same file.
    pub fn take_proof(&self, id: &str, peer: &unix::Peer) -> bool {
        let Some(p) = self.proofs.lock().remove(id) else {
            return false;
        };
        p.expires > std::time::Instant::now()
            && p.pid == peer.pid
            && p.uid == peer.uid
            && p.gid == peer.gid
            && Some(p.start_time) == peer.start_time
            && Some(p.exe) == peer.exe
    }

    /// The trusted OIDC issuers in force.
    pub fn oidc(&self) -> Arc<oidc::Providers> {
        self.oidc.load_full()
    }

    /// Puts new trusted OIDC issuers in force.
    pub fn set_oidc(&self, providers: oidc::Providers) {
        self.oidc.store(Arc::new(providers));
    }

    /// Puts a new set of task-token audiences in force: an identity token
    /// is never issued for one of them.
    pub fn set_task_audiences(&self, audiences: &[String]) {
        self.task_audiences.store(Arc::new(
            audiences.iter().map(|a| audience_key(a)).collect(),
        ));
    }

    /// Finds the agent, decides, signs, records, and returns the identity.
    pub async fn issue(
        &self,
        evidence: Evidence,
        req: &Request,
    ) -> Result<IdentityResponse, Refusal> {
        self.issue_inner(evidence, Admit::Match, req).await
    }

    /// Attests a unix peer (reading `/proc` on a blocking thread) and
    /// issues its identity, recording either outcome: the agent socket's
    /// and the Workload API's one way in.
    pub async fn unix(
        self: &Arc<Self>,
        peer: unix::Peer,
        req: &Request,
    ) -> Result<IdentityResponse, Refusal> {
        // Set when this attestation is given up (its future dropped, as on
        // a request timeout or a client gone): the hash then stops rather
        // than run on unseen.
        struct GiveUp(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for GiveUp {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let give_up = GiveUp(Arc::default());
        let cancelled = give_up.0.clone();
        let this = self.clone();
        let facts =
            tokio::task::spawn_blocking(move || unix::attest(&peer, &this.exe_hashes, &cancelled))
                .await;
        drop(give_up);
        match facts {
            Ok(Ok(f)) => self.issue(Evidence::Unix(f), req).await,
            Ok(Err(e)) => {
                let r = match e {
                    unix::UnixError::Busy => Refusal::Unavailable(e.to_string()),
                    _ => Refusal::Denied(e.to_string()),
                };
                Err(self.refuse_early("unix", req, r).await)
            }
            Err(_) => Err(Refusal::Unavailable("attestation failed".into())),
        }
    }

    /// Checks a JWT-SVID (a warrant identity token) for `audience`, as the
    /// Workload API's `ValidateJWTSVID`: signature by a published key, kind,
    /// issuer, audience, lifetime, and a subject in this trust domain.
    /// Returns the SPIFFE ID and the claims.
    pub fn validate_identity(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(String, serde_json::Map<String, serde_json::Value>), String> {
        let now = Timestamp::now();
        let keys = self.keys.verifying_keys(now);
        let verified = warrant_token::jwt::verify(token, &keys)
            .map_err(|e| format!("the JWT-SVID does not verify: {e}"))?;
        if verified.header.typ.as_deref() != Some(IDENTITY_TOKEN_TYP) {
            return Err("the token is not a JWT-SVID (a warrant identity token)".into());
        }
        let expect = warrant_token::jwt::Expect {
            issuer: &self.issuer,
            audience,
            now,
            leeway_secs: 0,
        };
        expect.check(&verified.claims).map_err(|e| e.to_string())?;
        let sub = verified
            .claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !sub.starts_with(&format!("spiffe://{}/", self.trust_domain)) {
            return Err("the token's subject is not of this trust domain".into());
        }
        Ok((sub, verified.claims))
    }

    /// `join`: the agent the token names, and the token's hash, spent in the
    /// same transaction that records the issuance.
    async fn issue_inner(
        &self,
        evidence: Evidence,
        admit: Admit<'_>,
        req: &Request,
    ) -> Result<IdentityResponse, Refusal> {
        // Renewals are recorded as `attest.renew`, redemptions as `attest.join`.
        let label = match admit {
            Admit::Renew(_) => "renew",
            _ => evidence.attestor().as_str(),
        };
        let mut event = self.event(Some(&evidence), label, req);
        match self
            .identity(&evidence, admit, label, req, &mut event)
            .await
        {
            Ok(r) => Ok(r),
            Err(Stop::Refused(why, r)) => Err(self.refuse(&evidence, req, event, why, r).await),
            Err(Stop::Unrecorded(r)) => Err(r),
        }
    }

    /// Read the audience, find the agent, decide, sign, record.
    async fn identity(
        &self,
        evidence: &Evidence,
        admit: Admit<'_>,
        label: &'static str,
        req: &Request,
        event: &mut AuditEvent,
    ) -> Result<IdentityResponse, Stop> {
        let audience = self.audience(req, event)?;
        let agent = self.agent_for(evidence, &admit).await?;
        event.agent = Some(agent.name.to_string());
        let now = Timestamp::now();
        let instance_id = evidence.instance_id(&agent.name);
        let attempt = Attempt {
            evidence,
            req,
            label,
        };
        self.decide_identity(&attempt, &agent, &instance_id, &audience, now, event)?;
        let attestor = evidence.attestor();
        let spiffe = spiffe_id(&self.trust_domain, &agent.name, &instance_id);
        let ttl = DEFAULT_IDENTITY_TTL.as_secs().min(agent.max_ttl.as_secs());
        // Time-ordered: the token's issuance to the millisecond, which
        // `iat` (seconds) cannot tell from an agent's re-creation.
        let jti = crate::random::ordered_id("", now.as_millis()).map_err(Refusal::from)?;
        let exp = now.as_secs() + i64::try_from(ttl).unwrap_or(300);
        let claims = IdentityClaims {
            iss: self.issuer.to_string(),
            sub: spiffe.clone(),
            aud: audience.clone(),
            exp,
            iat: now.as_secs(),
            jti: jti.clone(),
            agent: agent.name.to_string(),
            env: agent.env.to_string(),
            attestor,
        };
        let token = {
            let set = self.keys.current();
            let Some(key) = set.active(now) else {
                return Err(Refusal::Unavailable("no signing key is active".into()).into());
            };
            warrant_token::jwt::sign(key, IDENTITY_TOKEN_TYP, &claims)
                .map_err(|e| Refusal::Unavailable(e.to_string()))?
        };
        let expires_at = Timestamp::from_millis(exp * 1000);
        let instance = Instance {
            id: instance_id.clone(),
            agent: agent.name.clone(),
            attestor,
            evidence: evidence.summary(),
            first_seen: now,
            last_seen: now,
            expires_at,
        };
        let issued = event
            .take()
            .instance(instance_id.to_string())
            .credential_type("identity_token")
            .credential_id(jti)
            .expires(expires_at)
            .detail(serde_json::json!({
                "attestor": attestor.as_str(),
                "evidence": evidence.summary(),
                "spiffe_id": spiffe,
                "audience": audience,
            }));
        self.record_identity(&attempt, &admit, instance, issued, now, event)
            .await?;
        self.count(label, "issued");
        tracing::info!(agent = %agent.name, instance = %instance_id, attestor = attestor.as_str(), "identity issued");
        Ok(IdentityResponse {
            identity_token: token,
            spiffe_id: spiffe,
            expires_in: ttl,
        })
    }

    /// The audience asked for (the issuer's by default): short, printable,
    /// and never a route's or MCP server's.
    fn audience(&self, req: &Request, event: &mut AuditEvent) -> Result<String, Stop> {
        let audience = match req.audience.as_deref() {
            None | Some("") => return Ok(self.issuer.to_string()),
            Some(a) if a.len() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control) => {
                let r = Refusal::Invalid(format!(
                    "the audience must be at most {MAX_AUDIENCE_LEN} characters without control characters"
                ));
                event.reasons.push(r.message().to_owned());
                event.decision = Outcome::Error;
                return Err(Stop::refused(r));
            }
            Some(a) => a.to_owned(),
        };
        // INVARIANT (one kind per audience): a route's or MCP server's
        // audience is a task token's; an identity token for it could be
        // replayed to that upstream as if warrant had vouched for a task.
        if self
            .task_audiences
            .load()
            .contains(&audience_key(&audience))
        {
            return Err(Stop::refused(Refusal::Denied(format!(
                "audience `{}` belongs to a route or MCP server, where only task tokens are accepted; exchange for a task token with that audience instead",
                shown(&audience, 100)
            ))));
        }
        Ok(audience)
    }

    /// The agent the evidence (or the join token, or the renewing
    /// instance) names: exactly one, or nothing is issued.
    async fn agent_for(&self, evidence: &Evidence, admit: &Admit<'_>) -> Result<Agent, Stop> {
        if let Admit::Join(a, _) | Admit::Renew(a) = admit {
            return Ok((*a).clone());
        }
        let agents = self
            .store
            .list_agents()
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let matched: Vec<&Agent> = agents.iter().filter(|a| evidence.matches(a)).collect();
        match matched.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Stop::Refused(
                "no agent's selectors match".to_owned(),
                Refusal::Denied(format!(
                    "this workload matches no registered agent ({} attestation); register it with selectors it satisfies",
                    evidence.attestor().as_str()
                )),
            )),
            many => {
                let names: Vec<String> = many.iter().map(|a| a.name.to_string()).collect();
                tracing::warn!(agents = %names.join(","), evidence = %evidence.summary(), "attestation matches several agents; nothing issued");
                Err(Stop::Refused(
                    format!(
                        "ambiguous: agents {} all match; make their selectors disjoint",
                        names.join(", ")
                    ),
                    Refusal::Denied(
                        "this workload matches more than one registered agent; the operator must resolve the conflict".into(),
                    ),
                ))
            }
        }
    }

    /// Decide: the agent active, and policy allowing `identity:issue` for
    /// the audience.
    fn decide_identity(
        &self,
        attempt: &Attempt<'_>,
        agent: &Agent,
        instance_id: &warrant_core::identity::InstanceId,
        audience: &str,
        now: Timestamp,
        event: &mut AuditEvent,
    ) -> Result<(), Stop> {
        let Attempt { evidence, req, .. } = *attempt;
        if agent.status != AgentStatus::Active {
            return Err(Stop::refused(Refusal::Denied(format!(
                "agent `{}` is {}; nothing is issued to it",
                agent.name,
                agent.status.as_str()
            ))));
        }
        let mut context = Context::at(now);
        context.source_ip = req.source_ip;
        let decision_req = DecisionRequest {
            principal: Principal {
                agent: AgentFacts::from(agent),
                instance: instance_id.to_string(),
                attestor: evidence.attestor().as_str().to_owned(),
            },
            action: Action::IdentityIssue,
            resource: Resource::Audience(audience.to_owned()),
            context,
        };
        let (decision, decided) = self.policy.decide_for_record(&decision_req, event.take());
        *event = decided;
        if decision.effect == Effect::Allow {
            return Ok(());
        }
        Err(Stop::Refused(
            decision.reasons().join("; "),
            Refusal::Denied(format!(
                "policy does not allow an identity for agent `{}` with audience `{}`",
                agent.name,
                shown(audience, 100)
            )),
        ))
    }

    /// Record: the instance and the issuance (with the join token spent)
    /// in one transaction. A revoked instance, or a join token spent
    /// meanwhile, refuses; `event` is then the refusal's record.
    async fn record_identity(
        &self,
        attempt: &Attempt<'_>,
        admit: &Admit<'_>,
        instance: Instance,
        issued: AuditEvent,
        now: Timestamp,
        event: &mut AuditEvent,
    ) -> Result<(), Stop> {
        let Attempt {
            evidence,
            req,
            label,
        } = *attempt;
        let agent = instance.agent.to_string();
        let instance_id = instance.id.clone();
        let recorded = match admit {
            Admit::Join(_, hash) => {
                self.store
                    .redeem_join_token(hash, now, instance, issued)
                    .await
            }
            Admit::Match | Admit::Renew(_) => self.store.record_instance(instance, issued).await,
        };
        match recorded {
            Ok(_) => Ok(()),
            Err(StoreError::Revoked {
                what: "instance", ..
            }) => {
                *event = self
                    .event(Some(evidence), label, req)
                    .agent(agent.clone())
                    .instance(instance_id.to_string());
                Err(Stop::refused(Refusal::Denied(format!(
                    "instance {instance_id} of agent `{agent}` has been revoked (`warrant revoke --instance`), so it gets no new identity; a new execution of the agent attests as a new instance"
                ))))
            }
            Err(StoreError::Revoked { what: "agent", .. }) => {
                *event = self
                    .event(Some(evidence), label, req)
                    .agent(agent.clone())
                    .instance(instance_id.to_string());
                Err(Stop::refused(Refusal::Denied(format!(
                    "agent `{agent}` is no longer active (disabled, quarantined or deleted through another broker a moment ago), so it gets no identity"
                ))))
            }
            Err(StoreError::Precondition { .. }) => {
                *event = self
                    .event(Some(evidence), evidence.attestor().as_str(), req)
                    .agent(agent);
                Err(Stop::refused(Refusal::Denied(
                    "this join token has already been redeemed or has expired".into(),
                )))
            }
            Err(e) => {
                self.metrics.audit_write_failures.inc();
                self.count(label, "error");
                Err(Stop::Unrecorded(audit_failed(&e)))
            }
        }
    }

    /// Redeems a join token: checks it, then issues (the redemption and the
    /// issuance commit together, so a token is spent only on success).
    pub async fn join(&self, token: &str, req: Request) -> Result<IdentityResponse, Refusal> {
        let secret = JoinTokenSecret::presented(token);
        let record = match self.store.join_token_by_hash(&secret.hash()).await {
            Ok(r) => r,
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        };
        let Some(record) = record else {
            return Err(self
                .refuse_early(
                    "join",
                    &req,
                    Refusal::Denied("the join token is not recognised".into()),
                )
                .await);
        };
        let evidence = Evidence::Join {
            token_id: record.id.clone(),
        };
        let base = self
            .event(Some(&evidence), "join", &req)
            .agent(record.agent.to_string());
        if record.redeemed_at.is_some() {
            let r = Refusal::Denied("this join token has already been redeemed".into());
            return Err(self
                .refuse(&evidence, &req, base, r.message().to_owned(), r)
                .await);
        }
        if Timestamp::now() >= record.expires_at {
            let r = Refusal::Denied(format!("this join token expired at {}", record.expires_at));
            return Err(self
                .refuse(&evidence, &req, base, r.message().to_owned(), r)
                .await);
        }
        let agent = match self.store.get_agent(&record.agent).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                let r = Refusal::Denied(format!("agent `{}` no longer exists", record.agent));
                return Err(self
                    .refuse(&evidence, &req, base, r.message().to_owned(), r)
                    .await);
            }
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        };
        self.issue_inner(evidence, Admit::Join(&agent, secret.hash()), &req)
            .await
    }
}

impl AttestService {
    /// Renews the identity of a join instance: the caller presents a valid
    /// identity token of that instance whose audience is the broker itself (a
    /// token minted for another audience is never accepted, so a relying party
    /// that received one cannot renew it). Unix instances ask the agent socket
    /// again and OIDC instances present a fresh platform token instead.
    pub async fn renew(&self, token: &str, req: Request) -> Result<IdentityResponse, Refusal> {
        let now = Timestamp::now();
        let keys = self.keys.verifying_keys(now);
        let deny = |m: String| Refusal::Denied(m);
        let verified = match warrant_token::jwt::verify(token, &keys) {
            Ok(v) => v,
            Err(e) => {
                let r = deny(format!("the identity token does not verify: {e}"));
                return Err(self.refuse_early("renew", &req, r).await);
            }
        };
        if verified.header.typ.as_deref() != Some(IDENTITY_TOKEN_TYP) {
            let r = deny("the token is not a warrant identity token".into());
            return Err(self.refuse_early("renew", &req, r).await);
        }
        let expect = warrant_token::jwt::Expect {
            issuer: &self.issuer,
            audience: &self.issuer,
            now,
            leeway_secs: 0,
        };
        if let Err(e) = expect.check(&verified.claims) {
            let r = deny(format!(
                "{e}; renew with an unexpired identity token whose audience is this broker (`{}`)",
                self.issuer
            ));
            return Err(self.refuse_early("renew", &req, r).await);
        }
        let claims: IdentityClaims =
            match serde_json::from_value(serde_json::Value::Object(verified.claims)) {
                Ok(c) => c,
                Err(_) => {
                    let r = deny("the token is not a warrant identity token".into());
                    return Err(self.refuse_early("renew", &req, r).await);
                }
            };
        if claims.attestor != Attestor::Join {
            let r = deny(format!(
                "only join instances renew this way; a {} instance attests again instead",
                claims.attestor
            ));
            return Err(self.refuse_early("renew", &req, r).await);
        }
        let prefix = format!("spiffe://{}/agent/", self.trust_domain);
        let Some((name, id)) = claims
            .sub
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            let r = deny("the token's subject is not an instance of this trust domain".into());
            return Err(self.refuse_early("renew", &req, r).await);
        };
        let Ok(name) = AgentName::new(name) else {
            let r = deny("the token's subject is not an instance of this trust domain".into());
            return Err(self.refuse_early("renew", &req, r).await);
        };
        let agent = match self.store.get_agent(&name).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                let r = deny(format!("agent `{name}` no longer exists"));
                return Err(self.refuse_early("renew", &req, r).await);
            }
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        };
        let instance = match self.store.list_instances(&name).await {
            Ok(list) => list.into_iter().find(|i| i.id.as_str() == id),
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        };
        let Some(instance) = instance else {
            let r = deny("this instance no longer exists; redeem a new join token".into());
            return Err(self.refuse_early("renew", &req, r).await);
        };
        let evidence = Evidence::Renewal {
            instance: instance.id,
            evidence: instance.evidence,
        };
        self.issue_inner(evidence, Admit::Renew(&agent), &req).await
    }
}

/// How the agent is found and what the issuance spends.
#[derive(Clone, Copy)]
enum Admit<'a> {
    /// By matching the evidence against every agent's selectors.
    Match,
    /// The agent a join token names; the token (by hash) is spent.
    Join(&'a Agent, [u8; 32]),
    /// The agent of a join instance renewing its identity.
    Renew(&'a Agent),
}

/// One attempt to obtain an identity: the evidence, the request, and the
/// label its records and metrics carry.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    evidence: &'a Evidence,
    req: &'a Request,
    label: &'static str,
}

/// Why an issuance stops: refused and recorded (with the reason the
/// operator reads), or unable to go on (the store or signing unavailable),
/// answered without a record of its own.
enum Stop {
    Refused(String, Refusal),
    Unrecorded(Refusal),
}

impl Stop {
    /// Refused, the operator's reason being what the caller is told.
    fn refused(r: Refusal) -> Self {
        Self::Refused(r.message().to_owned(), r)
    }
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        Self::Unrecorded(r)
    }
}

fn outcome_label(r: &Refusal) -> &'static str {
    match r {
        Refusal::Invalid(_) => "invalid",
        Refusal::Denied(_) => "denied",
        Refusal::Unavailable(_) => "error",
    }
}

fn audit_failed(e: &StoreError) -> Refusal {
    tracing::error!(error = %e, "cannot write the audit trail; attestation refused");
    Refusal::Unavailable(
        "the broker cannot record this attestation in its audit trail, so nothing was issued; try again later".into(),
    )
}

#[cfg(test)]
mod audience_tests {
    use super::audience_key;

    /// Found after the fix of item 3: spelling variants of a route's
    /// audience got identity tokens.
    #[test]
    fn spellings_of_one_audience_compare_equal() {
        let want = audience_key("https://demo.example");
        for v in [
            "https://demo.example/",
            "HTTPS://Demo.Example",
            "https://demo.example:443",
            " https://demo.example ",
            "https://demo.example.",
            "https://demo.example/.",
            "https://demo.example#",
            "https://demo.example?",
            "https://demo.example/?x=1#y",
            "https://user@demo.example",
            "https://user:pw@demo.example:443/",
            "https://demo.example/%2e",
        ] {
            assert_eq!(audience_key(v), want, "{v}");
        }
        assert_ne!(audience_key("https://demo.example:8443"), want);
        assert_ne!(audience_key("https://other.example"), want);
        assert_eq!(
            audience_key("https://demo.example/api/%76%31"),
            audience_key("https://demo.example/api/v1/")
        );
        assert_eq!(audience_key("not a url/"), "not a url");
    }
}
