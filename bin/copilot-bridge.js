#!/usr/bin/env node
// Entry of the `copilot-bridge` command: runs the compiled CLI and handles process signals.
import v8 from 'node:v8';

// Start-up moves some 12 MB of module code and config through V8's young generation, which makes
// V8 grow that generation to 16 MB and keep it: memory an idle bridge never uses. Its growth is
// held off until the bridge has started, so that it grows with traffic only, unless the user set
// the flag on node's command line (V8 takes it with - or _). Measured on Node 20; a V8 that floors
// the factor at 2 keeps its own sizing, with no harm done.
const GROWTH_FLAG = '--semi-space-growth-factor';
const tuned = process.execArgv.some((arg) => arg.replaceAll('_', '-').startsWith(GROWTH_FLAG));
if (!tuned) v8.setFlagsFromString(`${GROWTH_FLAG}=1`);

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
process.once('SIGINT', stop);
process.once('SIGTERM', stop);

const { runCli } = await import('../dist/cli.js');
const result = await runCli({
  argv: process.argv.slice(2),
  env: process.env,
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
// V8's default again.
if (!tuned) v8.setFlagsFromString(`${GROWTH_FLAG}=2`);

if (typeof result === 'number') {
  process.exitCode = result;
} else {
  bridge = result;
  if (stopRequested) stop();
}
