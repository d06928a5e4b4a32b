"""A real warrant broker for the SDK's tests.

One broker per test session, started from the binary the Rust build made
(``WARRANT_BIN``, default ``target/debug/warrant``) with a temp data
directory on free loopback ports, ``--dev`` for user tokens, a platform
OIDC issuer made here with PyJWT, an egress route to a local upstream that
records what it receives, and an MCP server written with the official MCP
SDK behind the gateway. Agents:

- ``sdk-agent``: this test process, attested by the kernel on the agent
  socket (its uid and interpreter), tokens living 10 s so refresh happens
  many times in a short test;
- ``sub-agent``: attested with join tokens, for sub-delegation;
- ``pod-agent``: attested with platform tokens in a file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("WARRANT_BIN") or REPO / "target" / "debug" / "warrant")
TTL = 10  # seconds: every agent's max-ttl, so tokens expire during tests

POLICY = """
@id("identities")
permit(principal, action == Action::"identity:issue", resource);

@id("sdk-self-openai")
permit(principal in Agent::"sdk-agent", action == Action::"token:self",
       resource == Audience::"https://api.openai.example");

@id("sdk-for-support")
permit(principal in Agent::"sdk-agent", action == Action::"token:exchange", resource)
when { context has user && context.user in Group::"dev/support" }
unless { resource == Audience::"https://payments.example" };

@id("payments-need-approval")
@approval("required")
permit(principal in Agent::"sdk-agent", action == Action::"token:exchange",
       resource == Audience::"https://payments.example")
when { context has user && context.user in Group::"dev/support" };

@id("sub-takes-over")
permit(principal in Agent::"sub-agent", action == Action::"token:exchange",
       resource == Audience::"https://api.openai.example")
when { context.depth <= 2 };

@id("pod-self")
permit(principal in Agent::"pod-agent", action == Action::"token:self",
       resource == Audience::"https://api.openai.example");

@id("openai-route")
permit(principal, action == Action::"http:request", resource == Route::"openai");

@id("keyed-route")
permit(principal, action == Action::"http:request", resource == Route::"keyed");

@id("report-files")
permit(principal, action == Action::"mcp:call_tool", resource == Tool::"files/read_file")
when { context.arguments has path && context.arguments.path like "/srv/reports/*" };
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WARRANT_")}


class Platform:
    """A platform OIDC issuer (as Kubernetes would be), made with PyJWT."""

    def __init__(self, d: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        pub = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        pub.update({"kid": "k8s", "alg": "ES256", "use": "sig"})
        self.jwks = d / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [pub]}))

    def token(self, pod_uid: str, sa: str = "pod-agent", lifetime: int = 600) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://k8s.test",
            "aud": ["warrant"],
            "sub": f"system:serviceaccount:agents:{sa}",
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            "kubernetes.io": {
                "namespace": "agents",
                "serviceaccount": {"name": sa, "uid": "sa-1"},
                "pod": {"name": f"pod-{pod_uid}", "uid": pod_uid},
            },
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k8s"})


class Broker:
    def __init__(self) -> None:
        if not BIN.exists():
            pytest.fail(f"no warrant binary at {BIN}; run `cargo build` first or set WARRANT_BIN")
        self.tmp = Path(tempfile.mkdtemp(prefix="wsdk", dir="/tmp"))
        self.data = self.tmp / "data"
        self.platform = Platform(self.tmp)
        self.upstream_log = self.tmp / "upstream.jsonl"
        self.upstream = subprocess.Popen(
            [sys.executable, str(REPO / "tests/interop/upstream.py"), str(self.upstream_log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.upstream.stdout.readline().split()
        assert line and line[0] == "PORT", line
        port = int(line[1])
        config = f"""
[[trust_provider]]
name = "k8s-test"
issuer = "https://k8s.test"
jwks_file = "{self.platform.jwks}"
audience = "warrant"

[[route]]
name = "openai"
upstream = "http://127.0.0.1:{port}"
audience = "https://api.openai.example"
allow = [ {{ methods = ["POST", "GET"], paths = ["/v1/**", "/echo"] }} ]
credential = {{ kind = "secret", secret = "openai-key", header = "authorization", format = "Bearer {{secret}}" }}

[[route]]
name = "keyed"
upstream = "http://127.0.0.1:{port}"
audience = "https://keyed.example"
agent_header = "x-api-key"
allow = [ {{ methods = ["GET"], paths = ["/echo", "/redirect"] }} ]
credential = {{ kind = "secret", secret = "openai-key", header = "authorization", format = "Bearer {{secret}}" }}

[[mcp_server]]
name = "files"
command = "{sys.executable}"
args = ["{REPO / 'tests/interop/mcp_files_server.py'}", "stdio"]
"""
        (self.tmp / "warrant.toml").write_text(config)
        self.log = open(self.tmp / "serve.log", "w")
        self.proc = subprocess.Popen(
            [
                str(BIN), "serve", "--dev", "--data-dir", str(self.data),
                "--api-addr", "127.0.0.1:0", "--edge-addr", "127.0.0.1:0",
                "--config", str(self.tmp / "warrant.toml"),
            ],
            env=clean_env(),
            cwd=self.tmp,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        try:
            self._setup()
        except BaseException:
            self.stop()
            raise

    def _setup(self) -> None:
        self._wait_ready()
        (self.data / "policies" / "sdk.cedar").write_text(POLICY)
        self.cli("policy", "reload")
        exe = os.path.realpath(sys.executable)
        self.cli("agent", "create", "sdk-agent", "--owner", "sdk-tests", "--env", "dev",
                 "--selector", f"unix:uid={os.getuid()}", "--selector", f"unix:path={exe}",
                 "--max-ttl", f"{TTL}s")
        self.cli("agent", "create", "sub-agent", "--owner", "sdk-tests", "--env", "dev", "--max-ttl", f"{TTL}s")
        self.cli("agent", "create", "pod-agent", "--owner", "sdk-tests", "--env", "dev",
                 "--selector", "oidc:provider=k8s-test", "--selector", "k8s:ns=agents",
                 "--selector", "k8s:sa=pod-agent", "--max-ttl", f"{TTL}s")
        self.cli("secret", "put", "openai-key", input="sk-upstream-0123456789\n")

    def _wait_ready(self) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"warrant serve exited: {(self.tmp / 'serve.log').read_text()}")
            try:
                info = json.loads((self.data / "run.json").read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = f"http://{info['api_addr']}"
                    self.edge_url = f"http://{info['edge_addr']}"
                    with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as r:
                        if r.status == 200:
                            return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        pytest.fail("warrant serve did not become ready")

    @property
    def agent_socket(self) -> str:
        return str(self.data / "agent.sock")

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> str:
        r = subprocess.run(
            [str(BIN), "--data-dir", str(self.data), *args],
            input=input, capture_output=True, text=True, env=clean_env(), timeout=60,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"warrant {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def user_token(self, user: str, *groups: str) -> str:
        args = ["dev", "user-token", user]
        for g in groups:
            args += ["--groups", g]
        return self.cli(*args).strip()

    def join_token(self, agent: str) -> str:
        return self.cli("agent", "join-token", agent).strip()

    def audit(self, event: str) -> list[dict]:
        out = self.cli("audit", "list", "--event", event, "--output", "json")
        data = json.loads(out)
        return data if isinstance(data, list) else data.get("records", [])

    def upstream_requests(self) -> list[dict]:
        if not self.upstream_log.exists():
            return []
        return [json.loads(l) for l in self.upstream_log.read_text().splitlines() if l.strip()]

    def stop(self) -> None:
        for p in (self.proc, self.upstream):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def broker():
    b = Broker()
    yield b
    b.stop()


@pytest.fixture
def warrant(broker):
    from warrant_agent import UnixSocket, Warrant

    w = Warrant(broker.url, edge_url=broker.edge_url, attestation=UnixSocket(broker.agent_socket))
    yield w
    w.close()
