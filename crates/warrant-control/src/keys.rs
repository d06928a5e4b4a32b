//! The broker's signing keys: first-start generation and rotation.
//!
//! The schedule itself (which key signs, which are published) is
//! `warrant_token::KeySet`'s, derived from timestamps. This service only adds
//! keys (each insert audited in the same commit) and swaps in a freshly opened
//! set afterwards.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::keys::Alg;
use warrant_core::time::Timestamp;
use warrant_store::{Store, StoreError};
use warrant_token::jwt::VerifyingKeys;
use warrant_token::x509::X509Authority;
use warrant_token::{Kek, KeyError, KeySet, KeyStatus};

/// How long relying parties may cache the JWKS (`Cache-Control: max-age`), and
/// so the default delay between publishing a new key and signing with it.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// The longest a rotation may wait before activating.
pub const MAX_ACTIVATE_IN: Duration = Duration::from_secs(7 * 86_400);

/// What went wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyServiceError {
    /// A key could not be generated, opened or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed (including the audit write).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The signing keys in use.
pub struct KeyService {
    set: ArcSwap<KeySet>,
    kek: Arc<Kek>,
    store: Arc<dyn Store>,
    default_alg: Alg,
    /// Serialises rotations. A tokio mutex: held across store writes.
    rotate_lock: tokio::sync::Mutex<()>,
    /// The least delay before a new key signs: with several brokers, long
    /// enough for every one to publish it first.
    min_activation: parking_lot::Mutex<Duration>,
    /// The published keys parsed for verification, rebuilt when the set
    /// changes or the second turns (key states change with time), so token
    /// checks on hot paths do not re-parse public keys per request.
    verifiers: ArcSwap<Verifiers>,
    /// The X.509 CAs and the key states they were derived for. A std mutex:
    /// held only to swap, never across an await.
    x509: parking_lot::Mutex<Option<(KeyMark, Arc<X509Authority>)>>,
}

/// Which keys, in which states, a derived X.509 authority is for.
type KeyMark = Vec<(String, warrant_token::KeyState)>;

struct Verifiers {
    set: Arc<KeySet>,
    second: i64,
    keys: Arc<VerifyingKeys>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("default_alg", &self.default_alg)
            .finish_non_exhaustive()
    }
}

impl KeyService {
    /// Opens the stored keys, generating the first one if there are none.
    pub async fn bootstrap(
        store: Arc<dyn Store>,
        kek: Arc<Kek>,
        default_alg: Alg,
    ) -> Result<Self, KeyServiceError> {
        let mut records = store.list_signing_keys().await?;
        if records.is_empty() {
            let now = Timestamp::now();
            let record = warrant_token::generate_key(default_alg, &kek, now, now)?;
            let event = AuditEvent::new(Kind::KeyGenerate, Outcome::Allow)
                .actor("broker")
                .action("key.generate")
                .resource(format!("SigningKey::\"{}\"", record.kid))
                .detail(serde_json::json!({ "kid": record.kid, "alg": record.alg.as_str(), "reason": "first start" }));
            // Brokers sharing a store may start together: one key wins.
            if store.insert_first_signing_key(record, event).await? {
                tracing::info!(alg = %default_alg, "generated the first signing key");
            }
            records = store.list_signing_keys().await?;
        }
        let set = Arc::new(KeySet::open(records, &kek)?);
        let now = Timestamp::now();
        Ok(Self {
            verifiers: ArcSwap::from_pointee(Verifiers {
                keys: Arc::new(VerifyingKeys::published(&set, now)),
                second: now.as_secs(),
                set: set.clone(),
            }),
            set: ArcSwap::new(set),
            kek,
            store,
            default_alg,
            rotate_lock: tokio::sync::Mutex::new(()),
            min_activation: parking_lot::Mutex::new(Duration::ZERO),
            x509: parking_lot::Mutex::new(None),
        })
    }

    /// The keys that verify warrant's own tokens at `now`.
    pub fn verifying_keys(&self, now: Timestamp) -> Arc<VerifyingKeys> {
        let set = self.set.load_full();
        let cached = self.verifiers.load();
        if Arc::ptr_eq(&cached.set, &set) && cached.second == now.as_secs() {
            return cached.keys.clone();
        }
        let keys = Arc::new(VerifyingKeys::published(&set, now));
        self.verifiers.store(Arc::new(Verifiers {
            set,
            second: now.as_secs(),
            keys: keys.clone(),
        }));
        keys
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// The Workload API's X.509 CAs for `trust_domain` at `now`: one per
    /// published signing key, derived from the KEK (see
    /// `warrant_token::x509`), rebuilt only when a key's state changes.
    pub fn x509(
        &self,
        trust_domain: &str,
        now: Timestamp,
    ) -> Result<Arc<X509Authority>, KeyServiceError> {
        let status = self.current().status(now);
        let mark: KeyMark = status.iter().map(|k| (k.kid.clone(), k.state)).collect();
        let mut held = self.x509.lock();
        if let Some((m, ca)) = held.as_ref()
            && *m == mark
        {
            return Ok(ca.clone());
        }
        let ca = Arc::new(X509Authority::derive(&self.kek, &status, trust_domain)?);
        *held = Some((mark, ca.clone()));
        Ok(ca)
    }

    /// With several brokers on one store: a new key signs no sooner than
    /// `delay` after it is stored, so every broker publishes it first.
    pub fn set_min_activation(&self, delay: Duration) {
        *self.min_activation.lock() = delay;
    }

    /// Re-reads the keys from the store (another broker added one).
    pub async fn reload(&self) -> Result<(), KeyServiceError> {
        let set = KeySet::open(self.store.list_signing_keys().await?, &self.kek)?;
        self.set.store(Arc::new(set));
        Ok(())
    }

    /// Adds a key of `alg` (default: the configured one) that is published now
    /// and signs from `now + activate_in` (at least the minimum activation
    /// delay, with several brokers). `base` carries the actor.
    pub async fn rotate(
        &self,
        alg: Option<Alg>,
        activate_in: Duration,
        base: AuditEvent,
    ) -> Result<KeyStatus, KeyServiceError> {
        let _guard = self.rotate_lock.lock().await;
        let activate_in = activate_in.max(*self.min_activation.lock());
        let now = Timestamp::now();
        let alg = alg.unwrap_or(self.default_alg);
        let record = warrant_token::generate_key(alg, &self.kek, now, now + activate_in)?;
        let kid = record.kid.clone();
        let event = AuditEvent { event: Kind::AdminKeyRotate.into(), decision: Outcome::Allow, ..base }
            .action("key.rotate")
            .resource(format!("SigningKey::\"{kid}\""))
            .detail(serde_json::json!({ "kid": kid, "alg": alg.as_str(), "activates_at": record.activates_at }));
        self.store.insert_signing_key(record, event).await?;
        let set = KeySet::open(self.store.list_signing_keys().await?, &self.kek)?;
        let status = set.status(now).into_iter().find(|s| s.kid == kid);
        self.set.store(Arc::new(set));
        status.ok_or_else(|| {
            KeyServiceError::Store(StoreError::Corrupt(format!(
                "signing key `{kid}` vanished after insert"
            )))
        })
    }
}
