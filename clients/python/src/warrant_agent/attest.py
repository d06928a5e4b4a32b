"""How a process proves what it is to warrant, and gets its identity token.

Three attestations, one per way an agent runs:

- :class:`UnixSocket`: the agent socket of a broker on the same host
  (``<data-dir>/agent.sock``). The kernel tells the broker the uid, pid and
  executable of the process that connected; nothing secret is configured.
- :class:`OidcTokenFile`: a platform token in a file, such as a Kubernetes
  projected service-account token. The file is read again at every
  attestation, so a token the platform rotated is picked up.
- :class:`JoinToken`: a one-time join token (``warrant agent join-token``);
  the identity it gives is then renewed with itself before it expires. If
  the process sleeps past the identity's expiry it needs a new join token.

Each returns an :class:`Identity`. The client renews it before it expires.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2

from . import errors


@dataclass(frozen=True)
class Identity:
    """An identity token (a JWT-SVID) and when it stops being good."""

    token: str = field(repr=False)
    spiffe_id: str
    #: ``time.monotonic()`` at which the broker's lifetime runs out (counted
    #: from before the request was sent, so never later than the real expiry).
    expires_at: float
    lifetime: float


def _identity(body: Any, sent_at: float) -> Identity:
    try:
        token = body["identity_token"]
        life = float(body["expires_in"])
        from .client import expiry

        return Identity(
            token=token,
            spiffe_id=body.get("spiffe_id", ""),
            expires_at=expiry(token, sent_at + life),
            lifetime=life,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise errors.WarrantError("the broker's identity answer is not what warrant sends", error="invalid_response") from e


def _answer(r: httpx2.Response, sent_at: float) -> Identity:
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200:
        raise errors.from_response(r.status_code, body, default=errors.AttestationError)
    return _identity(body, sent_at)


class Attestation:
    """A way to get an identity token. Subclasses are safe to share between
    threads (the client serialises renewals)."""

    #: Name used in messages and ``repr``.
    kind = "attestation"

    def attest(self, broker: httpx2.Client, audience: str | None) -> Identity:
        raise NotImplementedError

    def renew(self, broker: httpx2.Client, current: Identity, audience: str | None) -> Identity:
        """A fresh identity before ``current`` expires; attesting again by
        default."""
        return self.attest(broker, audience)


class UnixSocket(Attestation):
    """The broker's agent socket (``<data-dir>/agent.sock``)."""

    kind = "unix"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"UnixSocket({self.path!r})"

    def attest(self, broker: httpx2.Client, audience: str | None) -> Identity:
        body = {"audience": audience} if audience else {}
        sent = time.monotonic()
        try:
            # A fresh connection each time: the broker looks at the process
            # when it accepts. It may answer 307 with a one-time proof when
            # the request raced that look; following it (same method and
            # body) is what the broker asks for.
            with httpx2.Client(
                transport=httpx2.HTTPTransport(uds=self.path),
                timeout=self._timeout,
                follow_redirects=True,
                max_redirects=3,
            ) as c:
                r = c.post("http://localhost/v1/identity", json=body)
        except httpx2.TransportError as e:
            raise errors.Unavailable(
                f"cannot reach the agent socket `{self.path}`: {e}; is the broker running, and is this its data directory?",
                error="unavailable",
            ) from e
        return _answer(r, sent)


class OidcTokenFile(Attestation):
    """A platform OIDC token in a file (a Kubernetes projected service-account
    token, a CI job token), read again at each attestation."""

    kind = "oidc"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"OidcTokenFile({self.path!r})"

    def _read(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise errors.AttestationError(
                f"cannot read the OIDC token file `{self.path}`: {e.strerror}", error="invalid_request"
            ) from e
        if not token:
            raise errors.AttestationError(f"the OIDC token file `{self.path}` is empty", error="invalid_request")
        return token

    def attest(self, broker: httpx2.Client, audience: str | None) -> Identity:
        body: dict[str, Any] = {"token": self._read()}
        if audience:
            body["audience"] = audience
        sent = time.monotonic()
        return _answer(_post(broker, "/v1/attest/oidc", json=body), sent)


class JoinToken(Attestation):
    """A one-time join token; the identity is then renewed with itself."""

    kind = "join"

    def __init__(self, token: str) -> None:
        self._token: str | None = token.strip()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "JoinToken([redacted])"

    def attest(self, broker: httpx2.Client, audience: str | None) -> Identity:
        with self._lock:
            token, self._token = self._token, None
        if not token:
            raise errors.AttestationError(
                "the join token was used already and the identity it gave has expired; "
                "ask an administrator for a new one (`warrant agent join-token`)",
                error="invalid_grant",
            )
        body: dict[str, Any] = {"token": token}
        if audience:
            body["audience"] = audience
        sent = time.monotonic()
        return _answer(_post(broker, "/v1/attest/join", json=body), sent)

    def renew(self, broker: httpx2.Client, current: Identity, audience: str | None) -> Identity:
        if time.monotonic() >= current.expires_at:
            return self.attest(broker, audience)
        body = {"audience": audience} if audience else {}
        sent = time.monotonic()
        r = _post(broker, "/v1/identity/renew", json=body, headers={"authorization": f"Bearer {current.token}"})
        return _answer(r, sent)


def _post(broker: httpx2.Client, path: str, **kw: Any) -> httpx2.Response:
    try:
        return broker.post(path, **kw)
    except httpx2.TransportError as e:
        raise errors.Unavailable(f"cannot reach the broker at {broker.base_url}: {e}", error="unavailable") from e


def from_env(env: dict[str, str] | None = None) -> Attestation:
    """The attestation the environment names: exactly one of
    ``WARRANT_AGENT_SOCKET``, ``WARRANT_OIDC_TOKEN_FILE``,
    ``WARRANT_JOIN_TOKEN`` (or ``WARRANT_JOIN_TOKEN_FILE``)."""
    env = dict(os.environ if env is None else env)
    found = [k for k in ("WARRANT_AGENT_SOCKET", "WARRANT_OIDC_TOKEN_FILE", "WARRANT_JOIN_TOKEN", "WARRANT_JOIN_TOKEN_FILE") if env.get(k)]
    if len(found) > 1:
        raise errors.WarrantError(
            f"more than one attestation is set ({', '.join(found)}); set exactly one", error="invalid_request"
        )
    if not found:
        raise errors.WarrantError(
            "no attestation given: pass attestation=UnixSocket(...)/OidcTokenFile(...)/JoinToken(...), "
            "or set WARRANT_AGENT_SOCKET, WARRANT_OIDC_TOKEN_FILE or WARRANT_JOIN_TOKEN",
            error="invalid_request",
        )
    k = found[0]
    if k == "WARRANT_AGENT_SOCKET":
        return UnixSocket(env[k])
    if k == "WARRANT_OIDC_TOKEN_FILE":
        return OidcTokenFile(env[k])
    if k == "WARRANT_JOIN_TOKEN":
        return JoinToken(env[k])
    with open(env[k], encoding="utf-8") as f:
        return JoinToken(f.read())
