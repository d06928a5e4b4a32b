//! Anomaly detection that acts (DESIGN §11).
//!
//! A task follows the committed audit trail (never the request path), keeps
//! a profile per agent and per agent+user, and scores each decision by
//! what is unusual for that profile:
//!
//! | signal | points |
//! |---|---|
//! | a resource (route, tool, audience) never used before, once warmed up | 25 |
//! | a scope never asked before, once warmed up | 10 |
//! | a request rate over 5x the rolling per-minute baseline (and over 20/min) | 30, once a minute |
//! | a burst of refusals: 5 or more in a minute, at least half the requests | 35, again at 10, 20, 40… in the same minute |
//! | an hour of the day with under 1% of the history, once well warmed up | 10, once an hour |
//! | a delegation chain deeper than any seen, once warmed up | 20 |
//! | delegating one transaction to more agents than it ever did, once warmed up | 15 |
//!
//! Points decay by half every 5 minutes; a profile's score is their sum,
//! capped at 100. Decisions read `context.anomaly_score`: the higher of
//! the agent's and the agent+user's, at that moment, from memory (a map
//! look-up on the request path, nothing more). Crossing a configured
//! threshold acts: an alert (audited, webhook, metric), quarantining the
//! instance, or quarantining the agent. The profiles and the trail
//! position are saved in `<data-dir>/anomaly.json` and survive a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use warrant_core::audit::{AuditEvent, AuditRecord, Kind, Outcome};
use warrant_core::time::Timestamp;

/// `[anomaly]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyConfig {
    /// Whether scores are computed at all.
    pub enabled: bool,
    /// Decisions a profile needs before "never seen" means anything.
    pub warmup: u32,
    /// Alert (audit record, webhooks, metric) at this score.
    pub alert_at: i64,
    /// Quarantine the instance at this score.
    pub quarantine_instance_at: Option<i64>,
    /// Quarantine the agent at this score.
    pub quarantine_agent_at: Option<i64>,
    /// Where alerts are announced.
    pub webhooks: Vec<crate::approvals::Webhook>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            warmup: 50,
            alert_at: 60,
            quarantine_instance_at: None,
            quarantine_agent_at: None,
            webhooks: Vec::new(),
        }
    }
}

/// Points of each signal.
const NEW_RESOURCE: f64 = 25.0;
const NEW_SCOPE: f64 = 10.0;
const RATE_SPIKE: f64 = 30.0;
const DENIAL_BURST: f64 = 35.0;
const ODD_HOUR: f64 = 10.0;
const DEEPER: f64 = 20.0;
const WIDER: f64 = 15.0;
/// Transactions whose fan-out a profile remembers.
const MAX_FANOUT_TXNS: usize = 64;
/// Half-life of a signal's points.
const HALF_LIFE_MS: f64 = 300_000.0;
/// What a profile remembers, at most.
const MAX_RESOURCES: usize = 1024;
const MAX_SCOPES: usize = 256;
/// What an agent+user profile remembers of resources and scopes.
const MAX_PAIR_RESOURCES: usize = 128;
const MAX_SIGNALS: usize = 64;
/// Agent+user profiles kept, at most (the least recently seen go first).
const MAX_PAIRS: usize = 20_000;

/// A resource or scope as a profile keeps it: a hash (names are chosen by
/// callers and can be long; a profile must stay small).
fn key(s: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// A name as a signal quotes it: bounded.
fn quoted(s: &str) -> String {
    if s.chars().count() <= 120 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(120).collect::<String>())
    }
}

/// The scores decisions read, published by the detector after each batch:
/// only profiles with signals, each as its raw sum at `at_ms` (decay is
/// uniform, so the sum at any later time is one multiplication away).
#[derive(Debug, Default)]
pub struct Scores {
    at_ms: i64,
    /// Agent → (its raw sum, user id (without `user:`) → the pair's).
    agents: HashMap<String, (f64, HashMap<String, f64>)>,
}

impl Scores {
    /// The score of `agent` acting for `user_id` at `now_ms`: a map
    /// look-up or two, no allocation.
    pub fn get(&self, agent: &str, user_id: Option<&str>, now_ms: i64) -> i64 {
        let Some((a, users)) = self.agents.get(agent) else {
            return 0;
        };
        let u = user_id.and_then(|u| users.get(u)).copied().unwrap_or(0.0);
        let raw = a.max(u) * 0.5f64.powf(((now_ms - self.at_ms).max(0) as f64) / HALF_LIFE_MS);
        (raw.round() as i64).clamp(0, 100)
    }
}

/// One profile: what an agent (or an agent for one user) usually does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    seen: u64,
    resources: BTreeSet<u64>,
    scopes: BTreeSet<u64>,
    hours: [u64; 24],
    max_depth: u32,
    /// Exponentially weighted requests per minute.
    rate_baseline: f64,
    minute: i64,
    minute_count: u32,
    minute_denials: u32,
    rate_flagged: i64,
    /// Refusal-burst signals raised this minute.
    bursts: u32,
    hour_flagged: i64,
    /// Recent signals: (time ms, points, why).
    signals: VecDeque<(i64, f64, String)>,
    last_ms: i64,
    /// The agents it delegated each recent transaction to.
    #[serde(default)]
    fanout: VecDeque<(String, BTreeSet<String>)>,
    /// The most agents it delegated one transaction to.
    #[serde(default)]
    max_width: usize,
}

impl Profile {
    /// The score at `now_ms`: decayed points, capped at 100.
    pub fn score(&self, now_ms: i64) -> i64 {
        (self.raw(now_ms).round() as i64).clamp(0, 100)
    }

    /// The decayed points at `now_ms`, uncapped.
    fn raw(&self, now_ms: i64) -> f64 {
        self.signals
            .iter()
            .map(|(t, p, _)| p * 0.5f64.powf(((now_ms - t).max(0) as f64) / HALF_LIFE_MS))
            .sum()
    }

    fn signal(&mut self, at: i64, points: f64, why: String, out: &mut Vec<String>) {
        out.push(why.clone());
        self.signals.push_back((at, points, why));
        while self.signals.len() > MAX_SIGNALS {
            self.signals.pop_front();
        }
    }

    /// Learns that this agent delegated transaction `txn` to `to`; the
    /// signal when that is wider than it ever delegated.
    fn delegated(&mut self, txn: &str, to: &str, at: i64, warmup: u64) -> Vec<String> {
        let mut out = Vec::new();
        let width = match self.fanout.iter_mut().find(|(t, _)| t == txn) {
            Some((_, set)) => {
                set.insert(to.to_owned());
                set.len()
            }
            None => {
                if self.fanout.len() >= MAX_FANOUT_TXNS {
                    self.fanout.pop_front();
                }
                self.fanout
                    .push_back((txn.to_owned(), BTreeSet::from([to.to_owned()])));
                1
            }
        };
        if width > self.max_width {
            if self.seen >= warmup && self.max_width > 0 {
                self.signal(
                    at,
                    WIDER,
                    format!(
                        "delegated one transaction to {width} agents, more than the {} it ever did",
                        self.max_width
                    ),
                    &mut out,
                );
            }
            self.max_width = width;
        }
        out
    }

    /// Learns from one decision and returns the signals it raised; `cap`
    /// bounds what it remembers of resources and scopes.
    fn observe(&mut self, d: &Observed, warmup: u64, cap: usize) -> Vec<String> {
        let mut out = Vec::new();
        let warm = self.seen >= warmup;
        let at = d.time_ms;
        self.last_ms = at;
        // Rate and refusals, per minute.
        let minute = at.div_euclid(60_000);
        if minute != self.minute {
            if self.seen > 0 {
                // Close the minutes that passed (empty ones count as 0).
                let gap = (minute - self.minute).clamp(1, 60);
                self.rate_baseline = 0.9 * self.rate_baseline + 0.1 * f64::from(self.minute_count);
                for _ in 1..gap {
                    self.rate_baseline *= 0.9;
                }
            }
            self.minute = minute;
            self.minute_count = 0;
            self.minute_denials = 0;
            self.bursts = 0;
        }
        self.minute_count += 1;
        if d.refused {
            self.minute_denials += 1;
        }
        let threshold = (5.0 * self.rate_baseline).max(20.0);
        if warm && f64::from(self.minute_count) > threshold && self.rate_flagged != minute {
            self.rate_flagged = minute;
            self.signal(
                at,
                RATE_SPIKE,
                format!(
                    "request rate {} a minute, over 5x its baseline of {:.1}",
                    self.minute_count, self.rate_baseline
                ),
                &mut out,
            );
        }
        // At 5 refusals in a minute, and again each time they double.
        if self.bursts < 16
            && self.minute_denials >= 5u32 << self.bursts
            && self.minute_denials * 2 >= self.minute_count
        {
            self.bursts += 1;
            self.signal(
                at,
                DENIAL_BURST,
                format!(
                    "{} of {} requests refused within a minute (probing)",
                    self.minute_denials, self.minute_count
                ),
                &mut out,
            );
        }
        // What is asked for.
        if let Some(r) = &d.resource
            && !self.resources.contains(&key(r))
        {
            if warm {
                self.signal(
                    at,
                    NEW_RESOURCE,
                    format!("first use of {}", quoted(r)),
                    &mut out,
                );
            }
            if self.resources.len() < cap.min(MAX_RESOURCES) {
                self.resources.insert(key(r));
            }
        }
        for s in d.scopes.iter().take(16) {
            if !self.scopes.contains(&key(s)) {
                if warm {
                    self.signal(
                        at,
                        NEW_SCOPE,
                        format!("first ask for scope `{}`", quoted(s)),
                        &mut out,
                    );
                }
                if self.scopes.len() < cap.min(MAX_SCOPES) {
                    self.scopes.insert(key(s));
                }
            }
        }
        // When.
        let hour = usize::try_from(at.div_euclid(3_600_000).rem_euclid(24)).unwrap_or(0);
        let total: u64 = self.hours.iter().sum();
        let hour_index = at.div_euclid(3_600_000);
        if self.seen >= warmup * 4
            && total > 0
            && self.hours[hour] * 100 < total
            && self.hour_flagged != hour_index
        {
            self.hour_flagged = hour_index;
            self.signal(
                at,
                ODD_HOUR,
                format!("active at {hour}:00 UTC, an hour it is rarely active"),
                &mut out,
            );
        }
        self.hours[hour] += 1;
        // How deep.
        if d.depth > self.max_depth {
            if warm {
                self.signal(
                    at,
                    DEEPER,
                    format!(
                        "a delegation chain {} deep, deeper than the {} it used so far",
                        d.depth, self.max_depth
                    ),
                    &mut out,
                );
            }
            self.max_depth = d.depth;
        }
        self.seen += 1;
        out
    }
}

/// What the detector reads from a decision's record.
#[derive(Debug, Clone)]
struct Observed {
    time_ms: i64,
    agent: String,
    instance: Option<String>,
    user: Option<String>,
    resource: Option<String>,
    scopes: Vec<String>,
    depth: u32,
    refused: bool,
    /// For a token exchange handed on by another agent: that agent (who
    /// delegated) and the transaction.
    delegated_by: Option<(String, String)>,
}

/// Records that are decisions an agent asked for.
const DECISION_EVENTS: &[&str] = &[
    "token.exchange",
    "token.self",
    "proxy.request",
    "mcp.tool.call",
    "mcp.resources.read",
    "mcp.prompts.get",
];

fn observed(r: &AuditRecord) -> Option<Observed> {
    let e = &r.event;
    if !DECISION_EVENTS.contains(&e.event.as_str()) {
        return None;
    }
    // A request whose token did not verify (expired, revoked, for another
    // audience) proves nothing about the agent it names: anyone who ever
    // saw one of its tokens can send it. Only what an authenticated agent
    // asked counts.
    let detail = e.detail.as_ref();
    let unauthenticated = detail
        .and_then(|d| d.get("status"))
        .and_then(serde_json::Value::as_u64)
        == Some(401)
        || detail
            .and_then(|d| d.get("refusal"))
            .and_then(serde_json::Value::as_str)
            == Some("invalid_token");
    if unauthenticated {
        return None;
    }
    let agent = e.agent.clone()?;
    Some(Observed {
        time_ms: r.time.as_millis(),
        agent,
        instance: e.instance.clone(),
        user: e.user.clone(),
        resource: e.resource.clone(),
        scopes: e
            .scope
            .as_deref()
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        depth: u32::try_from(e.chain.len()).unwrap_or(u32::MAX),
        // Errors count with refusals: padding probes with malformed calls
        // must not dilute them.
        refused: matches!(e.decision, Outcome::Deny | Outcome::Error),
        // A chain of the agents before this one and then this one: the
        // agent that handed the task on comes first.
        delegated_by: match (e.event.as_str(), e.chain.len(), &e.txn) {
            ("token.exchange", 2.., Some(txn)) if !matches!(e.decision, Outcome::Deny) => {
                Some((e.chain[0].clone(), txn.clone()))
            }
            _ => None,
        },
    })
}

/// Records read from the trail at a time.
const FOLLOW_BATCH: u32 = 1000;
/// How long the follower waits when the trail had nothing new.
const FOLLOW_IDLE: Duration = Duration::from_millis(100);
/// How long it lets records gather after reading fewer than a batch.
const FOLLOW_GATHER: Duration = Duration::from_millis(20);

/// What the detector reads of a followed record: the fields [`observed`]
/// uses, parsed without building the rest (every proxied request's record
/// is read back for this alone; parsed whole, it was 5% of the request's
/// instructions). The record returned has those fields and no others.
fn glance(row: &warrant_core::audit::StoredRow) -> Result<AuditRecord, serde_json::Error> {
    #[derive(Deserialize)]
    struct Glance {
        seq: u64,
        time: Timestamp,
        event: String,
        decision: Outcome,
        #[serde(default)]
        agent: Option<String>,
        #[serde(default)]
        instance: Option<String>,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        chain: Vec<String>,
        #[serde(default)]
        txn: Option<String>,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        resource: Option<String>,
        #[serde(default)]
        detail: Option<GlanceDetail>,
    }
    let g: Glance = serde_json::from_str(&row.body)?;
    let mut event = AuditEvent::new(g.event, g.decision);
    event.agent = g.agent;
    event.instance = g.instance;
    event.user = g.user;
    event.chain = g.chain;
    event.txn = g.txn;
    event.scope = g.scope;
    event.resource = g.resource;
    event.detail = g.detail.map(|d| {
        let mut m = serde_json::Map::new();
        if let Some(v) = d.status {
            m.insert("status".into(), v);
        }
        if let Some(v) = d.refusal {
            m.insert("refusal".into(), v);
        }
        serde_json::Value::Object(m)
    });
    Ok(AuditRecord {
        seq: g.seq,
        time: g.time,
        event,
        prev_hash: warrant_core::audit::ChainHash::GENESIS,
        hash: warrant_core::audit::ChainHash::GENESIS,
        keyed: false,
    })
}

/// A record's `detail` as [`observed`] reads it: `status` and `refusal`
/// when it is an object, nothing otherwise; the rest is skipped unbuilt.
#[derive(Default)]
struct GlanceDetail {
    status: Option<serde_json::Value>,
    refusal: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for GlanceDetail {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Status,
            Refusal,
            #[serde(other)]
            Other,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GlanceDetail;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a record's detail")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<GlanceDetail, A::Error> {
                let mut out = GlanceDetail::default();
                while let Some(k) = m.next_key::<Field>()? {
                    match k {
                        Field::Status => out.status = Some(m.next_value()?),
                        Field::Refusal => out.refusal = Some(m.next_value()?),
                        Field::Other => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<GlanceDetail, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(GlanceDetail::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<GlanceDetail, E> {
                Ok(GlanceDetail::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<GlanceDetail, E> {
                Ok(GlanceDetail::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<GlanceDetail, E> {
                Ok(GlanceDetail::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<GlanceDetail, E> {
                Ok(GlanceDetail::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<GlanceDetail, E> {
                Ok(GlanceDetail::default())
            }
            fn visit_unit<E>(self) -> Result<GlanceDetail, E> {
                Ok(GlanceDetail::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Everything the detector knows; saved and restored whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Detector {
    /// The last audit record read.
    pub position: u64,
    agents: BTreeMap<String, Profile>,
    pairs: HashMap<String, Profile>,
    /// The level each agent was last acted on at (so each is acted on once
    /// while its score stays high).
    acted: BTreeMap<String, Level>,
    /// Instances quarantined (each once).
    #[serde(default)]
    quarantined_instances: BTreeSet<String>,
}

/// How far a score went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// Below every threshold.
    Calm,
    /// At or over `alert_at`.
    Alert,
    /// At or over `quarantine_instance_at`.
    QuarantineInstance,
    /// At or over `quarantine_agent_at`.
    QuarantineAgent,
}

/// A score that crossed a threshold: what to do, about whom, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The agent.
    pub agent: String,
    /// The instance that made the request.
    pub instance: Option<String>,
    /// The user, when the work was for one.
    pub user: Option<String>,
    /// The score.
    pub score: i64,
    /// The level reached.
    pub level: Level,
    /// The signals behind the score (recent first).
    pub signals: Vec<String>,
    /// The record that crossed it.
    pub seq: u64,
    /// Its time.
    pub time: Timestamp,
}

impl Detector {
    /// Learns from `r`; a finding when its agent's score reaches a level
    /// not acted on yet.
    pub fn observe(&mut self, r: &AuditRecord, config: &AnomalyConfig) -> Option<Finding> {
        self.position = self.position.max(r.seq);
        let d = observed(r)?;
        let warmup = u64::from(config.warmup);
        // The delegating agent's fan-out counts on its own profile (its
        // score rises; it is acted on at its next decision).
        if let Some((by, txn)) = &d.delegated_by
            && by != &d.agent
        {
            let p = self.agents.entry(by.clone()).or_default();
            p.delegated(txn, &d.agent, d.time_ms, warmup);
        }
        let agent = self.agents.entry(d.agent.clone()).or_default();
        let mut signals = agent.observe(&d, warmup, MAX_RESOURCES);
        let agent_score = agent.score(d.time_ms);
        let mut score = agent_score;
        if let Some(u) = &d.user {
            let key = format!("{}\u{0}{u}", d.agent);
            if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_PAIRS {
                self.evict_pair();
            }
            let pair = self.pairs.entry(key).or_default();
            signals.extend(
                pair.observe(&d, warmup, MAX_PAIR_RESOURCES)
                    .into_iter()
                    .map(|s| format!("for {u}: {s}")),
            );
            score = score.max(pair.score(d.time_ms));
        }
        // One user's pattern alerts (and raises that user's score), but only
        // the agent's own score quarantines: one user of a shared agent must
        // not take it away from the others.
        let level = level_of(score, config).min(level_of(agent_score, config).max(Level::Alert));
        let before = self.acted.get(&d.agent).copied().unwrap_or(Level::Calm);
        // Calm again below half the alert threshold: a later rise acts again.
        if score * 2 < config.alert_at {
            self.acted.remove(&d.agent);
            return None;
        }
        // Each instance is quarantined once (a new instance of the agent is
        // not out of reach because an earlier one was).
        let new_instance = level == Level::QuarantineInstance
            && d.instance
                .as_ref()
                .is_some_and(|i| !self.quarantined_instances.contains(i));
        if level <= before && !new_instance {
            return None;
        }
        if level == Level::QuarantineInstance
            && let Some(i) = &d.instance
        {
            if self.quarantined_instances.len() >= 4096 {
                self.quarantined_instances.pop_first();
            }
            self.quarantined_instances.insert(i.clone());
        }
        self.acted.insert(d.agent.clone(), level.max(before));
        if signals.is_empty() {
            signals = agent_signals(self.agents.get(&d.agent));
        }
        Some(Finding {
            agent: d.agent,
            instance: d.instance,
            user: d.user,
            score,
            level,
            signals,
            seq: r.seq,
            time: r.time,
        })
    }

    fn evict_pair(&mut self) {
        if let Some(oldest) = self
            .pairs
            .iter()
            .min_by_key(|(_, p)| p.last_ms)
            .map(|(k, _)| k.clone())
        {
            self.pairs.remove(&oldest);
        }
    }

    /// The score `context.anomaly_score` carries for `agent` (acting for
    /// `user`) at `now`.
    pub fn score(&self, agent: &str, user: Option<&str>, now: Timestamp) -> i64 {
        let now = now.as_millis();
        let a = self.agents.get(agent).map_or(0, |p| p.score(now));
        let u = user
            .and_then(|u| self.pairs.get(&format!("{agent}\u{0}{u}")))
            .map_or(0, |p| p.score(now));
        a.max(u)
    }

    /// Forgets an agent's signals (an administrator released it): its
    /// habits stay learnt.
    pub fn forgive(&mut self, agent: &str) {
        if let Some(p) = self.agents.get_mut(agent) {
            p.signals.clear();
        }
        let prefix = format!("{agent}\u{0}");
        for (k, p) in &mut self.pairs {
            if k.starts_with(&prefix) {
                p.signals.clear();
            }
        }
        self.acted.remove(agent);
    }

    /// The profiles with signals, as decisions read them (see [`Scores`]).
    pub fn publish(&self, now: Timestamp) -> Scores {
        let at_ms = now.as_millis();
        let mut agents: HashMap<String, (f64, HashMap<String, f64>)> = HashMap::new();
        for (name, p) in &self.agents {
            let raw = p.raw(at_ms);
            if raw >= 0.5 {
                agents.entry(name.clone()).or_default().0 = raw;
            }
        }
        for (key, p) in &self.pairs {
            let raw = p.raw(at_ms);
            if raw < 0.5 {
                continue;
            }
            let Some((agent, user)) = key.split_once('\u{0}') else {
                continue;
            };
            let user = user.strip_prefix("user:").unwrap_or(user);
            agents
                .entry(agent.to_owned())
                .or_default()
                .1
                .insert(user.to_owned(), raw);
        }
        Scores { at_ms, agents }
    }

    /// Every agent's current score, highest first.
    pub fn scores(&self, now: Timestamp) -> Vec<(String, i64)> {
        let now = now.as_millis();
        let mut v: Vec<(String, i64)> = self
            .agents
            .iter()
            .map(|(a, p)| {
                let pairs = self
                    .pairs
                    .iter()
                    .filter(|(k, _)| k.split('\u{0}').next() == Some(a.as_str()))
                    .map(|(_, p)| p.score(now))
                    .max()
                    .unwrap_or(0);
                (a.clone(), p.score(now).max(pairs))
            })
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

fn agent_signals(p: Option<&Profile>) -> Vec<String> {
    p.map(|p| p.signals.iter().rev().map(|(_, _, w)| w.clone()).collect())
        .unwrap_or_default()
}

fn level_of(score: i64, c: &AnomalyConfig) -> Level {
    if c.quarantine_agent_at.is_some_and(|t| score >= t) {
        Level::QuarantineAgent
    } else if c.quarantine_instance_at.is_some_and(|t| score >= t) {
        Level::QuarantineInstance
    } else if score >= c.alert_at {
        Level::Alert
    } else {
        Level::Calm
    }
}

/// What the rest of the broker does about a finding (quarantine needs the
/// token service and the store; alerts need the webhooks).
#[async_trait::async_trait]
pub trait Responder: Send + Sync {
    /// Quarantines `instance` of `agent` (its tasks revoked, it gets
    /// nothing more), recorded with `event`.
    async fn quarantine_instance(&self, instance: &str, event: AuditEvent) -> Result<(), String>;
    /// Quarantines `agent` (state `quarantined`, every live task revoked).
    async fn quarantine_agent(&self, agent: &str, event: AuditEvent) -> Result<(), String>;
    /// Records an alert.
    async fn record(&self, event: AuditEvent) -> Result<(), String>;
}

/// The detector, shared: the task that feeds it and the decisions that
/// read its scores.
#[allow(missing_debug_implementations)]
pub struct AnomalyService {
    detector: RwLock<Detector>,
    /// What decisions read: republished after each batch the detector reads.
    published: arc_swap::ArcSwap<Scores>,
    config: arc_swap::ArcSwap<AnomalyConfig>,
    file: PathBuf,
    metrics: Arc<crate::metrics::Metrics>,
}

impl AnomalyService {
    /// The service, with the state saved in `data_dir` (if any).
    pub fn new(
        data_dir: &Path,
        config: AnomalyConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let file = data_dir.join("anomaly.json");
        let detector = match std::fs::read(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Detector::default(),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the anomaly detector's state; it starts afresh (every agent warms up again)");
                Detector::default()
            }
            Ok(b) => serde_json::from_slice::<Detector>(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "the anomaly detector's state does not parse; it starts afresh (every agent warms up again)");
                Detector::default()
            }),
        };
        let published = arc_swap::ArcSwap::from_pointee(detector.publish(Timestamp::now()));
        Arc::new(Self {
            detector: RwLock::new(detector),
            published,
            config: arc_swap::ArcSwap::from_pointee(config),
            file,
            metrics,
        })
    }

    /// Puts a reloaded `[anomaly]` in force.
    pub fn set_config(&self, c: AnomalyConfig) {
        self.config.store(Arc::new(c));
    }

    /// The score a decision for `agent` (for the user `user_id`, as
    /// `<namespace>/<subject>`) carries now: 0 when detection is off.
    pub fn score(&self, agent: &str, user_id: Option<&str>) -> i64 {
        if !self.config.load().enabled {
            return 0;
        }
        self.published
            .load()
            .get(agent, user_id, Timestamp::now().as_millis())
    }

    fn republish(&self) {
        let scores = self.detector.read().publish(Timestamp::now());
        self.published.store(Arc::new(scores));
    }

    /// Every agent's score now, highest first.
    pub fn scores(&self) -> Vec<(String, i64)> {
        self.detector.read().scores(Timestamp::now())
    }

    /// Clears an agent's signals (it was released).
    pub fn forgive(&self, agent: &str) {
        self.detector.write().forgive(agent);
        self.republish();
    }

    /// The trail position read so far.
    pub fn position(&self) -> u64 {
        self.detector.read().position
    }

    /// Follows the trail until `shutdown`, acting on findings through
    /// `responder`; saves the state every few seconds and at the end.
    pub fn spawn(
        self: &Arc<Self>,
        store: Arc<dyn warrant_store::Store>,
        responder: Arc<dyn Responder>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut saved_at = std::time::Instant::now();
            // Starting fresh, the detector begins at the trail's end: old
            // history is not replayed as if it were happening now.
            if me.detector.read().position == 0
                && let Ok(Some((head, _))) = store.audit_head().await
            {
                me.detector.write().position = head;
            }
            loop {
                let config = me.config.load_full();
                let position = me.position();
                let rows = if config.enabled {
                    store
                        .audit_after(position, FOLLOW_BATCH)
                        .await
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let mut findings = Vec::new();
                {
                    let mut d = me.detector.write();
                    for row in &rows {
                        match glance(row) {
                            Ok(r) => findings.extend(d.observe(&r, &config)),
                            Err(_) => d.position = d.position.max(row.seq),
                        }
                    }
                }
                if !rows.is_empty() {
                    me.republish();
                }
                for f in findings {
                    me.act(&f, &config, responder.as_ref()).await;
                }
                if saved_at.elapsed() >= Duration::from_secs(5) {
                    me.save();
                    saved_at = std::time::Instant::now();
                }
                if rows.is_empty() {
                    // Stopping: what was committed meanwhile has just been
                    // read, so the saved position is the trail's end.
                    if shutdown.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOW_IDLE) => {}
                        () = shutdown.cancelled() => {}
                    }
                } else if rows.len() < FOLLOW_BATCH as usize {
                    // Caught up: let records gather rather than read them a
                    // few at a time (under load, reading again at once kept
                    // the follower busy on the edge's core).
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOW_GATHER) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
            me.save();
        })
    }

    async fn act(&self, f: &Finding, config: &AnomalyConfig, responder: &dyn Responder) {
        let action = match f.level {
            Level::Calm => return,
            Level::Alert => "alert",
            Level::QuarantineInstance => "quarantine_instance",
            Level::QuarantineAgent => "quarantine_agent",
        };
        self.metrics
            .anomalies
            .get_or_create(&crate::metrics::StateLabels {
                state: action.into(),
            })
            .inc();
        let mut event = AuditEvent::new(Kind::Anomaly, Outcome::Deny)
            .actor("anomaly-detector")
            .agent(f.agent.clone())
            .reasons(f.signals.iter().take(8).cloned())
            .detail(json!({
                "score": f.score,
                "action": action,
                "record": f.seq,
                "detected_in_ms": (Timestamp::now().as_millis() - f.time.as_millis()).max(0),
            }));
        event.instance = f.instance.clone();
        event.user = f.user.clone();
        tracing::warn!(agent = %f.agent, score = f.score, action, "anomaly: {}", f.signals.first().map_or("", String::as_str));
        let done = match f.level {
            Level::QuarantineAgent => responder.quarantine_agent(&f.agent, event).await,
            Level::QuarantineInstance => match &f.instance {
                Some(i) => responder.quarantine_instance(i, event).await,
                None => responder.record(event).await,
            },
            _ => responder.record(event).await,
        };
        match done {
            Ok(()) if f.level >= Level::QuarantineInstance => {
                // From the record that crossed the threshold to enforcement.
                let ms = (Timestamp::now().as_millis() - f.time.as_millis()).max(0);
                self.metrics.enforced("anomaly", ms as f64 / 1000.0);
            }
            Ok(()) => {}
            Err(e) => tracing::error!(agent = %f.agent, error = %e, "could not act on an anomaly"),
        }
        if !config.webhooks.is_empty() {
            let body = json!({
                "type": "anomaly",
                "agent": f.agent,
                "instance": f.instance,
                "user": f.user,
                "score": f.score,
                "action": action,
                "signals": f.signals,
                "record": f.seq,
            });
            let slack = format!(
                "warrant: anomaly in agent `{}` (score {}, {action}): {}",
                f.agent.replace(['`', '<', '>', '&'], ""),
                f.score,
                f.signals
                    .iter()
                    .take(3)
                    .map(|s| s.replace(['`', '<', '>', '&'], ""))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            crate::approvals::post_webhooks(
                &config.webhooks,
                body,
                slack,
                self.metrics.clone(),
                &f.agent,
            );
        }
    }

    /// Writes the state to `<data-dir>/anomaly.json` (owner-only).
    pub fn save(&self) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let Ok(bytes) = serde_json::to_vec(&*self.detector.read()) else {
            return;
        };
        let tmp = self.file.with_extension("json.tmp");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_data()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot save the anomaly detector's state");
        }
    }
}

#[cfg(test)]
mod tests;
