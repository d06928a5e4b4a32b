//! Store errors. Messages are shown to operators; none carries a secret.

/// What went wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{what} `{name}` does not exist")]
    NotFound {
        /// What kind of thing (`agent`, `admin token`).
        what: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The named thing already exists.
    #[error("{what} `{name}` already exists")]
    Conflict {
        /// What kind of thing.
        what: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The thing is revoked: nothing more is recorded for it.
    #[error("{what} `{id}` has been revoked")]
    Revoked {
        /// `task` or `instance`.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The operation's precondition no longer holds (a join token already
    /// redeemed or expired; a tool approval for another definition than the
    /// one waiting). Nothing was changed.
    #[error("{what}: {why}")]
    Precondition {
        /// What was attempted.
        what: &'static str,
        /// Why it cannot be done now.
        why: String,
    },
    /// The audit record could not be written, so the operation was not performed.
    #[error("the audit trail cannot be written ({0}); nothing was changed")]
    AuditUnavailable(String),
    /// The database failed.
    #[error("the store failed: {0}")]
    Unavailable(String),
    /// A stored row does not parse.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer warrant.
    #[error(
        "the database schema is version {found}, newer than this warrant understands (up to {known}); run a newer warrant"
    )]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// What a writer job's caller is told: the job's own error first, else the
/// commit's, else its value.
pub(crate) fn job_outcome<T>(
    out: Option<Result<T, StoreError>>,
    commit: Result<(), StoreError>,
) -> Result<T, StoreError> {
    match (out, commit) {
        (Some(Err(e)), _) | (Some(Ok(_)) | None, Err(e)) => Err(e),
        (Some(Ok(v)), Ok(())) => Ok(v),
        (None, Ok(())) => Err(StoreError::Unavailable("the write was not run".into())),
    }
}
