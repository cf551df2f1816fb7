import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createServer } from 'node:net';
import { tempDir } from './temp.js';

/** The committed deployment files. */
export const DEPLOY = path.resolve('deploy');
export const REPO = path.resolve('.');

export const GPU_NODES = ['gpu-node-1.internal', 'gpu-node-2.internal', 'gpu-node-3.internal'] as const;
/** The three bridge instances of the deployment document: host, port and the two GPU nodes each uses. */
export const INSTANCES = [
  { host: 'proxy-1.internal', port: 5000, gpuNodes: [0, 1] },
  { host: 'proxy-2.internal', port: 5001, gpuNodes: [1, 2] },
  { host: 'proxy-3.internal', port: 5002, gpuNodes: [0, 2] },
] as const;
/** The bridges' metrics port (PROMETHEUS_PORT) in the committed files. */
const METRICS_PORT = 9090;

export interface TestPorts {
  bridges: [number, number, number];
  metrics: [number, number, number];
  ollama: [number, number, number];
  nginxHttps: number;
  nginxHttp: number;
  haproxyHttps: number;
  haproxyHttp: number;
  prometheus: number;
  alertmanager: number;
  webhook: number;
}

/**
 * The first port the OS hands out for outgoing connections (Linux: ip_local_port_range). A port
 * chosen from that range could be taken by a connection (a bridge's health check) before the
 * program it was chosen for listens on it, which then cannot start.
 */
function firstEphemeralPort(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Ports free now, one per listener of the test cluster, from below the range outgoing connections take theirs from. */
export async function testPorts(): Promise<TestPorts> {
  const chosen = new Set<number>();
  const high = firstEphemeralPort();
  const next = async (): Promise<number> => {
    for (;;) {
      const port = 10_000 + Math.floor(Math.random() * (high - 10_000));
      if (chosen.has(port) || !(await canListen(port))) continue;
      chosen.add(port);
      return port;
    }
  };
  const three = async (): Promise<[number, number, number]> => [await next(), await next(), await next()];
  return {
    bridges: await three(),
    metrics: await three(),
    ollama: await three(),
    nginxHttps: await next(),
    nginxHttp: await next(),
    haproxyHttps: await next(),
    haproxyHttp: await next(),
    prometheus: await next(),
    alertmanager: await next(),
    webhook: await next(),
  };
}

export type Replacement = readonly [from: string, to: string];

/**
 * Reads a committed file and swaps production values for test ones. Every `from` must be in the
 * file: when a deploy file changes, the rendering fails loudly instead of testing something else.
 */
export function renderText(file: string, replacements: readonly Replacement[]): string {
  let text = readFileSync(path.join(DEPLOY, file), 'utf8');
  for (const [from, to] of replacements) {
    if (!text.includes(from)) throw new Error(`deploy/${file} no longer contains ${JSON.stringify(from)}: update the test rendering in test/support/deploy.ts`);
    text = text.split(from).join(to);
  }
  return text;
}

function write(file: string, text: string): string {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

export interface RenderOptions {
  /** The nvidia-smi the bridges run (a stand-in here). */
  nvidiaSmi: string;
  /** The ollama binary the Ollama unit names (must exist for systemd-analyze). */
  ollamaBinary: string;
}

/** One bridge instance as systemd would start it, read from the rendered unit and env file. */
export interface BridgeLaunch {
  instance: number;
  port: number;
  metricsPort: number;
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
}

export interface RenderedDeploy {
  dir: string;
  ports: TestPorts;
  apiKey: string;
  /** The key Prometheus and HAProxy's checks send to the metrics port (also one of BRIDGE_API_KEYS). */
  monitoringKey: string;
  controlToken: string;
  /** TLS certificate the balancers serve (and the clients trust). */
  certificate: string;
  nginxConf: string;
  haproxyCfg: string;
  prometheusYml: string;
  prometheusDir: string;
  alertmanagerYml: string;
  unitsDir: string;
  bridges: BridgeLaunch[];
}

const prefix = (instance: number): string => `/via-bridge-${instance + 1}`;

/** Which bridge a request reached an Ollama stand-in through (the path prefix its GPU URLs carry). */
export function bridgeOfCaller(caller: string): number {
  return Number(/^via-bridge-(\d)$/.exec(caller)?.[1] ?? 0) - 1;
}

/** Parses `KEY=value` lines (systemd EnvironmentFile syntax without quoting). */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (match) env[match[1] as string] = match[2] as string;
  }
  return env;
}

/** Reads the launch of one instance from the rendered unit: ExecStart, WorkingDirectory, Environment(File), LoadCredential. */
function launchFromUnit(unit: string, instance: number, port: number, metricsPort: number, credentialsDir: string): BridgeLaunch {
  const expand = (value: string): string => value.replaceAll('%i', String(port));
  const settings = unit
    .split('\n')
    .map((line) => /^([A-Za-z]+)=(.*)$/.exec(line))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => [match[1] as string, expand(match[2] as string)] as const);
  const values = (key: string): string[] => settings.filter(([k]) => k === key).map(([, v]) => v);
  const [command, ...args] = (values('ExecStart')[0] ?? '').split(/\s+/);
  const env: Record<string, string> = {};
  for (const file of values('EnvironmentFile')) Object.assign(env, envFile(readFileSync(file, 'utf8')));
  for (const assignment of values('Environment')) Object.assign(env, envFile(assignment));
  // What systemd does for LoadCredential=: copies each file into the service's credentials folder.
  const credentials = path.join(credentialsDir, String(port));
  mkdirSync(credentials, { recursive: true, mode: 0o700 });
  for (const credential of values('LoadCredential')) {
    const [name, source] = credential.split(':') as [string, string];
    copyFileSync(source, path.join(credentials, name));
  }
  env.CREDENTIALS_DIRECTORY = credentials;
  return { instance, port, metricsPort, command: command ?? '', args, cwd: values('WorkingDirectory')[0] ?? REPO, env };
}

/** Renders every committed deploy file into a temp folder with test ports and paths. */
export async function renderDeploy(options: RenderOptions): Promise<RenderedDeploy> {
  const dir = tempDir('copilot-bridge-deploy-');
  const ports = await testPorts();
  const at = (...parts: string[]): string => path.join(dir, ...parts);
  const apiKey = 'deploy-test-key-0123456789abcdef';
  const monitoringKey = 'deploy-test-monitoring-0123456789';
  const controlToken = 'deploy-test-control-0123456789';

  // TLS: a throwaway certificate for 127.0.0.1.
  const certificate = at('tls', 'cert.pem');
  const key = at('tls', 'key.pem');
  mkdirSync(at('tls'), { recursive: true });
  const openssl = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      certificate,
      '-days',
      '2',
      '-subj',
      '/CN=copilot-bridge.company.com',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:copilot-bridge.company.com',
    ],
    { encoding: 'utf8' },
  );
  if (openssl.status !== 0) throw new Error(`openssl failed: ${openssl.stderr}`);
  write(at('tls', 'haproxy.pem'), readFileSync(certificate, 'utf8') + readFileSync(key, 'utf8'));

  const upstreams = INSTANCES.map((instance, i) => [`${instance.host}:${instance.port}`, `127.0.0.1:${ports.bridges[i]}`] as const);

  // nginx: the committed site inside a minimal main file (the one a Debian host already has).
  const site = write(
    at('nginx', 'copilot-bridge.conf'),
    renderText('nginx/copilot-bridge.conf', [
      ...upstreams,
      ['/etc/nginx/ssl/cert.pem', certificate],
      ['/etc/nginx/ssl/key.pem', key],
      ['listen 443 ssl http2;', `listen 127.0.0.1:${ports.nginxHttps} ssl http2;`],
      ['listen [::]:443 ssl http2;', ''],
      ['listen 80;', `listen 127.0.0.1:${ports.nginxHttp};`],
      ['listen [::]:80;', ''],
      ['/var/log/nginx/access.log', at('nginx', 'access.log')],
    ]),
  );
  const nginxConf = write(
    at('nginx', 'nginx.conf'),
    [
      process.getuid?.() === 0 ? 'user root;' : '',
      'worker_processes 1;',
      `pid ${at('nginx', 'nginx.pid')};`,
      `error_log ${at('nginx', 'error.log')} warn;`,
      'events { worker_connections 512; }',
      'http {',
      `  access_log ${at('nginx', 'access.log')};`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${at('nginx', `${kind}-temp`)};`),
      `  include ${site};`,
      '}',
      '',
    ].join('\n'),
  );

  const haproxyCfg = write(
    at('haproxy', 'haproxy.cfg'),
    renderText('haproxy/haproxy.cfg', [
      ...INSTANCES.map(
        (instance, i) =>
          [`${instance.host}:${instance.port} check port ${METRICS_PORT}`, `127.0.0.1:${ports.bridges[i]} check port ${ports.metrics[i]}`] as const,
      ),
      ['bind :443 ssl crt /etc/haproxy/certs/copilot-bridge.pem', `bind 127.0.0.1:${ports.haproxyHttps} ssl crt ${at('tls', 'haproxy.pem')}`],
      ['bind :80\n', `bind 127.0.0.1:${ports.haproxyHttp}\n`],
      ['log /dev/log local0', 'log stderr local0'],
      ['/run/haproxy/admin.sock', at('haproxy', 'admin.sock')],
    ]),
  );

  // The bridges: shared config, one env file per instance, secrets as credential files.
  write(
    at('etc', 'config.yaml'),
    renderText('copilot-bridge/config.yaml', [
      ['command: nvidia-smi', `command: ${options.nvidiaSmi}`],
      ['  health:\n    interval_seconds: 5', '  health:\n    interval_seconds: 1'],
    ]),
  );
  INSTANCES.forEach((instance, i) => {
    write(
      at('etc', `${ports.bridges[i]}.env`),
      renderText(`systemd/copilot-bridge/${instance.port}.env`, [
        ...instance.gpuNodes.map((n) => [`http://${GPU_NODES[n]}:11434`, `http://127.0.0.1:${ports.ollama[n]}${prefix(i)}`] as const),
        [`PROMETHEUS_PORT=${METRICS_PORT}`, `PROMETHEUS_PORT=${ports.metrics[i]}`],
      ]),
    );
  });
  write(at('etc', 'credentials', 'BRIDGE_API_KEYS'), `${apiKey}\n${monitoringKey}\n`);
  write(at('etc', 'credentials', 'BRIDGE_CONTROL_TOKEN'), `${controlToken}\n`);

  const unitsDir = at('units');
  const unit = write(
    path.join(unitsDir, 'copilot-bridge@.service'),
    renderText('systemd/copilot-bridge@.service', [
      ['/usr/bin/node', process.execPath],
      ['/opt/copilot-bridge', REPO],
      ['/etc/copilot-bridge/', `${at('etc')}/`],
      ['/var/lib/copilot-bridge/%i', at('state', '%i')],
      ['--host 0.0.0.0', '--host 127.0.0.1'],
    ]),
  );
  for (const port of ports.bridges) symlinkSync('copilot-bridge@.service', path.join(unitsDir, `copilot-bridge@${port}.service`));
  write(
    path.join(unitsDir, 'ollama.service'),
    renderText('systemd/ollama.service', [
      ['/usr/local/bin/ollama', options.ollamaBinary],
      ['/etc/default/ollama', path.join(DEPLOY, 'systemd/ollama/gpu-node-1.env')],
    ]),
  );
  const unitText = readFileSync(unit, 'utf8');
  const bridges = ports.bridges.map((port, i) => launchFromUnit(unitText, i, port, ports.metrics[i] ?? 0, at('credentials')));

  // Prometheus and Alertmanager with short intervals, so a test sees in seconds what takes minutes.
  const prometheusDir = at('prometheus');
  const prometheusYml = write(
    path.join(prometheusDir, 'prometheus.yml'),
    renderText('prometheus/prometheus.yml', [
      ['scrape_interval: 15s', 'scrape_interval: 1s'],
      ['evaluation_interval: 15s', 'evaluation_interval: 1s'],
      ['alertmanager.internal:9093', `127.0.0.1:${ports.alertmanager}`],
      ['/etc/prometheus/copilot-bridge-monitoring.key', write(path.join(prometheusDir, 'copilot-bridge-monitoring.key'), `${monitoringKey}\n`)],
      ...INSTANCES.map((instance, i) => [`${instance.host}:${METRICS_PORT}`, `127.0.0.1:${ports.metrics[i]}`] as const),
    ]),
  );
  const shortFor: Replacement[] = [
    ['for: 1m', 'for: 2s'],
    ['for: 2m', 'for: 2s'],
    ['for: 5m', 'for: 2s'],
  ];
  write(path.join(prometheusDir, 'alerts.yml'), renderText('prometheus/alerts.yml', [['interval: 30s', 'interval: 1s'], ...shortFor]));
  write(path.join(prometheusDir, 'recording.yml'), renderText('prometheus/recording.yml', [['interval: 30s', 'interval: 1s']]));
  const alertmanagerYml = write(
    at('alertmanager', 'alertmanager.yml'),
    renderText('alertmanager/alertmanager.yml', [
      ['http://alert-relay.internal:9095/copilot-bridge', `http://127.0.0.1:${ports.webhook}/copilot-bridge`],
      ['group_wait: 30s', 'group_wait: 1s'],
      ['group_wait: 10s', 'group_wait: 1s'],
      ['group_interval: 5m', 'group_interval: 1s'],
    ]),
  );

  return {
    dir,
    ports,
    apiKey,
    monitoringKey,
    controlToken,
    certificate,
    nginxConf,
    haproxyCfg,
    prometheusYml,
    prometheusDir,
    alertmanagerYml,
    unitsDir,
    bridges,
  };
}

/** Runs a validator; its whole output goes into the failure message. */
export function runTool(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): { status: number | null; output: string } {
  const result = spawnSync(command, args, { encoding: 'utf8', cwd: options.cwd, env: { ...process.env, ...options.env }, timeout: 60_000 });
  if (result.error) throw new Error(`${command} could not run: ${result.error.message} (npm test installs it where it can: scripts/ensure-test-tools.mjs)`);
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}
