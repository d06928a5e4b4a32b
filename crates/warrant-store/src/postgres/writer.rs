//! The group-commit writer for PostgreSQL: one thread per broker owns the
//! write connection.
//!
//! As with SQLite, callers submit jobs (a mutation and the audit events that
//! record it) and wait for the commit; the thread runs every job queued
//! meanwhile in one transaction, each in its own savepoint, and answers once
//! the transaction committed (`synchronous_commit` as the server has it:
//! `on` by default, durable on the primary).
//!
//! INVARIANT (one chain across brokers): each transaction first locks the
//! chain's head row (`audit_head ... FOR UPDATE`) and holds it until it
//! commits, so the records of every broker get consecutive sequence numbers
//! in commit order, each linked to the record before it. Brokers take turns
//! per batch, not per record: group commit keeps the turn-taking cheap.
//! INVARIANT (audit before effect): a job's audit records are written in the
//! same savepoint as its mutation; if either fails, both are rolled back.
//! INVARIANT (the feed follows commit order): change versions are numbered
//! under the same lock, and `NOTIFY` is delivered only at commit.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{Client, Transaction};

use super::cached::{Cached, Db, Statements};
use tokio::sync::{mpsc, oneshot};
use warrant_core::audit::{AuditEvent, AuditRecord, ChainHash, ChainLinker};
use warrant_core::time::Timestamp;

use super::feed::KEEP;
use super::{Connector, db_err};
use crate::{ChangeKind, StoreError};

/// The chain head and feed position, as locked by the current transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainState {
    next_seq: u64,
    prev: ChainHash,
    last_time: Timestamp,
    next_change: u64,
}

impl ChainState {
    /// Locks the head row for the rest of `tx` and reads it.
    fn lock(tx: &mut impl Db) -> Result<Self, StoreError> {
        let row = tx
            .query_one(
                "SELECT seq, hash, time, changes FROM audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .map_err(db_err)?;
        let seq: i64 = row.get(0);
        let hash: Vec<u8> = row.get(1);
        let changes: i64 = row.get(3);
        Ok(Self {
            next_seq: u64::try_from(seq).unwrap_or(0) + 1,
            prev: ChainHash(hash.try_into().map_err(|_| {
                StoreError::Corrupt("the audit chain head's hash is not 32 bytes".into())
            })?),
            last_time: Timestamp::from_millis(row.get(2)),
            next_change: u64::try_from(changes).unwrap_or(0) + 1,
        })
    }

    fn store(&self, tx: &mut impl Db) -> Result<(), StoreError> {
        let seq = i64::try_from(self.next_seq - 1).unwrap_or(i64::MAX);
        let changes = i64::try_from(self.next_change - 1).unwrap_or(i64::MAX);
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2, time = $3, changes = $4 WHERE id = 1",
            &[
                &seq,
                &self.prev.0.as_slice(),
                &self.last_time.as_millis(),
                &changes,
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    /// The newest record (sequence 0: none).
    pub(crate) fn head(&self) -> (u64, ChainHash) {
        (self.next_seq - 1, self.prev)
    }
}

/// What a job sees: its savepoint, and the chain it extends.
pub(crate) struct WriteCtx<'a, 'b> {
    pub(crate) tx: Cached<'a, Transaction<'b>>,
    chain: &'a mut ChainState,
    pub(crate) linker: Option<&'a dyn ChainLinker>,
    /// The last record this broker wrote, as it wrote it.
    pub(crate) written: Option<(u64, ChainHash)>,
}

impl WriteCtx<'_, '_> {
    /// The chain head as locked by this transaction.
    pub(crate) fn head(&self) -> (u64, ChainHash) {
        self.chain.head()
    }

    /// Appends an audit record in the current savepoint.
    pub(crate) fn append(&mut self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        // Time never goes backwards along the chain, even if one broker's
        // clock is behind another's.
        let time = Timestamp::now().max(self.chain.last_time);
        let sealed = AuditRecord::seal(
            self.chain.next_seq,
            time,
            event,
            self.chain.prev,
            self.linker,
        )
        .map_err(|e| StoreError::AuditUnavailable(format!("cannot encode the record: {e}")))?;
        let r = &sealed.record;
        let seq = i64::try_from(r.seq)
            .map_err(|_| StoreError::AuditUnavailable("sequence overflow".into()))?;
        // INVARIANT (stored as written): what the database stored is
        // returned; a trigger that changed or swallowed the row shows.
        let stored = self
            .tx
            .query(
                r#"INSERT INTO audit_log (seq, time, event, decision, agent, instance, "user", task, txn, body, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING hash, body"#,
                &[
                    &seq,
                    &r.time.as_millis(),
                    &r.event.event,
                    &r.event.decision.as_str(),
                    &r.event.agent,
                    &r.event.instance,
                    &r.event.user,
                    &r.event.task,
                    &r.event.txn,
                    &sealed.body,
                    &r.prev_hash.0.as_slice(),
                    &r.hash.0.as_slice(),
                ],
            )
            .map_err(|e| StoreError::AuditUnavailable(super::describe(&e)))?;
        let as_written = matches!(stored.as_slice(), [row]
            if row.get::<_, &[u8]>(0) == r.hash.0.as_slice() && row.get::<_, &str>(1) == sealed.body);
        if !as_written {
            return Err(StoreError::AuditUnavailable(
                "the audit record was not stored as written (is there a trigger on audit_log?)"
                    .into(),
            ));
        }
        self.chain.next_seq += 1;
        self.chain.prev = r.hash;
        self.chain.last_time = r.time;
        self.written = Some((r.seq, r.hash));
        Ok(sealed.record)
    }

    /// Notes a change every broker's memory must follow, in this savepoint.
    pub(crate) fn changed(&mut self, kind: ChangeKind, key: &str) -> Result<(), StoreError> {
        let version = i64::try_from(self.chain.next_change).unwrap_or(i64::MAX);
        self.tx
            .execute(
                "INSERT INTO changes (version, kind, key, time) VALUES ($1, $2, $3, $4)",
                &[
                    &version,
                    &kind.as_str(),
                    &key,
                    &Timestamp::now().as_millis(),
                ],
            )
            .map_err(db_err)?;
        self.chain.next_change += 1;
        Ok(())
    }
}

/// A unit of work for the writer.
trait WriteJob: Send {
    /// Runs the job; returns whether it succeeded (else it is rolled back).
    fn apply(&mut self, ctx: &mut WriteCtx<'_, '_>) -> bool;
    /// Delivers the outcome once the batch committed (or failed).
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Job<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut WriteCtx<'_, '_>) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, ctx: &mut WriteCtx<'_, '_>) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let r = f(ctx);
        let ok = r.is_ok();
        self.out = Some(r);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let r = crate::error::job_outcome(self.out, commit);
        let _ = self.reply.send(r);
    }
}

enum Msg {
    Job(Box<dyn WriteJob>),
    Shutdown(oneshot::Sender<()>),
}

/// The handle callers use.
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// What the writer thread keeps between batches.
struct State {
    connector: Connector,
    client: Option<Client>,
    /// The write connection's prepared statements.
    stmts: Statements,
    max_batch: usize,
    linker: Option<std::sync::Arc<dyn ChainLinker>>,
    on_commit: Box<dyn Fn(bool) + Send>,
    written: Option<(u64, ChainHash)>,
    /// The highest chain head (record, change version) this writer has
    /// seen: neither goes back, whoever writes.
    high_water: (u64, u64),
    last_prune: Instant,
}

impl Writer {
    /// Starts the writer thread over `client` (reconnecting through
    /// `connector` when the connection is lost). `on_commit` runs after every
    /// successful commit, told whether it carried changes.
    pub(crate) fn start(
        connector: Connector,
        client: Client,
        max_batch: usize,
        linker: Option<std::sync::Arc<dyn ChainLinker>>,
        on_commit: Box<dyn Fn(bool) + Send>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(4096);
        let state = State {
            connector,
            client: Some(client),
            stmts: Statements::new(),
            max_batch: max_batch.max(1),
            linker,
            on_commit,
            written: None,
            high_water: (0, 0),
            last_prune: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("warrant-pg-writer".into())
            .spawn(move || run(state, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` in its own savepoint in the next batch, and returns its
    /// result once committed.
    pub(crate) async fn submit<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_, '_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Job {
            f: Some(f),
            out: None,
            reply,
        });
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Drains queued jobs, then stops the thread.
    pub(crate) async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// How often changes older than [`KEEP`] are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The longest the writer waits to gather a batch.
const MAX_GATHER: Duration = Duration::from_millis(1);

fn run(mut state: State, mut rx: mpsc::Receiver<Msg>) {
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    let mut last_batch = 1;
    let mut last_commit = Duration::ZERO;
    while shutdown.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut jobs: Vec<Box<dyn WriteJob>> = Vec::new();
        match first {
            Msg::Job(j) => jobs.push(j),
            Msg::Shutdown(done) => shutdown = Some(done),
        }
        let want = last_batch.min(state.max_batch);
        let deadline = Instant::now() + last_commit.min(MAX_GATHER);
        while shutdown.is_none() && jobs.len() < state.max_batch {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(j),
                Ok(Msg::Shutdown(done)) => shutdown = Some(done),
                Err(mpsc::error::TryRecvError::Empty)
                    if jobs.len() < want && Instant::now() < deadline =>
                {
                    std::thread::yield_now()
                }
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = commit_batch(&mut state, &mut jobs);
        last_commit = started.elapsed();
        last_batch = jobs.len();
        match &result {
            Ok(changed) => (state.on_commit)(*changed),
            Err(e) => {
                tracing::error!(error = %e, jobs = jobs.len(), "store batch failed; nothing in it was committed");
                if state.client.as_ref().is_some_and(Client::is_closed) {
                    state.client = None;
                }
            }
        }
        let result = result.map(drop);
        for job in jobs {
            job.finish(result.clone());
        }
    }
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Job(j) => j.finish(Err(StoreError::Closed)),
            Msg::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
    drop(state);
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// Commits one batch; returns whether it carried changes for the feed.
fn commit_batch(state: &mut State, jobs: &mut [Box<dyn WriteJob>]) -> Result<bool, StoreError> {
    if state.client.as_ref().is_none_or(Client::is_closed) {
        state.stmts.clear();
        state.client = Some(state.connector.connect()?);
    }
    let linker = state.linker.clone();
    let mut written = state.written;
    let Some(client) = state.client.as_mut() else {
        return Err(StoreError::Unavailable(
            "no connection to PostgreSQL".into(),
        ));
    };
    let stmts = &mut state.stmts;
    let mut tx = client.transaction().map_err(db_err)?;
    let start = ChainState::lock(&mut Cached::new(&mut tx, stmts))?;
    // INVARIANT (the trail only grows): records removed from its end, the
    // head row set back to match, would otherwise verify.
    let head = (start.head().0, start.next_change - 1);
    if head.0 < state.high_water.0 {
        return Err(StoreError::AuditUnavailable(format!(
            "the audit chain's head went back from record {} to {}: records were removed from the end of the trail; find out who did, and check it with `warrant audit verify` against exported checkpoints",
            state.high_water.0, head.0
        )));
    }
    if head.1 < state.high_water.1 {
        return Err(StoreError::AuditUnavailable(format!(
            "the change feed's counter went back from {} to {}: a change would reuse a version other brokers have read and be lost; find out who set it back",
            state.high_water.1, head.1
        )));
    }
    state.high_water = head;
    // INVARIANT (no write past a foreign guard): a rule or trigger added
    // after start could rewrite what is written (a revocation's change row
    // above all); every batch checks before it writes.
    super::refuse_foreign_triggers(&mut Cached::new(&mut tx, stmts))?;
    if state.last_prune.elapsed() >= PRUNE_EVERY {
        // Changes every follower has long read; one that was cut off for
        // longer re-reads everything (`Resync`).
        let before = Timestamp::now().as_millis() - i64::try_from(KEEP.as_millis()).unwrap_or(0);
        Cached::new(&mut tx, stmts)
            .execute("DELETE FROM changes WHERE time < $1", &[&before])
            .map_err(db_err)?;
        state.last_prune = Instant::now();
    }
    let mut chain = start;
    for job in jobs.iter_mut() {
        let snapshot = (chain, written);
        let mut sp = tx.savepoint("job").map_err(db_err)?;
        let mut ctx = WriteCtx {
            tx: Cached::new(&mut sp, stmts),
            chain: &mut chain,
            linker: linker.as_deref(),
            written,
        };
        let ok = job.apply(&mut ctx);
        written = ctx.written;
        if ok {
            sp.commit().map_err(db_err)?;
        } else {
            sp.rollback().map_err(db_err)?;
            (chain, written) = snapshot;
        }
    }
    let changed = chain.next_change != start.next_change;
    {
        let mut tx = Cached::new(&mut tx, stmts);
        if chain != start {
            chain.store(&mut tx)?;
        }
        if changed {
            tx.execute("SELECT pg_notify($1, '')", &[&super::CHANNEL])
                .map_err(db_err)?;
        }
    }
    tx.commit().map_err(|e| {
        StoreError::AuditUnavailable(format!("commit failed: {}", super::describe(&e)))
    })?;
    state.written = written;
    state.high_water = (
        state.high_water.0.max(chain.head().0),
        state.high_water.1.max(chain.next_change - 1),
    );
    Ok(changed)
}
