//! Refusals of callers who did not authenticate, recorded in aggregate.
//!
//! A refusal of a caller warrant could not identify (no token, a forged or
//! expired one, a malformed request, an unknown route) costs that caller
//! nothing; if each were one durable record, anyone who can reach a
//! listener could fill the broker's disk and keep its writer busy. So such
//! refusals have a budget per [`WINDOW`]: the first [`PER_SOURCE`] of each
//! source address (and [`GLOBAL`] in all) are recorded one by one, durable
//! before they are answered, as before; beyond it they are gathered: one
//! record per (source address, event, reason code) and window, holding the
//! first such refusal in full and the count, first and last time, and up to
//! [`MAX_RESOURCES`] distinct resources asked for; past [`MAX_KEYS`] keys in
//! a window, the rest are counted in one overflow record. An investigator
//! sees who was refused, why, how often and for what; the trail grows by at
//! most `GLOBAL + MAX_KEYS + 1` records per window whatever the load.
//!
//! Refusals of authenticated callers ([`RefusalLog::admit_known`]) have a
//! larger budget, per instance: the first [`PER_INSTANCE`] per window are
//! durable before they are answered, one by one; past that, an agent
//! hammering a denied resource is gathered the same way (keyed by its
//! instance), so a compromised agent cannot fill the disk with denials
//! either, and its flood is still on record with its count.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warrant_core::audit::{AuditEvent, Kind};
use warrant_core::time::Timestamp;
use warrant_store::Store;

use crate::metrics::Metrics;

/// How long refusals are gathered before their records are written.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Refusals of one source address recorded one by one per window.
pub const PER_SOURCE: u32 = 16;
/// Refusals recorded one by one per window, in all.
pub const GLOBAL: u32 = 64;
/// Refusals of one authenticated instance recorded one by one per window.
pub const PER_INSTANCE: u32 = 64;
/// The most distinct (source, event, reason) keys recorded per window.
pub const MAX_KEYS: usize = 64;
/// The most distinct resources listed per key.
pub const MAX_RESOURCES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: String,
    event: String,
    code: String,
}

#[derive(Debug)]
struct Entry {
    sample: AuditEvent,
    count: u64,
    first: Timestamp,
    last: Timestamp,
    resources: Vec<String>,
}

#[derive(Debug, Default)]
struct Window {
    /// Refusals recorded one by one this window, per source and in all.
    individual: HashMap<String, u32>,
    individual_total: u32,
    /// Refusals of authenticated instances recorded one by one.
    known: HashMap<String, u32>,
    entries: HashMap<Key, Entry>,
    overflow: u64,
    overflow_sources: Vec<String>,
}

/// The aggregator.
pub struct RefusalLog {
    // A std mutex: held only to update a map entry, never across an await.
    window: Mutex<Window>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RefusalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalLog").finish_non_exhaustive()
    }
}

/// The address part of `ip:port` (or `[v6]:port`), else the whole text.
fn address(source: Option<&str>) -> String {
    let s = source.unwrap_or("-");
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => s.to_owned(),
    }
}

/// The code of the first reason (`invalid_token: ...` gives `invalid_token`).
fn code(e: &AuditEvent) -> String {
    let r = e.reasons.first().map_or("", String::as_str);
    let c = r.split(':').next().unwrap_or("").trim();
    if c.len() <= 64 && !c.contains(' ') && !c.is_empty() {
        c.to_owned()
    } else {
        // A sentence, not a code: its first words.
        r.chars().take(48).collect()
    }
}

impl RefusalLog {
    /// Starts the aggregator and its writer (inside a tokio runtime).
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<Self> {
        let log = Arc::new(Self {
            window: Mutex::new(Window::default()),
            store,
            metrics,
        });
        let weak = Arc::downgrade(&log);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WINDOW);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(log) = weak.upgrade() else { break };
                log.flush().await;
            }
        });
        log
    }

    /// Takes a refusal of an unauthenticated caller: within this window's
    /// budget it is handed back, for the caller to record durably now;
    /// beyond it, it is gathered into the window's aggregate records and
    /// `None` is returned.
    pub fn admit(&self, event: AuditEvent) -> Option<AuditEvent> {
        let source = address(event.source.as_deref());
        {
            let mut w = self.window.lock();
            let n = w.individual.get(&source).copied().unwrap_or(0);
            let tracked = w.individual.len() < 4096 || n > 0;
            if n < PER_SOURCE && w.individual_total < GLOBAL && tracked {
                w.individual.insert(source, n + 1);
                w.individual_total += 1;
                return Some(event);
            }
        }
        self.note(event);
        None
    }

    /// Takes a refusal (or a record that changes nothing) of any caller:
    /// one whose instance, actor or agent is known is budgeted as that
    /// caller, any other as its source address ([`admit`](Self::admit)).
    /// Within the budget it is handed back, for the caller to record durably
    /// now; beyond it, it is gathered and `None` is returned.
    pub fn admit_known(&self, event: AuditEvent) -> Option<AuditEvent> {
        let who = match (&event.instance, &event.actor, &event.agent) {
            (Some(i), _, _) => format!("instance:{i}"),
            (None, Some(a), _) => format!("actor:{a}"),
            (None, None, Some(a)) => format!("agent:{a}"),
            (None, None, None) => return self.admit(event),
        };
        {
            let mut w = self.window.lock();
            let n = w.known.get(&who).copied().unwrap_or(0);
            if n < PER_INSTANCE && (w.known.len() < 4096 || n > 0) {
                w.known.insert(who, n + 1);
                return Some(event);
            }
        }
        self.gather(who, event);
        None
    }

    /// Gathers a refusal of an unauthenticated caller into its window's
    /// aggregate record.
    pub fn note(&self, event: AuditEvent) {
        let source = address(event.source.as_deref());
        self.gather(source, event);
    }

    fn gather(&self, source: String, event: AuditEvent) {
        let now = Timestamp::now();
        let key = Key {
            source,
            event: event.event.chars().take(64).collect(),
            code: code(&event),
        };
        let mut w = self.window.lock();
        let full = w.entries.len() >= MAX_KEYS;
        match w.entries.get_mut(&key) {
            Some(e) => {
                e.count += 1;
                e.last = now;
                if let Some(r) = &event.resource
                    && e.resources.len() < MAX_RESOURCES
                    && !e.resources.contains(r)
                {
                    e.resources.push(r.chars().take(256).collect());
                }
            }
            None if full => {
                w.overflow += 1;
                if w.overflow_sources.len() < MAX_RESOURCES
                    && !w.overflow_sources.contains(&key.source)
                {
                    w.overflow_sources.push(key.source);
                }
            }
            None => {
                let mut sample = event;
                sample.bound();
                let resources = sample.resource.iter().cloned().collect();
                w.entries.insert(
                    key,
                    Entry {
                        sample,
                        count: 1,
                        first: now,
                        last: now,
                        resources,
                    },
                );
            }
        }
    }

    /// Writes the records of the window so far.
    pub async fn flush(&self) {
        let taken = std::mem::take(&mut *self.window.lock());
        self.metrics
            .refusals_aggregated
            .inc_by(taken.entries.values().map(|e| e.count).sum::<u64>() + taken.overflow);
        let mut records: Vec<AuditEvent> = Vec::with_capacity(taken.entries.len() + 1);
        for (_, e) in taken.entries {
            let mut ev = e.sample;
            let agg = json!({
                "count": e.count,
                "first_seen": e.first.to_string(),
                "last_seen": e.last.to_string(),
                "resources": e.resources,
            });
            let mut detail = ev.detail.take().unwrap_or_else(|| json!({}));
            if let Some(d) = detail.as_object_mut() {
                d.insert("aggregated".into(), agg);
            } else {
                detail = json!({ "detail": detail, "aggregated": agg });
            }
            ev.detail = Some(detail);
            records.push(ev);
        }
        if taken.overflow > 0 {
            records.push(
                AuditEvent::new(
                    Kind::RefusalsOverflow,
                    warrant_core::audit::Outcome::Deny,
                )
                .actor("broker")
                .reason(format!(
                    "more than {MAX_KEYS} kinds of unauthenticated refusal in {}s; these were counted only",
                    WINDOW.as_secs()
                ))
                .detail(json!({
                    "count": taken.overflow,
                    "sources": taken.overflow_sources,
                })),
            );
        }
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.store.append_audits(records).await {
            tracing::error!(error = %e, "cannot record unauthenticated refusals");
            self.metrics.audit_write_failures.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warrant_core::audit::Outcome;

    #[test]
    fn codes_and_addresses() {
        let e = AuditEvent::new(Kind::ProxyRequest, Outcome::Deny)
            .reason("invalid_token: the task token has expired");
        assert_eq!(code(&e), "invalid_token");
        let e = AuditEvent::new("x", Outcome::Deny).reason("no such route here at all");
        assert_eq!(code(&e), "no such route here at all");
        assert_eq!(address(Some("127.0.0.1:5555")), "127.0.0.1");
        assert_eq!(address(Some("[::1]:80")), "::1");
        assert_eq!(address(Some("local:uid=0")), "local:uid=0");
    }
}
