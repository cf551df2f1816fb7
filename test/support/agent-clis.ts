import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The coding-agent CLIs the integration suite runs against the bridge, pinned, each from its own
 * package registry (npm or PyPI) into a cache folder of its own, so nothing is downloaded from
 * elsewhere. The npm ones ship their native program as a per-platform package (an optional
 * dependency) and install scripts stay off: Claude Code's and opencode's postinstall only copy
 * their platform package's program over a placeholder, so the test runs that program directly, and
 * Codex's `bin/codex.js` finds its platform package by itself. aider goes into a virtualenv.
 */
export const AGENT_CLIS = {
  claude: { registry: 'npm', pkg: '@anthropic-ai/claude-code', version: '2.1.332' },
  codex: { registry: 'npm', pkg: '@openai/codex', version: '0.171.0' },
  opencode: { registry: 'npm', pkg: 'opencode-ai', version: '1.18.33' },
  aider: { registry: 'pypi', pkg: 'aider-chat', version: '0.86.2' },
} as const satisfies Record<string, { registry: 'npm' | 'pypi'; pkg: string; version: string }>;

export type AgentCli = keyof typeof AGENT_CLIS;

export function agentCliDir(cli: AgentCli): string {
  const base = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(base, 'copilot-bridge', 'agent-clis', `${cli}-${AGENT_CLIS[cli].version}`);
}

function cpuinfoHas(flag: string): boolean {
  try {
    return new RegExp(`\\b${flag}\\b`).test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

function isMusl(): boolean {
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
  } catch {
    return false;
  }
}

const windows = process.platform === 'win32';

/** The command that runs the CLI from its cache folder (not checked for existence). */
function command(cli: AgentCli): string[] {
  const dir = agentCliDir(cli);
  const modules = path.join(dir, 'node_modules');
  const musl = process.platform === 'linux' && isMusl() ? '-musl' : '';
  const exe = windows ? '.exe' : '';
  switch (cli) {
    case 'claude':
      return [path.join(modules, '@anthropic-ai', `claude-code-${process.platform}-${process.arch}${musl}`, `claude${exe}`)];
    case 'codex':
      return [process.execPath, path.join(modules, '@openai', 'codex', 'bin', 'codex.js')];
    case 'opencode': {
      // As its postinstall picks: the baseline build on x64 Linux without AVX2.
      const baseline = process.platform === 'linux' && process.arch === 'x64' && !cpuinfoHas('avx2') ? '-baseline' : '';
      return [path.join(modules, `opencode-${windows ? 'windows' : process.platform}-${process.arch}${baseline}${musl}`, 'bin', `opencode${exe}`)];
    }
    case 'aider':
      return [path.join(dir, 'venv', windows ? 'Scripts' : 'bin', `aider${exe}`)];
  }
}

/** Installs the pinned package into `dir`: from npm into its node_modules, from PyPI into a virtualenv. */
async function install(cli: AgentCli, dir: string): Promise<{ code: number | null; output: string; step: string }> {
  const { registry, pkg, version } = AGENT_CLIS[cli];
  if (registry === 'npm') {
    writeFileSync(path.join(dir, 'package.json'), '{"private": true}\n');
    const step = `npm install ${pkg}@${version}`;
    return {
      step,
      ...(await run([windows ? 'npm.cmd' : 'npm', 'install', '--no-audit', '--no-fund', '--ignore-scripts', '--no-package-lock', `${pkg}@${version}`], dir)),
    };
  }
  const venv = path.join(dir, 'venv');
  const created = await run([windows ? 'python' : 'python3', '-m', 'venv', venv], dir);
  if (created.code !== 0) return { step: 'python3 -m venv', ...created };
  const pip = path.join(venv, windows ? 'Scripts' : 'bin', `pip${windows ? '.exe' : ''}`);
  return { step: `pip install ${pkg}==${version}`, ...(await run([pip, 'install', '--quiet', '--disable-pip-version-check', `${pkg}==${version}`], dir)) };
}

function run(argv: readonly string[], cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0] as string, argv.slice(1), { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', (error) => resolve({ code: null, output: `${output}${error.message}` }));
    child.once('close', (code) => resolve({ code, output }));
  });
}

/** The CLI's command, installing it from its registry into the cache folder the first time; or why it cannot run. */
export async function ensureAgentCli(cli: AgentCli): Promise<{ command: string[] } | { missing: string }> {
  const argv = command(cli);
  const program = argv.at(-1) as string;
  if (!existsSync(program)) {
    const dir = agentCliDir(cli);
    mkdirSync(dir, { recursive: true });
    const installed = await install(cli, dir);
    if (installed.code !== 0 || !existsSync(program))
      return { missing: `${installed.step} into ${dir} failed: ${installed.output.trim().split('\n').slice(-3).join(' | ')}` };
  }
  const probe = await run([...argv, '--version'], os.tmpdir());
  if (probe.code !== 0) return { missing: `${program} --version failed: ${probe.output.trim().slice(0, 300)}` };
  return { command: argv };
}

/** In CI the CLIs are required; elsewhere a test that cannot get one is skipped with one loud line. */
export function cliUnavailable(cli: AgentCli, missing: string): string {
  const reason = `SKIPPING the ${cli} CLI test: ${missing}`;
  if (process.env.CI === 'true') throw new Error(`CI=true and the ${cli} CLI cannot run: ${missing}`);
  process.stderr.write(`\n!!! ${reason}\n\n`);
  return reason;
}
