"""PyJWT verifies a warrant identity token with keys found through discovery.

usage: verify_identity.py ISSUER AUDIENCE TOKEN
Prints the verified claims as JSON; exits non-zero if verification fails.
"""
import json
import sys
import urllib.request

import jwt

issuer, audience, token = sys.argv[1], sys.argv[2], sys.argv[3]
meta = json.load(urllib.request.urlopen(issuer + "/.well-known/openid-configuration"))
client = jwt.PyJWKClient(meta["jwks_uri"])
key = client.get_signing_key_from_jwt(token)
header = jwt.get_unverified_header(token)
claims = jwt.decode(
    token,
    key.key,
    algorithms=[key.algorithm_name],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
)
print(json.dumps({"header": header, "claims": claims}))
