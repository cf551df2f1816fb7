import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { userInfo } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import YAML from 'yaml';
import { DASHBOARD_DIR, dashboards, dashboardText, LOKI, PROMETHEUS } from '../../deploy/grafana/dashboards.js';
import { runCli } from '../../src/cli.js';
import { memoryLogger, startTestBridge } from '../support/bridge.js';
import { eventually, LoadClient, Program, waitForPort } from '../support/cluster.js';
import { logFileHas, serveLoggingTo } from '../support/cli.js';
import { DEPLOY, INSTANCES, renderDeploy, renderText, runTool, type RenderedDeploy } from '../support/deploy.js';
import { TWO_GPU_REPLIES, nvidiaSmiStandIn } from '../support/gpu.js';
import { OllamaStandIn } from '../support/ollama-standin.js';
import { findOllama } from '../support/ollama-binary.js';
import { freePort } from '../support/ollama-rig.js';
import { tempDir } from '../support/temp.js';
import { until } from '../support/wait.js';

const goSkip = spawnSync('go', ['version']).status === 0 ? false : 'needs Go to run the log pipeline’s templates';

/** Runs a Go text/template (Alloy's template engine) over each map of values; the outputs in order. */
function goTemplate(template: string, data: Array<Record<string, string>>): string[] {
  const dir = tempDir('go-template-');
  writeFileSync(
    path.join(dir, 'main.go'),
    [
      'package main',
      'import ("bytes"; "encoding/json"; "os"; "text/template")',
      'func main() {',
      '  var in struct { Template string; Data []map[string]interface{} }',
      '  if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil { panic(err) }',
      '  t := template.Must(template.New("level").Parse(in.Template))',
      '  out := []string{}',
      '  for _, d := range in.Data { var b bytes.Buffer; if err := t.Execute(&b, d); err != nil { panic(err) }; out = append(out, b.String()) }',
      '  json.NewEncoder(os.Stdout).Encode(out)',
      '}',
    ].join('\n'),
  );
  const run = spawnSync('go', ['run', 'main.go'], { cwd: dir, input: JSON.stringify({ Template: template, Data: data }), encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout) as string[];
}

let rendered: RenderedDeploy;

/** The rendered nginx or HAProxy as a program to start, the HTTPS port it serves and its base URL. */
function balancerOf(balancer: 'nginx' | 'HAProxy'): { program: Program; port: number; base: string } {
  const { ports, nginxConf, haproxyCfg, monitoringKey } = rendered;
  const program =
    balancer === 'nginx'
      ? new Program('nginx', 'nginx', ['-c', nginxConf, '-p', path.dirname(nginxConf), '-g', 'daemon off;'])
      : new Program('haproxy', 'haproxy', ['-f', haproxyCfg, '-db'], { env: { COPILOT_BRIDGE_MONITORING_KEY: monitoringKey } });
  const port = balancer === 'nginx' ? ports.nginxHttps : ports.haproxyHttps;
  return { program, port, base: `https://127.0.0.1:${port}` };
}
before(async () => {
  const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
  rendered = await renderDeploy({ nvidiaSmi: smi.command, ollamaBinary: process.execPath });
});

/** A validator passed: exit status 0 and nothing it calls a warning. */
function assertClean(result: { status: number | null; output: string }, warning: RegExp): void {
  assert.equal(result.status, 0, result.output);
  assert.doesNotMatch(result.output, warning, result.output);
}

describe('the committed deployment files pass the programs that read them', () => {
  it('nginx -t', () => {
    const result = runTool('nginx', ['-t', '-c', rendered.nginxConf, '-p', path.dirname(rendered.nginxConf)]);
    assertClean(result, /\[(warn|emerg|alert)\]/);
    assert.match(result.output, /test is successful/);
  });

  it('haproxy -c', () => {
    assertClean(
      runTool('haproxy', ['-c', '-f', rendered.haproxyCfg], { env: { COPILOT_BRIDGE_MONITORING_KEY: rendered.monitoringKey } }),
      /\[(WARNING|ALERT)\]/,
    );
  });

  it('promtool check config (it needs the monitoring key file, so on the test rendering) and check rules', () => {
    assertClean(
      runTool('promtool', ['check', 'rules', path.join(DEPLOY, 'prometheus/alerts.yml'), path.join(DEPLOY, 'prometheus/recording.yml')]),
      /WARNING|FAILED/,
    );
    assertClean(runTool('promtool', ['check', 'config', rendered.prometheusYml]), /WARNING|FAILED/);
  });

  it('promtool test rules: every alert fires on its series and stays silent on healthy ones', () => {
    const result = runTool('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: path.join(DEPLOY, 'prometheus') });
    assertClean(result, /FAILED/);
    // Every alert of alerts.yml has a unit test.
    const alerts = (
      YAML.parse(readFileSync(path.join(DEPLOY, 'prometheus/alerts.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert?: string }> }> }
    ).groups.flatMap((g) => g.rules.map((r) => r.alert));
    const tests = YAML.parse(readFileSync(path.join(DEPLOY, 'prometheus/alerts.test.yml'), 'utf8')) as {
      tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
    };
    for (const alert of alerts) {
      const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []).filter((c) => c.alertname === alert);
      assert.ok(
        cases.some((c) => c.exp_alerts.length > 0),
        `${alert} is never shown firing`,
      );
      assert.ok(
        cases.some((c) => c.exp_alerts.length === 0),
        `${alert} is never shown silent`,
      );
    }
    for (const name of ['HighErrorRate', 'HighLatency', 'GPUMemoryHigh', 'BackendDown', 'FallbackActive', 'QueueBacklog', 'BridgeInstanceDown'])
      assert.ok(alerts.includes(name), name);
  });

  it('promtool test rules: every recording rule is evaluated on series of two instances', () => {
    const recorded = (
      YAML.parse(readFileSync(path.join(DEPLOY, 'prometheus/recording.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ record: string }> }> }
    ).groups.flatMap((g) => g.rules.map((r) => r.record));
    const tests = YAML.parse(readFileSync(path.join(DEPLOY, 'prometheus/alerts.test.yml'), 'utf8')) as {
      tests: Array<{ promql_expr_test?: Array<{ expr: string; exp_samples: Array<{ labels: string }> }> }>;
    };
    const cases = tests.tests.flatMap((t) => t.promql_expr_test ?? []);
    for (const record of recorded) {
      const samples = cases.filter((c) => c.expr.includes(record)).flatMap((c) => c.exp_samples);
      const instances = new Set(samples.map((sample) => /instance="([^"]+)"/.exec(sample.labels)?.[1]));
      assert.ok(instances.size >= 2, `${record} is not tested on two instances`);
    }
  });

  it('amtool check-config', () => {
    assertClean(runTool('amtool', ['check-config', path.join(DEPLOY, 'alertmanager/alertmanager.yml')]), /FAILED|error/i);
    assertClean(runTool('amtool', ['check-config', rendered.alertmanagerYml]), /FAILED|error/i);
  });

  it('systemd-analyze verify, without a single warning', () => {
    const units = [
      ...rendered.bridges.map((b) => path.join(rendered.unitsDir, `copilot-bridge@${b.port}.service`)),
      path.join(rendered.unitsDir, 'ollama.service'),
    ];
    const result = runTool('systemd-analyze', ['verify', ...units]);
    assert.equal(result.status, 0, result.output);
    assert.equal(result.output.trim(), '', result.output);
  });

  it('the unit keeps secrets out of the environment file and passes them as credentials', () => {
    const unit = readFileSync(path.join(DEPLOY, 'systemd/copilot-bridge@.service'), 'utf8');
    for (const bridge of rendered.bridges) {
      assert.deepEqual(
        Object.keys(bridge.env).filter((name) => /KEY|TOKEN/.test(name)),
        [],
      );
      assert.match(readFileSync(path.join(bridge.env.CREDENTIALS_DIRECTORY ?? '', 'BRIDGE_API_KEYS'), 'utf8'), new RegExp(rendered.apiKey));
    }
    for (const hardening of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'PrivateTmp=yes', 'Restart=always'])
      assert.ok(unit.includes(`\n${hardening}\n`), hardening);
  });
});

describe('the bridge unit lets the service write where it writes, and reach the GPUs', () => {
  const unit = readFileSync(path.join(DEPLOY, 'systemd/copilot-bridge@.service'), 'utf8');
  const settings = (key: string): string[] =>
    [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].flatMap((m) => (m[1] as string).split(/\s+/)).map((v) => v.replaceAll('%i', '5000'));
  const environment = Object.fromEntries(settings('Environment').map((a) => a.split('=', 2) as [string, string]));
  // ProtectSystem=strict: the whole file system is read-only but for these (systemd.exec(5)).
  const writable = [
    ...settings('StateDirectory').map((d) => `/var/lib/${d}`),
    ...settings('LogsDirectory').map((d) => `/var/log/${d}`),
    ...settings('CacheDirectory').map((d) => `/var/cache/${d}`),
    ...settings('RuntimeDirectory').map((d) => `/run/${d}`),
    ...settings('ReadWritePaths'),
  ];
  const isWritable = (dir: string): boolean => writable.some((w) => dir === w || dir.startsWith(`${w}/`));

  it('the data dir', () => {
    assert.ok(unit.includes('\nProtectSystem=strict\n'));
    assert.ok(isWritable(environment.BRIDGE_DATA_DIR ?? ''), `BRIDGE_DATA_DIR ${environment.BRIDGE_DATA_DIR} outside ${writable.join(', ')}`);
  });

  it('its home, where a managed Ollama (backends[].manage) creates ~/.ollama and cannot start without it', () => {
    // systemd sets HOME to the user's home (the sysusers entry) unless the unit sets it.
    const sysusers = readFileSync(path.join(DEPLOY, 'systemd/copilot-bridge.sysusers.conf'), 'utf8');
    const user = /^u\s+(\S+)\s+\S+\s+"[^"]*"\s+(\S+)/m.exec(sysusers);
    assert.equal(user?.[1], settings('User')[0]);
    const home = environment.HOME ?? user?.[2] ?? '';
    assert.ok(isWritable(home), `HOME ${home} outside ${writable.join(', ')}`);
  });

  it('the GPUs, which a managed Ollama computes on and nvidia-smi reads (every NVIDIA device group of /proc/devices)', () => {
    // systemd.exec(5): PrivateDevices=yes mounts a /dev with pseudo devices only and implies
    // DevicePolicy=closed; with a closed or strict policy only DeviceAllow= entries open, a
    // "char-<group>" entry by glob over /proc/devices' group names.
    assert.notEqual(settings('PrivateDevices')[0], 'yes', 'PrivateDevices=yes hides /dev/nvidia* from the service');
    // Closed, not open to every device of the host: the GPUs are the one exception to the hardening.
    assert.equal(settings('DevicePolicy')[0], 'closed');
    const allowed = [...unit.matchAll(/^DeviceAllow=(\S+)\s+(\S+)$/gm)].map((m) => ({ node: m[1] as string, access: m[2] as string }));
    const glob = (pattern: string): RegExp =>
      new RegExp(
        `^${pattern
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replaceAll('*', '.*')
          .replaceAll('?', '.')}$`,
      );
    // The groups NVIDIA's drivers register: /dev/nvidia0..N and /dev/nvidiactl (nvidia-frontend,
    // or nvidia on newer drivers), /dev/nvidia-uvm (CUDA), /dev/nvidia-caps/*, NVLink.
    for (const group of ['nvidia-frontend', 'nvidia', 'nvidia-uvm', 'nvidia-uvm-tools', 'nvidia-caps', 'nvidia-nvlink', 'nvidia-nvswitch']) {
      assert.ok(
        allowed.some(
          ({ node, access }) => node.startsWith('char-') && glob(node.slice('char-'.length)).test(group) && access.includes('r') && access.includes('w'),
        ),
        `DevicePolicy=closed keeps the ${group} devices closed: ${JSON.stringify(allowed)}`,
      );
    }
  });
});

describe('Grafana', () => {
  it('the committed dashboard JSON is what deploy/grafana/dashboards.ts generates (npm run deploy:dashboards)', () => {
    for (const [file, model] of Object.entries(dashboards())) {
      assert.equal(readFileSync(path.join(DASHBOARD_DIR, file), 'utf8'), dashboardText(model), `${file} is stale: run npm run deploy:dashboards`);
    }
  });

  it('dashboards use only the provisioned datasources, and the provider loads the dashboards folder', () => {
    const provisioned = YAML.parse(readFileSync(path.join(DEPLOY, 'grafana/provisioning/datasources/copilot-bridge.yml'), 'utf8')) as {
      datasources: Array<{ uid: string; type: string }>;
    };
    const known = new Set(provisioned.datasources.map((d) => `${d.type}/${d.uid}`));
    assert.ok(known.has(`${PROMETHEUS.type}/${PROMETHEUS.uid}`) && known.has(`${LOKI.type}/${LOKI.uid}`));
    let logsPanels = 0;
    for (const [file, model] of Object.entries(dashboards())) {
      for (const panel of model.panels ?? []) {
        if (panel.type === 'row') continue;
        const targets = 'targets' in panel ? (panel.targets ?? []) : [];
        assert.ok(targets.length > 0, `${file}: panel ${JSON.stringify('title' in panel ? panel.title : '')} has no query`);
        for (const target of targets) {
          const ds = (target as { datasource?: { type?: string; uid?: string } }).datasource;
          assert.ok(known.has(`${ds?.type}/${ds?.uid}`), `${file}: unknown datasource ${JSON.stringify(ds)}`);
          if (ds?.type === 'loki') logsPanels += 1;
        }
      }
    }
    assert.ok(logsPanels > 0, 'a logs panel reads Loki');
  });

  it('every panel lies inside Grafana’s 24-column grid, and no two panels cover each other', () => {
    for (const [file, model] of Object.entries(dashboards())) {
      const placed: Array<{ title: string; x: number; y: number; w: number; h: number }> = [];
      for (const panel of model.panels ?? []) {
        const title = 'title' in panel ? (panel.title ?? '') : '';
        const { x = 0, y = 0, w = 0, h = 0 } = panel.gridPos ?? {};
        assert.ok(w > 0 && h > 0 && x >= 0 && x + w <= 24, `${file} "${title}": x ${x} + width ${w} is outside the 24 columns`);
        for (const other of placed) {
          const overlap = x < other.x + other.w && other.x < x + w && y < other.y + other.h && other.y < y + h;
          assert.ok(!overlap, `${file}: "${title}" covers "${other.title}"`);
        }
        placed.push({ title, x, y, w, h });
      }
    }
  });

  it('every Prometheus query follows the Instance picked, recorded series included', () => {
    const recording = YAML.parse(readFileSync(path.join(DEPLOY, 'prometheus/recording.yml'), 'utf8')) as {
      groups: Array<{ rules: Array<{ record: string; expr: string }> }>;
    };
    const rules = new Map(recording.groups.flatMap((g) => g.rules.map((r) => [r.record, r.expr] as const)));
    let selectors = 0;
    for (const [file, model] of Object.entries(dashboards())) {
      for (const panel of model.panels ?? []) {
        for (const target of 'targets' in panel ? (panel.targets ?? []) : []) {
          const { expr, datasource } = target as { expr?: string; datasource?: { type?: string } };
          if (datasource?.type !== 'prometheus' || expr === undefined) continue;
          // Series selectors: a metric name (the bridge's, the GPUs', up, or a recorded one) and its matchers.
          for (const [, name = '', matchers = ''] of expr.matchAll(/\b((?:copilot_bridge_|gpu_|up\b|[a-z_]+:)[\w:]*)(\{[^}]*\})?/g)) {
            const where = `${file} "${'title' in panel ? panel.title : ''}": ${name}`;
            assert.match(matchers, /instance=~"\$instance"/, `${where} ignores the Instance picked`);
            const recorded = rules.get(name);
            if (recorded !== undefined) assert.match(recorded, /by \(instance\b/, `${where}: the recording rule drops the instance label`);
            selectors += 1;
          }
        }
      }
    }
    assert.ok(selectors >= 20, `checked ${selectors} selectors`);
  });
});

describe('the Business dashboard reads what the bridge exports', () => {
  it('"Time saved per developer" counts answered requests, not ones the client cancelled (ghost text is cancelled at every keystroke)', async () => {
    const ollama = new OllamaStandIn(await freePort(), {
      models: { 'qwen2.5-coder:1.5b': { tokens: 2, tokenMs: 1 }, 'qwen2.5-coder:7b-instruct-q8_0': { tokens: 200, tokenMs: 20 } },
    });
    await ollama.start();
    const bridge = await startTestBridge({ env: { GPU0_URL: ollama.url } });
    try {
      const answered = await fetch(`${bridge.url}/api/chat`, {
        method: 'POST',
        body: JSON.stringify({ model: 'qwen2.5-coder:1.5b', stream: false, messages: [{ role: 'user', content: 'x' }] }),
      });
      assert.equal(answered.status, 200);
      await answered.text();
      // A stream the client leaves after its first line, as Copilot leaves ghost text.
      const leaving = new AbortController();
      const cancelled = await fetch(`${bridge.url}/api/chat`, {
        method: 'POST',
        body: JSON.stringify({ model: 'qwen2.5-coder:7b-instruct-q8_0', stream: true, messages: [{ role: 'user', content: 'x' }] }),
        signal: leaving.signal,
      });
      const reader = cancelled.body?.getReader();
      await reader?.read();
      leaving.abort();

      const series = await eventually('both requests in /metrics', async () => {
        const text = await (await fetch(`${bridge.url}/metrics`)).text();
        const lines = [...text.matchAll(/^copilot_bridge_requests_total\{([^}]*)\} (\S+)$/gm)].map((m) => ({
          labels: Object.fromEntries([...(m[1] as string).matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1] as string, l[2] as string])),
          value: Number(m[2]),
        }));
        return lines.reduce((sum, l) => sum + l.value, 0) === 2 ? lines : undefined;
      });
      // The panel's selector, its equality matchers applied to what the bridge exported.
      const panel = (dashboards()['business.json']?.panels ?? []).find((p) => 'title' in p && p.title === 'Time saved per developer');
      const expr = (panel !== undefined && 'targets' in panel ? (panel.targets?.[0] as { expr?: string } | undefined)?.expr : undefined) ?? '';
      const matchers = [...(/copilot_bridge_requests_total\{([^}]*)\}/.exec(expr)?.[1]?.matchAll(/(\w+)="([^"]*)"/g) ?? [])].map(
        (m) => [m[1] as string, m[2] as string] as const,
      );
      assert.ok(matchers.length > 0, expr);
      const counted = series.filter((s) => matchers.every(([name, value]) => s.labels[name] === value)).reduce((sum, s) => sum + s.value, 0);
      assert.equal(counted, 1, `${expr} counts ${counted} of: ${JSON.stringify(series)}`);
    } finally {
      await bridge.stop(0);
      await ollama.stop();
    }
  });
});

describe('log shipping (Grafana Alloy)', () => {
  const alloy = readFileSync(path.join(DEPLOY, 'alloy/config.alloy'), 'utf8');
  const stopping: Array<() => Promise<void>> = [];
  after(async () => {
    for (const stop of stopping) await stop();
  });

  it('parses fields the bridge really writes in its request log lines', async () => {
    const ollama = new OllamaStandIn(await freePort(), {
      models: { 'qwen2.5-coder:1.5b': { tokens: 2, tokenMs: 1 }, 'qwen2.5-coder:7b-instruct-q8_0': { tokens: 2, tokenMs: 1 } },
    });
    await ollama.start();
    const { logger, lines } = memoryLogger();
    const bridge = await startTestBridge({ env: { GPU0_URL: ollama.url }, logger });
    stopping.push(
      () => bridge.stop(0),
      () => ollama.stop(),
    );
    const answer = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'auto', stream: false, messages: [{ role: 'user', content: 'autocomplete x' }] }),
    });
    assert.equal(answer.status, 200);
    await answer.text();
    await bridge.stop(0);

    const request = lines().find((line) => line.msg === 'request');
    assert.ok(request, 'the bridge logged the request');
    const block = /stage\.json\s*\{\s*expressions\s*=\s*\{([^}]*)\}/.exec(alloy)?.[1] ?? '';
    const fields = [...block.matchAll(/=\s*"([^"]+)"/g)].map((m) => m[1] as string);
    assert.ok(fields.length >= 8, block);
    for (const field of fields)
      assert.ok(field in request, `the log pipeline parses "${field}", which the bridge's request line lacks: ${JSON.stringify(request)}`);
  });

  it('gives the lines a bridge writes outside its JSON log (why it cannot start) a level the Overview’s logs panel shows', { skip: goSkip }, async () => {
    // What the journal gets from an instance that cannot start after a config change: its stderr.
    const dir = tempDir('alloy-levels-');
    const config = path.join(dir, 'config.yaml');
    writeFileSync(config, 'models:\n  simple: 42\n');
    let stderr = '';
    const code = await runCli({ argv: ['serve', '--config', config], env: {}, stdout: () => undefined, stderr: (text) => (stderr += text) });
    assert.equal(code, 2, stderr);
    const plain = stderr.split('\n').filter((line) => line.trim() !== '');
    assert.ok(plain.length > 0);
    // And a warning of its JSON log, which the pipeline parses.
    const { logger, lines } = memoryLogger();
    logger.warn('a warning');
    const json = lines().map((line) => JSON.stringify(line));

    // Alloy's pipeline: stage.json extracts level as level_number (a line that is not JSON gives
    // nothing), then stage.template runs Go's text/template over the extracted values as strings.
    const quoted = /stage\.template\s*\{\s*source\s*=\s*"level"\s*template\s*=\s*("(?:[^"\\]|\\.)*")/.exec(alloy)?.[1];
    assert.ok(quoted, 'the level template');
    const extracted = [...plain, ...json].map((line): Record<string, string> => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return {};
      }
      return { level_number: String((parsed as { level: number }).level) };
    });
    const levels = goTemplate(JSON.parse(quoted) as string, extracted);
    assert.equal(levels.at(-1), 'warn', 'a JSON warning');

    const overview = dashboards()['overview.json'];
    const logsQuery = (overview?.panels ?? []).flatMap((p) => ('targets' in p ? (p.targets ?? []) : [])).map((t) => (t as { expr?: string }).expr ?? '');
    const shown = /level=~"([^"]+)"/.exec(logsQuery.find((e) => e.startsWith('{')) ?? '')?.[1]?.split('|') ?? [];
    assert.ok(shown.length > 0);
    plain.forEach((line, i) =>
      assert.ok(shown.includes(levels[i] ?? ''), `"${line}" is labelled level="${levels[i]}", which the logs panel (${shown.join('|')}) leaves out`),
    );
  });

  it('labels a bridge’s lines with the instance Prometheus gives its metrics, which the Overview’s logs panel filters on', () => {
    // Prometheus: a target's instance label is the one its static config sets, else its address.
    const scrape = (
      YAML.parse(readFileSync(path.join(DEPLOY, 'prometheus/prometheus.yml'), 'utf8')) as {
        scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[]; labels?: Record<string, string> }> }>;
      }
    ).scrape_configs.find((job) => job.job_name === 'copilot-bridge');
    const prometheusInstance = (host: string): string | undefined => {
      const group = scrape?.static_configs.find((g) => g.targets.some((target) => target.startsWith(`${host}:`)));
      return group?.labels?.instance ?? group?.targets.find((target) => target.startsWith(`${host}:`));
    };
    // Alloy: its relabel rule for "instance", applied as Prometheus' relabelling does (action
    // replace: the source labels joined, the regex anchored, the replacement expanded).
    const rule = [...alloy.matchAll(/rule\s*\{([^}]*)\}/g)].map((m) => m[1] as string).find((body) => /target_label\s*=\s*"instance"/.test(body)) ?? '';
    const attribute = (name: string): string | undefined => {
      const quoted = new RegExp(`${name}\\s*=\\s*("(?:[^"\\\\]|\\\\.)*")`).exec(rule)?.[1];
      return quoted === undefined ? undefined : (JSON.parse(quoted) as string);
    };
    const sources = JSON.parse(/source_labels\s*=\s*(\[[^\]]*\])/.exec(rule)?.[1] ?? '[]') as string[];
    const lokiInstance = (journal: Record<string, string>): string | undefined => {
      const joined = sources.map((label) => journal[label] ?? '').join(attribute('separator') ?? ';');
      const pattern = new RegExp(`^(?:${attribute('regex') ?? '(.*)'})$`);
      return pattern.test(joined) ? joined.replace(pattern, attribute('replacement') ?? '$1') : undefined;
    };
    for (const { host, port } of INSTANCES) {
      // The journal's _HOSTNAME is what the host calls itself: with its domain or without.
      for (const hostname of [host, host.split('.')[0] as string]) {
        const journal = { __journal__hostname: hostname, __journal__systemd_unit: `copilot-bridge@${port}.service` };
        assert.equal(lokiInstance(journal), prometheusInstance(host), `copilot-bridge@${port} on a host named ${hostname}`);
      }
    }
    const overview = dashboards()['overview.json'];
    const logQueries = (overview?.panels ?? [])
      .flatMap((p) => ('targets' in p ? (p.targets ?? []) : []))
      .filter((t) => (t as { datasource?: { type?: string } }).datasource?.type === 'loki')
      .map((t) => (t as { expr?: string }).expr ?? '');
    assert.ok(logQueries.length > 0);
    for (const expr of logQueries) assert.match(/^\{[^}]*\}/.exec(expr)?.[0] ?? '', /instance=~"\$instance"/, `${expr} ignores the Instance picked`);
  });

  it('maps every numeric pino level to its name', () => {
    for (const [name, number] of Object.entries(pino.levels.values)) {
      assert.ok(alloy.includes(`eq .level_number \\"${number}\\" }}${name}{{`), `level ${number} -> ${name}`);
    }
  });
});

describe('log rotation (logrotate)', () => {
  it('rotates a bridge’s log file with the shipped config, reloading it as the unit does: the bridge goes on in a new file', async () => {
    const dir = tempDir('logrotate-');
    const file = path.join(dir, 'copilot-bridge.log');
    const { child, port } = await serveLoggingTo(dir);
    try {
      await until(() => logFileHas(file, 'bridge listening'), 'the bridge to log that it listens', 10_000);
      // The reload the unit runs (ExecReload), for the process systemd would name as $MAINPID.
      const unit = readFileSync(path.join(DEPLOY, 'systemd/copilot-bridge@.service'), 'utf8');
      const reload = /^ExecReload=(.*)$/m.exec(unit)?.[1]?.replace('$MAINPID', String(child.pid));
      assert.ok(reload, 'the unit has a reload');
      const me = userInfo();
      const group = runTool('id', ['-gn']).output.trim();
      const config = path.join(dir, 'logrotate.conf');
      writeFileSync(
        config,
        renderText('logrotate/copilot-bridge', [
          ['/var/log/copilot-bridge/', `${dir}/`],
          // The service user of `su` and `create`: this one here.
          ['copilot-bridge copilot-bridge', `${me.username} ${group}`],
          ["systemctl reload 'copilot-bridge@*.service'", reload],
        ]),
      );
      assertClean(runTool('logrotate', ['--verbose', '--force', '--state', path.join(dir, 'state'), config]), /error/i);
      await until(() => logFileHas(file, 'log file reopened'), 'the bridge to write to a new file', 10_000);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.ok(logFileHas(`${file}.1`, 'bridge listening'), 'the earlier lines are in the rotated file');
      assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('nginx and HAProxy in front of stand-in bridges: path rules in any letter case, retries', () => {
  // The bridge's express router ignores letter case and a trailing slash (src/auth/access.ts says
  // so too): "/METRICS" is /metrics and "/Bridge/Api/Actions/x" a control action.
  const metricsSpellings = ['/metrics', '/METRICS', '/Metrics/'];
  const actionSpellings = ['/bridge/api/actions/stopOllama', '/Bridge/Api/Actions/stopOllama'];

  it('the bridge answers each spelling as the route it spells', async () => {
    const bridge = await startTestBridge({ env: { GPU0_URL: `http://127.0.0.1:${await freePort()}`, BRIDGE_CONTROL_TOKEN: rendered.controlToken } });
    try {
      for (const spelling of metricsSpellings) {
        const answer = await fetch(`${bridge.url}${spelling}`);
        assert.equal(answer.status, 200, spelling);
        assert.match(await answer.text(), /^# TYPE copilot_bridge_requests_total counter$/m, spelling);
      }
      for (const spelling of actionSpellings) {
        const answer = await fetch(`${bridge.url}${spelling}`, { method: 'POST', headers: { 'x-bridge-token': rendered.controlToken } });
        assert.notEqual(answer.status, 404, `${spelling}: ${await answer.text()}`);
      }
    } finally {
      await bridge.stop(0);
    }
  });

  for (const balancer of ['nginx', 'HAProxy'] as const) {
    it(`${balancer}: /metrics stays refused outside the monitoring network and an action is never sent twice, however spelt; one client's model management stays on one instance; a failed generation is retried`, async () => {
      // Stand-ins for the three bridges: ready on the metrics port, a 502 (retried on the generation
      // paths) for everything else, each request counted.
      const seen: string[] = [];
      /** The stand-in (by port) each request reached. */
      const reachedPorts: number[] = [];
      const ports = [...rendered.ports.bridges, ...rendered.ports.metrics];
      const servers = ports.map((port) =>
        createServer((req, res) => {
          if (req.url === '/health/ready') return res.end('{"ready":true}');
          seen.push(req.url ?? '');
          reachedPorts.push(port);
          res.writeHead(req.url === '/api/tags' ? 200 : 502).end();
        }).listen(port, '127.0.0.1'),
      );
      const { program, port, base } = balancerOf(balancer);
      const client = new LoadClient(rendered.certificate, rendered.apiKey);
      program.start();
      try {
        await waitForPort(port, program);
        await eventually(`${balancer} to reach the stand-ins`, async () => ((await client.fetch(`${base}/api/tags`)).status === 200 ? true : undefined));
        for (const spelling of metricsSpellings) {
          seen.length = 0;
          assert.equal((await client.fetch(`${base}${spelling}`)).status, 403, `${spelling} from outside 192.168.1.0/24`);
          assert.deepEqual(seen, [], spelling);
        }
        for (const spelling of actionSpellings) {
          seen.length = 0;
          assert.equal((await client.fetch(`${base}${spelling}`, { method: 'POST', body: '{}' })).status, 502, spelling);
          assert.deepEqual(seen, [spelling], `${spelling} reached a bridge once`);
        }
        // An `ollama create` uploads its blobs, then creates from them: one client's model
        // management reaches one instance, or the create finds no blobs.
        reachedPorts.length = 0;
        for (const step of ['/api/blobs/sha256:aa', '/api/blobs/sha256:bb', '/api/create', '/api/blobs/sha256:cc', '/api/create']) {
          await client.fetch(`${base}${step}`, { method: 'POST', body: '{}' });
        }
        assert.equal(reachedPorts.length, 5);
        assert.equal(new Set(reachedPorts).size, 1, `model management from one client went to ports ${reachedPorts.join(', ')}`);
        // A failed generation is sent on; through nginx a long prompt (1 MiB) too. HAProxy retries
        // only a request that fits its buffer (16 KiB, see deploy/README.md).
        for (const promptBytes of balancer === 'nginx' ? [10, 1 << 20] : [10]) {
          seen.length = 0;
          await client.fetch(`${base}/api/chat`, { method: 'POST', body: JSON.stringify({ prompt: 'x'.repeat(promptBytes) }) });
          assert.ok(seen.length > 1, `a generation with a ${promptBytes}-byte prompt that failed is retried: ${JSON.stringify(seen)}`);
        }
      } finally {
        await client.close();
        await program.stop();
        await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
      }
    });
  }
});

describe('the balancers pass the request id on', () => {
  // The bridge answers, logs and records a request under the X-Request-ID it gets (src/http/app.ts
  // takes one of letters, digits and . _ : - up to 128 long): a client's own id of that form goes
  // through, else the balancer sends its own; its log shows the id the bridge got.
  for (const balancer of ['nginx', 'HAProxy'] as const) {
    it(`${balancer}: keeps a well-formed id the client sent, and gives its own to a request without one or with a malformed one`, async () => {
      /** The X-Request-ID each request reached a bridge with, by the marker in its query. */
      const received = new Map<string, string | undefined>();
      const ports = [...rendered.ports.bridges, ...rendered.ports.metrics];
      const servers = ports.map((port) =>
        createServer((req, res) => {
          const marker = new URL(req.url ?? '/', 'http://bridge').searchParams.get('m');
          if (marker !== null) received.set(marker, req.headers['x-request-id'] as string | undefined);
          res.end('{}');
        }).listen(port, '127.0.0.1'),
      );
      const { nginxConf } = rendered;
      const { program, port, base } = balancerOf(balancer);
      const client = new LoadClient(rendered.certificate, rendered.apiKey);
      const log = (): string => (balancer === 'nginx' ? readFileSync(path.join(path.dirname(nginxConf), 'access.log'), 'utf8') : program.tail());
      program.start();
      try {
        await waitForPort(port, program);
        const clientId = `client-${balancer}.${Date.now()}:a_b-c`;
        const sent: Array<[marker: string, id: string | undefined]> = [
          [`own-${balancer}`, clientId],
          [`none-${balancer}`, undefined],
          [`spaces-${balancer}`, 'not an id'],
          [`long-${balancer}`, 'x'.repeat(129)],
        ];
        for (const [marker, id] of sent) {
          await eventually(`${balancer} to reach a bridge`, async () => {
            const response = await client.fetch(`${base}/api/tags?m=${marker}`, id === undefined ? {} : { headers: { 'x-request-id': id } });
            await response.arrayBuffer();
            return response.status === 200 ? true : undefined;
          });
          assert.ok(received.has(marker), marker);
          const forwarded = received.get(marker) ?? '';
          if (id === clientId) assert.equal(forwarded, clientId, marker);
          else {
            assert.match(forwarded, /^[A-Za-z0-9._:-]{1,128}$/, `${marker}: the balancer's own id`);
            assert.notEqual(forwarded, id, marker);
          }
          const line = await eventually(`${balancer} to log ${marker}`, async () =>
            log()
              .split('\n')
              .find((l) => l.includes(`m=${marker}`)),
          );
          assert.ok(line.includes(forwarded), `${balancer} logs the id the bridge got (${forwarded}): ${line}`);
        }
      } finally {
        await client.close();
        await program.stop();
        await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
      }
    });
  }
});

describe('the balancers’ access logs keep secrets out', () => {
  // The dashboard's live events authenticate with ?access_token=<control token> (a browser's
  // EventSource sends no headers); the balancer's request log must not keep the token.
  for (const balancer of ['nginx', 'HAProxy'] as const) {
    it(`${balancer}: the control token in the dashboard's events URL is not in its access log`, async () => {
      const ports = [...rendered.ports.bridges, ...rendered.ports.metrics];
      const servers = ports.map((port) => createServer((_req, res) => res.end('{}')).listen(port, '127.0.0.1'));
      const { nginxConf, controlToken } = rendered;
      const { program, port, base } = balancerOf(balancer);
      const client = new LoadClient(rendered.certificate, rendered.apiKey);
      // nginx writes its access log to a file, HAProxy (as rendered for the test) to its stderr.
      const log = (): string => (balancer === 'nginx' ? readFileSync(path.join(path.dirname(nginxConf), 'access.log'), 'utf8') : program.tail());
      const marker = `events-${balancer}-${Date.now()}`;
      program.start();
      try {
        await waitForPort(port, program);
        await eventually(`${balancer} to answer the events URL`, async () => {
          const answer = await client.fetch(`${base}/bridge/api/events?access_token=${encodeURIComponent(controlToken)}&m=${marker}`);
          await answer.arrayBuffer();
          return answer.status === 200 ? true : undefined;
        });
        const line = await eventually(`${balancer} to log the request`, async () =>
          log()
            .split('\n')
            .find((l) => l.includes(marker)),
        );
        assert.doesNotMatch(line, new RegExp(controlToken), line);
        assert.match(line, /\/bridge\/api\/events\?/, 'the logged request still shows what was asked');
      } finally {
        await client.close();
        await program.stop();
        await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
      }
    });
  }
});

describe('the Ollama unit', () => {
  const lookup = findOllama();
  const binary = 'found' in lookup ? lookup.found : '';
  const skip = !('found' in lookup) ? lookup.missing : process.getuid?.() !== 0 ? 'needs root to build the unit’s file system in a mount namespace' : false;

  it('a fresh GPU node’s ollama serve starts with only the paths the unit leaves writable (ProtectSystem=strict)', { skip }, async () => {
    const unit = readFileSync(path.join(DEPLOY, 'systemd/ollama.service'), 'utf8');
    const settings = (key: string): string[] => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].flatMap((m) => (m[1] as string).split(/\s+/));
    assert.deepEqual(settings('ProtectSystem'), ['strict']);
    const assignments = [
      ...readFileSync(path.join(DEPLOY, 'systemd/ollama/gpu-node-1.env'), 'utf8')
        .split('\n')
        .filter((line) => /^[A-Z_]+=/.test(line)),
      ...settings('Environment'),
    ];
    const env = Object.fromEntries(assignments.map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
    // Without HOME in the unit systemd sets the user's home: Ollama's installer and its manual
    // install steps create the ollama user with /usr/share/ollama, which strict makes read-only.
    const home = env.HOME ?? '/usr/share/ollama';
    const writable = settings('StateDirectory').map((d) => `/var/lib/${d}`);
    const port = await freePort();
    // In a mount namespace of its own: the unit's state directories empty and writable, the home
    // present but read-only unless it is one of them, a private /tmp, the rest read-only.
    const script = [
      'set -e',
      'mount -t tmpfs tmpfs /tmp',
      'for dir in "$@"; do top=$(echo "$dir" | cut -d/ -f1-3); mountpoint -q "$top" || mount -t tmpfs tmpfs "$top"; mkdir -p "$dir"; done',
      `if [ ! -d "$HOME" ]; then top=$(echo "$HOME" | cut -d/ -f1-3); mount -t tmpfs tmpfs "$top"; mkdir -p "$HOME"; mount -o remount,ro "$top"; fi`,
      'mount -o remount,bind,ro /',
      `exec "${binary}" serve`,
    ].join('\n');
    const program = new Program('ollama', 'unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...writable], {
      env: { ...env, HOME: home, OLLAMA_HOST: `127.0.0.1:${port}` },
    });
    program.start();
    try {
      await program.waitForLine((line) => line.includes(`Listening on 127.0.0.1:${port}`));
      const version = (await (await fetch(`http://127.0.0.1:${port}/api/version`)).json()) as { version?: string };
      assert.ok(version.version);
    } finally {
      await program.stop();
    }
  });
});
