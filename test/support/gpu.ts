import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from './temp.js';

export const FIXTURES = path.resolve('test/fixtures/nvidia-smi');
export const H100 = path.join(FIXTURES, 'h100-driver-580');
export const TWO_GPU = path.join(FIXTURES, 'two-gpu');
/** The two-GPU capture as a stand-in plays it back: its --query-gpu rounds and its per-process list. */
export const TWO_GPU_REPLIES = { gpu: path.join(TWO_GPU, 'query-gpu.noheader-nounits.txt'), apps: path.join(TWO_GPU, 'compute-apps.noheader-nounits.txt') };

/** The field list of the real fixtures' --query-gpu command (their README). */
export const FIXTURE_GPU_FIELDS =
  'index,uuid,name,pci.bus_id,driver_version,memory.total,memory.used,memory.free,memory.reserved,utilization.gpu,utilization.memory,temperature.gpu,temperature.memory,power.draw,power.limit,clocks.gr,clocks.mem,clocks.sm,fan.speed,pstate,compute_mode'.split(
    ',',
  );

export interface StandInState {
  gpu: string;
  /** The columns of `gpu` when they are not the ones asked for (the real single-H100 captures). */
  gpuFields?: string[] | null;
  apps: string;
  help?: string;
  /** Ends a `-lms` loop before its next round, with this exit code. */
  exit?: number | null;
  /** Printed on stdout before `exit` ends the loop, as nvidia-smi says "No devices were found" there. */
  say?: string | null;
  /** Printed on stderr every round of a `-lms` loop. */
  warn?: string | null;
  /** Ends a `-lms` loop right after printing a round, as nvidia-smi does when a GPU is lost. */
  exitAfterRound?: number | null;
  /** Keeps a `-lms` loop running without printing, as an nvidia-smi stuck in a wedged driver does. */
  hang?: boolean;
  /** Read when a `-lms` loop starts: it outlives SIGTERM, as one blocked inside the driver does. */
  ignoreTerm?: boolean;
  /** Makes a per-process query never end: it outlives SIGTERM, and a child it leaves holds its stdout past a SIGKILL. */
  appsStuck?: boolean;
  /** Makes a per-process query print nothing and never end by itself (SIGTERM ends it). */
  appsHang?: boolean;
  /** Makes a per-process query print garbage without end. */
  appsFlood?: boolean;
  /** How many `--help-query-gpu` fail first, as when NVML is not ready yet at boot. */
  helpFails?: number;
}

/**
 * A folder with an `nvidia-smi` stand-in to put first on PATH (or to name as the command), and
 * the state file that steers it.
 */
export function nvidiaSmiStandIn(initial: StandInState): {
  command: string;
  dir: string;
  log: string;
  set: (state: Partial<StandInState>) => void;
  /** The pid of the last `-lms` loop started. */
  loopPid: () => number;
  /** The pid of the child a stuck per-process query left holding its stdout. */
  stuckPid: () => number;
} {
  const dir = tempDir('nvidia-smi-');
  const stateFile = path.join(dir, 'state.json');
  const log = path.join(dir, 'invocations.log');
  let current: StandInState = { help: path.join(H100, 'help-query-gpu.txt'), exit: null, ...initial };
  const write = (): void => writeFileSync(stateFile, JSON.stringify(current));
  write();
  writeFileSync(log, '');
  const command = path.join(dir, 'nvidia-smi');
  // The wrapper names its own state file, so several stand-ins can live in one test process.
  writeFileSync(
    command,
    `#!/bin/sh\nNVIDIA_SMI_STANDIN_STATE="${stateFile}" NVIDIA_SMI_STANDIN_LOG="${log}" exec "${process.execPath}" "${path.resolve('test/support/nvidia-smi-standin.mjs')}" "$@"\n`,
  );
  chmodSync(command, 0o755);
  return {
    command,
    dir,
    log,
    set(state) {
      current = { ...current, ...state };
      write();
    },
    loopPid: () => Number(readFileSync(`${stateFile}.lms-pid`, 'utf8')),
    stuckPid: () => Number(readFileSync(`${stateFile}.stuck-pid`, 'utf8')),
  };
}
