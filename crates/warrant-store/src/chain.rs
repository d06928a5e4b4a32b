//! The note of where the audit chain's keying starts, shared by the backends.
//!
//! A database from before the chain was keyed keeps its old records
//! hash-chained only; a keyed note in `audit_meta` says up to which record,
//! so the boundary cannot be moved by someone without the key.

use warrant_core::audit::{ChainHash, ChainLinker};

/// The key of the legacy marker in `audit_meta`.
pub(crate) const LEGACY_KEY: &str = "legacy_until";

/// The record up to which the chain is not keyed, if `marker` is a
/// genuine note (keyed by `linker`); `None` if it was altered.
pub(crate) fn legacy_until(marker: &[u8], linker: &dyn ChainLinker) -> Option<u64> {
    let n = marker
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)?;
    (marker[8..] == legacy_mac(linker, n)[..]).then_some(n)
}

/// The keyed form of "records up to `n` are not keyed".
pub(crate) fn legacy_mac(linker: &dyn ChainLinker, n: u64) -> Vec<u8> {
    linker
        .link(
            &ChainHash([0x11; 32]),
            format!("warrant audit chain: records up to {n} are not keyed").as_bytes(),
        )
        .0
        .to_vec()
}
