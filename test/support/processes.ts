import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fakeOllamaBinary } from './fake-ollama.js';
import { nvidiaSmiStandIn, TWO_GPU_REPLIES } from './gpu.js';
import { freePort } from './ollama-rig.js';

/** An environment variable to hand a process under test: every process it starts inherits it. */
export function processMark(): { name: string; value: string; env: Record<string, string> } {
  const value = randomUUID();
  return { name: 'COPILOT_BRIDGE_TEST_MARK', value, env: { COPILOT_BRIDGE_TEST_MARK: value } };
}

/** Live processes (Linux /proc) whose environment carries the mark, as "pid: command line". */
export function markedProcesses(mark: { name: string; value: string }): string[] {
  const needle = `${mark.name}=${mark.value}\0`;
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)) {
    try {
      if (!readFileSync(`/proc/${pid}/environ`, 'utf8').includes(needle)) continue;
      // A zombie has been reaped by nobody yet but runs nothing any more.
      if (/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) continue;
      found.push(`${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim()}`);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/**
 * config.yaml lines that make a bridge start child processes: a managed Ollama (the stand-in
 * binary) on a free port and the GPU monitor (the nvidia-smi stand-in).
 */
export async function childProcessConfig(): Promise<string> {
  const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
  return `ollama:
  binary: ${fakeOllamaBinary()}
backends:
  - { name: gpu0, url: "http://127.0.0.1:${await freePort()}", gpu: 0, manage: true }
gpu_monitor:
  command: ${smi.command}
`;
}
