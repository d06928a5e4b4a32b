"""Google Cloud's workload identity federation on loopback: a security token
service speaking RFC 8693 with the fields Google's STS takes, the IAM
Credentials API's generateAccessToken, and one Cloud Storage listing that
accepts only the service account's tokens.

usage: gcp_peer.py LOG ISSUER JWKS_URL PROVIDER PORT
PROVIDER is the workload identity provider's resource name
(`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`).
Prints "PORT <n>" when ready.

POST /v1/token does what Google's STS does for an OIDC provider with no
allowed audiences configured: requires grant_type token-exchange,
subject_token_type jwt, requested_token_type access_token, the provider as
`audience` and a scope; verifies the subject token with the issuer's JWKS,
its audience being `https:` + PROVIDER; maps google.subject = assertion.sub
and applies the attribute condition `assertion.agent == "orch"`. It answers
a federated token. POST /v1/projects/-/serviceAccounts/SA:generateAccessToken
takes a federated token and answers the service account's token.
GET /storage/v1/b/reports/o needs a service account token. Every step is
appended to LOG as a JSON line.
"""
import datetime
import json
import secrets
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

LOG, ISSUER, JWKS_URL, PROVIDER = sys.argv[1:5]
PORT = int(sys.argv[5])
SA = "reports-reader@demo-project.iam.gserviceaccount.com"
LOCK = threading.Lock()
FEDERATED, SA_TOKENS = set(), set()


def log(record):
    with LOCK, open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def bearer(self):
        a = self.headers.get("authorization", "")
        return a[7:] if a.startswith("Bearer ") else None

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/v1/token":
            return self.sts()
        prefix = "/v1/projects/-/serviceAccounts/"
        if path.startswith(prefix) and path.endswith(":generateAccessToken"):
            return self.impersonate(urllib.parse.unquote(path[len(prefix):-len(":generateAccessToken")]))
        self.reply(404, {"error": {"code": 404, "message": "not found"}})

    def sts(self):
        form = dict(urllib.parse.parse_qsl(self.body().decode()))
        record = {"step": "sts", "form": {k: v for k, v in form.items() if k != "subject_token"}}
        want = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "audience": PROVIDER,
        }
        bad = [k for k, v in want.items() if form.get(k) != v]
        if bad or not form.get("scope"):
            record["refused"] = f"invalid_request: {bad or 'scope'}"
            log(record)
            return self.reply(400, {"error": "invalid_request", "error_description": f"bad {bad}"})
        try:
            token = form["subject_token"]
            keys = json.load(urllib.request.urlopen(JWKS_URL))
            header = jwt.get_unverified_header(token)
            key = next(k for k in keys["keys"] if k.get("kid") == header.get("kid"))
            claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256", "EdDSA"],
                                audience="https:" + PROVIDER, issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "aud", "iss"]})
        except Exception as e:  # noqa: BLE001 - Google answers invalid_grant
            record["refused"] = f"invalid_grant: {type(e).__name__}: {e}"
            log(record)
            return self.reply(400, {"error": "invalid_grant", "error_description": "the subject token is invalid"})
        record.update(header=header, claims=claims)
        if claims.get("agent") != "orch":
            record["refused"] = "unauthorized_client: attribute condition"
            log(record)
            return self.reply(400, {"error": "unauthorized_client",
                                    "error_description": "The given credential is rejected by the attribute condition."})
        federated = "ya29.fed-" + secrets.token_urlsafe(24)
        FEDERATED.add(federated)
        record["principal"] = f"principal://iam.googleapis.com/{PROVIDER.split('/providers/')[0][len('//iam.googleapis.com/'):]}/subject/{claims['sub']}"
        log(record)
        self.reply(200, {"access_token": federated, "issued_token_type": want["requested_token_type"],
                         "token_type": "Bearer", "expires_in": 3600})

    def impersonate(self, sa):
        record = {"step": "impersonate", "service_account": sa}
        if self.bearer() not in FEDERATED or sa != SA:
            record["refused"] = "permission denied"
            log(record)
            return self.reply(403, {"error": {"code": 403, "message": "Permission 'iam.serviceAccounts.getAccessToken' denied", "status": "PERMISSION_DENIED"}})
        req = json.loads(self.body() or b"{}")
        record["scope"] = req.get("scope")
        token = "ya29.sa-" + secrets.token_urlsafe(24)
        SA_TOKENS.add(token)
        log(record)
        exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        self.reply(200, {"accessToken": token, "expireTime": exp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})

    def do_GET(self):
        path = self.path.split("?")[0]
        record = {"step": "storage", "path": path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        if path != "/storage/v1/b/reports/o":
            log(record)
            return self.reply(404, {"error": {"code": 404, "message": "not found"}})
        if self.bearer() not in SA_TOKENS:
            record["refused"] = "unauthenticated"
            log(record)
            return self.reply(401, {"error": {"code": 401, "message": "Invalid Credentials"}})
        log(record)
        self.reply(200, {"kind": "storage#objects", "items": [{"name": "q3/summary.txt", "bucket": "reports"}]})


srv = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
srv.daemon_threads = True
print("PORT %d" % srv.server_address[1], flush=True)
srv.serve_forever()
