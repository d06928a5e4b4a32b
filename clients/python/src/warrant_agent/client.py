"""The agent's client: its identity, its task tokens, and their refresh.

One :class:`Warrant` per process is the intended use. It attests once, renews
its identity before it expires, and keeps task tokens cached per (kind,
subject, audience, scope), each refreshed before it expires. Any number of
threads and event loops may call it at once: callers that find the same
token due for refresh share one request to the broker, and the others wait
for its answer.

What it deliberately does not do: start a new task when a task is revoked
(that surfaces as :class:`~warrant_agent.errors.TaskRevoked`), keep using a
token after its expiry, or log a token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import httpx2

from . import attest as _attest
from . import errors

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


def refresh_margin(lifetime: float) -> float:
    """How long before expiry a token is replaced: a fifth of its lifetime,
    at least one second and at most a minute (a five-minute token is
    replaced a minute early, a ten-second one two seconds early)."""
    return min(60.0, max(1.0, lifetime / 5.0))


@dataclass(frozen=True)
class TaskToken:
    """A task token and what the broker said about it."""

    token: str = field(repr=False)
    scope: str
    audience: tuple[str, ...]
    #: ``time.monotonic()`` when its lifetime runs out (counted from before
    #: the request was sent).
    expires_at: float
    lifetime: float

    @property
    def claims(self) -> dict[str, Any]:
        """The token's claims, decoded without verification (for display:
        the edge and the broker verify)."""
        return claims(self.token)


def expiry(token: str, by_lifetime: float) -> float:
    """When ``token`` stops being good, on the ``time.monotonic()`` clock:
    the earlier of its ``exp`` claim (what the edge checks, in whole
    seconds) and the lifetime the broker gave counted from before the
    request was sent."""
    try:
        exp = float(claims(token)["exp"])
    except (errors.WarrantError, KeyError, TypeError, ValueError):
        return by_lifetime
    return min(by_lifetime, time.monotonic() + (exp - time.time()))


def claims(token: str) -> dict[str, Any]:
    """A JWT's claims, decoded without verifying it."""
    try:
        part = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError) as e:
        raise errors.WarrantError("not a JWT", error="invalid_request") from e


#: Task tokens held at once before spent entries are dropped.
_MAX_SLOTS = 1024


class _Slot:
    """One cached value, refreshed by one caller at a time."""

    __slots__ = ("lock", "value")

    def __init__(self) -> None:
        # A threading lock, not an asyncio one: async callers run the
        # refresh in a worker thread, so threads and event loops share it.
        self.lock = threading.Lock()
        self.value: Any = None


def _fresh(v: Any, now: float) -> bool:
    return v is not None and now < v.expires_at - refresh_margin(v.lifetime)


def _usable(v: Any, now: float) -> bool:
    # Still valid for a moment more: good enough to ride out a broker that
    # is briefly unavailable, never past its expiry.
    return v is not None and now < v.expires_at - 0.5


def _digest(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _scope(scope: str | Iterable[str]) -> str:
    items = scope.split() if isinstance(scope, str) else list(scope)
    if not items:
        raise errors.WarrantError("a scope is required", error="invalid_scope")
    return " ".join(sorted(set(items)))


def _audiences(audience: str | Iterable[str]) -> tuple[str, ...]:
    items = (audience,) if isinstance(audience, str) else tuple(audience)
    if not items or not all(items):
        raise errors.WarrantError("an audience is required", error="invalid_target")
    return tuple(sorted(set(items)))


class Warrant:
    """An agent's connection to warrant.

    ``url`` is the broker's API (``WARRANT_URL``; required: there is no
    default address a squatter could answer on), ``edge_url`` its edge
    listener (``WARRANT_EDGE_URL``; needed for the edge integrations), and
    ``attestation`` how this process proves what it is (default: from the
    environment, see :func:`warrant_agent.attest.from_env`). ``ca_file``
    (``WARRANT_CA_FILE``) is the CA that signed the broker's and the edge's
    certificates when they speak TLS with a private CA.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        edge_url: str | None = None,
        attestation: _attest.Attestation | None = None,
        ca_file: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        # No default address: a process that bound the default port first
        # would receive join tokens, platform tokens and users' tokens.
        url = url or os.environ.get("WARRANT_URL")
        if not url:
            raise errors.WarrantError(
                "say where the broker is: Warrant(url=...) or WARRANT_URL (its API listener, e.g. http://127.0.0.1:8700)",
                error="invalid_request",
            )
        self.url = url.rstrip("/")
        self.edge_url = (edge_url or os.environ.get("WARRANT_EDGE_URL") or "").rstrip("/")
        self.attestation = attestation if attestation is not None else _attest.from_env()
        ca = ca_file or os.environ.get("WARRANT_CA_FILE")
        self._verify: Any = ca if ca else True
        self._timeout = timeout
        self._http = httpx2.Client(base_url=self.url, verify=self._verify, timeout=timeout)
        self._slots: dict[tuple[str, ...], _Slot] = {}
        self._slots_lock = threading.Lock()  # guards the dict only; held briefly
        self._metadata: dict[str, dict[str, Any]] = {}
        #: How many requests this client made to the token endpoint and to
        #: attest, by kind (for tests and metrics).
        self.requests: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Warrant(url={self.url!r}, attestation={self.attestation!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Warrant":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the cache ---------------------------------------------------------

    def _slot(self, key: tuple[str, ...]) -> _Slot:
        with self._slots_lock:
            s = self._slots.get(key)
            if s is None:
                if len(self._slots) >= _MAX_SLOTS:
                    self._prune()
                s = self._slots[key] = _Slot()
            return s

    def _prune(self) -> None:
        # Each distinct user token makes an entry: keep the map bounded by
        # dropping entries holding nothing usable that no one is filling.
        now = time.monotonic()
        for key, slot in list(self._slots.items()):
            if key[0] != "identity" and not slot.lock.locked() and not _usable(slot.value, now):
                del self._slots[key]

    def _cached(self, key: tuple[str, ...], fetch: Callable[[Any], Any]) -> Any:
        slot = self._slot(key)
        v = slot.value
        if _fresh(v, time.monotonic()):
            return v
        with slot.lock:
            v = slot.value
            if _fresh(v, time.monotonic()):
                return v  # another caller refreshed it while we waited
            try:
                new = fetch(v)
            except errors.Unavailable:
                if _usable(v, time.monotonic()):
                    return v
                raise
            slot.value = new
            return new

    def _count(self, kind: str) -> None:
        with self._slots_lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1

    def forget(self, token: str | None = None) -> None:
        """Drops cached task tokens: all of them, or the one equal to ``token``."""
        with self._slots_lock:
            slots = list(self._slots.items())
        for key, s in slots:
            if key[0] == "identity":
                continue
            v = s.value
            if v is not None and (token is None or v.token == token):
                s.value = None

    # -- identity ----------------------------------------------------------

    def identity_info(self) -> _attest.Identity:
        """This process's identity (attested, or renewed when due)."""

        def fetch(current: _attest.Identity | None) -> _attest.Identity:
            self._count("identity")
            if current is None:
                return self.attestation.attest(self._http, None)
            return self.attestation.renew(self._http, current, None)

        return self._cached(("identity",), fetch)

    def identity(self) -> str:
        """This process's identity token (audience: the broker)."""
        return self.identity_info().token

    @property
    def spiffe_id(self) -> str:
        return self.identity_info().spiffe_id

    # -- task tokens -------------------------------------------------------

    def _token_request(self, kind: str, form: list[tuple[str, str]]) -> TaskToken:
        form = form + [("client_assertion_type", JWT_BEARER), ("client_assertion", self.identity())]
        self._count(kind)
        sent = time.monotonic()
        r = self._post("/oauth2/token", form)
        body = _json(r)
        if r.status_code != 200:
            e = errors.from_response(r.status_code, body)
            if isinstance(e, errors.WarrantError) and "revoked" in e.description and e.error == "invalid_grant":
                raise errors.TaskRevoked(e.description, error=e.error, status=e.status) from None
            raise e
        try:
            life = float(body["expires_in"])
            return TaskToken(
                token=body["access_token"],
                scope=body.get("scope", ""),
                audience=tuple(a for k, a in form if k == "audience"),
                expires_at=expiry(body["access_token"], sent + life),
                lifetime=life,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise errors.WarrantError("the broker's token answer is not what warrant sends", error="invalid_response") from e

    def _post(self, path: str, form: list[tuple[str, str]]) -> httpx2.Response:
        try:
            return self._http.post(
                path,
                content=_form(form),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        except httpx2.TransportError as e:
            raise errors.Unavailable(f"cannot reach the broker at {self.url}: {e}", error="unavailable") from e

    def self_task(self, audience: str | Iterable[str], scope: str | Iterable[str]) -> TaskToken:
        """A task token for this agent acting for itself (OAuth client
        credentials with its identity token as the client assertion)."""
        aud, sc = _audiences(audience), _scope(scope)
        form = [("grant_type", "client_credentials"), ("scope", sc)] + [("audience", a) for a in aud]
        return self._cached(("self", "", " ".join(aud), sc), lambda _: self._token_request("self", form))

    def self_token(self, audience: str | Iterable[str], scope: str | Iterable[str]) -> str:
        return self.self_task(audience, scope).token

    def exchange_task(self, user_token: str, audience: str | Iterable[str], scope: str | Iterable[str]) -> TaskToken:
        """A task token for this agent acting for the user whose token is
        ``user_token`` (RFC 8693 token exchange)."""
        return self._exchange("exchange", user_token, TYPE_JWT, audience, scope)

    def exchange(self, user_token: str, audience: str | Iterable[str], scope: str | Iterable[str]) -> str:
        return self.exchange_task(user_token, audience, scope).token

    def delegate_task(self, task_token: str, audience: str | Iterable[str], scope: str | Iterable[str]) -> TaskToken:
        """Takes over part of a task another agent handed this one: a child
        task token, no wider than ``task_token`` in scope, audience and
        lifetime, with this agent added to the ``act`` chain."""
        return self._exchange("delegate", task_token, TYPE_ACCESS_TOKEN, audience, scope)

    def delegate(self, task_token: str, audience: str | Iterable[str], scope: str | Iterable[str]) -> str:
        return self.delegate_task(task_token, audience, scope).token

    def _exchange(self, kind: str, subject: str, subject_type: str, audience: Any, scope: Any) -> TaskToken:
        if not subject:
            raise errors.WarrantError("the subject token is empty", error="invalid_request")
        aud, sc = _audiences(audience), _scope(scope)
        form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", subject_type),
            ("actor_token", ""),  # filled per request: the identity renews
            ("actor_token_type", TYPE_JWT),
            ("scope", sc),
        ] + [("audience", a) for a in aud]

        def fetch(_: Any) -> TaskToken:
            f = [(k, self.identity() if k == "actor_token" else v) for k, v in form]
            return self._token_request(kind, f)

        # The subject is keyed by its digest: two users never share a task.
        return self._cached((kind, _digest(subject), " ".join(aud), sc), fetch)

    # -- introspection and revocation --------------------------------------

    def introspect(self, token: str) -> dict[str, Any]:
        """What the broker says of ``token`` now (RFC 7662): ``{"active":
        false}`` for one expired, revoked or unknown."""
        r = self._post("/oauth2/introspect", self._client_auth() + [("token", token)])
        body = _json(r)
        if r.status_code != 200:
            raise errors.from_response(r.status_code, body)
        return body

    def revoke(self, token: str) -> None:
        """Revokes a task token and every task delegated from it (RFC 7009)."""
        r = self._post("/oauth2/revoke", self._client_auth() + [("token", token)])
        if r.status_code != 200:
            raise errors.from_response(r.status_code, _json(r))
        self.forget(token)

    def _client_auth(self) -> list[tuple[str, str]]:
        return [("client_assertion_type", JWT_BEARER), ("client_assertion", self.identity())]

    # -- async ------------------------------------------------------------
    # The same calls for asyncio code. They run in a worker thread, so they
    # share the cache (and its one-refresh-at-a-time rule) with threads.

    async def aidentity(self) -> str:
        return await asyncio.to_thread(self.identity)

    async def aself_token(self, audience: Any, scope: Any) -> str:
        return await asyncio.to_thread(self.self_token, audience, scope)

    async def aexchange(self, user_token: str, audience: Any, scope: Any) -> str:
        return await asyncio.to_thread(self.exchange, user_token, audience, scope)

    async def adelegate(self, task_token: str, audience: Any, scope: Any) -> str:
        return await asyncio.to_thread(self.delegate, task_token, audience, scope)

    async def aintrospect(self, token: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.introspect, token)

    async def arevoke(self, token: str) -> None:
        await asyncio.to_thread(self.revoke, token)

    # -- the edge ----------------------------------------------------------

    def resource(self, path: str) -> dict[str, Any]:
        """The edge's description of a route (``"openai"``) or an MCP server
        (``"mcp/files"``) (RFC 9728), cached."""
        m = self._metadata.get(path)
        if m is not None:
            return m
        if not self.edge_url:
            raise errors.WarrantError(
                "say where the edge is: Warrant(edge_url=...) or WARRANT_EDGE_URL", error="invalid_request"
            )
        try:
            r = httpx2.get(
                f"{self.edge_url}/.well-known/oauth-protected-resource/{path}",
                verify=self._verify,
                timeout=self._timeout,
            )
        except httpx2.TransportError as e:
            raise errors.Unavailable(f"cannot reach the edge at {self.edge_url}: {e}", error="unavailable") from e
        if r.status_code == 404:
            what = f"MCP server `{path[4:]}`" if path.startswith("mcp/") else f"route `{path}`"
            raise errors.WarrantError(f"the edge at {self.edge_url} has no {what}", error="not_found", status=404)
        if r.status_code != 200:
            raise errors.from_response(r.status_code, _json(r))
        m = _json(r)
        self._metadata[path] = m
        return m

    def auth(
        self,
        *,
        audience: str | Iterable[str] | None = None,
        scope: str | Iterable[str],
        route: str | None = None,
        user_token: str | None = None,
        task_token: str | None = None,
    ) -> "WarrantAuth":
        """An ``httpx2.Auth`` (sync and async) that puts a fresh task token on
        every request. Give ``audience``, or a ``route`` (or ``mcp/<server>``)
        whose audience the edge describes. With ``user_token`` the agent acts
        for that user; with ``task_token`` it takes over part of that task;
        with neither it acts for itself."""
        from .integrations import WarrantAuth

        return WarrantAuth(self, audience=audience, scope=scope, route=route, user_token=user_token, task_token=task_token)

    def http_client(self, *, asynchronous: bool = False, client_kwargs: dict[str, Any] | None = None, **kw: Any) -> Any:
        """An ``httpx2.Client`` (or ``AsyncClient``) with :meth:`auth` (same
        arguments) whose transport never sends a task token anywhere but
        the edge, even when it follows an upstream's redirect: prefer it to
        passing :meth:`auth` to a client that follows redirects."""
        from .integrations import http_client

        return http_client(self, self.auth(**kw), asynchronous, **(client_kwargs or {}))

    def requests_auth(self, **kw: Any) -> Any:
        """The same for ``requests`` (arguments as :meth:`auth`)."""
        from .integrations import RequestsAuth

        return RequestsAuth(self.auth(**kw))

    def openai_client(self, *, route: str = "openai", scope: str | Iterable[str] = "llm:chat", user_token: str | None = None, **kw: Any) -> Any:
        """An official ``openai.OpenAI`` pointed at the edge's ``route``, whose
        every request carries a fresh task token."""
        from .integrations import openai_client

        return openai_client(self, route=route, scope=scope, user_token=user_token, asynchronous=False, **kw)

    def async_openai_client(self, *, route: str = "openai", scope: str | Iterable[str] = "llm:chat", user_token: str | None = None, **kw: Any) -> Any:
        """The same as an ``openai.AsyncOpenAI``."""
        from .integrations import openai_client

        return openai_client(self, route=route, scope=scope, user_token=user_token, asynchronous=True, **kw)

    def mcp_url(self, server: str) -> str:
        return f"{self.edge_url}/mcp/{server}"

    def mcp_http_client(self, server: str, *, scope: str | Iterable[str], user_token: str | None = None, **kw: Any) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` for the official MCP SDK's
        ``streamable_http_client(w.mcp_url(server), http_client=...)``."""
        from .integrations import mcp_http_client

        return mcp_http_client(self, server, scope=scope, user_token=user_token, **kw)


def _form(pairs: list[tuple[str, str]]) -> str:
    from urllib.parse import urlencode

    return urlencode(pairs)


def _json(r: httpx2.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None
