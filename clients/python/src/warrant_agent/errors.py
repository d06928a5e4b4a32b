"""The exceptions warrant's refusals are raised as.

Every refusal carries what the broker or the edge said: the OAuth-style
``error`` code, the ``description`` a person can act on, the HTTP status, and
for a policy's refusal ``refused_by``, the deciding ``policies`` and
``how_to_get_access``. No exception ever holds a token.
"""

from __future__ import annotations

from typing import Any


class WarrantError(Exception):
    """Anything warrant refused or could not do."""

    def __init__(
        self,
        description: str,
        *,
        error: str = "error",
        status: int | None = None,
        refused_by: str | None = None,
        policies: list[str] | None = None,
        how_to_get_access: str | None = None,
        approval_id: str | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.error = error
        self.status = status
        self.refused_by = refused_by
        self.policies = list(policies or [])
        self.how_to_get_access = how_to_get_access
        self.approval_id = approval_id

    def __str__(self) -> str:
        s = f"{self.error}: {self.description}"
        if self.how_to_get_access:
            s += f" ({self.how_to_get_access})"
        return s


class AttestationError(WarrantError):
    """The broker would not issue this process an identity (no agent matches,
    the agent is disabled, the evidence does not attest)."""


class AccessDenied(WarrantError):
    """A rule or a policy refused: the token service would not issue the task
    token, or the edge would not forward the request."""


class ApprovalPending(AccessDenied):
    """Policy allows this request only with a person's approval, which is
    pending: ``approval_id`` names it. Once an approver grants it, the same
    request, sent again, goes ahead once."""


class ApprovalDenied(AccessDenied):
    """A person refused the approval this request needs (``approval_id``);
    the same request is refused until that approval lapses."""


class InvalidToken(WarrantError):
    """The edge or the broker did not accept a token (expired, malformed, for
    another audience)."""


class TaskRevoked(InvalidToken):
    """The task (or one it was delegated from, or an instance or agent in its
    chain) was revoked. The SDK does not start a new task on its own when this
    happens: the call that met the revocation raises this, and the cached
    token is dropped."""


class Unavailable(WarrantError):
    """The broker could not be reached or cannot answer right now."""


def from_response(status: int, body: Any, *, default: type[WarrantError] = WarrantError) -> WarrantError:
    """The exception for a refusal answered with ``status`` and JSON ``body``.

    Reads both shapes warrant answers in: the OAuth error of the token
    service and attestation (``{"error", "error_description", ...}``) and the
    edge's (``{"error": {"message", "code", "refused_by", ...}}``).
    """
    fields: dict[str, Any] = {}
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            fields = dict(err)
            fields.setdefault("error_description", err.get("message"))
            fields["error"] = err.get("code") or err.get("type")
        else:
            fields = dict(body)
    code = str(fields.get("error") or f"http_{status}")
    description = str(fields.get("error_description") or f"warrant answered HTTP {status}")
    policies = fields.get("policies")
    kwargs: dict[str, Any] = {
        "error": code,
        "status": status,
        "refused_by": fields.get("refused_by"),
        "policies": policies if isinstance(policies, list) else None,
        "how_to_get_access": fields.get("how_to_get_access"),
        "approval_id": fields.get("approval_id") if isinstance(fields.get("approval_id"), str) else None,
    }
    if status == 403 and fields.get("approval_state") == "pending":
        return ApprovalPending(description, **kwargs)
    if status == 403 and fields.get("approval_state") == "denied":
        return ApprovalDenied(description, **kwargs)
    if code == "access_denied" or status == 403:
        cls: type[WarrantError] = AccessDenied if default is WarrantError else default
        if default is AttestationError:
            cls = AttestationError
        return cls(description, **kwargs)
    if status == 503 or code in ("temporarily_unavailable", "unavailable", "audit_unavailable"):
        return Unavailable(description, **kwargs)
    if status == 401 or code == "invalid_token":
        return InvalidToken(description, **kwargs)
    return default(description, **kwargs)
