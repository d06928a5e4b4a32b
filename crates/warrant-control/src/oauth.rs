//! The OAuth error every token-service step answers with (RFC 6749 §5.2).

/// An OAuth error (RFC 6749 §5.2), safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_grant`, ...
    pub error: &'static str,
    /// What was wrong and what to do.
    pub description: String,
    /// For a policy's refusal: the deciding policies (ids, or the default
    /// deny), answered as `refused_by`, `policies` and `how_to_get_access`
    /// like the edge's refusals, so a client can tell a policy decision
    /// from a malformed request.
    pub policies: Option<Vec<String>>,
    /// More members of the answer (a pending approval's id and state).
    pub extra: Option<Box<serde_json::Value>>,
}

impl OAuthError {
    /// `invalid_request`.
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }
    pub(crate) fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d)
    }
    /// `invalid_client`.
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new("invalid_client", d)
    }
    /// Any code.
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
            policies: None,
            extra: None,
        }
    }
    /// `access_denied` by policy, with the policies that decided.
    pub fn denied_by_policy(description: impl Into<String>, policies: Vec<String>) -> Self {
        Self {
            policies: Some(policies),
            ..Self::new("access_denied", description)
        }
    }
    /// `temporarily_unavailable`: the audit trail could not be written.
    pub fn unavailable() -> Self {
        Self::new(
            "temporarily_unavailable",
            "the broker cannot record this grant in its audit trail, so nothing was issued; try again later",
        )
    }
}

impl From<crate::random::RandomFailed> for OAuthError {
    fn from(e: crate::random::RandomFailed) -> Self {
        tracing::error!(error = %e, "drawing random bytes failed");
        Self::new("server_error", "the broker could not draw random bytes")
    }
}
