"""A test OIDC issuer made with PyJWT and cryptography (clients warrant did not write).

usage: oidc_issuer.py DIR ISSUER AUDIENCE
Writes DIR/jwks.json (an RSA and an EC key) and prints a JSON object of named
tokens: good ones and every kind of bad one the OIDC attestor must refuse.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

out_dir, issuer, audience = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key, kid, alg):
    d = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d


rsa_jwk = jwk(rsa_key, "k8s-rsa", "RS256")
ec_jwk = jwk(ec_key, "k8s-ec", "ES256")
with open(os.path.join(out_dir, "jwks.json"), "w") as f:
    json.dump({"keys": [rsa_jwk, ec_jwk]}, f)


def claims(**over):
    c = {
        "iss": issuer,
        "aud": [audience],
        "sub": "system:serviceaccount:agents:triage",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
        "kubernetes.io": {
            "namespace": "agents",
            "serviceaccount": {"name": "triage", "uid": "sa-uid-1"},
            "pod": {"name": "triage-5d8f", "uid": over.pop("pod_uid", "pod-uid-1")},
        },
    }
    c.update(over)
    return c


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unsigned(header, body, sig=b""):
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(body).encode())
    return f"{h}.{p}.{b64(sig)}"


def hs256_with_public_key():
    header = {"alg": "HS256", "kid": "k8s-rsa", "typ": "JWT"}
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(claims()).encode())
    secret = json.dumps(rsa_jwk).encode()
    sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


tokens = {
    "good_rs256": jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "good_es256": jwt.encode(claims(pod_uid="pod-uid-2"), ec_key, algorithm="ES256", headers={"kid": "k8s-ec"}),
    "other_sa": jwt.encode(
        claims(sub="system:serviceaccount:agents:other",
               **{"kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "other"}}}),
        rsa_key, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "expired": jwt.encode(claims(exp=now - 3600, iat=now - 7200, nbf=now - 7200), rsa_key, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "not_yet_valid": jwt.encode(claims(nbf=now + 3600, exp=now + 7200), rsa_key, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "wrong_audience": jwt.encode(claims(aud=["someone-else"]), rsa_key, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "unlisted_issuer": jwt.encode(claims(iss="https://evil.example"), rsa_key, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "unknown_key": jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "stranger"}),
    "stranger_under_known_kid": jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "alg_none": unsigned({"alg": "none", "kid": "k8s-rsa"}, claims()),
    "hs256_public_key": hs256_with_public_key(),
    "jku": jwt.encode(claims(), stranger, algorithm="RS256",
                      headers={"kid": "stranger", "jku": "http://127.0.0.1:9/jwks.json"}),
    "jwk": jwt.encode(claims(), stranger, algorithm="RS256",
                      headers={"kid": "stranger", "jwk": jwk(stranger, "stranger", "RS256")}),
    "x5u": jwt.encode(claims(), stranger, algorithm="RS256",
                      headers={"kid": "stranger", "x5u": "http://127.0.0.1:9/cert.pem"}),
    # The nested Kubernetes claims' names, written flat at the top level.
    "flat_claims": jwt.encode(
        claims(**{"kubernetes.io": None, "kubernetes.io.namespace": "agents",
                  "kubernetes.io.serviceaccount.name": "triage", "kubernetes.io.pod.uid": "pod-flat"}),
        rsa_key, algorithm="RS256", headers={"kid": "k8s-rsa"}),
    "kid_traversal": jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "../../etc/passwd"}),
}
tokens.update({f"flood_{i}": jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": f"made-up-{i}"}) for i in range(5)})
print(json.dumps(tokens))
