// Reports the size of the built dashboard (dist/ui), raw and gzipped.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

const root = 'dist/ui';
const files = readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => statSync(path.join(root, f)).isFile());
let raw = 0;
let gzip = 0;
for (const file of files) {
  const bytes = readFileSync(path.join(root, file));
  raw += bytes.length;
  gzip += gzipSync(bytes).length;
}
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`dashboard bundle: ${kib(raw)} (${kib(gzip)} gzipped) in ${files.length} files`);
