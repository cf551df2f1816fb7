// CPU profile of the headless bridge under the 32-client load on both generation surfaces
// (`node --cpu-prof`), summarized as the 10 frames with the most self time.
// Writes bench/profile-<label>.md, which bench/results.md quotes. Usage: npm run bench:profile -- <label>
import { existsSync, readdirSync, readFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { forkTs, freePort, load, round, startBridgeProcess, SURFACES, target } from './harness.js';

const label = process.argv[2] ?? 'now';
const REQUESTS = 6000;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const sourceMaps = new Map<string, SourceMap | null>();
const sourceLines = new Map<string, string[]>();

/** A function's name as written on the line where it starts (the bundle's own names are minified). */
function nameOn(line: string): string {
  const found =
    /function\*?\s+([\w$]+)/.exec(line) ??
    /(?:const|let|var|readonly)\s+([\w$]+)\s*(?::[^=]+)?=\s*(?:async\s*)?(?:function|\(|[\w$]+\s*=>)/.exec(line) ??
    /^\s*(?:(?:public|private|protected|static|async|get|set)\s+)*\*?\s*([\w$]+)\s*[(<]/.exec(line);
  const name = found?.[1];
  return name === undefined || ['if', 'for', 'while', 'switch', 'catch', 'return', 'new', 'await'].includes(name) ? '(anonymous)' : name;
}

/**
 * A frame as "function file:line", where its code was written: the bridge runs as a minified
 * bundle, whose source maps lead back to src/ (and to the packages' own files).
 */
function frameOf(functionName: string, url: string, lineNumber: number, columnNumber: number): string {
  const named = functionName === '' ? '(anonymous)' : functionName;
  if (url === '') return named;
  const file = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (!sourceMaps.has(file)) sourceMaps.set(file, existsSync(`${file}.map`) ? new SourceMap(JSON.parse(readFileSync(`${file}.map`, 'utf8'))) : null);
  const entry = sourceMaps.get(file)?.findEntry(lineNumber, columnNumber);
  if (entry === undefined || !('originalSource' in entry))
    return `${named} ${path.relative(process.cwd(), file).replace(/^.*node_modules\//, '')}:${lineNumber + 1}`;
  const source = path.resolve(path.dirname(file), entry.originalSource);
  if (!sourceLines.has(source)) sourceLines.set(source, existsSync(source) ? readFileSync(source, 'utf8').split('\n') : []);
  const name = 'name' in entry && typeof entry.name === 'string' ? entry.name : nameOn(sourceLines.get(source)?.[entry.originalLine] ?? '');
  return `${name} ${path.relative(process.cwd(), source).replace(/^.*node_modules\//, '')}:${entry.originalLine + 1}`;
}

/** Self time per frame (function, file, line), largest first, as shares of all samples. */
function topFrames(profile: CpuProfile, count: number): Array<{ frame: string; share: number }> {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    // Idle samples are time the process waited: the shares are of the time it worked.
    if (node === undefined || node.callFrame.functionName === '(idle)') return;
    const { functionName, url, lineNumber, columnNumber } = node.callFrame;
    const key = frameOf(functionName, url, lineNumber, columnNumber);
    self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([frame, time]) => ({ frame, share: time / total }));
}

const upstreamPort = await freePort();
const bridgePort = await freePort();
await forkTs('bench/upstream.ts', [String(upstreamPort)]);
const profileDir = mkdtempSync(path.join(os.tmpdir(), 'bench-profile-'));
const bridge = await startBridgeProcess(bridgePort, upstreamPort, ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]);
const to = target('bridge', bridgePort, bridge.pid, 32);
let cpu = 0;
for (const surface of SURFACES) {
  await load(to, surface, 500, 4);
  cpu += (await load(to, surface, REQUESTS, 32)).cpuMs;
}
await to.pool.close();
const exited = new Promise<void>((resolve) => bridge.once('exit', () => resolve()));
bridge.kill('SIGINT');
await exited;
const file = readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile'));
if (file === undefined) throw new Error('the bridge wrote no CPU profile');
const frames = topFrames(JSON.parse(readFileSync(path.join(profileDir, file), 'utf8')) as CpuProfile, 10);
const text = [
  `### CPU profile, ${label} (${new Date().toISOString().slice(0, 10)})`,
  '',
  `\`node --cpu-prof\` of the bridge serving ${REQUESTS} requests at 32 clients on each of ${SURFACES.join(' and ')} (${round(cpu / (REQUESTS * SURFACES.length), 3)} ms CPU per request while profiled); the 10 frames with the most self time, as shares of the time the process was not idle (start-up included):`,
  '',
  '| self time | frame |',
  '| --- | --- |',
  ...frames.map((f) => `| ${round(f.share * 100, 1)}% | \`${f.frame}\` |`),
  '',
].join('\n');
writeFileSync(path.join('bench', `profile-${label}.md`), text);
process.stdout.write(text);
process.exit(0);
