//! Signed checkpoints of the audit chain's head.
//!
//! The keyed chain shows any record deleted, inserted or edited before its
//! newest record, but not the newest records themselves deleted (the chain
//! is then shorter, and whole). A checkpoint says "record N had hash H",
//! signed by the broker (a JWS with `typ` [`TYP`], verifiable with the
//! JWKS): kept in the store and, to be worth anything against someone who
//! can write the store, exported elsewhere (`warrant audit checkpoint`).
//! `warrant audit verify` checks the chain against the stored checkpoints
//! and any exported ones it is given: a chain shorter than a checkpoint, or
//! differing at its record, was cut or rewritten.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warrant_core::api::CheckpointCheck;
use warrant_core::audit::Checkpoint;
use warrant_core::time::Timestamp;
use warrant_store::{Store, StoreError};

use crate::keys::KeyService;

/// The `typ` of a checkpoint: never one of warrant's credentials'.
pub const TYP: &str = "warrant-audit-checkpoint+jwt";
/// How often a new checkpoint is made, when records were added.
pub const EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    seq: u64,
    hash: String,
    iat: i64,
}

/// Makes a checkpoint of the last record this broker wrote, unless the
/// last one it signed already covers it; returns the checkpoint of that
/// record (`None`: the trail is empty).
pub async fn make(
    store: &Arc<dyn Store>,
    keys: &KeyService,
    issuer: &str,
) -> Result<Option<Checkpoint>, String> {
    use parking_lot::Mutex;
    use std::sync::OnceLock;
    // What this broker signed last: never read back from the store, where
    // anyone who can write it could put a row that looks newer.
    static LAST: OnceLock<Mutex<Option<Checkpoint>>> = OnceLock::new();
    let last = LAST.get_or_init(|| Mutex::new(None));
    // INVARIANT (a checkpoint vouches for what the broker wrote): the head
    // comes from the writer, checked against the database, never from the
    // highest row stored.
    let Some((seq, hash)) = store
        .audit_written_head()
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    if let Some(cp) = last
        .lock()
        .clone()
        .filter(|c| c.seq == seq && c.hash == hash)
    {
        return Ok(Some(cp));
    }
    let now = Timestamp::now();
    let claims = Claims {
        iss: issuer.to_owned(),
        seq,
        hash: hash.to_string(),
        iat: now.as_secs(),
    };
    let set = keys.current();
    let key = set.active(now).ok_or("no signing key is active")?;
    let signed = warrant_token::jwt::sign(key, TYP, &claims).map_err(|e| e.to_string())?;
    let cp = Checkpoint {
        seq,
        hash,
        time: now,
        signed,
    };
    store
        .add_checkpoint(cp.clone())
        .await
        .map_err(|e| e.to_string())?;
    {
        let mut l = last.lock();
        *l = Some(cp.clone());
    }
    Ok(Some(cp))
}

/// Checks one checkpoint (as a signed JWS) against the chain.
pub async fn check(
    store: &Arc<dyn Store>,
    keys: &KeyService,
    issuer: &str,
    signed: &str,
) -> Result<CheckpointCheck, StoreError> {
    let fail = |seq: u64, why: String| CheckpointCheck {
        seq,
        ok: false,
        signature: "invalid".into(),
        why: Some(why),
    };
    let header = match warrant_token::jwt::peek_header(signed) {
        Ok(h) => h,
        Err(e) => return Ok(fail(0, format!("not a checkpoint: {e}"))),
    };
    if header.typ.as_deref() != Some(TYP) {
        return Ok(fail(0, "not a warrant audit checkpoint (typ)".into()));
    }
    let now = Timestamp::now();
    let verifying = keys.verifying_keys(now);
    let (claims, signature) = match warrant_token::jwt::verify(signed, &verifying) {
        Ok(v) => (v.claims, "valid"),
        Err(warrant_token::jwt::JwtError::UnknownKid(_)) => {
            // Signed by a key no longer published: its claims are compared,
            // its signature cannot be checked here any more.
            match warrant_token::jwt::peek_claims_unverified(signed) {
                Ok(c) => (c, "not checked: its key is no longer published"),
                Err(e) => return Ok(fail(0, format!("not a checkpoint: {e}"))),
            }
        }
        Err(e) => return Ok(fail(0, format!("its signature is not this broker's: {e}"))),
    };
    let Ok(c) = serde_json::from_value::<Claims>(serde_json::Value::Object(claims)) else {
        return Ok(fail(0, "its claims are not a checkpoint's".into()));
    };
    // `iss` is informative: the broker's keys, not its URL (which a restart
    // on another address changes), say whose checkpoint it is.
    let _ = issuer;
    let mut out = CheckpointCheck {
        seq: c.seq,
        ok: true,
        signature: signature.into(),
        why: None,
    };
    match store.audit_hash(c.seq).await? {
        Some(h) if h.to_string() == c.hash => {}
        Some(_) => {
            out.ok = false;
            out.why = Some(format!(
                "record {} differs from the checkpoint: the chain was rewritten",
                c.seq
            ));
        }
        None => {
            let head = store.audit_head().await?.map_or(0, |(s, _)| s);
            out.ok = false;
            out.why = Some(format!(
                "the chain ends at record {head}, but record {} existed: records were deleted from its end",
                c.seq
            ));
        }
    }
    Ok(out)
}

/// Makes checkpoints every [`EVERY`] until `shutdown`, and a last one then.
pub fn spawn(
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    issuer: Arc<str>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => break,
            }
            if let Err(e) = make(&store, &keys, &issuer).await {
                tracing::warn!(error = %e, "could not make an audit checkpoint");
            }
        }
    })
}
