"""Processes trying to get another program's identity on the agent socket.

usage: unix_exec_attack.py SOCKET MODE PROGRAM
PROGRAM is the agent's executable (the one its `unix:path` selector names).
This script is not it; each mode tries to have the identity issued to it
anyway, and prints the last response it read as one JSON line
({"status": N, "body": {...}}), or {"status": 0} if it read none.

  fork-send   connect; fork; the parent execs PROGRAM; the child (still this
              script) sends the request on the inherited connection
  send-exec   connect and send the request; fork; the parent execs PROGRAM
              at once; the child reads the answer (and follows a 307 itself)
  pass-fd     connect; hand the connection to a child over SCM_RIGHTS; the
              parent execs PROGRAM; the child sends and reads
  exec-late   connect; wait until the broker has looked; send the request;
              fork; the parent execs PROGRAM; the child reads
  direct      connect, send, read: run as PROGRAM's path in a mount namespace
              where another file (this interpreter) is bind-mounted there
  userns-forge  run as `unshare -Urp --fork python3 unix_exec_attack.py ...`:
              in a user and pid namespace of its own, a child connects and
              execs PROGRAM; this script sends the request on the same
              connection with SCM_CREDENTIALS naming the child's pid (which
              its namespace lets it claim), while idle connections keep the
              broker from looking at the child until after its exec; tried
              up to 5 times, the last answer (or the first 200) printed
"""
import array
import json
import os
import socket
import sys
import time

path, mode, program = sys.argv[1], sys.argv[2], sys.argv[3]
REQ = (b"POST /v1/identity HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       b"Content-Length: 0\r\n\r\n")


def read_answer(s):
    raw = b""
    s.settimeout(10)
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            raw += c
    except (OSError, socket.timeout):
        pass
    if not raw:
        return {"status": 0}
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    location = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"location":
            location = v.strip().decode()
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        rest = out
    try:
        body = json.loads(rest or b"null")
    except ValueError:
        body = rest.decode(errors="replace")
    return {"status": status, "body": body, "location": location}


def follow(r):
    """A 307 carries a proof: try it, from this (wrong) process."""
    if r.get("status") == 307 and r.get("location"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(REQ.replace(b"/v1/identity", r["location"].encode()))
        return read_answer(s)
    return r


def report(r):
    r.pop("location", None)
    print(json.dumps(r), flush=True)


def become_the_agent():
    os.execv(program, [program, "5"])


s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
if mode == "direct":
    s.sendall(REQ)
    report(follow(read_answer(s)))
elif mode == "fork-send":
    if os.fork() == 0:
        time.sleep(0.5)  # until the parent runs the agent's program
        s.sendall(REQ)
        report(follow(read_answer(s)))
        os._exit(0)
    become_the_agent()
elif mode in ("send-exec", "exec-late"):
    if mode == "exec-late":
        time.sleep(0.5)  # the broker has accepted and looked by now
    s.sendall(REQ)
    if os.fork() == 0:
        report(follow(read_answer(s)))
        os._exit(0)
    become_the_agent()
elif mode == "pass-fd":
    a, b = socket.socketpair()
    if os.fork() == 0:
        a.close()
        msg, anc, _, _ = b.recvmsg(1, socket.CMSG_SPACE(4))
        fds = array.array("i")
        fds.frombytes(anc[0][2][:4])
        conn = socket.socket(fileno=fds[0])
        time.sleep(0.5)
        conn.sendall(REQ)
        report(follow(read_answer(conn)))
        os._exit(0)
    b.close()
    a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))])
    become_the_agent()
elif mode == "userns-forge":
    import struct
    s.close()
    best = {"status": 0}
    for _ in range(5):
        r, w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        child = os.fork()
        if child == 0:
            os.read(r, 1)
            conn.connect(path)
            os.execv(program, [program, "20"])
        burst = []
        for _ in range(28):  # under the broker's per-user share of the socket
            b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                b.connect(path)
            except OSError:
                break
            burst.append(b)
        os.write(w, b"x")
        time.sleep(0.3)
        creds = struct.pack("iII", child, os.getuid(), os.getgid())
        try:
            conn.sendmsg([REQ], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
            best = read_answer(conn)
        except OSError as e:
            best = {"status": 0, "body": str(e)}
        for b in burst:
            b.close()
        os.kill(child, 9)
        os.waitpid(child, 0)
        if best.get("status") == 200:
            break
    report(best)
    sys.exit(0)
else:
    sys.exit("unknown mode " + mode)
