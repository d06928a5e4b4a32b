"""Interop: PyJWT (a JOSE library warrant did not write) reads warrant's JWKS.

Usage: python jwks_pyjwt.py <broker base URL>

Follows discovery to jwks_uri, loads the set with PyJWKClient, and checks every
key is a usable signature key: ES256 on P-256 (or EdDSA on Ed25519), with kid,
use and alg, and a kid equal to the RFC 7638 thumbprint computed here
independently. Prints a JSON summary; exits non-zero on any mismatch.
"""

import base64
import hashlib
import json
import sys
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def thumbprint(jwk):
    if jwk["kty"] == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    else:
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def main():
    base = sys.argv[1].rstrip("/")
    meta = get(base + "/.well-known/oauth-authorization-server")
    assert meta["issuer"] == base, meta
    jwks_uri = meta["jwks_uri"]
    raw = get(jwks_uri)["keys"]
    client = jwt.PyJWKClient(jwks_uri, cache_keys=False)
    keys = client.get_signing_keys()
    assert len(keys) == len(raw) >= 1, (len(keys), raw)
    out = []
    for k, r in zip(keys, raw):
        assert k.key_id == r["kid"], (k.key_id, r)
        assert k.public_key_use == "sig", r
        assert k.algorithm_name == r["alg"], (k.algorithm_name, r)
        assert thumbprint(r) == r["kid"], "kid is not the RFC 7638 thumbprint"
        if r["alg"] == "ES256":
            assert isinstance(k.key, ec.EllipticCurvePublicKey) and k.key.curve.name == "secp256r1"
        elif r["alg"] == "EdDSA":
            assert isinstance(k.key, ed25519.Ed25519PublicKey)
        else:
            raise AssertionError("unexpected alg " + r["alg"])
        assert "d" not in r, "a private member is published"
        out.append({"kid": k.key_id, "alg": k.algorithm_name, "use": k.public_key_use})
    # PyJWKClient resolves a key by kid the way a verifier does for a token header.
    assert client.get_signing_key(raw[0]["kid"]).key_id == raw[0]["kid"]
    print(json.dumps({"keys": out, "library": "PyJWT " + jwt.__version__}))


if __name__ == "__main__":
    main()
