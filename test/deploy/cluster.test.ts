import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { DASHBOARD_DIR } from '../../deploy/grafana/dashboards.js';
import { BridgeProcess, describeOutcomes, eventually, LoadClient, Program, startWebhook, waitForPort, type Outcome } from '../support/cluster.js';
import { bridgeOfCaller, renderDeploy, type RenderedDeploy } from '../support/deploy.js';
import { TWO_GPU_REPLIES, nvidiaSmiStandIn } from '../support/gpu.js';
import { OllamaStandIn, type Generation } from '../support/ollama-standin.js';

/**
 * A team deployment on loopback, from the committed files: nginx and HAProxy in front of three
 * bridges (started as their systemd unit starts them) over three Ollama stand-ins wired as the
 * deployment document says, Prometheus scraping the bridges, Alertmanager with a webhook.
 */

/** The tier models of deploy/copilot-bridge/config.yaml: simple answers fast, complex streams for ~2 s. */
const SIMPLE = 'qwen2.5-coder:1.5b';
const COMPLEX = 'qwen2.5-coder:7b-instruct-q8_0';
const LOAD_MS = 30_000;

let deploy: RenderedDeploy;
let ollamas: OllamaStandIn[];
let bridges: BridgeProcess[];
let nginx: Program;
let haproxy: Program;
let prometheus: Program;
let alertmanager: Program;
let webhook: Awaited<ReturnType<typeof startWebhook>>;
let client: LoadClient;
let nginxUrl: string;
let haproxyUrl: string;

before(async () => {
  const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
  deploy = await renderDeploy({ nvidiaSmi: smi.command, ollamaBinary: process.execPath });
  const { ports, dir } = deploy;
  ollamas = ports.ollama.map((port) => new OllamaStandIn(port, { models: { [SIMPLE]: { tokens: 4, tokenMs: 30 }, [COMPLEX]: { tokens: 40, tokenMs: 50 } } }));
  await Promise.all(ollamas.map((o) => o.start()));
  bridges = deploy.bridges.map((launch) => new BridgeProcess(launch));
  await Promise.all(bridges.map((b) => b.up()));

  nginx = new Program('nginx', 'nginx', ['-c', deploy.nginxConf, '-p', path.dirname(deploy.nginxConf), '-g', 'daemon off;']);
  haproxy = new Program('haproxy', 'haproxy', ['-f', deploy.haproxyCfg, '-db'], { env: { COPILOT_BRIDGE_MONITORING_KEY: deploy.monitoringKey } });
  prometheus = new Program('prometheus', 'prometheus', [
    `--config.file=${deploy.prometheusYml}`,
    `--storage.tsdb.path=${path.join(dir, 'prometheus-data')}`,
    `--web.listen-address=127.0.0.1:${ports.prometheus}`,
  ]);
  alertmanager = new Program('alertmanager', 'prometheus-alertmanager', [
    `--config.file=${deploy.alertmanagerYml}`,
    `--storage.path=${path.join(dir, 'alertmanager-data')}`,
    `--web.listen-address=127.0.0.1:${ports.alertmanager}`,
    '--cluster.listen-address=',
  ]);
  webhook = await startWebhook(ports.webhook);
  for (const program of [nginx, haproxy, prometheus, alertmanager]) program.start();
  await Promise.all([
    waitForPort(ports.nginxHttps, nginx),
    waitForPort(ports.haproxyHttps, haproxy),
    waitForPort(ports.prometheus, prometheus),
    waitForPort(ports.alertmanager, alertmanager),
  ]);
  client = new LoadClient(deploy.certificate, deploy.apiKey);
  nginxUrl = `https://127.0.0.1:${ports.nginxHttps}`;
  haproxyUrl = `https://127.0.0.1:${ports.haproxyHttps}`;
  // HAProxy starts with its servers unchecked; wait until its readiness checks passed for all three.
  await eventually('HAProxy to see three ready bridges', async () => {
    const outcomes = await Promise.all([0, 1, 2].map((i) => client.whole(haproxyUrl, `warmup-${i}`)));
    return outcomes.every((o) => o.complete) ? true : undefined;
  });
});

after(async () => {
  await client?.close();
  for (const program of [nginx, haproxy, prometheus, alertmanager, ...(bridges ?? [])]) await program?.stop();
  await Promise.all((ollamas ?? []).map((o) => o.stop()));
  await webhook?.close();
});

/** Every generation the stand-ins ran for this client request, and through which bridge. */
function bridgesThatServed(outcome: Outcome): number[] {
  return ollamas.flatMap((o) => o.started.filter((g) => g.userAgent === outcome.userAgent).map((g) => bridgeOfCaller(g.caller)));
}

/** Resolves once a streamed generation has sent a few tokens (the client is reading it), with the bridge it runs through. */
async function runningStream(label: string): Promise<{ bridge: number; generation: Generation }> {
  const match = (g: Generation): boolean => g.model === COMPLEX && g.tokens >= 3 && g.userAgent.startsWith(`${label}-stream-`);
  const generation = await Promise.race(ollamas.map((o) => o.waitForGeneration(match)));
  return { bridge: bridgeOfCaller(generation.caller), generation };
}

async function restart(index: number): Promise<void> {
  const bridge = bridges[index] as BridgeProcess;
  await bridge.exited;
  bridges[index] = new BridgeProcess(bridge.launch);
  await (bridges[index] as BridgeProcess).up();
}

/** 30 s of load through a balancer; a third of the way in, the bridge that is streaming to a client is killed with SIGKILL. */
async function killUnderLoad(base: string, label: string): Promise<{ outcomes: Outcome[]; victim: number }> {
  const started = Date.now();
  let killedAt = 0;
  let victim = -1;
  const loadEnds = sleep(LOAD_MS);
  const killed = (async () => {
    await sleep(LOAD_MS / 3);
    const running = await Promise.race([runningStream(label), loadEnds]);
    if (running === undefined) return;
    victim = running.bridge;
    (bridges[victim] as BridgeProcess).signal('SIGKILL');
    killedAt = Date.now() - started;
  })();
  const outcomes = await client.load([base], { streams: 3, wholes: 3 }, loadEnds, label);
  await killed;
  assert.ok(killedAt > 0 && killedAt < LOAD_MS, `a bridge was killed during the load (at ${killedAt} ms)`);
  await restart(victim);
  return { outcomes, victim };
}

function assertSurvivedKill({ outcomes, victim }: { outcomes: Outcome[]; victim: number }): void {
  const wholes = outcomes.filter((o) => o.kind === 'whole');
  const streams = outcomes.filter((o) => o.kind === 'stream');
  assert.ok(wholes.length > 50 && streams.length > 20, `enough load: ${wholes.length} whole, ${streams.length} streamed`);
  assert.deepEqual(
    outcomes.filter((o) => o.hung),
    [],
    'no request hangs',
  );
  assert.deepEqual(
    wholes.filter((o) => !o.complete),
    [],
    `every non-streamed request succeeds (the balancer retried it): ${describeOutcomes(wholes)}`,
  );
  const broken = streams.filter((o) => !o.complete);
  assert.ok(broken.length >= 1, 'the stream running on the killed bridge broke');
  for (const stream of broken) {
    assert.ok(stream.error !== null, 'a broken stream is visible to the client');
    assert.ok(
      bridgesThatServed(stream).includes(victim),
      `only streams on the killed bridge break: ${JSON.stringify(stream)} went through ${bridgesThatServed(stream)}`,
    );
  }
}

describe('a real cluster: nginx and HAProxy in front of three bridges', () => {
  it('serves only over TLS with the API key, and keeps /metrics to the monitoring network', async () => {
    for (const [base, http] of [
      [nginxUrl, deploy.ports.nginxHttp],
      [haproxyUrl, deploy.ports.haproxyHttp],
    ] as const) {
      const redirect = await fetch(`http://127.0.0.1:${http}/api/tags`, { redirect: 'manual' });
      assert.equal(redirect.status, 308);
      assert.equal((await client.fetch(`${base}/api/tags`)).status, 200);
      const anonymous = await client.fetch(`${base}/api/tags`, { headers: { authorization: '' } });
      assert.equal(anonymous.status, 401);
      assert.equal((await client.fetch(`${base}/metrics`)).status, 403, `${base}/metrics from outside 192.168.1.0/24`);
    }
  });

  it('each balancer gives a request its id, which the bridge answers, logs and records under', async () => {
    // nginx's $request_id: 32 hex digits; HAProxy's unique-id-format: hex address:port pairs, time and counter.
    for (const [base, balancerId] of [
      [nginxUrl, /^[0-9a-f]{32}$/],
      [haproxyUrl, /^[0-9A-F]+:[0-9A-F]+_[0-9A-F]+:[0-9A-F]+_[0-9A-F]+_[0-9A-F]+:[0-9A-F]+$/],
    ] as const) {
      const response = await client.fetch(`${base}/api/tags`);
      await response.arrayBuffer();
      assert.match(response.headers.get('x-request-id') ?? '', balancerId, base);
    }
  });

  it('nginx: under 30 s of load a SIGKILLed bridge costs only the streams it was running, each a visible error', { timeout: 120_000 }, async () => {
    assertSurvivedKill(await killUnderLoad(nginxUrl, 'nginx-kill'));
  });

  it('HAProxy: the same', { timeout: 120_000 }, async () => {
    assertSurvivedKill(await killUnderLoad(haproxyUrl, 'haproxy-kill'));
  });

  it('SIGTERM of a bridge under load through both balancers loses no request, its running stream included', { timeout: 120_000 }, async () => {
    let victim = -1;
    let drained: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let victimStream: Generation | undefined;
    const stopped = (async () => {
      await sleep(3000);
      const running = await runningStream('sigterm');
      victim = running.bridge;
      victimStream = running.generation;
      const bridge = bridges[victim] as BridgeProcess;
      bridge.signal('SIGTERM');
      drained = await bridge.exited;
    })();
    // Load keeps going for a while after the stop, so new requests meet the draining bridge.
    const outcomes = await client.load(
      [nginxUrl, haproxyUrl],
      { streams: 4, wholes: 4 },
      stopped.then(() => sleep(3000)),
      'sigterm',
    );
    assert.deepEqual(drained, { code: 0, signal: null }, 'the bridge drained and exited by itself');
    assert.deepEqual(
      outcomes.filter((o) => !o.complete),
      [],
      describeOutcomes(outcomes),
    );
    const streamOutcome = outcomes.find((o) => o.userAgent === victimStream?.userAgent);
    assert.ok(streamOutcome?.complete, 'the stream running on the stopped bridge finished');
    await restart(victim);
  });

  it('Prometheus scrapes the three bridges, and every Prometheus query of the three dashboards returns data', { timeout: 120_000 }, async () => {
    const prometheusUrl = `http://127.0.0.1:${deploy.ports.prometheus}`;
    const query = async (expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> => {
      const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await response.json()) as {
        status: string;
        error?: string;
        data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      assert.equal(body.status, 'success', `${expr}: ${body.error}`);
      return body.data.result;
    };
    await eventually('all three bridges up in Prometheus', async () =>
      (await query('sum(up{job="copilot-bridge"})'))[0]?.value[1] === '3' ? true : undefined,
    );
    // Fresh traffic, so rates over the last minute are not zero.
    await client.load([nginxUrl], { streams: 2, wholes: 2 }, sleep(5000), 'prometheus');

    const files = ['overview.json', 'performance.json', 'business.json'];
    let queries = 0;
    for (const file of files) {
      const model = JSON.parse(readFileSync(path.join(DASHBOARD_DIR, file), 'utf8')) as Dashboard;
      const variables = new Map<string, string>([
        ['__rate_interval', '1m'],
        ['__range_s', '600'],
        ['__range', '10m'],
      ]);
      for (const variable of model.templating?.list ?? []) {
        const value = variable.type === 'query' ? variable.allValue : typeof variable.query === 'string' ? variable.query : undefined;
        assert.ok(value !== undefined, `${file}: variable ${variable.name} has a default`);
        variables.set(variable.name, value);
      }
      const names = [...variables.keys()].sort((a, b) => b.length - a.length);
      for (const panel of model.panels ?? []) {
        if (!('targets' in panel)) continue;
        for (const target of panel.targets ?? []) {
          const { expr, datasource } = target as { expr?: string; datasource?: { type?: string } };
          if (datasource?.type !== 'prometheus' || expr === undefined) continue;
          let resolved = expr;
          for (const name of names) resolved = resolved.replaceAll(`$${name}`, variables.get(name) as string);
          assert.doesNotMatch(resolved, /\$/, `${file} "${panel.title}": a variable is left in ${resolved}`);
          const result = await eventually(`data for ${file} "${panel.title}": ${resolved}`, async () => {
            const series = await query(resolved);
            return series.some((s) => Number.isFinite(Number(s.value[1]))) ? series : undefined;
          });
          assert.ok(result.length > 0);
          queries += 1;
        }
      }
    }
    assert.ok(queries >= 20, `walked ${queries} queries`);
  });

  it('BackendDown fires in Prometheus and reaches Alertmanager when an Ollama node dies, and resolves when it is back', { timeout: 120_000 }, async () => {
    const prometheusUrl = `http://127.0.0.1:${deploy.ports.prometheus}`;
    const alertmanagerUrl = `http://127.0.0.1:${deploy.ports.alertmanager}`;
    type Alert = { labels: Record<string, string>; state: string };
    const firing = async (): Promise<Alert[]> => {
      const body = (await (await fetch(`${prometheusUrl}/api/v1/alerts`)).json()) as { data: { alerts: Alert[] } };
      return body.data.alerts.filter((a) => a.labels.alertname === 'BackendDown' && a.state === 'firing');
    };
    assert.deepEqual(await firing(), [], 'no backend is down before the test');

    // gpu-node-2 serves instance 1 (as its gpu1) and instance 2 (as its gpu0).
    const node = ollamas[1] as OllamaStandIn;
    await node.stop();
    const alerts = await eventually('BackendDown firing for both instances that use gpu-node-2', async () => {
      const found = await firing();
      return found.length === 2 ? found : undefined;
    });
    // Named as prometheus.yml names the instances (and Alloy their logs), not by the address scraped.
    const expected = ['proxy-1:5000/gpu1', 'proxy-2:5001/gpu0'];
    assert.deepEqual(alerts.map((a) => `${a.labels.instance}/${a.labels.backend}`).sort(), expected);
    assert.equal(alerts[0]?.labels.severity, 'critical');

    await eventually('BackendDown in Alertmanager', async () => {
      const inManager = (await (await fetch(`${alertmanagerUrl}/api/v2/alerts?filter=alertname%3D%22BackendDown%22`)).json()) as Array<{
        labels: Record<string, string>;
      }>;
      return inManager.length === 2 ? inManager : undefined;
    });
    await eventually('a firing BackendDown notification at the webhook', async () =>
      webhook.notifications.some((n) => n.status === 'firing' && n.alerts.some((a) => a.labels.alertname === 'BackendDown')) ? true : undefined,
    );

    await node.start();
    await eventually('BackendDown resolved in Prometheus', async () => ((await firing()).length === 0 ? true : undefined));
    await eventually('a resolved BackendDown notification at the webhook', async () =>
      webhook.notifications.some((n) => n.alerts.some((a) => a.labels.alertname === 'BackendDown' && a.status === 'resolved')) ? true : undefined,
    );
  });
});
