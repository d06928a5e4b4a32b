"""Drop-in auth for the HTTP clients agents use.

- :class:`WarrantAuth`: an ``httpx2.Auth`` (sync and async) that puts a fresh
  task token on every request and turns warrant's refusals into exceptions.
- :class:`RequestsAuth`: the same for ``requests``.
- :func:`openai_client`: an official ``openai.OpenAI``/``AsyncOpenAI`` pointed
  at an egress route.
- :func:`mcp_http_client`: an ``httpx2.AsyncClient`` for the official MCP
  SDK's Streamable HTTP transport, pointed at ``/mcp/<server>``.

A response is read here only when it is a refusal (401 or 403); any other
response, streamed or not, passes through untouched.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, AsyncGenerator, Generator, Iterable

import httpx2

from . import errors
from .client import TaskToken, claims

if TYPE_CHECKING:
    from .client import Warrant


class WarrantAuth(httpx2.Auth):
    """Puts a fresh task token on every request (see :meth:`Warrant.auth`)."""

    def __init__(
        self,
        warrant: "Warrant",
        *,
        audience: str | Iterable[str] | None,
        scope: str | Iterable[str],
        route: str | None = None,
        user_token: str | None = None,
        task_token: str | None = None,
    ) -> None:
        if user_token and task_token:
            raise errors.WarrantError("give user_token or task_token, not both", error="invalid_request")
        if audience is None and route is None:
            raise errors.WarrantError("give an audience or a route", error="invalid_request")
        self._w = warrant
        self._audience = audience
        self._route = route
        self._scope = scope
        self._user_token = user_token
        self._task_token = task_token
        self._header: str | None = None if route else "authorization"
        # The tokens this auth put on requests lately, so the transports of
        # the clients the SDK builds can take them off a request bound
        # elsewhere (a redirect followed inside the client).
        self._issued: list[str] = []

    def __repr__(self) -> str:
        return f"WarrantAuth(route={self._route!r}, audience={self._audience!r})"

    def _resolve(self) -> None:
        if self._audience is None or self._header is None:
            m = self._w.resource(self._route or "")
            if self._audience is None:
                self._audience = m.get("warrant_audience")
            self._header = str(m.get("warrant_token_header") or "authorization").lower()

    def task(self) -> TaskToken:
        """The task token the next request carries (fetched or refreshed
        when due)."""
        self._resolve()
        assert self._audience is not None
        if self._user_token:
            return self._w.exchange_task(self._user_token, self._audience, self._scope)
        if self._task_token:
            return self._w.delegate_task(self._task_token, self._audience, self._scope)
        return self._w.self_task(self._audience, self._scope)

    def _for_edge(self, url: httpx2.URL) -> bool:
        """Whether ``url`` is on the edge: the only place a task token goes."""
        if not self._w.edge_url:
            return False
        edge = httpx2.URL(self._w.edge_url)
        return (url.scheme, url.host, url.port) == (edge.scheme, edge.host, edge.port)

    def scrub(self, request: httpx2.Request) -> None:
        """Takes a token this auth issued off a request not bound for the
        edge (what a client following an upstream's redirect would send on)."""
        if self._for_edge(request.url):
            return
        header = self._header or "authorization"
        value = request.headers.get(header, "")
        if value.removeprefix("Bearer ").strip() in self._issued:
            del request.headers[header]

    def _apply(self, request: httpx2.Request, t: TaskToken) -> None:
        if t.token not in self._issued:
            self._issued = (self._issued + [t.token])[-32:]
        header = self._header or "authorization"
        if header == "authorization":
            request.headers["authorization"] = f"Bearer {t.token}"
        else:
            request.headers[header] = t.token

    def _after(self, request: httpx2.Request, response: httpx2.Response) -> None:
        # A redirect is built from this request's headers after the flow
        # ends: take the token off, so it cannot follow to another origin
        # (httpx2 drops `authorization` across origins, not other headers).
        if response.is_redirect:
            request.headers.pop(self._header or "authorization", None)

    def _refusal(self, t: TaskToken, response: httpx2.Response) -> errors.WarrantError | None:
        if response.status_code == 401 and 'realm="warrant"' in response.headers.get("www-authenticate", ""):
            return _unauthorized(self._w, t, response)
        if response.status_code == 403:
            body = _json(response)
            if isinstance(body, dict) and isinstance(body.get("error"), dict) and "refused_by" in body["error"]:
                return errors.from_response(403, body)
        return None

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        if not self._for_edge(request.url):
            # A task token goes to the edge only: not to another origin (a
            # redirect an upstream sent, a client used for something else).
            yield request
            return
        t = self.task()
        self._apply(request, t)
        response = yield request
        self._after(request, response)
        if response.status_code in (401, 403):
            response.read()
            e = self._refusal(t, response)
            if e is not None:
                raise e

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        if not self._for_edge(request.url):
            yield request
            return
        t = await asyncio.to_thread(self.task)
        self._apply(request, t)
        response = yield request
        self._after(request, response)
        if response.status_code in (401, 403):
            await response.aread()
            e = await asyncio.to_thread(self._refusal, t, response)
            if e is not None:
                raise e


def _unauthorized(w: "Warrant", t: TaskToken, response: httpx2.Response) -> errors.WarrantError:
    """Why the edge did not take a token: revoked (the broker says it is no
    longer active though it has not expired) or otherwise invalid."""
    body = _json(response)
    detail = errors.from_response(401, body)
    expired = claims(t.token).get("exp", 0) <= time.time()
    active = True
    if not expired:
        try:
            active = bool(w.introspect(t.token).get("active"))
        except errors.WarrantError:
            active = True  # cannot tell; say what the edge said
    if not expired and not active:
        w.forget(t.token)
        return errors.TaskRevoked(detail.description, error="invalid_token", status=401)
    w.forget(t.token)
    return detail


class RequestsAuth:
    """A ``requests`` auth carrying a fresh task token (see
    :meth:`Warrant.requests_auth`)."""

    def __init__(self, auth: WarrantAuth) -> None:
        self._auth = auth

    def __call__(self, r: Any) -> Any:
        if not self._auth._for_edge(httpx2.URL(r.url)):
            return r  # a task token goes to the edge only
        t = self._auth.task()
        header = self._auth._header or "authorization"
        r.headers[header] = f"Bearer {t.token}" if header == "authorization" else t.token

        def check(resp: Any, **_: Any) -> Any:
            if resp.is_redirect:
                # requests copies this request's headers into the redirect
                # (dropping only `authorization` across hosts): take the
                # token off first.
                resp.request.headers.pop(header, None)
            if resp.status_code in (401, 403):
                fake = httpx2.Response(resp.status_code, headers=dict(resp.headers), content=resp.content)
                e = self._auth._refusal(t, fake)
                if e is not None:
                    raise e
            return resp

        r.register_hook("response", check)
        return r


class _EdgeOnly(httpx2.BaseTransport):
    """A transport that never sends a task token anywhere but the edge: a
    client that follows redirects copies headers into the redirected request
    without asking the auth again, and drops only `authorization` across
    origins."""

    def __init__(self, inner: httpx2.BaseTransport, auth: WarrantAuth) -> None:
        self._inner, self._auth = inner, auth

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self._auth.scrub(request)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class _AsyncEdgeOnly(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, auth: WarrantAuth) -> None:
        self._inner, self._auth = inner, auth

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self._auth.scrub(request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def http_client(w: "Warrant", auth: WarrantAuth, asynchronous: bool, **kw: Any) -> Any:
    """An httpx2 client with `auth` whose transport keeps task tokens on
    the edge, whatever its redirect settings."""
    kw.setdefault("timeout", httpx2.Timeout(30.0, read=300.0))
    if asynchronous:
        inner: Any = httpx2.AsyncHTTPTransport(verify=w._verify)
        return httpx2.AsyncClient(auth=auth, transport=_AsyncEdgeOnly(inner, auth), **kw)
    return httpx2.Client(auth=auth, transport=_EdgeOnly(httpx2.HTTPTransport(verify=w._verify), auth), **kw)


def openai_client(
    w: "Warrant",
    *,
    route: str,
    scope: str | Iterable[str],
    user_token: str | None,
    asynchronous: bool,
    base_path: str = "/v1",
    **kw: Any,
) -> Any:
    import openai

    auth = w.auth(route=route, scope=scope, user_token=user_token)
    base_url = f"{w.edge_url}/{route}{base_path}"
    timeout = kw.pop("timeout", 600.0)
    # The OpenAI SDK follows redirects: the transport keeps the token on the edge.
    http = http_client(w, auth, asynchronous, timeout=timeout)
    cls: Any = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    # The API key is a placeholder: the auth replaces it with the task
    # token, and the edge puts the real key on at the last hop.
    return cls(base_url=base_url, api_key="warrant-task-token", http_client=http, **kw)


def mcp_http_client(
    w: "Warrant", server: str, *, scope: str | Iterable[str], user_token: str | None = None, **kw: Any
) -> httpx2.AsyncClient:
    auth = w.auth(route=f"mcp/{server}", scope=scope, user_token=user_token)
    return http_client(w, auth, True, **kw)


def _json(r: httpx2.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None
