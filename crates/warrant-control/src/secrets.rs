//! The secret store's service: put, rotate, delete, list, and resolving a
//! secret's value for the last hop.
//!
//! Values are sealed with a fresh data key per version (warrant-token's
//! `secret` module) and opened only by [`SecretService::resolve`], whose
//! callers place them in an outbound request. Opened values are remembered
//! for [`CACHE_TTL`] (and dropped at once by a put, rotate or delete here), so
//! a proxied request does not read the store; a broker sharing the store
//! sees another's rotation within that time. Nothing here logs a value, and
//! every error names the secret, never its contents.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warrant_core::api::SecretInfo;
use warrant_core::audit::AuditEvent;
use warrant_core::secret::{MAX_SECRET_BYTES, SecretName, SecretRecord, SecretValue};
use warrant_core::time::Timestamp;
use warrant_store::{Store, StoreError};
use warrant_token::Kek;
use warrant_token::secret::{open_secret, seal_secret};

/// How long an opened value is used before the store is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// What went wrong with a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The store failed (including the audit write).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored value does not open under this broker's KEK.
    #[error(
        "secret `{0}` cannot be opened: it was sealed under another key-encryption key or altered in the database; store it again with `warrant secret rotate`"
    )]
    Unreadable(String),
    /// Sealing failed.
    #[error("cannot seal the secret: {0}")]
    Crypto(String),
}

type Key = (SecretName, Option<String>);

pub use warrant_core::secret::Resolved;

/// The secret store.
pub struct SecretService {
    store: Arc<dyn Store>,
    kek: Arc<Kek>,
    // std locks: held only to look up, insert or swap, never across an await.
    cache: RwLock<HashMap<Key, (Instant, Arc<Resolved>)>>,
    used: Mutex<HashMap<Key, Timestamp>>,
}

impl std::fmt::Debug for SecretService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretService").finish_non_exhaustive()
    }
}

fn check_value(v: &SecretValue) -> Result<(), SecretError> {
    if v.is_empty() {
        return Err(SecretError::Invalid("the secret's value is empty".into()));
    }
    if v.len() > MAX_SECRET_BYTES {
        return Err(SecretError::Invalid(format!(
            "the secret's value is {} bytes; at most {MAX_SECRET_BYTES} are accepted",
            v.len()
        )));
    }
    Ok(())
}

fn check_description(d: Option<&str>) -> Result<(), SecretError> {
    if let Some(d) = d
        && (d.chars().count() > 200 || d.chars().any(char::is_control))
    {
        return Err(SecretError::Invalid(
            "description is at most 200 characters without control characters".into(),
        ));
    }
    Ok(())
}

impl SecretService {
    /// A service over `store`, sealing under `kek`.
    pub fn new(store: Arc<dyn Store>, kek: Arc<Kek>) -> Self {
        Self {
            store,
            kek,
            cache: RwLock::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Drops every opened value (another broker rotated or deleted one).
    pub fn forget_all(&self) {
        self.cache.write().clear();
    }

    fn forget(&self, key: &Key) {
        {
            let mut c = self.cache.write();
            c.remove(key);
        }
    }

    fn seal(&self, record: &mut SecretRecord, value: &SecretValue) -> Result<(), SecretError> {
        let aad = SecretRecord::aad(&record.name, record.owner.as_deref(), record.version);
        let (wrapped, sealed) =
            seal_secret(&self.kek, &aad, value).map_err(|e| SecretError::Crypto(e.to_string()))?;
        record.wrapped_key = wrapped;
        record.ciphertext = sealed;
        Ok(())
    }

    /// Stores the first version of a secret.
    pub async fn put(
        &self,
        name: SecretName,
        owner: Option<String>,
        description: Option<String>,
        value: &SecretValue,
        created_by: String,
        audit: impl FnOnce(&SecretRecord) -> AuditEvent,
    ) -> Result<SecretInfo, SecretError> {
        check_value(value)?;
        check_description(description.as_deref())?;
        let now = Timestamp::now();
        let mut record = SecretRecord {
            name,
            owner,
            version: 1,
            description,
            wrapped_key: Vec::new(),
            ciphertext: Vec::new(),
            created_by,
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        self.seal(&mut record, value)?;
        let event = audit(&record);
        self.store.create_secret(record.clone(), event).await?;
        self.forget(&(record.name.clone(), record.owner.clone()));
        Ok(SecretInfo::from(&record))
    }

    /// Stores a new value as the next version, under a fresh data key.
    pub async fn rotate(
        &self,
        name: SecretName,
        owner: Option<String>,
        description: Option<String>,
        value: &SecretValue,
        audit: impl FnOnce(&SecretRecord) -> AuditEvent,
    ) -> Result<SecretInfo, SecretError> {
        check_value(value)?;
        check_description(description.as_deref())?;
        let Some(mut record) = self.store.get_secret(&name, owner.as_deref()).await? else {
            return Err(StoreError::NotFound {
                what: "secret",
                name: name.to_string(),
            }
            .into());
        };
        record.version += 1;
        record.updated_at = Timestamp::now();
        if description.is_some() {
            record.description = description;
        }
        self.seal(&mut record, value)?;
        let event = audit(&record);
        let key = (record.name.clone(), record.owner.clone());
        let result = self.store.rotate_secret(record.clone(), event).await;
        self.forget(&key);
        result?;
        Ok(SecretInfo::from(&record))
    }

    /// Deletes a secret.
    pub async fn delete(
        &self,
        name: &SecretName,
        owner: Option<&str>,
        audit: AuditEvent,
    ) -> Result<SecretInfo, SecretError> {
        let result = self.store.delete_secret(name, owner, audit).await;
        self.forget(&(name.clone(), owner.map(str::to_owned)));
        Ok(SecretInfo::from(&result?))
    }

    /// Every secret, never a value; last use as this broker knows it.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretError> {
        let used = self.used.lock().clone();
        Ok(self
            .store
            .list_secrets()
            .await?
            .iter()
            .map(|s| {
                let mut info = SecretInfo::from(s);
                if let Some(t) = used.get(&(s.name.clone(), s.owner.clone())) {
                    info.last_used_at = Some(info.last_used_at.map_or(*t, |l| l.max(*t)));
                }
                info
            })
            .collect())
    }

    /// The value of `name` for `owner` (`None` = the shared secret), to place
    /// in an outbound request; `None` if there is no such secret.
    pub async fn resolve(
        &self,
        name: &SecretName,
        owner: Option<&str>,
    ) -> Result<Option<Arc<Resolved>>, SecretError> {
        let key: Key = (name.clone(), owner.map(str::to_owned));
        let hit = self
            .cache
            .read()
            .get(&key)
            .cloned()
            .filter(|(loaded, _)| loaded.elapsed() < CACHE_TTL)
            .map(|(_, r)| r);
        let resolved = match hit {
            Some(r) => r,
            None => {
                let Some(record) = self.store.get_secret(name, owner).await? else {
                    return Ok(None);
                };
                let aad = SecretRecord::aad(&record.name, record.owner.as_deref(), record.version);
                let value = open_secret(&self.kek, &aad, &record.wrapped_key, &record.ciphertext)
                    .ok_or_else(|| SecretError::Unreadable(record.credential_id()))?;
                let r = Arc::new(Resolved {
                    id: record.credential_id(),
                    value,
                });
                {
                    let mut c = self.cache.write();
                    c.insert(key.clone(), (Instant::now(), r.clone()));
                }
                r
            }
        };
        {
            let mut u = self.used.lock();
            u.insert(key, Timestamp::now());
        }
        Ok(Some(resolved))
    }

    /// Writes the last-use times gathered since the previous flush.
    pub async fn flush_used(&self) {
        let used: Vec<_> = self
            .used
            .lock()
            .drain()
            .map(|((n, o), t)| (n, o, t))
            .collect();
        if let Err(e) = self.store.touch_secrets(used).await {
            tracing::warn!(error = %e, "could not record when secrets were last used");
        }
    }
}
