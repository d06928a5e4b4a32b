//! Brokers on one PostgreSQL against one broker on SQLite, in one run:
//! client-credentials grants/s and three-hop exchanges/s with one broker on
//! SQLite, then one, two and three brokers on one PostgreSQL (the load
//! spread over them in turn); and how long a revocation through broker A
//! takes to be refused by broker B.
//!
//! This machine has two cores, shared by every broker, PostgreSQL and the
//! load generator (nothing is pinned): more brokers add no cores here, so
//! the multi-broker rows show what sharing one chain and one database costs,
//! not how far it scales on more machines.
//!
//! Needs the test PostgreSQL: `scripts/postgres start` (or
//! `WARRANT_TEST_POSTGRES`). Run with `cargo bench -p warrant --bench
//! cluster`; `WARRANT_BENCH_SECS` sets the seconds per case (default 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{AT, Bodies, Conn, JWT, access_token, cli, form, free_addr, hop, load};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use warrant_testkit::postgres::Database;

const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

const POLICY: &str = r#"
@id("bench-identities")
permit(principal, action == Action::"identity:issue", resource);
@id("bench-exchange")
permit(principal, action == Action::"token:exchange", resource);
@id("bench-self")
permit(principal, action == Action::"token:self", resource);
"#;

struct Brokers {
    children: Vec<Child>,
    data: Vec<PathBuf>,
    api: Vec<SocketAddr>,
    _tmp: tempfile::TempDir,
}

impl Drop for Brokers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let pid = rustix::process::Pid::from_child(c);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = c.wait();
        }
    }
}

/// `n` brokers on `store` (None: one on SQLite), the bench policy in force
/// on each, and `orch`, `sub`, `leaf` registered.
fn start(n: usize, store: Option<&str>) -> Brokers {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut children, mut data, mut api) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let dir = tmp.path().join(format!("node{i}"));
        let addr = free_addr();
        let mut extra = vec!["--dev", "--issuer", "http://warrant.bench"];
        if let Some(s) = store {
            extra.extend(["--store", s]);
        }
        children.push(common::serve_with(
            &dir,
            addr,
            free_addr(),
            &extra,
            &[("WARRANT_KEK", KEK)],
            false,
        ));
        std::fs::write(dir.join("policies/bench.cedar"), POLICY).unwrap();
        cli(&dir, &["policy", "reload"]);
        data.push(dir);
        api.push(addr);
    }
    for a in ["orch", "sub", "leaf"] {
        cli(
            &data[0],
            &["agent", "create", a, "--owner", "bench", "--env", "dev"],
        );
    }
    Brokers {
        children,
        data,
        api,
        _tmp: tmp,
    }
}

struct Figures {
    grants: common::Run,
    exchanges: common::Run,
}

/// Client credentials and hop-3 exchanges (fresh subjects) at 16
/// connections spread over the brokers.
async fn measure(b: &Brokers, secs: f64) -> Figures {
    let mut ids = Vec::new();
    for (i, a) in ["orch", "sub", "leaf"].iter().enumerate() {
        let jt = cli(&b.data[0], &["agent", "join-token", a]);
        // Redeemed at each broker in turn: the store is one.
        let mut c = Conn::open(b.api[i % b.api.len()]).await;
        let body = format!("{{\"token\":\"{jt}\"}}");
        let (s, out) = c.post_json("/v1/attest/join", body).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&out));
        let v: Value = serde_json::from_slice(&out).unwrap();
        ids.push(v["identity_token"].as_str().unwrap().to_owned());
    }
    let (orch, sub, leaf) = (&ids[0], &ids[1], &ids[2]);
    let alice = cli(&b.data[0], &["dev", "user-token", "alice"]);
    let mut c = Conn::open(b.api[0]).await;
    let (s, out) = c
        .post(
            "/oauth2/token",
            hop(
                &alice,
                JWT,
                orch,
                &[
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ],
            ),
        )
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&out));
    let t1 = access_token(&out);
    let hop2 = hop(&t1, AT, sub, &[]);
    let want = (6_000.0 * secs) as usize;
    let minted = load(
        &b.api,
        16,
        600.0,
        Arc::new(Bodies::Queue(Mutex::new(
            std::iter::repeat_n(hop2, want).collect(),
        ))),
        true,
    )
    .await;
    let fresh: VecDeque<_> = minted
        .bodies
        .iter()
        .map(|t2| hop(&access_token(t2), AT, leaf, &[]))
        .collect();
    let grant = form(&[
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", orch),
        ("scope", "tickets:read"),
        ("audience", "https://tickets.example"),
    ]);
    let grants = load(&b.api, 16, secs, Arc::new(Bodies::Same(grant)), false).await;
    let exchanges = load(
        &b.api,
        16,
        secs,
        Arc::new(Bodies::Queue(Mutex::new(fresh))),
        false,
    )
    .await;
    Figures { grants, exchanges }
}

/// Per run: a task issued by B and used at B, revoked with `warrant revoke
/// --task` through A; from the CLI returning, the time to B's first refused
/// introspection. Returns the latencies (ms), sorted, and uses B accepted
/// after the revoke returned.
async fn propagation(b: &Brokers, runs: usize) -> (Vec<f64>, usize) {
    let (a_dir, b_addr) = (&b.data[0], b.api[b.api.len() - 1]);
    let jt = cli(a_dir, &["agent", "join-token", "orch"]);
    let mut c = Conn::open(b_addr).await;
    let (s, out) = c
        .post_json("/v1/attest/join", format!("{{\"token\":\"{jt}\"}}"))
        .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&out).unwrap();
    let id = v["identity_token"].as_str().unwrap().to_owned();
    let (mut lat, mut accepted) = (Vec::new(), 0);
    for _ in 0..runs {
        let (s, out) = c
            .post(
                "/oauth2/token",
                form(&[
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &id),
                    ("scope", "tickets:read"),
                    ("audience", "https://tickets.example"),
                ]),
            )
            .await;
        assert_eq!(s, 200);
        let token = access_token(&out);
        let introspect = form(&[
            ("token", token.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &id),
        ]);
        let (_, out) = c.post("/oauth2/introspect", introspect.clone()).await;
        assert!(String::from_utf8_lossy(&out).contains("\"active\":true"));
        let task = common::claims(&token)["task"].as_str().unwrap().to_owned();
        let dir = a_dir.clone();
        tokio::task::spawn_blocking(move || cli(&dir, &["revoke", "--task", &task]))
            .await
            .unwrap();
        let t0 = Instant::now();
        loop {
            let (_, out) = c.post("/oauth2/introspect", introspect.clone()).await;
            if String::from_utf8_lossy(&out).contains("\"active\":false") {
                break;
            }
            accepted += 1;
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    (lat, accepted)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn main() {
    let secs: f64 = std::env::var("WARRANT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    {
        let b = start(1, None);
        rows.push(("SQLite, 1 broker", rt.block_on(measure(&b, secs))));
    }
    for n in 1..=3 {
        let db = Database::new();
        let b = start(n, Some(&db.url));
        let label = match n {
            1 => "PostgreSQL, 1 broker",
            2 => "PostgreSQL, 2 brokers",
            _ => "PostgreSQL, 3 brokers",
        };
        rows.push((label, rt.block_on(measure(&b, secs))));
    }
    let (same, _) = {
        let b = start(1, None);
        rt.block_on(propagation(&b, 50))
    };
    let (across, accepted) = {
        let db = Database::new();
        let b = start(2, Some(&db.url));
        rt.block_on(propagation(&b, 50))
    };

    println!(
        "brokers on one PostgreSQL vs one on SQLite, {secs}s per case, 16 connections spread over the brokers, everything on this machine's 2 cores"
    );
    let base = (rows[0].1.grants.rate, rows[0].1.exchanges.rate);
    for (label, f) in &rows {
        println!(
            "  {label:<22} grants {:>7.0}/s ({:.2}x) p99 {:>6.2} ms   3-hop exchanges {:>7.0}/s ({:.2}x) p99 {:>6.2} ms",
            f.grants.rate,
            f.grants.rate / base.0,
            f.grants.p99_ms,
            f.exchanges.rate,
            f.exchanges.rate / base.1,
            f.exchanges.p99_ms,
        );
    }
    println!(
        "  revocation: `warrant revoke --task` returned -> first refused introspection (50 runs)"
    );
    println!(
        "    same broker (SQLite)        p50 {:>6.2} ms  p99 {:>6.2} ms",
        pct(&same, 0.5),
        pct(&same, 0.99)
    );
    println!(
        "    A -> B (PostgreSQL feed)    p50 {:>6.2} ms  p99 {:>6.2} ms   uses accepted after the revoke returned: {accepted}",
        pct(&across, 0.5),
        pct(&across, 0.99)
    );
}
