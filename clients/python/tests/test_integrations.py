"""The official OpenAI and MCP SDKs through the real edge, with the SDK's auth."""

from __future__ import annotations

import asyncio
import time

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from warrant_agent import AccessDenied, TaskRevoked, claims

from conftest import TTL


def test_openai_sdk_keeps_working_past_token_expiry(broker, warrant):
    alice = broker.user_token("alice", "support")
    client = warrant.openai_client(route="openai", scope="llm:chat", user_token=alice)
    seen = len(broker.upstream_requests())
    first = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert first.choices[0].message.content == "Hello from upstream"
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "Hello from upstream"
    # Past the first task token's whole lifetime: the client still works.
    time.sleep(TTL + 1)
    again = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "again"}])
    assert again.choices[0].message.content == "Hello from upstream"
    reqs = broker.upstream_requests()[seen:]
    assert len(reqs) == 3
    for r in reqs:
        assert r["headers"]["authorization"] == "Bearer sk-upstream-0123456789"
    assert warrant.requests["exchange"] >= 2
    client.close()


def test_async_openai_sdk_and_revocation(broker, warrant):
    alice = broker.user_token("alice", "support")

    async def run():
        client = warrant.async_openai_client(route="openai", scope="llm:chat llm:async", user_token=alice)
        r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "Hello from upstream"
        token = await warrant.aexchange(alice, "https://api.openai.example", "llm:chat llm:async")
        broker.cli("revoke", "--txn", claims(token)["txn"])
        with pytest.raises(TaskRevoked):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        await client.close()

    asyncio.run(run())


def test_openai_sdk_refused_by_the_route_raises_access_denied(broker, warrant):
    client = warrant.openai_client(route="openai", scope="llm:chat")
    with pytest.raises(AccessDenied) as e:
        client.models.delete("gpt-x")  # DELETE is not in the route's allow list
    assert e.value.refused_by == "route allow list"
    client.close()


def test_mcp_sdk_through_the_gateway(broker, warrant):
    alice = broker.user_token("alice", "support")

    async def run():
        http = warrant.mcp_http_client("files", scope="files:read", user_token=alice)
        async with http:
            async with Client(streamable_http_client(warrant.mcp_url("files"), http_client=http)) as c:
                tools = await c.list_tools()
                assert "read_file" in {t.name for t in tools.tools}
                ok = await c.call_tool("read_file", {"path": "/srv/reports/q3.csv"})
                assert not ok.is_error
                with pytest.raises(MCPError) as e:
                    await c.call_tool("read_file", {"path": "/etc/shadow"})
                assert "policy" in e.value.error.message
                # The session outlives its first task token.
                await asyncio.sleep(TTL + 1)
                again = await c.call_tool("read_file", {"path": "/srv/reports/q4.csv"})
                assert not again.is_error

    asyncio.run(run())
    assert warrant.requests["exchange"] >= 2
