import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { authConfigured } from '../config/load.js';
import type { Config, KeyConfig, Role } from '../config/schema.js';
import { BridgeError } from '../contract/index.js';
import type { Identity } from './identity.js';
import type { JwtVerifier } from './jwt.js';
import { hashKey } from './keys.js';

/** Constant time whatever the lengths: both sides are hashed first. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Headers that carry a key besides `Authorization`: `x-api-key` (Anthropic clients), `api-key` (Azure-style clients), `x-bridge-token` (the dashboard and tray). */
const KEY_HEADERS = ['x-api-key', 'api-key', 'x-bridge-token'] as const;

/** Every header a client's credentials arrive in: the bridge's own, never passed on upstream. */
export const CREDENTIAL_HEADERS: readonly string[] = ['authorization', ...KEY_HEADERS];

/**
 * The credentials a client sent, wherever its kind of client puts them: `Authorization: Bearer`
 * (OpenAI, Ollama clients) or one of KEY_HEADERS. A client may send more than one (an Anthropic
 * SDK given both an API key and an auth token), one of them a placeholder.
 */
function credentialsOf(headers: IncomingHttpHeaders): string[] {
  const credentials: string[] = [];
  const authorization = headers.authorization;
  if (authorization !== undefined && /^bearer\s+\S/i.test(authorization)) credentials.push(authorization.replace(/^bearer\s+/i, '').trim());
  for (const name of KEY_HEADERS) {
    const value = headers[name];
    if (typeof value === 'string' && value.trim() !== '') credentials.push(value.trim());
  }
  return credentials;
}

/**
 * Who is asking. With no key and no JWT issuer configured, the bridge serves a single local user
 * and anyone who passes the Host/Origin guard is that user; otherwise every request needs a key,
 * a JWT or the control token.
 */
export class Authenticator {
  readonly required: boolean;
  private readonly keys = new Map<string, Identity>();
  /** @param jwt The verifier of auth.jwt, when that is configured (its JWT library is loaded only then). */
  constructor(
    private readonly config: Config,
    private readonly controlToken: string,
    private readonly jwt?: JwtVerifier,
  ) {
    this.required = authConfigured(config);
    config.server.api_keys.forEach((key, index) => {
      this.keys.set(hashKey(key), this.identity({ name: `server.api_keys[${index}]`, role: 'user', via: 'api_key' }));
    });
    for (const key of config.auth.keys) this.keys.set(key.hash, this.fromKey(key));
  }

  /** Fills in what the team adds: its cloud policy and model allow-list. */
  private identity(base: { name: string; team?: string | null; role: Role; via: Identity['via']; key?: KeyConfig; expiresAt?: number }): Identity {
    const team = base.team ?? null;
    const teamConfig = team === null ? undefined : this.config.auth.teams[team];
    return {
      name: base.name,
      team,
      role: base.role,
      via: base.via,
      models: base.key?.models ?? teamConfig?.models,
      cloud: base.key?.cloud === 'never' || teamConfig?.cloud === 'never' ? 'never' : 'allow',
      limits: base.key?.limits ?? this.config.limits.default,
      ...(base.expiresAt === undefined ? {} : { expiresAt: base.expiresAt }),
    };
  }

  private fromKey(key: KeyConfig): Identity {
    return this.identity({ name: key.name, team: key.team ?? null, role: key.role, via: 'key', key });
  }

  private anonymous(): Identity {
    return this.identity({ name: 'local', role: 'admin', via: 'anonymous' });
  }

  /** Resolves the request's identity or throws a BridgeError (401) when one is required and missing or wrong. */
  async identify(headers: IncomingHttpHeaders): Promise<Identity> {
    const credentials = credentialsOf(headers);
    if (credentials.length === 0) {
      if (this.required)
        throw new BridgeError(401, 'a valid API key or token is required (Authorization: Bearer <key>, x-api-key or api-key)', { code: 'invalid_api_key' });
      return this.anonymous();
    }
    // Whichever credential is the control token or a known key, in the order above; else the first token shaped like a JWT.
    for (const credential of credentials) {
      if (sameSecret(credential, this.controlToken)) return this.identity({ name: 'control', role: 'admin', via: 'control' });
      const byKey = this.keys.get(hashKey(credential));
      if (byKey !== undefined) return byKey;
    }
    const token = credentials.find((credential) => JWT_SHAPE.test(credential));
    if (this.jwt !== undefined && token !== undefined) {
      const { name, teams, role, expiresAt } = await this.jwt.verify(token);
      // A groups claim lists whatever the issuer knows: the first configured team, so its policy and
      // limits apply; with none configured, the first group still names the team in history.
      const team = teams.find((group) => Object.hasOwn(this.config.auth.teams, group)) ?? teams[0] ?? null;
      return this.identity({ name, team, role, via: 'jwt', expiresAt });
    }
    // Without auth configured, clients that send a placeholder key ("ollama", "sk-...") are the local user.
    if (!this.required) return this.anonymous();
    throw new BridgeError(401, 'the API key or token is not valid', { code: 'invalid_api_key' });
  }
}
