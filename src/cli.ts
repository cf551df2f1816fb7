import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startBridge, type BridgeHandle } from './bridge.js';
import { addKey, KeyFileError, listKeys, revokeKey } from './auth/keys.js';
import { ConfigError, ENVIRONMENT_VARIABLES, loadConfig, SECRET_VARIABLES } from './config/load.js';
import { ROLES, type Role } from './config/schema.js';

/** `text` broken into lines of at most 92 characters at spaces, each after `indent`. */
function wrapped(text: string, indent: string): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && indent.length + line.length + 1 + word.length > 92) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  return [...lines, line].map((l) => indent + l).join('\n');
}

const USAGE = `Usage: copilot-bridge serve [--port 5000] [--host 127.0.0.1] [--config config.yaml]
       copilot-bridge keys add --name <who> [--team <team>] [--role admin|user|viewer]
                               [--models <pattern,...>] [--cloud allow|never] [--config config.yaml]
       copilot-bridge keys list [--config config.yaml]
       copilot-bridge keys revoke --name <who> [--config config.yaml]

serve runs the bridge headless: a local endpoint for Copilot, Continue, Cline, Zed and any
OpenAI or Ollama client, routed to your Ollama instances.

keys manages API keys in the config file: "add" prints a new key once and stores only its
SHA-256; "revoke" removes it (running bridges read keys at start: restart them).

Options:
  --port <n>       port to listen on (default 5000; 0 picks a free one)
  --host <addr>    address to listen on (default 127.0.0.1)
  --config <file>  config.yaml to read (default: ./config.yaml when present)
  -h, --help       show this help
  -v, --version    print the version

Environment (overrides config.yaml, where ollama.binary wins over OLLAMA_BIN and a
cloud provider's own api_key over its key variable; flags override both):
${wrapped(ENVIRONMENT_VARIABLES.join(', '), '  ')}
${wrapped(`Secrets (${SECRET_VARIABLES.join(', ')}) can also come from a file (NAME_FILE, or a systemd credential NAME).`, '')}`;

/** The flags each command takes; parseArgs knows them all, so a flag of another command would pass it unnoticed. */
const COMMAND_OPTIONS: ReadonlyMap<string, readonly string[]> = new Map([
  ['serve', ['port', 'host', 'config']],
  ['keys add', ['name', 'team', 'role', 'models', 'cloud', 'config']],
  ['keys list', ['config']],
  ['keys revoke', ['name', 'config']],
]);

export interface CliIo {
  argv: string[];
  env: Readonly<Record<string, string | undefined>>;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

function version(): string {
  const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return manifest.version;
}

/** Parses the command line and starts the bridge; returns an exit code, or the running bridge. */
export async function runCli(io: CliIo): Promise<number | BridgeHandle> {
  let parsed;
  try {
    parsed = parseArgs({
      args: io.argv,
      allowPositionals: true,
      tokens: true,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        config: { type: 'string' },
        name: { type: 'string' },
        team: { type: 'string' },
        role: { type: 'string' },
        models: { type: 'string' },
        cloud: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    io.stderr(`copilot-bridge: ${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals, tokens } = parsed;
  if (values.help === true) {
    io.stdout(`${USAGE}\n`);
    return 0;
  }
  if (values.version === true) {
    io.stdout(`${version()}\n`);
    return 0;
  }
  const command = positionals.join(' ');
  const allowed = COMMAND_OPTIONS.get(command);
  const stray = allowed === undefined ? undefined : tokens.find((token) => token.kind === 'option' && !allowed.includes(token.name));
  if (stray?.kind === 'option') {
    io.stderr(`copilot-bridge: ${stray.rawName} is not an option of ${command}\n\n${USAGE}\n`);
    return 2;
  }
  // An empty --config (an unset shell variable) would be reported as a file without a name.
  if (values.config?.trim() === '') {
    io.stderr(`copilot-bridge: --config needs a file name\n\n${USAGE}\n`);
    return 2;
  }
  if (positionals.length === 0) {
    io.stderr(`copilot-bridge: a command is needed: serve or keys\n\n${USAGE}\n`);
    return 2;
  }
  if (positionals[0] === 'keys') return keysCommand(io, positionals.slice(1), values);
  if (positionals.length !== 1 || positionals[0] !== 'serve') {
    io.stderr(`copilot-bridge: unknown command ${JSON.stringify(positionals.join(' '))}\n\n${USAGE}\n`);
    return 2;
  }

  const file = values.config ?? (existsSync('config.yaml') ? 'config.yaml' : undefined);
  let config;
  try {
    config = loadConfig({ file, env: io.env, flags: { port: values.port, host: values.host } });
  } catch (error) {
    if (error instanceof ConfigError) {
      io.stderr(`copilot-bridge: invalid configuration\n${error.message.replace(/^/gm, '  ')}\n`);
      return 2;
    }
    throw error;
  }
  try {
    return await startBridge(config);
  } catch (error) {
    io.stderr(`copilot-bridge: ${(error as Error).message}\n`);
    return 1;
  }
}

interface KeyOptions {
  config?: string;
  name?: string;
  team?: string;
  role?: string;
  models?: string;
  cloud?: string;
}

/** `keys add|list|revoke`: edits auth.keys of the config file; the key itself is printed once and stored nowhere. */
function keysCommand(io: CliIo, args: string[], options: KeyOptions): number {
  const file = options.config ?? 'config.yaml';
  const fail = (message: string): number => {
    io.stderr(`copilot-bridge keys: ${message}\n`);
    return 2;
  };
  try {
    switch (args.length === 1 ? args[0] : undefined) {
      case 'add': {
        if (options.name === undefined || options.name.trim() === '') return fail('--name is required');
        const role = options.role ?? 'user';
        if (!(ROLES as readonly string[]).includes(role)) return fail(`--role must be one of ${ROLES.join(', ')}`);
        if (options.cloud !== undefined && options.cloud !== 'allow' && options.cloud !== 'never') return fail('--cloud must be allow or never');
        // An empty team would make the config invalid; an empty model list would store a key without the limit asked for.
        const team = options.team?.trim();
        if (team === '') return fail('--team must not be empty');
        const models = options.models
          ?.split(',')
          .map((m) => m.trim())
          .filter((m) => m !== '');
        if (models?.length === 0) return fail('--models needs at least one model name or pattern');
        const key = addKey(file, {
          name: options.name.trim(),
          team,
          role: role as Role,
          models,
          cloud: options.cloud as 'allow' | 'never' | undefined,
        });
        io.stderr(`Added key '${options.name.trim()}' to ${file} (only its SHA-256 is stored). This is the only time it is shown:\n`);
        io.stdout(`${key}\n`);
        return 0;
      }
      case 'list': {
        // `add` creates the file; listing one that is not there is a mistyped path.
        if (!existsSync(file)) return fail(`${file} does not exist`);
        const keys = listKeys(file);
        if (keys.length === 0) io.stdout(`no keys in ${file}\n`);
        for (const key of keys) {
          const extras = [
            key.team === null ? null : `team ${key.team}`,
            `role ${key.role}`,
            key.cloud === 'never' ? 'cloud: never' : null,
            key.models === null ? null : `models ${key.models.join(',')}`,
            key.created === null ? null : `created ${key.created}`,
          ];
          io.stdout(`${key.name}\t${extras.filter((e) => e !== null).join(', ')}\t${key.hash}\n`);
        }
        return 0;
      }
      case 'revoke': {
        // Trimmed as `add` trims it.
        const name = options.name?.trim();
        if (name === undefined || name === '') return fail('--name is required');
        if (!revokeKey(file, name)) return fail(`no key named '${name}' in ${file}`);
        io.stdout(`revoked '${name}' in ${file}; restart running bridges to apply\n`);
        return 0;
      }
      default:
        return fail(`expected add, list or revoke\n\n${USAGE}`);
    }
  } catch (error) {
    if (error instanceof KeyFileError) return fail(error.message);
    throw error;
  }
}
