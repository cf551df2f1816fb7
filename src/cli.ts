import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startBridge, type BridgeHandle } from './bridge.js';
import { ConfigError, loadConfig } from './config/load.js';

const USAGE = `Usage: copilot-bridge serve [--port 5000] [--host 127.0.0.1] [--config config.yaml]

Runs the bridge headless: a local endpoint for Copilot, Continue, Cline, Zed and any
OpenAI or Ollama client, routed to your Ollama instances.

Options:
  --port <n>       port to listen on (default 5000; 0 picks a free one)
  --host <addr>    address to listen on (default 127.0.0.1)
  --config <file>  config.yaml to read (default: ./config.yaml when present)
  -h, --help       show this help
  -v, --version    print the version

Environment (overrides config.yaml; flags override both): ENABLE_DUAL_GPU, GPU0_URL,
GPU1_URL, OLLAMA_HOST, PROMETHEUS_PORT, LOG_LEVEL, TIMEOUT_SECONDS, MAX_RETRIES,
FALLBACK_ENABLED, SHUTDOWN_GRACE_SECONDS, CLOUD_API_KEY, BRIDGE_API_KEYS; each secret can
also come from a file (NAME_FILE, or a systemd credential NAME).`;

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
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    io.stderr(`copilot-bridge: ${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    io.stdout(`${USAGE}\n`);
    return 0;
  }
  if (values.version === true) {
    io.stdout(`${version()}\n`);
    return 0;
  }
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
