//! Step-up approval (DESIGN §11): a request that policy allows only with a
//! person's approval becomes an [`Approval`] bound to that one request;
//! approvers decide it; the same request asked again after a grant goes
//! ahead once.
//!
//! Everything that must happen once (asking, deciding, using) is decided
//! in the store, so several brokers sharing one give the same answer. A
//! broker only keeps a wake-up for requests it holds while a decision is
//! awaited, and the webhook queue (a notification that fails is retried,
//! then dropped and counted; it never grants anything).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use warrant_core::admin::Role;
use warrant_core::approval::{
    APPROVAL_ID_PREFIX, Approval, ApprovalState, ApprovalSubject, ApprovalTerms, StepUp, Verdict,
};
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::time::{Timestamp, Ttl};
use warrant_store::{Store, StoreError};

use crate::metrics::{Metrics, OutcomeLabels, StateLabels};

/// `[approvals]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalConfig {
    /// How long the proxy and the MCP gateway hold a request that waits
    /// for approval before answering "pending" (0: answer at once).
    pub hold: Duration,
    /// How long a request waits for a decision.
    pub pending_ttl: Ttl,
    /// The most approvals one agent may have pending.
    pub max_pending_per_agent: u32,
    /// The most one requester (a user, else a task) of an agent may have
    /// pending: one steered session cannot use up the agent's share.
    pub max_pending_per_requester: u32,
    /// An approver never decides a request made for themselves.
    pub separation_of_duties: bool,
    /// Where new pending approvals are announced.
    pub webhooks: Vec<Webhook>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            hold: Duration::ZERO,
            pending_ttl: Ttl::from_secs(3600),
            max_pending_per_agent: 20,
            max_pending_per_requester: 5,
            separation_of_duties: true,
            webhooks: Vec::new(),
        }
    }
}

/// The longest `hold`.
pub const MAX_HOLD: Duration = Duration::from_secs(120);

/// A webhook announcing pending approvals.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to POST (`https://`, or `http://` to a loopback address).
    pub url: url::Url,
    /// The body's shape.
    pub format: WebhookFormat,
}

impl std::fmt::Debug for Webhook {
    // Webhook URLs often carry their secret (Slack's do): only the host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("host", &self.url.host_str())
            .field("format", &self.format)
            .finish()
    }
}

/// A webhook body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// warrant's JSON: `{"type": "approval.pending", "approval": {...}}`.
    Json,
    /// A Slack incoming-webhook message (`{"text": ...}`).
    Slack,
}

impl Webhook {
    /// Checks a configured webhook.
    pub fn parse(url: &str, format: Option<&str>) -> Result<Self, String> {
        let url =
            url::Url::parse(url).map_err(|e| format!("the webhook URL does not parse ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "the webhook URL carries a user name or password, which would not be sent; put the receiver's secret in its path, as Slack does".into(),
            );
        }
        crate::outbound::check_destination(&url, "announcements")?;
        let format = match format.unwrap_or("json") {
            "json" => WebhookFormat::Json,
            "slack" => WebhookFormat::Slack,
            other => {
                return Err(format!(
                    "webhook format `{}` is unknown; use \"json\" or \"slack\"",
                    other.escape_debug()
                ));
            }
        };
        Ok(Self { url, format })
    }
}

/// Who decides an approval.
#[derive(Debug, Clone)]
pub struct Approver {
    /// As recorded (`admin-token:adt_...`, `local:uid=0`).
    pub actor: String,
    /// Their role.
    pub role: Role,
    /// The person holding the admin token, if it names one.
    pub person: Option<String>,
    /// Whether they came in on the admin socket (the broker's owner).
    pub local: bool,
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The approval does not exist.
    #[error("approval `{0}` does not exist")]
    NotFound(String),
    /// The approver may not decide it.
    #[error("{0}")]
    Forbidden(String),
    /// It is no longer pending.
    #[error("{0}")]
    NotPending(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Step-up approvals over the store.
#[allow(missing_debug_implementations)]
pub struct ApprovalService {
    store: Arc<dyn Store>,
    policy: Arc<crate::policy::PolicyService>,
    config: ArcSwap<ApprovalConfig>,
    decided: Notify,
    notify: mpsc::Sender<Approval>,
    metrics: Arc<Metrics>,
    /// Requests held now, per agent: holding costs a connection and a
    /// wake-up each, so it is bounded; past the bounds a request is
    /// answered "pending" at once.
    held: parking_lot::Mutex<std::collections::HashMap<String, usize>>,
}

/// How often a held request looks for a decision made through another
/// broker (one made through this broker wakes it at once).
const POLL: Duration = Duration::from_secs(1);
/// Requests held at once, over all agents.
const MAX_HELD: usize = 256;
/// Requests one agent may have held at once.
const MAX_HELD_PER_AGENT: usize = 16;

impl ApprovalService {
    /// The service, and the task announcing pending approvals (run it on
    /// the runtime).
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<crate::policy::PolicyService>,
        config: ApprovalConfig,
        metrics: Arc<Metrics>,
    ) -> (
        Arc<Self>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(1024);
        let service = Arc::new(Self {
            store,
            policy,
            config: ArcSwap::from_pointee(config),
            decided: Notify::new(),
            notify: tx,
            metrics,
            held: parking_lot::Mutex::default(),
        });
        let announcer = announce(rx, Arc::downgrade(&service));
        (service, announcer)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ApprovalConfig> {
        self.config.load_full()
    }

    /// Puts a reloaded `[approvals]` in force.
    pub fn set_config(&self, config: ApprovalConfig) {
        self.config.store(Arc::new(config));
    }

    /// Asks for approval of `subject` (which policy allows only so, on the
    /// terms of `terms` and `policies`); `base` is the request's record,
    /// which approval records copy. Holds for at most `hold` (the
    /// configured one when `None`) while a person decides.
    pub async fn step_up(
        &self,
        mut subject: ApprovalSubject,
        mut shown: Value,
        terms: ApprovalTerms,
        policies: Vec<String>,
        base: &AuditEvent,
        hold: Option<Duration>,
    ) -> StepUp {
        let config = self.config();
        let now = Timestamp::now();
        // Bound to the policies in force: after a change, the request is
        // asked again under the new terms.
        subject.policy = self.policy.current().policies.digest().to_owned();
        let binding = subject.binding();
        // A refusal stands until it lapses, for this request under any task
        // or instance: asking again is not a way around a person's "no".
        match self
            .store
            .standing_denial(&subject.loose_binding(), now)
            .await
        {
            Ok(Some(a)) => return StepUp::Denied(a),
            Ok(None) => {}
            Err(e) => return StepUp::Unavailable(e.to_string()),
        }
        if warrant_core::approval::has_invisible(&subject.request)
            || warrant_core::approval::has_invisible(&shown)
        {
            let warning = json!([
                "the request holds invisible or direction-changing characters (shown escaped); read it closely"
            ]);
            match &mut shown {
                Value::Object(m) => {
                    m.insert("warnings".into(), warning);
                }
                other => *other = json!({ "value": other.take(), "warnings": warning }),
            }
        }
        let Ok(id) = warrant_host::random::hex_id(12) else {
            return StepUp::Unavailable("no randomness for an approval id".into());
        };
        let asked = Approval {
            id: format!("{APPROVAL_ID_PREFIX}{id}"),
            binding,
            subject,
            shown,
            policies,
            role: terms.role,
            ttl_secs: terms.ttl.as_secs(),
            state: ApprovalState::Pending,
            created_at: now,
            expires_at: now + config.pending_ttl.as_duration(),
            decided_by: None,
            decided_at: None,
            reason: None,
            used_at: None,
        };
        let event = record(base, Kind::ApprovalRequest, Outcome::Pending, &asked);
        let approval = match self
            .store
            .request_approval(
                asked,
                warrant_store::ApprovalLimits {
                    per_agent: config.max_pending_per_agent,
                    per_requester: config.max_pending_per_requester,
                },
                event,
            )
            .await
        {
            Ok((a, true)) => {
                self.count("requested");
                if self.notify.try_send(a.clone()).is_err() {
                    self.metrics
                        .approval_webhooks
                        .get_or_create(&OutcomeLabels {
                            outcome: "dropped".into(),
                        })
                        .inc();
                    tracing::warn!(approval = %a.id, "the approval webhook queue is full; this approval is not announced");
                }
                a
            }
            Ok((a, false)) => a,
            Err(StoreError::Precondition { why, .. }) => return StepUp::Refused(why),
            Err(e) => return StepUp::Unavailable(e.to_string()),
        };
        let hold = hold.unwrap_or(config.hold).min(MAX_HOLD);
        // Holding is bounded; past the bounds the answer is "pending" now.
        let agent = approval.subject.agent.clone();
        let held = !hold.is_zero() && {
            let mut h = self.held.lock();
            let total: usize = h.values().sum();
            let mine = h.entry(agent.clone()).or_default();
            if total < MAX_HELD && *mine < MAX_HELD_PER_AGENT {
                *mine += 1;
                true
            } else {
                false
            }
        };
        let out = self
            .settle(approval, base, if held { hold } else { Duration::ZERO })
            .await;
        if held {
            let mut h = self.held.lock();
            if let Some(n) = h.get_mut(&agent) {
                *n -= 1;
                if *n == 0 {
                    h.remove(&agent);
                }
            }
        }
        out
    }

    /// Uses a granted approval, or waits up to `hold` for a decision.
    async fn settle(&self, mut a: Approval, base: &AuditEvent, hold: Duration) -> StepUp {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            match a.state_at(Timestamp::now()) {
                ApprovalState::Approved => {
                    let now = Timestamp::now();
                    let event = record(base, Kind::ApprovalUse, Outcome::Allow, &a);
                    return match self.store.use_approval(&a.id, now, event).await {
                        Ok(used) => {
                            self.count("used");
                            StepUp::Approved(used)
                        }
                        // Spent by a concurrent copy of the request (or it
                        // lapsed meanwhile): this one is not covered.
                        Err(StoreError::Precondition { .. }) => StepUp::Refused(format!(
                            "approval `{}` was just used by an identical request (or lapsed); send this request again to ask for a new approval",
                            a.id
                        )),
                        Err(e) => StepUp::Unavailable(e.to_string()),
                    };
                }
                ApprovalState::Denied => return StepUp::Denied(a),
                ApprovalState::Pending if tokio::time::Instant::now() < deadline => {
                    let wake = self.decided.notified();
                    let _ = tokio::time::timeout_at(
                        deadline.min(tokio::time::Instant::now() + POLL),
                        wake,
                    )
                    .await;
                    a = match self.store.get_approval(&a.id).await {
                        Ok(Some(fresh)) => fresh,
                        Ok(None) => return StepUp::Refused(format!("approval `{}` is gone", a.id)),
                        Err(e) => return StepUp::Unavailable(e.to_string()),
                    };
                }
                _ => return StepUp::Pending(a),
            }
        }
    }

    /// Decides the pending approval `id`.
    pub async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        by: &Approver,
        reason: Option<String>,
        base: AuditEvent,
    ) -> Result<Approval, DecideError> {
        let now = Timestamp::now();
        let a = self
            .store
            .get_approval(id)
            .await
            .map_err(DecideError::Store)?
            .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        // Asked under other policies than those in force: what it would
        // grant is no longer what policy asks (another role, a shorter
        // lifetime); the request is asked again when it is sent again.
        let digest = self.policy.current().policies.digest().to_owned();
        if a.subject.policy != digest && a.state_at(now) == ApprovalState::Pending {
            return Err(DecideError::NotPending(format!(
                "approval `{id}` was asked under policies that are no longer in force; it can no longer be decided (the agent's next attempt asks again under the policies now in force)"
            )));
        }
        if !a.terms().decidable_by(by.role) {
            return Err(DecideError::Forbidden(format!(
                "approval `{id}` needs an approver with role `{}`; yours is `{}`",
                a.role, by.role
            )));
        }
        if let Some(user) = &a.subject.user
            && self.config().separation_of_duties
            && !by.local
        {
            match &by.person {
                Some(p) if p == user => {
                    return Err(DecideError::Forbidden(format!(
                        "approval `{id}` is for a request made for {user}, who holds this admin token: separation of duties needs another approver"
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(DecideError::Forbidden(format!(
                        "approval `{id}` is for a request made for {user}, and this admin token names no person, so separation of duties cannot be checked; use a token created with `warrant admin-token create --person <namespace>/<subject>`"
                    )));
                }
            }
        }
        let (kind, outcome) = match verdict {
            Verdict::Approve => (Kind::ApprovalApprove, Outcome::Allow),
            Verdict::Deny => (Kind::ApprovalDeny, Outcome::Deny),
        };
        let mut event = record(&base, kind, outcome, &a);
        event.actor = Some(by.actor.clone());
        if let Some(r) = &reason {
            event.reasons = vec![r.clone()];
        }
        match self
            .store
            .decide_approval(id, verdict, &by.actor, reason, now, event)
            .await
        {
            Ok(a) => {
                self.count(match verdict {
                    Verdict::Approve => "approved",
                    Verdict::Deny => "denied",
                });
                self.decided.notify_waiters();
                Ok(a)
            }
            Err(StoreError::Precondition { why, .. }) => Err(DecideError::NotPending(why)),
            Err(StoreError::NotFound { .. }) => Err(DecideError::NotFound(id.to_owned())),
            Err(e) => Err(DecideError::Store(e)),
        }
    }

    /// The approval `id`.
    pub async fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        self.store.get_approval(id).await
    }

    /// Approvals in `state` (all when `None`), newest first.
    pub async fn list(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        self.store
            .list_approvals(state, Timestamp::now(), limit)
            .await
    }

    fn count(&self, what: &str) {
        self.metrics
            .approvals
            .get_or_create(&StateLabels { state: what.into() })
            .inc();
    }
}

/// An approval's record: the request's facts (agent, user, chain, task),
/// with the approval's id, binding and what it covers.
fn record(base: &AuditEvent, kind: Kind, outcome: Outcome, a: &Approval) -> AuditEvent {
    let mut e = base.clone();
    e.event = kind.into();
    e.decision = outcome;
    e.reasons = a.policies.clone();
    // The binding, not the request: a query string or digests of small
    // bodies stay with the approval, readable by approvers only.
    e.detail = Some(json!({
        "approval": a.id,
        "binding": a.binding,
        "role": a.role,
    }));
    e
}

/// The webhook body for `a`.
pub fn webhook_body(a: &Approval, format: WebhookFormat) -> Value {
    let s = &a.subject;
    match format {
        WebhookFormat::Json => json!({
            "type": "approval.pending",
            "approval": {
                "id": a.id,
                "action": s.action,
                "resource": s.resource,
                "request": webhook_request(&s.request),
                "agent": s.agent,
                "instance": s.instance,
                "user": s.user,
                "chain": s.chain,
                "task": s.task,
                "txn": s.txn,
                "policies": a.policies,
                "role": a.role,
                "created_at": a.created_at,
                "expires_at": a.expires_at,
            },
            "decide": {
                "show": format!("warrant approval show {}", a.id),
                "approve": format!("warrant approval approve {} --reason '...'", a.id),
                "deny": format!("warrant approval deny {} --reason '...'", a.id),
            },
        }),
        WebhookFormat::Slack => {
            let who = s.user.as_deref().map_or_else(
                || "for itself".to_owned(),
                |u| format!("for {}", slack_escape(u)),
            );
            json!({
                "text": format!(
                    "warrant: agent `{}` asks to {} `{}` {who} (approval `{}`, needs role {}, expires {}). Review with `warrant approval show {}`, then `warrant approval approve {}` or `warrant approval deny {}`.",
                    slack_escape(&s.agent),
                    slack_escape(&s.action),
                    slack_escape(&s.resource),
                    a.id,
                    a.role,
                    a.expires_at,
                    a.id,
                    a.id,
                    a.id,
                ),
            })
        }
    }
}

/// What a webhook says of the request: what is asked, never a query
/// string or a digest of a body or arguments (a short one can be guessed
/// back); approvers read those with `warrant approval show`.
fn webhook_request(r: &Value) -> Value {
    let Value::Object(m) = r else {
        return Value::Null;
    };
    let keep = [
        "server",
        "tool",
        "route",
        "method",
        "path",
        "audiences",
        "scopes",
    ];
    Value::Object(
        m.iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// Slack's three control characters escaped, and backticks (which would
/// end a code span early) dropped.
fn slack_escape(s: &str) -> String {
    s.chars()
        .take(200)
        .filter(|c| *c != '`' && !c.is_control())
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Attempts per webhook per approval.
const ATTEMPTS: u32 = 5;
/// Each attempt's limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Announces each new pending approval to every webhook, with retries,
/// until the service is gone.
async fn announce(mut rx: mpsc::Receiver<Approval>, service: std::sync::Weak<ApprovalService>) {
    while let Some(a) = rx.recv().await {
        let Some(s) = service.upgrade() else { return };
        let (hooks, metrics) = (s.config().webhooks.clone(), s.metrics.clone());
        drop(s);
        post_each(&hooks, |format| webhook_body(&a, format), metrics, &a.id);
    }
}

/// Announces `body` (warrant's JSON; for Slack webhooks, `{"text":
/// slack}`) to each of `hooks`, off the caller's path, with retries.
pub fn post_webhooks(
    hooks: &[Webhook],
    body: Value,
    slack: String,
    metrics: Arc<Metrics>,
    about: &str,
) {
    post_each(
        hooks,
        |format| match format {
            WebhookFormat::Json => body.clone(),
            WebhookFormat::Slack => json!({ "text": slack }),
        },
        metrics,
        about,
    );
}

fn post_each(
    hooks: &[Webhook],
    body: impl Fn(WebhookFormat) -> Value,
    metrics: Arc<Metrics>,
    about: &str,
) {
    let Some(client) = crate::outbound::client() else {
        return;
    };
    for hook in hooks {
        let (client, metrics, about) = (client.clone(), metrics.clone(), about.to_owned());
        let body = body(hook.format).to_string();
        let hook = hook.clone();
        // Each announcement on its own: a slow receiver delays no other.
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            for attempt in 1..=ATTEMPTS {
                let req = http::Request::post(hook.url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(
                        http::header::USER_AGENT,
                        concat!("warrant/", env!("CARGO_PKG_VERSION")),
                    )
                    .body(http_body_util::Full::new(hyper::body::Bytes::from(
                        body.clone(),
                    )));
                let Ok(req) = req else { return };
                let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await;
                let ok = matches!(&outcome, Ok(Ok(r)) if r.status().is_success());
                if ok {
                    metrics
                        .approval_webhooks
                        .get_or_create(&OutcomeLabels {
                            outcome: "ok".into(),
                        })
                        .inc();
                    return;
                }
                let why = match outcome {
                    Ok(Ok(r)) => format!("answered {}", r.status()),
                    Ok(Err(e)) => format!("failed: {}", crate::outbound::error_chain(&e)),
                    Err(_) => "timed out".to_owned(),
                };
                tracing::warn!(about = %about, host = hook.url.host_str().unwrap_or_default(), attempt, "a webhook {why}");
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            metrics
                .approval_webhooks
                .get_or_create(&OutcomeLabels {
                    outcome: "failed".into(),
                })
                .inc();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_are_https_or_loopback_and_never_show_their_url() {
        assert!(
            Webhook::parse("https://hooks.slack.com/services/T/B/secret", Some("slack")).is_ok()
        );
        assert!(Webhook::parse("http://127.0.0.1:9/x", None).is_ok());
        assert!(Webhook::parse("http://[::1]:9/x", None).is_ok());
        let e = Webhook::parse("http://example.com/x", None).unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(Webhook::parse("ftp://example.com/x", None).is_err());
        let e = Webhook::parse("https://user:pw@hooks.example/x", None).unwrap_err();
        assert!(e.contains("user name or password"), "{e}");
        assert!(Webhook::parse("https://example.com/x", Some("teams")).is_err());
        let w =
            Webhook::parse("https://hooks.slack.com/services/T/B/secret", Some("slack")).unwrap();
        assert!(!format!("{w:?}").contains("secret"));
    }

    #[test]
    fn slack_text_cannot_be_shaped_by_names() {
        assert_eq!(
            slack_escape("<!channel> `x` & y"),
            "&lt;!channel&gt; x &amp; y"
        );
    }
}
