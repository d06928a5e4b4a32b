//! `GET /admin/v1/audit/stream`: audit records as they are committed, as
//! server-sent events (`event: record`, `id: <seq>`, the record as JSON).
//!
//! The stream starts at the trail's end (or after `Last-Event-ID`, or
//! `?after=`), polls the committed trail, and ends after [`LIFE`]: a browser's
//! `EventSource` reconnects by itself with `Last-Event-ID`, so nothing is
//! missed and every reconnection is authenticated again. Meanwhile the
//! caller's standing is checked every [`RECHECK`]: a revoked token, an ended
//! or idle session ends the stream.
//!
//! A broker serves [`MAX_AUDIT_STREAMS`] at once, [`MAX_AUDIT_STREAMS_EACH`]
//! per caller. A stream holds its place for [`LIFE`] and a little more,
//! even when its reader stopped reading (a stalled connection is never
//! polled, so it could not give its place back by itself).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use warrant_core::audit::AuditRecord;

use crate::http::auth::{Reader, Recheck, still_valid};
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::state::{MAX_AUDIT_STREAMS, MAX_AUDIT_STREAMS_EACH};

/// How long one stream lasts before the client must reconnect.
const LIFE: Duration = Duration::from_secs(30);
/// How often the committed trail is read while nothing new came.
const POLL: Duration = Duration::from_millis(200);
/// Records read at a time.
const BATCH: u32 = 200;
/// How often the caller's standing is checked again.
const RECHECK: Duration = Duration::from_secs(2);
/// How long past [`LIFE`] a stream's place stays taken.
const GRACE: Duration = Duration::from_secs(5);

/// A stream's place among those a broker serves; given back when the
/// stream ends, or by time.
struct Place {
    state: AppState,
    id: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.state.console.streams.lock().remove(&self.id);
    }
}

/// Takes a place for `who`, or says why not.
fn take_place(state: &AppState, who: &str) -> Result<Place, ApiError> {
    let now = Instant::now();
    let mut open = state.console.streams.lock();
    open.retain(|_, (_, since)| now.duration_since(*since) < LIFE + GRACE);
    if open.values().filter(|(w, _)| w == who).count() >= MAX_AUDIT_STREAMS_EACH {
        return Err(ApiError::unavailable(format!(
            "you have {MAX_AUDIT_STREAMS_EACH} live audit streams open, the most one caller may; close one"
        )));
    }
    if open.len() >= MAX_AUDIT_STREAMS {
        return Err(ApiError::unavailable(format!(
            "{MAX_AUDIT_STREAMS} live audit streams are open, the most this broker serves; try again shortly"
        )));
    }
    let id = state
        .console
        .next_stream
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    open.insert(id, (who.to_owned(), now));
    drop(open);
    Ok(Place {
        state: state.clone(),
        id,
    })
}

/// Which records a stream carries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamFilter {
    agent: Option<String>,
    user: Option<String>,
    /// An event kind or its parent (`mcp` matches `mcp.tool.call`).
    event: Option<String>,
    decision: Option<String>,
    task: Option<String>,
    txn: Option<String>,
    /// Start after this sequence number (else at the trail's end).
    after: Option<u64>,
}

impl StreamFilter {
    fn check(mut self) -> Result<Self, ApiError> {
        for v in [
            &self.agent,
            &self.user,
            &self.event,
            &self.decision,
            &self.task,
            &self.txn,
        ]
        .into_iter()
        .flatten()
        {
            if v.len() > 512 || v.chars().any(char::is_control) {
                return Err(ApiError::invalid("a filter value is too long or not text"));
            }
        }
        if let Some(d) = &self.decision
            && !["allow", "deny", "pending", "error"].contains(&d.as_str())
        {
            return Err(ApiError::invalid(format!(
                "decision `{}` is none of allow, deny, pending, error",
                d.escape_debug()
            )));
        }
        // Users are recorded as `user:<namespace>/<subject>`; the id without
        // the prefix is accepted, as by `GET /audit`.
        self.user = self.user.map(|u| {
            if u.starts_with("user:") || u.starts_with("spiffe://") {
                u
            } else {
                format!("user:{u}")
            }
        });
        Ok(self)
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let e = &r.event;
        let is = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        is(&self.agent, &e.agent)
            && is(&self.user, &e.user)
            && is(&self.task, &e.task)
            && is(&self.txn, &e.txn)
            && self
                .decision
                .as_ref()
                .is_none_or(|d| d == e.decision.as_str())
            && self.event.as_ref().is_none_or(|k| {
                e.event == *k
                    || e.event
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

struct Follow {
    state: AppState,
    filter: StreamFilter,
    position: u64,
    queue: VecDeque<Event>,
    started: Instant,
    checked: Instant,
    recheck: Recheck,
    _place: Place,
}

impl Follow {
    /// The next event, or the stream's end (its life is over, or the
    /// caller may no longer read).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.started.elapsed() >= LIFE {
                return None;
            }
            if self.checked.elapsed() >= RECHECK {
                if !still_valid(&self.state, &self.recheck).await {
                    return None;
                }
                self.checked = Instant::now();
            }
            match self.state.store.audit_after(self.position, BATCH).await {
                Ok(rows) if !rows.is_empty() => self.take(rows),
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!(error = %e, "the live audit stream cannot read the trail");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Queues the records of `rows` the filter lets through.
    fn take(&mut self, rows: Vec<warrant_core::audit::StoredRow>) {
        for row in rows {
            self.position = self.position.max(row.seq);
            let Ok(record) = row.to_record() else {
                continue;
            };
            if !self.filter.matches(&record) {
                continue;
            }
            if let Ok(ev) = Event::default()
                .event("record")
                .id(record.seq.to_string())
                .json_data(&record)
            {
                self.queue.push_back(ev);
            }
        }
        // Let the client know how far it has read even when nothing
        // matched, so a reconnection does not read it again.
        if self.queue.is_empty() {
            self.queue
                .push_back(Event::default().id(self.position.to_string()).comment(""));
        }
    }
}

pub(crate) async fn audit_stream(
    State(state): State<AppState>,
    Reader(caller): Reader,
    headers: HeaderMap,
    q: Result<Query<StreamFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let filter = filter.check()?;
    // One caller: one admin token, however many sessions it made and
    // however it came in; one person; one local user.
    let place = take_place(&state, &caller.actor)?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let position = match resumed.or(filter.after) {
        Some(p) => p,
        None => state.store.audit_head().await?.map_or(0, |(seq, _)| seq),
    };
    // Reconnect quickly: the stream ends every LIFE by design.
    let hello = Event::default()
        .retry(Duration::from_millis(500))
        .comment("warrant audit stream");
    let follow = Follow {
        state,
        filter,
        position,
        queue: VecDeque::from([hello]),
        started: Instant::now(),
        checked: Instant::now(),
        recheck: caller.recheck,
        _place: place,
    };
    let events = futures_util::stream::unfold(follow, |f| f.next());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warrant_core::audit::{AuditEvent, Kind, Outcome};

    fn record(kind: Kind, outcome: Outcome, agent: &str) -> AuditRecord {
        let mut event = AuditEvent::new(kind, outcome);
        event.agent = Some(agent.into());
        event.user = Some("user:dev/alice".into());
        AuditRecord {
            seq: 1,
            time: warrant_core::time::Timestamp::from_millis(0),
            event,
            prev_hash: warrant_core::audit::ChainHash::GENESIS,
            hash: warrant_core::audit::ChainHash::GENESIS,
            keyed: true,
        }
    }

    #[test]
    fn filters_match_as_the_list_does() {
        let r = record(Kind::McpToolCall, Outcome::Deny, "triage");
        let f = |q: &str| {
            let Query(f): Query<StreamFilter> =
                Query::try_from_uri(&format!("http://x/?{q}").parse().unwrap()).unwrap();
            f.check().unwrap()
        };
        assert!(f("").matches(&r));
        assert!(f("event=mcp").matches(&r));
        assert!(f("event=mcp.tool.call").matches(&r));
        assert!(!f("event=mcp.tool").matches(&record(Kind::McpToolsList, Outcome::Deny, "x")));
        assert!(!f("event=mc").matches(&r));
        assert!(f("decision=deny&agent=triage").matches(&r));
        assert!(!f("decision=allow").matches(&r));
        assert!(f("user=dev/alice").matches(&r));
        assert!(!f("user=dev/bob").matches(&r));
        assert!(!f("task=t1").matches(&r));
    }

    #[test]
    fn bad_filters_are_refused() {
        let f = |q: &str| {
            Query::<StreamFilter>::try_from_uri(&format!("http://x/?{q}").parse().unwrap())
                .map_err(|_| ())
                .and_then(|Query(f)| f.check().map_err(|_| ()))
        };
        assert!(f("decision=maybe").is_err());
        assert!(f("colour=red").is_err());
        assert!(f("agent=a%0Ab").is_err());
        assert!(f("after=-1").is_err());
    }
}
