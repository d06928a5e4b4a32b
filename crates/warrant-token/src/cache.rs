//! A bounded cache of tokens whose signature already verified.
//!
//! Verifying an ES256 signature costs about three times signing one, and an
//! agent presents the same identity token (or the proxy sees the same task
//! token) many times in its life. The cache maps a token's exact bytes to what
//! the caller derived from it after verifying and checking it, so a repeat
//! costs a hash lookup.
//!
//! A hit is honoured only while the token has not expired and the key that
//! verified it is still among the verifying keys; everything that can change
//! after issuance (revocation, a disabled agent, a blocked instance) is for
//! the caller to check on every use, hit or miss. Only tokens that verified
//! are ever inserted, so a flood of forgeries cannot fill it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use warrant_core::time::Timestamp;

use crate::jwt::VerifyingKeys;

struct Entry<T> {
    value: Arc<T>,
    kid: Box<str>,
    exp: i64,
}

/// Verified tokens, keyed by their exact bytes. At most `capacity` entries.
pub struct VerifiedCache<T> {
    capacity: usize,
    // A std mutex: held for a lookup or an insert, never across an await.
    map: Mutex<HashMap<Box<str>, Entry<T>>>,
}

impl<T> std::fmt::Debug for VerifiedCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl<T> VerifiedCache<T> {
    /// An empty cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How many tokens are held.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What was derived from `token` when it verified, if it has not expired
    /// at `now` and the key `kid` still verifies.
    pub fn get(&self, token: &str, keys: &VerifyingKeys, now: Timestamp) -> Option<Arc<T>> {
        let mut map = self.map.lock();
        let e = map.get(token)?;
        if now.as_secs() < e.exp && keys.has_kid(&e.kid) {
            return Some(e.value.clone());
        }
        map.remove(token);
        None
    }

    /// Remembers `value` for `token`, which verified under `kid` and expires
    /// at `exp` (seconds). Expired tokens are not kept. When full, expired
    /// entries go first, then an arbitrary quarter.
    pub fn insert(&self, token: &str, kid: &str, exp: i64, now: Timestamp, value: Arc<T>) {
        if exp <= now.as_secs() {
            return;
        }
        let mut map = self.map.lock();
        if map.len() >= self.capacity && !map.contains_key(token) {
            map.retain(|_, e| e.exp > now.as_secs());
            if map.len() >= self.capacity {
                let drop_n = (self.capacity / 4).max(1);
                let victims: Vec<Box<str>> = map.keys().take(drop_n).cloned().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            token.into(),
            Entry {
                value,
                kid: kid.into(),
                exp,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::jwt::VerifyingKey;
    use serde_json::json;

    fn keys(kids: &[&str]) -> VerifyingKeys {
        let mut ks = VerifyingKeys::default();
        for kid in kids {
            // Any valid P-256 public key; only the kid matters here.
            let jwk = json!({"kty":"EC","crv":"P-256","kid":kid,"alg":"ES256",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
            ks.insert(VerifyingKey::from_jwk(&jwk).unwrap());
        }
        ks
    }

    #[test]
    fn a_hit_needs_an_unexpired_token_and_a_live_key() {
        let now = Timestamp::from_millis(1_000_000);
        let c: VerifiedCache<u32> = VerifiedCache::new(8);
        c.insert("tok", "k1", now.as_secs() + 10, now, Arc::new(7));
        assert_eq!(c.get("tok", &keys(&["k1"]), now).as_deref(), Some(&7));
        // The exact bytes only.
        assert!(c.get("tok ", &keys(&["k1"]), now).is_none());
        // The key was retired: no hit, and the entry is gone.
        assert!(c.get("tok", &keys(&["k2"]), now).is_none());
        assert!(c.is_empty());
        c.insert("tok", "k1", now.as_secs() + 10, now, Arc::new(7));
        let later = Timestamp::from_millis(now.as_millis() + 10_000);
        assert!(c.get("tok", &keys(&["k1"]), later).is_none(), "expired hit");
        // Already expired tokens are never kept.
        c.insert("old", "k1", now.as_secs(), now, Arc::new(1));
        assert!(c.get("old", &keys(&["k1"]), now).is_none());
    }

    #[test]
    fn it_stays_within_its_capacity() {
        let now = Timestamp::from_millis(1_000_000);
        let c: VerifiedCache<usize> = VerifiedCache::new(100);
        for i in 0..1_000 {
            c.insert(&format!("t{i}"), "k1", now.as_secs() + 60, now, Arc::new(i));
            assert!(c.len() <= 100);
        }
        // The newest is always kept.
        assert_eq!(c.get("t999", &keys(&["k1"]), now).as_deref(), Some(&999));
    }
}
