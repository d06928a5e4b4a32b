//! The audit query index: derived, rebuildable, off the durable path.
//!
//! Durable audit writes insert into `audit_log` by primary key only: any
//! secondary index would dirty extra pages in every group commit and lengthen
//! the fsync every writer waits for (measured: four indexes cut group-commit
//! throughput by two thirds). Instead an indexer thread reads committed records
//! and files them under their keys in a separate database file, thousands of
//! records per transaction and sorted by key, so index pages are written a few
//! times per batch instead of once per record.
//!
//! Keys: `a:<agent>`, `x:<txn>`, `t:<task>`, and `e:<prefix>` for every dotted
//! prefix of the event (`e:admin`, `e:admin.agent`, `e:admin.agent.create`), so
//! an event filter is one exact key, read newest-first.
//!
//! The index records how far it has got (`indexed_upto`). A query reads that
//! watermark and the index in one snapshot, uses the index up to it and scans
//! the log above it, so results are complete however far behind the indexer
//! is. The index file uses `synchronous=NORMAL` in WAL mode: a crash may lose
//! its last transactions but never corrupts it, and lost work is redone. It is
//! rebuilt from the log when missing, from another index version, or ahead of
//! the log (a restored database).
//!
//! INVARIANT (the log is the truth): nothing reads the index to decide what the
//! trail says; `audit verify` reads only the log, and rows found through the
//! index are re-filtered on the log's own columns.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::StoreError;

/// Bump when the key scheme changes; a different stored version forces a rebuild.
const INDEX_VERSION: i64 = 2;

/// Records indexed per transaction at most.
const CHUNK: i64 = 16_384;

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("audit index: {e}"))
}

/// The keys a record is filed under.
pub(crate) fn keys(
    agent: Option<&str>,
    event: &str,
    txn: Option<&str>,
    task: Option<&str>,
    user: Option<&str>,
    out: &mut Vec<String>,
) {
    if let Some(a) = agent {
        out.push(format!("a:{a}"));
    }
    if let Some(u) = user {
        out.push(format!("u:{u}"));
    }
    for (i, _) in event.match_indices('.') {
        out.push(format!("e:{}", &event[..i]));
    }
    out.push(format!("e:{event}"));
    if let Some(x) = txn {
        out.push(format!("x:{x}"));
    }
    if let Some(t) = task {
        out.push(format!("t:{t}"));
    }
}

/// The index file of a log database.
pub(crate) fn index_path(log: &Path) -> PathBuf {
    let stem = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "warrant".into());
    log.with_file_name(format!("{stem}-audit-index.db"))
}

fn open_index(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open(path).map_err(db_err)?;
    super::configure_statements(&c)?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS audit_index (key TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (key, seq)) STRICT, WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS index_state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, indexed_upto INTEGER NOT NULL) STRICT;",
    )
    .map_err(db_err)?;
    Ok(c)
}

/// Makes the index consistent with a log whose head is `head`, rebuilding if needed.
fn reconcile(idx: &Connection, head: i64) -> Result<(), StoreError> {
    let state: Option<(i64, i64)> = idx
        .query_row(
            "SELECT version, indexed_upto FROM index_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    let rebuild = match state {
        None => true,
        Some((v, _)) if v != INDEX_VERSION => true,
        Some((_, upto)) => upto > head,
    };
    if rebuild {
        if state.is_some() {
            tracing::warn!(
                head,
                "the audit index does not match the log; rebuilding it from the log"
            );
        }
        idx.execute_batch("BEGIN IMMEDIATE; DELETE FROM audit_index; DELETE FROM index_state;")
            .map_err(db_err)?;
        idx.execute(
            "INSERT INTO index_state (id, version, indexed_upto) VALUES (1, ?1, 0)",
            [INDEX_VERSION],
        )
        .map_err(db_err)?;
        idx.execute_batch("COMMIT").map_err(db_err)?;
    }
    Ok(())
}

/// Indexes up to `CHUNK` records above the watermark; returns how many.
fn index_chunk(
    log: &Connection,
    idx: &Connection,
    keys_buf: &mut Vec<(String, i64)>,
) -> Result<i64, StoreError> {
    let upto: i64 = idx
        .prepare_cached("SELECT indexed_upto FROM index_state WHERE id = 1")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(db_err)?;
    let mut st = log
        .prepare_cached("SELECT seq, agent, event, txn, task, user FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(db_err)?;
    let mut rows = st.query(params![upto, CHUNK]).map_err(db_err)?;
    keys_buf.clear();
    let mut last = upto;
    let mut count = 0;
    let mut ks = Vec::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let seq: i64 = r.get(0).map_err(db_err)?;
        let agent: Option<String> = r.get(1).map_err(db_err)?;
        let event: String = r.get(2).map_err(db_err)?;
        let txn: Option<String> = r.get(3).map_err(db_err)?;
        let task: Option<String> = r.get(4).map_err(db_err)?;
        let user: Option<String> = r.get(5).map_err(db_err)?;
        ks.clear();
        keys(
            agent.as_deref(),
            &event,
            txn.as_deref(),
            task.as_deref(),
            user.as_deref(),
            &mut ks,
        );
        keys_buf.extend(ks.drain(..).map(|k| (k, seq)));
        last = seq;
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    // Sorted, the inserts walk the B-tree in order and touch each page once.
    keys_buf.sort_unstable();
    idx.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    {
        let mut ins = idx
            .prepare_cached("INSERT OR IGNORE INTO audit_index (key, seq) VALUES (?1, ?2)")
            .map_err(db_err)?;
        for (k, seq) in keys_buf.iter() {
            ins.execute(params![k, seq]).map_err(db_err)?;
        }
    }
    idx.prepare_cached("UPDATE index_state SET indexed_upto = ?1 WHERE id = 1")
        .and_then(|mut st| st.execute([last]))
        .map_err(db_err)?;
    idx.execute_batch("COMMIT").map_err(db_err)?;
    Ok(count)
}

enum Msg {
    Head,
    Flush(mpsc::Sender<()>),
    Stop,
}

/// The indexer thread's handle.
pub(crate) struct Indexer {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Indexer {
    /// Opens (and if needed rebuilds) the index of `log_path` and starts the thread.
    pub(crate) fn start(log_path: &Path, head: i64) -> Result<Self, StoreError> {
        let idx_path = index_path(log_path);
        let idx = open_index(&idx_path)?;
        reconcile(&idx, head)?;
        let log = Connection::open_with_flags(
            log_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        super::configure_statements(&log)?;
        log.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
            .map_err(db_err)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("warrant-audit-indexer".into())
            .spawn(move || run(log, idx, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the audit indexer: {e}")))?;
        // Catch up with whatever the log holds already.
        let _ = tx.send(Msg::Head);
        Ok(Self {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Tells the indexer the log grew.
    pub(crate) fn notify(&self) {
        let _ = self.tx.send(Msg::Head);
    }

    /// Waits until everything committed so far is indexed (tests and benchmarks).
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(60));
        }
    }

    /// Stops the thread after it has caught up.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        // The std mutex guards only the join handle, taken once.
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

fn catch_up(log: &Connection, idx: &Connection, buf: &mut Vec<(String, i64)>) {
    loop {
        match index_chunk(log, idx, buf) {
            Ok(n) if n == CHUNK => continue,
            Ok(_) => return,
            Err(e) => {
                // Queries stay complete (they scan above the watermark); retry on the next notice.
                let _ = idx.execute_batch("ROLLBACK");
                tracing::warn!(error = %e, "audit indexing failed; will retry");
                return;
            }
        }
    }
}

/// The shortest time between two indexing runs while records keep arriving:
/// larger runs touch each index page fewer times per record.
const MIN_INTERVAL: Duration = Duration::from_millis(20);

fn run(log: Connection, idx: Connection, rx: mpsc::Receiver<Msg>) {
    let mut buf = Vec::new();
    let mut last_run = std::time::Instant::now() - MIN_INTERVAL;
    while let Ok(first) = rx.recv() {
        // Let records accumulate for a moment unless someone is waiting on us.
        if matches!(first, Msg::Head) {
            let wait = MIN_INTERVAL.saturating_sub(last_run.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        // Coalesce every notice that queued while we were busy or waiting.
        let mut flushes = Vec::new();
        let mut stop = false;
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Head => {}
                Msg::Flush(done) => flushes.push(done),
                Msg::Stop => stop = true,
            }
        }
        catch_up(&log, &idx, &mut buf);
        last_run = std::time::Instant::now();
        for done in flushes {
            let _ = done.send(());
        }
        if stop {
            break;
        }
    }
}

/// The watermark, read through a reader connection that has the index attached as `idx`.
pub(crate) fn watermark(c: &Connection) -> Result<i64, StoreError> {
    c.query_row(
        "SELECT indexed_upto FROM idx.index_state WHERE id = 1",
        [],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_err)
    .map(|w| w.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::keys;

    #[test]
    fn keys_cover_every_event_prefix() {
        let mut out = Vec::new();
        keys(
            Some("triage"),
            "admin.agent.create",
            Some("txn_1"),
            None,
            Some("user:alice"),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "a:triage",
                "u:user:alice",
                "e:admin",
                "e:admin.agent",
                "e:admin.agent.create",
                "x:txn_1"
            ]
        );
        out.clear();
        keys(None, "broker", None, Some("tsk_9"), None, &mut out);
        assert_eq!(out, vec!["e:broker", "t:tsk_9"]);
    }
}
