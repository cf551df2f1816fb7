// The test command: lints, builds, type-checks, finds or builds Ollama for the real-Ollama suites,
// runs every test file with node's test runner, then checks that no test left a process behind.
// `unit` is the fast loop: no build, the unit files in parallel, loaded from source by tsx.
// Usage: node scripts/test.mjs [all|unit|integration|deploy] [extra node --test arguments]
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureDeps } from './ensure-deps.mjs';
import { ensureTestTools } from './ensure-test-tools.mjs';

const [suite = 'all', ...extra] = process.argv.slice(2);
// Rig folders live in this run's temp folder, so runs with another TMPDIR are not counted.
const RIG_DIR_PREFIX = path.join(os.tmpdir(), 'copilot-bridge-rig-');

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options });
  return result.status ?? 1;
}

function step(title, command, args) {
  console.log(`> ${title}`);
  const code = run(command, args);
  if (code !== 0) process.exit(code);
}

function testFiles(folder) {
  return readdirSync(folder, { recursive: true })
    .map((file) => path.join(folder, String(file)))
    .filter((file) => file.endsWith('.test.ts'))
    .sort();
}

/** Ollama processes started from one of this run's rig folders that are still alive (Linux /proc). */
function leftoverRigProcesses() {
  let pids;
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  const found = [];
  for (const pid of pids) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (!cmdline.includes('ollama')) continue;
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      if (cmdline.includes(RIG_DIR_PREFIX) || environ.includes(RIG_DIR_PREFIX)) found.push(`${pid}: ${cmdline.trim()}`);
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

ensureDeps();
if (suite !== 'unit') ensureTestTools({ deploy: suite === 'all' || suite === 'deploy' });
if (suite === 'unit') {
  const unitFiles = testFiles('test/unit');
  process.exit(
    run('node', [
      '--import',
      'tsx',
      '--test',
      '--test-reporter=spec',
      `--test-concurrency=${os.availableParallelism()}`,
      '--test-timeout=60000',
      ...extra,
      ...unitFiles,
    ]),
  );
}
if (suite === 'all') step('lint (eslint, with the layer rules)', 'npx', ['eslint', '.']);
if (suite === 'all') step('format (prettier --check)', 'npx', ['prettier', '--check', '--log-level', 'warn', '.']);
step('build (bridge and dashboard)', 'npm', ['run', 'build', '--silent']);
step('type-check tests and dashboard', 'npx', ['tsc', '-p', 'tsconfig.test.json']);
step('type-check dashboard (no Node types)', 'npx', ['tsc', '-p', 'renderer/tsconfig.json']);
step("build the desktop main process (checked against Electron's own types)", 'npx', ['tsc', '-p', 'electron/tsconfig.json']);

const files = [];
if (suite === 'all') files.push(...testFiles('test/unit'));
// The deployment files, checked by nginx, HAProxy, Prometheus, Alertmanager and systemd themselves (ensureTestTools installs them).
if (suite === 'all' || suite === 'deploy') files.push(...testFiles('test/deploy'));
if (suite === 'all' || suite === 'integration') {
  files.push(...testFiles('test/integration'), ...testFiles('test/e2e'));
  console.log('> finding Ollama for the real-Ollama suites (builds it with Go the first time)');
  const lookup = spawnSync('node', ['--import', 'tsx', 'test/support/ensure-ollama.ts'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const binary = lookup.stdout.trim().split('\n').at(-1);
  if (lookup.status === 0 && binary) {
    process.env.OLLAMA_BIN = binary;
    console.log(`> Ollama: ${binary}`);
  } else if (process.env.CI === 'true') {
    console.error('CI=true and no Ollama binary could be found or built: the real-Ollama suites are required in CI.');
    process.exit(1);
  } else {
    console.error('\n!!! SKIPPING real-Ollama tests: no Ollama binary and none could be built. Install Go (the tests then build Ollama) or set OLLAMA_BIN.\n');
    process.env.RIG_SKIP_ANNOUNCED = '1';
  }
}

const code = run('node', ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=1', '--test-timeout=180000', ...extra, ...files]);

const leftovers = leftoverRigProcesses();
if (leftovers.length > 0) {
  console.error(`Tests left Ollama processes running:\n${leftovers.join('\n')}`);
  for (const line of leftovers) {
    try {
      process.kill(Number(line.split(':')[0]), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  process.exit(1);
}
process.exit(code);
