import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { startBridge, type BridgeHandle } from '../../src/bridge.js';
import type { HistoryRecord } from '../../src/contract/index.js';
import { loadConfig } from '../../src/config/load.js';
import { logOptions, type Logger } from '../../src/log.js';
import { freePort } from './ollama-rig.js';
import { configFile, tempDir } from './temp.js';

/** A logger that keeps its JSON lines in memory, so tests can read what was logged. */
export function memoryLogger(level = 'debug'): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: pino(logOptions(level), sink), lines: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

export interface TestBridgeOptions {
  env?: Record<string, string>;
  file?: string;
  logger?: Logger;
  /** false: express serves the hot client routes too. */
  fastPath?: boolean;
}

/** A bridge on a free loopback port, configured like the CLI would from env vars and a file; history in a temp folder. */
export async function startTestBridge(options: TestBridgeOptions = {}): Promise<BridgeHandle> {
  const env = { BRIDGE_DATA_DIR: tempDir('bridge-data-'), ...options.env };
  const config = loadConfig({ file: options.file, env, flags: { port: '0' } });
  return startBridge(config, { logger: options.logger ?? pino({ level: 'silent' }), fastPath: options.fastPath });
}

/** POSTs `body` as JSON. */
export function postJson(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

export interface StandIn {
  url: string;
  /** Every request it received, in order. */
  requests: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: string }>;
  close(): Promise<void>;
}

/**
 * A hand-written upstream for fault injection: the handler decides what to answer. The bridge's
 * own health checks (GET /api/ps, with `loaded` in memory, read at each check when a function)
 * and model lists (GET /api/tags) are answered here, from `models`, and not recorded.
 */
export async function startStandIn(
  handler: (req: IncomingMessage, res: ServerResponse, body: string) => unknown,
  models: ReadonlyArray<string | { name: string; size: number; digest?: string }> = [],
  loaded: readonly string[] | (() => readonly string[]) = [],
): Promise<StandIn> {
  const requests: StandIn['requests'] = [];
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/api/ps' || req.url === '/api/tags')) {
      const listed =
        req.url === '/api/ps'
          ? (typeof loaded === 'function' ? loaded() : loaded).map((name) => ({
              name,
              model: name,
              size: 1,
              size_vram: 1,
              digest: 'd',
              details: {},
              expires_at: '2030-01-01T00:00:00Z',
            }))
          : models.map((entry) => {
              const { name, size, digest = 'd' } = typeof entry === 'string' ? { name: entry, size: 1 } : entry;
              return { name, model: name, modified_at: '2025-01-01T00:00:00Z', size, digest, details: {} };
            });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ models: listed }));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      void Promise.resolve(handler(req, res, body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The next history record the bridge writes, so a test waits on the record and not on time. */
export function nextRecord(bridge: BridgeHandle): Promise<HistoryRecord> {
  return new Promise((resolve) => {
    const off = bridge.history.onRecord((record) => {
      off();
      resolve(record);
    });
  });
}

/**
 * A bridge whose only local backend is down, with one cloud provider of `type` (named
 * cloud-<type>, model <type>-test) served by a stand-in that answers with `respond`.
 */
export async function startCloudBridge(
  type: 'anthropic' | 'openai',
  respond: (res: ServerResponse) => void,
  options: { enabled?: boolean; timeoutSeconds?: number; maxLineMb?: number } = {},
): Promise<{ cloud: StandIn; bridge: BridgeHandle; close(): Promise<void> }> {
  const { clouds, bridge, close } = await startCloudChainBridge([{ type, respond }], options);
  return { cloud: clouds[0] as StandIn, bridge, close };
}

/**
 * A bridge whose only local backend is down, with cloud providers tried in this order (the first
 * named cloud-<type>, each later one cloud-<type>-<its position>; model <type>-test), each served
 * by a stand-in that answers with its `respond`.
 */
export async function startCloudChainBridge(
  providers: ReadonlyArray<{ type: 'anthropic' | 'openai'; respond: (res: ServerResponse) => void }>,
  options: { enabled?: boolean; timeoutSeconds?: number; maxLineMb?: number } = {},
): Promise<{ clouds: StandIn[]; bridge: BridgeHandle; close(): Promise<void> }> {
  const clouds = await Promise.all(providers.map(({ respond }) => startStandIn((_req, res) => respond(res))));
  const timeout = options.timeoutSeconds === undefined ? '' : `      timeout_seconds: ${options.timeoutSeconds}\n`;
  const routing = options.maxLineMb === undefined ? '' : `routing:\n  thresholds:\n    max_line_mb: ${options.maxLineMb}\n`;
  const entries = providers.map(
    ({ type }, i) =>
      `    - name: cloud-${type}${i === 0 ? '' : `-${i}`}\n      type: ${type}\n      base_url: ${clouds[i]?.url}/v1\n      model: ${type}-test\n${timeout}`,
  );
  const file = configFile(`${routing}fallback:\n  enabled: ${options.enabled ?? true}\n  providers:\n${entries.join('')}`);
  const bridge = await startTestBridge({
    file,
    env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}`, ANTHROPIC_API_KEY: 'sk-ant-test', OPENAI_API_KEY: 'sk-oai-test' },
  });
  return {
    clouds,
    bridge,
    close: async () => {
      await bridge.stop(100);
      for (const cloud of clouds) await cloud.close();
    },
  };
}
