import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The coding-agent CLIs the integration suite runs against the bridge, pinned. Both ship their
 * native program as a per-platform npm package (an optional dependency), so nothing is downloaded
 * from outside the npm registry: Claude Code's own postinstall only copies its platform package's
 * `claude` over a placeholder (install scripts stay off here; the test runs that binary directly),
 * and Codex's `bin/codex.js` finds its platform package by itself.
 */
export const AGENT_CLIS = {
  claude: { pkg: '@anthropic-ai/claude-code', version: '2.1.332' },
  codex: { pkg: '@openai/codex', version: '0.171.0' },
} as const;

export type AgentCli = keyof typeof AGENT_CLIS;

export function agentCliDir(cli: AgentCli): string {
  const base = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(base, 'copilot-bridge', 'agent-clis', `${cli}-${AGENT_CLIS[cli].version}`);
}

function isMusl(): boolean {
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
  } catch {
    return false;
  }
}

/** The command that runs the CLI from its cache folder (not checked for existence). */
function command(cli: AgentCli): string[] {
  const modules = path.join(agentCliDir(cli), 'node_modules');
  if (cli === 'codex') return [process.execPath, path.join(modules, '@openai', 'codex', 'bin', 'codex.js')];
  const platform = `${process.platform}-${process.arch}${process.platform === 'linux' && isMusl() ? '-musl' : ''}`;
  return [path.join(modules, '@anthropic-ai', `claude-code-${platform}`, process.platform === 'win32' ? 'claude.exe' : 'claude')];
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

/** The CLI's command, installing it from npm into the cache folder the first time; or why it cannot run. */
export async function ensureAgentCli(cli: AgentCli): Promise<{ command: string[] } | { missing: string }> {
  const argv = command(cli);
  const program = argv.at(-1) as string;
  if (!existsSync(program)) {
    const dir = agentCliDir(cli);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'package.json'), '{"private": true}\n');
    const { pkg, version } = AGENT_CLIS[cli];
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const installed = await run([npm, 'install', '--no-audit', '--no-fund', '--ignore-scripts', '--no-package-lock', `${pkg}@${version}`], dir);
    if (installed.code !== 0 || !existsSync(program))
      return { missing: `npm install ${pkg}@${version} into ${dir} failed: ${installed.output.trim().split('\n').slice(-3).join(' | ')}` };
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
