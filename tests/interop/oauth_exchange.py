"""Authlib (a generic OAuth client) performs an RFC 8693 token exchange, and
PyJWT verifies the task token from the broker's JWKS and reads its act chain.

usage: oauth_exchange.py ISSUER SUBJECT_TOKEN ACTOR_TOKEN SCOPE AUDIENCE
Prints {"token_response": ..., "claims": ..., "chain": [...]} as JSON.
"""
import json
import sys
import urllib.request

import jwt
from authlib.integrations.requests_client import OAuth2Session

issuer, subject, actor, scope, audience = sys.argv[1:6]
meta = json.load(urllib.request.urlopen(issuer + "/.well-known/oauth-authorization-server"))
assert "urn:ietf:params:oauth:grant-type:token-exchange" in meta["grant_types_supported"]

# The agent authenticates by its identity token (the actor), so the client
# itself sends no client credentials: token_endpoint_auth_method "none".
session = OAuth2Session(token_endpoint_auth_method="none")
token = session.fetch_token(
    meta["token_endpoint"],
    grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
    subject_token=subject,
    subject_token_type="urn:ietf:params:oauth:token-type:jwt",
    actor_token=actor,
    actor_token_type="urn:ietf:params:oauth:token-type:jwt",
    scope=scope,
    audience=audience,
)

jwks = jwt.PyJWKClient(meta["jwks_uri"])
key = jwks.get_signing_key_from_jwt(token["access_token"])
claims = jwt.decode(
    token["access_token"],
    key.key,
    algorithms=[key.algorithm_name],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss", "jti"]},
)
chain, act = [], claims.get("act")
while act:
    chain.append(act["sub"])
    act = act.get("act")
print(json.dumps({
    "token_response": {k: v for k, v in token.items() if k != "access_token"},
    "typ": jwt.get_unverified_header(token["access_token"])["typ"],
    "claims": claims,
    "chain": chain,
}))
