"""warrant's agent side: identity, task tokens and their refresh, and drop-in
auth for httpx2, requests, the OpenAI SDK and the MCP SDK.

    from warrant_agent import Warrant, UnixSocket

    w = Warrant(attestation=UnixSocket("warrant-data/agent.sock"))
    client = w.openai_client(route="openai", user_token=alice_token)
"""

from .attest import Attestation, Identity, JoinToken, OidcTokenFile, UnixSocket
from .client import TaskToken, Warrant, claims, refresh_margin
from .errors import (
    AccessDenied,
    ApprovalDenied,
    ApprovalPending,
    AttestationError,
    InvalidToken,
    TaskRevoked,
    Unavailable,
    WarrantError,
)

__all__ = [
    "AccessDenied",
    "ApprovalDenied",
    "ApprovalPending",
    "Attestation",
    "AttestationError",
    "Identity",
    "InvalidToken",
    "JoinToken",
    "OidcTokenFile",
    "TaskRevoked",
    "TaskToken",
    "UnixSocket",
    "Unavailable",
    "Warrant",
    "WarrantError",
    "claims",
    "refresh_margin",
]
