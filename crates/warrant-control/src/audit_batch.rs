//! Records of requests already answered, written in batches.
//!
//! The edge (proxy and MCP gateway) records an allowed request when it ends,
//! off the response path. Written one by one, each record would cost its own
//! commit whenever requests arrive one at a time; gathered here for at most
//! [`LINGER`] (or [`MAX_BATCH`] records), they share one. A refusal of an
//! authenticated caller never comes this way: it is durable before it is
//! answered. If a batch cannot be written, [`AuditBatcher::failed`] turns
//! true and the edge refuses requests; the batch is kept and written again
//! every [`RETRY`] until it succeeds, which turns `failed` false again, so
//! the edge recovers by itself once the trail is writable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use warrant_core::audit::AuditEvent;
use warrant_store::Store;

use crate::metrics::Metrics;

/// The longest a record waits for others to share its commit.
pub const LINGER: Duration = Duration::from_millis(5);
/// The most records in one commit.
pub const MAX_BATCH: usize = 512;
/// Records waiting before senders have to wait too.
const QUEUE: usize = 8192;
/// How often a batch that could not be written is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

enum Msg {
    Record(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

/// The batcher's handle.
#[derive(Debug, Clone)]
pub struct AuditBatcher {
    tx: mpsc::Sender<Msg>,
    failed: Arc<AtomicBool>,
}

impl AuditBatcher {
    /// Starts the batching task (inside a tokio runtime).
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(rx, store, metrics, failed.clone()));
        Self { tx, failed }
    }

    /// Queues a record of an answered request (waits only if the queue is full).
    pub async fn record(&self, event: AuditEvent) {
        // Bounded before it queues: a queued record holds no more memory
        // than a written one.
        let mut event = event;
        event.bound();
        if self.tx.send(Msg::Record(Box::new(event))).await.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the last batch could not be written.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Writes everything queued so far (at shutdown, and for tests).
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Msg>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    failed: Arc<AtomicBool>,
) {
    // Records not yet durable: gathered, or kept after a failed write.
    let mut batch: Vec<AuditEvent> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = if batch.is_empty() {
            match rx.recv().await {
                Some(m) => Some(m),
                None => break,
            }
        } else {
            // A batch waits to be written again: try at the next tick, or
            // sooner with whatever arrives meanwhile.
            match tokio::time::timeout(RETRY, rx.recv()).await {
                Ok(Some(m)) => Some(m),
                Ok(None) => None,
                Err(_) => None,
            }
        };
        match first {
            Some(Msg::Record(e)) => batch.push(*e),
            Some(Msg::Flush(done)) => waiting.push(done),
            None => {}
        }
        if waiting.is_empty() && !failed.load(Ordering::Relaxed) {
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(Msg::Record(e))) => batch.push(*e),
                    Ok(Some(Msg::Flush(done))) => {
                        waiting.push(done);
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::Record(e) => batch.push(*e),
                Msg::Flush(done) => waiting.push(done),
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            match store.append_audits(batch.clone()).await {
                Ok(()) => {
                    batch.clear();
                    if failed.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            records = n,
                            "the audit trail is writable again; the edge forwards requests again"
                        );
                    }
                }
                Err(e) => {
                    if !failed.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %e, records = n, "cannot record answered edge requests; the edge refuses requests until the audit trail is writable, trying again every second");
                    }
                    metrics.audit_write_failures.inc();
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if rx.is_closed() && batch.is_empty() && rx.is_empty() {
            break;
        }
    }
}
