// An OpenID Connect provider for the console's single sign-on tests: node
// `oidc-provider` (a certified implementation we did not write) with its
// development login page, ES256 ID tokens, PKCE required, and a `groups`
// claim in the ID token.
//
//   PORT=<port> REDIRECT=<console callback URL> SECRET=<client secret> node oidc-provider.mjs
//
// Users: carol (approvers), dana (security), root (sec-admins), mallory (no
// console group). Any password signs in (the development login).

import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';

const port = Number(process.env.PORT);
const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...kp.privateKey.export({ format: 'jwk' }), kid: 'console-test', alg: 'ES256', use: 'sig' };
const groups = { carol: ['approvers'], dana: ['security'], root: ['sec-admins', 'security'], mallory: ['everyone'] };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'warrant-console',
    client_secret: process.env.SECRET,
    redirect_uris: [process.env.REDIRECT],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'groups'],
  claims: { openid: ['sub'], groups: ['groups'] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id, groups: groups[id] || [] }) }),
  features: { devInteractions: { enabled: true } },
});
provider.listen(port, '127.0.0.1', () => console.log('ready'));
