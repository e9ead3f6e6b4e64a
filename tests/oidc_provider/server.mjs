// A real OpenID provider for the SSO tests: node-oidc-provider (OpenID-certified), started by tests/sso_providers.py.
//
// Usage: node server.mjs CONFIG.json
// CONFIG: {"issuer", "port", "clients": [...], "jwks": {"keys": [private JWKs]}, "accounts_file"}
// accounts_file: {"<login>": {"email", "name", "groups": [...]}} — read at every lookup, so a test can move a
// person between groups and see the next sign-in follow. Any password is accepted on the login page (the
// provider's development interactions); an unknown login is refused at token time.
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function accounts() {
  return JSON.parse(readFileSync(config.accounts_file, 'utf8'));
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  cookies: { keys: ['test-cookie-key-not-secret'] },
  // first-party clients: consent is implied (the provider remembers it as a grant)
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'preferred_username', 'groups']);
    await grant.save();
    return grant;
  },
  async findAccount(ctx, id) {
    const person = accounts()[id];
    if (!person) return undefined;
    return {
      accountId: id,
      async claims() {
        const current = accounts()[id] || person;
        return {
          sub: id,
          email: current.email,
          email_verified: true,
          name: current.name,
          preferred_username: id,
          groups: current.groups,
        };
      },
    };
  },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
});
provider.proxy = false;

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${config.issuer}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
