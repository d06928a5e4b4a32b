//! Decision latency with anomaly detection on and off, in one run.
//!
//! The same 1,000-policy set answers the same requests through
//! `PolicyService::decide_for_record` without a detector and with one whose
//! profiles cover 1,000 agents and 20,000 agent+user pairs (some with live
//! signals, so `context.anomaly_score` is not always 0). Rounds alternate
//! (off, on, off, on, ...) so machine noise falls on both alike. Also: how
//! many audit records a second the detector itself reads (off the request
//! path). Run with `cargo bench -p warrant-control --bench anomaly`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use warrant_control::anomaly::{AnomalyConfig, AnomalyService, Detector};
use warrant_control::metrics::Metrics;
use warrant_control::policy::PolicyService;
use warrant_core::agent::TrustLevel;
use warrant_core::audit::{AuditEvent, AuditRecord, ChainHash, Outcome};
use warrant_core::decision::{
    Action, AgentFacts, Context, DecisionRequest, Principal, Resource, UserRef,
};
use warrant_core::time::Timestamp;

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

const AGENTS: u64 = 1000;
const USERS: u64 = 20;

fn policies(n: usize, rng: &mut Rng) -> String {
    let mut out = String::from(
        "@id(\"calm\") forbid(principal, action, resource) when { context.anomaly_score >= 90 };\n",
    );
    for i in 0..n {
        let agent = rng.below(AGENTS);
        let aud = rng.below(100);
        out.push_str(&format!(
            "@id(\"p{i}\") permit(principal in Agent::\"agent-{agent}\", action == Action::\"token:exchange\", resource == Audience::\"aud-{aud}\") when {{ context.anomaly_score < 50 && context.scopes.contains(\"tickets:read\") }};\n"
        ));
    }
    out
}

fn request(rng: &mut Rng, now: Timestamp) -> DecisionRequest {
    let agent = rng.below(AGENTS);
    let mut context = Context::at(now);
    context.user = Some(UserRef {
        id: format!("corp/u{}", rng.below(USERS)),
        groups: vec!["support".into()],
    });
    context.scopes = vec!["tickets:read".into()];
    context.depth = 1;
    context.chain = vec![format!("agent-{agent}")];
    DecisionRequest {
        principal: Principal {
            agent: AgentFacts {
                name: format!("agent-{agent}"),
                owner: "team".into(),
                env: "prod".into(),
                trust: TrustLevel::Medium,
                purpose: String::new(),
            },
            instance: format!("agent-{agent}-i0"),
            attestor: "unix".into(),
        },
        action: Action::TokenExchange,
        resource: Resource::Audience(format!("aud-{}", rng.below(100))),
        context,
    }
}

/// Profiles for every agent and pair; a tenth of the agents with recent
/// signals. Returns the detector and the records/s it read.
fn trained(now: Timestamp) -> (Detector, f64) {
    let mut d = Detector::default();
    let config = AnomalyConfig {
        warmup: 5,
        ..AnomalyConfig::default()
    };
    let mut rng = Rng(42);
    let mut records = Vec::new();
    let start = now.as_millis() - 600_000;
    for seq in 1..=200_000u64 {
        let agent = rng.below(AGENTS);
        let mut e = AuditEvent::new(
            "token.exchange",
            if rng.below(20) == 0 {
                Outcome::Deny
            } else {
                Outcome::Allow
            },
        )
        .agent(format!("agent-{agent}"));
        e.user = Some(format!("user:corp/u{}", rng.below(USERS)));
        // A tenth of the agents wander onto new audiences late.
        let aud = if agent.is_multiple_of(10) && seq > 190_000 {
            format!("new-{}", rng.below(1000))
        } else {
            format!("aud-{}", rng.below(5))
        };
        e.resource = Some(aud);
        e.chain = vec![format!("agent-{agent}")];
        records.push(AuditRecord {
            seq,
            time: Timestamp::from_millis(start + (seq as i64) * 3),
            event: e,
            prev_hash: ChainHash::GENESIS,
            hash: ChainHash::GENESIS,
            keyed: false,
        });
    }
    let t = Instant::now();
    for r in &records {
        black_box(d.observe(r, &config));
    }
    let rate = records.len() as f64 / t.elapsed().as_secs_f64();
    (d, rate)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir(&policy_dir).unwrap();
    let mut rng = Rng(0x51ed);
    std::fs::write(policy_dir.join("p.cedar"), policies(1000, &mut rng)).unwrap();
    let store: Arc<dyn warrant_store::Store> = Arc::new(
        warrant_store::SqliteStore::open(&dir.path().join("db"), Default::default()).unwrap(),
    );
    let metrics = Arc::new(Metrics::new());
    let load = || {
        PolicyService::load(
            &policy_dir,
            store.clone(),
            metrics.clone(),
            Default::default(),
        )
        .unwrap()
    };
    let off = load();
    let calm = load();
    let on = load();
    let now = Timestamp::now();
    let (detector, rate) = trained(now);
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    std::fs::write(
        state_dir.join("anomaly.json"),
        serde_json::to_vec(&detector).unwrap(),
    )
    .unwrap();
    let anomaly = AnomalyService::new(&state_dir, AnomalyConfig::default(), metrics.clone());
    let scored = anomaly.scores().iter().filter(|(_, s)| *s > 0).count();
    on.set_anomaly(anomaly);
    let empty = dir.path().join("calm");
    std::fs::create_dir(&empty).unwrap();
    calm.set_anomaly(AnomalyService::new(
        &empty,
        AnomalyConfig::default(),
        metrics.clone(),
    ));

    let mut rng = Rng(7);
    let requests: Vec<DecisionRequest> = (0..20_000).map(|_| request(&mut rng, now)).collect();
    let (mut t_off, mut t_calm, mut t_on) = (Vec::new(), Vec::new(), Vec::new());
    let mut allowed = [0usize; 3];
    for round in 0..15 {
        let (svc, out, k) = match round % 3 {
            0 => (&off, &mut t_off, 0),
            1 => (&calm, &mut t_calm, 1),
            _ => (&on, &mut t_on, 2),
        };
        for r in &requests {
            let t = Instant::now();
            let (d, _) = svc.decide_for_record(r, AuditEvent::new("bench", Outcome::Allow));
            out.push(t.elapsed().as_secs_f64() * 1e6);
            allowed[k] += usize::from(black_box(d).is_allow());
        }
    }
    for t in [&mut t_off, &mut t_calm, &mut t_on] {
        t.sort_by(f64::total_cmp);
    }
    let p = |t: &[f64]| (percentile(t, 0.5), percentile(t, 0.99));
    let ((a50, a99), (c50, c99), (o50, o99)) = (p(&t_off), p(&t_calm), p(&t_on));
    println!("decide_for_record, 1,000 policies, 100,000 decisions each way, rounds alternating");
    println!(
        "{:>34} {:>10} {:>10} {:>10}",
        "detection", "p50 (µs)", "p99 (µs)", "allowed"
    );
    println!("{:>34} {a50:>10.2} {a99:>10.2} {:>10}", "off", allowed[0]);
    println!(
        "{:>34} {c50:>10.2} {c99:>10.2} {:>10}",
        "on, agents calm (the usual case)", allowed[1]
    );
    println!(
        "{:>34} {o50:>10.2} {o99:>10.2} {:>10}",
        "on, every agent scored", allowed[2]
    );
    println!(
        "on/off: calm p50 {:.2}x p99 {:.2}x; every agent scored ({scored}) p50 {:.2}x p99 {:.2}x",
        c50 / a50,
        c99 / a99,
        o50 / a50,
        o99 / a99
    );
    println!("detector (off the request path): {rate:.0} audit records/s read and scored");
}
