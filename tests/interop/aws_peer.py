"""AWS on loopback for the federation tests: moto in server mode with IAM
authentication enforced, and in front of its STS an endpoint that checks
web identity tokens the way AWS STS does.

usage: aws_peer.py LOG ISSUER JWKS_URL MOTO_PORT STS_PORT
Prints one JSON line when ready: {"moto": port, "sts": port, "role": arn,
"bucket": name, "queue": url}, then serves until killed.

moto issues credentials for AssumeRoleWithWebIdentity without looking at the
token, so the front does what AWS does before it: fetches the issuer's JWKS,
verifies the token's signature, issuer, audience and lifetime (PyJWT), and
evaluates the role's trust policy (the Federated principal of the issuer,
`sts:AssumeRoleWithWebIdentity`, `sts:TagSession` when the token asks for
tags, StringEquals/StringLike on `<issuer>:aud` and `<issuer>:sub`). Only
then does it ask moto for the credentials. Every exchange is appended to LOG
(token header and claims, role, session name, session policy), so tests see
what warrant sent. Everything else (S3, SQS) goes straight to moto, where
requests must carry a valid SigV4 signature by keys moto issued and the
role's policy must allow them.
"""
import fnmatch
import json
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

import boto3
import jwt
import requests
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

LOG, ISSUER, JWKS_URL = sys.argv[1], sys.argv[2], sys.argv[3]
moto_port, sts_port = int(sys.argv[4]), int(sys.argv[5])
ACCOUNT = "123456789012"
AUDIENCE = "sts.amazonaws.com"
HOST = ISSUER.split("://", 1)[1].rstrip("/")
PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{HOST}"
LOCK = threading.Lock()


import logging

logging.getLogger("werkzeug").setLevel(logging.ERROR)
moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
moto.start()
MOTO = f"http://127.0.0.1:{moto_port}"


def client(service, **keys):
    keys = keys or {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    return boto3.client(service, endpoint_url=MOTO, region_name="us-east-1", **keys)


# Set-up while moto still lets anyone in: an administrator for the front's own
# calls, the role agents get (its trust policy pins warrant's issuer, the
# audience and the agent), a bucket and a queue.
iam = client("iam")
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="admin")["AccessKey"]
ADMIN = {"aws_access_key_id": k["AccessKeyId"], "aws_secret_access_key": k["SecretAccessKey"]}
iam.create_open_id_connect_provider(Url=f"https://{HOST}", ClientIDList=[AUDIENCE], ThumbprintList=["0" * 40])
trust = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow",
    "Principal": {"Federated": PROVIDER},
    "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"],
    "Condition": {"StringEquals": {f"{HOST}:aud": AUDIENCE},
                  "StringLike": {f"{HOST}:sub": "agent:orch"}},
}]}
role = iam.create_role(RoleName="warrant-agents", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
iam.put_role_policy(RoleName="warrant-agents", PolicyName="work", PolicyDocument=json.dumps({
    "Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::reports", "arn:aws:s3:::reports/*",
                                                            "arn:aws:s3:::archive", "arn:aws:s3:::archive/*"]},
        {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
    ]}))
client("s3").create_bucket(Bucket="reports")
# A bucket the role may read but the route does not reach.
client("s3").create_bucket(Bucket="archive")
client("s3").put_object(Bucket="archive", Key="secret.txt", Body=b"archived")
# An object below a path the tests' policy forbids reading.
client("s3").put_object(Bucket="reports", Key="hr/salaries.txt", Body=b"alice: 1000000")
queue = client("sqs").create_queue(QueueName="tasks")["QueueUrl"]
# From here on every request needs a valid signature by known keys.
requests.post(f"{MOTO}/moto-api/reset-auth", data="0").raise_for_status()


def trust_allows(doc, claims):
    """The role's trust policy, as AWS evaluates it for this token."""
    actions_needed = {"sts:AssumeRoleWithWebIdentity"}
    if "https://aws.amazon.com/tags" in claims:
        actions_needed.add("sts:TagSession")
    values = {f"{HOST}:aud": claims.get("aud"), f"{HOST}:sub": claims.get("sub")}
    for st in doc.get("Statement", []):
        if st.get("Effect") != "Allow" or st.get("Principal", {}).get("Federated") != PROVIDER:
            continue
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not actions_needed <= set(actions):
            continue
        ok = True
        for op, conds in st.get("Condition", {}).items():
            for key, want in conds.items():
                want = [want] if isinstance(want, str) else want
                got = values.get(key)
                if op == "StringEquals":
                    ok &= got in want
                elif op == "StringLike":
                    ok &= got is not None and any(fnmatch.fnmatchcase(got, w) for w in want)
                else:
                    ok = False
        if ok:
            return True
    return False


def error(code, message, status=400):
    body = (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>{escape(message)}</Message></Error></ErrorResponse>")
    return status, body


def assume(form):
    token = form.get("WebIdentityToken", "")
    record = {"role": form.get("RoleArn"), "session": form.get("RoleSessionName"),
              "policy": form.get("Policy"), "duration": form.get("DurationSeconds")}
    try:
        keys = json.load(urllib.request.urlopen(JWKS_URL))
        header = jwt.get_unverified_header(token)
        key = next(k for k in keys["keys"] if k.get("kid") == header.get("kid"))
        claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256", "EdDSA"],
                            audience=AUDIENCE, issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "aud", "iss"]})
    except Exception as e:  # noqa: BLE001 - any failure is AWS's InvalidIdentityToken
        record["refused"] = f"InvalidIdentityToken: {type(e).__name__}: {e}"
        log(record)
        return error("InvalidIdentityToken", "the web identity token could not be verified")
    record.update(header=header, claims=claims)
    role_name = (form.get("RoleArn") or "").rsplit("/", 1)[-1]
    doc = client("iam", **ADMIN).get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    if isinstance(doc, str):
        doc = json.loads(urllib.parse.unquote(doc))
    if not trust_allows(doc, claims):
        record["refused"] = "AccessDenied: trust policy"
        log(record)
        return error("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", 403)
    # moto's own STS, in this process (its AssumeRoleWithWebIdentity takes
    # no signature, which moto's enforced authentication would ask for).
    role = sts_backends[ACCOUNT]["aws"].assume_role_with_web_identity(
        region_name="us-east-1", role_session_name=form["RoleSessionName"], role_arn=form["RoleArn"],
        policy=form.get("Policy"), duration=int(form.get("DurationSeconds", 3600)), external_id=None)
    c = {"AccessKeyId": role.access_key_id, "SecretAccessKey": role.secret_access_key,
         "SessionToken": role.session_token, "Expiration": role.expiration}
    # (A test peer: the keys are logged so the test can prove they never
    # reach warrant's audit trail or logs.)
    record.update(access_key_id=c["AccessKeyId"], secret_access_key=c["SecretAccessKey"],
                  session_token=c["SessionToken"])
    log(record)
    exp = c["Expiration"] if isinstance(c["Expiration"], str) else c["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")
    body = ('<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleWithWebIdentityResult><Credentials>"
            f"<SessionToken>{escape(c['SessionToken'])}</SessionToken>"
            f"<SecretAccessKey>{escape(c['SecretAccessKey'])}</SecretAccessKey>"
            f"<Expiration>{exp}</Expiration><AccessKeyId>{c['AccessKeyId']}</AccessKeyId>"
            "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
    return 200, body


def log(record):
    with LOCK, open(LOG, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")


class Sts(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
        if form.get("Action") == "AssumeRoleWithWebIdentity":
            status, body = assume(form)
        else:
            status, body = error("InvalidAction", "only AssumeRoleWithWebIdentity is served here")
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/xml")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


sts = ThreadingHTTPServer(("127.0.0.1", sts_port), Sts)
sts.daemon_threads = True
print(json.dumps({"moto": moto_port, "sts": sts.server_address[1], "role": role,
                  "bucket": "reports", "queue": queue}), flush=True)
sts.serve_forever()
