//! The one place errors become HTTP responses.
//!
//! Every error body is `{"error": "<code>", "message": "<what to do>"}`; the
//! message is written for the person at the CLI and never carries a secret or
//! an internal `Debug` dump.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use warrant_core::audit::{AuditEvent, Outcome};
use warrant_store::StoreError;

use crate::state::AppState;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// 400: the request is malformed or a value is invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
        }
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// 503: the broker cannot take this now; try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
        }
    }

    /// 500, with a message that reveals nothing internal.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            message: message.into(),
        }
    }
}

impl ApiError {
    /// 500 for a failure inside the broker: the cause goes to the log, the
    /// caller gets `what` failed, never a library's text.
    pub fn failed(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what} failed");
        Self::internal(format!("{what} failed; the broker's log says why"))
    }
}

impl From<warrant_host::random::RandomFailed> for ApiError {
    fn from(e: warrant_host::random::RandomFailed) -> Self {
        Self::failed("drawing random bytes", &e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::Conflict { .. } | StoreError::Precondition { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            StoreError::Revoked { .. } => (StatusCode::CONFLICT, "revoked"),
            StoreError::AuditUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
            }
            StoreError::Unavailable(_) | StoreError::Closed => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            StoreError::Corrupt(_) | StoreError::SchemaTooNew { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        };
        // INVARIANT (no library text to clients): a server-side failure is
        // logged with its cause and answered in the broker's own words; a
        // client's error (not found, conflict) is the store's own sentence
        // about the caller's input.
        let message = match code {
            "audit_unavailable" => {
                "the audit trail cannot be written, so nothing was changed; try again later".into()
            }
            "unavailable" => "the broker's store is unavailable; try again later".into(),
            "internal_error" => "the broker's store failed; its log says why".into(),
            _ => e.to_string(),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "store error");
        }
        Self {
            status,
            code,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(Body {
                error: self.code,
                message: &self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"warrant-admin\""),
            );
        }
        r
    }
}

/// Records a refused or failed attempt, then returns the error. If the trail
/// itself is down, the answer says so instead.
pub(crate) async fn fail(state: &AppState, attempt: AuditEvent, err: ApiError) -> ApiError {
    if err.code == "audit_unavailable" {
        state.metrics.audit_write_failures.inc();
        return err;
    }
    match state
        .store
        .append_audit(attempt.failed(Outcome::Error, err.message.clone()))
        .await
    {
        Ok(_) => err,
        Err(e) => {
            state.metrics.audit_write_failures.inc();
            ApiError::from(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store failure on the broker's side is answered in the broker's
    /// words; the cause (a path, SQLite's text) stays in the log.
    #[test]
    fn server_side_store_failures_reveal_no_cause() {
        let cause = "disk I/O error at /var/lib/warrant/warrant.db";
        for e in [
            StoreError::Unavailable(cause.into()),
            StoreError::Corrupt(cause.into()),
            StoreError::AuditUnavailable(cause.into()),
        ] {
            let api = ApiError::from(e);
            assert!(api.status.is_server_error());
            assert!(!api.message.contains("disk"), "{}", api.message);
            assert!(!api.message.contains("/var/lib"), "{}", api.message);
        }
        // A caller's own mistake is still told as such.
        let api = ApiError::from(StoreError::Revoked {
            what: "task",
            id: "tsk_1".into(),
        });
        assert_eq!((api.status, api.code), (StatusCode::CONFLICT, "revoked"));
        assert!(api.message.contains("tsk_1"), "{}", api.message);
        let api = ApiError::failed("key rotation", &"aws-lc: bad key material");
        assert!(!api.message.contains("aws-lc"), "{}", api.message);
    }
}
