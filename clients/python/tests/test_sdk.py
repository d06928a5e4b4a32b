"""The SDK against a real broker: identity, task tokens, refresh, refusals."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx2
import pytest
import requests

from warrant_agent import (
    AccessDenied,
    ApprovalDenied,
    ApprovalPending,
    AttestationError,
    JoinToken,
    OidcTokenFile,
    TaskRevoked,
    UnixSocket,
    Warrant,
    WarrantError,
    claims,
)
from warrant_agent.attest import from_env

from conftest import TTL

OPENAI = "https://api.openai.example"


def test_unix_identity_is_this_process_and_is_cached(broker, warrant):
    token = warrant.identity()
    c = claims(token)
    assert c["sub"].startswith("spiffe://") and "/agent/sdk-agent/" in c["sub"]
    assert c["attestor"] == "unix"
    assert warrant.identity() == token
    assert warrant.requests == {"identity": 1}


def test_self_token_and_a_policy_refusal_is_typed(broker, warrant):
    t = warrant.self_token(OPENAI, "llm:chat")
    c = claims(t)
    assert c["aud"] in (OPENAI, [OPENAI]) and c["scope"] == "llm:chat" and "act" not in c
    with pytest.raises(AccessDenied) as e:
        warrant.self_token("https://api.github.example", "repo:read")
    assert e.value.status == 403 and e.value.error == "access_denied"
    assert e.value.refused_by == "policy"
    assert e.value.policies, "the deciding policies (here the default deny) are named"
    assert "permit" in e.value.how_to_get_access
    assert t not in str(e.value)


def test_an_unregistered_process_gets_a_typed_attestation_refusal(broker, tmp_path):
    # A join token that was never issued attests nothing.
    w = Warrant(broker.url, attestation=JoinToken("wjt_forged0000000000000000"))
    with pytest.raises(AttestationError) as e:
        w.identity()
    assert e.value.status in (400, 403)


def test_exchange_for_a_user_names_both_and_is_cached_per_user(broker, warrant):
    alice = broker.user_token("alice", "support")
    bob = broker.user_token("bob", "support")
    ta = warrant.exchange(alice, OPENAI, "llm:chat")
    assert warrant.exchange(alice, OPENAI, "llm:chat") == ta
    tb = warrant.exchange(bob, OPENAI, "llm:chat")
    assert tb != ta
    ca, cb = claims(ta), claims(tb)
    assert ca["sub"] == "user:dev/alice" and cb["sub"] == "user:dev/bob"
    assert "/agent/sdk-agent/" in ca["act"]["sub"]
    # Scope order does not make another task.
    t2 = warrant.exchange(alice, OPENAI, "llm:chat llm:embed")
    assert warrant.exchange(alice, OPENAI, ["llm:embed", "llm:chat"]) == t2
    mallory = broker.user_token("mallory", "sales")
    with pytest.raises(AccessDenied) as e:
        warrant.exchange(mallory, OPENAI, "llm:chat")
    assert e.value.refused_by == "policy"


def test_introspect_and_revoke(broker, warrant):
    t = warrant.self_token(OPENAI, "llm:chat llm:revoke-me")
    assert warrant.introspect(t)["active"] is True
    warrant.revoke(t)
    assert warrant.introspect(t)["active"] is False
    # The cache dropped it: the next call is a new task.
    t2 = warrant.self_token(OPENAI, "llm:chat llm:revoke-me")
    assert t2 != t and warrant.introspect(t2)["active"] is True


def test_a_long_run_never_sends_an_expired_token(broker, warrant):
    """Six token lifetimes (30 minutes of five-minute tokens) of steady
    calls through the edge with httpx2 (sync and async) and requests: every
    request is accepted, and every token sent had time left when it left."""
    auth = warrant.auth(route="openai", scope="llm:chat")
    sent: list[tuple[float, str]] = []

    def remember(request):
        sent.append((time.time(), request.headers["authorization"].removeprefix("Bearer ")))

    async def on_request(request):
        remember(request)

    sync = httpx2.Client(auth=auth, event_hooks={"request": [remember]})
    session = requests.Session()
    session.auth = warrant.requests_auth(route="openai", scope="llm:chat")

    async def async_call(client):
        return await client.get(f"{broker.edge_url}/openai/echo")

    statuses = []
    deadline = time.monotonic() + 6 * TTL
    with sync:
        aclient = httpx2.AsyncClient(auth=auth, event_hooks={"request": [on_request]})
        loop = asyncio.new_event_loop()
        try:
            while time.monotonic() < deadline:
                statuses.append(sync.get(f"{broker.edge_url}/openai/echo").status_code)
                statuses.append(loop.run_until_complete(async_call(aclient)).status_code)
                r = session.get(f"{broker.edge_url}/openai/echo")
                statuses.append(r.status_code)
                time.sleep(0.25)
            loop.run_until_complete(aclient.aclose())
        finally:
            loop.close()
    assert statuses and set(statuses) == {200}, statuses
    for at, token in sent:
        assert claims(token)["exp"] > at + 0.5, "a token was sent with less than half a second left"
    distinct = {t for _, t in sent}
    assert len(distinct) >= 6, f"tokens were refreshed {len(distinct)} times"
    assert warrant.requests["identity"] >= 6
    # The upstream saw the stored key, never a task token.
    for req in broker.upstream_requests():
        assert req["headers"].get("authorization") in (None, "Bearer sk-upstream-0123456789")
        assert not any(t in str(req) for t in distinct)


def test_concurrent_callers_share_one_refresh(broker):
    w = Warrant(broker.url, edge_url=broker.edge_url, attestation=UnixSocket(broker.agent_socket))
    scope = "llm:chat llm:concurrent"
    before = len(broker.audit("token.self"))
    barrier = threading.Barrier(24)
    got: list[str] = []

    def worker():
        barrier.wait()
        got.append(w.self_token(OPENAI, scope))

    async def async_callers():
        return await asyncio.gather(*(w.aself_token(OPENAI, scope) for _ in range(8)))

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    got += asyncio.run(async_callers())
    for t in threads:
        t.join()
    assert len(got) == 32 and len(set(got)) == 1
    assert w.requests == {"identity": 1, "self": 1}
    # Once due for refresh, again one request for all.
    life = claims(got[0])["exp"] - time.time()
    time.sleep(max(0.0, life - 1.5))
    threads = [threading.Thread(target=worker) for _ in range(24)]
    barrier.reset()
    got.clear()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1
    assert w.requests["self"] == 2
    grants = [r for r in broker.audit("token.self")[before:] if r.get("decision") == "allow"]
    assert len(grants) == 2, "the broker issued exactly two tokens"
    w.close()


def test_revocation_surfaces_as_task_revoked(broker, warrant):
    alice = broker.user_token("alice", "support")
    client = httpx2.Client(auth=warrant.auth(route="openai", scope="llm:chat", user_token=alice))
    assert client.get(f"{broker.edge_url}/openai/echo").status_code == 200
    task = claims(warrant.exchange(alice, OPENAI, "llm:chat"))["task"]
    broker.cli("revoke", "--task", task)
    with pytest.raises(TaskRevoked) as e:
        client.get(f"{broker.edge_url}/openai/echo")
    assert e.value.status == 401 and "revoked" in e.value.description
    # Through requests too, and the edge's rule refusals are typed as well.
    session = requests.Session()
    session.auth = warrant.requests_auth(route="openai", scope="llm:chat", user_token=alice)
    r = session.get(f"{broker.edge_url}/openai/echo")
    assert r.status_code == 200  # a new task: the cached one was dropped
    with pytest.raises(AccessDenied) as e:
        session.get(f"{broker.edge_url}/openai/admin")
    assert e.value.refused_by == "route allow list" and e.value.how_to_get_access
    client.close()


def test_sub_delegation_narrows_and_dies_with_its_parent(broker, warrant):
    alice = broker.user_token("alice", "support")
    parent = warrant.exchange(alice, OPENAI, "llm:chat llm:embed")
    sub = Warrant(broker.url, edge_url=broker.edge_url, attestation=JoinToken(broker.join_token("sub-agent")))
    child = sub.delegate(parent, OPENAI, "llm:chat")
    c, p = claims(child), claims(parent)
    assert c["sub"] == "user:dev/alice" and c["scope"] == "llm:chat"
    assert "/agent/sub-agent/" in c["act"]["sub"] and "/agent/sdk-agent/" in c["act"]["act"]["sub"]
    assert c["txn"] == p["txn"] and c["parent"] == p["task"] and c["exp"] <= p["exp"]
    with pytest.raises(WarrantError) as e:
        sub.delegate(parent, OPENAI, "llm:chat admin:all")
    assert e.value.error == "invalid_scope" and "admin:all" in e.value.description
    # Revoking the parent task ends the child, and a new hand-over fails typed.
    warrant.revoke(parent)
    assert sub.introspect(child)["active"] is False
    sub.forget()
    with pytest.raises(TaskRevoked):
        sub.delegate(parent, OPENAI, "llm:chat")
    sub.close()


def test_join_identity_is_renewed_with_itself(broker):
    token = broker.join_token("sub-agent")
    w = Warrant(broker.url, attestation=JoinToken(token))
    first = w.identity_info()
    time.sleep(max(0.0, first.lifetime - 1.5))
    second = w.identity_info()
    assert second.token != first.token and second.spiffe_id == first.spiffe_id
    assert w.requests["identity"] == 2
    # The join token itself was used once.
    with pytest.raises(AttestationError):
        Warrant(broker.url, attestation=JoinToken(token)).identity()
    w.close()


def test_oidc_token_file_is_read_again_when_it_changes(broker, tmp_path):
    f = tmp_path / "token"
    f.write_text(broker.platform.token("pod-uid-a"))
    w = Warrant(broker.url, attestation=OidcTokenFile(f))
    first = w.identity_info()
    assert "/agent/pod-agent/" in first.spiffe_id
    assert claims(w.self_token(OPENAI, "llm:chat"))["sub"] == first.spiffe_id
    # The platform rotates the file (here: a new pod's token); the next
    # renewal reads it.
    f.write_text(broker.platform.token("pod-uid-b"))
    time.sleep(max(0.0, first.lifetime - 1.5))
    second = w.identity_info()
    assert second.spiffe_id != first.spiffe_id
    # A token for another service account does not attest as this agent.
    f.write_text(broker.platform.token("pod-uid-c", sa="intruder"))
    with pytest.raises(AttestationError):
        Warrant(broker.url, attestation=OidcTokenFile(f)).identity()
    f.write_text("")
    with pytest.raises(AttestationError, match="empty"):
        Warrant(broker.url, attestation=OidcTokenFile(f)).identity()
    w.close()


def test_attestation_comes_from_the_environment(broker):
    assert isinstance(from_env({"WARRANT_AGENT_SOCKET": broker.agent_socket}), UnixSocket)
    assert isinstance(from_env({"WARRANT_OIDC_TOKEN_FILE": "/var/run/token"}), OidcTokenFile)
    assert repr(from_env({"WARRANT_JOIN_TOKEN": "wjt_x"})) == "JoinToken([redacted])"
    with pytest.raises(WarrantError, match="exactly one"):
        from_env({"WARRANT_AGENT_SOCKET": "a", "WARRANT_JOIN_TOKEN": "b"})
    with pytest.raises(WarrantError, match="no attestation"):
        from_env({})
    with pytest.raises(WarrantError, match="agent socket"):
        Warrant(broker.url, attestation=UnixSocket(broker.tmp / "nope.sock")).identity()
    # No default broker address: a squatter on the default port gets nothing.
    import os
    saved = os.environ.pop("WARRANT_URL", None)
    try:
        with pytest.raises(WarrantError, match="say where the broker is"):
            Warrant(attestation=JoinToken("wjt_x"))
    finally:
        if saved is not None:
            os.environ["WARRANT_URL"] = saved


def test_a_task_token_never_follows_a_redirect_to_another_origin(broker, warrant):
    """An upstream's redirect to another origin (passed through by the edge)
    must not carry the task token, whichever header the route reads it from
    (attacker round: `x-api-key` followed requests' and httpx2's redirects)."""
    alice = broker.user_token("alice", "support")
    sent = []

    class Recording(requests.Session):
        def send(self, request, **kw):
            sent.append(dict(request.headers))
            return super().send(request, **kw)

    session = Recording()
    session.auth = warrant.requests_auth(route="keyed", scope="llm:chat", user_token=alice)
    assert session.get(f"{broker.edge_url}/keyed/echo").status_code == 200
    assert "x-api-key" in {k.lower() for k in sent[-1]}
    sent.clear()
    with pytest.raises(requests.ConnectionError):
        session.get(f"{broker.edge_url}/keyed/redirect")
    assert len(sent) == 2, sent
    assert not {"x-api-key", "authorization"} & {k.lower() for k in sent[1]}, sent[1]

    # What reaches the network: a transport under the SDK's own, recording.
    seen = []

    class Record(httpx2.BaseTransport):
        def __init__(self):
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request):
            seen.append(dict(request.headers))
            return self.inner.handle_request(request)

    http = warrant.http_client(route="keyed", scope="llm:chat", user_token=alice,
                               client_kwargs={"follow_redirects": True})
    http._transport._inner = Record()
    with http:
        with pytest.raises(httpx2.ConnectError):
            http.get(f"{broker.edge_url}/keyed/redirect")
        # Used for another origin, the client adds no token either.
        with pytest.raises(httpx2.ConnectError):
            http.get("http://127.0.0.1:9/elsewhere")
    assert len(seen) == 3, seen
    assert "x-api-key" in seen[0]
    for h in seen[1:]:
        assert not {"x-api-key", "authorization"} & set(h), h


def test_refused_subjects_do_not_pile_up_in_the_cache(broker):
    """Each distinct user token makes a cache entry; entries that hold
    nothing (a refused exchange) are dropped once the cache is full, so a
    stream of garbage tokens cannot grow it without bound."""
    from warrant_agent.client import _MAX_SLOTS

    w = Warrant(broker.url, attestation=UnixSocket(broker.agent_socket))
    good = w.self_token(OPENAI, "llm:chat")
    for i in range(_MAX_SLOTS + 200):
        w._slot(("exchange", f"{i:064x}", OPENAI, "llm:chat"))  # as a refused exchange leaves it
    assert len(w._slots) <= _MAX_SLOTS
    assert w.self_token(OPENAI, "llm:chat") == good, "a usable token survives"
    w.close()


def test_approval_is_typed_pending_then_passes_once_or_is_denied(broker, warrant):
    alice = broker.user_token("alice", "support")
    with pytest.raises(ApprovalPending) as e:
        warrant.exchange(alice, "https://payments.example", "pay")
    assert isinstance(e.value, AccessDenied) and e.value.status == 403
    assert e.value.refused_by == "approval required"
    approval = e.value.approval_id
    assert approval and approval.startswith("apr_")
    assert approval in e.value.how_to_get_access
    # Retried while pending: the same approval.
    with pytest.raises(ApprovalPending) as again:
        warrant.exchange(alice, "https://payments.example", "pay")
    assert again.value.approval_id == approval
    broker.cli("approval", "approve", approval, "--reason", "sdk test")
    t = warrant.exchange(alice, "https://payments.example", "pay")
    assert claims(t)["sub"] == "user:dev/alice"
    # Another scope is another request; denied, it stays refused.
    with pytest.raises(ApprovalPending) as other:
        warrant.exchange(alice, "https://payments.example", "pay refund")
    broker.cli("approval", "deny", other.value.approval_id, "--reason", "no refunds")
    with pytest.raises(ApprovalDenied) as denied:
        warrant.exchange(alice, "https://payments.example", "pay refund")
    assert denied.value.approval_id == other.value.approval_id
    assert "no refunds" in str(denied.value)
