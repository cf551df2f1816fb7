import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { defaultDataDir } from '../../src/bridge.js';
import { ConfigError, loadConfig, normalizeOllamaUrl } from '../../src/config/load.js';
import { tempDir } from '../support/temp.js';

const dir = tempDir('bridge-config-');
function yamlFile(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function problemsOf(fn: () => unknown): ConfigError['problems'] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail('expected a ConfigError');
}

describe('config', () => {
  it('has safe defaults: loopback, port 5000, 32 MiB bodies, one local Ollama', () => {
    const config = loadConfig();
    assert.equal(config.server.host, '127.0.0.1');
    assert.equal(config.server.port, 5000);
    assert.equal(config.server.body_limit_mb, 32);
    assert.deepEqual(config.backends, [{ name: 'local', url: 'http://127.0.0.1:11434', weight: 1, manage: false }]);
    assert.equal(config.dual_gpu, false);
    assert.equal(config.fallback.enabled, false);
    assert.equal(config.monitoring.logging.log_prompts, false);
  });

  it('loads the deployment document’s example config.yaml as it is', () => {
    const config = loadConfig({ file: 'config.example.yaml' });
    assert.equal(config.models.simple.name, 'qwen2.5-coder:1.5b');
    assert.equal(config.models.simple.vram_gb, 1);
    assert.equal(config.models.complex.name, 'qwen2.5-coder:7b-instruct-q8_0');
    assert.equal(config.models.complex.expected_latency_ms, 19000);
    assert.deepEqual(config.routing.classification.moderate_keywords, ['refactor', 'debug', 'explain']);
    assert.equal(config.routing.thresholds.timeout_seconds, 180);
    assert.equal(config.routing.thresholds.max_retries, 3);
    assert.equal(config.monitoring.prometheus.port, 9090);
    // The file says INFO; pino's level names are lower case.
    assert.equal(config.monitoring.logging.level, 'info');
    assert.equal(config.monitoring.logging.destination, '/var/log/copilot-bridge/');
  });

  it('layers defaults < file < environment < flags', () => {
    const file = yamlFile('layers.yaml', 'server:\n  port: 6000\n  host: localhost\nrouting:\n  thresholds:\n    timeout_seconds: 60\n    max_retries: 1\n');
    const fromFile = loadConfig({ file });
    assert.equal(fromFile.server.port, 6000);
    assert.equal(fromFile.routing.thresholds.timeout_seconds, 60);

    const env = { TIMEOUT_SECONDS: '90', MAX_RETRIES: '0', ENABLE_DUAL_GPU: 'TRUE', FALLBACK_ENABLED: 'yes', LOG_LEVEL: 'WARNING', PROMETHEUS_PORT: '9191' };
    const fromEnv = loadConfig({ file, env });
    assert.equal(fromEnv.routing.thresholds.timeout_seconds, 90);
    assert.equal(fromEnv.routing.thresholds.max_retries, 0);
    assert.equal(fromEnv.dual_gpu, true);
    assert.equal(fromEnv.fallback.enabled, true);
    assert.equal(fromEnv.monitoring.logging.level, 'warn');
    assert.equal(fromEnv.monitoring.prometheus.port, 9191);
    assert.equal(fromEnv.server.port, 6000);

    const fromFlags = loadConfig({ file, env, flags: { port: '7000', host: '::1' } });
    assert.equal(fromFlags.server.port, 7000);
    assert.equal(fromFlags.server.host, '::1');
  });

  it('takes backends from GPU0_URL/GPU1_URL before OLLAMA_HOST', () => {
    const both = loadConfig({ env: { GPU0_URL: 'http://localhost:11434', GPU1_URL: '127.0.0.1:11435', OLLAMA_HOST: 'http://other:1' } });
    assert.deepEqual(both.backends, [
      { name: 'gpu0', url: 'http://localhost:11434', gpu: 0, weight: 1, manage: false },
      { name: 'gpu1', url: 'http://127.0.0.1:11435', gpu: 1, weight: 1, manage: false },
    ]);
    const single = loadConfig({ env: { OLLAMA_HOST: '0.0.0.0' } });
    assert.deepEqual(single.backends, [{ name: 'local', url: 'http://127.0.0.1:11434', weight: 1, manage: false }]);
  });

  it('lets GPU0_URL replace the file’s backend of the same name', () => {
    const file = yamlFile(
      'backends.yaml',
      'backends:\n  - name: gpu0\n    url: http://10.0.0.5:11434\n  - name: big\n    url: http://10.0.0.6:11434\n    gpu: GPU-abc\n',
    );
    const config = loadConfig({ file, env: { GPU0_URL: 'http://127.0.0.1:9999' } });
    assert.deepEqual(
      config.backends.map((b) => [b.name, b.url]),
      [
        ['gpu0', 'http://127.0.0.1:9999'],
        ['big', 'http://10.0.0.6:11434'],
      ],
    );
  });

  it('refuses a backend URL with credentials, a query or a fragment, which would never be sent, without echoing the password', () => {
    const urls = ['http://proxy:s3cret@gpu-box:11434', 'http://gpu-box:11434/?token=abc', 'http://gpu-box:11434/#x'];
    const file = yamlFile('url-parts.yaml', `backends:\n${urls.map((url, i) => `  - { name: b${i}, url: "${url}" }\n`).join('')}`);
    const problems = problemsOf(() => loadConfig({ file }));
    assert.deepEqual(
      problems.map((p) => [p.keyPath, p.expected]),
      [
        ['backends.0.url', 'a URL without user, password, query or fragment: the bridge sends none of them (got "http://[redacted]@gpu-box:11434/")'],
        ['backends.1.url', 'a URL without user, password, query or fragment: the bridge sends none of them (got "http://gpu-box:11434/?[redacted]")'],
        ['backends.2.url', 'a URL without user, password, query or fragment: the bridge sends none of them (got "http://gpu-box:11434/#x")'],
      ],
    );
  });

  it('refuses two backends of one name, which name the managed instance, the scheduler’s slots and control actions', () => {
    const file = yamlFile(
      'same-name.yaml',
      'backends:\n  - { name: gpu0, url: "http://127.0.0.1:11500", manage: true }\n  - { name: gpu1, url: "http://127.0.0.1:11501" }\n  - { name: gpu0, url: "http://127.0.0.1:11502", manage: true }\n',
    );
    const problems = problemsOf(() => loadConfig({ file }));
    assert.deepEqual(
      problems.map((p) => [p.keyPath, p.expected]),
      [['backends.2.name', 'a name no other backend has (got "gpu0")']],
    );
  });

  it('refuses a managed backend whose URL is not where the ollama serve it starts listens (http://127.0.0.1:<port>)', () => {
    const urls = ['http://127.0.0.1', 'https://127.0.0.1:11500', 'http://10.0.0.5:11434', 'http://[::1]:11500', 'http://127.0.0.1:11500/ollama'];
    const file = yamlFile('managed.yaml', `backends:\n${urls.map((url, i) => `  - { name: b${i}, url: "${url}", manage: true }\n`).join('')}`);
    const problems = problemsOf(() => loadConfig({ file }));
    assert.deepEqual(
      problems.map((p) => p.keyPath),
      urls.map((_, i) => `backends.${i}.url`),
    );
    assert.match(problems[0]?.expected ?? '', /^with manage: true, http:\/\/127\.0\.0\.1:<port> or http:\/\/localhost:<port>/);
    const managed = loadConfig({
      file: yamlFile(
        'managed-ok.yaml',
        'backends:\n  - { name: a, url: "http://127.0.0.1:11500/", manage: true }\n  - { name: b, url: "http://localhost:11501", manage: true }\n',
      ),
    });
    assert.deepEqual(
      managed.backends.map((b) => b.url),
      ['http://127.0.0.1:11500/', 'http://localhost:11501'],
    );
  });

  it('normalizes Ollama addresses the way OLLAMA_HOST is written', () => {
    assert.equal(normalizeOllamaUrl('localhost'), 'http://localhost:11434');
    assert.equal(normalizeOllamaUrl('127.0.0.1:8080'), 'http://127.0.0.1:8080');
    assert.equal(normalizeOllamaUrl('https://gpu.example.com'), 'https://gpu.example.com');
    assert.equal(normalizeOllamaUrl('http://[::1]:7000/'), 'http://[::1]:7000');
    assert.equal(normalizeOllamaUrl('ftp://x'), undefined);
    assert.equal(normalizeOllamaUrl(''), undefined);
    // Ollama's own reading of OLLAMA_HOST: ":port" is this machine, quotes and spaces around it go,
    // a bare IPv6 address is a host, an explicit scheme brings its own default port.
    assert.equal(normalizeOllamaUrl(':8080'), 'http://127.0.0.1:8080');
    assert.equal(normalizeOllamaUrl(' "127.0.0.1:11500" '), 'http://127.0.0.1:11500');
    assert.equal(normalizeOllamaUrl("'gpu-box'"), 'http://gpu-box:11434');
    assert.equal(normalizeOllamaUrl('::1'), 'http://[::1]:11434');
    assert.equal(normalizeOllamaUrl('0.0.0.0'), 'http://127.0.0.1:11434');
    assert.equal(normalizeOllamaUrl('http://gpu-box'), 'http://gpu-box');
    assert.equal(normalizeOllamaUrl('http://gpu-box:11434/ollama/'), 'http://gpu-box:11434/ollama');
  });

  it('reaches the Ollama of OLLAMA_HOST=":port" on this machine', () => {
    assert.deepEqual(
      loadConfig({ env: { OLLAMA_HOST: ':11500' } }).backends.map((b) => [b.name, b.url]),
      [['local', 'http://127.0.0.1:11500']],
    );
  });

  it('names the file, key path and expectation for a bad value in the file', () => {
    const file = yamlFile('bad.yaml', 'routing:\n  thresholds:\n    timeout_seconds: soon\n');
    const problems = problemsOf(() => loadConfig({ file }));
    assert.deepEqual(
      problems.map((p) => [p.source, p.keyPath]),
      [[file, 'routing.thresholds.timeout_seconds']],
    );
    assert.match(problems[0]?.expected ?? '', /expected number.*"soon"/);
  });

  it('names the environment variable when it holds the bad value', () => {
    const problems = problemsOf(() => loadConfig({ env: { MAX_RETRIES: 'many', ENABLE_DUAL_GPU: 'perhaps' } }));
    const bySource = new Map(problems.map((p) => [p.source, p]));
    assert.equal(bySource.get('environment variable MAX_RETRIES')?.keyPath, 'routing.thresholds.max_retries');
    assert.equal(bySource.get('environment variable ENABLE_DUAL_GPU')?.keyPath, 'dual_gpu');
    assert.match(bySource.get('environment variable ENABLE_DUAL_GPU')?.expected ?? '', /expected boolean/);
  });

  it('names the flag for a bad --port', () => {
    const problems = problemsOf(() => loadConfig({ flags: { port: '70000' } }));
    assert.deepEqual(
      problems.map((p) => [p.source, p.keyPath]),
      [['--port', 'server.port']],
    );
  });

  it('reports a misspelt key instead of ignoring it', () => {
    const file = yamlFile('typo.yaml', 'modles:\n  simple:\n    name: x\n');
    const problems = problemsOf(() => loadConfig({ file }));
    assert.equal(problems[0]?.source, file);
    assert.match(problems[0]?.expected ?? '', /modles/);
  });

  it('reports YAML syntax errors with line and column', () => {
    const file = yamlFile('syntax.yaml', 'models:\n  simple: [unclosed\n');
    const problems = problemsOf(() => loadConfig({ file }));
    assert.match(problems[0]?.source ?? '', new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+$`));
    assert.match(problems[0]?.expected ?? '', /valid YAML/);
  });

  it('reports the first few YAML errors of a file that is not YAML at all, and how many more there are, rather than hundreds', () => {
    const lines = Array.from({ length: 200 }, (_, i) => `- not yaml ${i} ${'x'.repeat(100)}`);
    const file = yamlFile('not-yaml.yaml', `server: {}\n${lines.join('\n')}\n`);
    const problems = problemsOf(() => loadConfig({ file }));
    assert.equal(problems.length, 6);
    assert.match(problems[0]?.source ?? '', /not-yaml\.yaml:2:1$/);
    assert.match(problems[5]?.expected ?? '', /^valid YAML \(and \d+ more errors\)$/);
  });

  it('reports a missing file', () => {
    const problems = problemsOf(() => loadConfig({ file: path.join(dir, 'nope.yaml') }));
    assert.match(problems[0]?.expected ?? '', /readable YAML file \(ENOENT\)/);
  });

  it('refuses to listen beyond loopback without API keys, and allows it with one', () => {
    const problems = problemsOf(() => loadConfig({ flags: { host: '0.0.0.0' } }));
    assert.deepEqual(
      problems.map((p) => [p.source, p.keyPath]),
      [['--host', 'server.host']],
    );
    const config = loadConfig({ flags: { host: '0.0.0.0' }, env: { BRIDGE_API_KEYS: 'k-0123456789abcdef, k-fedcba9876543210' } });
    assert.deepEqual(config.server.api_keys, ['k-0123456789abcdef', 'k-fedcba9876543210']);
  });

  it('refuses a metrics port equal to the server’s, which the bridge would then find in use by itself', () => {
    const problems = problemsOf(() => loadConfig({ env: { PROMETHEUS_PORT: '5000' } }));
    assert.deepEqual(
      problems.map((p) => [p.source, p.keyPath, p.expected]),
      [['environment variable PROMETHEUS_PORT', 'monitoring.prometheus.port', 'a port other than server.port (got 5000)']],
    );
    const file = yamlFile('metrics-port.yaml', 'server:\n  port: 0\nmonitoring:\n  prometheus: { port: 0 }\n');
    assert.equal(loadConfig({ file }).monitoring.prometheus.port, 0, 'two free ports are two ports');
    assert.equal(loadConfig({ env: { PROMETHEUS_PORT: '9090' }, flags: { port: '9091' } }).monitoring.prometheus.port, 9090);
  });

  it('refuses a GPU sampling interval over an hour, whose nvidia-smi silence timer (ten rounds) would overflow', () => {
    const problems = problemsOf(() => loadConfig({ file: yamlFile('gpu-interval.yaml', 'gpu_monitor:\n  interval_seconds: 300000\n') }));
    assert.deepEqual(
      problems.map((p) => [p.keyPath, p.expected]),
      [['gpu_monitor.interval_seconds', 'Too big: expected number to be <=3600 (got 300000)']],
    );
    assert.equal(loadConfig({ file: yamlFile('gpu-interval-ok.yaml', 'gpu_monitor:\n  interval_seconds: 3600\n') }).gpu_monitor.interval_seconds, 3600);
  });

  it('refuses an rpm below 1, which would refuse every request', () => {
    const problems = problemsOf(() => loadConfig({ file: yamlFile('rpm.yaml', 'limits:\n  default: { rpm: 0.5 }\n') }));
    assert.deepEqual(
      problems.map((p) => p.keyPath),
      ['limits.default.rpm'],
    );
    assert.equal(loadConfig({ file: yamlFile('rpm1.yaml', 'limits:\n  default: { rpm: 1.5 }\n') }).limits.default?.rpm, 1.5);
  });

  it('refuses a wait longer than Node’s timers take, which would fire after 1 ms and fail every request', () => {
    const problems = problemsOf(() =>
      loadConfig({
        file: yamlFile(
          'timers.yaml',
          'server:\n  request_timeout_seconds: 3000000\nrouting:\n  thresholds:\n    idle_timeout_seconds: 1e9\n  scheduler:\n    fim_max_wait_ms: 3000000000\nollama:\n  stop_grace_seconds: 2147484\n',
        ),
        env: { TIMEOUT_SECONDS: '3000000', SHUTDOWN_GRACE_SECONDS: '2147484' },
      }),
    );
    assert.deepEqual(
      problems.map((p) => [p.source.replace(dir, '<dir>'), p.keyPath]),
      [
        ['<dir>/timers.yaml', 'server.request_timeout_seconds'],
        ['environment variable SHUTDOWN_GRACE_SECONDS', 'server.shutdown_grace_seconds'],
        ['environment variable TIMEOUT_SECONDS', 'routing.thresholds.timeout_seconds'],
        ['<dir>/timers.yaml', 'routing.thresholds.idle_timeout_seconds'],
        ['<dir>/timers.yaml', 'routing.scheduler.fim_max_wait_ms'],
        ['<dir>/timers.yaml', 'ollama.stop_grace_seconds'],
      ],
    );
    assert.equal(problems[1]?.expected, "at most 2147483: about 24 days, the longest wait Node's timers take (got 2147484)");
    assert.equal(loadConfig({ env: { TIMEOUT_SECONDS: '2147483' } }).routing.thresholds.timeout_seconds, 2147483);
  });

  it('sends a tier keep_alive given as seconds in text ("-1") as the number Ollama reads, and takes Go durations', () => {
    const config = loadConfig({
      file: yamlFile('keep-alive.yaml', 'models:\n  simple: { name: "a:1b", keep_alive: "-1" }\n  moderate: { name: "b:7b", keep_alive: "1h30m" }\n'),
    });
    assert.equal(config.models.simple.keep_alive, -1);
    assert.equal(config.models.moderate?.keep_alive, '1h30m');
    const problems = problemsOf(() =>
      loadConfig({ file: yamlFile('keep-alive-bad.yaml', 'models:\n  simple: { name: "a:1b", keep_alive: "30 minutes" }\nollama:\n  keep_alive: forever\n') }),
    );
    assert.deepEqual(problems.map((p) => p.keyPath).sort(), ['models.simple.keep_alive', 'ollama.keep_alive']);
  });

  it('takes ollama.keep_alive as seconds written as a YAML number, as README says, and passes it on as text', () => {
    assert.equal(loadConfig({ file: yamlFile('ollama-keep-alive.yaml', 'ollama:\n  keep_alive: -1\n') }).ollama.keep_alive, '-1');
    assert.equal(loadConfig({ file: yamlFile('ollama-keep-alive-300.yaml', 'ollama:\n  keep_alive: 300\n') }).ollama.keep_alive, '300');
    // Ollama reads neither "1.5" (no unit) nor a fraction of a second: it would silently use 5m.
    const problems = problemsOf(() => loadConfig({ file: yamlFile('ollama-keep-alive-fraction.yaml', 'ollama:\n  keep_alive: 1.5\n') }));
    assert.deepEqual(
      problems.map((p) => p.keyPath),
      ['ollama.keep_alive'],
    );
  });

  it('refuses a keep_alive longer than Ollama counts (nanoseconds in 64 bits) or a fraction of a second, for a tier as for ollama.keep_alive', () => {
    const problems = problemsOf(() =>
      loadConfig({
        file: yamlFile(
          'keep-alive-too-long.yaml',
          'models:\n  simple: { name: "a:1b", keep_alive: 1.5 }\n  moderate: { name: "b:7b", keep_alive: 1e12 }\nollama:\n  keep_alive: 100000000000\n',
        ),
      }),
    );
    assert.deepEqual(
      problems.map((p) => [p.keyPath, p.expected]),
      [
        ['models.simple.keep_alive', 'whole seconds: Ollama drops a fraction of a second (got 1.5)'],
        [
          'models.moderate.keep_alive',
          'at most 9223372036 seconds either way (about 292 years), the longest Ollama counts; -1 keeps a model for good (got 1000000000000)',
        ],
        [
          'ollama.keep_alive',
          'at most 9223372036 seconds either way (about 292 years), the longest Ollama counts; -1 keeps a model for good (got 100000000000)',
        ],
      ],
    );
  });

  it('takes a variable set to nothing as not set, as Docker Compose passes an unset ${VAR}', () => {
    const keyFile = path.join(dir, 'cloud-key');
    writeFileSync(keyFile, 'sk-from-the-file\n', { mode: 0o600 });
    const config = loadConfig({ env: { LOG_LEVEL: '', TIMEOUT_SECONDS: ' ', CLOUD_API_KEY: '', CLOUD_API_KEY_FILE: keyFile } });
    assert.equal(config.monitoring.logging.level, loadConfig({}).monitoring.logging.level);
    assert.equal(config.routing.thresholds.timeout_seconds, loadConfig({}).routing.thresholds.timeout_seconds);
    assert.equal(config.fallback.cloud_api_key, 'sk-from-the-file');
  });

  it('keeps its data in ~/.local/share/copilot-bridge when XDG_DATA_HOME is empty or relative, as the XDG spec says, not in the working folder', (t) => {
    const saved = process.env.XDG_DATA_HOME;
    t.after(() => {
      if (saved === undefined) delete process.env.XDG_DATA_HOME;
      else process.env.XDG_DATA_HOME = saved;
    });
    const home = path.join(os.homedir(), '.local', 'share', 'copilot-bridge');
    for (const value of ['', 'share']) {
      process.env.XDG_DATA_HOME = value;
      assert.equal(defaultDataDir(), home, JSON.stringify(value));
    }
    process.env.XDG_DATA_HOME = path.join(dir, 'xdg');
    assert.equal(defaultDataDir(), path.join(dir, 'xdg', 'copilot-bridge'));
  });

  it("takes a cloud provider's key from its own api_key in the file, else its variable, else CLOUD_API_KEY", () => {
    const file = yamlFile(
      'provider-keys.yaml',
      'fallback:\n  providers:\n    - {name: own, type: openai, base_url: "https://llm.example/v1", model: m, api_key: sk-own-in-the-file}\n    - {name: openai, type: openai, base_url: "https://api.openai.com/v1", model: gpt-4o}\n    - {name: claude, type: anthropic, base_url: "https://api.anthropic.com/v1", model: claude}\n',
    );
    const config = loadConfig({ file, env: { OPENAI_API_KEY: 'sk-openai-env', CLOUD_API_KEY: 'sk-cloud-env' } });
    assert.deepEqual(
      config.fallback.providers.map((p) => p.api_key),
      ['sk-own-in-the-file', 'sk-openai-env', 'sk-cloud-env'],
    );
  });

  it('refuses a config or secret file that never ends (/dev/zero) rather than reading it until memory runs out', () => {
    const endless = '/dev/zero';
    const config = problemsOf(() => loadConfig({ file: endless }));
    assert.deepEqual(config, [{ source: endless, keyPath: '', expected: 'a YAML file of at most 16 MiB' }]);
    const secret = problemsOf(() => loadConfig({ env: { CLOUD_API_KEY_FILE: endless } }));
    assert.deepEqual(secret, [{ source: 'environment variable CLOUD_API_KEY_FILE', keyPath: '', expected: `a file of at most 1 MiB (${endless})` }]);
  });

  it('takes __proto__, constructor and prototype as plain names of teams and priced models, and names them in errors', () => {
    const names = ['__proto__', 'constructor', 'prototype'];
    const teams = names.map((name) => `    ${name}:\n      cloud: never\n`).join('');
    const prices = names.map((name, index) => `    ${name}:\n      input: ${index + 1}\n      output: 9\n`).join('');
    const config = loadConfig({ file: yamlFile('object-names.yaml', `auth:\n  teams:\n${teams}accounting:\n  prices:\n${prices}`) });
    assert.deepEqual(Object.keys(config.auth.teams), names);
    for (const name of names) assert.equal(config.auth.teams[name]?.cloud, 'never', name);
    assert.deepEqual(
      Object.entries(config.accounting.prices).map(([name, price]) => [name, price.input]),
      [
        ['__proto__', 1],
        ['constructor', 2],
        ['prototype', 3],
      ],
    );
    // A team or model the file does not name is not found among what every object has.
    assert.equal(loadConfig().auth.teams.toString, undefined);
    assert.equal(loadConfig().accounting.prices.constructor, undefined);
    const problems = problemsOf(() => loadConfig({ file: yamlFile('bad-object-name.yaml', 'auth:\n  teams:\n    __proto__:\n      cloud: sometimes\n') }));
    assert.deepEqual(
      problems.map((p) => p.keyPath),
      ['auth.teams.__proto__.cloud'],
    );
  });

  it('never echoes a secret in an error', () => {
    const problems = problemsOf(() => loadConfig({ env: { BRIDGE_API_KEYS: 'short-secret' } }));
    assert.equal(problems[0]?.keyPath, 'server.api_keys.0');
    assert.doesNotMatch(problems[0]?.expected ?? '', /short-secret/);
  });
});

describe('paths in the config', () => {
  it('take ~ as the home folder, as a shell would (a YAML file, a systemd Environment= line and the desktop app expand nothing)', () => {
    const dir = tempDir('config-home-');
    const file = path.join(dir, 'config.yaml');
    writeFileSync(
      file,
      [
        'data_dir: ~/bridge-data',
        'ollama:',
        '  binary: ~/bin/ollama',
        '  models_dir: ~/models',
        'monitoring:',
        '  logging:',
        '    destination: ~/logs',
        '',
      ].join('\n'),
    );
    const config = loadConfig({ file, env: {} });
    const home = os.homedir();
    assert.deepEqual(
      [config.data_dir, config.ollama.binary, config.ollama.models_dir, config.monitoring.logging.destination],
      [path.join(home, 'bridge-data'), path.join(home, 'bin/ollama'), path.join(home, 'models'), path.join(home, 'logs')],
    );
    assert.equal(loadConfig({ env: { BRIDGE_DATA_DIR: '~/from-env' } }).data_dir, path.join(home, 'from-env'));
    // Only a leading ~ is the home folder; stdout stays stdout.
    assert.equal(loadConfig({ env: { BRIDGE_DATA_DIR: '/srv/~x' } }).data_dir, '/srv/~x');
    assert.equal(loadConfig({ env: {} }).monitoring.logging.destination, 'stdout');
  });
});

describe('secrets from files', () => {
  const secrets = tempDir('bridge-secrets-');
  const secretFile = (name: string, text: string): string => {
    const file = path.join(secrets, name);
    writeFileSync(file, text, { mode: 0o600 });
    return file;
  };
  const providerFile = yamlFile(
    'providers.yaml',
    'fallback:\n  providers:\n    - {name: openai, type: openai, base_url: "https://api.openai.com/v1", model: gpt-4o}\n    - {name: own, type: openai, base_url: "https://llm.example/v1", model: m, api_key_env: OWN_LLM_KEY}\n',
  );

  it('reads NAME_FILE for every secret variable, without the trailing newline, lists one per line', () => {
    const config = loadConfig({
      file: providerFile,
      env: {
        BRIDGE_API_KEYS_FILE: secretFile('keys', 'key-one-0123456789abcdef\nkey-two-0123456789abcdef\n'),
        BRIDGE_CONTROL_TOKEN_FILE: secretFile('token', 'control-token-0123456789\n'),
        OPENAI_API_KEY_FILE: secretFile('openai', 'sk-from-file\n'),
        OWN_LLM_KEY_FILE: secretFile('own', 'own-key'),
      },
    });
    assert.deepEqual(config.server.api_keys, ['key-one-0123456789abcdef', 'key-two-0123456789abcdef']);
    assert.equal(config.control.token, 'control-token-0123456789');
    assert.equal(config.fallback.providers[0]?.api_key, 'sk-from-file');
    assert.equal(config.fallback.providers[1]?.api_key, 'own-key');
  });

  it("reads systemd credentials from $CREDENTIALS_DIRECTORY by the variable's name; absent ones stay unset", () => {
    const credentials = tempDir('bridge-credentials-');
    writeFileSync(path.join(credentials, 'CLOUD_API_KEY'), 'sk-cloud-credential\n');
    writeFileSync(path.join(credentials, 'BRIDGE_API_KEYS'), 'credential-key-0123456789\n');
    const config = loadConfig({ file: providerFile, env: { CREDENTIALS_DIRECTORY: credentials } });
    assert.deepEqual(config.server.api_keys, ['credential-key-0123456789']);
    assert.equal(config.fallback.cloud_api_key, 'sk-cloud-credential');
    // OPENAI_API_KEY has no credential: the provider falls back to CLOUD_API_KEY as documented.
    assert.equal(config.fallback.providers[0]?.api_key, 'sk-cloud-credential');
    assert.equal(config.control.token, undefined);
  });

  it('refuses a variable set both ways, and names an unreadable file without its content', () => {
    const both = problemsOf(() => loadConfig({ env: { CLOUD_API_KEY: 'sk-x', CLOUD_API_KEY_FILE: secretFile('cloud', 'sk-y') } }));
    assert.deepEqual(
      both.map((p) => p.source),
      ['environment variables CLOUD_API_KEY and CLOUD_API_KEY_FILE'],
    );
    const missing = path.join(secrets, 'not-there');
    const unreadable = problemsOf(() => loadConfig({ env: { BRIDGE_CONTROL_TOKEN_FILE: missing } }));
    assert.equal(unreadable[0]?.source, 'environment variable BRIDGE_CONTROL_TOKEN_FILE');
    assert.match(unreadable[0]?.expected ?? '', /ENOENT/);
    assert.ok(unreadable[0]?.expected.includes(missing));
  });

  it('never echoes a secret read from a file in an error', () => {
    const shortKey = 'short-secret-xyz';
    let message = '';
    try {
      loadConfig({ env: { BRIDGE_API_KEYS_FILE: secretFile('short', `${shortKey.slice(0, 10)}\n`) } });
    } catch (error) {
      message = (error as Error).message;
    }
    assert.match(message, /server\.api_keys/);
    assert.ok(!message.includes(shortKey.slice(0, 10)), message);
  });
});
