#!/usr/bin/env node
// Entry of the `copilot-bridge` command: runs the bundled CLI (scripts/bundle-cli.mjs) and handles process signals.
import v8 from 'node:v8';

// V8 settings for start-up only, each back to V8's default once the bridge has started, unless the
// user set it on node's command line or in NODE_OPTIONS (V8 takes flags with - or _). Measured on
// Node 20 (bench/results.md, idle RSS):
// - the young generation does not grow: start-up moves some 12 MB of module code and config
//   through it, which made V8 grow it to 16 MB and keep it, memory an idle bridge never uses (a V8
//   that floors the factor at 2 keeps its own sizing, with no harm done);
// - no optimizing compilers: start-up code runs once, and compiling it paged in compiler code and
//   memory that an idle bridge then kept (~4 MB). Traffic has them from the first request.
//   Sparkplug is on by default only on x64 and arm64; Maglev (on by default from Node 22) is left be.
const START_UP_ONLY = [
  { names: ['--semi-space-growth-factor'], during: '--semi-space-growth-factor=1', after: '--semi-space-growth-factor=2' },
  { names: ['--opt', '--turbofan', '--max-opt', '--jitless'], during: '--no-opt', after: '--opt' },
  ...(['x64', 'arm64'].includes(process.arch) ? [{ names: ['--sparkplug', '--jitless'], during: '--no-sparkplug', after: '--sparkplug' }] : []),
];
const userFlags = new Set([...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].map((arg) => arg.split('=')[0].replaceAll('_', '-')));
const setByUser = (name) => userFlags.has(name) || userFlags.has(name.replace(/^--/, '--no-'));
const startUpFlags = START_UP_ONLY.filter(({ names }) => !names.some(setByUser));
for (const { during } of startUpFlags) v8.setFlagsFromString(during);

// Signals are taken from the start: while the bridge starts (a managed Ollama may take seconds to
// answer) the default action would end this process at once and leave the Ollama instances it
// started running. A stop asked for then happens as soon as the bridge has started.
let bridge;
let stopRequested = false;
const stop = (signal) => {
  if (bridge === undefined) {
    stopRequested = true;
    process.stderr.write(`copilot-bridge: ${signal} while starting; stopping once started\n`);
    return;
  }
  bridge.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
// A closed terminal (SIGHUP) or Windows' Ctrl+Break (SIGBREAK) would otherwise end the process at
// once, leaving the Ollama instances it started running and the last history lines unwritten.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK']) process.once(signal, stop);
// logrotate moved the log file away (its create mode): the bridge opens its path anew. Taken from
// the start too, since SIGUSR2's default action ends the process; one while starting is done once started.
let reopenRequested = false;
process.on('SIGUSR2', () => {
  if (bridge === undefined) reopenRequested = true;
  else bridge.reopenLog();
});

const { runCli } = await import('../dist/cli.bundle.js');
const result = await runCli({
  argv: process.argv.slice(2),
  env: process.env,
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
for (const { after } of startUpFlags) v8.setFlagsFromString(after);

if (typeof result === 'number') {
  process.exitCode = result;
} else {
  bridge = result;
  if (reopenRequested) bridge.reopenLog();
  if (stopRequested) stop();
}
