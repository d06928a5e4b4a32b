//! Following what other brokers commit to a shared store.
//!
//! With PostgreSQL, several brokers share one store, and each keeps some of
//! it in memory (ARCHITECTURE.md, "State a broker holds in memory"). The
//! store's change feed delivers every committed change, in commit order;
//! this task applies each to this broker's memory:
//!
//! | change | applied as |
//! |---|---|
//! | task revoked | added to the revoked set (checked on every use of a task token) |
//! | instance blocked | added to the blocked set |
//! | blocks lifted (agent re-enabled or deleted) | blocked set re-read |
//! | agent created, changed or deleted | the store's agent snapshot dropped (by the store itself) |
//! | signing key added | key set re-read (a new key signs only after [`KEY_ACTIVATION_DELAY`]) |
//! | secret rotated or deleted | opened secrets dropped |
//! | tool pin changed | the MCP server's tools listed and pinned again |
//! | another broker reloaded | this broker reloads its own files (not announced again) |
//! | resync (changes were missed) | all of the above re-read |
//!
//! Revocations only ever add: nothing the feed says un-revokes a task.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::time::Timestamp;
use warrant_store::{Change, ChangeKind};

use crate::http::live::{ReloadFrom, reload_all};
use crate::state::AppState;

/// With a shared store, the least time between a key being stored and it
/// signing: every broker hears of it first (the feed takes milliseconds,
/// its catch-up read half a second).
pub(crate) const KEY_ACTIVATION_DELAY: Duration = Duration::from_secs(5);

/// Applies `feed` to `state` until `shutdown`.
pub(crate) fn spawn(
    state: AppState,
    mut feed: UnboundedReceiver<Change>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut report = tokio::time::interval(REPORT_EVERY);
        let (mut position, mut lag) = (0, 0);
        loop {
            tokio::select! {
                c = feed.recv() => match c {
                    Some(c) => {
                        position = c.version;
                        lag = (Timestamp::now().as_millis() - c.time.as_millis()).max(0);
                        state.metrics.feed_lag.observe(lag as f64 / 1000.0);
                        state
                            .metrics
                            .feed_position
                            .set(i64::try_from(position).unwrap_or(i64::MAX));
                        apply(&state, c).await;
                        state.store.feed_applied(position);
                    }
                    None => break,
                },
                _ = report.tick() => heartbeat(&state, position, lag).await,
                () = shutdown.cancelled() => break,
            }
        }
        if let Err(e) = state.store.leave(&state.broker_id).await {
            tracing::warn!(error = %e, "could not remove this broker's report from the shared store");
        }
    })
}

/// How often a broker reports itself to the others.
const REPORT_EVERY: Duration = Duration::from_secs(2);

async fn heartbeat(state: &AppState, position: u64, lag: i64) {
    let connected = state.store.feed_connected();
    state.metrics.feed_connected.set(i64::from(connected));
    let me = warrant_core::api::ClusterMember {
        broker: state.broker_id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        api_addr: state.live.api_addr.to_string(),
        policy_digest: state.policy.current().policies.digest().to_owned(),
        config_digest: state.live.config.load().digest.clone(),
        feed_position: position,
        feed_lag_ms: lag,
        feed_connected: connected,
        started_at: state.started_at,
        seen_at: Timestamp::now(),
    };
    if let Err(e) = state.store.heartbeat(&me).await {
        tracing::debug!(error = %e, "could not report this broker to the shared store");
    }
}

/// Applies one change. What takes long (listing MCP servers, a reload) runs
/// beside the feed, so the revocations behind it are applied at once.
async fn apply(state: &AppState, change: Change) {
    let key = change.key.as_str();
    match change.kind {
        ChangeKind::TaskRevoked => {
            state.tokens.note_revoked(key);
        }
        ChangeKind::InstanceBlocked => state.tokens.note_blocked(key),
        ChangeKind::BlocksLifted => {
            if let Err(e) = state.tokens.reload_blocks().await {
                tracing::error!(error = %e, "could not re-read instance blocks after another broker lifted some");
            }
        }
        ChangeKind::Agent => {}
        ChangeKind::SigningKey => reload_keys(state).await,
        ChangeKind::Secret => state.secrets.forget_all(),
        ChangeKind::ToolPin => {
            let mcp = state.mcp.clone();
            let server = key.to_owned();
            tokio::spawn(async move { mcp.discover(&[server]).await });
        }
        ChangeKind::Reload => {
            if key.split(' ').next() != Some(&*state.broker_id) {
                let (state, note) = (state.clone(), key.to_owned());
                tokio::spawn(async move { follow_reload(&state, &note).await });
            }
        }
        ChangeKind::Resync => {
            if let Err(e) = state.tokens.reload_revocations().await {
                tracing::error!(error = %e, "could not re-read revocations after missing changes");
            }
            reload_keys(state).await;
            state.secrets.forget_all();
            let mcp = state.mcp.clone();
            tokio::spawn(async move { mcp.discover_all().await });
        }
    }
}

async fn reload_keys(state: &AppState) {
    if let Err(e) = state.keys.reload().await {
        tracing::error!(error = %e, "could not re-read the signing keys after another broker added one");
    }
}

async fn follow_reload(state: &AppState, note: &str) {
    let by = note.split(' ').next().unwrap_or_default().to_owned();
    tracing::info!(broker = %by, "another broker sharing the store reloaded: reloading this one's configuration and policies");
    let event = |kind: Kind| {
        AuditEvent::new(kind, Outcome::Allow)
            .actor(format!("broker:{by}"))
            .protocol("feed")
    };
    if let Err(e) = reload_all(
        state,
        event(Kind::ConfigReload).action("config.reload"),
        event(Kind::PolicyReload),
        ReloadFrom::Peer,
    )
    .await
    {
        tracing::error!(error = %e.message, "reloading after another broker did failed; this broker keeps its configuration and policies, which may now differ from the others'");
    }
}
