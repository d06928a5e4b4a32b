//! The change feed: what every broker sharing the store must follow.
//!
//! A thread per broker holds a connection that `LISTEN`s on the feed's
//! channel. A commit that carried changes notifies it; it then reads every
//! change past the last it delivered, in version order, and hands them to
//! the broker. Notifications are lost while a connection is down, so it
//! also reads every [`CATCH_UP`], and once at each (re)connection, after
//! `LISTEN`: nothing committed meanwhile is missed. Versions are numbered in
//! commit order under the chain head's lock, so delivering in version order,
//! each once, never applies an older change after a newer one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::mpsc;
use warrant_core::time::Timestamp;

use super::{CHANNEL, Connector, db_err};
use crate::{Change, ChangeKind, StoreError};

/// How often the feed is read even without a notification.
pub(crate) const CATCH_UP: Duration = Duration::from_millis(500);

/// How long a change is kept for followers that fell behind.
pub(crate) const KEEP: Duration = Duration::from_secs(3600);

/// What the follower thread shares with the store.
#[derive(Debug, Default)]
pub(crate) struct FeedState {
    /// The last version delivered.
    pub(crate) position: AtomicU64,
    /// The last version the broker says it applied to its memory (once it
    /// takes the feed): until it catches up with `position`, a revocation
    /// may sit delivered but not yet applied, so the feed is not fresh.
    pub(crate) applied: AtomicU64,
    /// Whether the broker took the feed (and so acknowledges what it applies).
    pub(crate) followed: AtomicBool,
    /// Whether the listening connection is up.
    pub(crate) connected: AtomicBool,
    /// Milliseconds between the last change's commit and its delivery.
    pub(crate) last_lag_ms: AtomicI64,
    /// When the feed was last read in full (ms since the epoch).
    pub(crate) last_read_ms: AtomicI64,
    pub(crate) stop: AtomicBool,
}

/// Runs the follower until `state.stop`; delivers to `out` (and to
/// `on_change`, the store's own caches, first).
pub(crate) fn run(
    connector: Connector,
    state: Arc<FeedState>,
    out: mpsc::UnboundedSender<Change>,
    on_change: Box<dyn Fn(&Change) + Send>,
) {
    let mut backoff = Duration::from_millis(50);
    while !state.stop.load(Ordering::Acquire) {
        let result = connector
            .connect()
            .and_then(|client| follow(client, &state, &out, on_change.as_ref()));
        state.connected.store(false, Ordering::Release);
        if state.stop.load(Ordering::Acquire) {
            break;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "the change feed lost its connection; reconnecting");
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn follow(
    mut client: Client,
    state: &FeedState,
    out: &mpsc::UnboundedSender<Change>,
    on_change: &(dyn Fn(&Change) + Send),
) -> Result<(), StoreError> {
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(db_err)?;
    // Connected counts only once what was committed while this broker was
    // away has been read: a read from before the connection dropped must
    // not make the feed look fresh (it could be under FEED_STALE old, and
    // miss a revocation made meanwhile).
    catch_up(&mut client, state, out, on_change)?;
    state.connected.store(true, Ordering::Release);
    let mut last_read = Instant::now();
    while !state.stop.load(Ordering::Acquire) {
        let woken = {
            let mut n = client.notifications();
            let first = n
                .timeout_iter(Duration::from_millis(100))
                .next()
                .map_err(db_err)?
                .is_some();
            // Several commits may have notified: one read covers them all.
            let mut rest = n.iter();
            while rest.next().map_err(db_err)?.is_some() {}
            first
        };
        if woken || last_read.elapsed() >= CATCH_UP {
            catch_up(&mut client, state, out, on_change)?;
            last_read = Instant::now();
        }
    }
    Ok(())
}

fn catch_up(
    client: &mut Client,
    state: &FeedState,
    out: &mpsc::UnboundedSender<Change>,
    on_change: &(dyn Fn(&Change) + Send),
) -> Result<(), StoreError> {
    let from = state.position.load(Ordering::Acquire);
    let from_sql = i64::try_from(from).unwrap_or(i64::MAX);
    // The counter never goes back: if it did, the next change would reuse a
    // version this broker has read, and be skipped. Stop vouching instead.
    let head: i64 = client
        .query_one("SELECT changes FROM audit_head WHERE id = 1", &[])
        .map_err(db_err)?
        .get(0);
    if head < from_sql {
        return Err(StoreError::AuditUnavailable(format!(
            "the change feed's counter went back from {from} to {head}: this broker stops vouching for task tokens until someone finds out why"
        )));
    }
    let rows = client
        .query(
            // Only versions the chain head gave out (a row planted past it
            // must not move the position beyond every later change), and
            // keys of a sane length (a broker writes names and ids).
            "SELECT version, kind, CASE WHEN length(key) <= 1024 THEN key END, time FROM changes \
             WHERE version > $1 AND version <= (SELECT changes FROM audit_head WHERE id = 1) \
             ORDER BY version LIMIT 10000",
            &[&from_sql],
        )
        .map_err(db_err)?;
    let mut expected = from + 1;
    for row in rows {
        let version = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let kind: String = row.get(1);
        let key: Option<String> = row.get(2);
        let change = if version != expected || key.is_none() {
            // Changes between were pruned before this broker read them, or
            // this one is not one a broker wrote: everything is re-read.
            Change {
                version,
                kind: ChangeKind::Resync,
                key: String::new(),
                time: Timestamp::now(),
            }
        } else {
            Change {
                version,
                kind: ChangeKind::parse(&kind).unwrap_or(ChangeKind::Resync),
                key: key.unwrap_or_default(),
                time: Timestamp::from_millis(row.get(3)),
            }
        };
        let lag = Timestamp::now().as_millis() - change.time.as_millis();
        on_change(&change);
        if change.kind == ChangeKind::Resync {
            tracing::warn!(
                from,
                to = version,
                "this broker missed changes (it was cut off for longer than they are kept); everything it holds in memory is re-read"
            );
        }
        state.last_lag_ms.store(lag.max(0), Ordering::Release);
        state.position.store(version, Ordering::Release);
        let _ = out.send(change);
        expected = version + 1;
    }
    state
        .last_read_ms
        .store(Timestamp::now().as_millis(), Ordering::Release);
    Ok(())
}
