"""A local upstream API for the egress proxy tests: it records what it receives.

Usage: upstream.py LOG [--tls DIR [--mtls]]
Prints "PORT <n>" when ready. Every request is appended to LOG as one JSON
line (method, path, headers, body length), so tests assert what crossed the
proxy. With --tls it generates a test CA and a server certificate for
127.0.0.1/localhost (DIR/ca.pem) and serves HTTPS; with --mtls as well it
requires a client certificate (DIR/client.pem is one it accepts, with its
key; DIR/stranger.pem one it refuses) and logs its common name.

Endpoints:
  POST /v1/chat/completions  OpenAI-shaped; "stream": true answers SSE chunks
  GET  /echo                 echoes the Authorization it got (body and header)
  GET  /redirect             302 to another origin
  GET  /echo-gzip            the echo, gzip-compressed whatever was asked
  GET  /echo-boundary        the echo, chunked so a chunk ends where the
                             credential (the Authorization value) ends
  GET  /echo-trailer         the echo in a chunked trailer
  GET  /echo-nested          the echo in escapes of escapes and other encodings
  GET  /echo-odd             the echo as the status line's reason phrase, as
                             a header name, every character JSON-escaped
                             in the body, and a session cookie
  POST /oauth/token          client-credentials token endpoint (Basic auth)
  POST /oauth/trickle        a token endpoint that sends its headers, then its
                             body a byte a second
  POST /v1/messages          Anthropic-shaped; "stream": true answers its SSE events
  POST /v1/models/M:generateContent, :streamGenerateContent?alt=sse (or /v1beta)
                             Gemini-shaped
  POST /v2/chat              Cohere-shaped; "stream": true answers its SSE events
  anything else              200 {"method", "path"}
"""
import base64
import datetime
import hashlib
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = sys.argv[1]
LOCK = threading.Lock()
TOKENS = {"issued": 0}


def make_tls(d):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warrant test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(d, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(d, "server.pem"), "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(os.path.join(d, "server.key"), "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    # With --mtls: a CA for client certificates, one client certificate it
    # signed (client.pem: chain then key, as warrant stores it) and one a
    # stranger CA signed (stranger.pem), which the upstream refuses.
    for ca_cn, out in (("warrant test client CA", "client"), ("stranger CA", "stranger")):
        cka = ec.generate_private_key(ec.SECP256R1())
        cname = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_cn)])
        cca = (
            x509.CertificateBuilder()
            .subject_name(cname).issuer_name(cname)
            .public_key(cka.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(cka, hashes.SHA256())
        )
        ck = ec.generate_private_key(ec.SECP256R1())
        cc = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"warrant-{out}")]))
            .issuer_name(cname).public_key(ck.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(cka, hashes.SHA256())
        )
        with open(os.path.join(d, f"{out}.pem"), "wb") as f:
            f.write(cc.public_bytes(pem))
            f.write(ck.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        if out == "client":
            with open(os.path.join(d, "client-ca.pem"), "wb") as f:
                f.write(cca.public_bytes(pem))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def record(self, body):
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        peer = getattr(self.connection, "getpeercert", lambda: None)()
        if peer:
            entry["client_cert"] = dict(x[0] for x in peer.get("subject", ())).get("commonName")
        with LOCK, open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def body(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            out = b""
            while True:
                line = self.rfile.readline()
                if not line:
                    return out
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, code, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        try:
            body = self.body()
        except (ConnectionError, ValueError):
            return  # the client gave up mid-body (a proxy enforcing a limit)
        self.record(body)
        path = self.path.split("?")[0]
        if path == "/v1/chat/completions" and self.command == "POST":
            req = json.loads(body or b"{}")
            if req.get("stream"):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for i, word in enumerate(["Hello", " from", " upstream"]):
                    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                             "model": req.get("model", "m"),
                             "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                    self.write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    time.sleep(0.05)
                self.write_chunk(b"data: [DONE]\n\n")
                self.write_chunk(b"")
                return
            self.send_json(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                "model": req.get("model", "m"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Hello from upstream"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            })
        elif path == "/v1/messages" and self.command == "POST":
            self.anthropic(json.loads(body or b"{}"))
        elif path.startswith(("/v1beta/models/", "/v1/models/")) and self.command == "POST":
            self.gemini(path.rsplit(":", 1)[-1])
        elif path == "/v2/chat" and self.command == "POST":
            self.cohere(json.loads(body or b"{}"))
        elif path == "/echo":
            auth = self.headers.get("authorization", "")
            self.send_json(200, {"you_sent": auth, "all": dict(self.headers.items())},
                           extra=[("x-echo", auth)])
        elif path == "/echo-gzip":
            import gzip
            auth = self.headers.get("authorization", "")
            data = gzip.compress(json.dumps({"you_sent": auth}).encode())
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/echo-boundary":
            auth = self.headers.get("authorization", "")
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.write_chunk(b'{"you_sent": "' + auth.encode())
            time.sleep(0.05)
            self.write_chunk(b'"}')
            self.write_chunk(b"")
        elif path == "/echo-trailer":
            auth = self.headers.get("authorization", "")
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("trailer", "x-echo")
            self.end_headers()
            self.wfile.write(b"2\r\nok\r\n0\r\nx-echo: " + auth.encode() + b"\r\n\r\n")
            self.wfile.flush()
        elif path == "/echo-odd":
            auth = self.headers.get("authorization", "")
            escaped = "".join("\\u%04x" % ord(c) for c in auth)
            data = ('{"you_sent": "%s"}' % escaped).encode()
            self.send_response(200, auth)
            self.send_header(auth.replace(" ", "-"), "1")
            self.send_header("set-cookie", "session=" + base64.b64encode(auth.encode()).decode())
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/echo-nested":
            # The Authorization the edge injected, escaped as encoders
            # escape text that already holds escapes, one line each.
            auth = self.headers.get("authorization", "")
            import html, urllib.parse
            php = json.dumps(json.dumps(auth).replace("/", "\\/"))
            dotnet = json.dumps("".join("\\u%04X" % ord(c) if not c.isalnum() else c for c in auth))
            html2 = html.escape("".join("&#%d;" % ord(c) for c in auth))
            pct2 = urllib.parse.quote(urllib.parse.quote(auth, safe=""), safe="")
            xesc = "".join("\\x%02x" % ord(c) for c in auth)
            shq = "".join("\\" + c if not c.isalnum() else c for c in auth)
            b16 = base64.encodebytes(("X-Key: " + auth).encode("utf-16-le")).decode()
            lines = [php, dotnet, html2, pct2, xesc, shq, b16]
            data = "\n".join(lines).encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("location", "http://127.0.0.1:9/steal")
            self.send_header("content-length", "0")
            self.end_headers()
        elif path == "/oauth/trickle":
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "100000")
            self.end_headers()
            try:
                for _ in range(120):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1)
            except (ConnectionError, OSError):
                pass
        elif path == "/oauth/token":
            TOKENS["issued"] += 1
            time.sleep(0.05)
            self.send_json(200, {"access_token": "upstream-at-%d-abcdefgh" % TOKENS["issued"],
                                 "token_type": "Bearer", "expires_in": 3600})
        else:
            self.send_json(200, {"method": self.command, "path": self.path})

    WORDS = ["Hello", " from", " upstream"]

    def sse(self, events):
        """Answers `events` ((event name or None, data) pairs) as SSE, a
        little apart so they cross the edge as separate chunks."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for name, data in events:
            head = b"event: " + name.encode() + b"\n" if name else b""
            self.write_chunk(head + b"data: " + json.dumps(data).encode() + b"\n\n")
            time.sleep(0.02)
        self.write_chunk(b"")

    def anthropic(self, req):
        usage = {"input_tokens": 1, "output_tokens": 3}
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": req.get("model", "m"),
               "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
        if not req.get("stream"):
            msg.update(content=[{"type": "text", "text": "".join(self.WORDS)}], stop_reason="end_turn")
            return self.send_json(200, msg)
        events = [("message_start", {"type": "message_start", "message": msg}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": w}}) for w in self.WORDS]
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 3},
                                      "delta": {"stop_reason": "end_turn", "stop_sequence": None}}),
                   ("message_stop", {"type": "message_stop"})]
        self.sse(events)

    def gemini(self, method):
        def answer(text):
            return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 3, "totalTokenCount": 4},
                    "modelVersion": "gemini-test"}
        if method == "streamGenerateContent":
            return self.sse([(None, answer(w)) for w in self.WORDS])
        self.send_json(200, answer("".join(self.WORDS)))

    def cohere(self, req):
        text = "".join(self.WORDS)
        usage = {"billed_units": {"input_tokens": 1, "output_tokens": 3},
                 "tokens": {"input_tokens": 1, "output_tokens": 3}}
        if not req.get("stream"):
            return self.send_json(200, {"id": "c1", "finish_reason": "COMPLETE", "usage": usage,
                                        "message": {"role": "assistant",
                                                    "content": [{"type": "text", "text": text}]}})
        events = [("message-start", {"type": "message-start", "id": "c1",
                                     "delta": {"message": {"role": "assistant"}}}),
                  ("content-start", {"type": "content-start", "index": 0,
                                     "delta": {"message": {"content": {"type": "text", "text": ""}}}})]
        events += [("content-delta", {"type": "content-delta", "index": 0,
                                      "delta": {"message": {"content": {"text": w}}}}) for w in self.WORDS]
        events += [("content-end", {"type": "content-end", "index": 0}),
                   ("message-end", {"type": "message-end",
                                    "delta": {"finish_reason": "COMPLETE", "usage": usage}})]
        self.sse(events)

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if "--tls" in sys.argv:
        d = sys.argv[sys.argv.index("--tls") + 1]
        make_tls(d)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
        if "--mtls" in sys.argv:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(os.path.join(d, "client-ca.pem"))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
