"""The official MCP Python SDK as an agent, through warrant's MCP gateway.

usage: mcp_client.py URL TASK_TOKEN MODE
MODE is the SDK's connect mode: "auto" (probes server/discover, falls back to
the initialize handshake) or "legacy". Prints a JSON object of what happened:
the tools listed, an allowed call, calls refused by policy (by tool and by
argument), an unknown tool, and the session id the gateway issued.
"""
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

url, token, mode = sys.argv[1], sys.argv[2], sys.argv[3]


async def attempt(coro):
    try:
        r = await coro
        return {"ok": [c.text for c in r.content if getattr(c, "text", None)], "is_error": r.is_error}
    except MCPError as e:
        return {"code": e.error.code, "message": e.error.message, "data": e.error.data}


async def main():
    out = {}
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
            out["protocol"] = c.session.protocol_version
            tools = await c.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            out["allowed"] = await attempt(c.call_tool("read_file", {"path": "/srv/reports/q3.csv"}))
            out["outside"] = await attempt(c.call_tool("read_file", {"path": "/etc/shadow"}))
            out["denied_tool"] = await attempt(c.call_tool("crash", {}))
            out["unknown_tool"] = await attempt(c.call_tool("delete_repository", {}))
            out["search"] = await attempt(c.call_tool("search", {"query": "q", "labels": ["public"]}))
    print(json.dumps(out))


asyncio.run(main())
