//! The one shape in which the edge refuses an HTTP request, proxy and MCP
//! gateway alike: `{"error": {"message", "type", "code"}}` (the shape
//! provider SDKs such as OpenAI's and Anthropic's read, so an agent's SDK
//! shows the message), with `refused_by`, `policies` and
//! `how_to_get_access` when a rule or policy refused, and a
//! `WWW-Authenticate` challenge naming the resource metadata on a 401.
//!
//! A request the MCP gateway has read as JSON-RPC is refused in JSON-RPC
//! instead (see `mcp::gateway::RpcRefusal`); everything before that point
//! is refused here.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// A refusal: status, code, message, and for 403s which rule class refused.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Which rule or policy refused (boxed: most refusals have none, and
    /// every step of a request path returns this type).
    why: Option<Box<Why>>,
    /// The `WWW-Authenticate` challenge.
    challenge: Option<Box<str>>,
    /// A request waiting for approval: its id and state (members of the
    /// error), and a `Retry-After`.
    approval: Option<Box<serde_json::Value>>,
}

/// Which rule class or policy refused, and how to get access.
#[derive(Debug)]
struct Why {
    refused_by: &'static str,
    hint: String,
    policies: Vec<String>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
            why: None,
            challenge: None,
            approval: None,
        }
    }

    /// A request that needs a person's approval and does not go ahead
    /// (pending, denied, or not asked): 403 with the approval's facts,
    /// and `Retry-After` while it is pending.
    pub(crate) fn approval(step: &warrant_core::approval::StepUp) -> Self {
        use warrant_core::approval::StepUp;
        let (message, data) = step.refusal().unwrap_or_default();
        if let StepUp::Unavailable(_) = step {
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        }
        let code = match step {
            StepUp::Pending(_) => "approval_pending",
            StepUp::Denied(_) => "approval_denied",
            _ => "approval_required",
        };
        Self {
            approval: Some(Box::new(data)),
            ..Self::new(StatusCode::FORBIDDEN, code, message)
        }
    }

    /// Whether this answers a request waiting for approval.
    pub(crate) fn is_pending(&self) -> bool {
        self.code == "approval_pending"
    }

    /// A request the edge will not read as it is (400 `invalid_request`).
    pub(crate) fn invalid(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// No task token, or one that does not verify (RFC 6750 §3: the
    /// challenge names an error only when a token was sent).
    pub(crate) fn unauthorized(message: String, metadata_url: &str, given: bool) -> Self {
        let challenge = if given {
            let quoted = message.replace(['"', '\\'], "'");
            format!(
                "Bearer realm=\"warrant\", error=\"invalid_token\", error_description=\"{quoted}\", resource_metadata=\"{metadata_url}\""
            )
        } else {
            format!("Bearer realm=\"warrant\", resource_metadata=\"{metadata_url}\"")
        };
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message).with_challenge(challenge)
    }

    /// Refused by a rule or a policy: which class refused, how to get
    /// access, and the deciding policies.
    pub(crate) fn forbidden(
        refused_by: &'static str,
        message: String,
        hint: String,
        policies: Vec<String>,
    ) -> Self {
        Self {
            why: Some(Box::new(Why {
                refused_by,
                hint,
                policies,
            })),
            ..Self::new(StatusCode::FORBIDDEN, "access_denied", message)
        }
    }

    /// The same refusal with a `WWW-Authenticate` challenge.
    pub(crate) fn with_challenge(self, challenge: String) -> Self {
        Self {
            challenge: Some(challenge.into()),
            ..self
        }
    }

    /// The broker cannot write its audit trail, so the edge forwards nothing.
    pub(crate) fn audit_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the broker cannot write its audit trail, so it forwards nothing; try again later"
                .to_owned(),
        )
    }

    /// The broker's store could not answer whether a token is still good.
    pub(crate) fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the broker's store is unavailable; try again".to_owned(),
        )
    }

    /// Whether the record of this refusal is a denial (401, 403) rather
    /// than an error.
    pub(crate) fn is_denial(&self) -> bool {
        matches!(
            self.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
    }
}

/// What refused a request policy denied: a forbid, or no permit at all.
pub(crate) fn refused_by_policy(policies: &[String]) -> &'static str {
    if policies.is_empty() {
        "policy (default deny)"
    } else {
        "policy (forbid)"
    }
}

/// How a refusal is written for the caller's SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// warrant's own JSON (what OpenAI-style SDKs read).
    Warrant,
    /// An AWS SDK on a REST-XML or query protocol (S3, STS, ...): `<Error>`
    /// with `Code` and `Message`, which boto3 shows.
    AwsXml,
    /// An AWS SDK on a JSON protocol (`X-Amz-Target`): `__type` and
    /// `message` beside warrant's `error`.
    AwsJson,
}

impl Refusal {
    /// The refusal in `shape`.
    pub(crate) fn into_shaped(self, shape: Shape) -> Response {
        if shape == Shape::Warrant {
            return self.into_response();
        }
        let code = match self.status.as_u16() {
            401 => "InvalidToken",
            403 => "AccessDenied",
            413 => "EntityTooLarge",
            400..=499 => "InvalidRequest",
            _ => "ServiceUnavailable",
        };
        let mut message = self.message.clone();
        if let Some(why) = &self.why {
            message = format!("{message} (refused by {}; {})", why.refused_by, why.hint);
        }
        let warrant_code = self.code;
        let (body, content_type) = if shape == Shape::AwsJson {
            let body = json!({ "__type": code, "message": message, "warrant_code": warrant_code });
            (body.to_string(), "application/x-amz-json-1.0")
        } else {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><WarrantCode>{warrant_code}</WarrantCode></Error>",
                quick_xml::escape::escape(message.as_str())
            );
            (body, "application/xml")
        };
        // warrant's own answer for its status and headers (a challenge,
        // `Retry-After`), with the body the SDK reads.
        let (parts, _) = self.into_response().into_parts();
        let mut r = Response::from_parts(parts, axum::body::Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r.headers_mut().remove(header::CONTENT_LENGTH);
        r
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut error = json!({ "message": self.message, "type": self.code, "code": self.code });
        if let Some(why) = self.why {
            error["refused_by"] = json!(why.refused_by);
            if !why.policies.is_empty() {
                error["policies"] = json!(why.policies);
            }
            error["how_to_get_access"] = json!(why.hint);
        }
        let pending = self.code == "approval_pending";
        if let Some(a) = self.approval
            && let serde_json::Value::Object(members) = *a
        {
            for (k, v) in members {
                error[k] = v;
            }
        }
        let mut r = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if pending {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(warrant_core::approval::RETRY_AFTER_SECS),
            );
        }
        if let Some(w) = self.challenge
            && let Ok(v) = HeaderValue::from_str(&w)
        {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}
