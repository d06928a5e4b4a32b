//! The operating-system facts the broker's parts share: which files it may
//! trust (`trust`) and randomness for ids (`random`).
//!
//! Deliberately small and synchronous: both the control services and the
//! edge use it, so it depends on neither, and nothing here knows about
//! tokens, policy or HTTP.

pub mod random;
pub mod trust;
