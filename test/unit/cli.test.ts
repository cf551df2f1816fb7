import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { ENVIRONMENT_VARIABLES, SECRET_VARIABLES } from '../../src/config/load.js';
import { CLI, runCliToEnd } from '../support/cli.js';
import { documentedEnvironmentVariables } from '../support/readme.js';
import { tempDir } from '../support/temp.js';

const dir = tempDir('bridge-cli-');

describe('copilot-bridge command', () => {
  it('exits 2 with the file, key path and expectation for a bad config, and no stack trace', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, 'server:\n  port: lots\n');
    const run = await runCliToEnd(['serve', '--config', file]);
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
    assert.equal(run.stderr, `copilot-bridge: invalid configuration\n  ${file}: server.port: Invalid input: expected number, received string (got "lots")\n`);
    assert.doesNotMatch(run.stderr, /\n\s+at /);
  });

  it('refuses a YAML alias bomb (billion laughs) as invalid configuration, exit 2, without a stack trace', async () => {
    const file = path.join(dir, 'bomb.yaml');
    const levels = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'];
    const lines = levels.map((level, i) => {
      const item = i === 0 ? '"lol"' : `*${levels[i - 1] ?? ''}`;
      return `${level}: &${level} [${Array(9).fill(item).join(', ')}]`;
    });
    writeFileSync(file, `${lines.join('\n')}\n`);
    const run = await runCliToEnd(['serve', '--config', file]);
    assert.equal(run.code, 2);
    assert.ok(run.stderr.startsWith(`copilot-bridge: invalid configuration\n  ${file}: valid YAML (`), run.stderr);
    assert.match(run.stderr, /alias/i);
    assert.doesNotMatch(run.stderr, /\n\s+at /);
  });

  it('names the environment variable that holds a bad value', async () => {
    const run = await runCliToEnd(['serve'], { TIMEOUT_SECONDS: '-5' });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /environment variable TIMEOUT_SECONDS: routing\.thresholds\.timeout_seconds: Too small: expected number to be >0 \(got -5\)/);
  });

  it('refuses a public bind address without API keys', async () => {
    const run = await runCliToEnd(['serve', '--host', '0.0.0.0', '--port', '0']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--host: server\.host: a loopback address/);
  });

  it('exits 1 with a clear message when the port is taken', async () => {
    const { createServer } = await import('node:net');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const run = await runCliToEnd(['serve', '--port', String(port)]);
      assert.equal(run.code, 1);
      assert.match(run.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: port ${port} on 127\\.0\\.0\\.1 is already in use`));
      // The metrics port (PROMETHEUS_PORT) taken: the message says which of the two ports it is.
      const metrics = await runCliToEnd(['serve', '--port', '0'], { PROMETHEUS_PORT: String(port) });
      assert.equal(metrics.code, 1);
      assert.equal(metrics.stderr, `copilot-bridge: metrics server cannot listen on 127.0.0.1:${port}: port ${port} on 127.0.0.1 is already in use\n`);
    } finally {
      server.close();
    }
  });

  it('keys: a config path that cannot be read or written exits 2 naming the file and why, without a stack trace', async () => {
    const list = await runCliToEnd(['keys', 'list', '--config', dir]);
    assert.equal(list.code, 2);
    assert.equal(list.stderr, `copilot-bridge keys: cannot read ${dir} (EISDIR)\n`);
    const missingFolder = path.join(dir, 'no-such-folder', 'config.yaml');
    const add = await runCliToEnd(['keys', 'add', '--name', 'alice', '--config', missingFolder]);
    assert.equal(add.code, 2);
    assert.equal(add.stderr, `copilot-bridge keys: cannot write ${missingFolder} (ENOENT)\n`);
    assert.equal(add.stdout, '', 'no key is shown that was never stored');
  });

  it('keys: a write that fails part way (disk full) leaves the config file as it was', async () => {
    const file = path.join(dir, 'full-disk.yaml');
    const original = `# ${'a long comment '.repeat(400)}\nserver:\n  port: 5000\n`;
    writeFileSync(file, original);
    // A 4 KiB file-size limit fails the write of this 6 KiB file after its first 4 KiB, as a full disk would.
    const child = spawn('bash', ['-c', 'ulimit -f 4 && exec "$@"', 'bash', process.execPath, CLI, 'keys', 'add', '--name', 'alice', '--config', file]);
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 2, stderr);
    assert.equal(stderr, `copilot-bridge keys: cannot write ${file} (EFBIG)\n`);
    assert.equal(stdout, '', 'no key is shown that was never stored');
    assert.equal(readFileSync(file, 'utf8'), original);
    assert.deepEqual(
      readdirSync(dir).filter((name) => name.startsWith('full-disk')),
      ['full-disk.yaml'],
      'nothing is left beside it',
    );
  });

  it('keys add: refuses an empty --team or --models instead of storing a key serve refuses or one without the asked-for limit', async () => {
    const file = path.join(dir, 'empty-options.yaml');
    const team = await runCliToEnd(['keys', 'add', '--name', 'alice', '--team', ' ', '--config', file]);
    assert.equal(team.code, 2);
    assert.equal(team.stderr, 'copilot-bridge keys: --team must not be empty\n');
    const models = await runCliToEnd(['keys', 'add', '--name', 'alice', '--models', ' , ', '--config', file]);
    assert.equal(models.code, 2);
    assert.equal(models.stderr, 'copilot-bridge keys: --models needs at least one model name or pattern\n');
    assert.equal(existsSync(file), false, 'no key was stored');
  });

  it('prints usage for --help and for an unknown command', async () => {
    const help = await runCliToEnd(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: copilot-bridge serve \[--port 5000\] \[--host 127\.0\.0\.1\] \[--config config\.yaml\]/);
    const unknown = await runCliToEnd(['launch']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "launch"/);
  });

  it('refuses an empty --config, exit 2, instead of reporting a file with no name', async () => {
    for (const args of [
      ['serve', '--config', ''],
      ['keys', 'list', '--config', ''],
      ['keys', 'add', '--name', 'alice', '--config', ''],
    ]) {
      const run = await runCliToEnd(args);
      assert.equal(run.code, 2, args.join(' '));
      assert.ok(run.stderr.startsWith('copilot-bridge: --config needs a file name\n'), run.stderr);
    }
  });

  it('without a command, says one is needed (serve or keys) with usage, exit 2, rather than calling "" an unknown command', async () => {
    const run = await runCliToEnd([]);
    assert.equal(run.code, 2);
    assert.ok(run.stderr.startsWith('copilot-bridge: a command is needed: serve or keys\n\nUsage: copilot-bridge serve'), run.stderr);
  });

  it('refuses, exit 2 with usage, a flag of another command or a mistyped one instead of ignoring it', async () => {
    const file = path.join(dir, 'stray-flags.yaml');
    for (const [args, flag] of [
      [['serve', '--port', '0', '--name', 'alice'], '--name'],
      [['serve', '--role', 'admin'], '--role'],
      [['keys', 'add', '--name', 'alice', '--port', '5000', '--config', file], '--port'],
      [['keys', 'list', '--host', '0.0.0.0', '--config', file], '--host'],
      [['keys', 'revoke', '--name', 'alice', '--team', 'core', '--config', file], '--team'],
    ] as const) {
      const run = await runCliToEnd([...args], {}, 10_000);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, new RegExp(`^copilot-bridge: ${flag} is not an option of ${args[0]}`));
      assert.match(run.stderr, /\nUsage: copilot-bridge serve/);
    }
    assert.equal(existsSync(file), false, 'no key was stored');
    const typo = await runCliToEnd(['serve', '--prot', '0'], {}, 10_000);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /^copilot-bridge: Unknown option '--prot'/);
    assert.match(typo.stderr, /\nUsage: copilot-bridge serve/);
  });

  it('--help and the README name every environment variable the bridge reads', async () => {
    const help = await runCliToEnd(['--help']);
    const environment = help.stdout.slice(help.stdout.indexOf('\nEnvironment'));
    const inHelp = new Set(environment.match(/\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\b[A-Z]{4,}\b/g));
    for (const name of ENVIRONMENT_VARIABLES) assert.ok(inHelp.has(name), `--help leaves out ${name}`);
    for (const name of SECRET_VARIABLES) assert.match(environment, new RegExp(`${name}[^]*_FILE`), `--help says ${name} can come from a file`);
    assert.deepEqual(
      [...documentedEnvironmentVariables()].sort(),
      [...ENVIRONMENT_VARIABLES].sort(),
      'the README’s configuration table names the same variables',
    );
    // A variable read by name anywhere in src/ is one of them, or one of the system's own.
    const system = new Set(['PATH', 'XDG_DATA_HOME', 'CREDENTIALS_DIRECTORY', 'LOCALAPPDATA']);
    for (const file of readdirSync('src', { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'))) {
      const source = readFileSync(path.join('src', file), 'utf8');
      for (const [, dotted, indexed] of source.matchAll(/\benv(?:\.([A-Z][A-Z0-9_]*)\b|\[['"`]([A-Z][A-Z0-9_]*)['"`]\])(?!\s*=[^=])/g)) {
        const name = dotted ?? indexed ?? '';
        assert.ok(system.has(name) || ENVIRONMENT_VARIABLES.includes(name), `src/${file} reads ${name}, which --help and the README do not name`);
      }
    }
  });

  it('prints the version in package.json (the bundle finds it from where it was built)', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const run = await runCliToEnd(['--version']);
    assert.equal(run.code, 0);
    assert.equal(run.stdout, `${version}\n`);
  });

  // --optimize-for-size only shares its first letters with --opt, which the user may set to keep V8's own choice.
  for (const nodeFlags of [[], ['--optimize-for-size']]) {
    it(`starts without the optimizing compiler (idle memory) and optimizes once it serves traffic${nodeFlags.length > 0 ? `, with ${nodeFlags.join(' ')}` : ''}`, async () => {
      // --trace-opt prints V8's decisions between the JSON log lines.
      const child = spawn(process.execPath, ['--trace-opt', ...nodeFlags, CLI, 'serve', '--port', '0'], {
        env: { PATH: process.env.PATH, BRIDGE_DATA_DIR: tempDir('bridge-cli-opt-'), OLLAMA_HOST: 'http://127.0.0.1:9' },
      });
      try {
        const optimized = /for optimization to TURBOFAN/;
        let listening: ((url: string) => void) | undefined;
        const url = new Promise<string>((resolve) => (listening = resolve));
        let optimizedBeforeListening = false;
        let optimizedSince: (() => void) | undefined;
        const optimizedLater = new Promise<void>((resolve) => (optimizedSince = resolve));
        let served = false;
        createInterface({ input: child.stdout }).on('line', (line) => {
          if (line.startsWith('{')) {
            const entry = JSON.parse(line) as { msg?: string; url?: string };
            if (entry.msg === 'bridge listening') {
              served = true;
              listening?.(String(entry.url));
            }
          } else if (optimized.test(line)) {
            if (served) optimizedSince?.();
            else optimizedBeforeListening = true;
          }
        });
        const base = await Promise.race([url, once(child, 'close').then(() => assert.fail('copilot-bridge exited before listening'))]);
        assert.equal(optimizedBeforeListening, false, 'V8 optimized code while the bridge started');
        let done = false;
        void optimizedLater.then(() => (done = true));
        for (let request = 0; request < 20_000 && !done; request++) await (await fetch(`${base}/health`)).text();
        assert.ok(done, 'V8 optimized nothing after 20000 requests: the optimizing compiler stayed off');
      } finally {
        child.kill('SIGKILL');
      }
    });
  }
});
