//! Audit writer throughput: durable records per second.
//!
//! Group commit (the broker's writer) against one transaction per record (the
//! same writer with batches of one), at 1, 8 and 64 concurrent writers, in the
//! same run on the same disk. Both use `synchronous=FULL`: a record counts only
//! once its commit returned. Run with `cargo bench -p warrant-store`.
//! `WARRANT_BENCH_SECS` sets the seconds per case (default 3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warrant_core::audit::{AuditEvent, Outcome};
use warrant_store::{SqliteOptions, SqliteStore, Store};

fn event(writer: usize, i: u64) -> AuditEvent {
    AuditEvent::new("policy.decision", Outcome::Allow)
        .agent(format!("agent-{}", writer % 50))
        .instance(format!("inst-{writer}-7f3c9a"))
        .user("user:alice@example.org")
        .txn(format!("txn_{writer}_{}", i / 10))
        .task(format!("tsk_{writer}_{i}"))
        .action("http:request")
        .resource("Route::\"openai\"")
        .protocol("proxy")
        .credential_type("secret")
        .credential_id("openai-key@v3")
        .reason("openai-chat")
}

fn run_case(
    rt: &tokio::runtime::Runtime,
    max_batch: usize,
    writers: usize,
    secs: u64,
) -> (f64, Duration) {
    let dir = tempfile::tempdir_in(
        std::env::var("WARRANT_BENCH_DIR")
            .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned()),
    )
    .unwrap();
    let store = Arc::new(
        SqliteStore::open(
            &dir.path().join("bench.db"),
            SqliteOptions {
                max_batch,
                // Keyed, as the broker runs it.
                chain: Some(Arc::new(
                    warrant_token::AuditChainKey::derive(&warrant_token::Kek::generate().unwrap())
                        .unwrap(),
                )),
            },
        )
        .unwrap(),
    );
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        // Warm up the file and caches.
        for i in 0..100 {
            store.append_audit(event(0, i)).await.unwrap();
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    store.append_audit(event(w, i)).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = count.load(Ordering::Relaxed);
        // The query index is built off the durable path; report how long it
        // takes to catch up after the run, so its cost is visible too.
        let t = Instant::now();
        store.flush_index().await;
        let catch_up = t.elapsed();
        let report = store.verify_audit().await.unwrap();
        assert!(report.broken.is_none(), "chain broken after the run");
        store.close().await;
        (n as f64 / elapsed, catch_up)
    })
}

fn main() {
    let secs: u64 = std::env::var("WARRANT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("audit writer: durable records/s, synchronous=FULL, {secs}s per case");
    println!(
        "{:>8} {:>16} {:>16} {:>8} {:>22}",
        "writers", "per-record tx", "group commit", "ratio", "index catch-up after"
    );
    for writers in [1, 8, 64] {
        let (single, _) = run_case(&rt, 1, writers, secs);
        let (group, catch_up) = run_case(&rt, 1024, writers, secs);
        println!(
            "{writers:>8} {single:>16.0} {group:>16.0} {:>7.1}x {:>20.0}ms",
            group / single,
            catch_up.as_secs_f64() * 1e3
        );
    }
}
