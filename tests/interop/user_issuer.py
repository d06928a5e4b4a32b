"""A test identity provider for users, made with PyJWT (a client warrant did not write).

usage: user_issuer.py DIR ISSUER AUDIENCE
Writes DIR/users-jwks.json and prints a JSON object of named user tokens.
"""
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

out_dir, issuer, audience = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())
key = ec.generate_private_key(ec.SECP256R1())
other = ec.generate_private_key(ec.SECP256R1())
pub = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
pub.update({"kid": "idp-1", "alg": "ES256", "use": "sig"})
with open(os.path.join(out_dir, "users-jwks.json"), "w") as f:
    json.dump({"keys": [pub]}, f)


def token(sub, k=key, **over):
    c = {"iss": issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + 600, "groups": ["support"]}
    c.update(over)
    return jwt.encode(c, k, algorithm="ES256", headers={"kid": "idp-1"})


print(json.dumps({
    "alice": token("alice"),
    "bob": token("bob", groups=["sales"]),
    "expired": token("alice", exp=now - 60, iat=now - 700),
    "wrong_audience": token("alice", aud="someone-else"),
    "untrusted_issuer": token("alice", iss="https://evil.example"),
    "other_key": token("alice", k=other),
    "forged_act": token("alice", act={"sub": "spiffe://warrant.local/agent/admin/0"}),
    "may_act_leaf": token("alice", may_act={"sub": "leaf"}),
    "may_act_orch": token("alice", may_act={"sub": "orch"}),
    "may_act_bad": token("alice", may_act="orch"),
    "may_act_elsewhere": token("alice", may_act={"sub": "orch", "iss": "https://other-idp.test"}),
    "scope_array": token("alice", scope=["tickets:read", "llm:chat"]),
    "scp_string": token("alice", scp="tickets:read llm:chat"),
    "scp_array": token("alice", scp=["tickets:read", "llm:chat"]),
    "scope_and_scp": token("alice", scope="tickets:read tickets:write", scp=["tickets:read"]),
    "scope_number": token("alice", scope=5),
    "scope_nested": token("alice", scp=[["tickets:write"]]),
    "groups_object": token("alice", groups={"support": True}),
    "groups_mixed": token("alice", groups=["support", 7]),
}))
