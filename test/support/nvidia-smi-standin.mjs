#!/usr/bin/env node
// An `nvidia-smi` for tests: answers from fixture files named in a JSON state file
// ($NVIDIA_SMI_STANDIN_STATE: {"gpu": file, "gpuFields": [...], "apps": file, "help": file, "exit": code|null,
// "exitAfterRound": code|null, "hang": boolean, "ignoreTerm": boolean, "say": text|null, "warn": text|null}: `exit`
// ends a loop before its next round (printing `say` on stdout first, as nvidia-smi prints "No devices were found"),
// `exitAfterRound` right after printing one, `hang` keeps it running without printing, as a wedged driver does,
// `ignoreTerm`, read at start, makes a loop outlive SIGTERM, as one blocked inside the driver does, and `warn` is
// printed on stderr every round, "appsStuck": boolean makes a per-process query never end, as one stuck in the driver:
// it outlives SIGTERM, and a child it leaves behind (pid in <state file>.stuck-pid, living a minute) holds its
// stdout past a SIGKILL), "appsFlood": boolean makes it print garbage without end, "appsHang": boolean makes it print nothing until ended, and "helpFails": n fails the first n `--help-query-gpu` (counted in the log below)),
// with the columns of the gpu file (listed in gpuFields, when it differs) put in the order asked for,
// re-read on every round of a `-lms` loop so a test can change what the "GPU" shows over time.
// Every invocation is appended to $NVIDIA_SMI_STANDIN_LOG; a loop writes its pid to <state file>.lms-pid.
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const state = () => JSON.parse(readFileSync(process.env.NVIDIA_SMI_STANDIN_STATE, 'utf8'));
if (process.env.NVIDIA_SMI_STANDIN_LOG) appendFileSync(process.env.NVIDIA_SMI_STANDIN_LOG, `${args.join(' ')}\n`);

const print = (file) => process.stdout.write(readFileSync(file, 'utf8'));
const query = (args.find((a) => a.startsWith('--query-gpu=')) ?? '').slice('--query-gpu='.length).split(',');
/** The gpu file's lines, with its columns in the order the caller asked for ([N/A] for the rest). */
const printGpus = (current) => {
  const text = readFileSync(current.gpu, 'utf8');
  if (!current.gpuFields) return process.stdout.write(text);
  const lines = text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const cells = line.split(',').map((c) => c.trim());
      return query
        .map((field) => {
          const at = current.gpuFields.indexOf(field);
          return at < 0 ? '[N/A]' : cells[at];
        })
        .join(', ');
    });
  process.stdout.write(`${lines.join('\n')}\n`);
};
const now = state();
if (args.includes('--help-query-gpu')) {
  const asked = readFileSync(process.env.NVIDIA_SMI_STANDIN_LOG, 'utf8')
    .split('\n')
    .filter((line) => line.includes('--help-query-gpu')).length;
  if (asked <= (now.helpFails ?? 0)) {
    process.stdout.write('Failed to initialize NVML: Unknown Error\n');
    process.exit(255);
  }
  print(now.help);
} else if (args.some((a) => a.startsWith('--query-compute-apps='))) {
  if (now.appsStuck === true) {
    process.on('SIGTERM', () => undefined);
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: ['ignore', 'inherit', 'inherit'] });
    writeFileSync(`${process.env.NVIDIA_SMI_STANDIN_STATE}.stuck-pid`, String(holder.pid));
    setInterval(() => undefined, 1000);
  } else if (now.appsHang === true) {
    setInterval(() => undefined, 1000);
  } else if (now.appsFlood === true) {
    // Garbage without end, as a broken tool or driver may print.
    const junk = Buffer.alloc(64 * 1024, 'x');
    const flood = () => process.stdout.write(junk, flood);
    flood();
  } else print(now.apps);
} else if (args.some((a) => a.startsWith('--query-gpu='))) {
  const loop = args.indexOf('-lms');
  if (loop < 0) printGpus(now);
  else {
    writeFileSync(`${process.env.NVIDIA_SMI_STANDIN_STATE}.lms-pid`, String(process.pid));
    if (now.ignoreTerm === true) process.on('SIGTERM', () => undefined);
    const round = () => {
      const current = state();
      if (typeof current.exit === 'number') {
        if (current.say) process.stdout.write(current.say);
        process.exit(current.exit);
      }
      if (current.hang === true) return;
      if (current.warn) process.stderr.write(current.warn);
      printGpus(current);
      if (typeof current.exitAfterRound === 'number') process.exit(current.exitAfterRound);
    };
    round();
    setInterval(round, Number(args[loop + 1]));
  }
} else {
  process.stderr.write(`nvidia-smi stand-in: unsupported arguments ${args.join(' ')}\n`);
  process.exit(2);
}
