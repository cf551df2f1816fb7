import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from './temp.js';

/**
 * An `ollama` binary for tests of the instance manager and the tray: `ollama serve` listens on
 * $OLLAMA_HOST and answers the few calls the bridge makes itself. The real one is in the rig.
 * With `startGate`, a port the test listens on, it first connects there and listens only once the
 * test writes to that connection, so a test can act while the bridge waits for it to start.
 */
export function fakeOllamaBinary(options: { startGate?: number } = {}): string {
  const dir = tempDir('fake-ollama-');
  const server = path.join(dir, 'serve.mjs');
  writeFileSync(
    server,
    `import http from 'node:http';
import net from 'node:net';
const [host, port] = (process.env.OLLAMA_HOST ?? '127.0.0.1:11434').split(':');
const listen = () => http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  if (req.url === '/api/version') res.end('{"version":"0.11.4"}');
  else res.end('{"models":[]}');
}).listen(Number(port), host);
const gatePort = ${options.startGate ?? 'undefined'};
if (gatePort === undefined) listen();
else {
  const gate = net.connect(gatePort, '127.0.0.1');
  gate.once('data', listen);
  // The test is gone: so is this stand-in.
  gate.once('close', () => process.exit(0));
}
process.on('SIGTERM', () => process.exit(0));
`,
  );
  const binary = path.join(dir, 'ollama');
  writeFileSync(binary, `#!/bin/sh\n[ "$1" = serve ] || exit 2\nexec "${process.execPath}" "${server}"\n`);
  chmodSync(binary, 0o755);
  return binary;
}
