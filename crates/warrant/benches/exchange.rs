//! Token exchange with a three-hop `act` chain, against the bare crypto work
//! it needs, and the time from `warrant revoke --task` returning to the first
//! refused use of a descendant token.
//!
//! A release `warrant serve --dev` pinned to core 0; the load generator (this
//! process: one thread, keep-alive HTTP/1.1 connections over hyper) on core 1,
//! so figures are per core. Three agents, `orch` → `sub` → `leaf`, each with an
//! identity token by join token; alice's user token from the development
//! issuer. The measured request is hop 3: the leaf exchanges a task token of
//! `sub` (itself from `orch`, for alice) plus its own identity token for a
//! token whose `act` chain names all three.
//!
//! - *fresh subject*: every request presents a different hop-2 token, minted
//!   beforehand, as a delegated sub-task does; the leaf reuses its identity
//!   token, as an agent does for its token's five minutes.
//! - *same subject*: every request presents the same hop-2 token, the
//!   repeat-use case the verified-token cache serves.
//!
//! Ceiling, in the same run on core 0 with the broker stopped: two ES256
//! verifications and one signing of the same tokens, per second.
//!
//! Run with `cargo bench -p warrant --bench exchange`. `WARRANT_BENCH_SECS`
//! sets the seconds per case (default 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    AT, Bodies, Conn, JWT, access_token, cli, form, free_addr, hop, load, pin_self, two_cores,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use warrant_core::time::Timestamp;

const POLICY: &str = r#"
@id("bench-identities")
permit(principal, action == Action::"identity:issue", resource);
@id("bench-exchange")
permit(principal, action == Action::"token:exchange", resource);
"#;

/// Two ES256 verifications and one signing, per second, on this thread.
fn ceiling(secs: f64, jwks: &[u8], subject: &str, actor: &str, claims: &Value) -> f64 {
    let (keys, _) = warrant_token::jwt::VerifyingKeys::from_jwks(jwks).unwrap();
    let kek = warrant_token::Kek::generate().unwrap();
    let t = Timestamp::now();
    let set = warrant_token::KeySet::open(
        vec![warrant_token::generate_key(warrant_core::keys::Alg::Es256, &kek, t, t).unwrap()],
        &kek,
    )
    .unwrap();
    let key = set.active(t).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..50 {
            std::hint::black_box(warrant_token::jwt::verify(subject, &keys).unwrap());
            std::hint::black_box(warrant_token::jwt::verify(actor, &keys).unwrap());
            std::hint::black_box(warrant_token::jwt::sign(key, "at+jwt", claims).unwrap());
        }
        n += 50;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("WARRANT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let pinned = two_cores();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = tmp.path().join("data");
    let api = free_addr();
    let mut child: Child = common::serve(&data, api, free_addr(), &["--dev"], pinned);
    let broker_pid = child.id();
    if pinned {
        pin_self(1);
    }
    for a in ["orch", "sub", "leaf"] {
        cli(
            &data,
            &["agent", "create", a, "--owner", "bench", "--env", "dev"],
        );
    }
    std::fs::write(data.join("policies/bench.cedar"), POLICY).unwrap();
    cli(&data, &["policy", "reload"]);
    let alice = cli(&data, &["dev", "user-token", "alice"]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let mut ids = Vec::new();
        for a in ["orch", "sub", "leaf"] {
            let jt = cli(&data, &["agent", "join-token", a]);
            let (s, b) =
                post_json(api, "/v1/attest/join", &format!("{{\"token\":\"{jt}\"}}")).await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            let v: Value = serde_json::from_slice(&b).unwrap();
            ids.push(v["identity_token"].as_str().unwrap().to_owned());
        }
        let (orch, sub, leaf) = (&ids[0], &ids[1], &ids[2]);
        // Opened now: a connection idle while the agents attest would meet
        // the listener's idle limit.
        let mut c = Conn::open(api).await;
        let (s, b) = c
            .post(
                "/oauth2/token",
                hop(
                    &alice,
                    JWT,
                    orch,
                    &[
                        ("scope", "tickets:read llm:chat"),
                        ("audience", "https://tickets.example"),
                    ],
                ),
            )
            .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let t1 = access_token(&b);
        let hop2 = hop(&t1, AT, sub, &[("scope", "tickets:read")]);
        let (s, b) = c.post("/oauth2/token", hop2.clone()).await;
        assert_eq!(s, 200);
        let t2 = access_token(&b);
        let hop3 = |t2: &str| hop(t2, AT, leaf, &[]);
        let (s, b) = c.post("/oauth2/token", hop3(&t2)).await;
        assert_eq!(s, 200);
        let t3 = access_token(&b);

        // Hop-2 tokens for the fresh-subject runs, minted beforehand.
        let want = (8_000.0 * secs) as usize;
        let mint = Arc::new(Bodies::Queue(Mutex::new(
            std::iter::repeat_n(hop2.clone(), want).collect(),
        )));
        let minted = load(&[api], 16, 600.0, mint, true).await;
        let mut fresh: VecDeque<Bytes> = minted
            .bodies
            .iter()
            .map(|b| hop3(&access_token(b)))
            .collect();

        let mut rows = Vec::new();
        for conns in [1, 16] {
            let n = fresh.len() / 2;
            let q: VecDeque<Bytes> = fresh.drain(..n.min(fresh.len())).collect();
            // WARRANT_BENCH_PERF=<file>: profile the broker during the
            // 16-connection fresh-subject case.
            let perf = (conns == 16)
                .then(|| common::perf_if_asked(broker_pid, secs))
                .flatten();
            let r = load(
                &[api],
                conns,
                secs,
                Arc::new(Bodies::Queue(Mutex::new(q))),
                false,
            )
            .await;
            if let Some(mut p) = perf {
                let _ = p.wait();
            }
            rows.push(("fresh subject", conns, r));
        }
        for conns in [1, 16] {
            let r = load(
                &[api],
                conns,
                secs,
                Arc::new(Bodies::Same(hop3(&t2))),
                false,
            )
            .await;
            rows.push(("same subject", conns, r));
        }

        // A fresh connection: `c` sat idle through the load runs.
        let mut c = Conn::open(api).await;
        let revocation = revocation_latency(&data, &mut c, &t1, sub, leaf).await;
        (rows, revocation, t2, leaf.clone(), t3)
    });
    let (rows, (rev_intro, rev_exchange, accepted), t2, leaf, t3) = report;

    let jwks = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(api).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get("/.well-known/jwks.json")
            .header("host", api.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        res.into_body().collect().await.unwrap().to_bytes()
    });
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.wait().unwrap();
    if pinned {
        pin_self(0);
    }
    let t3_claims: Value = {
        use base64::Engine as _;
        let payload = t3.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let ceiling = ceiling(secs, &jwks, &t2, &leaf, &t3_claims);

    println!(
        "three-hop token exchange (hop 3: leaf for sub for orch for alice), {secs}s per case, {}",
        if pinned {
            "broker on core 0, load on core 1"
        } else {
            "NOT pinned (one core)"
        }
    );
    println!("  ceiling: 2 ES256 verifications + 1 signing   {ceiling:>8.0}/s");
    for (case, conns, r) in &rows {
        println!(
            "  {case:<13} {conns:>2} conns   {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({:.2}x the ceiling)",
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.rate / ceiling
        );
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (i50, imax) = med(rev_intro);
    let (e50, emax) = med(rev_exchange);
    println!(
        "  revocation: `warrant revoke --task` returned -> first refused use (median / max of {} runs)",
        REVOCATION_RUNS
    );
    println!("    introspection   {i50:>6.2} / {imax:.2} ms");
    println!("    next exchange   {e50:>6.2} / {emax:.2} ms");
    println!("    uses accepted after the revoke returned: {accepted}");
}

const REVOCATION_RUNS: usize = 20;

async fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let s = res.status().as_u16();
    (s, res.into_body().collect().await.unwrap().to_bytes())
}

/// Per run: a fresh hop-2 task under `t1`, used once (so it is active and
/// remembered), then `warrant revoke --task <hop 2>`; from the moment the CLI
/// returns, the time to a refused introspection and a refused exchange.
/// Returns both latency lists (ms) and how many uses were accepted after
/// the revoke returned (the aim is none).
async fn revocation_latency(
    data: &Path,
    c: &mut Conn,
    t1: &str,
    sub: &str,
    leaf: &str,
) -> (Vec<f64>, Vec<f64>, usize) {
    let (mut intro, mut exch, mut accepted) = (Vec::new(), Vec::new(), 0);
    for _ in 0..REVOCATION_RUNS {
        let (s, b) = c
            .post(
                "/oauth2/token",
                hop(t1, AT, sub, &[("scope", "tickets:read")]),
            )
            .await;
        assert_eq!(s, 200);
        let t2 = access_token(&b);
        let introspect = form(&[
            ("token", t2.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", leaf),
        ]);
        let (s, b) = c.post("/oauth2/introspect", introspect.clone()).await;
        assert_eq!(s, 200);
        assert!(String::from_utf8_lossy(&b).contains("\"active\":true"));
        let claims: Value = {
            use base64::Engine as _;
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t2.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        let task = claims["task"].as_str().unwrap().to_owned();
        let data = data.to_owned();
        tokio::task::spawn_blocking(move || cli(&data, &["revoke", "--task", &task]))
            .await
            .unwrap();
        let t0 = Instant::now();
        loop {
            let (s, b) = c.post("/oauth2/introspect", introspect.clone()).await;
            assert_eq!(s, 200);
            if String::from_utf8_lossy(&b).contains("\"active\":false") {
                break;
            }
            accepted += 1;
        }
        intro.push(t0.elapsed().as_secs_f64() * 1000.0);
        let t0 = Instant::now();
        loop {
            let (s, _) = c.post("/oauth2/token", hop(&t2, AT, leaf, &[])).await;
            if s == 400 {
                break;
            }
            accepted += 1;
        }
        exch.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    (intro, exch, accepted)
}
