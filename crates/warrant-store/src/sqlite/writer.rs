//! The group-commit writer: one thread owns the write connection.
//!
//! Callers submit jobs (a mutation and the audit events that record it) over a
//! bounded channel and wait for the commit. The thread takes every job queued
//! while the previous commit was syncing, runs each inside its own savepoint
//! (so one failing job rolls back alone), and commits the batch with one fsync
//! (`synchronous=FULL`). Many concurrent writers thus share one fsync, and a
//! reply is sent only once its batch is durable.
//!
//! Gathering: writers that wait for a commit all resubmit the moment it ends,
//! a few microseconds apart. Starting the next batch on the first arrival would
//! commit batches of one or two and stay fsync-bound, so before committing the
//! thread waits for as many jobs as the previous batch held, but never longer
//! than the previous commit took (capped at [`MAX_GATHER`]). Gathering thus at
//! most doubles a record's latency, and a lone writer never waits.
//!
//! INVARIANT (audit before effect): a job's audit records are written in the
//! same savepoint as its mutation; if either fails, both are rolled back.
//! INVARIANT (one chain): only this thread assigns sequence numbers and hashes,
//! so the chain has no forks or gaps.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use warrant_core::audit::{AuditEvent, AuditRecord, ChainHash, ChainLinker};
use warrant_core::time::Timestamp;

use crate::StoreError;

/// The chain head as the writer sees it.
#[derive(Debug, Clone, Copy)]
struct ChainState {
    next_seq: u64,
    prev: ChainHash,
    last_time: Timestamp,
    /// The head loaded at start, if it did not verify.
    tainted: Option<u64>,
}

impl ChainState {
    fn load(conn: &Connection) -> Result<Self, StoreError> {
        let head = conn
            .query_row(
                "SELECT seq, hash, time FROM audit_log ORDER BY seq DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(match head {
            None => Self {
                next_seq: 1,
                prev: ChainHash::GENESIS,
                last_time: Timestamp::from_millis(0),
                tainted: None,
            },
            Some((seq, hash, time)) => Self {
                next_seq: u64::try_from(seq).unwrap_or(0) + 1,
                prev: ChainHash(hash.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt(format!(
                        "audit record {seq} has a hash that is not 32 bytes"
                    ))
                })?),
                last_time: Timestamp::from_millis(time),
                tainted: None,
            },
        })
    }
}

/// What a job sees: the write connection inside its savepoint, and the chain.
pub(crate) struct WriteCtx<'a> {
    pub(crate) conn: &'a Connection,
    chain: &'a mut ChainState,
    linker: Option<&'a dyn ChainLinker>,
}

impl WriteCtx<'_> {
    /// The chain key, if the chain is keyed.
    pub(crate) fn linker(&self) -> Option<&dyn ChainLinker> {
        self.linker
    }

    /// The head loaded at start, if it did not verify.
    pub(crate) fn tainted(&self) -> Option<u64> {
        self.chain.tainted
    }

    /// The last audit record this writer wrote (sequence 0: none), as it
    /// wrote it.
    pub(crate) fn head(&self) -> (u64, ChainHash) {
        (self.chain.next_seq - 1, self.chain.prev)
    }

    /// Appends an audit record in the current savepoint.
    pub(crate) fn append(&mut self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        // Time never goes backwards along the chain, even if the clock does.
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
        self.conn
            .prepare_cached(
                "INSERT INTO audit_log (seq, time, event, decision, agent, instance, user, task, txn, body, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    seq,
                    r.time.as_millis(),
                    r.event.event,
                    r.event.decision.as_str(),
                    r.event.agent,
                    r.event.instance,
                    r.event.user,
                    r.event.task,
                    r.event.txn,
                    sealed.body,
                    r.prev_hash.0.as_slice(),
                    r.hash.0.as_slice(),
                ])
            })
            .map_err(|e| StoreError::AuditUnavailable(e.to_string()))
            // INVARIANT (stored, not just accepted): a trigger can make an
            // insert succeed without storing the row (`RAISE(IGNORE)`); a
            // record is written only if exactly one row was stored.
            .and_then(|rows| match rows {
                1 => Ok(()),
                n => Err(StoreError::AuditUnavailable(format!(
                    "the audit record was not stored ({n} rows written; is there a trigger on audit_log?)"
                ))),
            })?;
        // INVARIANT (stored as written): a trigger can also remove or change
        // the row after it was inserted, which the count does not show; the
        // record counts only if it reads back as written.
        let stored: Option<(Vec<u8>, String)> = self
            .conn
            .prepare_cached("SELECT hash, body FROM audit_log WHERE seq = ?1")
            .and_then(|mut st| {
                st.query_row(params![seq], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(|e| StoreError::AuditUnavailable(e.to_string()))?;
        if stored
            .as_ref()
            .is_none_or(|(h, b)| h.as_slice() != r.hash.0.as_slice() || *b != sealed.body)
        {
            return Err(StoreError::AuditUnavailable(
                "the audit record does not read back as written (is there a trigger on audit_log?)"
                    .into(),
            ));
        }
        self.chain.next_seq += 1;
        self.chain.prev = r.hash;
        self.chain.last_time = r.time;
        Ok(sealed.record)
    }
}

/// A unit of work for the writer.
pub(crate) trait WriteJob: Send {
    /// Whether the job needs its own savepoint: true when it runs more than one
    /// statement. A single statement is atomic on its own.
    fn isolated(&self) -> bool;
    /// Runs the job; returns whether it succeeded (else it is rolled back).
    fn apply(&mut self, ctx: &mut WriteCtx<'_>) -> bool;
    /// Delivers the outcome once the batch committed (or failed).
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Job<T, F> {
    isolated: bool,
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send,
{
    fn isolated(&self) -> bool {
        self.isolated
    }

    fn apply(&mut self, ctx: &mut WriteCtx<'_>) -> bool {
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
        // The caller may have gone away (cancelled request); the write stands.
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

impl Writer {
    /// Starts the writer thread over `conn`.
    /// `on_commit` runs after every successful commit (it tells the indexer).
    pub(crate) fn start(
        conn: Connection,
        max_batch: usize,
        linker: Option<std::sync::Arc<dyn ChainLinker>>,
        on_commit: Box<dyn Fn() + Send>,
    ) -> Result<Self, StoreError> {
        let mut chain = ChainState::load(&conn)?;
        // INVARIANT (a head the broker can vouch for): the newest record, as
        // the broker finds it at start, must link; else nothing built on
        // it is vouched for until someone looks.
        if chain.next_seq > 1 {
            let seq = chain.next_seq - 1;
            let links =
                super::record_links(&conn, linker.as_deref(), seq, &chain.prev)? == Some(true);
            if !links {
                tracing::error!(
                    seq,
                    "the newest audit record does not verify: it was planted or rewritten while the broker was stopped; the broker is not ready and signs no checkpoint until the trail is looked at (`warrant audit verify`)"
                );
                chain.tainted = Some(seq);
            }
        }
        let (tx, rx) = mpsc::channel(4096);
        let thread = std::thread::Builder::new()
            .name("warrant-store-writer".into())
            .spawn(move || run(conn, rx, chain, max_batch.max(1), linker, on_commit))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` (any number of statements) in its own savepoint in the next
    /// batch, and returns its result once durable.
    pub(crate) async fn submit<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.enqueue(true, f).await
    }

    /// Like [`submit`](Self::submit) for a job of exactly one statement, which
    /// needs no savepoint of its own.
    pub(crate) async fn submit_single<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.enqueue(false, f).await
    }

    async fn enqueue<T, F>(&self, isolated: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Job {
            isolated,
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
        // The std mutex guards only the join handle, taken once; never held across await.
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// The longest the writer waits to gather a batch.
const MAX_GATHER: Duration = Duration::from_millis(1);

fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    // Cached: these run once per job, and parsing them each time costs more than running them.
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute([]))
        .map(drop)
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    mut chain: ChainState,
    max_batch: usize,
    linker: Option<std::sync::Arc<dyn ChainLinker>>,
    on_commit: Box<dyn Fn() + Send>,
) {
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
        // Take everything that queued up while the last commit was syncing, and
        // wait (briefly) for as many as the last batch held: see the module docs.
        let want = last_batch.min(max_batch);
        let deadline = Instant::now() + last_commit.min(MAX_GATHER);
        while shutdown.is_none() && jobs.len() < max_batch {
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
        let before = chain;
        let started = Instant::now();
        let result = commit_batch(&conn, &mut jobs, &mut chain, linker.as_deref());
        last_commit = started.elapsed();
        last_batch = jobs.len();
        if result.is_ok() {
            on_commit();
        } else {
            let _ = conn.execute_batch("ROLLBACK");
            // Re-read the head rather than trust the in-memory copy.
            chain = ChainState::load(&conn).unwrap_or(before);
            chain.tainted = before.tainted;
            tracing::error!(error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(), jobs = jobs.len(), "store batch failed; nothing in it was committed");
        }
        for job in jobs {
            job.finish(result.clone());
        }
    }
    // Refuse anything queued after shutdown was asked for.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Job(j) => j.finish(Err(StoreError::Closed)),
            Msg::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
    drop(conn);
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

fn commit_batch(
    conn: &Connection,
    jobs: &mut [Box<dyn WriteJob>],
    chain: &mut ChainState,
    linker: Option<&dyn ChainLinker>,
) -> Result<(), StoreError> {
    exec(conn, "BEGIN IMMEDIATE")?;
    for job in jobs.iter_mut() {
        let snapshot = *chain;
        if job.isolated() {
            exec(conn, "SAVEPOINT job")?;
            if job.apply(&mut WriteCtx {
                conn,
                chain,
                linker,
            }) {
                exec(conn, "RELEASE job")?;
            } else {
                exec(conn, "ROLLBACK TO job")?;
                exec(conn, "RELEASE job")?;
                *chain = snapshot;
            }
        } else if !job.apply(&mut WriteCtx {
            conn,
            chain,
            linker,
        }) {
            // INVARIANT (single statement): a failed statement changed nothing.
            *chain = snapshot;
        }
    }
    exec(conn, "COMMIT").map_err(|e| match e {
        StoreError::Unavailable(m) => StoreError::AuditUnavailable(format!("commit failed: {m}")),
        other => other,
    })
}
