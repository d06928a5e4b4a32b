"""An agent on the agent socket: POST /v1/identity over HTTP/1.1 on a Unix socket.

usage: unix_client.py SOCKET MODE [BODY]
  MODE twice     two requests on two connections from this one process
  MODE once      one request
  BODY "@big:N" sends a JSON body with an N-character audience
  MODE fork-exit connect, fork, let the connecting process exit, then the
                 child sends the request on the inherited connection
  MODE pause     one request; then, once the file named by the fourth
                 argument exists, another (same process, new connection)
Prints one JSON line per response: {"status": N, "body": {...}}.
"""
import json
import os
import socket
import sys
import time


def request(sock, body, path="/v1/identity"):
    if body.startswith("@big:"):
        # An oversized body, too big for a command line.
        body = '{"audience": "' + "a" * int(body[5:]) + '"}'
    data = body.encode()
    try:
        sock.sendall(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )
    except (BrokenPipeError, ConnectionResetError):
        pass  # the broker answered before reading it all
    raw = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2 :]
        rest = out
    location = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"location":
            location = v.strip().decode()
    return {"status": status, "body": json.loads(rest or b"null"), "location": location}


def attest(path, body):
    """One attestation, following the broker's 307 (send again, with the
    one-time proof) as `curl -L` does."""
    r = request(connect(path), body)
    if r["status"] == 307 and r["location"]:
        r = request(connect(path), body, r["location"])
    r.pop("location", None)
    return r


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def main():
    path, mode = sys.argv[1], sys.argv[2]
    body = sys.argv[3] if len(sys.argv) > 3 else ""
    if mode in ("once", "twice"):
        for _ in range(1 if mode == "once" else 2):
            print(json.dumps(attest(path, body)), flush=True)
    elif mode == "pause":
        print(json.dumps(attest(path, body)), flush=True)
        while not os.path.exists(sys.argv[4]):
            time.sleep(0.05)
        print(json.dumps(attest(path, body)), flush=True)
    elif mode == "fork-exit":
        s = connect(path)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # until the parent has exited
            time.sleep(0.2)
            print(json.dumps(request(s, body)), flush=True)
            os._exit(0)
        os._exit(0)  # the connecting process is gone; the pipe closes
    else:
        sys.exit("unknown mode " + mode)


main()
