import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const created: string[] = [];
process.once('exit', () => {
  for (const dir of created) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temp folder, removed when the test process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  created.push(dir);
  return dir;
}

/** A config file with this text (YAML) in a fresh temp folder; its path. */
export function configFile(text: string): string {
  const file = path.join(tempDir('bridge-config-'), 'config.yaml');
  writeFileSync(file, text);
  return file;
}
