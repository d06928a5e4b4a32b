// An OAuth authorization server for the federated client assertion tests:
// node `oidc-provider` (a certified implementation we did not write) issuing
// client-credentials tokens to clients that authenticate with
// `private_key_jwt` (RFC 7523), their keys fetched from their `jwks_uri`.
//
//   PORT=<port> JWKS_URI=<warrant's JWKS URL> STRANGER_JWKS_URI=<another> node oauth-server.mjs
//
// Clients: `warrant-crm` (its keys are warrant's published keys) and
// `stranger` (keys warrant does not hold). Access tokens are JWTs for the
// resource `https://crm.test`, so tests can read what was issued.

import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';

const port = Number(process.env.PORT);
const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...kp.privateKey.export({ format: 'jwk' }), kid: 'as-test', alg: 'ES256', use: 'sig' };
const client = (client_id, jwks_uri) => ({
  client_id,
  jwks_uri,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: 'ES256',
  id_token_signed_response_alg: 'ES256',
  scope: 'read',
});

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [client('warrant-crm', process.env.JWKS_URI), client('stranger', process.env.STRANGER_JWKS_URI)],
  jwks: { keys: [jwk] },
  scopes: ['read'],
  // Everything here is on loopback, which oidc-provider's guard against
  // server-side request forgery refuses by design: fetch without it.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://crm.test',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'read',
        audience: 'https://crm.test',
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description, err.error_detail || '', err.cause?.message || '', err.cause?.cause?.message || ''));
provider.listen(port, '127.0.0.1', () => console.log('ready'));
