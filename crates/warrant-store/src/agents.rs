//! The agent inventory, held in memory.
//!
//! Every identity issuance and every token grant looks an agent up; reading
//! SQLite for each costs a trip to the blocking pool. The inventory is small
//! and changes rarely, so reads come from a snapshot that every write to the
//! `agents` table invalidates once it has committed.
//!
//! A generation counter keeps a slow load from installing data older than a
//! write it raced with: a snapshot is kept only if no write finished while it
//! was being read, and used only while its generation is current.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use warrant_core::agent::Agent;

type Snapshot = Arc<BTreeMap<String, Agent>>;

#[derive(Debug, Default)]
pub(crate) struct AgentCache {
    generation: AtomicU64,
    // A std lock: held only to clone or replace the Arc.
    snapshot: RwLock<Option<(u64, Snapshot)>>,
}

impl AgentCache {
    /// The current snapshot, if one is valid.
    pub(crate) fn get(&self) -> Option<Snapshot> {
        let current = self.generation.load(Ordering::Acquire);
        let guard = self.snapshot.read();
        match &*guard {
            Some((g, s)) if *g == current => Some(s.clone()),
            _ => None,
        }
    }

    /// The generation to tag a load that starts now.
    pub(crate) fn begin(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `agents`, read after [`begin`](Self::begin) returned `generation`,
    /// unless a write has committed since.
    pub(crate) fn install(&self, generation: u64, agents: Vec<Agent>) -> Snapshot {
        let snap: Snapshot = Arc::new(
            agents
                .into_iter()
                .map(|a| (a.name.to_string(), a))
                .collect(),
        );
        let mut guard = self.snapshot.write();
        if self.generation.load(Ordering::Acquire) == generation {
            *guard = Some((generation, snap.clone()));
        }
        snap
    }

    /// Called after every write to `agents` has committed (or failed).
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Invalidates when the guard drops, however the write ends.
    pub(crate) fn invalidate_on_drop(&self) -> Invalidate<'_> {
        Invalidate(self)
    }
}

pub(crate) struct Invalidate<'a>(&'a AgentCache);

impl Drop for Invalidate<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_that_raced_a_write_is_not_kept() {
        let c = AgentCache::default();
        assert!(c.get().is_none());
        let g = c.begin();
        c.invalidate();
        c.install(g, Vec::new());
        assert!(c.get().is_none(), "stale snapshot was installed");
        let g = c.begin();
        c.install(g, Vec::new());
        assert!(c.get().is_some());
        c.invalidate();
        assert!(c.get().is_none(), "snapshot outlived a write");
    }
}
