#!/usr/bin/env node
// Entry of the `copilot-bridge` command: runs the compiled CLI and handles process signals.
import { runCli } from '../dist/cli.js';

const result = await runCli({
  argv: process.argv.slice(2),
  env: process.env,
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});

if (typeof result === 'number') {
  process.exitCode = result;
} else {
  const shutdown = () => {
    result.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}
