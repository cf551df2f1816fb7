import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { ROLES, type JwtConfig, type Role } from '../config/schema.js';
import { BridgeError } from '../contract/index.js';

/** Public-key algorithms accepted from a JWKS: never an HS* one, so a public key can't be used as an HMAC secret. */
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'];

export interface JwtClaims {
  name: string;
  /** Every text of the team claim, in the issuer's order: which of them is a team is the config's to say. */
  teams: string[];
  role: Role;
  /** When the token stops being accepted (its exp, plus the clock skew allowed), in ms since the epoch. */
  expiresAt: number;
}

/** A token refused on its own account: 401, which asks the client for a new one. */
function rejected(message: string, cause?: unknown): BridgeError {
  return new BridgeError(401, message, { code: 'invalid_token', cause });
}

/**
 * The claim of that name. A claim whose own name has dots (Auth0's "https://example.com/roles") is
 * taken as it is; otherwise a dotted name reaches into objects ("realm_access.roles").
 */
function claim(payload: JWTPayload, path: string): unknown {
  if (Object.hasOwn(payload, path)) return payload[path];
  let value: unknown = payload;
  for (const part of path.split('.')) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** The texts of a claim, one or a list; a blank one names nothing (holders without an email must not all be one person ""). */
function texts(value: unknown): string[] {
  const values: unknown[] = Array.isArray(value) ? value : [value];
  return values.filter((v): v is string => typeof v === 'string' && v.trim() !== '');
}

/** A file named by auth.jwt; one that cannot be read is reported with the setting that names it. */
function readKeyFile(setting: 'secret_file' | 'jwks_file', file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`auth.jwt.${setting}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

/**
 * Verifies bearer JWTs: the signature (HS256 with a shared secret, or a public key from a JWKS),
 * `iss`, `aud`, `exp` and `nbf` with a small clock skew, and maps claims to a name, team and role.
 * `alg: none` is refused by jose itself; each key source accepts only its own algorithm family.
 */
export class JwtVerifier {
  private readonly key: Uint8Array | JWTVerifyGetKey;
  private readonly algorithms: string[];

  constructor(private readonly config: JwtConfig) {
    if (config.secret_file !== undefined) {
      const secret = readKeyFile('secret_file', config.secret_file).trim();
      if (Buffer.byteLength(secret) < 32) throw new Error(`auth.jwt.secret_file: the HS256 secret must be at least 32 bytes`);
      this.key = new TextEncoder().encode(secret);
      this.algorithms = ['HS256'];
    } else if (config.jwks_url !== undefined) {
      this.key = createRemoteJWKSet(new URL(config.jwks_url), {
        cacheMaxAge: config.jwks_cache_seconds * 1000,
        cooldownDuration: config.jwks_refetch_cooldown_seconds * 1000,
        timeoutDuration: 5000,
      });
      this.algorithms = ASYMMETRIC;
    } else {
      const file = config.jwks_file as string;
      const text = readKeyFile('jwks_file', file);
      try {
        this.key = createLocalJWKSet(JSON.parse(text) as Parameters<typeof createLocalJWKSet>[0]);
      } catch (error) {
        throw new Error(`auth.jwt.jwks_file: ${file} is not a JSON Web Key Set (${(error as Error).message})`);
      }
      this.algorithms = ASYMMETRIC;
    }
  }

  /** The holder's claims; a refused token throws a 401 BridgeError (invalid_token), an unreachable key set a 503 (jwks_unavailable). */
  async verify(token: string): Promise<JwtClaims> {
    let payload: JWTPayload;
    try {
      const options = {
        algorithms: this.algorithms,
        issuer: this.config.issuer,
        audience: this.config.audience,
        clockTolerance: this.config.clock_skew_seconds,
        requiredClaims: ['exp'],
      };
      ({ payload } = this.key instanceof Uint8Array ? await jwtVerify(token, this.key, options) : await jwtVerify(token, this.key, options));
    } catch (error) {
      if (keySetUnavailable(error)) {
        // The key set is fetched before anything else is checked: a token that is bad on its own
        // (expired, another issuer or audience) is refused as such, not answered "retry later".
        const problem = claimsProblem(token, this.config);
        if (problem !== undefined) throw rejected(problem, error);
        // Otherwise the token may be fine: 503, which clients retry, rather than 401, which asks for a new login.
        throw new BridgeError(503, `the token cannot be checked now: the issuer's key set (JWKS) ${unavailableWhy(error)}`, {
          code: 'jwks_unavailable',
          cause: error,
        });
      }
      throw rejected(describe(error), error);
    }
    const { claims } = this.config;
    const name = texts(claim(payload, claims.name))[0];
    if (name === undefined) throw rejected(`the token has no '${claims.name}' claim to name its holder`);
    const roles = texts(claim(payload, claims.role)).filter((r): r is Role => (ROLES as readonly string[]).includes(r));
    const role = ROLES.find((r) => roles.includes(r)) ?? this.config.default_role;
    // requiredClaims makes jose refuse a token without a numeric exp.
    const expiresAt = ((payload.exp as number) + this.config.clock_skew_seconds) * 1000;
    return { name, teams: texts(claim(payload, claims.team)), role, expiresAt };
  }
}

/**
 * Whether verifying failed for want of the issuer's keys rather than because of the token: the
 * JWKS fetch timed out, could not connect (fetch's "fetch failed"), answered other than 200, or
 * answered something that is not a key set. (jose throws other TypeErrors for unusable keys.)
 */
function keySetUnavailable(error: unknown): boolean {
  if (error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) return true;
  if (error instanceof TypeError) return error.message === 'fetch failed';
  return error instanceof errors.JOSEError && error.code === 'ERR_JOSE_GENERIC' && /JSON Web Key Set/.test(error.message);
}

function unavailableWhy(error: unknown): string {
  if (error instanceof errors.JWKSTimeout) return 'did not answer in time';
  if (error instanceof TypeError) return `could not be fetched (${(error.cause as Error | undefined)?.message ?? error.message})`;
  return `answered wrongly (${(error as Error).message})`;
}

/** What is wrong with a token's own claims (expiry, not-before, issuer, audience), read without checking its signature; undefined when nothing is. */
function claimsProblem(token: string, config: JwtConfig): string | undefined {
  let payload: JWTPayload;
  try {
    payload = decodeJwt(token);
  } catch {
    return 'the token is not valid';
  }
  const now = Date.now() / 1000;
  if (typeof payload.exp !== 'number') return "the token's 'exp' claim is not accepted (missing)";
  if (payload.exp <= now - config.clock_skew_seconds) return 'the token has expired';
  if (typeof payload.nbf === 'number' && payload.nbf > now + config.clock_skew_seconds) return "the token's 'nbf' claim is not accepted (check_failed)";
  if (payload.iss !== config.issuer) return "the token's 'iss' claim is not accepted (check_failed)";
  const audiences = typeof payload.aud === 'string' ? [payload.aud] : (payload.aud ?? []);
  if (!audiences.includes(config.audience)) return "the token's 'aud' claim is not accepted (check_failed)";
  return undefined;
}

/** Says why a token was refused without echoing the token. */
function describe(error: unknown): string {
  if (error instanceof errors.JWTExpired) return 'the token has expired';
  if (error instanceof errors.JWTClaimValidationFailed) return `the token's '${error.claim}' claim is not accepted (${error.reason})`;
  if (error instanceof errors.JOSEAlgNotAllowed) return 'the token is signed with an algorithm this bridge does not accept';
  if (error instanceof errors.JWKSNoMatchingKey) return 'no key of the issuer matches the token (kid)';
  if (error instanceof errors.JWSSignatureVerificationFailed) return 'the token signature is not valid';
  if (error instanceof errors.JOSEError) return `the token is not valid (${error.code})`;
  return 'the token is not valid';
}
