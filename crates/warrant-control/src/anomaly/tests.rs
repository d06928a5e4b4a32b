//! The detector on synthetic traffic: a long normal trace (false positives)
//! and a compromised agent after it (detection latency). The figures are
//! printed (`cargo test -p warrant-control anomaly -- --nocapture`) and
//! recorded in docs/health.md.

use super::*;
use warrant_core::audit::ChainHash;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Trace {
    seq: u64,
    d: Detector,
    config: AnomalyConfig,
    findings: Vec<Finding>,
}

impl Trace {
    fn new() -> Self {
        Self {
            seq: 0,
            d: Detector::default(),
            config: AnomalyConfig {
                quarantine_agent_at: Some(90),
                ..AnomalyConfig::default()
            },
            findings: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        t_ms: i64,
        event: &str,
        user: Option<&str>,
        resource: &str,
        scope: &str,
        depth: usize,
        deny: bool,
    ) -> Option<Finding> {
        self.seq += 1;
        let mut e = AuditEvent::new(event, if deny { Outcome::Deny } else { Outcome::Allow })
            .agent("orch")
            .instance("ins_1");
        e.user = user.map(str::to_owned);
        e.resource = Some(resource.to_owned());
        e.scope = (!scope.is_empty()).then(|| scope.to_owned());
        e.chain = (0..depth).map(|i| format!("a{i}")).collect();
        let r = committed(self.seq, t_ms, e);
        let f = self.d.observe(&r, &self.config);
        if let Some(f) = &f {
            self.findings.push(f.clone());
        }
        f
    }
}

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// A Monday, 00:00 UTC.
const START: i64 = 1_795_046_400_000;

const TOOLS: [&str; 6] = [
    "Tool::\"files/read_file\"",
    "Tool::\"files/search\"",
    "Route::\"openai\"",
    "Route::\"tickets\"",
    "Audience::\"https://tickets.example\"",
    "Tool::\"crm/lookup\"",
];

/// Weekdays 8:00-18:00 UTC, 0-6 requests a minute, 20 users each with
/// their habits, 2% refused: the agent's normal work.
fn normal_day(tr: &mut Trace, rng: &mut Rng, day: i64) -> usize {
    let users: Vec<String> = (0..20).map(|i| format!("user:corp/u{i}")).collect();
    let mut n = 0;
    if (day % 7) >= 5 {
        return 0;
    }
    for minute in (8 * 60)..(18 * 60) {
        let at = START + day * DAY + minute * MINUTE;
        for k in 0..rng.below(7) {
            let u = rng.below(20) as usize;
            let tool = TOOLS[(u + rng.below(3) as usize) % TOOLS.len()];
            let (event, scope) = if tool.starts_with("Tool") {
                ("mcp.tool.call", "")
            } else if tool.starts_with("Route") {
                ("proxy.request", "")
            } else {
                ("token.exchange", "tickets:read")
            };
            let deny = rng.below(50) == 0;
            tr.push(
                at + (k as i64) * 7_000,
                event,
                Some(&users[u]),
                tool,
                scope,
                1 + (rng.below(10) == 0) as usize,
                deny,
            );
            n += 1;
        }
    }
    n
}

#[test]
fn a_long_normal_trace_raises_no_alert_and_a_compromise_is_caught_fast() {
    let mut tr = Trace::new();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut decisions = 0;
    let days = 28;
    for day in 0..days {
        decisions += normal_day(&mut tr, &mut rng, day);
    }
    let false_positives = tr.findings.len();
    // The agent-hours whose score reached the alert threshold, for a rate
    // that does not depend on how often it is acted on.
    eprintln!(
        "normal trace: {decisions} decisions over {days} days, {false_positives} alerts ({:.4}% of decisions)",
        false_positives as f64 * 100.0 / decisions as f64
    );
    assert!(decisions > 30_000, "{decisions}");
    assert_eq!(false_positives, 0, "{:?}", tr.findings);

    // Day 29, 10:00: the agent is steered. New tools, a burst, probing.
    let t0 = START + days * DAY + 10 * 60 * MINUTE;
    let mut first_alert = None;
    let mut quarantined = None;
    for i in 0..600i64 {
        let at = t0 + i * 250;
        let (resource, deny) = match i % 4 {
            0 => ("Tool::\"files/delete_file\"", false),
            1 => ("Route::\"payments\"", true),
            2 => ("Tool::\"shell/exec\"", true),
            _ => (TOOLS[(i % 6) as usize], false),
        };
        let event = if resource.starts_with("Tool") {
            "mcp.tool.call"
        } else {
            "proxy.request"
        };
        if let Some(f) = tr.push(at, event, Some("user:corp/u3"), resource, "", 1, deny) {
            if f.level >= Level::Alert && first_alert.is_none() {
                first_alert = Some((at - t0, i + 1, f.clone()));
            }
            if f.level == Level::QuarantineAgent && quarantined.is_none() {
                quarantined = Some((at - t0, i + 1));
            }
        }
    }
    let (ms, n, f) = first_alert.expect("the compromise is detected");
    let (qms, qn) = quarantined.expect("and the agent quarantined");
    eprintln!(
        "compromise: alert after {ms} ms ({n} requests), quarantine after {qms} ms ({qn} requests); signals: {:?}",
        f.signals
    );
    assert!(ms <= 5_000, "alert within 5 s of simulated time: {ms}");
    assert!(qms <= 30_000, "quarantine within 30 s: {qms}");
    assert!(
        f.signals.iter().any(|s| s.contains("first use")),
        "{:?}",
        f.signals
    );
    // The score decisions see is high now, and the same agent's other users
    // see its agent score.
    let now = Timestamp::from_millis(t0 + 600 * 250);
    assert!(tr.d.score("orch", Some("user:corp/u3"), now) >= 90);
    assert!(tr.d.score("orch", Some("user:corp/u9"), now) >= 60);
    // Released, its habits stay learnt and its score is back to 0.
    tr.d.forgive("orch");
    assert_eq!(tr.d.score("orch", Some("user:corp/u3"), now), 0);
    // Decay: an hour later, without release, a score is near zero.
    let mut t2 = Trace::new();
    let mut rng2 = Rng(7);
    for day in 0..3 {
        normal_day(&mut t2, &mut rng2, day);
    }
    let late = START + 3 * DAY + 10 * 60 * MINUTE;
    for i in 0..8 {
        t2.push(
            late + i,
            "mcp.tool.call",
            None,
            &format!("Tool::\"x/t{i}\""),
            "",
            1,
            false,
        );
    }
    assert!(t2.d.score("orch", None, Timestamp::from_millis(late)) >= 60);
    assert!(t2.d.score("orch", None, Timestamp::from_millis(late + 3_600_000)) < 10);
}

#[test]
fn probing_is_caught_before_any_warm_up_and_state_round_trips() {
    let mut tr = Trace::new();
    tr.config.quarantine_agent_at = None;
    tr.config.quarantine_instance_at = Some(70);
    // A new agent that starts by probing: refusals need no history.
    let mut found = None;
    for i in 0..40 {
        if let Some(f) = tr.push(
            START + i * 1000,
            "proxy.request",
            None,
            "Route::\"x\"",
            "",
            1,
            true,
        ) {
            found.get_or_insert(f);
        }
    }
    let f = found.expect("probing alone is an anomaly");
    assert!(f.signals.iter().any(|s| s.contains("refused")), "{f:?}");
    // Acted on once per level, not per request.
    assert!(tr.findings.len() <= 2, "{:?}", tr.findings);
    assert!(
        tr.findings
            .iter()
            .any(|f| f.level == Level::QuarantineInstance)
    );
    // What is saved is what is restored.
    let saved = serde_json::to_vec(&tr.d).unwrap();
    let back: Detector = serde_json::from_slice(&saved).unwrap();
    let now = Timestamp::from_millis(START + 40_000);
    assert_eq!(back.score("orch", None, now), tr.d.score("orch", None, now));
    assert_eq!(back.position, tr.d.position);
}

#[test]
fn delegating_wider_than_ever_is_a_signal() {
    let mut d = Detector::default();
    let config = AnomalyConfig {
        warmup: 5,
        ..AnomalyConfig::default()
    };
    let mut seq = 0;
    let mut push = |d: &mut Detector, agent: &str, chain: &[&str], txn: &str, at: i64| {
        seq += 1;
        let mut e = AuditEvent::new("token.exchange", Outcome::Allow).agent(agent);
        e.chain = chain.iter().map(|s| (*s).to_owned()).collect();
        e.txn = Some(txn.into());
        e.resource = Some("Audience::\"a\"".into());
        d.observe(&committed(seq, START + at, e), &config);
    };
    // Habit: the planner hands each transaction to one coder.
    for t in 0..20 {
        let txn = format!("txn_{t}");
        push(&mut d, "planner", &[], &txn, t * 1000);
        push(&mut d, "coder", &["planner", "coder"], &txn, t * 1000 + 10);
    }
    let now = Timestamp::from_millis(START + 25_000);
    assert_eq!(d.score("planner", None, now), 0);
    // Then one transaction fans out to four agents.
    for (i, a) in ["coder", "mailer", "payer", "deleter"].iter().enumerate() {
        push(&mut d, a, &["planner", a], "txn_wide", 26_000 + i as i64);
    }
    assert!(d.score("planner", None, Timestamp::from_millis(START + 26_010)) >= 15);
}

#[allow(clippy::too_many_arguments)]
fn record(
    seq: u64,
    at: i64,
    agent: &str,
    instance: &str,
    user: Option<&str>,
    resource: &str,
    outcome: Outcome,
    detail: Option<serde_json::Value>,
) -> AuditRecord {
    let mut e = AuditEvent::new("proxy.request", outcome)
        .agent(agent)
        .instance(instance);
    e.user = user.map(str::to_owned);
    e.resource = Some(resource.to_owned());
    e.detail = detail;
    committed(seq, START + at, e)
}

/// `e` as the trail would hold it at `seq`, written at `t_ms`.
fn committed(seq: u64, t_ms: i64, e: AuditEvent) -> AuditRecord {
    AuditRecord {
        seq,
        time: Timestamp::from_millis(t_ms),
        event: e,
        prev_hash: ChainHash::GENESIS,
        hash: ChainHash::GENESIS,
        keyed: false,
    }
}

/// Found by the second attacker round.
#[test]
fn the_detector_is_not_framed_dodged_or_filled() {
    let config = AnomalyConfig {
        warmup: 5,
        alert_at: 30,
        quarantine_instance_at: Some(50),
        quarantine_agent_at: Some(80),
        ..AnomalyConfig::default()
    };
    // Replayed tokens that no longer verify (401) say nothing of the agent.
    let mut d = Detector::default();
    for i in 0..40 {
        let r = record(
            i + 1,
            i as i64 * 100,
            "victim",
            "ins_v",
            None,
            "Route::\"x\"",
            Outcome::Deny,
            Some(serde_json::json!({"status": 401, "refusal": "invalid_token"})),
        );
        assert!(d.observe(&r, &config).is_none());
    }
    assert_eq!(
        d.score("victim", None, Timestamp::from_millis(START + 4_000)),
        0
    );

    // One user's refusals alert but do not quarantine a shared agent whose
    // own traffic is mostly fine.
    let mut d = Detector::default();
    let mut seq = 0;
    let mut levels = Vec::new();
    for i in 0..60i64 {
        seq += 1;
        let (user, outcome) = if i % 3 == 0 {
            ("user:corp/mallory", Outcome::Deny)
        } else {
            ("user:corp/alice", Outcome::Allow)
        };
        let r = record(
            seq,
            i * 500,
            "shared",
            "ins_s",
            Some(user),
            "Route::\"r\"",
            outcome,
            None,
        );
        if let Some(f) = d.observe(&r, &config) {
            levels.push(f.level);
        }
    }
    assert!(levels.contains(&Level::Alert), "{levels:?}");
    assert!(!levels.contains(&Level::QuarantineAgent), "{levels:?}");

    // Every instance past the threshold is quarantined, not only the first.
    let config = AnomalyConfig {
        quarantine_agent_at: None,
        ..config
    };
    let mut d = Detector::default();
    let mut quarantined = BTreeSet::new();
    let mut seq = 0;
    for inst in ["ins_1", "ins_2", "ins_3"] {
        for i in 0..12i64 {
            seq += 1;
            let r = record(
                seq,
                seq as i64 * 200,
                "ux",
                inst,
                None,
                "Route::\"r2\"",
                Outcome::Deny,
                None,
            );
            if let Some(f) = d.observe(&r, &config)
                && f.level == Level::QuarantineInstance
            {
                quarantined.insert(f.instance.clone().unwrap());
            }
            let _ = i;
        }
    }
    assert_eq!(quarantined.len(), 3, "{quarantined:?}");

    // Errors count with refusals: padding probes does not dilute them.
    let mut d = Detector::default();
    let mut found = false;
    for i in 0..13i64 {
        let outcome = if i < 7 { Outcome::Error } else { Outcome::Deny };
        let r = record(
            i as u64 + 1,
            i * 1000,
            "ev",
            "ins_e",
            None,
            "Tool::\"f/nosuch\"",
            outcome,
            None,
        );
        found |= d.observe(&r, &config).is_some();
    }
    assert!(found, "padded probing is still probing");

    // Long, ever-new names do not grow a profile without bound.
    let mut d = Detector::default();
    for i in 0..5000u64 {
        let name = format!("Tool::\"f/{}{i}\"", "x".repeat(1000));
        let r = record(
            i + 1,
            i as i64,
            "big",
            "ins_b",
            Some("user:corp/u"),
            &name,
            Outcome::Error,
            None,
        );
        d.observe(&r, &config);
    }
    let saved = serde_json::to_vec(&d).unwrap();
    assert!(saved.len() < 200_000, "state of {} bytes", saved.len());
}

/// The follower reads records with `glance`, not whole: it must see in
/// each what a whole read sees.
#[test]
fn a_glanced_record_is_observed_as_the_whole_record() {
    let proxy = |detail: serde_json::Value| {
        AuditEvent::new(Kind::ProxyRequest, Outcome::Allow)
            .agent("orch")
            .instance("orch-1")
            .user("corp/alice")
            .scope("llm:chat reports:rw")
            .resource("Route::\"openai\"")
            .txn("tx-1")
            .detail(detail)
    };
    let mut exchange = AuditEvent::new(Kind::TokenExchange, Outcome::Allow)
        .agent("sub")
        .txn("tx-2")
        .detail(serde_json::json!({"granted": "x"}));
    exchange.chain = vec!["orch".into(), "sub".into()];
    let events = [
        proxy(
            serde_json::json!({"method": "GET", "path": "/v1/models", "status": 200, "policies": ["p"], "nested": {"status": 401}}),
        ),
        proxy(serde_json::json!({"status": 401, "refusal": "invalid_token"})),
        proxy(serde_json::json!({"refusal": "invalid_token"})),
        proxy(serde_json::json!({"status": "401", "refusal": 7})),
        proxy(serde_json::json!(["status", 401])),
        proxy(serde_json::json!("status: 401")),
        proxy(serde_json::json!(3.5)),
        proxy(serde_json::Value::Null),
        AuditEvent::new(Kind::ProxyRequest, Outcome::Deny).agent("orch"),
        AuditEvent::new(Kind::McpToolCall, Outcome::Error)
            .agent("orch")
            .reasons(["r".to_owned()]),
        exchange,
        AuditEvent::new("admin.agent.create", Outcome::Allow).agent("orch"),
    ];
    for (i, e) in events.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let sealed = AuditRecord::seal(
            seq,
            Timestamp::from_millis(1_000 + i as i64),
            e,
            ChainHash::GENESIS,
            None,
        )
        .unwrap();
        let row = warrant_core::audit::StoredRow {
            seq,
            body: sealed.body.clone(),
            prev_hash: sealed.record.prev_hash.0.to_vec(),
            hash: sealed.record.hash.0.to_vec(),
            indexed: sealed.record.indexed(),
        };
        let whole = row.to_record().unwrap();
        let glanced = glance(&row).unwrap();
        assert_eq!((glanced.seq, glanced.time), (whole.seq, whole.time));
        assert_eq!(
            format!("{:?}", observed(&glanced)),
            format!("{:?}", observed(&whole)),
            "record {seq}: {}",
            row.body
        );
    }
}
