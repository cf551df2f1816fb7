import { closeSync, openSync, readSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { isJsonObject } from '../contract/index.js';
import { configSchema, type BackendConfig, type Config } from './schema.js';

/** One problem in the configuration, named by where it came from and which key it is. */
export interface ConfigProblem {
  /** "config.yaml", "environment variable TIMEOUT_SECONDS", "--port" or "defaults". */
  source: string;
  /** Dotted key path inside the configuration, e.g. "routing.thresholds.timeout_seconds". */
  keyPath: string;
  /** What was expected, in words. */
  expected: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map((p) => `${p.source}: ${p.keyPath === '' ? '' : `${p.keyPath}: `}${p.expected}`).join('\n'));
    this.name = 'ConfigError';
  }
}

export interface ConfigSources {
  /** Path of a config.yaml; absent means defaults only. */
  file?: string;
  env?: Readonly<Record<string, string | undefined>>;
  /** Command-line flags, which win over everything else. */
  flags?: { host?: string; port?: string };
}

type ValueKind = 'string' | 'number' | 'boolean' | 'list';

interface Override {
  name: string;
  path: readonly string[];
  kind: ValueKind;
  secret?: boolean;
}

/** Environment variables of the deployment document, each mapped onto a config.yaml key. */
const ENV_OVERRIDES: readonly Override[] = [
  { name: 'ENABLE_DUAL_GPU', path: ['dual_gpu'], kind: 'boolean' },
  { name: 'PROMETHEUS_PORT', path: ['monitoring', 'prometheus', 'port'], kind: 'number' },
  { name: 'LOG_LEVEL', path: ['monitoring', 'logging', 'level'], kind: 'string' },
  { name: 'TIMEOUT_SECONDS', path: ['routing', 'thresholds', 'timeout_seconds'], kind: 'number' },
  { name: 'MAX_RETRIES', path: ['routing', 'thresholds', 'max_retries'], kind: 'number' },
  { name: 'FALLBACK_ENABLED', path: ['fallback', 'enabled'], kind: 'boolean' },
  { name: 'CLOUD_API_KEY', path: ['fallback', 'cloud_api_key'], kind: 'string', secret: true },
  { name: 'BRIDGE_API_KEYS', path: ['server', 'api_keys'], kind: 'list', secret: true },
  { name: 'BRIDGE_DATA_DIR', path: ['data_dir'], kind: 'string' },
  { name: 'BRIDGE_CONTROL_TOKEN', path: ['control', 'token'], kind: 'string', secret: true },
  { name: 'SHUTDOWN_GRACE_SECONDS', path: ['server', 'shutdown_grace_seconds'], kind: 'number' },
];

const FLAG_OVERRIDES: readonly Override[] = [
  { name: 'host', path: ['server', 'host'], kind: 'string' },
  { name: 'port', path: ['server', 'port'], kind: 'number' },
];

/** GPUn_URL variables set (or add) the backend of that name. */
const GPU_URL_VARS = [
  { name: 'GPU0_URL', backend: 'gpu0', gpu: 0 },
  { name: 'GPU1_URL', backend: 'gpu1', gpu: 1 },
] as const;

/** Secret variables; each may instead come from a file (NAME_FILE, or a systemd credential named NAME). */
export const SECRET_VARIABLES = ['CLOUD_API_KEY', 'OPENAI_API_KEY', 'ANTHROPIC_API_KEY', 'BRIDGE_API_KEYS', 'BRIDGE_CONTROL_TOKEN'] as const;

/**
 * Every environment variable the bridge reads for its settings, in the order --help lists them.
 * OLLAMA_BIN is read where the Ollama binary is looked for (src/ollama/manager.ts).
 */
export const ENVIRONMENT_VARIABLES: readonly string[] = [
  ...new Set([...GPU_URL_VARS.map((v) => v.name), 'OLLAMA_HOST', 'OLLAMA_BIN', ...ENV_OVERRIDES.map((o) => o.name), ...SECRET_VARIABLES]),
];

const SECRET_PATHS = new Set(['server.api_keys', 'fallback.cloud_api_key', 'control.token']);

/** Settings that existed once: a config that still has one is told what to do instead. */
const REMOVED_SETTINGS: ReadonlyMap<string, string> = new Map([['monitoring.logging.format', 'removed: the log is always JSON lines (pino); delete this key']]);

const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);

/** Turns the text of an env var or flag into the type the key wants; bad text stays text so validation names it. */
function convert(text: string, kind: ValueKind): unknown {
  const trimmed = text.trim();
  switch (kind) {
    case 'string':
      return trimmed;
    case 'number':
      return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
    case 'boolean': {
      const lower = trimmed.toLowerCase();
      if (TRUE_WORDS.has(lower)) return true;
      if (FALSE_WORDS.has(lower)) return false;
      return trimmed;
    }
    case 'list':
      // Commas in an env var; one per line in a secret file.
      return trimmed
        .split(/[,\n]/)
        .map((item) => item.trim())
        .filter((item) => item !== '');
  }
}

type Tree = Record<string, unknown>;

function setPath(root: Tree, path: readonly string[], value: unknown): void {
  let node = root;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (!isJsonObject(next)) node[key] = {};
    node = node[key] as Tree;
  }
  node[path[path.length - 1] as string] = value;
}

/**
 * Accepts what people write for an Ollama address, as Ollama's own OLLAMA_HOST does: "host",
 * "host:port", ":port" (this machine), a bare IPv6 address, "http(s)://host[:port][/path]". A
 * wildcard bind address means "this machine".
 */
export function normalizeOllamaUrl(text: string): string | undefined {
  // Spaces and quotes around it are dropped, as Ollama does (a quoted value in a unit file).
  let candidate = text
    .trim()
    .replace(/^["']+|["']+$/g, '')
    .trim();
  if (candidate === '') return undefined;
  const schemed = /^[a-z][a-z0-9+.-]*:\/\//i.test(candidate);
  if (!schemed) {
    // ":11434" is this machine; a bare IPv6 address takes brackets.
    if (isIP(candidate) === 6) candidate = `[${candidate}]`;
    else if (candidate.startsWith(':')) candidate = `127.0.0.1${candidate}`;
    candidate = `http://${candidate}`;
  }
  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.hostname === '0.0.0.0' || url.hostname === '[::]') url.hostname = '127.0.0.1';
  // Ollama's rule: without a scheme, its own port; with one, the scheme's (80, 443), as URLs have it.
  const authority = candidate.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split('/')[0] ?? '';
  if (!schemed && !/:\d+$/.test(authority)) url.port = '11434';
  return url.origin + url.pathname.replace(/\/+$/, '');
}

export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (bare === 'localhost' || bare === '::1') return true;
  return isIP(bare) === 4 && bare.startsWith('127.');
}

/** Far more than any config.yaml; a file past it is the wrong file, read and parsed for nothing. */
export const MAX_CONFIG_MIB = 16;
const MAX_SECRET_MIB = 1;

/**
 * A file's text, or undefined when it holds more than `maxMib` MiB. Read in chunks up to that bound:
 * a device that never ends (/dev/zero) or a huge file would otherwise be read until memory runs out.
 * Pipes still work (--config <(...)), which a check for a regular file would refuse.
 */
export function readTextUpTo(file: string, maxMib: number): string | undefined {
  const maxBytes = maxMib * 1024 * 1024;
  const fd = openSync(file, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const read = readSync(fd, chunk);
      if (read === 0) return Buffer.concat(chunks, total).toString('utf8');
      total += read;
      if (total > maxBytes) return undefined;
      chunks.push(chunk.subarray(0, read));
    }
  } finally {
    closeSync(fd);
  }
}

/** YAML errors reported of one file. */
const YAML_ERRORS_TOLD = 5;

function readConfigFile(file: string): Tree {
  let text: string | undefined;
  try {
    text = readTextUpTo(file, MAX_CONFIG_MIB);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError([{ source: file, keyPath: '', expected: `a readable YAML file (${code})` }]);
  }
  if (text === undefined) throw new ConfigError([{ source: file, keyPath: '', expected: `a YAML file of at most ${MAX_CONFIG_MIB} MiB` }]);
  const document = YAML.parseDocument(text, { prettyErrors: true });
  if (document.errors.length > 0) {
    // The wrong file (a log, a binary) has an error on every line: the first few say what is wrong.
    const told = document.errors.slice(0, YAML_ERRORS_TOLD);
    const more = document.errors.length - told.length;
    throw new ConfigError([
      ...told.map((error) => {
        const at = error.linePos?.[0];
        const message = error.message.split('\n')[0] ?? '';
        return {
          source: at ? `${file}:${at.line}:${at.col}` : file,
          keyPath: '',
          // Some messages quote the offending text, which in a binary file runs to megabytes.
          expected: `valid YAML (${message.length > 200 ? `${message.slice(0, 200)}...` : message})`,
        };
      }),
      ...(more > 0 ? [{ source: file, keyPath: '', expected: `valid YAML (and ${more} more errors)` }] : []),
    ]);
  }
  let content: unknown;
  try {
    content = document.toJS();
  } catch (error) {
    // The yaml library refuses to expand aliases past a limit (billion laughs) by throwing here.
    throw new ConfigError([{ source: file, keyPath: '', expected: `valid YAML (${(error as Error).message})` }]);
  }
  if (content === null || content === undefined) return {};
  if (!isJsonObject(content)) {
    throw new ConfigError([{ source: file, keyPath: '', expected: 'a mapping of keys at the top level' }]);
  }
  return content;
}

/** A secret file's text, or what is wrong with the file when it cannot be read. */
function readSecretFile(file: string): { text: string } | { code: string; expected: string } {
  let text: string | undefined;
  try {
    text = readTextUpTo(file, MAX_SECRET_MIB);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    return { code, expected: `a readable file (${code}: ${file})` };
  }
  if (text === undefined) return { code: 'too large', expected: `a file of at most ${MAX_SECRET_MIB} MiB (${file})` };
  // A trailing newline is how editors and `echo` end a file, never part of the secret.
  return { text: text.replace(/\r?\n$/, '') };
}

/**
 * The value of a secret variable: set directly, read from the file NAME_FILE names (Vault agent,
 * Kubernetes secret volumes), or from systemd's credential NAME in $CREDENTIALS_DIRECTORY
 * (LoadCredential=). Problems name the variable and the file, never the content.
 */
function secretFromFiles(env: Readonly<Record<string, string | undefined>>, name: string, problems: ConfigProblem[]): string | undefined {
  const direct = env[name];
  const file = env[`${name}_FILE`];
  if (direct !== undefined && file !== undefined) {
    problems.push({ source: `environment variables ${name} and ${name}_FILE`, keyPath: '', expected: 'only one of them' });
    return undefined;
  }
  if (direct !== undefined) return direct;
  if (file !== undefined) {
    const read = readSecretFile(file);
    if ('text' in read) return read.text;
    problems.push({ source: `environment variable ${name}_FILE`, keyPath: '', expected: read.expected });
    return undefined;
  }
  const credentials = env.CREDENTIALS_DIRECTORY;
  if (credentials === undefined || credentials === '') return undefined;
  const credential = path.join(credentials, name);
  const read = readSecretFile(credential);
  if ('text' in read) return read.text;
  // A credential the unit does not pass is simply not set; one that is there but unreadable is a problem.
  if (read.code !== 'ENOENT') problems.push({ source: `systemd credential ${name}`, keyPath: '', expected: read.expected });
  return undefined;
}

/** The environment with every secret variable resolved from its file, when it came as one. */
function withSecretFiles(
  given: Readonly<Record<string, string | undefined>>,
  names: readonly string[],
  problems: ConfigProblem[],
): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...given };
  for (const name of names) env[name] = secretFromFiles(given, name, problems);
  return env;
}

function describeInput(input: unknown): string {
  if (input === undefined) return 'nothing';
  const text = JSON.stringify(input);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Whether clients must say who they are: any API key or a JWT issuer is configured. */
export function authConfigured(config: Pick<Config, 'server' | 'auth'>): boolean {
  return config.server.api_keys.length > 0 || config.auth.keys.length > 0 || config.auth.jwt !== undefined;
}

/**
 * Builds the configuration from defaults < config.yaml < environment < flags and validates it.
 * Every problem names its source and key path; the caller decides how to report them.
 */
export function loadConfig(sources: ConfigSources = {}): Config {
  const raw = sources.file === undefined ? {} : readConfigFile(sources.file);
  const fileSource = sources.file ?? 'defaults';
  /** Which source set each overridden key, so errors blame the right one. */
  const setBy = new Map<string, string>();
  const problems: ConfigProblem[] = [];
  // Providers may name their own key variable; it gets the same file forms as the standard ones.
  const providerKeyVariables = (isJsonObject(raw.fallback) && Array.isArray(raw.fallback.providers) ? raw.fallback.providers : [])
    .map((p: unknown) => (isJsonObject(p) && typeof p.api_key_env === 'string' ? p.api_key_env : undefined))
    .filter((name): name is string => name !== undefined);
  // A variable set to nothing counts as not set: Docker Compose passes `${VAR}` of an unset VAR as "".
  const given = Object.fromEntries(Object.entries(sources.env ?? {}).filter(([, value]) => value !== undefined && value.trim() !== ''));
  const env = withSecretFiles(given, [...new Set([...SECRET_VARIABLES, ...providerKeyVariables])], problems);

  const apply = (override: Override, text: string | undefined, source: string): void => {
    if (text === undefined) return;
    setPath(raw, override.path, convert(text, override.kind));
    setBy.set(override.path.join('.'), source);
  };
  for (const override of ENV_OVERRIDES) {
    apply(override, env[override.name], `environment variable ${override.name}`);
  }

  const envBackends: BackendConfig[] = [];
  for (const variable of GPU_URL_VARS) {
    const text = env[variable.name];
    if (text === undefined || text.trim() === '') continue;
    const url = normalizeOllamaUrl(text);
    if (url === undefined) {
      problems.push({
        source: `environment variable ${variable.name}`,
        keyPath: `backends.${variable.backend}.url`,
        expected: `an http(s) URL (got ${describeInput(text)})`,
      });
      continue;
    }
    envBackends.push({ name: variable.backend, url, gpu: variable.gpu, weight: 1, manage: false });
  }
  if (envBackends.length > 0) {
    const listed = Array.isArray(raw.backends) ? (raw.backends as unknown[]) : [];
    const kept = listed.filter((entry) => !envBackends.some((b) => isJsonObject(entry) && entry.name === b.name));
    raw.backends = [...envBackends, ...kept];
  }

  for (const override of FLAG_OVERRIDES) {
    apply(override, sources.flags?.[override.name as 'host' | 'port'], `--${override.name}`);
  }

  const result = configSchema.safeParse(raw, { reportInput: true });
  if (!result.success) {
    for (const issue of result.error.issues) {
      const keyPath = issue.path.map(String).join('.');
      let source = fileSource;
      for (const [path, by] of setBy) {
        if (keyPath === path || keyPath.startsWith(`${path}.`)) source = by;
      }
      const secret = [...SECRET_PATHS].some((p) => keyPath === p || keyPath.startsWith(`${p}.`)) || /\.api_key$/.test(keyPath);
      if (issue.code === 'unrecognized_keys') {
        const removed = issue.keys.map((key) => `${keyPath}.${key}`).filter((path) => REMOVED_SETTINGS.has(path));
        for (const path of removed) problems.push({ source, keyPath: path, expected: REMOVED_SETTINGS.get(path) ?? '' });
        if (removed.length === issue.keys.length) continue;
      }
      const got = secret || !('input' in issue) ? '' : ` (got ${describeInput(issue.input)})`;
      problems.push({ source, keyPath, expected: `${issue.message}${got}` });
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  const parsed = result.data;

  if (!isLoopbackHost(parsed.server.host) && !authConfigured(parsed)) {
    throw new ConfigError([
      {
        source: setBy.get('server.host') ?? fileSource,
        keyPath: 'server.host',
        expected: `a loopback address (127.0.0.1, ::1, localhost) unless server.api_keys, BRIDGE_API_KEYS, auth.keys or auth.jwt is set (got ${describeInput(parsed.server.host)})`,
      },
    ]);
  }

  // The metrics server listens on server.host too: on the same port the bridge would find it taken by itself.
  const metricsPort = parsed.monitoring.prometheus.port;
  if (parsed.monitoring.prometheus.enabled && metricsPort !== undefined && metricsPort !== 0 && metricsPort === parsed.server.port) {
    throw new ConfigError([
      {
        source: setBy.get('monitoring.prometheus.port') ?? fileSource,
        keyPath: 'monitoring.prometheus.port',
        expected: `a port other than server.port (got ${metricsPort})`,
      },
    ]);
  }

  // Cloud keys come from the environment: the provider's own variable, then CLOUD_API_KEY.
  for (const provider of parsed.fallback.providers) {
    const variable = provider.api_key_env ?? (provider.type === 'openai' ? 'OPENAI_API_KEY' : 'ANTHROPIC_API_KEY');
    provider.api_key ??= env[variable] ?? parsed.fallback.cloud_api_key;
  }

  const [first, ...rest] = parsed.backends;
  if (first !== undefined) return { ...parsed, backends: [first, ...rest] };
  const hostText = env.OLLAMA_HOST;
  const url = hostText === undefined || hostText.trim() === '' ? 'http://127.0.0.1:11434' : normalizeOllamaUrl(hostText);
  if (url === undefined) {
    throw new ConfigError([
      {
        source: 'environment variable OLLAMA_HOST',
        keyPath: 'backends',
        expected: `an Ollama address such as 127.0.0.1:11434 (got ${describeInput(hostText)})`,
      },
    ]);
  }
  return { ...parsed, backends: [{ name: 'local', url, weight: 1, manage: false }] };
}
